"""
C{twistd np-pop3}: the POP3 service's command line and its keyword twin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from twisted.application.service import MultiService

from netplugins.mail.pop3 import POP3Config, POP3Factory
from netplugins.options import ServiceOptions
from netplugins.service import Common, resolveCommon, supervised
from netplugins.tap.mailhost import (
    DEFAULT_DOMAINS,
    MailOptionsMixin,
    MailParts,
    listeners,
    mailParts,
    plainEndpoints,
)

DEFAULT_LISTEN = ("tcp:8110:interface=127.0.0.1",)


class Options(MailOptionsMixin, ServiceOptions):
    """
    Options for C{twistd np-pop3}.
    """

    synopsis = "[options]"
    longdesc = (
        "A POP3 server on the users' Maildirs under --maildir-root, logging "
        "users in with the --auth checkers. --listen endpoints offer STLS; "
        "--listen-tls endpoints are POP3S (implicit TLS). Passwords are refused "
        "before TLS unless --allow-plaintext-auth."
    )
    defaultListen = DEFAULT_LISTEN
    tapname = "np-pop3"

    optFlags = [
        [
            "allow-plaintext-auth",
            None,
            "Accept USER/PASS and AUTH before STLS (passwords in the clear).",
        ],
    ]


def pop3Listeners(
    parts: MailParts,
    common: Common,
    *,
    pop3: Sequence[str] = (),
    pop3s: Sequence[str] = (),
    allowPlaintextAuth: bool = False,
    reactor: Any = None,
) -> MultiService:
    """
    The POP3 listeners of one process on shared C{parts}: C{pop3} (STLS) and
    C{pop3s} (implicit TLS) endpoints.
    """
    factory = POP3Factory(
        parts.store,
        parts.portal,
        config=POP3Config(
            hostname=parts.hostname,
            allowPlaintextAuth=allowPlaintextAuth,
            preAuthTimeout=parts.preAuthTimeout(),
            closeGrace=parts.closeGrace,
        ),
        tls=parts.tls,
        throttle=parts.throttle,
        reactor=reactor,
    )
    return listeners(parts, common, factory, pop3, pop3s, "np-pop3", reactor)


def pop3Service(
    *,
    maildirRoot: str | None = None,
    domains: Iterable[str] = DEFAULT_DOMAINS,
    hostname: str | None = None,
    allowPlaintextAuth: bool = False,
    common: Common | None = None,
    reactor: Any = None,
    **settings: Any,
) -> MultiService:
    """
    The POP3 service: the keyword twin of C{twistd np-pop3}.

    @param common: the shared settings, already made; or their keywords
        (L{netplugins.service.commonSettings}) as C{settings}: C{listen} are
        the STLS endpoints, C{listenTLS} the POP3S ones.
    @raise ValueError: for a bad value.
    """
    common = resolveCommon(common, settings)
    parts = mailParts(
        common,
        maildirRoot=maildirRoot,
        domains=domains,
        hostname=hostname,
        reactor=reactor,
    )
    plain = plainEndpoints(common, DEFAULT_LISTEN)
    service = pop3Listeners(
        parts,
        common,
        pop3=plain,
        pop3s=common.listenTLS,
        allowPlaintextAuth=allowPlaintextAuth,
        reactor=reactor,
    )
    service.setName("np-pop3")
    return supervised(service, common, name="np-pop3", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The POP3 service configured by a parsed command line.
    """
    return pop3Service(
        maildirRoot=config["maildir-root"],
        domains=config.get("domains", DEFAULT_DOMAINS),
        hostname=config["hostname"],
        allowPlaintextAuth=bool(config["allow-plaintext-auth"]),
        common=config.common,
        reactor=reactor,
    )
