"""
Tests for L{netplugins.cred.throttle}: per-connection attempt limits and delays
after failures per user name and per source address, on a L{Clock}.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementer

from netplugins.cred.throttle import (
    LoginAttempts,
    LoginThrottle,
    ThrottledChecker,
    ThrottledPortal,
    TooManyAttempts,
    addressKey,
    userKey,
)


class IAvatar(Interface):
    pass


@implementer(IRealm)
class Realm:
    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return IAvatar, avatarId, lambda: None


class CountingChecker(InMemoryUsernamePasswordDatabaseDontUse):
    """
    Counts how often the portal asked.
    """

    def __init__(self) -> None:
        super().__init__(alice=b"right", bob=b"right")
        self.asked = 0

    def requestAvatarId(self, credentials: Any) -> Any:
        self.asked += 1
        return super().requestAvatarId(credentials)


HERE = IPv4Address("TCP", "192.0.2.1", 1000)
THERE = IPv4Address("TCP", "198.51.100.9", 1000)


class ThrottleTests(SynchronousTestCase):
    """
    L{LoginThrottle.login} around a real L{Portal}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.checker = CountingChecker()
        self.portal = Portal(Realm(), [self.checker])
        self.throttle = LoginThrottle(
            self.clock, maxAttemptsPerConnection=3, baseDelay=1, maxDelay=8
        )

    def login(
        self,
        user: str | bytes = "alice",
        password: bytes = b"right",
        peer: Any = HERE,
        connection: LoginAttempts | None = None,
    ) -> Deferred[Any]:
        if isinstance(user, str):
            user = user.encode()
        return self.throttle.login(
            self.portal,
            UsernamePassword(user, password),
            None,
            IAvatar,
            peer=peer,
            connection=connection,
        )

    def fails(self, **kw: Any) -> None:
        self.failureResultOf(self.login(password=b"wrong", **kw), UnauthorizedLogin)

    def test_noFailuresNoDelay(self) -> None:
        """Logins with no failures on record run at once, without timers."""
        for _ in range(10):
            iface, avatar, _ = self.successResultOf(self.login())
            self.assertEqual((iface, avatar), (IAvatar, b"alice"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connectionLimit(self) -> None:
        """The N+1th attempt on a connection fails at once without a check."""
        attempts = self.throttle.connection()
        self.successResultOf(self.login(connection=attempts))
        self.assertFalse(attempts.exhausted)
        self.successResultOf(self.login(connection=attempts))
        self.successResultOf(self.login(connection=attempts))
        self.assertTrue(attempts.exhausted)
        with capturedLogs() as events:
            f = self.failureResultOf(self.login(connection=attempts), TooManyAttempts)
        self.assertIsInstance(f.value, UnauthorizedLogin)
        self.assertEqual(self.checker.asked, 3)
        [event] = events
        self.assertEqual(
            (event["log_level"], event["user"], event["peer"]),
            (LogLevel.warn, "alice", HERE),
        )
        # Another connection is not affected.
        self.successResultOf(self.login(connection=self.throttle.connection()))

    def test_growingDelay(self) -> None:
        """Each failure doubles the next wait for the name, up to maxDelay."""
        waits = []
        for _ in range(6):
            waits.append(self.throttle.waitFor("alice", THERE))
            d = self.login(password=b"wrong", peer=THERE)
            self.clock.advance(waits[-1])
            self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(waits, [0, 1, 2, 4, 8, 8])

    def test_delayHoldsCheck(self) -> None:
        """A delayed login is checked only when its wait is over."""
        self.fails()
        d = self.login()
        self.clock.advance(0.99)
        self.assertNoResult(d)
        self.assertEqual(self.checker.asked, 1)
        self.clock.advance(0.01)
        self.successResultOf(d)

    def test_delayCountsFromLastFailure(self) -> None:
        """A login long enough after the last failure does not wait."""
        self.fails()
        self.clock.advance(1)
        self.successResultOf(self.login(peer=THERE))

    def test_perUserAcrossAddresses(self) -> None:
        """Failures for a name delay that name from any address."""
        self.fails(peer=HERE)
        self.assertNoResult(self.login(peer=THERE))

    def test_perAddressAcrossUsers(self) -> None:
        """Failures from an address delay other names from it, not elsewhere."""
        self.fails(peer=HERE)
        self.assertNoResult(self.login("bob", peer=HERE))
        self.successResultOf(self.login("bob", peer=THERE))

    def test_successForgetsName(self) -> None:
        """After a success the name's failures are forgotten."""
        self.fails()
        self.clock.advance(1)
        self.fails(peer=THERE)
        d = self.login(peer=THERE)
        self.clock.advance(2)
        self.successResultOf(d)
        self.assertEqual(self.throttle.waitFor("alice"), 0)
        # The next failure starts again at the base delay.
        self.fails(peer=THERE)
        self.assertEqual(self.throttle.waitFor("alice"), 1)

    def test_forgottenAfterTime(self) -> None:
        """Records go forgetAfter seconds after the last failure."""
        throttle = LoginThrottle(self.clock, baseDelay=1, maxDelay=8, forgetAfter=60)
        for _ in range(3):
            throttle._users.fail("alice", self.clock.seconds())
        self.clock.advance(59)
        self.assertEqual(len(throttle._users), 1)
        throttle._users.fail("alice", self.clock.seconds())
        self.assertEqual(throttle.waitFor("alice"), 8)
        self.clock.advance(60)
        self.assertEqual((throttle.waitFor("alice"), len(throttle._users)), (0, 0))

    def test_caseFolded(self) -> None:
        """Alice, ALICE and b'alice' share one record."""
        self.fails(user="Alice", peer=None)
        self.assertEqual(self.throttle.waitFor("ALICE"), 1)
        self.assertEqual(self.throttle.waitFor(b"alice"), 1)

    def test_boundedMemory(self) -> None:
        """Beyond maxEntries the least recently failed record goes."""
        throttle = LoginThrottle(self.clock, maxEntries=2)
        for name in ["a", "b", "a", "c"]:
            throttle._users.fail(name, self.clock.seconds())
        self.assertEqual(list(throttle._users._entries), ["a", "c"])
        self.assertEqual(throttle.waitFor("b"), 0)

    def test_longNamesBounded(self) -> None:
        """Record keys are truncated, so huge names cannot fill memory."""
        self.assertEqual(len(userKey("x" * 100000) or ""), 256)

    def test_otherErrorsNotCounted(self) -> None:
        """A backend error that is not UnauthorizedLogin passes through uncounted."""
        d = self.throttle.attempt(
            lambda: fail(RuntimeError("backend")), username="alice", peer=HERE
        )
        self.failureResultOf(d, RuntimeError)
        self.assertEqual(self.throttle.waitFor("alice", HERE), 0)

    def test_cancelWhileWaiting(self) -> None:
        """Cancelling a delayed login drops its timer and checks nothing."""
        self.fails()
        d = self.login()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual((self.clock.getDelayedCalls(), self.checker.asked), ([], 1))

    def test_delayLogged(self) -> None:
        """A delayed login is logged with its user, peer and delay."""
        self.fails()
        with capturedLogs() as events:
            self.login(peer=HERE)
        [event] = events
        self.assertEqual(
            (event["user"], event["peer"], event["delay"]), ("alice", HERE, 1.0)
        )

    def test_badSettings(self) -> None:
        """Non-positive limits and delays are ValueErrors."""
        for kw in [
            {"maxAttemptsPerConnection": 0},
            {"baseDelay": 0},
            {"baseDelay": 5, "maxDelay": 1},
            {"forgetAfter": 0},
            {"maxEntries": 0},
        ]:
            self.assertRaises(ValueError, LoginThrottle, self.clock, **kw)


class AddressKeyTests(SynchronousTestCase):
    """
    L{addressKey} groups addresses the way attackers hold them.
    """

    def test_keys(self) -> None:
        """IPv4 as is, IPv6 by /64, IPv4-mapped as IPv4, UNIX none."""
        self.assertEqual(
            [
                addressKey(HERE),
                addressKey(IPv6Address("TCP", "2001:db8:1:2:aaaa::1", 1)),
                addressKey(IPv6Address("TCP", "2001:db8:1:2:bbbb::9%eth0", 1)),
                addressKey(IPv6Address("TCP", "::ffff:192.0.2.1", 1)),
                addressKey(UNIXAddress(b"/run/s")),
                addressKey(None),
            ],
            [
                "192.0.2.1",
                "2001:db8:1:2::/64",
                "2001:db8:1:2::/64",
                "192.0.2.1",
                None,
                None,
            ],
        )


class AdapterTests(SynchronousTestCase):
    """
    L{ThrottledPortal} and L{ThrottledChecker}, for code that knows nothing of
    throttles.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.throttle = LoginThrottle(self.clock)
        self.checker = CountingChecker()

    def test_portal(self) -> None:
        """ThrottledPortal delays a name after failures and delegates the rest."""
        portal = ThrottledPortal(Portal(Realm(), [self.checker]), self.throttle)
        self.assertIn(IUsernamePassword, portal.listCredentialsInterfaces())
        wrong = UsernamePassword(b"alice", b"wrong")
        self.failureResultOf(portal.login(wrong, None, IAvatar), UnauthorizedLogin)
        d = portal.login(UsernamePassword(b"alice", b"right"), None, IAvatar)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(d)[1], b"alice")

    def test_portalMindAddress(self) -> None:
        """A mind that is an address keys the throttle by address too."""
        portal = ThrottledPortal(Portal(Realm(), [self.checker]), self.throttle)
        wrong = UsernamePassword(b"alice", b"wrong")
        self.failureResultOf(portal.login(wrong, HERE, IAvatar), UnauthorizedLogin)
        self.assertEqual(self.throttle.waitFor("bob", HERE), 1)

    def test_checker(self) -> None:
        """ThrottledChecker delays a name's next check after a failure."""
        checker = ThrottledChecker(self.checker, self.throttle)
        self.assertEqual(
            checker.credentialInterfaces, self.checker.credentialInterfaces
        )
        wrong = UsernamePassword(b"bob", b"wrong")
        self.failureResultOf(checker.requestAvatarId(wrong), UnauthorizedLogin)
        d = checker.requestAvatarId(UsernamePassword(b"bob", b"right"))
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(d), b"bob")
