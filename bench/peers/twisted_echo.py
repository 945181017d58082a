"""
A bare Twisted echo server: the plainest C{Protocol} that echoes, on Twisted's
default reactor and defaults (no C{TCP_NODELAY}), as a user would write it.

It is the "bare Twisted" column of the echo benchmark, showing what netplugins'
own layers (limits, logging, framing) cost on top of Twisted itself, and it
stands in for C{np-echo} where that service is not there.

    python -m bench.peers.twisted_echo --port PORT [--framing raw|blocks]
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet.protocol import Protocol, ServerFactory
from twisted.protocols.basic import Int32StringReceiver

# Room for the largest message the suite sends, with headroom.
MAX_BLOCK = 16 * 1024 * 1024


class Echo(Protocol):
    """
    Writes back every byte it receives.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class BlockEcho(Int32StringReceiver):
    """
    Writes back every 4-byte big-endian length-prefixed message it receives.
    """

    MAX_LENGTH = MAX_BLOCK

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


def echoFactory(framing: str = "raw") -> ServerFactory:
    """
    A factory for the echo protocol of C{framing} (C{raw} or C{blocks}).
    """
    protocols: dict[str, type[Protocol]] = {"raw": Echo, "blocks": BlockEcho}
    factory = ServerFactory()
    factory.protocol = protocols[framing]
    return factory


def main(argv: list[str] | None = None, reactor: object = None) -> None:
    """
    Listen on 127.0.0.1 and echo until killed.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--framing", choices=["raw", "blocks"], default="raw")
    args = parser.parse_args(argv)
    if reactor is None:
        from twisted.internet import reactor
    reactor.listenTCP(  # type: ignore[attr-defined]
        args.port, echoFactory(args.framing), interface="127.0.0.1"
    )
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
