"""
Python Cookbook 11.6's key-value store: C{SimpleXMLRPCServer} with
C{ThreadingMixIn} (a thread per connection), C{allow_none}, the methods
C{get set delete exists keys}.  The peer of C{np-kv --store memory}:

    python -m bench.peers.xmlrpc_kv --port PORT

Written from the book's description.  Request logging is off (the book
leaves the stdlib's per-request stderr line on), as np-kv has none.
"""

from __future__ import annotations

import argparse
from socketserver import ThreadingMixIn
from typing import Any
from xmlrpc.server import SimpleXMLRPCServer


class ThreadedXMLRPCServer(ThreadingMixIn, SimpleXMLRPCServer):
    """
    One thread per connection.
    """

    daemon_threads = True


class KeyValueServer:
    """
    A dictionary behind XML-RPC.
    """

    methods = ("get", "set", "delete", "exists", "keys")

    def __init__(self, address: tuple[str, int]) -> None:
        self.data: dict[str, Any] = {}
        self.server = ThreadedXMLRPCServer(address, allow_none=True, logRequests=False)
        for name in self.methods:
            self.server.register_function(getattr(self, name))

    def get(self, name: str) -> Any:
        return self.data[name]

    def set(self, name: str, value: Any) -> None:
        self.data[name] = value

    def delete(self, name: str) -> None:
        del self.data[name]

    def exists(self, name: str) -> bool:
        return name in self.data

    def keys(self) -> list[str]:
        return list(self.data)

    def serve_forever(self) -> None:
        self.server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    KeyValueServer(("127.0.0.1", parser.parse_args().port)).serve_forever()


if __name__ == "__main__":
    main()
