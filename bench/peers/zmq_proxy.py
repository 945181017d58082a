"""
The peer of C{np-zmq --device streamer}: pyzmq's C{zmq.proxy} between a
bound PULL frontend and a bound PUSH backend, in one process (libzmq moves
the messages, in C, without the GIL):

    python -m bench.peers.zmq_proxy --port FRONTEND --backend-port BACKEND

Both sockets keep libzmq's default high-water mark, 1000, which is
np-zmq's default C{--hwm} too.
"""

from __future__ import annotations

import argparse

import zmq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="the PULL frontend")
    parser.add_argument(
        "--backend-port", type=int, required=True, help="the PUSH backend"
    )
    options = parser.parse_args()
    context = zmq.Context()
    frontend = context.socket(zmq.PULL)
    frontend.bind(f"tcp://127.0.0.1:{options.port}")
    backend = context.socket(zmq.PUSH)
    backend.bind(f"tcp://127.0.0.1:{options.backend_port}")
    # Runs until the process is killed.
    zmq.proxy(frontend, backend)


if __name__ == "__main__":
    main()
