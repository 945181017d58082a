"""
The HTTP layer every netplugins web service is served through: twisted.web's
L{Site} and L{HTTPChannel}, with the limits and deadlines they lack.

Twisted 26.10 already answers 400 (and closes) for duplicate, signed or
non-numeric C{Content-Length}, C{Content-Length} with C{Transfer-Encoding},
transfer codings other than C{chunked} and C{identity}, C{0x}, signed or
over-long chunk-size lines, CR or LF inside header values and malformed
request lines; its tests pin that here (C{tests/test_http.py}).  This module
adds:

  - a request body limit: 413 from C{Content-Length} before the body is read,
    and for chunked bodies as soon as a chunk-size line would pass it;
  - 431 for too many or too large header lines (Twisted says 400, or closes
    without a word for a line over 16 KiB) and 414 for a long request line;
  - a deadline for the request line and headers, counted from their first
    byte: Twisted's timeout starts again on every byte, so a client trickling
    a byte at a time keeps a connection forever (slowloris);
  - a deadline for the whole request body, counted from the end of the
    headers (408 past it);
  - 400 for bare LF line endings (in the head and in chunked trailers, where
    Twisted would take the next request for trailers) and obsolete line
    folding (RFC 9112 5.2), which Twisted leaves hanging or folds, for chunk
    sizes of 2**63 or more, for C{Transfer-Encoding: identity} (RFC 9112 6.1,
    Twisted ignores it) and for an HTTP/1.1 request without exactly one
    well-formed C{Host} (RFC 9112 3.2; any request with two);
  - every refusal closes the connection, aborting it when the polite close
    has not finished after C{closeGrace} seconds (a peer that does not read,
    or TLS with unsent data, never lets it finish), as Twisted's idle
    timeout does after its C{abortTimeout}, which becomes C{closeGrace} too;
  - backpressure for pipelined requests: the next one is parsed and started
    only while the output already queued is under the transport's watermark.
    Twisted stops reading when the transport is full, but on finishing a
    request it replays the pipelined requests it has buffered whatever the
    transport says, so a client that never reads could make it queue
    response after response without end;
  - a plain-text 500, with the failure logged, instead of Twisted's HTML page;
  - C{Strict-Transport-Security} on TLS connections when asked for;
  - the cheap access log of L{netplugins.web.accesslog};
  - no HTTP/2 upgrade: the channel is Twisted's HTTP/1.1 one, whose pipelined
    requests are answered one at a time, in order.

The private parts of L{HTTPChannel}, C{LineReceiver} and Twisted's chunked
decoder it needs are reached through L{netplugins.twistedinternals}.

Use it as::

    site = hardenedSite(resource, maxBodySize=1024 * 1024, hsts=31536000)
    service = listeningService(common, site, ...)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import INTERNAL_SERVER_ERROR
from twisted.web.resource import IResource

from netplugins.limits.settings import DEFAULT_CLOSE_GRACE
from netplugins.twistedinternals import (
    ChunkedDecoder,
    HookedHTTPChannel,
    MalformedChunkedData,
    inRequestLine,
    lineBuffer,
    networkProducer,
    receivedHeaderSize,
    requestVersion,
    setTransferDecoder,
    transferDecoder,
)
from netplugins.web.accesslog import AccessLog

DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_HEADER_SIZE = 16 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_HEADER_TIMEOUT = 30.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_BODY_TIMEOUT = 60.0

#: Chunk sizes at or above this are refused as malformed, whatever the limit.
MAX_CHUNK_SIZE = 2**63

# RFC 9110 7.2: uri-host [ ":" port ], the host an IP literal or a reg-name.
_HOST = re.compile(
    rb"(?:\[[0-9A-Za-z:.%_~-]+\]|[0-9A-Za-z!$&'()*+,;=%._~-]*)(?::[0-9]*)?"
)

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


class _BodyTooLargeError(Exception):
    """
    A chunked body would pass the limit.
    """


class _LimitedChunkedDecoder(ChunkedDecoder):
    """
    Twisted's chunked decoder, refusing a chunk as soon as its size line says
    the body would pass the limit, before reading the chunk.
    """

    def __init__(self, limit: int, *args: Any) -> None:
        super().__init__(*args)
        self._remaining = limit

    def chunkSizeReceived(self, size: int) -> None:
        if size >= MAX_CHUNK_SIZE:
            raise MalformedChunkedData("chunk size too large")
        self._remaining -= size
        if self._remaining < 0:
            raise _BodyTooLargeError()

    def trailerDataReceived(self, buffered: bytearray) -> None:
        # Twisted ends trailer lines at CRLF only: a bare LF would make the
        # next request's head a trailer.  The buffer starts at a line here, so
        # its first LF must end a CRLF.
        lf = buffered.find(b"\n")
        if lf == 0 or (lf > 0 and buffered[lf - 1] != 13):
            raise MalformedChunkedData("bare LF in chunked trailer")


class HardenedChannel(HookedHTTPChannel):
    """
    An L{HTTPChannel} with the limits and deadlines described in the module
    docstring; its settings come from its L{HardenedSite}.
    """

    log = Logger()
    site: HardenedSite
    _headerDeadline: IDelayedCall | None = None
    _bodyDeadline: IDelayedCall | None = None
    _abortCall: IDelayedCall | None = None
    _refused = False
    _receiving = False
    _headerLines = 0
    # The transport paused us: its buffer is over its watermark.
    _outputFull = False
    # A finished request whose successor waits for the transport to drain.
    _heldRequest: server.Request | None = None

    def connectionMade(self) -> None:
        self.site.channels.add(self)
        self.MAX_LENGTH = self.site.maxHeaderSize
        self.totalHeadersSize = self.site.maxHeaderSize
        self.maxHeaders = self.site.maxHeaders
        # Twisted's grace after its idle timeout, 15 s of its own otherwise.
        self.abortTimeout = self.site.closeGrace  # type: ignore[assignment]
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if self._receiving:
            # Pipelined data replayed when a request ends inside this call:
            # LineReceiver queues it for the loop below, which checks it.
            super().dataReceived(data)
            return
        self._receiving = True
        try:
            super().dataReceived(data)
        finally:
            self._receiving = False
        # Only the request line and headers are read in line mode; a partial
        # line left over means a request head is on its way.
        if self.line_mode and not self._refused:
            pending = lineBuffer(self)
            if b"\n" in data and b"\n" in pending:
                # LineReceiver splits on CRLF only: an LF in the unfinished
                # line is a bare one, which would otherwise wait for 16 KiB.
                self.refuse(400, "bare LF line ending")
                return
            if self._headerDeadline is None and (pending or not inRequestLine(self)):
                self._headerDeadline = self.callLater(
                    self.site.headerTimeout, self._headersTooSlow
                )

    def _cancelDeadlines(self) -> None:
        for call in (self._headerDeadline, self._bodyDeadline):
            if call is not None and call.active():
                call.cancel()
        self._headerDeadline = self._bodyDeadline = None

    def _headersTooSlow(self) -> None:
        self._headerDeadline = None
        self.refuse(
            408,
            "request head not complete after {timeout} seconds",
            timeout=self.site.headerTimeout,
        )

    def _bodyTooSlow(self) -> None:
        self._bodyDeadline = None
        self.refuse(
            408,
            "request body not complete after {timeout} seconds",
            timeout=self.site.bodyTimeout,
        )

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        if b"\n" in line:
            self.refuse(400, "bare LF line ending")
            return
        firstLine = inRequestLine(self)
        if not firstLine and line[:1] in (b" ", b"\t"):
            self.refuse(400, "obsolete header line folding")
            return
        if receivedHeaderSize(self) + len(line) > self.totalHeadersSize:
            self.refuse(
                431, "request head over {limit} bytes", limit=self.totalHeadersSize
            )
            return
        if firstLine:
            self._headerLines = 0
        elif line:
            # Twisted counts a header only once the next line arrives, and
            # answers 400: count here, when it arrives.
            self._headerLines += 1
            if self._headerLines > self.maxHeaders:
                self.refuse(
                    431, "more than {limit} header lines", limit=self.maxHeaders
                )
                return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if inRequestLine(self):
            self.refuse(414, "request line over {limit} bytes", limit=self.MAX_LENGTH)
        else:
            self.refuse(431, "header line over {limit} bytes", limit=self.MAX_LENGTH)

    def chooseTransferDecoder(self, header: bytes, value: bytes) -> bool:
        if header == b"Transfer-Encoding" and value.lower() != b"chunked":
            # Twisted ignores "identity", which RFC 9112 no longer knows: a
            # front end reading it otherwise would frame the body differently.
            self.refuse(400, "transfer coding {coding!r}", coding=value)
            return False
        ok = super().chooseTransferDecoder(header, value)
        if ok and header == b"Transfer-Encoding":
            # Twisted has just chosen its chunked decoder, the only coding
            # left: the limited one takes its place.
            chosen = transferDecoder(self)
            limited = _LimitedChunkedDecoder(
                self.site.maxBodySize, chosen.dataCallback, chosen.finishCallback
            )
            setTransferDecoder(self, limited)
        return ok

    def allHeadersReceived(self) -> None:
        self._cancelDeadlines()
        if self.length is not None and self.length > self.site.maxBodySize:
            self.refuse(
                413,
                "declared body of {length} bytes over {limit}",
                length=self.length,
                limit=self.site.maxBodySize,
            )
            return
        hosts = self.requests[-1].requestHeaders.getRawHeaders(b"Host", [])
        if (
            len(hosts) > 1
            or (not hosts and requestVersion(self) == b"HTTP/1.1")
            or (hosts and not _HOST.fullmatch(hosts[0]))
        ):
            self.refuse(400, "{count} Host headers, or a bad one", count=len(hosts))
            return
        super().allHeadersReceived()
        if self.length != 0 and not self._refused:
            self._bodyDeadline = self.callLater(
                self.site.bodyTimeout, self._bodyTooSlow
            )

    def allContentReceived(self) -> None:
        self._cancelDeadlines()
        if not self._refused:
            super().allContentReceived()

    def pauseProducing(self) -> None:
        self._outputFull = True
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self._outputFull = False
        super().resumeProducing()
        request, self._heldRequest = self._heldRequest, None
        if request is not None:
            self.requests.insert(0, request)
            super().requestDone(request)

    def requestDone(self, request: server.Request) -> None:  # type: ignore[override]
        if not (self._outputFull and self.persistent):
            super().requestDone(request)
            return
        # Twisted would parse and start the next pipelined request now, its
        # response queued behind output the peer is not reading.  Hold it
        # back, stay in the state that buffers what arrives, stop reading,
        # and finish the request when the transport drains: resumeProducing.
        self.requests.remove(request)
        self._heldRequest = request
        networkProducer(self).pauseProducing()
        # The idle timeout, which Twisted suspends during a request, runs
        # again: a peer that never reads is closed by it.
        self.setTimeout(self.site.timeOut)

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        try:
            super().rawDataReceived(data)
        except _BodyTooLargeError:
            self.refuse(
                413, "chunked body over {limit} bytes", limit=self.site.maxBodySize
            )

    def badRequest(self) -> None:
        self.refuse(400, "malformed request")

    def refuse(self, code: int, why: str, **fields: object) -> None:
        """
        Answer C{code} with a short plain-text body, log C{why} (a format
        using C{fields}) naming the peer, and close the connection, reading
        nothing more from it.
        """
        if self._refused:
            return
        self._refused = True
        self._cancelDeadlines()
        transport: Any = self.transport
        self.log.info(
            "HTTP {code} to {peer}: " + why,
            code=code,
            peer=str(transport.getPeer()),
            **fields,
        )
        reason = _REASONS.get(code, b"Error")
        body = b"%d %s\n" % (code, reason)
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (code, reason, len(body), body)
        )
        self.loseConnection()
        self._abortCall = self.callLater(
            self.site.closeGrace, transport.abortConnection
        )

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._cancelDeadlines()
        self._heldRequest = None
        if self._abortCall is not None and self._abortCall.active():
            self._abortCall.cancel()
        self.site.channels.discard(self)
        super().connectionLost(reason)
        closed, self.site._closing = self.site._closing, []
        if self.site.channels:
            self.site._closing = closed
        else:
            for d in closed:
                d.callback(None)


class HardenedRequest(server.Request):
    """
    A request of a L{HardenedSite}: HSTS on TLS, a plain 500 on failure.

    @ivar remoteUser: the authenticated user's name, set by
        L{netplugins.web.auth}, for the access log and C{REMOTE_USER}.
    """

    log = Logger()
    remoteUser: str | None = None

    def process(self) -> None:
        channel: Any = self.channel
        hsts = channel.site.hsts
        if hsts is not None and self.isSecure():
            self.responseHeaders.setRawHeaders(
                b"Strict-Transport-Security", [b"max-age=%d" % (hsts,)]
            )
        super().process()

    def processingFailed(self, reason: Failure) -> None:  # type: ignore[override]
        self.log.failure(
            "{method} {uri} from {peer} failed",
            failure=reason,
            method=self.method,
            uri=self.uri,
            peer=str(self.getClientAddress()),
        )
        if self.startedWriting:
            # The status line is out: the only honest signal left is a cut.
            channel: Any = self.channel
            channel.transport.loseConnection()
            return
        body = b"500 Internal Server Error\n"
        self.setResponseCode(INTERNAL_SERVER_ERROR)
        self.responseHeaders.setRawHeaders(b"Content-Type", [b"text/plain"])
        self.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % (len(body),)])
        self.write(body)
        self.finish()


class HardenedSite(server.Site):
    """
    A L{Site} serving C{resource} through L{HardenedChannel}, with the
    hardening of this module.

    @param maxBodySize: the largest request body accepted, in bytes (413 past it).
    @param maxHeaderSize: the largest request line plus headers, in bytes, and
        the longest single line (414 or 431 past it).
    @param maxHeaders: the most header lines in one request (431 past it).
    @param headerTimeout: seconds from the first byte of a request to the end
        of its headers (408 and close past it).
    @param bodyTimeout: seconds from the end of a request's headers to the
        end of its body (408 and close past it).
    @param closeGrace: seconds a connection closed by the server (a refusal,
        an idle timeout) gets to send what is queued before it is aborted.
    @param idleTimeout: seconds a connection may stay silent between requests
        or while sending a body, or may leave finished responses unread;
        C{None} for no limit.
    @param hsts: when given, C{Strict-Transport-Security: max-age=<hsts>} on
        every response sent over TLS.
    @param accessLog: where finished requests are logged; C{None} for nowhere.
        See L{accessLogFor} for the services' default.
    @raise ValueError: for a limit that is not positive.
    """

    protocol = HardenedChannel  # type: ignore[assignment]
    requestFactory = HardenedRequest
    displayTracebacks = False

    def __init__(
        self,
        resource: IResource,
        *,
        maxBodySize: int = DEFAULT_MAX_BODY_SIZE,
        maxHeaderSize: int = DEFAULT_MAX_HEADER_SIZE,
        maxHeaders: int = DEFAULT_MAX_HEADERS,
        headerTimeout: float = DEFAULT_HEADER_TIMEOUT,
        bodyTimeout: float = DEFAULT_BODY_TIMEOUT,
        closeGrace: float = DEFAULT_CLOSE_GRACE,
        idleTimeout: float | None = DEFAULT_IDLE_TIMEOUT,
        hsts: int | None = None,
        accessLog: AccessLog | None = None,
        reactor: Any = None,
    ) -> None:
        for name, value in [
            ("maxBodySize", maxBodySize),
            ("maxHeaderSize", maxHeaderSize),
            ("maxHeaders", maxHeaders),
            ("headerTimeout", headerTimeout),
            ("bodyTimeout", bodyTimeout),
            ("closeGrace", closeGrace),
            ("idleTimeout", idleTimeout or 1),
        ]:
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        if hsts is not None and hsts < 0:
            raise ValueError(f"hsts must be a number of seconds, not {hsts!r}")
        super().__init__(resource, timeout=idleTimeout, reactor=reactor)  # type: ignore[arg-type]
        self.maxBodySize = maxBodySize
        self.maxHeaderSize = maxHeaderSize
        self.maxHeaders = maxHeaders
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.closeGrace = closeGrace
        self.hsts = hsts
        self.accessLog = accessLog
        self.channels: set[HardenedChannel] = set()
        self._closing: list[Deferred[None]] = []

    def closeConnections(self, abortAfter: float = 5.0) -> Deferred[None]:
        """
        Close every open connection (after what was written to it), aborting
        those still open after C{abortAfter} seconds; fires when all are gone.
        Call it once the requests in flight are done.
        """
        if not self.channels:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closing.append(d)
        for channel in list(self.channels):
            channel.loseConnection()

        def abort() -> None:
            for channel in list(self.channels):
                channel.transport.abortConnection()  # type: ignore[union-attr]

        callUnlessFired(d, self.reactor, abortAfter, abort)
        return d

    def startFactory(self) -> None:
        # Not Twisted's: its access log is the one that costs 40%.
        if self.accessLog is not None:
            self.accessLog.start()

    def stopFactory(self) -> None:
        if self.accessLog is not None:
            self.accessLog.stop()

    def log(self, request: Any) -> None:
        if self.accessLog is not None:
            self.accessLog.record(request)


def callUnlessFired(
    d: Deferred[Any], reactor: Any, seconds: float, f: Callable[[], object]
) -> None:
    """
    Call C{f} after C{seconds} unless C{d} has fired by then: a deadline for
    a wait that C{f} ends some other way (aborting connections, giving up).
    """
    call = reactor.callLater(seconds, f)

    def cancel(result: object) -> object:
        if call.active():
            call.cancel()
        return result

    d.addBoth(cancel)


#: The services' name for making one (they read as C{hardenedSite(resource, ...)}).
hardenedSite = HardenedSite


def accessLogFor(
    setting: str | AccessLog | None, *, reactor: Any = None
) -> AccessLog | None:
    """
    The access log a service's C{--access-log} setting names: a file path,
    C{"-"} for the twisted.logger log (one event per request, written in
    batches), C{"none"} or C{None} for none, or an L{AccessLog} made already.
    """
    if setting is None or isinstance(setting, AccessLog):
        return setting
    if setting == "none":
        return None
    if setting == "-":
        return AccessLog.toLogger(reactor=reactor)
    return AccessLog.toPath(setting, reactor=reactor)
