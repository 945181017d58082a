"""
Hosting a WSGI application (PEP 3333) on twisted.web's WSGI container.

The application runs in a bounded thread pool that starts and stops with the
service; requests reach it through the hardened HTTP layer
(L{netplugins.web.http}), optionally behind HTTP Basic
(L{netplugins.web.auth}, the user's name as C{REMOTE_USER}).  Static
directories are served under URL prefixes by twisted.web's L{File}, confined to
their directory: C{..} is refused by L{FilePath}, and symbolic links leading
out of the directory are answered 404 here, as are names holding NUL or
invalid UTF-8 (where twisted.web answers 500, or logs a traceback).  A
directory served at the root prefix C{/} (a static site, with or without an
application) passes what its files do not answer, a missing file or a
directory without an index, to the application; names refused for
confinement are answered 404 there and never reach it.  Byte
ranges are served here too: twisted.web's multi-range producer stalls when a
part's separator takes a chunk past its buffer, and it accepts any number of
ranges, overlapping ones included; here at most L{MAX_RANGES}, none
overlapping, or the whole file is sent.  Stopping the service stops listening
first, then waits up to a deadline for the requests in flight before stopping
the threads.
"""

from __future__ import annotations

import os
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web import http, resource, static
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.wsgi import WSGIResource

from netplugins.coerce import importNamed
from netplugins.twistedinternals import wsgiResponse
from netplugins.web.http import callUnlessFired

WSGIApplication = Callable[..., Any]

DEFAULT_THREADS = 10
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

#: The most ranges one C{Range} header may ask for (Apache and nginx cap them
#: too); past it, or when ranges overlap, the whole file is sent.
MAX_RANGES = 16
# A range bound longer than this is no offset into any file.
_MAX_DIGITS = 20


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
    leading C{/}, no trailing one, or just C{/} for the root) and an existing
    directory.

    @raise ValueError: with a one-line message.
    """
    prefix, equals, directory = spec.partition("=")
    segments = [s for s in prefix.split("/") if s]
    root = prefix.startswith("/") and not segments
    if not equals or not (segments or root) or not directory:
        raise ValueError(f"--static wants PREFIX=DIR, not {spec!r}")
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"--static prefix may not contain . or ..: {prefix!r}")
    if not os.path.isdir(directory):
        raise ValueError(f"--static {prefix}: no directory {directory!r}")
    return "/" + "/".join(segments), directory


def byteRanges(header: bytes, size: int) -> list[tuple[int, int]] | None:
    """
    The parts of a file of C{size} bytes that a C{Range} header asks for, as
    C{(offset, length)} pairs in the order asked, leaving out those past the
    end of the file (an empty list: none is satisfiable, 416).

    @return: C{None} when the header is to be ignored and the whole file sent
        (RFC 9110 14.2): malformed, in another unit, more than L{MAX_RANGES}
        ranges, or ranges that overlap.
    """
    unit, equals, specs = header.partition(b"=")
    if not equals or unit.strip().lower() != b"bytes":
        return None
    asked = [spec.strip() for spec in specs.split(b",") if spec.strip()]
    if not asked or len(asked) > MAX_RANGES:
        return None
    ranges = []
    for spec in asked:
        first, dash, last = spec.partition(b"-")
        if not dash or not (first or last):
            return None
        if any(
            bound and not (bound.isdigit() and len(bound) <= _MAX_DIGITS)
            for bound in (first, last)
        ):
            return None
        if first:
            start = int(first)
            if last and int(last) < start:
                return None
            if start >= size:
                continue
            end = min(int(last) + 1 if last else size, size)
        else:
            if not int(last):
                continue
            start, end = max(size - int(last), 0), size
        ranges.append((start, end - start))
    ordered = sorted(ranges)
    if any(a + n > b for (a, n), (b, _) in pairwise(ordered)):
        return None
    return ranges


class MultipartRangesProducer(static.StaticProducer):
    """
    Writes a C{multipart/byteranges} body: for each part its separator, then
    its bytes of the file, then the closing delimiter.

    @ivar parts: the parts still to write: C{(separator, offset, length)}.
    """

    def __init__(
        self,
        request: Any,
        fileObject: Any,
        parts: Iterable[tuple[bytes, int, int]],
        closing: bytes,
    ) -> None:
        super().__init__(request, fileObject)
        self.parts = deque(parts)
        self.closing = closing
        self._left = 0

    def start(self) -> None:
        self.request.registerProducer(self, False)

    def resumeProducing(self) -> None:
        if not self.request:
            return
        chunks: list[bytes] = []
        size = 0
        done = False
        while size < self.bufferSize:
            if not self._left:
                if not self.parts:
                    chunks.append(self.closing)
                    done = True
                    break
                separator, offset, self._left = self.parts.popleft()
                self.fileObject.seek(offset)
                chunks.append(separator)
                size += len(separator)
                continue
            data = self.fileObject.read(min(self._left, self.bufferSize - size))
            if not data:
                # The file shrank: the promised length cannot be kept.
                self.request.unregisterProducer()
                self.request.loseConnection()
                self.stopProducing()
                return
            self._left -= len(data)
            chunks.append(data)
            size += len(data)
        self.request.write(b"".join(chunks))
        if done:
            self.request.unregisterProducer()
            self.request.finish()
            self.stopProducing()


#: What a L{ConfinedFile} answers a name it refuses for confinement: 404,
#: as a missing file, but never passed on to an application (L{WSGIRoot}).
REFUSED = resource.NoResource("File not found.")


class ConfinedFile(static.File):
    """
    A static L{File} that never leaves its root directory through a symbolic
    link and never lists a directory, serving byte ranges as described in the
    module docstring.  A missing file is its C{childNotFound}; a name refused
    for confinement (C{.}, C{..}, NUL, invalid UTF-8, a link out) is
    L{REFUSED}.

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
        try:
            name = path.decode("utf-8")
        except UnicodeDecodeError:
            return REFUSED
        if "\x00" in name or "/" in name or name in (".", ".."):
            return REFUSED
        child = super().getChild(path, request)
        if isinstance(child, static.File):
            real = os.path.realpath(child.path)
            if real != self.root and not real.startswith(self.root + os.sep):
                return REFUSED
        return child

    def directoryListing(self) -> IResource:
        return self.childNotFound

    def makeProducer(self, request: Any, fileForReading: Any) -> Any:
        header = request.getHeader(b"range")
        if header is None:
            return super().makeProducer(request, fileForReading)
        size = self.getFileSize()
        ranges = byteRanges(header, size)
        if ranges is None:
            ranges = [(0, size)]
            request.setResponseCode(http.OK)
        elif not ranges:
            request.setResponseCode(http.REQUESTED_RANGE_NOT_SATISFIABLE)
            request.setHeader(b"Content-Range", b"bytes */%d" % (size,))
            request.setHeader(b"Content-Length", b"0")
            return static.SingleRangeStaticProducer(request, fileForReading, 0, 0)
        else:
            request.setResponseCode(http.PARTIAL_CONTENT)
        if len(ranges) == 1:
            [(offset, length)] = ranges
            if request.code == http.PARTIAL_CONTENT:
                request.setHeader(b"Content-Range", self.contentRange(offset, length))
            request.setHeader(b"Content-Length", b"%d" % (length,))
            if self.type:
                request.setHeader(b"Content-Type", self.type.encode("ascii"))
            if self.encoding:
                request.setHeader(b"Content-Encoding", self.encoding.encode("ascii"))
            return static.SingleRangeStaticProducer(
                request, fileForReading, offset, length
            )
        boundary = uuid.uuid4().hex.encode("ascii")
        partType = (self.type or "application/octet-stream").encode("ascii")
        parts = [
            (
                b"\r\n--%s\r\nContent-Type: %s\r\nContent-Range: %s\r\n\r\n"
                % (boundary, partType, self.contentRange(offset, length)),
                offset,
                length,
            )
            for offset, length in ranges
        ]
        closing = b"\r\n--%s--\r\n" % (boundary,)
        request.setHeader(
            b"Content-Type", b'multipart/byteranges; boundary="%s"' % (boundary,)
        )
        request.setHeader(
            b"Content-Length",
            b"%d" % (sum(len(p) + n for p, _, n in parts) + len(closing),),
        )
        return MultipartRangesProducer(request, fileForReading, parts, closing)

    def contentRange(self, offset: int, length: int) -> bytes:
        """
        The C{Content-Range} value of C{length} bytes from C{offset}.
        """
        return b"bytes %d-%d/%d" % (offset, offset + length - 1, self.getFileSize())


class WSGIApplicationResource(WSGIResource):
    """
    twisted.web's WSGI resource, adding C{REMOTE_USER} for requests
    authenticated by L{netplugins.web.auth} and counting requests in flight so
    that shutdown can wait for them.
    """

    log = Logger()

    def __init__(self, reactor: Any, threadpool: ThreadPool, application: Any):
        super().__init__(reactor, threadpool, application)
        self.reactor = reactor
        self.threadpool = threadpool
        self.application = application
        self.inFlight = 0
        self._drained: list[Deferred[None]] = []

    def render(self, request: Any) -> int:
        response = wsgiResponse(
            self.reactor, self.threadpool, self.application, request
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

        callUnlessFired(d, self.reactor, timeout, giveUp)
        return d


class WSGIRoot(Resource):
    """
    The site root: static directories under their prefixes, the application
    (if any, else 404) for everything else, including what a directory served
    at C{/} has no file for.
    """

    isLeaf = True

    def __init__(
        self, application: IResource | None, statics: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__()
        self.application: IResource = (
            application if application is not None else resource.NoResource()
        )
        # Longest prefix first, so /static/img wins over /static.
        self.statics = sorted(
            (
                (
                    tuple(p.encode("utf-8") for p in prefix.split("/") if p),
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
                prepath, postpath = list(request.prepath), list(request.postpath)
                request.prepath.extend(prefix)
                del request.postpath[: len(prefix)]
                found = getChildForRequest(directory, request)
                if prefix or not unanswered(directory, found):
                    request.render(found)
                    return NOT_DONE_YET
                request.prepath[:], request.postpath[:] = prepath, postpath
                break
        request.render(self.application)
        return NOT_DONE_YET


def unanswered(directory: ConfinedFile, found: IResource) -> bool:
    """
    Whether C{found}, what C{directory} resolved a request's path to, is no
    file to answer with: a missing one, or a directory without an index.
    """
    if found is directory.childNotFound:
        return True
    return isinstance(found, static.File) and not found.exists()


class WSGIService(MultiService):
    """
    The listeners of a WSGI site plus its thread pool: the pool starts before
    the listeners and stops after them, once the requests in flight finished
    or C{shutdownTimeout} passed, and the site's connections are closed.
    """

    def __init__(
        self,
        pool: ThreadPool,
        resource: WSGIApplicationResource | None,
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
        if self.resource is not None:
            application = self.resource
            d.addCallback(lambda _: application.drain(self.shutdownTimeout))
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
