"""
FTP load with the stdlib's C{ftplib} (pyftpdlib's C{ftpbench} measures the
same three things), one process per connection (L{runWorkers}):

    python -m bench.clients.ftp --port P --mode login --connections 300
    python -m bench.clients.ftp --port P --mode retr --size 33554432 [--tls]
    python -m bench.clients.ftp --port P --mode stor --size 33554432 [--tls]

C{login}: each client connects, logs in (after C{AUTH TLS} with C{--tls})
and says C{QUIT}, back to back; a request is one whole session.  C{retr}:
each client keeps one session (C{TYPE I}; C{PROT P} with C{--tls}) and
downloads a C{--size}-byte file again and again, a request being one whole
download over a fresh passive data connection, its byte count checked; the
file is uploaded first if the server does not have it at that size.
C{stor}: the same, uploading C{--size} bytes to a file of its own.

With C{--tls} the data connections resume the control connection's TLS
session, as curl and lftp do (ftplib's own C{FTP_TLS} does not).  The
certificate is not verified.  Only 127.0.0.1 is connected to.
"""

from __future__ import annotations

import argparse
import ftplib
import os
import socket
import ssl
from typing import Any

from bench.clients import HOST, arguments, runWorkers
from bench.prepare import FTP_PASSWORD as PASSWORD
from bench.prepare import FTP_USER as USER

# Bytes per send and receive on a data connection.
BLOCK = 256 * 1024
TIMEOUT = 30.0


class ResumingFTP(ftplib.FTP_TLS):
    """
    C{FTP_TLS} whose protected data connections resume the control
    connection's TLS session.
    """

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[Any, Any]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            control = self.sock
            assert isinstance(control, ssl.SSLSocket)
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=control.session
            )
        return conn, size


def context() -> ssl.SSLContext:
    """
    A client context that does not verify the suite's self-signed
    certificate.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def login(port: int, tls: ssl.SSLContext | None) -> ftplib.FTP:
    """
    A logged-in session (control connection protected with C{tls}).
    """
    ftp: ftplib.FTP = ResumingFTP(context=tls) if tls else ftplib.FTP()
    ftp.connect(HOST, port, timeout=TIMEOUT)
    assert ftp.sock is not None
    ftp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ftp.login(USER, PASSWORD)
    return ftp


def session(port: int, tls: ssl.SSLContext | None) -> ftplib.FTP:
    """
    A logged-in session ready for binary transfers (C{PROT P} with C{tls}).
    """
    ftp = login(port, tls)
    if isinstance(ftp, ResumingFTP):
        ftp.prot_p()
    ftp.voidcmd("TYPE I")
    return ftp


def contextFor(options: argparse.Namespace) -> ssl.SSLContext | None:
    """
    The worker's one client context with C{--tls}, else C{None}.
    """
    return context() if options.tls else None


def logins(options: argparse.Namespace) -> Any:
    tls = contextFor(options)

    def request(_: object) -> int:
        login(options.port, tls).quit()
        return 0

    return (lambda: True), request, (lambda _: None)


def download(ftp: ftplib.FTP, name: str, buffer: bytearray) -> int:
    """
    RETR C{name} into C{buffer} (overwritten); the bytes received.
    """
    view, got = memoryview(buffer), 0
    with ftp.transfercmd(f"RETR {name}") as conn:
        while True:
            n = conn.recv_into(view)
            if not n:
                break
            got += n
        if isinstance(conn, ssl.SSLSocket):
            conn.unwrap()
    ftp.voidresp()
    return got


def upload(ftp: ftplib.FTP, name: str, payload: bytes) -> int:
    """
    STOR C{payload} as C{name}; the bytes sent.
    """
    view = memoryview(payload)
    with ftp.transfercmd(f"STOR {name}") as conn:
        for at in range(0, len(payload), BLOCK):
            conn.sendall(view[at : at + BLOCK])
        if isinstance(conn, ssl.SSLSocket):
            conn.unwrap()
    ftp.voidresp()
    return len(payload)


def payloadOf(size: int) -> bytes:
    """
    C{size} bytes of a repeating pattern.
    """
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def downloads(options: argparse.Namespace) -> Any:
    name = f"bench-{options.size}.bin"
    buffer = bytearray(BLOCK)
    tls = contextFor(options)

    def connect() -> ftplib.FTP:
        ftp = session(options.port, tls)
        try:
            size = ftp.size(name)
        except ftplib.error_perm:
            size = None
        if size != options.size:
            upload(ftp, name, payloadOf(options.size))
        return ftp

    def request(ftp: ftplib.FTP) -> int:
        got = download(ftp, name, buffer)
        if got != options.size:
            raise ValueError(f"RETR gave {got} bytes, not {options.size}")
        return got

    return connect, request, (lambda ftp: ftp.close())


def uploads(options: argparse.Namespace) -> Any:
    payload = payloadOf(options.size)
    tls = contextFor(options)

    def request(ftp: ftplib.FTP) -> int:
        return upload(ftp, f"upload-{os.getpid()}.bin", payload)

    return (lambda: session(options.port, tls)), request, (lambda f: f.close())


MODES = {"login": logins, "retr": downloads, "stor": uploads}


def main() -> None:
    parser = arguments("FTP logins, RETR and STOR, in the suite's JSON lines")
    parser.add_argument("--mode", choices=sorted(MODES), required=True)
    parser.add_argument("--tls", action="store_true", help="AUTH TLS and PROT P")
    options = parser.parse_args()
    runWorkers(MODES[options.mode], options)


if __name__ == "__main__":
    main()
