"""
C{twistd np-rpyc}: hosting an C{rpyc.Service}; its settings, its command line
and its keyword twin.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from attrs import frozen
from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from netplugins.cred.throttle import LoginThrottle
from netplugins.options import ServiceOptions, ServiceSettings, positiveInt
from netplugins.rpycserver import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_PREAUTH_TIMEOUT,
    DEFAULT_THREADS,
    RPyCFactory,
    RPyCService,
    isClassic,
    loadService,
)
from netplugins.service import listeningService, supervised
from netplugins.settings import flag, override, setting
from netplugins.web.auth import RemoteUserRealm

#: RPyC's own default port, where the book's client connects.
DEFAULT_LISTEN = ("tcp:18861:interface=127.0.0.1",)
#: Idle connections close after this long (--idle-timeout 0: never).
DEFAULT_IDLE_TIMEOUT = 300.0

_SERVICE_REQUIRED = "--service package.module:ServiceClass is required"

log = Logger()


@frozen(kw_only=True)
class RPyCSettings(ServiceSettings):
    """
    What np-rpyc is told: the shared settings, the service class, whether a
    classic service may run, the session pool and the frame limit.  With
    C{auth}/C{checkers}, every client logs in first (see
    L{netplugins.rpycserver}).
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    service: str | None = setting(
        None, "The rpyc.Service subclass to host, as package.module:ServiceClass."
    )
    allowClassic: bool = flag(
        "Allow a classic service (rpyc's SlaveService and kin), which runs any "
        "code its clients send."
    )
    threads: int = setting(
        DEFAULT_THREADS,
        "The most RPyC sessions served at once (a thread each); connections "
        "beyond them are refused.",
        positiveInt,
    )
    maxFrameSize: int = setting(
        DEFAULT_MAX_FRAME_SIZE,
        "The largest RPyC frame a client may send, compressed or not, in bytes.",
        positiveInt,
    )
    allowPlaintextAuth: bool = flag(
        "Accept logins (--auth) over connections without TLS."
    )
    idleTimeout: float | None = override(
        ServiceSettings, "idleTimeout", DEFAULT_IDLE_TIMEOUT
    )
    #: The service class itself, instead of C{service} (which the command
    #: line loads into it).
    serviceType: type[Any] | None = None

    def serviceClass(self) -> Any:
        """
        The service class, loaded; a classic one only if allowed.

        @raise ValueError: with a one-line message.
        """
        service = self.serviceType
        if service is None:
            if self.service is None:
                raise ValueError(_SERVICE_REQUIRED)
            service = loadService(self.service)
        if isClassic(service) and not self.allowClassic:
            raise ValueError(
                f"--service {self.service or service.__name__} is a classic "
                "service: it runs any code its clients send; refused without "
                "--allow-classic"
            )
        return service


class Options(ServiceOptions):
    """
    Options for C{twistd np-rpyc}.
    """

    settingsType = RPyCSettings
    synopsis = "--service package.module:ServiceClass [options]"
    longdesc = (
        "Host an rpyc.Service (RPyC's protocol) on the shared listeners, TLS, "
        "caps and deadlines. Each session runs in a thread of a bounded pool "
        "(--threads); connections beyond it are refused. With --auth, clients "
        "log in first with one AUTH PLAIN line (netplugins.rpycserver.connect), "
        "over TLS unless --allow-plaintext-auth; without --auth, rpyc.connect "
        "works as it is. Classic services (SlaveService) are refused unless "
        "--allow-classic. Example: --service "
        "netplugins.examples.bookrpyc:LineCounterService"
    )
    tapname = "np-rpyc"
    usesCheckers = True

    def postOptions(self) -> None:
        """
        Load the service class now, so that a bad one is a usage error.
        """
        super().postOptions()
        settings: RPyCSettings = self.settings
        try:
            service = settings.serviceClass()
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self.settings = attrs.evolve(settings, serviceType=service)


def rpycService(
    settings: RPyCSettings = RPyCSettings(), *, reactor: Any = None
) -> MultiService:
    """
    The RPyC hosting service: the keyword twin of C{twistd np-rpyc} is
    C{rpycService(RPyCSettings(service=..., listen=(...), ...))}.

    @raise ValueError: for a bad value, or no service.
    """
    if reactor is None:
        from twisted.internet import reactor
    common = settings.common()
    service = settings.serviceClass()
    if isClassic(service):
        log.warn(
            "np-rpyc: serving the classic service {service}: any client that "
            "connects{who} can run any code as this process",
            service=service.__name__,
            who=" and logs in" if common.checkers else "",
        )
    factory = RPyCFactory(
        service,
        ThreadPool(minthreads=0, maxthreads=settings.threads, name="np-rpyc"),
        threads=settings.threads,
        portal=common.portal(RemoteUserRealm()) if common.checkers else None,
        throttle=LoginThrottle(reactor),
        allowPlaintextAuth=settings.allowPlaintextAuth,
        preAuthTimeout=common.limits.preAuthTimeout or DEFAULT_PREAUTH_TIMEOUT,
        maxFrameSize=settings.maxFrameSize,
        closeGrace=common.limits.closeGrace,
        reactor=reactor,
    )
    hosting = RPyCService(factory)
    hosting.setName("np-rpyc")
    listeningService(
        common,
        factory,
        defaultListen=settings.defaultListen,
        name="np-rpyc",
        reactor=reactor,
    ).setServiceParent(hosting)
    return supervised(hosting, common, name="np-rpyc", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The service configured by a parsed command line.
    """
    return rpycService(config.settings, reactor=reactor)
