"""
C{twistd np-smtp}: the SMTP service's command line and its keyword twin, and the
mail options np-smtp, np-pop3 and np-mail share (L{MailOptionsMixin},
L{mailParts}).
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
from netplugins.limits import ConnectionTracker
from netplugins.mail.maildir.store import MaildirStore
from netplugins.mail.smtp.relay import smarthostRelay
from netplugins.mail.smtp.server import (
    DEFAULT_MAX_MESSAGE_SIZE,
    SMTPConfig,
    SMTPFactory,
)
from netplugins.mail.users import LocalUsers, MailRealm
from netplugins.options import ServiceOptions, positiveInt
from netplugins.service import (
    Common,
    listeningService,
    resolveCommon,
    supervised,
    validateEndpoint,
)

DEFAULT_LISTEN = ("tcp:8025:interface=127.0.0.1",)
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


class Options(MailOptionsMixin, SmarthostOptionsMixin, ServiceOptions):
    """
    Options for C{twistd np-smtp}.
    """

    synopsis = "[options]"
    longdesc = (
        "An ESMTP server delivering to Maildirs: mail for --domain users (from "
        "the --auth checkers: htpasswd users, LDAP mail attributes) is stored "
        "durably under --maildir-root; mail for other domains is refused unless "
        "the client authenticated and --smarthost is set. --listen endpoints "
        "take mail like port 25 (STARTTLS offered, AUTH optional); --submission "
        "(STARTTLS) and --smtps (implicit TLS) endpoints require AUTH. AUTH is "
        "offered only over TLS unless --allow-plaintext-auth."
    )
    defaultListen = DEFAULT_LISTEN
    tapname = "np-smtp"

    optParameters = [
        [
            "max-message-size",
            None,
            DEFAULT_MAX_MESSAGE_SIZE,
            "The largest message accepted, in bytes.",
            positiveInt,
        ],
    ]
    optFlags = [
        [
            "allow-plaintext-auth",
            None,
            "Offer AUTH before STARTTLS (passwords in the clear).",
        ],
    ]

    def opt_submission(self, description: str) -> None:
        """
        A submission endpoint (port 587 style: STARTTLS, AUTH required);
        repeatable.
        """
        self.endpoints("submission", description)

    def opt_smtps(self, description: str) -> None:
        """
        An implicit-TLS submission endpoint (port 465 style, AUTH required);
        repeatable.
        """
        self.endpoints("smtps", description)

    def postOptions(self) -> None:
        super().postOptions()
        self.checkSmarthost()


def smtpListeners(
    parts: MailParts,
    common: Common,
    *,
    smtp: Sequence[str] = (),
    smtpTLS: Sequence[str] = (),
    submission: Sequence[str] = (),
    smtps: Sequence[str] = (),
    maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
    smarthost: str | None = None,
    smarthostCA: str | None = None,
    allowPlaintextAuth: bool = False,
    reactor: Any = None,
) -> MultiService:
    """
    The SMTP listeners of one process, on shared C{parts}: C{smtp} (and
    C{smtpTLS}, implicit TLS) take mail without requiring AUTH; C{submission}
    (STARTTLS) and C{smtps} (implicit TLS) require it.
    """
    relay = None
    if smarthost is not None:
        relay = smarthostRelay(smarthost, parts.hostname, reactor, caFile=smarthostCA)
    parent = MultiService()
    for plain, secure, requireAuth, name in [
        (smtp, smtpTLS, False, "np-smtp"),
        (submission, smtps, True, "np-smtp submission"),
    ]:
        if not plain and not secure:
            continue
        config = SMTPConfig(
            hostname=parts.hostname,
            maxMessageSize=maxMessageSize,
            requireAuth=requireAuth,
            allowPlaintextAuth=allowPlaintextAuth,
            relay=relay,
            preAuthTimeout=parts.preAuthTimeout(),
        )
        factory = SMTPFactory(
            parts.store,
            parts.users,
            parts.portal,
            config=config,
            tls=parts.tls,
            throttle=parts.throttle,
            reactor=reactor,
        )
        factory.closeGrace = parts.closeGrace
        service = listeners(parts, common, factory, plain, secure, name, reactor)
        service.setServiceParent(parent)
    return parent


def smtpService(
    *,
    maildirRoot: str | None = None,
    domains: Iterable[str] = DEFAULT_DOMAINS,
    hostname: str | None = None,
    maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
    submission: Sequence[str] = (),
    smtps: Sequence[str] = (),
    smarthost: str | None = None,
    smarthostCA: str | None = None,
    allowPlaintextAuth: bool = False,
    common: Common | None = None,
    reactor: Any = None,
    **settings: Any,
) -> MultiService:
    """
    The SMTP service: the keyword twin of C{twistd np-smtp}.

    @param maildirRoot: C{--maildir-root} (default C{<stateDir>/mail}).
    @param domains: C{--domain}, the local domains.
    @param submission: C{--submission} endpoints; C{smtps}: C{--smtps}.
    @param common: the shared settings, already made; or their keywords
        (L{netplugins.service.commonSettings}) as C{settings}: C{listen} and
        C{listenTLS} are the port-25-style endpoints.
    @raise ValueError: for a bad value.
    """
    common = resolveCommon(common, settings)
    for description in [*submission, *smtps]:
        validateEndpoint(description)
    parts = mailParts(
        common,
        maildirRoot=maildirRoot,
        domains=domains,
        hostname=hostname,
        reactor=reactor,
    )
    plain = plainEndpoints(common, DEFAULT_LISTEN, submission, smtps)
    service = smtpListeners(
        parts,
        common,
        smtp=plain,
        smtpTLS=common.listenTLS,
        submission=submission,
        smtps=smtps,
        maxMessageSize=maxMessageSize,
        smarthost=smarthost,
        smarthostCA=smarthostCA,
        allowPlaintextAuth=allowPlaintextAuth,
        reactor=reactor,
    )
    service.setName("np-smtp")
    return supervised(service, common, name="np-smtp", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The SMTP service configured by a parsed command line.
    """
    return smtpService(
        maildirRoot=config["maildir-root"],
        domains=config.get("domains", DEFAULT_DOMAINS),
        hostname=config["hostname"],
        maxMessageSize=config["max-message-size"],
        submission=config.get("submission", ()),
        smtps=config.get("smtps", ()),
        smarthost=config["smarthost"],
        smarthostCA=config["smarthost-ca"],
        allowPlaintextAuth=bool(config["allow-plaintext-auth"]),
        common=config.common,
        reactor=reactor,
    )
