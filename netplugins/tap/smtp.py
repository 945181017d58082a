"""
C{twistd np-smtp}: the SMTP service's settings, its command line and its
keyword twin, and L{smtpListeners} for np-mail, which shares one store, portal
and throttle between protocols.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from attrs import frozen
from twisted.application.service import MultiService

from netplugins.mail.smtp.queue import RelayQueue
from netplugins.mail.smtp.server import (
    DEFAULT_MAX_MESSAGE_SIZE,
    SMTPConfig,
    SMTPFactory,
)
from netplugins.options import ServiceOptions, endpoint, positiveInt, tlsEndpoint
from netplugins.service import Common, supervised
from netplugins.settings import override, repeated, setting
from netplugins.tap.mailhost import (
    MailParts,
    SmarthostSettings,
    listeners,
    mailParts,
    plainEndpoints,
)

if TYPE_CHECKING:
    # np-mail's settings carry SMTP's too; netplugins.tap.mail imports this
    # module.
    from netplugins.tap.mail import MailHostSettings

DEFAULT_LISTEN = ("tcp:8025:interface=127.0.0.1",)


@frozen(kw_only=True)
class SMTPSettings(SmarthostSettings):
    """
    What np-smtp is told: the shared and mail settings, the submission
    endpoints (C{listen} and C{listenTLS} take mail like port 25) and the
    largest message.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    submission: tuple[str, ...] = repeated(
        "A submission endpoint (port 587 style: STARTTLS, AUTH required); repeatable.",
        endpoint,
    )
    smtps: tuple[str, ...] = repeated(
        "An implicit-TLS submission endpoint (port 465 style, AUTH required); "
        "repeatable.",
        tlsEndpoint,
    )
    maxMessageSize: int = setting(
        DEFAULT_MAX_MESSAGE_SIZE, "The largest message accepted, in bytes.", positiveInt
    )
    allowPlaintextAuth: bool = override(
        SmarthostSettings,
        "allowPlaintextAuth",
        False,
        help="Offer AUTH before STARTTLS (passwords in the clear).",
    )


class Options(ServiceOptions):
    """
    Options for C{twistd np-smtp}.
    """

    settingsType = SMTPSettings
    synopsis = "[options]"
    longdesc = (
        "An ESMTP server delivering to Maildirs: mail for --domain users (from "
        "the --auth checkers: htpasswd users, LDAP mail attributes) is stored "
        "durably under --maildir-root; mail for other domains is refused unless "
        "the client authenticated and --smarthost (or --relay-by-mx) is set, and "
        "then queued under <state-dir>/queue until the smarthost (or the "
        "domain's MX host) takes it (retried with backoff, "
        "bounced after --queue-lifetime). --listen endpoints "
        "take mail like port 25 (STARTTLS offered, AUTH optional); --submission "
        "(STARTTLS) and --smtps (implicit TLS) endpoints require AUTH. AUTH is "
        "offered only over TLS unless --allow-plaintext-auth."
    )
    tapname = "np-smtp"
    usesCheckers = True


def smtpListeners(
    parts: MailParts,
    common: Common,
    settings: SMTPSettings | MailHostSettings,
    *,
    smtp: Sequence[str] = (),
    smtpTLS: Sequence[str] = (),
    submission: Sequence[str] = (),
    smtps: Sequence[str] = (),
    reactor: Any = None,
) -> MultiService:
    """
    The SMTP listeners of one process, on shared C{parts}, configured by
    C{settings} (np-smtp's or np-mail's): C{smtp} (and C{smtpTLS}, implicit
    TLS) take mail without requiring AUTH; C{submission} (STARTTLS) and
    C{smtps} (implicit TLS) require it.  With a smarthost, the relay queue
    (under C{<state-dir>/queue}) is a child service, shared by all of them.
    """
    parent = MultiService()
    queue = None
    relay = settings.relay(parts.hostname, reactor)
    if relay is not None:
        queue = RelayQueue(
            os.path.join(common.stateDir, "queue"),
            relay,
            store=parts.store,
            users=parts.users,
            hostname=parts.hostname,
            smarthost=settings.relayName,
            lifetime=settings.queueLifetime,
            minBackoff=settings.queueMinBackoff,
            maxBackoff=settings.queueMaxBackoff,
            maxSize=settings.queueMaxSize,
            reactor=reactor,
        )
        queue.setName("np-smtp queue")
        queue.setServiceParent(parent)
    for plain, secure, requireAuth, name in [
        (smtp, smtpTLS, False, "np-smtp"),
        (submission, smtps, True, "np-smtp submission"),
    ]:
        if not plain and not secure:
            continue
        config = SMTPConfig(
            hostname=parts.hostname,
            maxMessageSize=settings.maxMessageSize,
            requireAuth=requireAuth,
            allowPlaintextAuth=settings.allowPlaintextAuth,
            queue=queue,
            preAuthTimeout=parts.preAuthTimeout(),
            closeGrace=parts.closeGrace,
            postmaster=settings.postmaster,
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
    settings: SMTPSettings = SMTPSettings(), *, reactor: Any = None
) -> MultiService:
    """
    The SMTP service: the keyword twin of C{twistd np-smtp} is
    C{smtpService(SMTPSettings(domains=(...), submission=(...), ...))};
    C{listen} and C{listenTLS} are the port-25-style endpoints.

    @raise ValueError: for a bad value.
    """
    common = settings.common()
    parts = mailParts(settings, common, reactor=reactor)
    plain = plainEndpoints(
        common, settings.defaultListen, settings.submission, settings.smtps
    )
    service = smtpListeners(
        parts,
        common,
        settings,
        smtp=plain,
        smtpTLS=common.listenTLS,
        submission=settings.submission,
        smtps=settings.smtps,
        reactor=reactor,
    )
    service.setName("np-smtp")
    return supervised(service, common, name="np-smtp", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The SMTP service configured by a parsed command line.
    """
    return smtpService(config.settings, reactor=reactor)
