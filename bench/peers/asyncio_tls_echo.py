"""
An asyncio (or uvloop) C{Protocol} echo server over TLS, the peer of
C{np-echo --listen-tls}:

    python -m bench.peers.asyncio_tls_echo --port PORT --cert C --key K
        [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl

from bench.peers.asyncio_echo import Echo


async def serve(port: int, context: ssl.SSLContext) -> None:
    """
    Listen on 127.0.0.1 and echo forever.
    """
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, ssl=context)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    options = parser.parse_args()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(options.cert, options.key)
    if options.loop == "uvloop":
        import uvloop

        uvloop.run(serve(options.port, context))
    else:
        asyncio.run(serve(options.port, context))


if __name__ == "__main__":
    main()
