"""
A private Dovecot IMAP server for the differential test: a free loopback port,
its own generated configuration (nothing read from /etc/dovecot), users in a
passwd-file, Maildirs under a temporary folder, no TLS, plaintext logins
allowed.

A missing Dovecot is a failure, not a skip: C{scripts/test} installs
C{dovecot-imapd} (listed in scripts/debian-packages.txt).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import dieWithParent, freePort

DOVECOT = "/usr/sbin/dovecot"


def _config(work: Path, port: int, user: str, group: str, loginUser: str) -> str:
    return f"""\
base_dir = {work}/run
state_dir = {work}/state
log_path = {work}/dovecot.log
info_log_path = {work}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {loginUser}
first_valid_uid = 0
first_valid_gid = 0
mail_location = maildir:~/Maildir
mail_privileged_group =
namespace inbox {{
  inbox = yes
  separator = .
  prefix =
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {work}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {work}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
protocol imap {{
  imap_idle_notify_interval = 1 secs
}}
"""


class Dovecot:
    """
    One private Dovecot.

    @ivar port: its IMAP port on 127.0.0.1.
    @ivar work: its folder; users' Maildirs are C{work/home/USER/Maildir}.
    """

    host = "127.0.0.1"

    def __init__(self, users: dict[str, str]) -> None:
        """
        @param users: user name → plaintext password.
        """
        if not Path(DOVECOT).exists():
            raise RuntimeError(
                "dovecot is not installed: run scripts/test, which installs "
                "dovecot-imapd (listed in scripts/debian-packages.txt)"
            )
        self.users = users
        self.work = Path(tempfile.mkdtemp(prefix="np-dovecot-"))
        self.port = freePort()
        self.process: subprocess.Popen[bytes] | None = None

    def maildir(self, user: str) -> Path:
        """
        The Maildir of C{user}.
        """
        return self.work / "home" / user / "Maildir"

    def start(self) -> None:
        """
        Write the configuration and start Dovecot; return once it accepts
        connections.
        """
        uid, gid = os.getuid(), os.getgid()
        user = loginUser = pwd.getpwuid(uid).pw_name
        group = grp.getgrgid(gid).gr_name
        if uid == 0:
            # Dovecot refuses to run its login and mail processes as root:
            # use the accounts the Debian package made for them.
            dovecot = pwd.getpwnam("dovecot")
            user, loginUser = "dovecot", "dovenull"
            group = grp.getgrgid(dovecot.pw_gid).gr_name
            uid, gid = dovecot.pw_uid, dovecot.pw_gid
        for d in ("run", "state"):
            (self.work / d).mkdir()
        lines = []
        for name, password in self.users.items():
            home = self.work / "home" / name
            for sub in ("cur", "new", "tmp"):
                (self.maildir(name) / sub).mkdir(parents=True, exist_ok=True)
            lines.append(f"{name}:{password}:{uid}:{gid}::{home}::")
        # Dovecot's auth and mail processes run as uid: let them in.
        self.work.chmod(0o755)
        for path in (self.work / "home", *(self.work / "home").rglob("*")):
            os.chown(path, uid, gid)
        (self.work / "passwd").write_text("\n".join(lines) + "\n")
        conf = self.work / "dovecot.conf"
        conf.write_text(_config(self.work, self.port, user, group, loginUser))
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=dieWithParent,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not start: {self.log()}")

    def log(self) -> str:
        """
        Dovecot's log so far, for failure messages.
        """
        path = self.work / "dovecot.log"
        stderr = b""
        if self.process is not None and self.process.poll() is not None:
            assert self.process.stderr is not None
            stderr = self.process.stderr.read()
        text = path.read_text(errors="replace") if path.exists() else ""
        return (text + stderr.decode(errors="replace"))[-4000:]

    def stop(self) -> None:
        """
        Stop Dovecot and remove its folder.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None
        shutil.rmtree(self.work, ignore_errors=True)
