"""
aiosmtpd delivering every message to one Maildir with the stdlib's
C{mailbox.Maildir}, then C{fsync}ing it (np-smtp acknowledges a message only
once it is on disk).  The peer of C{np-smtp}, run from its own virtualenv:

    VENV/bin/python -m bench.peers.aiosmtpd_maildir --port PORT --maildir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import mailbox
import os
from typing import Any

from aiosmtpd.smtp import SMTP


class MaildirHandler:
    """
    Accepts every recipient and stores the message in one Maildir.
    """

    def __init__(self, path: str) -> None:
        self.maildir = mailbox.Maildir(path, create=True)
        self.path = path

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        key = self.maildir.add(envelope.original_content or envelope.content)
        # mailbox.Maildir does not fsync; do it as a durable MTA must.
        fd = os.open(os.path.join(self.path, "new", key), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return "250 2.0.0 OK"


async def serve(port: int, path: str) -> None:
    """
    Listen on 127.0.0.1 until killed.
    """
    handler = MaildirHandler(path)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="localhost"), "127.0.0.1", port
    )
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    options = parser.parse_args()
    asyncio.run(serve(options.port, options.maildir))


if __name__ == "__main__":
    main()
