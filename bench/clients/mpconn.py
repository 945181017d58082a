"""
Round trips through C{multiprocessing.connection}: each client process
connects with C{Client(address, authkey=...)} (the authkey handshake happens
once per connection) and sends a C{--size}-byte C{bytes} object, waiting for
it to come back, as Python Cookbook 11.7's echo client does:

    python -m bench.clients.mpconn --port P --authkey-file F --connections 8
"""

from __future__ import annotations

import argparse
from multiprocessing.connection import Client
from pathlib import Path
from typing import Any

from bench.clients import HOST, arguments, runWorkers


def echoes(options: argparse.Namespace) -> Any:
    authkey = Path(options.authkey_file).read_bytes()
    payload = b"m" * options.size

    def request(connection: Any) -> int:
        connection.send(payload)
        # Bounded: a server that stops answering fails this request.
        if not connection.poll(10):
            raise TimeoutError("no answer in 10 s")
        if connection.recv() != payload:
            raise ValueError("echo differs")
        return options.size

    return (
        lambda: Client((HOST, options.port), authkey=authkey),
        request,
        lambda c: c.close(),
    )


def main() -> None:
    parser = arguments("multiprocessing.connection echo round trips")
    parser.add_argument("--authkey-file", required=True)
    runWorkers(echoes, parser.parse_args())


if __name__ == "__main__":
    main()
