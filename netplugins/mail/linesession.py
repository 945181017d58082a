"""
What the line-based mail sessions (np-smtp, np-pop3) share: the deadlines,
holding back pipelined commands while one waits, and logging in through the
factory's portal and the shared L{LoginThrottle} (L{LineSession}, made by a
L{netplugins.mail.factory.MailFactory}).  np-imap, which parses its own
buffer, shares the login itself: L{loginMailAccount} and L{plainCredentials}.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from netplugins.cred.throttle import TooManyAttempts
from netplugins.mail.users import IMailAccount, MailAccount
from netplugins.session import COMMAND, Deadlines, Discipline
from netplugins.starttls import isSecure


def plainCredentials(decoded: bytes) -> tuple[bytes, bytes] | None:
    """
    The user name and password of a decoded SASL PLAIN message
    (C{authzid NUL authcid NUL passwd}, RFC 4616); C{None} when it is malformed
    or asks to act as another user.
    """
    parts = decoded.split(b"\x00")
    if len(parts) != 3 or parts[0] not in (b"", parts[1]):
        return None
    return parts[1], parts[2]


def loginMailAccount(
    factory: Any, transport: Any, attempts: Any, username: bytes, password: bytes
) -> Deferred[Any]:
    """
    Log a mail client in: C{factory.portal} through C{factory.throttle}, for an
    L{IMailAccount}, counted against the connection's C{attempts}.
    """
    return factory.throttle.login(  # type: ignore[no-any-return]
        factory.portal,
        UsernamePassword(username, password),
        None,
        IMailAccount,
        peer=transport.getPeer(),
        connection=attempts,
    )


class LineSession(LineReceiver):
    """
    The plumbing of a line-based mail session.

    Subclasses give the protocol: C{_timedOut(name)} answers a passed
    deadline, C{_ebUnexpected(reason)} an unexpected failure of a command that
    waited, and C{_cbLoggedIn(result)} / C{_ebLogin(reason)} a login's outcome.
    Their factory is a L{netplugins.mail.factory.MailFactory} whose C{config}
    has C{idleTimeout}, C{allowPlaintextAuth} and C{closeGrace}.

    Sessions follow L{netplugins.session}: the next line is taken only while
    the output is under the transport's watermark and no command waits, and
    every close (a deadline, too many errors, C{QUIT}) aborts the connection
    if it does not finish.

    @ivar secure: whether the connection speaks TLS.
    @ivar account: the logged-in account, or C{None}.
    @ivar errors: how many bad commands the client sent.
    """

    transport: Any
    factory: Any

    def __init__(self) -> None:
        self.secure = False
        self.account: MailAccount | None = None
        self.errors = 0
        self._lost = False
        self.deadlines: Deadlines | None = None
        self._attempts: Any = None
        self.discipline: Discipline | None = None

    @property
    def config(self) -> Any:
        return self.factory.config

    # Connection and timers

    def connectionMade(self) -> None:
        """
        Note whether the connection is already TLS, count its logins from
        here, and start the idle deadline; subclasses then greet.
        """
        self.secure = isSecure(self.transport)
        self.discipline = Discipline(
            self.transport,
            self.factory.reactor,
            pause=lambda: LineReceiver.pauseProducing(self),
            resume=lambda: LineReceiver.resumeProducing(self),
            grace=self.config.closeGrace,
        )
        self._attempts = self.factory.throttle.connection()
        self.deadlines = Deadlines(self.factory.reactor, self._timedOut)
        self._arm("idle", self.config.idleTimeout)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._lost = True
        if self.discipline is not None:
            self.discipline.lost()
        if self.deadlines is not None:
            self.deadlines.cancelAll()

    def _arm(self, name: str, seconds: float) -> None:
        assert self.deadlines is not None
        self.deadlines.arm(name, seconds)

    def _disarm(self, name: str) -> None:
        assert self.deadlines is not None
        self.deadlines.disarm(name)

    def _timedOut(self, name: str) -> None:
        raise NotImplementedError

    def _close(self, why: str) -> None:
        """
        Close the connection after what was written, aborting it if it does
        not finish (L{Discipline.close}).
        """
        if self.discipline is None:
            self.transport.loseConnection()
        else:
            self.discipline.close(why)

    # Commands that wait

    def _wait(self, d: Deferred[Any]) -> None:
        """
        Stop parsing pipelined commands until C{d} (which replies) has fired.
        """
        d.addErrback(self._ebUnexpected)
        if d.called:
            return
        discipline = self.discipline
        assert discipline is not None
        discipline.hold(COMMAND)

        def resume(result: object) -> None:
            discipline.release(COMMAND)

        d.addBoth(resume)

    def _ebUnexpected(self, reason: Failure) -> None:
        raise NotImplementedError

    # Login

    def _authAllowed(self) -> bool:
        return self.secure or bool(self.config.allowPlaintextAuth)

    def _login(self, username: bytes, password: bytes) -> None:
        d = loginMailAccount(
            self.factory, self.transport, self._attempts, username, password
        )
        d.addCallbacks(self._cbLoggedIn, self._ebLogin)
        self._wait(d)

    def _cbLoggedIn(self, result: tuple[Any, MailAccount, Any]) -> Any:
        raise NotImplementedError

    def _ebLogin(self, reason: Failure) -> None:
        raise NotImplementedError

    def _loginsUsedUp(self, reason: Failure) -> bool:
        """
        Whether a failed login leaves this connection no more tries: the
        throttle refused it, or it was the last wrong password allowed.
        """
        return bool(
            reason.check(TooManyAttempts)
            or (reason.check(UnauthorizedLogin) and self._attempts.exhausted)
        )
