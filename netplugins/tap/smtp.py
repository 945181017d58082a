"""
C{twistd np-smtp}: the SMTP service's command line and its keyword twin, and
L{smtpListeners} for np-mail, which shares one store, portal and throttle
between protocols.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from twisted.application.service import MultiService

from netplugins.mail.smtp.relay import smarthostRelay
from netplugins.mail.smtp.server import (
    DEFAULT_MAX_MESSAGE_SIZE,
    SMTPConfig,
    SMTPFactory,
)
from netplugins.options import ServiceOptions, positiveInt
from netplugins.service import Common, resolveCommon, supervised, validateEndpoint
from netplugins.tap.mailhost import (
    DEFAULT_DOMAINS,
    MailOptionsMixin,
    MailParts,
    SmarthostOptionsMixin,
    listeners,
    mailParts,
    plainEndpoints,
)

DEFAULT_LISTEN = ("tcp:8025:interface=127.0.0.1",)


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
            closeGrace=parts.closeGrace,
        )
        factory = SMTPFactory(
            parts.store,
            parts.portal,
            users=parts.users,
            config=config,
            tls=parts.tls,
            throttle=parts.throttle,
            reactor=reactor,
        )
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
