"""
np-httpbin over real sockets with clients nobody here wrote: the requests
suite of L{tests.httpbinsuite} (written for httpbin, given only a base URL),
curl over HTTP and TLS (with a client certificate for C{/tls}), and the caps
and safety cases a public test service needs.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import requests
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.internet.tcp import Server
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from netplugins.cred.htpasswd import hashPassword
from netplugins.service import ListeningService
from netplugins.tap.httpbin import HTTPBinSettings, httpbinService
from tests.httpbinsuite import TIMEOUT, HttpbinClientSuite
from tests.pki import PKI


def inThreads(cls: type) -> type:
    """
    Make every blocking C{test_*} method of C{cls} run in the reactor's thread
    pool, so the server under test keeps running on the reactor meanwhile.
    """
    for name in dir(cls):
        if name.startswith("test_"):
            method = getattr(cls, name)

            def threaded(self: Any, method: Callable[[Any], None] = method) -> Any:
                return deferToThread(method, self)

            setattr(cls, name, functools.wraps(method)(threaded))
    return cls


async def connectionsClosed(ports: list[int]) -> None:
    """
    Wait until the server ends of connections to C{ports} are gone: clients
    close their sockets before the reactor has read the end of them.
    """
    from twisted.internet import reactor

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        open_ = [
            r
            for r in reactor.getReaders()  # type: ignore[attr-defined]
            if isinstance(r, Server) and r.getHost().port in ports
        ]
        if not open_:
            return
        await deferLater(reactor, 0.01)
    for r in open_:
        r.loseConnection()


def startService(case: TestCase, **kwargs: Any) -> list[int]:
    """
    Start np-httpbin for C{case} with C{HTTPBinSettings(**kwargs)}; the ports
    it listens on.
    """
    kwargs.setdefault("listen", ("tcp:0:interface=127.0.0.1",))
    kwargs.setdefault("accessLog", "none")
    service = httpbinService(HTTPBinSettings(**kwargs))
    service.startService()
    ports = [
        s.port.getHost().port  # type: ignore[union-attr]
        for s in service
        if isinstance(s, ListeningService)
    ]
    case.addCleanup(connectionsClosed, ports)
    case.addCleanup(service.stopService)
    return ports


def startHttpbin(case: TestCase, **kwargs: Any) -> int:
    """
    Start np-httpbin for C{case}; the port of its first listener.
    """
    return startService(case, **kwargs)[0]


@inThreads
class RequestsAgainstNpHttpbin(HttpbinClientSuite, TestCase):
    """
    The httpbin client suite against np-httpbin.
    """

    def setUp(self) -> None:
        self.baseURL = f"http://127.0.0.1:{startHttpbin(self)}"


if os.environ.get("HTTPBIN_URL"):

    @inThreads
    class RequestsAgainstGivenURL(HttpbinClientSuite, TestCase):
        """
        The same suite against the httpbin at C{$HTTPBIN_URL}.
        """

        baseURL = os.environ["HTTPBIN_URL"].rstrip("/")


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    """
    Run Debian's curl, silent but for errors, with a deadline.
    """
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", str(TIMEOUT), *args],
        capture_output=True,
        timeout=TIMEOUT + 5,
        check=False,
    )


class CapsAndSafetyTests(TestCase):
    """
    What clients cannot make np-httpbin do, over a real socket.
    """

    def setUp(self) -> None:
        # A short cap keeps the cap tests short; the default is pinned in
        # tests.test_httpbin with a fake clock.
        self.base = f"http://127.0.0.1:{startHttpbin(self, maxDelay=1.5)}"

    def get(self, path: str, **kwargs: Any) -> Deferred[requests.Response]:
        kwargs.setdefault("timeout", TIMEOUT)
        return deferToThread(requests.get, self.base + path, **kwargs)

    async def test_javascriptRedirect(self) -> None:
        """/redirect-to refuses javascript:, data: and CR/LF targets with 400."""
        for target in [
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "/get\r\nSet-Cookie: evil=1",
        ]:
            r = await self.get(
                "/redirect-to", params={"url": target}, allow_redirects=False
            )
            self.assertEqual(
                (target, r.status_code, "Location" in r.headers), (target, 400, False)
            )

    async def test_responseHeaderInjection(self) -> None:
        """CR/LF in a /response-headers name or value is 400, no header sent."""
        for query in [
            "X-A=1%0d%0aSet-Cookie:%20evil=1",
            "X-A%0d%0aEvil=1",
            "X-A=1%0aEvil:%201",
        ]:
            r = await self.get("/response-headers?" + query)
            self.assertEqual(
                (query, r.status_code, "evil" in str(r.headers).lower()),
                (query, 400, False),
            )

    async def test_hugeDelay(self) -> None:
        """/delay/1e9 is capped: it answers after the longest delay, 1.5 s here."""
        started = time.monotonic()
        r = await self.get("/delay/1e9")
        self.assertEqual(r.status_code, 200)
        self.assertLess(time.monotonic() - started, 5)

    async def test_hugeBytes(self) -> None:
        """/bytes/1e12 is 404 (not a number), /bytes/10**12 is capped at 100 KiB."""
        notNumber = await self.get("/bytes/1e12")
        capped = await self.get("/bytes/1000000000000")
        self.assertEqual(
            (notNumber.status_code, capped.status_code, len(capped.content)),
            (404, 200, 100 * 1024),
        )

    async def test_badParameters(self) -> None:
        """Nonsense parameters get 400 or 404, never 500."""
        codes = []
        for path in [
            "/delay/abc",
            "/delay/nan",
            "/drip?numbytes=x",
            "/drip?duration=inf",
            "/status/abc",
            "/stream/-1",
            "/range/0",
            "/bytes/1?seed=x",
            "/links/x/y",
            "/redirect/0",
            "/digest-auth/auth/u",
        ]:
            codes.append((path, (await self.get(path)).status_code))
        self.assertEqual([(p, c) for p, c in codes if c not in (400, 404)], [])

    async def test_delaysDoNotBlock(self) -> None:
        """Two concurrent /delay/1 requests finish together in about a second."""
        started = time.monotonic()
        answers = await gatherResults([self.get("/delay/1"), self.get("/delay/1")])
        elapsed = time.monotonic() - started
        self.assertEqual([r.status_code for r in answers], [200, 200])
        self.assertLess(elapsed, 1.9)

    async def test_hugeDrip(self) -> None:
        """/drip's duration and delay are capped at the longest delay each."""
        started = time.monotonic()
        r = await self.get("/drip?numbytes=3&duration=1e9&delay=1e9")
        self.assertEqual(r.content, b"***")
        self.assertLess(time.monotonic() - started, 8)


class CurlTests(TestCase):
    """
    curl against np-httpbin, in the clear and over TLS.
    """

    async def test_getAndGzip(self) -> None:
        """curl gets /get and decodes /gzip with --compressed."""
        port = startHttpbin(self)
        plain = await deferToThread(curl, f"http://127.0.0.1:{port}/get?x=1")
        zipped = await deferToThread(
            curl, "--compressed", f"http://127.0.0.1:{port}/gzip"
        )
        self.assertEqual(json.loads(plain.stdout)["args"], {"x": "1"})
        self.assertEqual(json.loads(zipped.stdout)["gzipped"], True)

    async def test_redirectsAndCookies(self) -> None:
        """curl follows /redirect/2 and keeps cookies in a jar."""
        port = startHttpbin(self)
        base = f"http://127.0.0.1:{port}"
        followed = await deferToThread(curl, "-L", f"{base}/redirect/2")
        jar = os.path.join(self.mktemp())
        await deferToThread(curl, "-c", jar, f"{base}/cookies/set?k=v")
        sent = await deferToThread(curl, "-b", jar, f"{base}/cookies")
        self.assertEqual(json.loads(followed.stdout)["url"], f"{base}/get")
        self.assertEqual(json.loads(sent.stdout), {"cookies": {"k": "v"}})

    async def test_chunkedUpload(self) -> None:
        """curl's chunked upload arrives whole."""
        port = startHttpbin(self)
        r = await deferToThread(
            curl,
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "a=1&b=2",
            f"http://127.0.0.1:{port}/post",
        )
        self.assertEqual(json.loads(r.stdout)["form"], {"a": "1", "b": "2"})

    async def test_tlsClientCertificate(self) -> None:
        """Over TLS, /tls shows the version, SNI name and client certificate."""
        pki = PKI(self.mktemp())
        cert, key = pki.serverCertificate("localhost")
        clientCert, clientKey = pki.clientCertificate("alice")
        port = startHttpbin(
            self,
            listen=(),
            listenTLS=("tcp:0:interface=127.0.0.1",),
            tlsCert=(cert,),
            tlsKey=(key,),
            tlsClientCA=pki.caPath,
            tlsClientCert="optional",
            stateDir=self.mktemp(),
        )
        url = f"https://localhost:{port}/tls"
        resolve = f"localhost:{port}:127.0.0.1"
        withCert = await deferToThread(
            curl,
            "--cacert",
            pki.caPath,
            "--resolve",
            resolve,
            "--cert",
            clientCert,
            "--key",
            clientKey,
            url,
        )
        anonymous = await deferToThread(
            curl, "--cacert", pki.caPath, "--resolve", resolve, url
        )
        shown = json.loads(withCert.stdout)
        self.assertEqual(
            (shown["tls"], shown["sni"], shown["client_certificate"]),
            (True, "localhost", "alice"),
        )
        self.assertIn(shown["version"], ("TLSv1.2", "TLSv1.3"))
        self.assertIsNone(json.loads(anonymous.stdout)["client_certificate"])

    async def test_protected(self) -> None:
        """/protected checks the --auth checkers over TLS and refuses cleartext."""
        pki = PKI(self.mktemp())
        cert, key = pki.serverCertificate("localhost")
        users = self.mktemp()
        with open(users, "w") as f:
            f.write(f"alice:{hashPassword('wonderland')}\n")
        plainPort, tlsPort = startService(
            self,
            listenTLS=("tcp:0:interface=127.0.0.1",),
            tlsCert=(cert,),
            tlsKey=(key,),
            auth=(f"htpasswd:{users}",),
            stateDir=self.mktemp(),
        )
        resolve = f"localhost:{tlsPort}:127.0.0.1"
        url = f"https://localhost:{tlsPort}/protected"
        good = await deferToThread(
            curl,
            "--cacert",
            pki.caPath,
            "--resolve",
            resolve,
            "-u",
            "alice:wonderland",
            url,
        )
        bad = await deferToThread(
            curl,
            "--cacert",
            pki.caPath,
            "--resolve",
            resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            "alice:rabbit",
            url,
        )
        clear = await deferToThread(
            curl,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            "alice:wonderland",
            f"http://127.0.0.1:{plainPort}/protected",
        )
        self.assertEqual(
            (json.loads(good.stdout), bad.stdout, clear.stdout),
            ({"authenticated": True, "user": "alice"}, b"401", b"403"),
        )
