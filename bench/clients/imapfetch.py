"""
IMAP: the time one full C{FETCH 1:* (BODY.PEEK[])} of the benchmark's
mailbox (1,000 messages) takes, back to back on each connection after
C{LOGIN} and C{EXAMINE INBOX}; a request is one whole FETCH.  A small raw
client (reading up to the tagged answer, looking only at the end of what
arrived), so the client's cost stays far below the servers':

    python -m bench.clients.imapfetch --port P --connections 1
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

from bench.clients import HOST, arguments, runWorkers
from bench.prepare import MAIL_PASSWORD, MAIL_USER


class Session:
    """
    One logged-in IMAP connection.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tag = 0
        self.buffer = bytearray()
        self.read(b"* OK")
        self.command(f"LOGIN {MAIL_USER} {MAIL_PASSWORD}".encode())
        self.command(b"EXAMINE INBOX")

    def read(self, end: bytes) -> int:
        """
        Read until a line starting with C{end} has arrived; return the bytes
        read.
        """
        total = 0
        self.buffer.clear()
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            total += len(chunk)
            self.buffer += chunk
            tail = bytes(self.buffer[-4096:])
            at = tail.rfind(b"\r\n", 0, len(tail) - 2)
            line = tail[at + 2 :] if at >= 0 else tail
            if line.startswith(end) and line.endswith(b"\r\n"):
                if end != b"* OK" and not line.startswith(end + b" OK"):
                    raise ValueError(f"server said {line!r}")
                return total
            if len(self.buffer) > 1 << 16:
                del self.buffer[:-4096]

    def command(self, text: bytes) -> int:
        self.tag += 1
        tag = f"t{self.tag}".encode()
        self.sock.sendall(tag + b" " + text + b"\r\n")
        return self.read(tag)


def fetches(options: argparse.Namespace) -> Any:
    return (
        lambda: Session(options.port),
        lambda session: session.command(b"FETCH 1:* (BODY.PEEK[])"),
        lambda session: session.sock.close(),
    )


def main() -> None:
    runWorkers(fetches, arguments("IMAP full-mailbox FETCH").parse_args())


if __name__ == "__main__":
    main()
