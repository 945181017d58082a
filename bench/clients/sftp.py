"""
SFTP load with OpenSSH's C{sftp -b} (the client np-ssh and OpenSSH's sshd
are compared with), one process per connection (L{runWorkers}), logging in
as the user running it with C{--key}:

    python -m bench.clients.sftp --port P --mode get --size 33554432 --key K
    python -m bench.clients.sftp --port P --mode put --size 33554432 --key K
    python -m bench.clients.sftp --port P --mode session --connections 100 --key K

A request is one whole C{sftp} session (key exchange, public key login,
the transfer): C{get} downloads a C{--size}-byte file (uploaded once
before the measured window, its size checked after every download),
C{put} uploads one; C{session} fetches C{session.bin} (1 KiB, made by
C{python -m bench.prepare ssh}: nothing to upload first, so 100 clients
start at once), with many clients at once.  In C{get} and C{put} every
worker moves a file of its own; the cipher is fixed (C{--cipher}) so both
servers do the same work.  Only 127.0.0.1 is connected to.
"""

from __future__ import annotations

import argparse
import getpass
import os
import subprocess
import tempfile
from typing import Any

from bench.clients import HOST, arguments, runWorkers

CIPHER = "aes128-gcm@openssh.com"
#: What C{session} clients fetch (L{bench.prepare.ssh} makes it).
SESSION_FILE = "session.bin"
#: A session slower than this is an error: the runner waits only ~10 s
#: past the window for every worker to report.
TIMEOUT = 10.0


def sftpCommand(
    port: int, user: str, key: str, script: str, *options: str, cipher: str = CIPHER
) -> list[str]:
    """
    OpenSSH's C{sftp -b SCRIPT} to C{user} at 127.0.0.1:C{port} with C{key}
    only, no configuration file or known hosts, C{cipher} fixed, and
    C{options} (C{-o} pairs) added.
    """
    return [
        "sftp",
        "-F", "/dev/null",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "LogLevel=ERROR",
        *options,
        "-c", cipher,
        "-i", key,
        "-P", str(port),
        "-b", script,
        f"{user}@{HOST}",
    ]  # fmt: skip


def sftp(options: argparse.Namespace, batch: str, cwd: str) -> None:
    """
    Run one C{sftp -b} session of C{batch}; raise if it fails.
    """
    script = os.path.join(cwd, "batch")
    with open(script, "w") as f:
        f.write(batch)
    subprocess.run(
        sftpCommand(
            options.port,
            getpass.getuser(),
            options.key,
            script,
            "-o",
            f"ConnectTimeout={int(TIMEOUT)}",
            cipher=options.cipher,
        ),
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=TIMEOUT,
    )


def worker(options: argparse.Namespace) -> Any:
    session = options.mode == "session"
    name = SESSION_FILE if session else f"bench-{options.mode}-{os.getpid()}.bin"

    def connect() -> str:
        directory = tempfile.mkdtemp(prefix="bench-sftp-")
        with open(os.path.join(directory, "local.bin"), "wb") as f:
            f.write(os.urandom(options.size))
        if options.mode == "get":
            sftp(options, f"put local.bin {name}\n", directory)
        return directory

    def request(directory: str) -> int:
        if options.mode == "put":
            sftp(options, f"put local.bin {name}\n", directory)
            return int(options.size)
        got = os.path.join(directory, "got.bin")
        if os.path.exists(got):
            os.unlink(got)
        sftp(options, f"get {name} got.bin\n", directory)
        if os.path.getsize(got) != options.size:
            raise ValueError(f"{name}: {os.path.getsize(got)} bytes")
        return int(options.size)

    def close(directory: str) -> None:
        try:
            if not session:
                sftp(options, f"-rm {name}\n", directory)
        finally:
            for entry in os.listdir(directory):
                os.unlink(os.path.join(directory, entry))
            os.rmdir(directory)

    return connect, request, close


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("get", "put", "session"), required=True)
    parser.add_argument("--key", required=True, help="the private key to log in with")
    parser.add_argument("--cipher", default=CIPHER)
    runWorkers(worker, parser.parse_args())


if __name__ == "__main__":
    main()
