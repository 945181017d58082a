"""
Tests for L{netplugins.httpbin} and L{netplugins.tap.httpbin} without sockets:
requests written into the hardened site's channel over a L{StringTransport},
time on a L{Clock}.  The client suite and real sockets are in
L{tests.test_httpbin_clients}.
"""

from __future__ import annotations

import io
import json
from http.client import HTTPResponse
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.base import DelayedCall
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from netplugins.httpbin import ROUTES, httpbinResource
from netplugins.httpbin.auth import NONCE_LIFETIME, expectedResponse, parseDigest
from netplugins.httpbin.cookies import quoteValue, unquoteValue
from netplugins.httpbin.dynamic import requestedRange
from netplugins.httpbin.redirects import checkedLocation
from netplugins.httpbin.routing import Context, HttpbinError, Router, route
from netplugins.service import ListeningService
from netplugins.tap.httpbin import (
    DEFAULT_LISTEN,
    HTTPBinSettings,
    Options,
    makeService,
)
from netplugins.web.accesslog import AccessLog
from netplugins.web.http import hardenedSite

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class _Socket:
    def __init__(self, data: bytes):
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


def parse(data: bytes, method: str = "GET") -> tuple[HTTPResponse, bytes]:
    """
    The first response in C{data}, parsed by the standard library's client.
    """
    response = HTTPResponse(_Socket(data), method=method)  # type: ignore[arg-type]
    response.begin()
    return response, response.read()


class Server:
    """
    np-httpbin on a fake clock, with connections over string transports.
    """

    def __init__(self, resource: Any = None, **kwargs: Any):
        self.clock = Clock()
        if resource is None:
            resource = httpbinResource(reactor=self.clock, **kwargs)
        self.site = hardenedSite(resource, reactor=self.clock)

    def connect(self) -> tuple[Any, StringTransport]:
        channel = self.site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        return channel, transport

    def send(self, raw: bytes) -> tuple[Any, StringTransport]:
        channel, transport = self.connect()
        channel.dataReceived(raw)
        return channel, transport

    def get(
        self, path: str, method: str = "GET", headers: str = "", body: bytes = b""
    ) -> tuple[HTTPResponse, bytes]:
        raw = (
            f"{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        _, transport = self.send(raw)
        return parse(transport.value(), method)


class EchoTests(SynchronousTestCase):
    """
    Request echo endpoints describe the request in httpbin's shapes.
    """

    def test_getShape(self) -> None:
        """/get shows args (repeated names as lists), headers, origin and url."""
        _, body = Server().get("/get?a=1&a=2&b=", headers="X-Thing: yes\r\n")
        self.assertEqual(
            json.loads(body),
            {
                "args": {"a": ["1", "2"], "b": ""},
                "headers": {"Host": "test", "X-Thing": "yes", "Content-Length": "0"},
                "origin": "127.0.0.1",
                "url": "http://test/get?a=1&a=2&b=",
            },
        )

    def test_proxyHeadersHidden(self) -> None:
        """X-Forwarded-For sets the origin and is hidden unless show_env."""
        server = Server()
        forwarded = "X-Forwarded-For: 10.1.2.3\r\n"
        hidden = json.loads(server.get("/get", headers=forwarded)[1])
        shown = json.loads(server.get("/get?show_env=1", headers=forwarded)[1])
        self.assertEqual(
            (
                hidden["origin"],
                "X-Forwarded-For" in hidden["headers"],
                shown["headers"]["X-Forwarded-For"],
            ),
            ("10.1.2.3", False, "10.1.2.3"),
        )

    def test_multipartBinaryFile(self) -> None:
        """A binary multipart file is a data URL with the part's content type."""
        body = (
            b'--XX\r\nContent-Disposition: form-data; name="f"; filename="a.bin"'
            b"\r\nContent-Type: image/png\r\n\r\n\x89PNG\xff\r\n"
            b'--XX\r\nContent-Disposition: form-data; name="t"\r\n\r\nhi\r\n'
            b"--XX--\r\n"
        )
        _, data = Server().get(
            "/post", "POST", "Content-Type: multipart/form-data; boundary=XX\r\n", body
        )
        shown = json.loads(data)
        self.assertEqual(
            (shown["files"], shown["form"], shown["data"], shown["json"]),
            ({"f": "data:image/png;base64,iVBOR/8="}, {"t": "hi"}, "", None),
        )

    def test_deepJSON(self) -> None:
        """JSON nested too deep to echo shows as data with json null, not a 500."""
        payload = b"[" * 100000 + b"]" * 100000
        response, data = Server().get(
            "/post", "POST", "Content-Type: application/json\r\n", payload
        )
        self.assertEqual((response.status, json.loads(data)["json"]), (200, None))

    def test_headAndOptions(self) -> None:
        """HEAD has GET's length and no body; OPTIONS lists the methods."""
        server = Server()
        _, getBody = server.get("/json")
        head, headBody = server.get("/json", "HEAD")
        options, _ = server.get("/post", "OPTIONS")
        self.assertEqual(
            (head.getheader("Content-Length"), headBody, options.getheader("Allow")),
            (str(len(getBody)), b"", "OPTIONS, POST"),
        )

    def test_wrongMethodAndUnknownPath(self) -> None:
        """A method an endpoint does not take is 405 with Allow; unknown paths 404."""
        server = Server()
        wrong, _ = server.get("/get", "POST")
        missing, _ = server.get("/nowhere")
        self.assertEqual(
            (wrong.status, wrong.getheader("Allow"), missing.status),
            (405, "GET, HEAD, OPTIONS", 404),
        )

    def test_statusCodes(self) -> None:
        """Codes outside 200-599, bad weights and non-numbers are 400."""
        server = Server()
        codes = [
            server.get(f"/status/{codes}")[0].status
            for codes in ["99", "600", "1000", "200:-1", "200:0", "abc", "201,x"]
        ]
        self.assertEqual(codes, [400] * 7)

    def test_internalError(self) -> None:
        """An endpoint's exception is logged and answered by a bare 500."""

        def broken(context: Context, request: Any) -> bytes:
            raise RuntimeError("secret detail")

        clock = Clock()
        server = Server(Router({"x": route(broken)}, Context(reactor=clock)))
        response, body = server.get("/x")
        self.assertEqual((response.status, body), (500, b"Internal Server Error"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


def drips(transport: StringTransport) -> int:
    """
    How many drips have arrived (asterisks after the response head).
    """
    return transport.value().partition(b"\r\n\r\n")[2].count(b"*")


class DelayTests(SynchronousTestCase):
    """
    Waits are reactor timers, capped and cancelled with their connection.
    """

    def test_delay(self) -> None:
        """/delay/3 answers after three seconds, not before."""
        server = Server()
        _, transport = server.send(b"GET /delay/3 HTTP/1.1\r\nHost: t\r\n\r\n")
        server.clock.advance(2.9)
        before = transport.value()
        server.clock.advance(0.2)
        response, body = parse(transport.value())
        self.assertEqual(
            (before, response.status, json.loads(body)["url"]),
            (b"", 200, "http://t/delay/3"),
        )

    def test_delayCapped(self) -> None:
        """/delay/1e9 answers after ten seconds."""
        server = Server()
        _, transport = server.send(b"GET /delay/1e9 HTTP/1.1\r\nHost: t\r\n\r\n")
        server.clock.advance(9.9)
        before = transport.value()
        server.clock.advance(0.1)
        self.assertEqual((before, parse(transport.value())[0].status), (b"", 200))

    def test_delayCancelled(self) -> None:
        """A client leaving during /delay cancels its timer."""
        server = Server()
        channel, _ = server.send(b"GET /delay/5 HTTP/1.1\r\nHost: t\r\n\r\n")
        ticks = [
            c
            for c in server.clock.getDelayedCalls()
            if isinstance(c, DelayedCall) and c.func.__name__ == "_tick"
        ]
        channel.connectionLost(Exception("gone"))
        self.assertEqual([(c.cancelled, c.active()) for c in ticks], [(1, False)])

    def test_dripIncremental(self) -> None:
        """/drip writes its bytes over the duration, one drip at a time."""
        server = Server()
        _, transport = server.send(
            b"GET /drip?numbytes=4&duration=2 HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        server.clock.advance(0)
        seen = []
        for _ in range(4):
            server.clock.advance(0.5)
            seen.append(drips(transport))
        self.assertEqual(seen, [2, 3, 4, 4])

    def test_dripPausedByFullBuffer(self) -> None:
        """While the transport pauses the channel, /drip writes nothing."""
        server = Server()
        channel, transport = server.send(
            b"GET /drip?numbytes=4&duration=1 HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        server.clock.advance(0)
        channel.pauseProducing()
        before = drips(transport)
        server.clock.advance(5)
        during = drips(transport)
        channel.resumeProducing()
        server.clock.pump([0.25] * 20)
        self.assertEqual((before, during, drips(transport)), (1, 1, 4))

    def test_streamCapped(self) -> None:
        """/stream/1000 sends 100 lines, numbered from 0."""
        server = Server()
        _, transport = server.send(b"GET /stream/1000 HTTP/1.1\r\nHost: t\r\n\r\n")
        server.clock.advance(0)
        _, body = parse(transport.value())
        ids = [json.loads(line)["id"] for line in body.splitlines()]
        self.assertEqual(ids, list(range(100)))


class SafetyTests(SynchronousTestCase):
    """
    Inputs that must not become injections.
    """

    def test_redirectTargets(self) -> None:
        """Scripts, data URLs and control characters are refused; URLs pass."""
        refused = []
        for url in [
            "javascript:x",
            "JAVASCRIPT:x",
            " javascript:x",
            "data:,x",
            "vbscript:x",
            "/a\r\nb",
            "/a\nb",
            "/a\x00",
        ]:
            try:
                checkedLocation(url)
            except HttpbinError as e:
                refused.append(e.code)
        allowed = [checkedLocation(u) for u in ["/get", "https://example.com/x"]]
        self.assertEqual(
            (refused, allowed), ([400] * 8, ["/get", "https://example.com/x"])
        )

    def test_responseHeaders(self) -> None:
        """CR/LF or a bad name is 400; otherwise the body states its own length."""
        server = Server()
        bad = [
            server.get(f"/response-headers?{q}")[0].status
            for q in ["A=1%0d%0aB:2", "A%0a=1", "A%20B=1"]
        ]
        good, body = server.get("/response-headers?X-One=1")
        self.assertEqual(
            (bad, json.loads(body)["Content-Length"], good.getheader("X-One")),
            ([400, 400, 400], str(len(body)), "1"),
        )

    def test_responseFramingHeaders(self) -> None:
        """Framing and connection headers asked for in the query are 400."""
        server = Server()
        statuses = [
            server.get(f"/response-headers?{q}")[0].status
            for q in [
                "Transfer-Encoding=chunked",
                "Content-Length=0",
                "content-length=5",
                "Connection=close",
                "Keep-Alive=timeout%3D5",
                "Trailer=X",
                "TE=trailers",
                "Upgrade=h2c",
                "Proxy-Connection=close",
                "X-Fine=1&TRANSFER-ENCODING=gzip",
                "Content-Type=text/plain",
            ]
        ]
        self.assertEqual(statuses, [400] * 10 + [200])

    def test_cookieQuoting(self) -> None:
        """Values with separators or non-ASCII are quoted and read back."""
        values = ["plain", "a b;c", 'quote"back\\', "caf\u00e9", ""]
        quoted = [quoteValue(v) for v in values]
        self.assertEqual(
            ([unquoteValue(q) for q in quoted], [";" in q[1:-1] for q in quoted]),
            (values, [False, True, False, False, False]),
        )

    def test_cookieNameRefused(self) -> None:
        """A cookie name that is no token is 400."""
        response, _ = Server().get("/cookies/set?a%3Db=1")
        self.assertEqual(response.status, 400)


class RangeTests(SynchronousTestCase):
    """
    Range headers, single ranges only.
    """

    def test_requestedRange(self) -> None:
        """Ranges parse as RFC 9110 says; unusable headers mean the whole body."""
        cases = [
            "bytes=0-9",
            "bytes=5-",
            "bytes=-3",
            "bytes=90-200",
            "items=1-2",
            "bytes=1-2,4-5",
            "bytes=x-y",
            None,
        ]
        self.assertEqual(
            [requestedRange(c, 100) for c in cases],
            [(0, 9), (5, 99), (97, 99), (90, 99), None, None, None, None],
        )

    def test_unsatisfiable(self) -> None:
        """A start past the end, or an empty suffix, cannot be satisfied."""
        for header in ["bytes=100-", "bytes=-0", "bytes=5-4"]:
            self.assertRaises(ValueError, requestedRange, header, 100)


class DigestTests(SynchronousTestCase):
    """
    Digest nonces are this server's and expire.
    """

    def login(self, server: Server, nonce: str) -> HTTPResponse:
        uri = "/digest-auth/auth/u/p"
        credentials = {
            "username": "u",
            "realm": "np-httpbin",
            "nonce": nonce,
            "nc": "00000001",
            "cnonce": "c",
            "qop": "auth",
        }
        answer = expectedResponse(credentials, "p", "GET", uri, b"", "MD5")
        header = ", ".join(f'{k}="{v}"' for k, v in credentials.items())
        return server.get(
            uri,
            headers=f'Authorization: Digest {header}, uri="{uri}", '
            f'response="{answer}"\r\n',
        )[0]

    def challenge(self, server: Server) -> dict[str, str]:
        response, _ = server.get("/digest-auth/auth/u/p")
        parsed = parseDigest(response.getheader("WWW-Authenticate") or "")
        assert parsed is not None
        return parsed

    def test_login(self) -> None:
        """The right response to this server's nonce logs in."""
        server = Server()
        nonce = self.challenge(server)["nonce"]
        self.assertEqual(self.login(server, nonce).status, 200)

    def test_foreignOrOldNonce(self) -> None:
        """Another server's nonce, or an expired one, gets a stale challenge."""
        server = Server()
        nonce = self.challenge(server)["nonce"]
        foreign = self.login(server, self.challenge(Server())["nonce"])
        server.clock.advance(NONCE_LIFETIME + 1)
        old = self.login(server, nonce)
        self.assertEqual(
            [
                (r.status, "stale=TRUE" in (r.getheader("WWW-Authenticate") or ""))
                for r in (foreign, old)
            ],
            [(401, True), (401, True)],
        )


class OptionsTests(SynchronousTestCase):
    """
    The command line and the service it makes.
    """

    def test_defaults(self) -> None:
        """Without options: port 8000 on 127.0.0.1, 10 s delays, log to twistd."""
        options = Options()
        options.parseOptions([])
        self.assertEqual(
            (options.settings, options.common.listen),
            (
                HTTPBinSettings(maxDelay=10.0, accessLog="-", allowPlaintextAuth=False),
                (),
            ),
        )

    def test_badMaxDelay(self) -> None:
        """A max delay that is not a positive number is a usage error."""
        from twisted.python.usage import UsageError

        self.assertRaises(UsageError, Options().parseOptions, ["--max-delay", "0"])

    def test_makeService(self) -> None:
        """makeService listens on the default endpoint."""
        options = Options()
        options.parseOptions(["--access-log", "none"])
        reactor = MemoryReactorClock()
        service = makeService(options, reactor=reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(8000, "127.0.0.1")],
        )
        self.assertEqual(DEFAULT_LISTEN, ("tcp:8000:interface=127.0.0.1",))

    def test_deadlines(self) -> None:
        """--body-timeout and --close-grace reach the site the service serves."""
        options = Options()
        options.parseOptions(
            ["--access-log", "none", "--body-timeout", "5", "--close-grace", "2"]
        )
        service = makeService(options, reactor=MemoryReactorClock())
        sites, stack = [], [service]
        while stack:
            child: Any = stack.pop()
            if isinstance(child, ListeningService):
                sites.append(child.factory)
            stack.extend(getattr(child, "services", []))
        self.assertEqual(
            [(site.bodyTimeout, site.closeGrace) for site in sites], [(5.0, 2.0)]
        )

    def test_sharedAccessLog(self) -> None:
        """An access log made already is the one the site writes to."""
        log = AccessLog(lambda lines: None, reactor=Clock())
        site = HTTPBinSettings(accessLog="none", sharedAccessLog=log).site(
            httpbinResource(reactor=Clock()), reactor=Clock()
        )
        self.assertIs(site.accessLog, log)

    def test_everyEndpointRouted(self) -> None:
        """The issue's endpoint list is all routed."""
        wanted = (
            "get post put patch delete anything headers ip user-agent uuid status "
            "redirect relative-redirect absolute-redirect redirect-to cookies "
            "basic-auth hidden-basic-auth bearer digest-auth delay drip stream "
            "stream-bytes bytes range gzip deflate brotli encoding html json xml "
            "robots.txt deny base64 cache etag response-headers links image forms "
            "tls protected"
        ).split()
        self.assertEqual([name for name in wanted if name not in ROUTES], [])
