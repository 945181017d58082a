"""
Run one function of Foundations of Python Network Programming's chapter 8
C{queuepi.py}, unchanged, as its own process, against np-zmq devices::

    python -m netplugins.examples.zmqpipeline PATH/queuepi.py judge URL...

The book's C{main()} starts every function as a thread of one process, each
binding or connecting its own sockets.  Across processes the devices of
C{tac/zmq-pipeline.tac} sit in the middle and bind both their ends (that is
what a device does), so every book function must connect.  Its text is not
edited: each takes its context as an argument, and here it gets one whose
sockets' C{bind} connects.  The file is imported under its own name, so its
C{if __name__ == '__main__'} block does not run.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import zmq

#: The book's functions and how many URLs each takes after the context.
ROLES = {"bitsource": 1, "always_yes": 2, "judge": 3, "pythagoras": 1, "tally": 1}


class ConnectingSocket(zmq.Socket[Any]):
    """
    A socket whose C{bind} connects: the device at that URL has bound it.
    """

    def bind(self, addr: str) -> Any:
        return self.connect(addr)


class ConnectingContext(zmq.Context[ConnectingSocket]):
    """
    A context making L{ConnectingSocket}s.
    """

    _socket_class = ConnectingSocket


def loadBook(path: str) -> Any:
    """
    Import the book's C{queuepi.py} from C{path}, as module C{queuepi}.
    """
    spec = importlib.util.spec_from_file_location("queuepi", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in ROLES or len(argv) != 2 + ROLES[argv[1]]:
        raise SystemExit(
            "usage: zmqpipeline QUEUEPI.PY ROLE URL...  (roles: "
            + ", ".join(f"{name} with {n} URL(s)" for name, n in ROLES.items())
            + ")"
        )
    path, role, *urls = argv
    getattr(loadBook(path), role)(ConnectingContext(), *urls)


if __name__ == "__main__":
    main(sys.argv[1:])
