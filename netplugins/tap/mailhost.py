"""
What the mail plugins (np-smtp, np-pop3, np-imap, np-mail) share on the command
line and in their keyword twins: the settings (L{MailSettings}, and
L{SmarthostSettings} for the two that relay), the parts one process makes once
and every protocol uses (L{MailParts}, made by L{mailParts}), and listening
with them (L{listeners}, L{plainEndpoints}).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

import attrs
from attrs import evolve, frozen
from twisted.application.service import MultiService

from netplugins.coerce import hostPort, splitHostPort
from netplugins.cred.throttle import LoginThrottle
from netplugins.limits.tracker import ConnectionTracker
from netplugins.mail.aliases import AliasFile, checkAliasFile
from netplugins.mail.maildir.names import checkUserName
from netplugins.mail.maildir.store import MaildirStore
from netplugins.mail.smtp.queue import (
    DEFAULT_LIFETIME,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MAX_SIZE,
    DEFAULT_MIN_BACKOFF,
)
from netplugins.mail.smtp.relay import Relay, mxRelay, smarthostRelay
from netplugins.mail.users import LocalUsers, MailRealm
from netplugins.options import ServiceSettings, positiveFloat, positiveInt
from netplugins.service import Common, listeningService
from netplugins.settings import flag, repeated, setting

DEFAULT_DOMAINS = ("localhost",)

#: Seconds a mail session may stay without logging in, unless
#: C{--preauth-timeout} says otherwise.
PRE_AUTH_TIMEOUT = 120.0


@frozen(kw_only=True)
class MailSettings(ServiceSettings):
    """
    The settings every mail plugin takes: the shared ones, where the Maildirs
    live, the host's name, the local domains and whether passwords may travel
    in the clear.  Each mail plugin's settings class subclasses it; the
    single-protocol ones override C{allowPlaintextAuth}'s help, to say in
    C{--help} what it allows in their protocol.
    """

    maildirRoot: str | None = setting(
        None, "The directory of the users' Maildirs (default: <state-dir>/mail)."
    )
    hostname: str | None = setting(
        None,
        "The host name in greetings and Received: headers (default: this host's name).",
    )
    #: Empty: L{DEFAULT_DOMAINS}.
    domains: tuple[str, ...] = repeated(
        "A local mail domain; repeatable (default: localhost).", option="domain"
    )
    allowPlaintextAuth: bool = flag(
        "Accept passwords before STARTTLS/STLS (in the clear)."
    )
    quotaStorage: int | None = setting(
        None,
        "The most bytes each user's messages may take (IMAP QUOTA; SMTP and "
        "APPEND past it are refused); default: no quota.",
        positiveInt,
    )


@frozen(kw_only=True)
class SmarthostSettings(MailSettings):
    """
    The mail settings of the plugins that run SMTP (np-smtp and np-mail):
    where authenticated users' foreign mail is relayed and how long it is
    queued, the Maildir postmaster mail goes to, and the local aliases.
    """

    postmaster: str = setting(
        "postmaster",
        "The Maildir that mail for <postmaster> goes to (name a user to have "
        "them read it).",
        checkUserName,
    )
    aliases: str | None = setting(
        None,
        "An aliases file (/etc/aliases syntax: 'name: user, user@local.domain') "
        "of local names; re-read when it changes.",
        checkAliasFile,
    )

    smarthost: str | None = setting(
        None,
        "HOST[:PORT]: relay authenticated users' mail for other domains there.",
    )
    smarthostCA: str | None = setting(
        None,
        "Verify the smarthost's certificate against these CAs (PEM) instead of "
        "the system's.",
    )
    relayByMX: bool = flag(
        "Without --smarthost: relay authenticated users' mail for other domains "
        "to each domain's MX hosts (port 25; STARTTLS when offered, not "
        "verified).",
        option="relay-by-mx",
    )
    mxNameserver: tuple[str, ...] = repeated(
        "HOST:PORT of a DNS server the MX lookups of --relay-by-mx ask "
        "(default: those of /etc/resolv.conf); repeatable.",
        hostPort,
        option="mx-nameserver",
    )
    queueLifetime: float = setting(
        DEFAULT_LIFETIME,
        "Seconds relayed mail may wait in the queue (<state-dir>/queue) before "
        "it is bounced (default: 5 days).",
        positiveFloat,
    )
    queueMinBackoff: float = setting(
        DEFAULT_MIN_BACKOFF,
        "Seconds before the first retry of deferred relayed mail; each retry "
        "waits twice as long, up to --queue-max-backoff.",
        positiveFloat,
    )
    queueMaxBackoff: float = setting(
        DEFAULT_MAX_BACKOFF,
        "The longest wait between two tries of deferred relayed mail, in seconds.",
        positiveFloat,
    )
    queueMaxSize: int = setting(
        DEFAULT_MAX_SIZE,
        "The most bytes the relay queue holds; beyond, relayed mail gets 452.",
        positiveInt,
    )

    @smarthost.validator
    def _relayable(self, attribute: attrs.Attribute[Any], value: str | None) -> None:
        """
        Refuse a malformed smarthost, in the relay's own words.
        """
        if value is not None:
            smarthostRelay(value)

    @relayByMX.validator
    def _oneRelay(self, attribute: attrs.Attribute[Any], value: bool) -> None:
        """
        One way to relay: a smarthost or the MX hosts.
        """
        if value and self.smarthost is not None:
            raise ValueError("--relay-by-mx and --smarthost: choose one")

    def relay(self, hostname: str, reactor: Any) -> Relay | None:
        """
        How the relay queue sends mail on (C{None}: mail for other domains
        is refused).
        """
        if self.smarthost is not None:
            return smarthostRelay(
                self.smarthost, hostname, reactor, caFile=self.smarthostCA
            )
        if self.relayByMX:
            return mxRelay(
                hostname,
                reactor,
                nameservers=[splitHostPort(n) for n in self.mxNameserver],
            )
        return None

    @property
    def relayName(self) -> str:
        """
        The smarthost, as DSNs name it (C{""} when relaying by MX: the
        host that answered is not kept).
        """
        return self.smarthost or ""


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
    settings: MailSettings, common: Common, *, reactor: Any = None
) -> MailParts:
    """
    Make the shared mail parts from a mail plugin's settings and their
    shared part, C{common} (C{settings.common()}, made once by the service).
    """
    if reactor is None:
        from twisted.internet import reactor
    root = settings.maildirRoot or os.path.join(common.stateDir, "mail")
    aliases = None
    if isinstance(settings, SmarthostSettings) and settings.aliases is not None:
        aliases = AliasFile(settings.aliases)
    users = LocalUsers(settings.domains or DEFAULT_DOMAINS, common.checkers, aliases)
    return MailParts(
        store=MaildirStore(
            root,
            reactor=reactor,
            quotaStorage=settings.quotaStorage,
            quotaLookup=users.storageQuota if users.hasStorageQuotas else None,
        ),
        users=users,
        portal=common.portal(MailRealm(users)),
        throttle=LoginThrottle(reactor),
        tls=common.serverTLS(reactor),
        hostname=settings.hostname or socket.gethostname() or "localhost",
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
