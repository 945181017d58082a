"""
Python Cookbook 11.7's echo server: a stdlib
C{multiprocessing.connection.Listener} with a thread per client that sends
back every object it receives.  The peer of C{np-mpconn --mode echo}:

    python -m bench.peers.mpconn_echo --port PORT --authkey-file F
"""

from __future__ import annotations

import argparse
import threading
from multiprocessing.connection import Connection, Listener
from pathlib import Path


def echo(connection: Connection) -> None:
    """
    Send every message back until the client goes away.
    """
    try:
        while True:
            connection.send(connection.recv())
    except (EOFError, OSError):
        pass
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--authkey-file", required=True)
    options = parser.parse_args()
    authkey = Path(options.authkey_file).read_bytes()
    # The default backlog of 1 drops simultaneous connects: clients then
    # wait for the kernel's retransmissions (seconds), not for the server.
    with Listener(("127.0.0.1", options.port), authkey=authkey, backlog=64) as listener:
        while True:
            try:
                connection = listener.accept()
            except Exception:
                # A failed handshake (the suite's readiness probe connects
                # and hangs up) ends that client, not the server.
                continue
            threading.Thread(target=echo, args=(connection,), daemon=True).start()


if __name__ == "__main__":
    main()
