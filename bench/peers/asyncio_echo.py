"""
An asyncio echo server with the C{Protocol} API (the fast path of asyncio, not
streams), on the standard event loop or on uvloop's:

    python -m bench.peers.asyncio_echo --port PORT [--loop asyncio|uvloop]
        [--framing raw|blocks]

asyncio and uvloop both set C{TCP_NODELAY} on accepted connections.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

# Room for the largest message the suite sends, with headroom.
MAX_BLOCK = 16 * 1024 * 1024


class Echo(asyncio.Protocol):
    """
    Writes back every byte it receives.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class BlockEcho(Echo):
    """
    Writes back every 4-byte big-endian length-prefixed message it receives,
    once it has all of it.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4:
            length = int.from_bytes(self.buffer[:4], "big")
            if length > MAX_BLOCK:
                self.transport.close()
                return
            if len(self.buffer) < 4 + length:
                return
            self.transport.write(bytes(self.buffer[: 4 + length]))
            del self.buffer[: 4 + length]


async def serve(port: int, framing: str) -> None:
    """
    Listen on 127.0.0.1 and echo forever.
    """
    protocol = {"raw": Echo, "blocks": BlockEcho}[framing]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """
    Parse the command line and serve until killed.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--framing", choices=["raw", "blocks"], default="raw")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args.port, args.framing))
    else:
        asyncio.run(serve(args.port, args.framing))


if __name__ == "__main__":
    main(sys.argv[1:])
