"""
C{twistd np-pop3}: the POP3 service's settings, its command line and its
keyword twin, and L{pop3Listeners} for np-mail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from attrs import frozen
from twisted.application.service import MultiService

from netplugins.mail.pop3 import POP3Config, POP3Factory
from netplugins.options import ServiceOptions
from netplugins.service import Common, supervised
from netplugins.settings import override
from netplugins.tap.mailhost import (
    MailParts,
    MailSettings,
    listeners,
    mailParts,
    plainEndpoints,
)

DEFAULT_LISTEN = ("tcp:8110:interface=127.0.0.1",)


@frozen(kw_only=True)
class POP3Settings(MailSettings):
    """
    What np-pop3 is told: the shared and mail settings; C{listen} are the
    STLS endpoints, C{listenTLS} the POP3S ones.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    allowPlaintextAuth: bool = override(
        MailSettings,
        "allowPlaintextAuth",
        False,
        help="Accept USER/PASS and AUTH before STLS (passwords in the clear).",
    )


class Options(ServiceOptions):
    """
    Options for C{twistd np-pop3}.
    """

    settingsType = POP3Settings
    synopsis = "[options]"
    longdesc = (
        "A POP3 server on the users' Maildirs under --maildir-root, logging "
        "users in with the --auth checkers. --listen endpoints offer STLS; "
        "--listen-tls endpoints are POP3S (implicit TLS). Passwords are refused "
        "before TLS unless --allow-plaintext-auth."
    )
    tapname = "np-pop3"
    usesCheckers = True


def pop3Listeners(
    parts: MailParts,
    common: Common,
    settings: MailSettings,
    *,
    pop3: Sequence[str] = (),
    pop3s: Sequence[str] = (),
    reactor: Any = None,
) -> MultiService:
    """
    The POP3 listeners of one process on shared C{parts}, configured by
    C{settings} (np-pop3's or np-mail's): C{pop3} (STLS) and C{pop3s}
    (implicit TLS) endpoints.
    """
    factory = POP3Factory(
        parts.store,
        parts.portal,
        config=POP3Config(
            hostname=parts.hostname,
            allowPlaintextAuth=settings.allowPlaintextAuth,
            preAuthTimeout=parts.preAuthTimeout(),
            closeGrace=parts.closeGrace,
        ),
        tls=parts.tls,
        throttle=parts.throttle,
        reactor=reactor,
    )
    return listeners(parts, common, factory, pop3, pop3s, "np-pop3", reactor)


def pop3Service(
    settings: POP3Settings = POP3Settings(), *, reactor: Any = None
) -> MultiService:
    """
    The POP3 service: the keyword twin of C{twistd np-pop3} is
    C{pop3Service(POP3Settings(maildirRoot=..., listen=(...), ...))}.

    @raise ValueError: for a bad value.
    """
    common = settings.common()
    parts = mailParts(settings, common, reactor=reactor)
    service = pop3Listeners(
        parts,
        common,
        settings,
        pop3=plainEndpoints(common, settings.defaultListen),
        pop3s=common.listenTLS,
        reactor=reactor,
    )
    service.setName("np-pop3")
    return supervised(service, common, name="np-pop3", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The POP3 service configured by a parsed command line.
    """
    return pop3Service(config.settings, reactor=reactor)
