"""
C{twistd np-mail}: SMTP, submission, POP3 and IMAP in one process on one Maildir
store, one portal, one login throttle and one TLS configuration; its settings,
its command line and its keyword twin L{mailService}, which
C{tac/mailhost.tac} uses.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.application.service import MultiService
from twisted.python import usage

from netplugins.mail.imap.server import DEFAULT_APPEND_LIMIT
from netplugins.mail.smtp.server import DEFAULT_MAX_MESSAGE_SIZE
from netplugins.options import ServiceOptions, endpoint, positiveInt, tlsEndpoint
from netplugins.service import supervised
from netplugins.settings import repeated, setting
from netplugins.tap.imap import imapListeners
from netplugins.tap.mailhost import SmarthostSettings, mailParts
from netplugins.tap.pop3 import pop3Listeners
from netplugins.tap.smtp import smtpListeners

#: Where np-mail listens when no endpoint is given (unprivileged, loopback).
DEFAULTS = {
    "smtp": ("tcp:8025:interface=127.0.0.1",),
    "submission": ("tcp:8587:interface=127.0.0.1",),
    "pop3": ("tcp:8110:interface=127.0.0.1",),
    "imap": ("tcp:8143:interface=127.0.0.1",),
}
PROTOCOLS = ("smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps")


@frozen(kw_only=True)
class MailHostSettings(SmarthostSettings):
    """
    What np-mail is told: the shared and mail settings, the endpoints of each
    protocol (C{listen} and C{listenTLS} are refused) and the message limits
    of SMTP and IMAP.
    """

    smtp: tuple[str, ...] = repeated(
        "SMTP endpoint (port 25 style, STARTTLS offered); repeatable.", endpoint
    )
    submission: tuple[str, ...] = repeated(
        "Submission endpoint (STARTTLS, AUTH required); repeatable.", endpoint
    )
    smtps: tuple[str, ...] = repeated(
        "Implicit-TLS submission endpoint (AUTH required); repeatable.", tlsEndpoint
    )
    pop3: tuple[str, ...] = repeated(
        "POP3 endpoint (STLS offered); repeatable.", endpoint
    )
    pop3s: tuple[str, ...] = repeated(
        "POP3S endpoint (implicit TLS); repeatable.", tlsEndpoint
    )
    imap: tuple[str, ...] = repeated(
        "IMAP endpoint (STARTTLS offered); repeatable.", endpoint
    )
    imaps: tuple[str, ...] = repeated(
        "IMAPS endpoint (implicit TLS); repeatable.", tlsEndpoint
    )
    maxMessageSize: int = setting(
        DEFAULT_MAX_MESSAGE_SIZE,
        "The largest message SMTP accepts, in bytes.",
        positiveInt,
    )
    appendLimit: int = setting(
        DEFAULT_APPEND_LIMIT,
        "The largest message IMAP APPEND accepts, in bytes.",
        positiveInt,
    )

    def endpoints(self) -> dict[str, tuple[str, ...]]:
        """
        The endpoints of each protocol (by L{PROTOCOLS} name): those given,
        or L{DEFAULTS} when none at all is.
        """
        given = {name: getattr(self, name) for name in PROTOCOLS}
        if not any(given.values()):
            given.update(DEFAULTS)
        return given


class Options(ServiceOptions):
    """
    Options for C{twistd np-mail}.
    """

    settingsType = MailHostSettings
    synopsis = "[options]"
    longdesc = (
        "A mail host: SMTP, submission, POP3 and IMAP on one Maildir store "
        "(--maildir-root), for the --domain users of the --auth checkers, with "
        "one TLS configuration. Endpoints per protocol, each repeatable: --smtp "
        "(port 25 style), --submission (AUTH required), --pop3, --imap (all "
        "offering STARTTLS) and --smtps, --pop3s, --imaps (implicit TLS). "
        "Without any: "
        + ", ".join(f"{k} {v[0]}" for k, v in DEFAULTS.items())
        + ". Passwords are accepted only over TLS unless --allow-plaintext-auth."
    )
    tapname = "np-mail"
    usesCheckers = True

    def postOptions(self) -> None:
        super().postOptions()
        if self.common.listen or self.common.listenTLS:
            raise usage.UsageError(
                "np-mail listens per protocol: use --smtp, --submission, --pop3, "
                "--imap, --smtps, --pop3s or --imaps instead of --listen"
            )


def mailService(
    settings: MailHostSettings = MailHostSettings(), *, reactor: Any = None
) -> MultiService:
    """
    The mail host: the keyword twin of C{twistd np-mail} is
    C{mailService(MailHostSettings(domains=(...), smtp=(...), imaps=(...),
    ...))}; with no endpoint at all, L{DEFAULTS}.

    @raise ValueError: for a bad value, or C{listen}/C{listenTLS} given.
    """
    common = settings.common()
    if common.listen or common.listenTLS:
        raise ValueError("np-mail listens per protocol, not with listen/listenTLS")
    endpoints = settings.endpoints()
    parts = mailParts(settings, common, reactor=reactor)
    service = MultiService()
    service.setName("np-mail")
    smtpListeners(
        parts,
        common,
        settings,
        smtp=endpoints["smtp"],
        submission=endpoints["submission"],
        smtps=endpoints["smtps"],
        reactor=reactor,
    ).setServiceParent(service)
    if endpoints["pop3"] or endpoints["pop3s"]:
        pop3Listeners(
            parts,
            common,
            settings,
            pop3=endpoints["pop3"],
            pop3s=endpoints["pop3s"],
            reactor=reactor,
        ).setServiceParent(service)
    if endpoints["imap"] or endpoints["imaps"]:
        imapListeners(
            parts,
            common,
            settings,
            imap=endpoints["imap"],
            imaps=endpoints["imaps"],
            reactor=reactor,
        ).setServiceParent(service)
    return supervised(service, common, name="np-mail", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The mail host configured by a parsed command line.
    """
    return mailService(config.settings, reactor=reactor)
