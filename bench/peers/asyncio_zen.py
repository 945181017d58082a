"""
The Zen server of Foundations of Python Network Programming, chapter 7, in
its C{asyncio.Protocol} form (the book's C{srv_asyncio1.py}): buffer data
until it ends with C{?}, answer, repeat.  The peer of C{np-zen}:

    python -m bench.peers.asyncio_zen --port PORT [--loop asyncio|uvloop]

Written for the benchmark from the book's description, with the same
aphorisms as C{np-zen}.
"""

from __future__ import annotations

import argparse
import asyncio

ANSWERS = {
    b"Beautiful is better than?": b"Ugly.",
    b"Explicit is better than?": b"Implicit.",
    b"Simple is better than?": b"Complex.",
}


class ZenProtocol(asyncio.Protocol):
    """
    As the book's: a question is complete when the buffer ends with C{?}.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.data = b""

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.data.endswith(b"?"):
            self.transport.write(ANSWERS.get(self.data, b"Error: unknown aphorism."))
            self.data = b""


async def serve(port: int) -> None:
    """
    Listen on 127.0.0.1 until killed.
    """
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ZenProtocol, "127.0.0.1", port)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    options = parser.parse_args()
    if options.loop == "uvloop":
        import uvloop

        uvloop.run(serve(options.port))
    else:
        asyncio.run(serve(options.port))


if __name__ == "__main__":
    main()
