"""
What the mail plugins (np-smtp, np-pop3, np-imap, np-mail) share on the command
line and in their keyword twins: the options (L{MailOptionsMixin},
L{SmarthostOptionsMixin}), the parts one process makes once and every protocol
uses (L{MailParts}, made by L{mailParts}), and listening with them
(L{listeners}, L{plainEndpoints}).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from attrs import evolve, frozen
from twisted.application.service import MultiService
from twisted.python import usage

from netplugins.cred.throttle import LoginThrottle
from netplugins.limits.tracker import ConnectionTracker
from netplugins.mail.maildir.store import MaildirStore
from netplugins.mail.smtp.relay import smarthostRelay
from netplugins.mail.users import LocalUsers, MailRealm
from netplugins.service import Common, listeningService, validateEndpoint

DEFAULT_DOMAINS = ("localhost",)

#: Seconds a mail session may stay without logging in, unless
#: C{--preauth-timeout} says otherwise.
PRE_AUTH_TIMEOUT = 120.0


class MailOptionsMixin:
    """
    C{--maildir-root} and C{--domain}, shared by the mail plugins.
    """

    usesCheckers = True

    optParameters: ClassVar[list[Any]] = [
        [
            "maildir-root",
            None,
            None,
            "The directory of the users' Maildirs (default: <state-dir>/mail).",
        ],
        [
            "hostname",
            None,
            None,
            "The host name in greetings and Received: headers (default: this "
            "host's name).",
        ],
    ]

    def opt_domain(self, name: str) -> None:
        """
        A local mail domain; repeatable (default: localhost).
        """
        self.setdefault("domains", []).append(name)  # type: ignore[attr-defined]

    def endpoints(self, key: str, description: str) -> None:
        """
        Append a validated endpoint C{description} to option C{key}.
        """
        try:
            validateEndpoint(description)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self.setdefault(key, []).append(description)  # type: ignore[attr-defined]


class SmarthostOptionsMixin:
    """
    C{--smarthost} and C{--smarthost-ca}, shared by np-smtp and np-mail; their
    C{postOptions} calls L{checkSmarthost}.
    """

    optParameters: ClassVar[list[Any]] = [
        [
            "smarthost",
            None,
            None,
            "HOST[:PORT]: relay authenticated users' mail for other domains there.",
        ],
        [
            "smarthost-ca",
            None,
            None,
            "Verify the smarthost's certificate against these CAs (PEM) instead of "
            "the system's.",
        ],
    ]

    def checkSmarthost(self) -> None:
        """
        @raise usage.UsageError: for a malformed C{--smarthost}.
        """
        smarthost = self["smarthost"]  # type: ignore[index]
        if smarthost is not None:
            try:
                smarthostRelay(smarthost)
            except ValueError as e:
                raise usage.UsageError(str(e)) from None


def plainEndpoints(
    common: Common, default: Sequence[str], *others: Sequence[str]
) -> Sequence[str]:
    """
    A mail service's STARTTLS endpoints: C{common.listen}, or C{default} when
    no endpoint at all is given (C{listen}, C{listenTLS} or C{others}).
    """
    if common.listen or common.listenTLS or any(others):
        return common.listen
    return default


@frozen
class MailParts:
    """
    What every mail protocol of one process shares: the store, the users,
    the portal (through L{MailRealm}), the login throttle, the STARTTLS
    context factory, the host name, and the connection tracker that makes
    C{--max-connections}, C{--max-connections-per-ip} and C{--allow}/C{--deny}
    apply to the process, not to each protocol.
    """

    store: MaildirStore
    users: LocalUsers
    portal: Any
    throttle: LoginThrottle
    tls: Any
    hostname: str
    tracker: ConnectionTracker

    def preAuthTimeout(self) -> float:
        """
        Seconds a session may stay without logging in: C{--preauth-timeout},
        or L{PRE_AUTH_TIMEOUT}.
        """
        return self.tracker.limits.preAuthTimeout or PRE_AUTH_TIMEOUT

    @property
    def closeGrace(self) -> float:
        """
        C{--close-grace}: seconds a closed session gets before it is aborted.
        """
        return self.tracker.limits.closeGrace


def mailParts(
    common: Common,
    *,
    maildirRoot: str | None = None,
    domains: Iterable[str] = DEFAULT_DOMAINS,
    hostname: str | None = None,
    reactor: Any = None,
) -> MailParts:
    """
    Make the shared mail parts from the shared settings.
    """
    if reactor is None:
        from twisted.internet import reactor
    root = maildirRoot or os.path.join(common.stateDir, "mail")
    users = LocalUsers(domains or DEFAULT_DOMAINS, common.checkers)
    return MailParts(
        store=MaildirStore(root, reactor=reactor),
        users=users,
        portal=common.portal(MailRealm(users)),
        throttle=LoginThrottle(reactor),
        tls=common.serverTLS(reactor),
        hostname=hostname or socket.gethostname() or "localhost",
        tracker=ConnectionTracker(common.limits, reactor=reactor),
    )


def listeners(
    parts: MailParts,
    common: Common,
    factory: Any,
    plain: Sequence[str],
    secure: Sequence[str],
    name: str,
    reactor: Any,
) -> MultiService:
    """
    C{factory} listening on C{plain} and C{secure} (implicit TLS) endpoints,
    with C{common}'s limits counted by C{parts.tracker} and its (already
    made) TLS.
    """
    return listeningService(
        evolve(common, listen=tuple(plain), listenTLS=tuple(secure)),
        factory,
        name=name,
        reactor=reactor,
        tracker=parts.tracker,
    )
