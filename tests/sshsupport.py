"""
Helpers for the np-ssh tests: host keys made once per test process, a
client key and password for the user C{alice}, and C{twistd np-ssh} started
on a free port with them (L{startSSH}), with OpenSSH client options that
ignore the caller's own configuration (L{SSHServer.openssh}).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import bcrypt
from attrs import frozen

from tests.support import LoggedProcess, freePort, runTwistd

USER = "alice"
PASSWORD = "correct horse battery"

_hostKeys: list[str] = []


def hostKeyFiles() -> list[str]:
    """
    An ed25519 and an RSA-3072 host key, generated once per test process
    (RSA generation takes a while).
    """
    if not _hostKeys:
        directory = tempfile.mkdtemp(prefix="np-ssh-hostkeys-")
        for kind, extra in (("ed25519", []), ("rsa", ["-b", "3072"])):
            path = os.path.join(directory, f"ssh_host_{kind}_key")
            subprocess.run(
                ["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-f", path],
                check=True,
            )
            _hostKeys.append(path)
    return list(_hostKeys)


def openssh(program: str) -> str:
    """
    The path of an OpenSSH client program; fail (never skip) without it.
    """
    path = shutil.which(program)
    if path is None:
        raise AssertionError(
            f"{program} not found: install Debian's openssh-client "
            "(scripts/debian-packages.txt)"
        )
    return path


@frozen
class SSHServer:
    """
    A running C{twistd np-ssh} and what clients need to reach it.

    @ivar directory: a scratch directory: C{id_ed25519} (alice's key),
        C{homes/alice} (her home), C{client/} (a working directory).
    """

    process: LoggedProcess
    host: str
    port: int
    directory: Path

    @property
    def key(self) -> str:
        return str(self.directory / "id_ed25519")

    @property
    def home(self) -> Path:
        return self.directory / "homes" / USER

    def openssh(self, *extra: str, port: str = "-p") -> list[str]:
        """
        OpenSSH client options for this server (C{port="-P"} for sftp, scp).
        """
        return [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-i",
            self.key,
            port,
            str(self.port),
            *extra,
        ]

    def log(self) -> str:
        return self.process.output()


def waitForListener(
    host: str, port: int, process: LoggedProcess, timeout: float = 30.0
) -> None:
    """
    Block until C{host:port} accepts connections; fail with the log if
    C{process} exits first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"np-ssh exited:\n{process.output()}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"np-ssh not listening on {host}:{port}:\n{process.output()}")


def startSSH(
    testCase: Any,
    *extra: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    hostKeys: list[str] | None = None,
    root: bool = True,
    authorizedKeys: bool = True,
) -> SSHServer:
    """
    Start C{twistd np-ssh} for C{testCase} with alice's key authorized
    and her password in an htpasswd file; her home is made.

    @param hostKeys: host key files (default: L{hostKeyFiles}).
    @param root: give C{--root} (C{homes/{user}} of the scratch directory);
        without it, np-ssh's default under C{state/} applies.
    @param authorizedKeys: give C{--authorized-keys-dir} (C{keys/}, alice's
        key in it).
    """
    directory = Path(testCase.mktemp()).resolve()
    (directory / "keys").mkdir(parents=True)
    (directory / "client").mkdir()
    (directory / "homes" / USER).mkdir(parents=True)
    key = directory / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
    )
    (directory / "keys" / USER).write_bytes(key.with_suffix(".pub").read_bytes())
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    (directory / "users").write_text(f"{USER}:{hashed}\n")
    if port is None:
        port = freePort()
    args = [
        "np-ssh",
        "--listen",
        f"tcp:{port}:interface={host}",
        "--state-dir",
        str(directory / "state"),
        *(["--root", str(directory / "homes" / "{user}")] if root else []),
        *(["--authorized-keys-dir", str(directory / "keys")] if authorizedKeys else []),
        "--auth",
        f"htpasswd:{directory / 'users'}",
    ]
    for path in hostKeyFiles() if hostKeys is None else hostKeys:
        args += ["--host-key", path]
    process = runTwistd(testCase, *args, *extra)
    waitForListener(host, port, process)
    return SSHServer(process, host, port, directory)
