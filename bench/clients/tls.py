"""
TLS load with Python's C{ssl} (OpenSSL does the cryptography on both sides):

    python -m bench.clients.tls --port P --mode handshake --connections 4
    python -m bench.clients.tls --port P --mode bulk --size 65536

C{handshake}: each client connects, completes a full handshake (no session
resumption; certificate not verified, so only the server's work differs
between contenders) and closes, back to back.  C{bulk}: each client keeps one
TLS connection and sends C{--size} bytes, waiting for the whole echo before
the next.  One process per connection (L{bench.clients.runWorkers}).
"""

from __future__ import annotations

import argparse
import socket
import ssl
from typing import Any

from bench.clients import HOST, arguments, runWorkers


def context() -> ssl.SSLContext:
    """
    A client context that negotiates what the server prefers and skips
    verification (the suite's certificate is self-signed).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    """
    A connected TCP socket with its TLS handshake done.
    """
    raw = socket.create_connection((HOST, port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw)


def handshakes(options: argparse.Namespace) -> Any:
    ctx = context()

    def request(_: object) -> int:
        connect(options.port, ctx).close()
        return 0

    return (lambda: True), request, (lambda _: None)


def bulk(options: argparse.Namespace) -> Any:
    ctx = context()
    payload = bytes(range(256)) * (options.size // 256) + b"x" * (options.size % 256)
    buffer = bytearray(options.size)

    def request(connection: ssl.SSLSocket) -> int:
        connection.sendall(payload)
        view, got = memoryview(buffer), 0
        while got < options.size:
            n = connection.recv_into(view[got:])
            if not n:
                raise ConnectionError("closed")
            got += n
        if buffer[:64] != payload[:64] or buffer[-64:] != payload[-64:]:
            raise ValueError("echo differs")
        return options.size

    return (lambda: connect(options.port, ctx)), request, (lambda c: c.close())


def main() -> None:
    parser = arguments("TLS handshakes or bulk echo, in the suite's JSON lines")
    parser.add_argument("--mode", choices=("handshake", "bulk"), required=True)
    options = parser.parse_args()
    runWorkers(handshakes if options.mode == "handshake" else bulk, options)


if __name__ == "__main__":
    main()
