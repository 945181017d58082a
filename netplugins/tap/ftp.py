"""
C{twistd np-ftp}: the FTP service's settings, its command line and its
keyword twin.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any, ClassVar

from attrs import evolve, frozen
from twisted.application.service import MultiService

from netplugins.coerce import choice
from netplugins.cred.throttle import LoginThrottle
from netplugins.ftp.server import FTPConfig, FTPFactory
from netplugins.ftp.tls import FTPServerTLS
from netplugins.homes import (
    DEFAULT_ROOT,
    TLS_POLICIES,
    HomeStore,
    JailRealm,
    checkRootTemplate,
)
from netplugins.options import ServiceOptions, ServiceSettings
from netplugins.service import served
from netplugins.settings import override, repeated, setting
from netplugins.workers import workerNumber

DEFAULT_LISTEN = ("tcp:2121:interface=127.0.0.1",)
DEFAULT_IDLE_TIMEOUT = 300.0
#: Seconds a session may stay without logging in, unless --preauth-timeout.
PRE_AUTH_TIMEOUT = 120.0

tlsRequiredChoice = choice("none", "control", "all", name="--tls-required")
sessionReuseChoice = choice("required", "optional", "off", name="--tls-session-reuse")


def portRange(value: str) -> tuple[int, int]:
    """
    Parse C{LOW-HIGH} (inclusive, 1024 to 65535).

    @raise ValueError: with one line.
    """
    low, dash, high = value.partition("-")
    try:
        if not dash:
            raise ValueError
        first, last = int(low), int(high)
    except ValueError:
        raise ValueError(f"{value!r} is not LOW-HIGH") from None
    if not 1024 <= first <= last <= 65535:
        raise ValueError(f"{value!r}: need 1024 <= LOW <= HIGH <= 65535")
    return first, last


def checkPortRange(value: str) -> str:
    """
    Check C{LOW-HIGH} (L{portRange}) and keep it as given.

    @raise ValueError: with one line.
    """
    portRange(value)
    return value


def ipv4Address(value: str) -> str:
    """
    Check an IPv4 address (what PASV replies can carry).

    @raise ValueError: with one line.
    """
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address") from None


def userTLSPolicy(value: str) -> str:
    """
    Check C{NAME=control} or C{NAME=all} and keep it as given.

    @raise ValueError: with one line.
    """
    name, equals, policy = value.rpartition("=")
    if not equals or not name or policy not in TLS_POLICIES[1:]:
        raise ValueError(f"{value!r} is not NAME=control or NAME=all")
    return value


def existingDirectory(value: str) -> str:
    """
    Check that C{value} is a directory.

    @raise ValueError: with one line.
    """
    if not os.path.isdir(value):
        raise ValueError(f"{value!r} is not a directory")
    return value


def workerShare(
    ports: tuple[int, int], worker: int | None, workers: int
) -> tuple[int, int]:
    """
    The part of the passive range C{ports} that worker C{worker} (1 to
    C{workers}; C{None}: not a worker) listens on, so that workers never
    race for a port.

    @raise ValueError: when the range has fewer ports than workers.
    """
    low, high = ports
    if worker is None or workers <= 1:
        return ports
    size = (high - low + 1) // workers
    if size < 1:
        raise ValueError("--passive-ports has fewer ports than --workers")
    first = low + (worker - 1) * size
    return first, first + size - 1


@frozen(kw_only=True)
class FTPSettings(ServiceSettings):
    """
    What np-ftp is told: the shared settings, where users' homes are, the
    data connections and the TLS policy.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    root: str | None = setting(
        None,
        "Each user's home: a template with {user} (or {homeDirectory}, an "
        "ldap: checker's attribute), e.g. /srv/ftp/{user} (default: "
        "<state-dir>/homes/{user}, np-ssh's too, made at first login).",
        checkRootTemplate,
    )
    passivePorts: str | None = setting(
        None,
        "LOW-HIGH: the ports PASV/EPSV listen on (split among --workers; "
        "default: any free port).",
        checkPortRange,
    )
    masquerade: str | None = setting(
        None, "The IPv4 address PASV replies give (behind NAT).", ipv4Address
    )
    tlsRequired: str = setting(
        "control",
        "none, control (passwords only over TLS) or all (data connections "
        "protected too).",
        tlsRequiredChoice,
    )
    tlsSessionReuse: str = setting(
        "required",
        "Whether a protected data connection must resume the control "
        "connection's TLS session: required, optional (Python's ftplib "
        "cannot resume) or off.",
        sessionReuseChoice,
    )
    tlsRequiredUser: tuple[str, ...] = repeated(
        "NAME=control or NAME=all: what user NAME requires of TLS, whatever "
        "--tls-required says (refused before the password over a cleartext "
        "control connection). An ldap: checker whose URL fetches the "
        "tlsRequired attribute gives it per entry too.",
        userTLSPolicy,
    )
    anonymousRoot: str | None = setting(
        None,
        "Allow anonymous logins (USER anonymous or ftp), read-only, in this "
        "directory (default: refused).",
        existingDirectory,
    )
    idleTimeout: float | None = override(
        ServiceSettings, "idleTimeout", DEFAULT_IDLE_TIMEOUT
    )


class Options(ServiceOptions):
    """
    Options for C{twistd np-ftp}.
    """

    settingsType = FTPSettings
    synopsis = "[options]"
    longdesc = (
        "An FTP server with explicit (AUTH TLS) and implicit (--listen-tls) "
        "FTPS, logging users in with the --auth checkers into their homes "
        "under --root, which they cannot leave. Passwords are refused before "
        "AUTH TLS unless --tls-required none. Data connections are accepted "
        "only from the client's own address; PORT and EPRT only to it."
    )
    tapname = "np-ftp"
    usesCheckers = True


def ftpService(
    settings: FTPSettings = FTPSettings(), *, reactor: Any = None
) -> MultiService:
    """
    The FTP service: the keyword twin of C{twistd np-ftp} is
    C{ftpService(FTPSettings(root=..., listen=(...), ...))}.

    @raise ValueError: for a bad value.
    """
    if reactor is None:
        from twisted.internet import reactor
    common = settings.common()
    root = settings.root or os.path.join(os.path.abspath(common.stateDir), DEFAULT_ROOT)
    homes = HomeStore(
        root,
        checkers=common.checkers,
        anonymousRoot=settings.anonymousRoot,
        createHomes=settings.root is None,
        reactor=reactor,
        tlsRequiredUsers=dict(
            value.rpartition("=")[::2] for value in settings.tlsRequiredUser
        ),
    )
    common.tls = FTPServerTLS(common.tlsSettings, reactor=reactor)
    ports = None
    if settings.passivePorts is not None:
        ports = workerShare(
            portRange(settings.passivePorts), workerNumber(), common.workers
        )
    factory = FTPFactory(
        homes,
        common.portal(JailRealm(homes)),
        config=FTPConfig(
            tlsRequired=settings.tlsRequired,
            sessionReuse=settings.tlsSessionReuse,
            masquerade=settings.masquerade,
            idleTimeout=common.limits.idleTimeout or DEFAULT_IDLE_TIMEOUT,
            preAuthTimeout=common.limits.preAuthTimeout or PRE_AUTH_TIMEOUT,
            closeGrace=common.limits.closeGrace,
        ),
        tls=common.tls,
        throttle=LoginThrottle(reactor),
        passivePorts=ports,
        reactor=reactor,
    )
    # The sessions keep their own idle deadline (421, and none while a
    # transfer moves), not the wrapper's, which sees no control traffic.
    return served(
        evolve(common, limits=evolve(common.limits, idleTimeout=None)),
        factory,
        name="np-ftp",
        defaultListen=settings.defaultListen,
        reactor=reactor,
    )


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The FTP service configured by a parsed command line.
    """
    return ftpService(config.settings, reactor=reactor)
