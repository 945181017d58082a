"""
An aiohttp server on uvloop answering C{GET /get} with httpbin's JSON shape
(args, headers, origin, url), the peer of C{np-httpbin /get}:

    VENV/bin/python -m bench.peers.aiohttp_get --port PORT

It runs in its own virtualenv (C{bench/out/venvs/aiohttp}, made by
C{python -m bench.prepare venv aiohttp}), with no access log, like
C{np-httpbin --access-log none}.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvloop
from aiohttp import web


async def get(request: web.Request) -> web.Response:
    """
    httpbin's C{/get}: the query arguments, headers, client address and URL.
    """
    return web.json_response(
        {
            "args": dict(request.query),
            "headers": dict(request.headers),
            "origin": request.remote,
            "url": str(request.url),
        },
        dumps=lambda value: json.dumps(value, indent=2) + "\n",
    )


async def serve(port: int) -> None:
    """
    Listen on 127.0.0.1 until killed.
    """
    app = web.Application()
    app.router.add_get("/get", get)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
