"""
Hosting a WSGI application (PEP 3333) on twisted.web's WSGI container.

The application runs in a bounded thread pool that starts and stops with the
service; requests reach it through the hardened HTTP layer
(L{netplugins.web.http}), optionally behind HTTP Basic
(L{netplugins.web.auth}, the user's name as C{REMOTE_USER}).  Static
directories are served under URL prefixes by twisted.web's L{File}, confined to
their directory: C{..} is refused by L{FilePath}, and symbolic links leading
out of the directory are answered 404 here.  Stopping the service stops
listening first, then waits up to a deadline for the requests in flight before
stopping the threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web import static
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.wsgi import WSGIResource, _WSGIResponse

from netplugins.coerce import importNamed
from netplugins.web.http import callUnlessFired

WSGIApplication = Callable[..., Any]

DEFAULT_THREADS = 10
DEFAULT_SHUTDOWN_TIMEOUT = 30.0


def loadApplication(spec: str) -> WSGIApplication:
    """
    Import the WSGI application named C{package.module:callable} (the
    attribute may be dotted, C{module:app.wsgi_app}).

    @raise ValueError: with a one-line message, if it cannot be loaded.
    """
    application = importNamed(spec, "--app", "callable")
    if not callable(application):
        raise ValueError(f"--app {spec!r} is not callable")
    return application


def parseStatic(spec: str) -> tuple[str, str]:
    """
    Split a C{--static PREFIX=DIR} value into a normalised URL prefix (with a
    leading C{/}, no trailing one) and an existing directory.

    @raise ValueError: with a one-line message.
    """
    prefix, equals, directory = spec.partition("=")
    segments = [s for s in prefix.split("/") if s]
    if not equals or not segments or not directory:
        raise ValueError(f"--static wants PREFIX=DIR, not {spec!r}")
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"--static prefix may not contain . or ..: {prefix!r}")
    if not os.path.isdir(directory):
        raise ValueError(f"--static {prefix}: no directory {directory!r}")
    return "/" + "/".join(segments), directory


class ConfinedFile(static.File):
    """
    A static L{File} that never leaves its root directory through a symbolic
    link and never lists a directory.

    @ivar root: the real path of the directory served.
    """

    def __init__(self, path: str, *args: Any, root: str | None = None, **kw: Any):
        super().__init__(path, *args, **kw)
        self.root = root if root is not None else os.path.realpath(path)

    def createSimilarFile(self, path: str) -> ConfinedFile:
        f = ConfinedFile(
            path, self.defaultType, self.ignoredExts, self.registry, root=self.root
        )
        f.processors = self.processors
        f.indexNames = self.indexNames[:]
        f.childNotFound = self.childNotFound
        return f

    def getChild(self, path: bytes, request: Any) -> IResource:
        child = super().getChild(path, request)
        if isinstance(child, static.File):
            real = os.path.realpath(child.path)
            if real != self.root and not real.startswith(self.root + os.sep):
                return self.childNotFound
        return child

    def directoryListing(self) -> IResource:
        return self.childNotFound


class WSGIApplicationResource(WSGIResource):
    """
    twisted.web's WSGI resource, adding C{REMOTE_USER} for requests
    authenticated by L{netplugins.web.auth} and counting requests in flight so
    that shutdown can wait for them.
    """

    log = Logger()

    def __init__(self, reactor: Any, threadpool: ThreadPool, application: Any):
        super().__init__(reactor, threadpool, application)
        self.inFlight = 0
        self._drained: list[Deferred[None]] = []

    def render(self, request: Any) -> int:
        response = _WSGIResponse(
            self._reactor, self._threadpool, self._application, request
        )
        user = getattr(request, "remoteUser", None)
        if user is not None:
            response.environ["REMOTE_USER"] = user
            response.environ["AUTH_TYPE"] = "Basic"
            # The password was for this server, not for the application.
            response.environ.pop("HTTP_AUTHORIZATION", None)
        # twisted.web reads the whole body before calling the application, so
        # the input ends where the body does, chunked or not (as gunicorn
        # says; Werkzeug reads nothing from a chunked body without it).
        environ: dict[str, Any] = response.environ
        environ["wsgi.input_terminated"] = True
        self.inFlight += 1
        request.notifyFinish().addBoth(self._finished)
        response.start()
        return NOT_DONE_YET

    def _finished(self, result: object) -> None:
        self.inFlight -= 1
        if not self.inFlight:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Fire when no request is in flight, or after C{timeout} seconds.
        """
        if not self.inFlight:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        self.log.info(
            "waiting up to {timeout}s for {count} requests in flight",
            timeout=timeout,
            count=self.inFlight,
        )

        def giveUp() -> None:
            if d in self._drained:
                self._drained.remove(d)
                self.log.warn(
                    "stopping with {count} requests still in flight",
                    count=self.inFlight,
                )
                d.callback(None)

        callUnlessFired(d, self._reactor, timeout, giveUp)
        return d


class WSGIRoot(Resource):
    """
    The site root: static directories under their prefixes, the application
    for everything else.
    """

    isLeaf = True

    def __init__(
        self, application: IResource, statics: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__()
        self.application = application
        # Longest prefix first, so /static/img wins over /static.
        self.statics = sorted(
            (
                (
                    tuple(p.encode("utf-8") for p in prefix.strip("/").split("/")),
                    ConfinedFile(directory),
                )
                for prefix, directory in statics
            ),
            key=lambda item: -len(item[0]),
        )

    def render(self, request: Any) -> int:
        segments = tuple(request.postpath)
        for prefix, directory in self.statics:
            if segments[: len(prefix)] == prefix:
                request.prepath.extend(prefix)
                del request.postpath[: len(prefix)]
                request.render(getChildForRequest(directory, request))
                return NOT_DONE_YET
        request.render(self.application)
        return NOT_DONE_YET


class WSGIService(MultiService):
    """
    The listeners of a WSGI site plus its thread pool: the pool starts before
    the listeners and stops after them, once the requests in flight finished
    or C{shutdownTimeout} passed, and the site's connections are closed.
    """

    def __init__(
        self,
        pool: ThreadPool,
        resource: WSGIApplicationResource,
        shutdownTimeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        site: Any = None,
    ) -> None:
        super().__init__()
        self.site = site
        self.pool = pool
        self.resource = resource
        self.shutdownTimeout = shutdownTimeout

    def startService(self) -> None:
        self.pool.start()
        super().startService()

    def stopService(self) -> Deferred[None]:
        d: Deferred[Any] = super().stopService()
        d.addCallback(lambda _: self.resource.drain(self.shutdownTimeout))
        if self.site is not None:
            d.addCallback(lambda _: self.site.closeConnections())
        d.addCallback(lambda _: self.pool.stop())
        return d


def threadPool(threads: int = DEFAULT_THREADS, name: str = "np-wsgi") -> ThreadPool:
    """
    The pool a WSGI application runs in: at most C{threads} threads, made on
    demand.
    """
    if threads < 1:
        raise ValueError(f"--threads must be positive, not {threads}")
    return ThreadPool(minthreads=0, maxthreads=threads, name=name)
