"""
OpenSSH's C{sshd} in the foreground on 127.0.0.1:PORT with a configuration
of its own (C{DIR/sshd-PORT/sshd_config}): public keys from C{DIR/keys/%u}
(the files np-ssh's C{--authorized-keys-dir} reads), the host key
C{DIR/host_ed25519_key} (np-ssh's too), and C{internal-sftp} starting in
C{DIR/home}, the directory np-ssh's C{--root} gives every user, so both
servers serve one directory to one client.

    python -m bench.peers.sshd_server --port 2222 --dir bench/out/ssh

The process becomes C{sshd -D -e} (exec), which forks a process for each
connection: the suite measures that whole tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

SSHD = "/usr/sbin/sshd"

CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {dir}/host_ed25519_key
AuthorizedKeysFile {dir}/keys/%u
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
StrictModes no
MaxStartups 1000
MaxSessions 1000
Subsystem sftp internal-sftp -d {dir}/home
"""


def configure(port: int, directory: Path) -> Path:
    """
    Write C{sshd_config} for C{port} into a fresh C{directory/sshd-PORT/}.
    """
    directory = directory.resolve()
    own = directory / f"sshd-{port}"
    shutil.rmtree(own, ignore_errors=True)
    own.mkdir(parents=True)
    config = own / "sshd_config"
    config.write_text(CONFIG.format(port=port, dir=directory))
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    options = parser.parse_args()
    if not os.path.exists(SSHD):
        raise SystemExit(f"{SSHD} is missing: Debian's openssh-server")
    config = configure(options.port, options.dir)
    # sshd's privilege separation directory.
    os.makedirs("/run/sshd", exist_ok=True)
    os.execv(SSHD, [SSHD, "-D", "-e", "-f", str(config)])


if __name__ == "__main__":
    main()
