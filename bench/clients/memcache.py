"""
Store the value a memcached benchmark reads, then become its load generator:
C{python -m bench.clients.memcache --port P --size N -- PROGRAM ARGS...} sets
key C{k} to N bytes of C{x} on 127.0.0.1:P and execs C{PROGRAM ARGS...} (the
C echo generator in its request mode, whose requests then hit).
"""

from __future__ import annotations

import argparse
import os
import socket
import time

from bench.clients import HOST


def preload(port: int, size: int, timeout: float = 10.0) -> None:
    """
    Set C{k} to C{size} bytes on the server at C{port}, waiting up to
    C{timeout} seconds for it to listen.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((HOST, port), timeout=timeout)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with sock:
        sock.sendall(b"set k 0 0 %d\r\n%s\r\n" % (size, b"x" * size))
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(100)
            if not chunk:
                break
            reply += chunk
    if reply != b"STORED\r\n":
        raise SystemExit(f"preloading k: {reply!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    preload(options.port, options.size)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
