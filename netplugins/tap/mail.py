"""
C{twistd np-mail}: SMTP, submission, POP3 and IMAP in one process on one Maildir
store, one portal, one login throttle and one TLS configuration; and its
keyword twin L{mailService}, which C{tac/mailhost.tac} uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.python import usage

from netplugins.mail.imap.server import DEFAULT_APPEND_LIMIT
from netplugins.mail.smtp.server import DEFAULT_MAX_MESSAGE_SIZE
from netplugins.options import ServiceOptions, positiveInt
from netplugins.service import Common, resolveCommon, supervised, validateEndpoint
from netplugins.tap.imap import imapListeners
from netplugins.tap.mailhost import (
    DEFAULT_DOMAINS,
    MailOptionsMixin,
    SmarthostOptionsMixin,
    mailParts,
)
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


class Options(MailOptionsMixin, SmarthostOptionsMixin, ServiceOptions):
    """
    Options for C{twistd np-mail}.
    """

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

    optParameters = [
        [
            "max-message-size",
            None,
            DEFAULT_MAX_MESSAGE_SIZE,
            "The largest message SMTP accepts, in bytes.",
            positiveInt,
        ],
        [
            "append-limit",
            None,
            DEFAULT_APPEND_LIMIT,
            "The largest message IMAP APPEND accepts, in bytes.",
            positiveInt,
        ],
    ]
    optFlags = [
        [
            "allow-plaintext-auth",
            None,
            "Accept passwords before STARTTLS/STLS (in the clear).",
        ],
    ]

    def opt_smtp(self, description: str) -> None:
        """SMTP endpoint (port 25 style, STARTTLS offered); repeatable."""
        self.endpoints("smtp", description)

    def opt_submission(self, description: str) -> None:
        """Submission endpoint (STARTTLS, AUTH required); repeatable."""
        self.endpoints("submission", description)

    def opt_smtps(self, description: str) -> None:
        """Implicit-TLS submission endpoint (AUTH required); repeatable."""
        self.endpoints("smtps", description)

    def opt_pop3(self, description: str) -> None:
        """POP3 endpoint (STLS offered); repeatable."""
        self.endpoints("pop3", description)

    def opt_pop3s(self, description: str) -> None:
        """POP3S endpoint (implicit TLS); repeatable."""
        self.endpoints("pop3s", description)

    def opt_imap(self, description: str) -> None:
        """IMAP endpoint (STARTTLS offered); repeatable."""
        self.endpoints("imap", description)

    def opt_imaps(self, description: str) -> None:
        """IMAPS endpoint (implicit TLS); repeatable."""
        self.endpoints("imaps", description)

    def postOptions(self) -> None:
        super().postOptions()
        if self.common.listen or self.common.listenTLS:
            raise usage.UsageError(
                "np-mail listens per protocol: use --smtp, --submission, --pop3, "
                "--imap, --smtps, --pop3s or --imaps instead of --listen"
            )
        self.checkSmarthost()


def mailService(
    *,
    maildirRoot: str | None = None,
    domains: Iterable[str] = DEFAULT_DOMAINS,
    hostname: str | None = None,
    smtp: Sequence[str] = (),
    submission: Sequence[str] = (),
    smtps: Sequence[str] = (),
    pop3: Sequence[str] = (),
    pop3s: Sequence[str] = (),
    imap: Sequence[str] = (),
    imaps: Sequence[str] = (),
    maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
    appendLimit: int = DEFAULT_APPEND_LIMIT,
    smarthost: str | None = None,
    smarthostCA: str | None = None,
    allowPlaintextAuth: bool = False,
    common: Common | None = None,
    reactor: Any = None,
    **settings: Any,
) -> MultiService:
    """
    The mail host: the keyword twin of C{twistd np-mail}.

    @param smtp: C{--smtp} endpoints; likewise C{submission}, C{smtps},
        C{pop3}, C{pop3s}, C{imap}, C{imaps}.  With none at all, L{DEFAULTS}.
    @param common: the shared settings (TLS, C{--auth}, limits, state dir),
        already made, or their keywords as C{settings}; C{listen} and
        C{listenTLS} must be empty.
    @raise ValueError: for a bad value.
    """
    common = resolveCommon(common, settings)
    if common.listen or common.listenTLS:
        raise ValueError("np-mail listens per protocol, not with listen/listenTLS")
    endpoints = {
        "smtp": tuple(smtp),
        "submission": tuple(submission),
        "smtps": tuple(smtps),
        "pop3": tuple(pop3),
        "pop3s": tuple(pop3s),
        "imap": tuple(imap),
        "imaps": tuple(imaps),
    }
    if not any(endpoints.values()):
        endpoints.update(DEFAULTS)
    for descriptions in endpoints.values():
        for description in descriptions:
            validateEndpoint(description)
    parts = mailParts(
        common,
        maildirRoot=maildirRoot,
        domains=domains,
        hostname=hostname,
        reactor=reactor,
    )
    service = MultiService()
    service.setName("np-mail")
    smtpListeners(
        parts,
        common,
        smtp=endpoints["smtp"],
        submission=endpoints["submission"],
        smtps=endpoints["smtps"],
        maxMessageSize=maxMessageSize,
        smarthost=smarthost,
        smarthostCA=smarthostCA,
        allowPlaintextAuth=allowPlaintextAuth,
        reactor=reactor,
    ).setServiceParent(service)
    if endpoints["pop3"] or endpoints["pop3s"]:
        pop3Listeners(
            parts,
            common,
            pop3=endpoints["pop3"],
            pop3s=endpoints["pop3s"],
            allowPlaintextAuth=allowPlaintextAuth,
            reactor=reactor,
        ).setServiceParent(service)
    if endpoints["imap"] or endpoints["imaps"]:
        imapListeners(
            parts,
            common,
            imap=endpoints["imap"],
            imaps=endpoints["imaps"],
            appendLimit=appendLimit,
            allowPlaintextAuth=allowPlaintextAuth,
            reactor=reactor,
        ).setServiceParent(service)
    return supervised(service, common, name="np-mail", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The mail host configured by a parsed command line.
    """
    return mailService(
        maildirRoot=config["maildir-root"],
        domains=config.get("domains", DEFAULT_DOMAINS),
        hostname=config["hostname"],
        maxMessageSize=config["max-message-size"],
        appendLimit=config["append-limit"],
        smarthost=config["smarthost"],
        smarthostCA=config["smarthost-ca"],
        allowPlaintextAuth=bool(config["allow-plaintext-auth"]),
        common=config.common,
        reactor=reactor,
        **{name: config.get(name, ()) for name in PROTOCOLS},
    )
