"""
C{twistd np-wsgi}: host a WSGI application; the command line and its keyword
twin.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.application.service import MultiService
from twisted.python import usage

from netplugins.options import ServiceOptions, positiveFloat, positiveInt
from netplugins.service import Common, listeningService, resolveCommon, supervised
from netplugins.web.accesslog import AccessLog
from netplugins.web.auth import requireBasicAuth
from netplugins.web.http import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
)
from netplugins.web.options import HTTPOptionsMixin, httpSettings, serviceSite
from netplugins.wsgi import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_THREADS,
    WSGIApplication,
    WSGIApplicationResource,
    WSGIRoot,
    WSGIService,
    loadApplication,
    parseStatic,
    threadPool,
)

DEFAULT_LISTEN = ("tcp:8080:interface=127.0.0.1",)


class Options(ServiceOptions, HTTPOptionsMixin):
    """
    Options for C{twistd np-wsgi}.
    """

    synopsis = "--app package.module:callable [options]"
    longdesc = (
        "Serve a WSGI application (PEP 3333) from a bounded thread pool, behind "
        "request body and header limits, a deadline for request heads, optional "
        "HTTP Basic authentication through the --auth checkers (the user name "
        "reaches the application as REMOTE_USER), static directories under URL "
        "prefixes and a combined-format access log. Stopping waits for the "
        "requests in flight. Example: --app netplugins.examples.pathdispatch:app"
    )
    defaultListen = DEFAULT_LISTEN
    tapname = "np-wsgi"
    usesCheckers = True

    optParameters = [
        ["app", None, None, "The WSGI application, as package.module:callable."],
        [
            "threads",
            None,
            DEFAULT_THREADS,
            "The most application calls running at once.",
            positiveInt,
        ],
        [
            "shutdown-timeout",
            None,
            DEFAULT_SHUTDOWN_TIMEOUT,
            "Seconds to wait for requests in flight when stopping.",
            positiveFloat,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["static"] = []

    def opt_static(self, spec: str) -> None:
        """
        Serve the files of DIR under the URL prefix PREFIX (PREFIX=DIR);
        repeatable.
        """
        try:
            self["static"].append(parseStatic(spec))
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def postOptions(self) -> None:
        super().postOptions()
        if self["app"] is None:
            raise usage.UsageError("--app package.module:callable is required")
        try:
            self["application"] = loadApplication(self["app"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


def wsgiService(
    *,
    app: WSGIApplication | str,
    threads: int = DEFAULT_THREADS,
    static: Iterable[tuple[str, str] | str] = (),
    maxBodySize: int = DEFAULT_MAX_BODY_SIZE,
    maxHeaderSize: int = DEFAULT_MAX_HEADER_SIZE,
    headerTimeout: float = DEFAULT_HEADER_TIMEOUT,
    bodyTimeout: float = DEFAULT_BODY_TIMEOUT,
    keepaliveTimeout: float = DEFAULT_IDLE_TIMEOUT,
    hsts: int | None = None,
    accessLog: str | AccessLog | None = "-",
    allowPlaintextAuth: bool = False,
    shutdownTimeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    common: Common | None = None,
    reactor: Any = None,
    **settings: Any,
) -> MultiService:
    """
    The WSGI hosting service: the keyword twin of C{twistd np-wsgi}.

    @param app: C{--app}: the application, or its C{package.module:callable}.
    @param static: C{--static}: C{"PREFIX=DIR"} strings or (prefix, dir) pairs.
    @param accessLog: C{--access-log}: a path, C{"-"}, C{"none"}/C{None} or an
        L{AccessLog}.
    @param common: the shared settings, already made; or instead give their
        keywords (L{netplugins.service.commonSettings}) as C{settings}.  With
        checkers (C{auth=[...]}), every request needs HTTP Basic.
    @raise ValueError: for a bad value.
    """
    if reactor is None:
        from twisted.internet import reactor
    common = resolveCommon(common, settings)
    application = loadApplication(app) if isinstance(app, str) else app
    statics = [parseStatic(s) if isinstance(s, str) else s for s in static]
    pool = threadPool(threads)
    resource = WSGIApplicationResource(reactor, pool, application)
    root: Any = WSGIRoot(resource, statics)
    if common.checkers:
        root = requireBasicAuth(
            root, common, allowPlaintextAuth=allowPlaintextAuth, reactor=reactor
        )
    site = serviceSite(
        root,
        maxBodySize=maxBodySize,
        maxHeaderSize=maxHeaderSize,
        headerTimeout=headerTimeout,
        bodyTimeout=bodyTimeout,
        keepaliveTimeout=keepaliveTimeout,
        hsts=hsts,
        accessLog=accessLog,
        closeGrace=common.limits.closeGrace,
        reactor=reactor,
    )
    service = WSGIService(pool, resource, shutdownTimeout, site=site)
    service.setName("np-wsgi")
    listeners = listeningService(
        common, site, defaultListen=DEFAULT_LISTEN, name="np-wsgi", reactor=reactor
    )
    listeners.setServiceParent(service)
    return supervised(service, common, name="np-wsgi", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The WSGI service configured by a parsed command line.
    """
    return wsgiService(
        app=config["application"],
        threads=config["threads"],
        static=config["static"],
        **httpSettings(config),
        shutdownTimeout=config["shutdown-timeout"],
        common=config.common,
        reactor=reactor,
    )
