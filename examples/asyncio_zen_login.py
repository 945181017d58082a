"""
The Zen server of Foundations of Python Network Programming, chapter 7, in its
C{asyncio.Protocol} form, with a login line added, checking passwords with
netplugins' checkers (C{htpasswd:}, C{ldap:}, any C{--auth} string Twisted's
strcred takes) from a plain asyncio program.

The client first sends C{LOGIN user password} and a newline, and reads the reply
up to its C{.}: C{Welcome.} or C{Error: login refused.} (after six refusals the
connection is closed, and failures delay later logins for that name and
address).  Once logged in it asks the book's questions: C{?}-terminated
aphorisms answered up to a C{.}, as in the book::

    python examples/asyncio_zen_login.py --auth htpasswd:users --port 1060
    python examples/asyncio_zen_login.py \\
        --auth ldap:ldap://ldap.example.org/ou=people,dc=example,dc=org

The checks never block the loop: L{netplugins.cred.aio} runs Twisted's reactor
as a guest on this program's asyncio loop, so the checkers' thread pools and
timers work, and hands back asyncio futures.  The server prints
C{listening on HOST:PORT} once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from netplugins.cred import aio
from netplugins.cred.throttle import LoginThrottle
from netplugins.zen import answer

# Before login only one short line is expected; after it, one question.
MAX_LINE = 1024
MAX_QUESTION = 1024

WELCOME = b"Welcome."
REFUSED = b"Error: login refused."
MALFORMED = b"Error: expected LOGIN user password."

logger = logging.getLogger("zen-login")


class ZenLoginServer(asyncio.Protocol):
    """
    One connection: a C{LOGIN} line checked by C{checker}, then the book's
    question-and-answer exchange.
    """

    def __init__(self, checker: Any, throttle: LoginThrottle) -> None:
        self.checker = checker
        self.throttle = throttle
        self.attempts = throttle.connection()
        self.user: str | bytes | None = None
        self.checking: asyncio.Future[Any] | None = None
        self.buffer = b""
        self.transport: Any = None
        self.peer: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        logger.info("Accepted connection from %s", self.peer)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.process()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.checking is not None:
            self.checking.cancel()
        logger.info("Client %s closed socket", self.peer)

    def process(self) -> None:
        """
        Act on every complete line or question buffered, in order; while a
        login is being checked, wait for its answer.
        """
        while self.checking is None and not self.transport.is_closing():
            if self.user is None:
                line, newline, rest = self.buffer.partition(b"\n")
                if not newline:
                    self.closeIfLonger(MAX_LINE)
                    return
                self.buffer = rest
                self.login(line.rstrip(b"\r"))
            else:
                question, mark, rest = self.buffer.partition(b"?")
                if not mark:
                    self.closeIfLonger(MAX_QUESTION)
                    return
                self.buffer = rest
                self.transport.write(answer(question.lstrip() + b"?"))

    def closeIfLonger(self, limit: int) -> None:
        if len(self.buffer) > limit:
            logger.warning("%s sent more than %d bytes unterminated", self.peer, limit)
            self.transport.close()

    def login(self, line: bytes) -> None:
        words = line.split(b" ", 2)
        if len(words) != 3 or words[0] != b"LOGIN":
            self.transport.write(MALFORMED)
            return
        # Usernames and passwords go to the checker as the client sent them:
        # bytes, decoded and screened there (NUL, non-UTF-8, empty).
        self.checking = asyncio.ensure_future(
            aio.checkPassword(
                self.checker,
                words[1],
                words[2],
                throttle=self.throttle,
                peer=aio.addressOf(self.peer),
                attempts=self.attempts,
            )
        )
        self.checking.add_done_callback(self.checked)

    def checked(self, checking: asyncio.Future[Any]) -> None:
        self.checking = None
        if checking.cancelled() or self.transport.is_closing():
            return
        error = checking.exception()
        if error is None:
            self.user = checking.result()
            logger.info("%s logged in as %r", self.peer, self.user)
            self.transport.write(WELCOME)
        else:
            # aio turns every failure into UnauthorizedLogin: never a success.
            logger.info("%s: login refused (%s)", self.peer, type(error).__name__)
            self.transport.write(REFUSED)
            if self.attempts.exhausted:
                self.transport.close()
                return
        self.process()


async def serve(
    host: str,
    port: int,
    auth: str,
    loginDelay: float = 1.0,
) -> None:
    """
    Listen on C{host}:C{port} until cancelled, checking logins with the
    strcred checker C{auth}; then shut the checkers' pools down.
    """
    # First: the reactor the checkers use must be the guest on this loop.
    reactor = aio.install()
    from twisted.cred.strcred import makeChecker

    checker = makeChecker(auth)
    throttle = LoginThrottle(reactor, baseDelay=loginDelay, maxDelay=30 * loginDelay)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ZenLoginServer(checker, throttle), host, port
    )
    try:
        for sock in server.sockets:
            address = sock.getsockname()
            print(f"listening on {address[0]}:{address[1]}", flush=True)
        await server.serve_forever()
    finally:
        server.close()
        await aio.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1060)
    parser.add_argument(
        "--auth", required=True, help="a checker: htpasswd:FILE, ldap:..."
    )
    parser.add_argument(
        "--login-delay",
        type=float,
        default=1.0,
        help="seconds of delay after the first failure (doubling after each)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s"
    )
    # The checkers log through twisted.logger: into the standard logging.
    from twisted.cred.strcred import InvalidAuthType
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await serve(args.host, args.port, args.auth, args.login_delay)
        except asyncio.CancelledError:
            pass
        except (ValueError, InvalidAuthType) as e:
            parser.error(f"--auth {args.auth}: {e}")

    asyncio.run(run())


if __name__ == "__main__":
    main()
