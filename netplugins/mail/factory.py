"""
L{MailFactory}: the one constructor np-smtp, np-pop3 and np-imap share.

Each protocol's factory is C{XFactory(store, portal, *, config=XConfig(...),
tls=..., throttle=..., reactor=...)}: the Maildir store, the portal its users
log in through, and keywords for the rest; how the sessions behave (host name,
deadlines, limits, C{closeGrace}) is one frozen settings object, C{config}.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory

from netplugins.cred.throttle import LoginThrottle
from netplugins.mail.maildir.store import MaildirStore


class MailFactory(Factory):
    """
    Builds the sessions of one mail protocol sharing one store, portal and
    login throttle.

    @cvar configType: the protocol's settings class; its defaults are the
        C{config} when none is given.
    @ivar store: the Maildir store.
    @ivar portal: logs users in, for L{netplugins.mail.users.IMailAccount}.
    @ivar config: how the sessions behave, a C{configType}.
    @ivar tls: the TLS context factory for STARTTLS, or C{None} not to offer it.
    @ivar throttle: counts and delays the logins.
    @ivar reactor: the sessions' clock.
    """

    configType: ClassVar[type[Any]]

    def __init__(
        self,
        store: MaildirStore,
        portal: Any,
        *,
        config: Any = None,
        tls: Any = None,
        throttle: LoginThrottle | None = None,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.store = store
        self.portal = portal
        self.config = config if config is not None else self.configType()
        self.tls = tls
        self.reactor = reactor
        self.throttle = throttle or LoginThrottle(reactor)

    def buildProtocol(self, addr: IAddress | None) -> Any:
        # Typed Any, not Factory's Protocol | None: callers get the session
        # class the subclass names as its protocol.
        return super().buildProtocol(addr)
