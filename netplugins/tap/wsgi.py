"""
C{twistd np-wsgi}: host a WSGI application; its settings, its command line and
its keyword twin.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from attrs import frozen
from twisted.application.service import MultiService
from twisted.python import usage

from netplugins.options import ServiceOptions, positiveFloat, positiveInt
from netplugins.service import listeningService, supervised
from netplugins.settings import repeated, setting
from netplugins.web.auth import requireBasicAuth
from netplugins.web.options import HTTPSettings
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

_APP_REQUIRED = "--app package.module:callable is required"


@frozen(kw_only=True)
class WSGISettings(HTTPSettings):
    """
    What np-wsgi is told: the shared and HTTP settings, the application, its
    thread pool and static directories.  With C{auth}/C{checkers}, every
    request needs HTTP Basic.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    app: str | None = setting(None, "The WSGI application, as package.module:callable.")
    threads: int = setting(
        DEFAULT_THREADS, "The most application calls running at once.", positiveInt
    )
    shutdownTimeout: float = setting(
        DEFAULT_SHUTDOWN_TIMEOUT,
        "Seconds to wait for requests in flight when stopping.",
        positiveFloat,
    )
    #: In Python, also (prefix, directory) pairs.
    static: tuple[str | tuple[str, str], ...] = repeated(
        "Serve the files of DIR under the URL prefix PREFIX (PREFIX=DIR); repeatable."
    )
    #: The application itself, instead of C{app} (which the command line
    #: loads into it).
    application: WSGIApplication | None = None


class Options(ServiceOptions):
    """
    Options for C{twistd np-wsgi}.
    """

    settingsType = WSGISettings
    synopsis = "--app package.module:callable [options]"
    longdesc = (
        "Serve a WSGI application (PEP 3333) from a bounded thread pool, behind "
        "request body and header limits, a deadline for request heads, optional "
        "HTTP Basic authentication through the --auth checkers (the user name "
        "reaches the application as REMOTE_USER), static directories under URL "
        "prefixes and a combined-format access log. Stopping waits for the "
        "requests in flight. Example: --app netplugins.examples.pathdispatch:app"
    )
    tapname = "np-wsgi"
    usesCheckers = True

    def postOptions(self) -> None:
        """
        Check the static directories and load the application now, so that a
        bad one is a usage error rather than a failure to start.
        """
        super().postOptions()
        settings: WSGISettings = self.settings
        try:
            for spec in settings.static:
                if isinstance(spec, str):
                    parseStatic(spec)
            if settings.app is None:
                if not settings.static:
                    raise ValueError(_APP_REQUIRED)
                return
            application = loadApplication(settings.app)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self.settings = attrs.evolve(settings, application=application)


def wsgiService(
    settings: WSGISettings = WSGISettings(), *, reactor: Any = None
) -> MultiService:
    """
    The WSGI hosting service: the keyword twin of C{twistd np-wsgi} is
    C{wsgiService(WSGISettings(app=..., listen=(...), ...))}.

    Without C{app} or C{application}, the static directories answer alone
    (404 for what they have no file for).

    @raise ValueError: for a bad value, or neither C{app}, C{application} nor
        C{static}.
    """
    if reactor is None:
        from twisted.internet import reactor
    common = settings.common()
    application = settings.application
    if application is None and settings.app is not None:
        application = loadApplication(settings.app)
    if application is None and not settings.static:
        raise ValueError(_APP_REQUIRED)
    statics = [parseStatic(s) if isinstance(s, str) else s for s in settings.static]
    pool = threadPool(settings.threads)
    resource = (
        None
        if application is None
        else WSGIApplicationResource(reactor, pool, application)
    )
    root: Any = WSGIRoot(resource, statics)
    if common.checkers:
        root = requireBasicAuth(
            root,
            common,
            allowPlaintextAuth=settings.allowPlaintextAuth,
            reactor=reactor,
        )
    site = settings.site(root, reactor=reactor)
    service = WSGIService(pool, resource, settings.shutdownTimeout, site=site)
    service.setName("np-wsgi")
    listeners = listeningService(
        common,
        site,
        defaultListen=settings.defaultListen,
        name="np-wsgi",
        reactor=reactor,
    )
    listeners.setServiceParent(service)
    return supervised(service, common, name="np-wsgi", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The WSGI service configured by a parsed command line.
    """
    return wsgiService(config.settings, reactor=reactor)
