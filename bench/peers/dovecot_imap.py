"""
Dovecot's IMAP server on the benchmark's Maildir (L{bench.prepare.mail}),
with the configuration the differential test's fixture writes
(L{tests.dovecot}: nothing read from /etc/dovecot, plaintext logins, no
TLS), in the foreground.  The peer of C{np-imap}:

    python -m bench.peers.dovecot_imap --port PORT
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd

from bench.prepare import MAIL, MAIL_PASSWORD, MAIL_USER
from tests.dovecot import DOVECOT, _config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    work = (MAIL / "dovecot").resolve()
    home = (MAIL / "home" / MAIL_USER).resolve()
    for sub in ("run", "state"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    uid, gid = os.getuid(), os.getgid()
    user = loginUser = pwd.getpwuid(uid).pw_name
    group = grp.getgrgid(gid).gr_name
    if uid == 0:
        # Dovecot will not run its mail processes as root (as tests.dovecot).
        dovecot = pwd.getpwnam("dovecot")
        user, loginUser = "dovecot", "dovenull"
        group = grp.getgrgid(dovecot.pw_gid).gr_name
        uid, gid = dovecot.pw_uid, dovecot.pw_gid
        for path in (home, *home.rglob("*")):
            os.chown(path, uid, gid)
    work.chmod(0o755)
    (work / "passwd").write_text(f"{MAIL_USER}:{MAIL_PASSWORD}:{uid}:{gid}::{home}::\n")
    conf = work / "dovecot.conf"
    conf.write_text(_config(work, port, user, group, loginUser))
    os.execv(DOVECOT, [DOVECOT, "-F", "-c", str(conf)])


if __name__ == "__main__":
    main()
