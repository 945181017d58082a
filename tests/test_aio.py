"""
netplugins' checkers from asyncio: L{netplugins.cred.aio} on its own, and the
book's chapter 7 asyncio Zen server with a login line
(C{examples/asyncio_zen_login.py}) run as the plain asyncio program it is, in a
subprocess, with C{htpasswd:} and C{ldap:} (the private slapd of
L{tests.slapd}) checkers, driven by a plain socket client.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import txaio as _txaio
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from netplugins.cred import aio
from netplugins.cred.htpasswd import hashPassword
from netplugins.cred.throttle import LoginThrottle, TooManyAttempts
from tests.slapd import (
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    WEIRD_UID,
    sharedSlapd,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "asyncio_zen_login.py"
QUESTIONS = [
    (b"Beautiful is better than?", b"Ugly."),
    (b"Explicit is better than?", b"Implicit."),
    (b"Simple is better than?", b"Complex."),
]
# bcrypt cost of the deliberately slow user: about a second of one core.
SLOW_COST = 14
_slowHash: list[str] = []
txaio: Any = _txaio


def recvUntil(sock: socket.socket, suffix: bytes = b".", count: int = 1) -> bytes:
    """
    Read until the data ends with C{suffix}, like the book's C{recv_until}, and
    holds C{count} of them.
    """
    data = b""
    while not data.endswith(suffix) or data.count(suffix) < count:
        more = sock.recv(4096)
        if not more:
            raise EOFError(f"socket closed after {data!r}")
        data += more
    return data


class ZenLoginServer:
    """
    C{examples/asyncio_zen_login.py} in a subprocess on a free port.
    """

    def __init__(self, case: SynchronousTestCase, auth: str, loginDelay: float = 1.0):
        self.errors = Path(case.mktemp())
        with self.errors.open("wb") as stderr:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(EXAMPLE),
                    "--port",
                    "0",
                    "--auth",
                    auth,
                    "--login-delay",
                    str(loginDelay),
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )
        case.addCleanup(self.stop)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        line = self.process.stdout.readline().decode() if ready else ""
        if not line.startswith("listening on "):
            self.stop()
            raise AssertionError(f"server did not start: {line!r}\n{self.log()}")
        self.port = int(line.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.errors.read_text(errors="replace")

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        return sock

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


class _Case(SynchronousTestCase):
    def login(self, server: ZenLoginServer, user: str, password: str) -> bytes:
        sock = server.connect()
        self.addCleanup(sock.close)
        sock.sendall(f"LOGIN {user} {password}\n".encode())
        return recvUntil(sock)

    def assertServes(self, server: ZenLoginServer, user: str, password: str) -> None:
        """
        C{user} logs in and then gets the book's answers.
        """
        sock = server.connect()
        self.addCleanup(sock.close)
        sock.sendall(f"LOGIN {user} {password}\n".encode())
        self.assertEqual(recvUntil(sock), b"Welcome.")
        for question, expected in QUESTIONS:
            sock.sendall(question)
            self.assertEqual(recvUntil(sock), expected)

    def writeFile(self, name: str, text: str) -> str:
        directory = Path(self.mktemp())
        directory.mkdir(exist_ok=True)
        path = directory / name
        path.write_text(text, encoding="utf-8")
        return str(path.resolve())


class HtpasswdTests(_Case):
    """
    The asyncio server with C{--auth htpasswd:FILE}.
    """

    def users(self, extra: str = "") -> str:
        return self.writeFile(
            "users",
            f"alice:{hashPassword('alice-pw', cost=4)}\n"
            f"bob:{hashPassword('bob pw with spaces', cost=4)}\n" + extra,
        )

    def test_rightPasswordThenQuestions(self) -> None:
        """
        The right password gets C{Welcome.}, then questions get the book's answers.
        """
        server = ZenLoginServer(self, f"htpasswd:{self.users()}")
        self.assertServes(server, "alice", "alice-pw")
        self.assertServes(server, "bob", "bob pw with spaces")

    def test_wrongPasswordRefused(self) -> None:
        """A wrong password or unknown user is refused; questions wait for a login."""
        # A wrong password or unknown user is refused and questions stay unanswered on
        # that connection until a login succeeds.
        server = ZenLoginServer(self, f"htpasswd:{self.users()}", loginDelay=0.01)
        sock = server.connect()
        self.addCleanup(sock.close)
        sock.sendall(b"LOGIN alice alice-PW\n")
        self.assertEqual(recvUntil(sock), b"Error: login refused.")
        sock.sendall(b"LOGIN mallory alice-pw\n")
        self.assertEqual(recvUntil(sock), b"Error: login refused.")
        sock.sendall(b"Beautiful is better than?\n")
        self.assertEqual(recvUntil(sock), b"Error: expected LOGIN user password.")
        sock.sendall(b"LOGIN alice alice-pw\nBeautiful is better than?")
        self.assertEqual(recvUntil(sock, count=2), b"Welcome.Ugly.")

    def test_attemptsPerConnection(self) -> None:
        """
        After six refused logins the server closes the connection.
        """
        server = ZenLoginServer(self, f"htpasswd:{self.users()}", loginDelay=0.01)
        sock = server.connect()
        self.addCleanup(sock.close)
        for _ in range(6):
            sock.sendall(b"LOGIN alice nope\n")
            self.assertEqual(recvUntil(sock), b"Error: login refused.")
        self.assertEqual(sock.recv(100), b"")

    def test_loopServesDuringSlowCheck(self) -> None:
        """Another client logs in and is answered while one login's hash is slow."""
        # While one login's hash takes about a second in the checker's pool, another
        # client logs in and has its questions answered.
        if not _slowHash:
            _slowHash.append(hashPassword("slow-pw", cost=SLOW_COST))
        slowUser = f"slow:{_slowHash[0]}\n"
        server = ZenLoginServer(self, f"htpasswd:{self.users(slowUser)}")
        slow = server.connect()
        self.addCleanup(slow.close)
        started = time.monotonic()
        slow.sendall(b"LOGIN slow slow-pw\n")
        self.assertServes(server, "alice", "alice-pw")
        fast = time.monotonic() - started
        readable, _, _ = select.select([slow], [], [], 0)
        self.assertEqual(readable, [], f"slow login answered within {fast:.3f}s")
        self.assertEqual(recvUntil(slow), b"Welcome.")

    def test_terminateStopsPools(self) -> None:
        """SIGTERM after logins ends the server promptly, its pool threads stopped."""
        # SIGTERM ends the server promptly and cleanly after logins: the checkers' pool
        # threads, which are not daemons, are stopped.
        server = ZenLoginServer(self, f"htpasswd:{self.users()}")
        self.assertServes(server, "alice", "alice-pw")
        server.process.send_signal(signal.SIGTERM)
        self.assertEqual(server.process.wait(15), 0, server.log())
        self.assertNotIn("Traceback", server.log())


class LDAPTests(_Case):
    """
    The asyncio server with C{--auth ldap:...} against the private slapd.
    """

    def config(self) -> str:
        directory = sharedSlapd()
        secret = self.writeFile("reader.secret", SERVICE_PASSWORD + "\n")
        return self.writeFile(
            "ldap.ini",
            "[ldap]\n"
            f"url = {directory.url()}/{PEOPLE}?uid?sub\n"
            f"bind_dn = {SERVICE_DN}\n"
            f"bind_password_file = {secret}\n"
            f"ca_file = {directory.caFile}\n"
            "starttls = yes\n"
            "connect_timeout = 5\n",
        )

    def test_rightPasswordThenQuestions(self) -> None:
        """Directory users, odd uids included, log in through the config-file form."""
        # Directory users log in through the config-file form (StartTLS, service
        # account), the one with C{*(=,} and a non-ASCII letter in its uid too.
        server = ZenLoginServer(self, f"ldap:config={self.config()}")
        self.assertServes(server, "alice", "alice-pw")
        self.assertServes(server, WEIRD_UID, "zoë-pw")

    def test_urlForm(self) -> None:
        """
        The URL form (anonymous search, cleartext) logs users in as well.
        """
        url = f"{sharedSlapd().url()}/{PEOPLE}?uid?sub"
        server = ZenLoginServer(self, f"ldap:{url}")
        self.assertServes(server, "bob", "bob-pw")

    def test_wrongPasswordRefused(self) -> None:
        """
        A wrong password, an unknown user and a filter injection are refused.
        """
        server = ZenLoginServer(self, f"ldap:config={self.config()}", loginDelay=0.01)
        for user, password in [("alice", "bob-pw"), ("nobody", "x"), ("*", "alice-pw")]:
            self.assertEqual(
                self.login(server, user, password), b"Error: login refused."
            )

    def test_terminateUnbinds(self) -> None:
        """SIGTERM after LDAP logins unbinds the search connection, stops the pool."""
        # SIGTERM after LDAP logins ends the server cleanly: the pooled search
        # connection is unbound and the LDAP pool stopped.
        server = ZenLoginServer(self, f"ldap:config={self.config()}")
        self.assertServes(server, "carol", "carol-pw")
        server.process.send_signal(signal.SIGTERM)
        self.assertEqual(server.process.wait(15), 0, server.log())
        self.assertNotIn("Traceback", server.log())


class AddressTests(SynchronousTestCase):
    """
    L{aio.addressOf} turns asyncio peer names into Twisted addresses.
    """

    def test_addresses(self) -> None:
        """
        IPv4 and IPv6 peer names become addresses; a UNIX peer has none.
        """
        self.assertEqual(
            [
                aio.addressOf(("192.0.2.1", 1060)),
                aio.addressOf(("2001:db8::1", 1060, 0, 0)),
                aio.addressOf(""),
            ],
            [
                IPv4Address("TCP", "192.0.2.1", 1060),
                IPv6Address("TCP", "2001:db8::1", 1060),
                None,
            ],
        )


class InstallTests(SynchronousTestCase):
    """
    L{aio.install} in a process whose reactor is already chosen.
    """

    def test_foreignReactor(self) -> None:
        """With another reactor installed, install refuses and explains why."""
        # With another reactor installed (trial's), install refuses with an explanation
        # instead of running checkers on a reactor nobody runs.
        from twisted.internet import reactor  # noqa: F401 - trial's, installed

        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        error = self.assertRaises(RuntimeError, aio.install, loop)
        self.assertIn("before anything imports twisted.internet.reactor", str(error))


class _Exploding:
    credentialInterfaces = InMemoryUsernamePasswordDatabaseDontUse.credentialInterfaces

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        return fail(OSError("backend on fire"))


class CheckTests(SynchronousTestCase):
    """
    L{aio.check} bridges a checker's Deferred into an asyncio future through
    txaio.
    """

    def setUp(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.addCleanup(self.loop.close)
        txaio.use_asyncio()
        txaio.config.loop = self.loop
        self.addCleanup(setattr, txaio.config, "loop", None)
        # Twisted's in-memory checker wants bytes for both.
        self.checker = InMemoryUsernamePasswordDatabaseDontUse()
        self.checker.addUser(b"alice", b"alice-pw")

    def test_success(self) -> None:
        """
        The right password resolves an asyncio future to the avatar ID.
        """
        future = aio.check(self.checker, b"alice", b"alice-pw")
        self.assertIsInstance(future, asyncio.Future)
        self.assertEqual(self.loop.run_until_complete(future), b"alice")

    def test_refused(self) -> None:
        """
        A wrong password raises L{UnauthorizedLogin} from C{checkPassword}.
        """
        self.assertRaises(
            UnauthorizedLogin,
            self.loop.run_until_complete,
            aio.checkPassword(self.checker, "alice", "wrong"),
        )

    def test_backendError(self) -> None:
        """
        Any other checker error is logged and becomes L{UnauthorizedLogin}.
        """
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.assertRaises(
            UnauthorizedLogin,
            self.loop.run_until_complete,
            aio.checkPassword(_Exploding(), "alice", "alice-pw"),
        )
        errors = [e for e in events if e.get("log_level") == LogLevel.critical]
        self.assertEqual(len(errors), 1)
        self.flushLoggedErrors(OSError)

    def test_cancel(self) -> None:
        """
        Cancelling the future cancels the checker's Deferred.
        """
        cancelled: list[object] = []
        pending: Deferred[Any] = Deferred(cancelled.append)
        checker = _Exploding()
        checker.requestAvatarId = lambda credentials: pending  # type: ignore[method-assign]
        future = aio.check(checker, "alice", "alice-pw")
        future.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.assertTrue(future.cancelled())
        self.assertEqual(cancelled, [pending])

    def test_throttled(self) -> None:
        """Under a throttle, the attempt after the last fails with TooManyAttempts."""
        # Under a throttle, the connection's attempts are counted and the one after the
        # last fails with L{TooManyAttempts}.
        from twisted.internet.task import Clock

        throttle = LoginThrottle(Clock(), maxAttemptsPerConnection=1)
        attempts = throttle.connection()
        peer = aio.addressOf(("127.0.0.1", 1))
        self.assertEqual(
            self.loop.run_until_complete(
                aio.checkPassword(
                    self.checker,
                    b"alice",
                    b"alice-pw",
                    throttle=throttle,
                    peer=peer,
                    attempts=attempts,
                )
            ),
            b"alice",
        )
        self.assertRaises(
            TooManyAttempts,
            self.loop.run_until_complete,
            aio.checkPassword(
                self.checker,
                b"alice",
                b"alice-pw",
                throttle=throttle,
                peer=peer,
                attempts=attempts,
            ),
        )
