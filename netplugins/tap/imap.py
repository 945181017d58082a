"""
C{twistd np-imap}: the IMAP service's command line and its keyword twin, and
L{imapListeners} for np-mail, which shares one store, portal and throttle
between protocols.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from twisted.application.service import MultiService

from netplugins.mail.imap.server import DEFAULT_APPEND_LIMIT, IMAPConfig, IMAPFactory
from netplugins.options import ServiceOptions, positiveInt
from netplugins.service import Common, resolveCommon, supervised
from netplugins.tap.mailhost import (
    DEFAULT_DOMAINS,
    MailOptionsMixin,
    MailParts,
    listeners,
    mailParts,
    plainEndpoints,
)

DEFAULT_LISTEN = ("tcp:8143:interface=127.0.0.1",)


class Options(MailOptionsMixin, ServiceOptions):
    """
    Options for C{twistd np-imap}.
    """

    synopsis = "[options]"
    longdesc = (
        "An IMAP4rev1 server (IDLE, UIDPLUS, LITERAL+) on the Maildirs under "
        "--maildir-root, for the users of the --auth checkers. --listen "
        "endpoints offer STARTTLS; --listen-tls ones are IMAPS. LOGIN and "
        "AUTHENTICATE PLAIN are refused before TLS (LOGINDISABLED) unless "
        "--allow-plaintext-auth. APPEND takes messages up to --append-limit."
    )
    defaultListen = DEFAULT_LISTEN
    tapname = "np-imap"

    optParameters = [
        [
            "append-limit",
            None,
            DEFAULT_APPEND_LIMIT,
            "The largest message APPEND accepts, in bytes.",
            positiveInt,
        ],
    ]
    optFlags = [
        [
            "allow-plaintext-auth",
            None,
            "Allow LOGIN and AUTHENTICATE before STARTTLS (passwords in the clear).",
        ],
    ]


def imapFactory(
    parts: MailParts,
    *,
    appendLimit: int = DEFAULT_APPEND_LIMIT,
    allowPlaintextAuth: bool = False,
    reactor: Any = None,
) -> IMAPFactory:
    """
    An IMAP factory on the shared mail parts (STARTTLS from C{parts.tls}, the
    greeting's host name from C{parts.hostname}).
    """
    return IMAPFactory(
        parts.store,
        parts.portal,
        config=IMAPConfig(
            hostname=parts.hostname,
            allowPlaintextAuth=allowPlaintextAuth,
            appendLimit=appendLimit,
            preAuthTimeout=parts.preAuthTimeout(),
            closeGrace=parts.closeGrace,
        ),
        tls=parts.tls,
        throttle=parts.throttle,
        reactor=reactor,
    )


def imapListeners(
    parts: MailParts,
    common: Common,
    *,
    imap: Sequence[str] = (),
    imaps: Sequence[str] = (),
    appendLimit: int = DEFAULT_APPEND_LIMIT,
    allowPlaintextAuth: bool = False,
    reactor: Any = None,
) -> MultiService:
    """
    IMAP on C{imap} (STARTTLS) and C{imaps} (implicit TLS) endpoints, with
    C{common}'s limits: for np-mail, which makes C{parts} once.
    """
    factory = imapFactory(
        parts,
        appendLimit=appendLimit,
        allowPlaintextAuth=allowPlaintextAuth,
        reactor=reactor,
    )
    return listeners(parts, common, factory, imap, imaps, "np-imap", reactor)


def imapService(
    *,
    maildirRoot: str | None = None,
    domains: Iterable[str] = DEFAULT_DOMAINS,
    hostname: str | None = None,
    appendLimit: int = DEFAULT_APPEND_LIMIT,
    allowPlaintextAuth: bool = False,
    common: Common | None = None,
    reactor: Any = None,
    **settings: Any,
) -> MultiService:
    """
    The IMAP service: the keyword twin of C{twistd np-imap}.

    @param maildirRoot: C{--maildir-root} (default C{<stateDir>/mail}).
    @param domains: C{--domain}, the local domains (for LDAP users' C{mail}).
    @param hostname: C{--hostname}, the name in the greeting (default: this
        host's name).
    @param appendLimit: C{--append-limit}.
    @param allowPlaintextAuth: C{--allow-plaintext-auth}.
    @param common: the shared settings, already made; or their keywords
        (L{netplugins.service.commonSettings}) as C{settings}.
    @raise ValueError: for a bad value.
    """
    common = resolveCommon(common, settings)
    if appendLimit <= 0:
        raise ValueError(f"append limit must be positive, not {appendLimit}")
    parts = mailParts(
        common,
        maildirRoot=maildirRoot,
        domains=domains,
        hostname=hostname,
        reactor=reactor,
    )
    plain = plainEndpoints(common, DEFAULT_LISTEN)
    service = imapListeners(
        parts,
        common,
        imap=plain,
        imaps=common.listenTLS,
        appendLimit=appendLimit,
        allowPlaintextAuth=allowPlaintextAuth,
        reactor=reactor,
    )
    service.setName("np-imap")
    return supervised(service, common, name="np-imap", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The IMAP service configured by a parsed command line.
    """
    return imapService(
        maildirRoot=config["maildir-root"],
        domains=config.get("domains", DEFAULT_DOMAINS),
        hostname=config["hostname"],
        appendLimit=config["append-limit"],
        allowPlaintextAuth=bool(config["allow-plaintext-auth"]),
        common=config.common,
        reactor=reactor,
    )
