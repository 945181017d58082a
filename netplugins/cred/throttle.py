"""
Login throttling shared by every service that logs users in.

A service makes one L{LoginThrottle} and its protocols log in through it::

    throttle = LoginThrottle(reactor, maxAttemptsPerConnection=6)
    ...
    def connectionMade(self):
        self.attempts = throttle.connection()

    def do_LOGIN(self, user, password):
        d = throttle.login(
            portal, UsernamePassword(user, password), None, IMailbox,
            peer=self.transport.getPeer(), connection=self.attempts,
        )
        d.addCallbacks(self._cbLogin, self._ebLogin)

    def _ebLogin(self, failure):
        failure.trap(UnauthorizedLogin)      # TooManyAttempts is one too
        self.sendLine(b"NO wrong user name or password")
        if self.attempts.exhausted:
            self.transport.loseConnection()

Three things slow guessing down:
 - at most C{maxAttemptsPerConnection} logins per connection; the next fails
   at once with L{TooManyAttempts} (an L{UnauthorizedLogin}), without asking the
   portal; C{attempts.exhausted} says when to hang up;
 - after failures for a user name, that name's next login waits
   C{baseDelay * 2 ** (failures - 1)} seconds, at most C{maxDelay}, counted from
   the last failure, whichever connection or address it comes from;
 - the same per source address (IPv6 by /64, as one host usually has a whole
   /64; IPv4-mapped IPv6 as IPv4).

A success forgets the user name's failures; the address's are forgotten
C{forgetAfter} seconds after its last failure, like a name's.  Logins with no
failures on record run at once.  The waits are not queued: concurrent logins
for the same name wait for the same moment, so the service's per-address
connection cap and the per-connection limit bound how many guesses run in
parallel.  Each table keeps at most C{maxEntries} records, least recently used
first out.  User names are compared case-folded and truncated, so that
C{Alice} and C{ALICE} share a record.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from attrs import define
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

_T = TypeVar("_T")

MAX_KEY_LENGTH = 256


class TooManyAttempts(UnauthorizedLogin):
    """
    The connection used all its login attempts: refuse it and disconnect.
    """


@define
class LoginAttempts:
    """
    The login attempts made on one connection.

    @ivar limit: how many are allowed.
    @ivar used: how many were made.
    """

    limit: int
    used: int = 0

    @property
    def exhausted(self) -> bool:
        """
        Whether the next attempt will be refused: time to disconnect.
        """
        return self.used >= self.limit


@define
class _Record:
    failures: int
    lastFailure: float


class _Records:
    """
    Failure records by key, at most C{maxEntries}, least recently used out.
    """

    def __init__(self, maxEntries: int, forgetAfter: float) -> None:
        self._entries: OrderedDict[str, _Record] = OrderedDict()
        self._maxEntries = maxEntries
        self._forgetAfter = forgetAfter

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str | None, now: float) -> _Record | None:
        if key is None:
            return None
        record = self._entries.get(key)
        if record is not None and now - record.lastFailure >= self._forgetAfter:
            del self._entries[key]
            return None
        return record

    def fail(self, key: str | None, now: float) -> None:
        if key is None:
            return
        record = self.get(key, now)
        if record is None:
            self._entries[key] = _Record(1, now)
            if len(self._entries) > self._maxEntries:
                self._entries.popitem(last=False)
        else:
            record.failures += 1
            record.lastFailure = now
            self._entries.move_to_end(key)

    def forget(self, key: str | None) -> None:
        if key is not None:
            self._entries.pop(key, None)


def userKey(username: object) -> str | None:
    """
    The throttling key for a user name (C{str} or C{bytes}), or C{None}.
    """
    if isinstance(username, bytes):
        username = username.decode("utf-8", "replace")
    if not isinstance(username, str):
        return None
    return username.casefold()[:MAX_KEY_LENGTH]


def addressKey(peer: object) -> str | None:
    """
    The throttling key for a peer address: its IPv4 address or IPv6 /64, or
    C{None} for addresses without a host (UNIX sockets).
    """
    host = getattr(peer, "host", None)
    if not isinstance(host, str):
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host[:MAX_KEY_LENGTH]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginThrottle:
    """
    Limits login attempts per connection and delays them after failures per user
    name and per source address.  See the module docstring.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime | None = None,
        *,
        maxAttemptsPerConnection: int = 6,
        baseDelay: float = 1.0,
        maxDelay: float = 30.0,
        forgetAfter: float = 900.0,
        maxEntries: int = 10000,
    ) -> None:
        """
        @param reactor: the clock delays are measured on; the global reactor if
            C{None}.
        @param forgetAfter: seconds after its last failure that a record goes.
        @param maxEntries: the most records kept per table (names, addresses).
        @raise ValueError: for limits or delays that are not positive.
        """
        clock: Any = reactor
        if clock is None:
            from twisted.internet import reactor as clock
        if maxAttemptsPerConnection < 1 or maxEntries < 1:
            raise ValueError("attempt and entry limits must be at least 1")
        if not 0 < baseDelay <= maxDelay or forgetAfter <= 0:
            raise ValueError("need 0 < baseDelay <= maxDelay and forgetAfter > 0")
        self._clock = clock
        self.maxAttemptsPerConnection = maxAttemptsPerConnection
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self._users = _Records(maxEntries, forgetAfter)
        self._addresses = _Records(maxEntries, forgetAfter)

    def connection(self) -> LoginAttempts:
        """
        A new per-connection attempt counter, to pass to every L{login} on it.
        """
        return LoginAttempts(self.maxAttemptsPerConnection)

    def _delayFor(self, record: _Record | None) -> float:
        if record is None:
            return 0.0
        return min(self.maxDelay, self.baseDelay * 2.0 ** min(record.failures - 1, 64))

    def waitFor(self, username: object = None, peer: object = None) -> float:
        """
        How many seconds a login for C{username} from C{peer} would wait now.
        """
        now = self._clock.seconds()
        waits = [0.0]
        for table, key in (
            (self._users, userKey(username)),
            (self._addresses, addressKey(peer)),
        ):
            record = table.get(key, now)
            if record is not None:
                waits.append(record.lastFailure + self._delayFor(record) - now)
        return max(waits)

    def attempt(
        self,
        check: Callable[[], Deferred[_T]],
        *,
        username: object = None,
        peer: IAddress | None = None,
        connection: LoginAttempts | None = None,
    ) -> Deferred[_T]:
        """
        Run C{check} (a login or a checker call) under the throttle.

        @param username: the user name the check is for, if it has one.
        @return: C{check}'s result, after the delay earned by past failures;
            a L{TooManyAttempts} failure at once if C{connection} is exhausted.
            An L{UnauthorizedLogin} from C{check} counts as a failure for the
            name and the address; other errors pass through uncounted.
        """
        user, address = userKey(username), addressKey(peer)
        if connection is not None:
            if connection.exhausted:
                self.log.warn(
                    "refusing login for {user} from {peer}: all {limit} attempts "
                    "on this connection used",
                    user=user,
                    peer=peer,
                    limit=connection.limit,
                )
                return fail(TooManyAttempts("too many login attempts"))
            connection.used += 1
        wait = self.waitFor(username, peer)
        if wait > 0:
            self.log.info(
                "delaying login for {user} from {peer} by {delay:.1f}s after "
                "earlier failures",
                user=user,
                peer=peer,
                delay=wait,
            )
            d: Deferred[_T] = deferLater(self._clock, wait, lambda: None).addCallback(
                lambda _: check()
            )
        else:
            d = maybeDeferred(check)
        return d.addCallbacks(
            self._cbSucceeded,
            self._ebFailed,
            callbackArgs=(user,),
            errbackArgs=(user, address),
        )

    def _cbSucceeded(self, result: _T, user: str | None) -> _T:
        self._users.forget(user)
        return result

    def _ebFailed(
        self, reason: Failure, user: str | None, address: str | None
    ) -> Failure:
        if reason.check(UnauthorizedLogin):
            now = self._clock.seconds()
            self._users.fail(user, now)
            self._addresses.fail(address, now)
        return reason

    def login(
        self,
        portal: Portal,
        credentials: Any,
        mind: object,
        *interfaces: Any,
        peer: IAddress | None = None,
        connection: LoginAttempts | None = None,
    ) -> Deferred[tuple[Any, Any, Callable[[], None]]]:
        """
        C{portal.login(credentials, mind, *interfaces)} under the throttle,
        keyed by C{credentials.username} (when it has one) and C{peer}.

        @return: a Deferred of C{(interface, avatar, logout)}; see L{attempt}.
        """
        return self.attempt(
            lambda: portal.login(credentials, mind, *interfaces),
            username=getattr(credentials, "username", None),
            peer=peer,
            connection=connection,
        )


class ThrottledPortal:
    """
    A portal whose logins go through a L{LoginThrottle}, for code that calls
    C{portal.login(credentials, mind, *interfaces)} and knows nothing of
    throttles (Twisted's own protocols).  Such code passes no peer, so the
    throttle is keyed by user name only, unless the mind is an L{IAddress};
    there is no per-connection limit.
    """

    def __init__(self, portal: Portal, throttle: LoginThrottle) -> None:
        self.portal = portal
        self.throttle = throttle

    def __getattr__(self, name: str) -> Any:
        # realm, checkers, registerChecker, listCredentialsInterfaces, ...
        return getattr(self.portal, name)

    def login(
        self, credentials: Any, mind: object, *interfaces: Any
    ) -> Deferred[tuple[Any, Any, Callable[[], None]]]:
        peer = mind if IAddress.providedBy(mind) else None
        return self.throttle.login(
            self.portal,
            credentials,
            mind,
            *interfaces,
            peer=peer,  # type: ignore[arg-type]
        )


@implementer(ICredentialsChecker)
class ThrottledChecker:
    """
    A checker whose answers go through a L{LoginThrottle}, keyed by user name:
    for wrapping a checker handed to a portal one cannot replace.
    """

    def __init__(self, checker: ICredentialsChecker, throttle: LoginThrottle) -> None:
        self.checker = checker
        self.throttle = throttle
        self.credentialInterfaces = checker.credentialInterfaces

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        return self.throttle.attempt(
            lambda: self.checker.requestAvatarId(credentials),
            username=getattr(credentials, "username", None),
        )
