"""
C{twistd np-imap}: the IMAP service's settings, its command line and its
keyword twin, and L{imapListeners} for np-mail, which shares one store, portal
and throttle between protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from attrs import frozen
from twisted.application.service import MultiService

from netplugins.mail.imap.server import DEFAULT_APPEND_LIMIT, IMAPConfig, IMAPFactory
from netplugins.options import ServiceOptions, positiveInt
from netplugins.service import Common, supervised
from netplugins.settings import override, setting
from netplugins.tap.mailhost import (
    MailParts,
    MailSettings,
    listeners,
    mailParts,
    plainEndpoints,
)

if TYPE_CHECKING:
    # np-mail's settings carry IMAP's too; netplugins.tap.mail imports this
    # module.
    from netplugins.tap.mail import MailHostSettings

DEFAULT_LISTEN = ("tcp:8143:interface=127.0.0.1",)


@frozen(kw_only=True)
class IMAPSettings(MailSettings):
    """
    What np-imap is told: the shared and mail settings and the largest
    message APPEND takes; C{listen} are the STARTTLS endpoints, C{listenTLS}
    the IMAPS ones.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    appendLimit: int = setting(
        DEFAULT_APPEND_LIMIT,
        "The largest message APPEND accepts, in bytes.",
        positiveInt,
    )
    allowPlaintextAuth: bool = override(
        MailSettings,
        "allowPlaintextAuth",
        False,
        help="Allow LOGIN and AUTHENTICATE before STARTTLS (passwords in the clear).",
    )


class Options(ServiceOptions):
    """
    Options for C{twistd np-imap}.
    """

    settingsType = IMAPSettings
    synopsis = "[options]"
    longdesc = (
        "An IMAP4rev1 server (IDLE, UIDPLUS, LITERAL+) on the Maildirs under "
        "--maildir-root, for the users of the --auth checkers. --listen "
        "endpoints offer STARTTLS; --listen-tls ones are IMAPS. LOGIN and "
        "AUTHENTICATE PLAIN are refused before TLS (LOGINDISABLED) unless "
        "--allow-plaintext-auth. APPEND takes messages up to --append-limit."
    )
    tapname = "np-imap"
    usesCheckers = True


def imapFactory(
    parts: MailParts,
    settings: IMAPSettings | MailHostSettings,
    *,
    reactor: Any = None,
) -> IMAPFactory:
    """
    An IMAP factory on the shared mail parts (STARTTLS from C{parts.tls}, the
    greeting's host name from C{parts.hostname}), configured by C{settings}
    (np-imap's or np-mail's).
    """
    return IMAPFactory(
        parts.store,
        parts.portal,
        config=IMAPConfig(
            hostname=parts.hostname,
            allowPlaintextAuth=settings.allowPlaintextAuth,
            appendLimit=settings.appendLimit,
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
    settings: IMAPSettings | MailHostSettings,
    *,
    imap: Sequence[str] = (),
    imaps: Sequence[str] = (),
    reactor: Any = None,
) -> MultiService:
    """
    IMAP on C{imap} (STARTTLS) and C{imaps} (implicit TLS) endpoints, with
    C{common}'s limits: for np-mail, which makes C{parts} once.
    """
    factory = imapFactory(parts, settings, reactor=reactor)
    return listeners(parts, common, factory, imap, imaps, "np-imap", reactor)


def imapService(
    settings: IMAPSettings = IMAPSettings(), *, reactor: Any = None
) -> MultiService:
    """
    The IMAP service: the keyword twin of C{twistd np-imap} is
    C{imapService(IMAPSettings(domains=(...), appendLimit=..., ...))}.

    @raise ValueError: for a bad value.
    """
    common = settings.common()
    parts = mailParts(settings, common, reactor=reactor)
    service = imapListeners(
        parts,
        common,
        settings,
        imap=plainEndpoints(common, settings.defaultListen),
        imaps=common.listenTLS,
        reactor=reactor,
    )
    service.setName("np-imap")
    return supervised(service, common, name="np-imap", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The IMAP service configured by a parsed command line.
    """
    return imapService(config.settings, reactor=reactor)
