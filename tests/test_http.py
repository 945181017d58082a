"""
Tests for L{netplugins.web.http}, L{netplugins.web.accesslog} and
L{netplugins.web.auth}: the hardened HTTP layer, driven in memory, and its
backpressure with real sockets on 127.0.0.1.
"""

from __future__ import annotations

import socket
from base64 import b64encode
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import alsoProvides

from netplugins.web.accesslog import AccessLog
from netplugins.web.auth import BasicAuthResource, RemoteUserRealm, parseBasic
from netplugins.web.http import HardenedSite, hardenedSite

HEAD = b"POST / HTTP/1.1\r\nHost: a\r\n"


class Echo(Resource):
    """
    Answers with the request body; C{/fail} raises; C{/later} waits for
    C{self.later} to fire.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.rendered: list[bytes] = []
        self.later: list[Any] = []

    def render(self, request: Any) -> Any:
        self.rendered.append(request.path)
        if request.path == b"/fail":
            raise RuntimeError("secret detail")
        if request.path == b"/later":
            self.later.append(request)
            return NOT_DONE_YET
        user = getattr(request, "remoteUser", None)
        return b"user=" + (user or "-").encode() + b" body=" + request.content.read()


class WatermarkTransport(StringTransport):
    """
    A L{StringTransport} that, like a socket's, pauses its producer once more
    than C{bufferSize} bytes are queued; C{drain} empties it and resumes it.
    """

    bufferSize = 100

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > self.bufferSize and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        data = self.value()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
        return data


class Connection:
    """
    A site's channel on a L{StringTransport}, on a L{Clock}.
    """

    def __init__(
        self, site: HardenedSite, secure: bool = False, watermark: bool = False
    ) -> None:
        factory = WatermarkTransport if watermark else StringTransport
        self.transport: Any = factory(peerAddress=IPv4Address("TCP", "192.0.2.7", 4321))
        if secure:
            alsoProvides(self.transport, ISSLTransport)
            self.transport.setTcpNoDelay = lambda enabled: None  # type: ignore
        self.channel: Any = site.buildProtocol(None)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        self.channel.dataReceived(data)
        return self.transport.value()


def makeSite(resource: Any = None, **kw: Any) -> tuple[HardenedSite, Clock]:
    clock = Clock()
    kw.setdefault("maxBodySize", 100)
    if resource is None:
        resource = Echo()
    site = hardenedSite(resource, reactor=clock, **kw)
    return site, clock


class TwistedRejectsTests(SynchronousTestCase):
    """
    What Twisted 26.10 refuses by itself still gets 400 and a closed
    connection through the hardened channel (pinned against regressions).
    """

    def assertRefused(self, data: bytes, code: bytes = b"400") -> None:
        site, _ = makeSite()
        c = Connection(site)
        out = c.send(data)
        self.assertTrue(out.startswith(b"HTTP/1.1 " + code + b" "), out)
        self.assertIn(b"Connection: close", out)
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(site.resource.rendered, [])

    def test_duplicateContentLength(self) -> None:
        """Two Content-Length headers get 400."""
        self.assertRefused(HEAD + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx")

    def test_listContentLength(self) -> None:
        """A Content-Length list (1, 1) gets 400."""
        self.assertRefused(HEAD + b"Content-Length: 1, 1\r\n\r\nx")

    def test_signedContentLength(self) -> None:
        """A signed Content-Length (+1, -1) gets 400."""
        self.assertRefused(HEAD + b"Content-Length: +1\r\n\r\nx")
        self.assertRefused(HEAD + b"Content-Length: -1\r\n\r\nx")

    def test_nonNumericContentLength(self) -> None:
        """A non-ASCII digit or hex Content-Length gets 400."""
        self.assertRefused(HEAD + "Content-Length: \u0661\r\n\r\nx".encode())
        self.assertRefused(HEAD + b"Content-Length: 0x1\r\n\r\nx")

    def test_contentLengthAndTransferEncoding(self) -> None:
        """Content-Length with Transfer-Encoding gets 400, in either order."""
        body = b"\r\n1\r\nx\r\n0\r\n\r\n"
        self.assertRefused(
            HEAD + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n" + body
        )
        self.assertRefused(
            HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 1\r\n" + body
        )

    def test_otherTransferCodings(self) -> None:
        """Transfer codings other than a single chunked get 400."""
        body = b"\r\n1\r\nx\r\n0\r\n\r\n"
        self.assertRefused(HEAD + b"Transfer-Encoding: gzip, chunked\r\n" + body)
        self.assertRefused(HEAD + b"Transfer-Encoding: chunked\r\n" * 2 + body)

    def test_badChunkSizes(self) -> None:
        """0x, signed, space-padded and over-long chunk-size lines get 400."""
        te = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
        for size in [b"0x1", b"+1", b"-1", b" 1", b"0" * 2000 + b"1"]:
            self.assertRefused(te + size + b"\r\nx\r\n0\r\n\r\n")

    def test_headerValueWithCR(self) -> None:
        """A CR inside a header value gets 400."""
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n")

    def test_spaceBeforeColon(self) -> None:
        """Whitespace between a header name and its colon gets 400."""
        self.assertRefused(HEAD + b"Content-Length : 1\r\n\r\nx")


class HardeningTests(SynchronousTestCase):
    """
    What the hardened channel adds to Twisted's.
    """

    def exchange(self, data: bytes, **kw: Any) -> tuple[bytes, Connection]:
        site, _ = makeSite(**kw)
        c = Connection(site)
        return c.send(data), c

    def assertStatus(self, out: bytes, code: int) -> None:
        self.assertTrue(out.startswith(b"HTTP/1.1 %d " % (code,)), out)

    def test_bareLFRequestLine(self) -> None:
        """A request using bare LF line endings gets 400 at once."""
        out, c = self.exchange(b"GET / HTTP/1.1\nHost: a\n\n")
        self.assertStatus(out, 400)
        self.assertTrue(c.transport.disconnecting)

    def test_bareLFEndOfHeaders(self) -> None:
        """Headers ended by CRLF then a bare LF get 400."""
        out, _ = self.exchange(b"GET / HTTP/1.1\r\nHost: a\r\n\n")
        self.assertStatus(out, 400)

    def test_bareLFInChunkedBody(self) -> None:
        """A chunk ended by a bare LF gets 400."""
        out, _ = self.exchange(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\n0\r\n\r\n"
        )
        self.assertStatus(out, 400)

    def test_lfInBodyAllowed(self) -> None:
        """LF bytes inside a body arriving with the head are body, not framing."""
        out, _ = self.exchange(HEAD + b"Content-Length: 3\r\n\r\na\nb")
        self.assertStatus(out, 200)
        self.assertTrue(out.endswith(b"body=a\nb"), out)

    def test_obsoleteLineFolding(self) -> None:
        """A folded header line gets 400 (RFC 9112 5.2)."""
        out, _ = self.exchange(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
        )
        self.assertStatus(out, 400)

    def test_hugeChunkSize(self) -> None:
        """A chunk size of 2**63 or more gets 400 whatever the body limit."""
        out, _ = self.exchange(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 40 + b"\r\nx",
            maxBodySize=2**70,
        )
        self.assertStatus(out, 400)

    def test_contentLengthOverLimit(self) -> None:
        """A Content-Length over the limit gets 413 before any body is sent."""
        out, c = self.exchange(HEAD + b"Content-Length: 101\r\n\r\n")
        self.assertStatus(out, 413)
        self.assertTrue(c.transport.disconnecting)

    def test_contentLengthAtLimit(self) -> None:
        """A body of exactly the limit is accepted."""
        out, _ = self.exchange(HEAD + b"Content-Length: 100\r\n\r\n" + b"x" * 100)
        self.assertStatus(out, 200)

    def test_chunkedOverLimit(self) -> None:
        """A chunked body is refused with 413 at the chunk that passes the limit."""
        site, _ = makeSite()
        c = Connection(site)
        c.send(HEAD + b"Transfer-Encoding: chunked\r\n\r\n32\r\n" + b"x" * 50 + b"\r\n")
        self.assertEqual(c.transport.value(), b"")
        out = c.send(b"33\r\n")
        self.assertStatus(out, 413)
        self.assertEqual(site.resource.rendered, [])

    def test_chunkedWithinLimit(self) -> None:
        """Chunks adding up to the limit are delivered whole."""
        out, _ = self.exchange(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
            b"32\r\n" + b"a" * 50 + b"\r\n32\r\n" + b"b" * 50 + b"\r\n0\r\n\r\n"
        )
        self.assertStatus(out, 200)
        self.assertTrue(out.endswith(b"a" * 50 + b"b" * 50), out[-120:])

    def test_tooManyHeaders(self) -> None:
        """More header lines than maxHeaders get 431."""
        out, _ = self.exchange(
            b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 11 + b"\r\n", maxHeaders=10
        )
        self.assertStatus(out, 431)

    def test_headersTooLarge(self) -> None:
        """A request head over maxHeaderSize gets 431."""
        out, _ = self.exchange(
            b"GET / HTTP/1.1\r\n" + (b"X: " + b"y" * 90 + b"\r\n") * 12 + b"\r\n",
            maxHeaderSize=1024,
        )
        self.assertStatus(out, 431)

    def test_headerLineTooLong(self) -> None:
        """One unterminated header line over the limit gets 431, not a silent close."""
        out, _ = self.exchange(
            b"GET / HTTP/1.1\r\nX: " + b"y" * 2000, maxHeaderSize=1024
        )
        self.assertStatus(out, 431)

    def test_requestLineTooLong(self) -> None:
        """A request line over the limit gets 414."""
        out, _ = self.exchange(b"GET /" + b"a" * 2000, maxHeaderSize=1024)
        self.assertStatus(out, 414)

    def test_trickledHeaders(self) -> None:
        """A head trickled a byte a second gets 408 when headerTimeout passes."""
        site, clock = makeSite(headerTimeout=30, idleTimeout=60)
        c = Connection(site)
        for byte in b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 40:
            self.assertFalse(c.transport.disconnecting)
            c.send(bytes([byte]))
            clock.advance(1)
            if c.transport.value():
                break
        self.assertTrue(c.transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(clock.seconds(), 30)

    def test_headersInTime(self) -> None:
        """A head completed in time is served and leaves no deadline pending."""
        site, clock = makeSite(headerTimeout=30, idleTimeout=None)
        c = Connection(site)
        c.send(b"GET / HTTP/1.1\r\n")
        clock.advance(29)
        out = c.send(b"Host: a\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_idleKeepAlive(self) -> None:
        """A kept-alive connection idle for idleTimeout is closed."""
        site, clock = makeSite(idleTimeout=5)
        c = Connection(site)
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        clock.advance(4)
        self.assertFalse(c.transport.disconnecting)
        clock.advance(1.5)
        self.assertTrue(c.transport.disconnecting)

    def test_pipelinedInOrder(self) -> None:
        """Pipelined requests are answered in order, the slow first one first."""
        resource = Echo()
        site, _ = makeSite(resource)
        c = Connection(site)
        c.send(
            b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual(c.transport.value(), b"")
        request = resource.later.pop()
        request.write(b"first")
        request.finish()
        out = c.transport.value()
        self.assertLess(out.index(b"first"), out.index(b"body="), out)
        self.assertEqual(resource.rendered, [b"/later", b"/second"])

    def test_bodyThenPipelined(self) -> None:
        """A request pipelined right behind a body, in the same read, is served."""
        resource = Echo()
        site, _ = makeSite(resource)
        for body in [
            b"Content-Length: 1\r\n\r\nx",
            b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        ]:
            out = Connection(site).send(
                HEAD + body + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
            )
            self.assertEqual(out.count(b"HTTP/1.1 200 "), 2, out)
        self.assertEqual(resource.rendered, [b"/", b"/next"] * 2)

    def test_pipelinedHeldWhileOutputFull(self) -> None:
        """The next pipelined request waits, unread, until queued output drains."""
        resource = Echo()
        site, _ = makeSite(resource)
        c = Connection(site, watermark=True)
        c.send(
            b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"
            + b"x" * 100
            + b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
            + b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        states = [(list(resource.rendered), c.transport.producerState)]
        answers = []
        for _ in range(3):
            answers.append(c.transport.drain().count(b"HTTP/1.1 200 "))
            states.append((list(resource.rendered), c.transport.producerState))
        self.assertEqual(
            (states, answers),
            (
                [
                    ([b"/1"], "paused"),
                    ([b"/1", b"/2"], "paused"),
                    ([b"/1", b"/2", b"/3"], "paused"),
                    ([b"/1", b"/2", b"/3"], "producing"),
                ],
                [1, 1, 1],
            ),
        )

    def test_heldRequestTimesOut(self) -> None:
        """A peer leaving a finished response unread meets the idle timeout."""
        site, clock = makeSite(idleTimeout=5)
        c = Connection(site, watermark=True)
        c.send(
            b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 20 + b"\r\n"
            b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual(site.resource.rendered, [b"/"])
        clock.advance(4)
        self.assertFalse(c.transport.disconnecting)
        clock.advance(1)
        self.assertTrue(c.transport.disconnecting)
        clock.advance(site.closeGrace)
        self.assertTrue(c.transport.disconnected)

    def test_transferEncodingIdentity(self) -> None:
        """Transfer-Encoding: identity gets 400 (RFC 9112 6.1), not a bodiless one."""
        out, c = self.exchange(HEAD + b"Transfer-Encoding: identity\r\n\r\nx")
        self.assertStatus(out, 400)
        self.assertTrue(c.transport.disconnecting)

    def test_bareLFInTrailer(self) -> None:
        """A bare LF in a chunked trailer gets 400: the next request is no trailer."""
        resource = Echo()
        site, _ = makeSite(resource)
        c = Connection(site)
        out = c.send(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX: y\n"
            b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertStatus(out, 400)
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(resource.rendered, [])

    def test_trailerAccepted(self) -> None:
        """A well-formed chunked trailer is accepted and the next request served."""
        resource = Echo()
        site, _ = makeSite(resource)
        out = Connection(site).send(
            HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX: y\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual(out.count(b"HTTP/1.1 200 "), 2, out)
        self.assertEqual(resource.rendered, [b"/", b"/next"])

    def test_host(self) -> None:
        """No Host in HTTP/1.1, two Hosts or a bad one get 400; HTTP/1.0 may omit it."""
        statuses = []
        for request in [
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: example.com:80\r\n\r\n",
        ]:
            out, _ = self.exchange(request)
            statuses.append(int(out.split(b" ", 2)[1]))
        self.assertEqual(statuses, [400] * 5 + [200] * 3)

    def test_slowBody(self) -> None:
        """A body trickled a byte every 50 s gets 408 at bodyTimeout, then an abort."""
        site, clock = makeSite(bodyTimeout=60, closeGrace=2)
        c = Connection(site)
        c.send(HEAD + b"Content-Length: 10\r\n\r\n")
        for _ in range(2):
            self.assertEqual(c.transport.value(), b"")
            c.send(b"x")
            clock.advance(50)
        self.assertTrue(c.transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(c.transport.disconnecting)
        self.assertFalse(c.transport.disconnected)
        self.assertEqual(clock.seconds(), 100)
        clock.advance(1.9)
        self.assertFalse(c.transport.disconnected)
        clock.advance(0.1)
        self.assertTrue(c.transport.disconnected)
        self.assertEqual(site.resource.rendered, [])

    def test_chunkedBodyDeadline(self) -> None:
        """A chunked body still open at bodyTimeout gets 408."""
        site, clock = makeSite(bodyTimeout=5, idleTimeout=None)
        c = Connection(site)
        c.send(HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n")
        clock.advance(5)
        self.assertTrue(c.transport.value().startswith(b"HTTP/1.1 408 "))

    def test_bodyInTime(self) -> None:
        """A body completed in time is served and leaves no deadline pending."""
        site, clock = makeSite(bodyTimeout=60, idleTimeout=None)
        c = Connection(site)
        c.send(HEAD + b"Content-Length: 2\r\n\r\nx")
        clock.advance(59)
        out = c.send(b"y")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_refusalAborts(self) -> None:
        """A refused connection still open after closeGrace is aborted."""
        site, clock = makeSite()
        c = Connection(site)
        c.send(HEAD + b"Content-Length: 101\r\n\r\n")
        self.assertFalse(c.transport.disconnected)
        clock.advance(site.closeGrace)
        self.assertTrue(c.transport.disconnected)

    def test_noTraceback(self) -> None:
        """A failing resource gets a plain 500 with no traceback; it is logged."""
        site, _ = makeSite()
        c = Connection(site)
        with capturedLogs() as events:
            out = c.send(b"GET /fail HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 500 "))
        self.assertIn(b"Content-Type: text/plain", out)
        self.assertNotIn(b"secret", out)
        self.assertNotIn(b"Traceback", out)
        self.assertTrue(out.endswith(b"\r\n\r\n500 Internal Server Error\n"))
        self.assertTrue([e for e in events if e.get("log_failure")])
        self.flushLoggedErrors(RuntimeError)

    def test_hstsOnTLS(self) -> None:
        """HSTS is sent on TLS connections only, when configured."""
        site, _ = makeSite(hsts=300)
        request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        self.assertIn(
            b"Strict-Transport-Security: max-age=300\r\n",
            Connection(site, secure=True).send(request),
        )
        self.assertNotIn(b"Strict-Transport", Connection(site).send(request))
        site, _ = makeSite()
        self.assertNotIn(
            b"Strict-Transport", Connection(site, secure=True).send(request)
        )

    def test_badSettings(self) -> None:
        """Limits that are not positive are refused."""
        for kw in [
            {"maxBodySize": 0},
            {"headerTimeout": -1},
            {"bodyTimeout": 0},
            {"closeGrace": 0},
            {"hsts": -5},
        ]:
            self.assertRaises(ValueError, hardenedSite, Echo(), **kw)


class Numbered(Resource):
    """
    Answers C{/n} with C{size} bytes starting with C{n}, recording each C{n}.
    """

    isLeaf = True

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.rendered: list[int] = []

    def render_GET(self, request: Any) -> bytes:
        number = int(request.path[1:])
        self.rendered.append(number)
        return (b"%08d" % (number,)).ljust(self.size, b".")


def pipelined(count: int) -> bytes:
    """
    C{count} pipelined requests for C{/0} to C{/count-1}, the last closing.
    """
    requests = [b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % (n,) for n in range(count)]
    requests[-1] = requests[-1][:-2] + b"Connection: close\r\n\r\n"
    return b"".join(requests)


def readResponses(s: socket.socket) -> list[bytes]:
    """
    Read from C{s} until the server closes; the bodies of the responses.
    """
    s.settimeout(10)
    data = bytearray()
    while chunk := s.recv(1 << 20):
        data += chunk
    bodies = []
    at = 0
    while at < len(data):
        end = data.index(b"\r\n\r\n", at) + 4
        head = bytes(data[at:end]).lower()
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        bodies.append(bytes(data[end : end + length]))
        at = end + length
    return bodies


class PipeliningTests(TestCase):
    """
    Pipelined requests over real sockets: a client that never reads is not
    read from either, and one that reads gets every answer, in order.
    """

    size = 100_000

    def listen(self) -> tuple[Numbered, HardenedSite, int]:
        resource = Numbered(self.size)
        site = hardenedSite(resource)
        tcp: Any = reactor
        port = tcp.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(site.closeConnections, abortAfter=0)
        self.addCleanup(port.stopListening)
        return resource, site, port.getHost().port

    @inlineCallbacks
    def test_clientNotReading(self) -> Any:
        """300 pipelined 100 KB answers never read: the server stops after a few."""
        resource, site, port = self.listen()
        s = socket.socket()
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        while not site.channels:
            yield deferLater(reactor, 0.01, lambda: None)
        # Small kernel buffers on both sides, so that what the server queues
        # is what it produced: Linux would otherwise take a few megabytes.
        [channel] = site.channels
        transport: Any = channel.transport
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.sendall(pipelined(300))
        for _ in range(10):
            yield deferLater(reactor, 0.05, lambda: None)
        # Twisted served all 300 at once, queueing 30 MB for this socket.
        self.assertLessEqual(len(resource.rendered), 3)
        # Reading lets it go on: every answer arrives, in order.
        bodies = yield deferToThread(readResponses, s)
        self.assertEqual(
            [int(b[:8]) for b in bodies if len(b) == self.size], list(range(300))
        )

    @inlineCallbacks
    def test_pipelinedInOrder(self) -> Any:
        """200 pipelined 100 KB answers read as they come arrive whole, in order."""
        resource, _, port = self.listen()

        def exchange() -> list[bytes]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(pipelined(200))
                return readResponses(s)

        bodies = yield deferToThread(exchange)
        self.assertEqual(
            [(int(b[:8]), len(b)) for b in bodies],
            [(n, self.size) for n in range(200)],
        )
        self.assertEqual(resource.rendered, list(range(200)))


class AccessLogTests(SynchronousTestCase):
    """
    Requests are logged in the combined format, in batches.
    """

    def test_batched(self) -> None:
        """Lines are written once a second in one write, in combined format."""
        clock = Clock()
        clock.advance(1700000000)
        writes: list[str] = []
        log = AccessLog(writes.append, reactor=clock)
        site, _ = makeSite(accessLog=log)
        site.doStart()
        c = Connection(site)
        c.send(
            b'GET /a?q=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t"x\r\n'
            b"Referer: http://r/\r\n\r\n"
        )
        c.send(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(writes, [])
        clock.advance(1)
        self.assertEqual(
            writes,
            [
                '192.0.2.7 - - [14/Nov/2023:22:13:20 +0000] "GET /a?q=1 HTTP/1.1" '
                '200 12 "http://r/" "t\\"x"\n'
                '192.0.2.7 - - [14/Nov/2023:22:13:20 +0000] "GET /b HTTP/1.1" '
                '200 12 "-" "-"\n'
            ],
        )
        site.doStop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_flushOnStop(self) -> None:
        """Stopping the site writes what is pending."""
        clock = Clock()
        writes: list[str] = []
        site, _ = makeSite(accessLog=AccessLog(writes.append, reactor=clock))
        site.doStart()
        Connection(site).send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        site.doStop()
        self.assertEqual(len(writes), 1)

    def test_forgedLines(self) -> None:
        """Control bytes in logged fields are escaped: no forged log lines."""
        clock = Clock()
        writes: list[str] = []
        log = AccessLog(writes.append, reactor=clock)
        site, _ = makeSite(accessLog=log)
        Connection(site).send(
            b"GET /%0a HTTP/1.1\r\nHost: a\r\nUser-Agent: a\x1bb\r\n\r\n"
        )
        log.flush()
        self.assertEqual(writes[0].count("\n"), 1)
        self.assertIn('"a\\x1bb"', writes[0])

    def test_toPath(self) -> None:
        """A path-backed log appends lines to its file."""
        path = self.mktemp()
        log = AccessLog.toPath(path, reactor=Clock())
        site, _ = makeSite(accessLog=log)
        site.doStart()
        Connection(site).send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        site.doStop()
        with open(path) as f:
            self.assertIn('"GET / HTTP/1.1" 200', f.read())


def basic(user: str, password: str) -> bytes:
    return b"Authorization: Basic " + b64encode(f"{user}:{password}".encode()) + b"\r\n"


class BasicAuthTests(SynchronousTestCase):
    """
    L{BasicAuthResource} logs in through the portal, under the throttle.
    """

    def setUp(self) -> None:
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        self.clock = Clock()
        self.echo = Echo()
        self.resource = BasicAuthResource(
            self.echo,
            Portal(RemoteUserRealm(), [checker]),
            reactor=self.clock,
            realmName='the "realm"',
        )
        self.site, _ = makeSite(self.resource)

    def get(self, header: bytes, secure: bool = True) -> bytes:
        c = Connection(self.site, secure=secure)
        return c.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + header + b"\r\n")

    def test_success(self) -> None:
        """The right password reaches the resource with remoteUser set."""
        out = self.get(basic("alice", "secret"))
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out)
        self.assertTrue(out.endswith(b"user=alice body="))

    def test_challenge(self) -> None:
        """No credentials: 401 with a quoted Basic challenge."""
        out = self.get(b"")
        self.assertTrue(out.startswith(b"HTTP/1.1 401 "), out)
        self.assertIn(
            b'WWW-Authenticate: Basic realm="the \\"realm\\"", charset="UTF-8"', out
        )

    def test_wrongPassword(self) -> None:
        """A wrong password: 401, and the resource is never rendered."""
        out = self.get(basic("alice", "nope"))
        self.assertTrue(out.startswith(b"HTTP/1.1 401 "), out)
        self.assertEqual(self.echo.rendered, [])

    def test_cleartextRefused(self) -> None:
        """Over cleartext, Basic is refused with 403 unless allowed."""
        out = self.get(basic("alice", "secret"), secure=False)
        self.assertTrue(out.startswith(b"HTTP/1.1 403 "), out)
        self.resource.allowPlaintextAuth = True
        out = self.get(basic("alice", "secret"), secure=False)
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out)

    def test_throttled(self) -> None:
        """After a failure the next login waits; the seventh on a connection fails."""
        c = Connection(self.site, secure=True)
        out = c.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + basic("alice", "x") + b"\r\n")
        self.assertIn(b"401", out.split(b"\r\n")[0])
        c.transport.clear()
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + basic("alice", "secret") + b"\r\n")
        self.assertEqual(c.transport.value(), b"")
        self.clock.advance(1)
        self.assertTrue(c.transport.value().startswith(b"HTTP/1.1 200 "))
        for _ in range(4):
            c.transport.clear()
            c.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + basic("bob", "x") + b"\r\n")
            self.clock.advance(60)
        c.transport.clear()
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + basic("alice", "secret") + b"\r\n")
        self.clock.advance(60)
        out = c.transport.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 401 "), out)
        self.assertIn(b"Connection: close", out)

    def test_parseBasic(self) -> None:
        """Malformed Basic headers parse to None; UTF-8 names decode."""
        self.assertEqual(
            [
                parseBasic(b"Basic " + b64encode("jos\u00e9:p:w".encode())),
                parseBasic(b"Basic !!!"),
                parseBasic(b"Basic " + b64encode(b"nocolon")),
                parseBasic(b"Bearer x"),
                parseBasic(b"Basic " + b64encode(b"\xff:x")),
            ],
            [("jos\u00e9", "p:w"), None, None, None, None],
        )
