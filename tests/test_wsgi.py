"""
Tests for L{netplugins.wsgi} and L{netplugins.tap.wsgi}: np-wsgi with real
clients (requests, curl, raw sockets) on 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Any

import flask
import requests
from flask import Flask
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.cred.htpasswd import hashPassword
from netplugins.examples import pathdispatch
from netplugins.service import listeningPorts
from netplugins.tap.wsgi import Options, WSGISettings, wsgiService
from netplugins.wsgi import WSGIService, loadApplication, parseStatic
from tests.pki import PKI

flaskApp = Flask(__name__)
release = threading.Event()


@flaskApp.route("/whoami")
def whoami() -> dict[str, Any]:
    env = flask.request.environ
    return {
        "user": env.get("REMOTE_USER"),
        "port": env["REMOTE_PORT"],
        "scheme": env["wsgi.url_scheme"],
        "authorization": env.get("HTTP_AUTHORIZATION"),
    }


@flaskApp.route("/upload", methods=["POST"])
def upload() -> dict[str, Any]:
    return {"length": len(flask.request.get_data())}


@flaskApp.route("/slow")
def slow() -> str:
    release.wait(10)
    return "finished"


class OptionsTests(SynchronousTestCase):
    """
    The command line parses into settings, and bad values are one-line errors.
    """

    def test_parse(self) -> None:
        """--app, --threads and --static give the settings; the app is loaded."""
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        config = Options()
        config.parseOptions(
            [
                "--app",
                "netplugins.examples.pathdispatch:app",
                "--threads",
                "3",
                "--static",
                f"/assets/={directory}",
            ]
        )
        self.assertEqual(
            config.settings,
            WSGISettings(
                app="netplugins.examples.pathdispatch:app",
                application=pathdispatch.app,
                threads=3,
                static=(f"/assets/={directory}",),
            ),
        )

    def test_badValues(self) -> None:
        """Missing or unloadable --app and bad --static are UsageErrors."""
        app = ["--app", "netplugins.examples.pathdispatch:app"]
        for argv in [
            [],
            ["--app", "nosuch.module:app"],
            ["--app", "netplugins.examples.pathdispatch"],
            ["--app", "netplugins.examples.pathdispatch:nope"],
            [*app, "--static", "/x=/nonexistent"],
            [*app, "--static", "/../=/tmp"],
            [*app, "--static", "=/tmp"],
            ["--static", "/=/nonexistent"],
            [*app, "--threads", "0"],
        ]:
            self.assertRaises(usage.UsageError, Options().parseOptions, argv)

    def test_loaders(self) -> None:
        """Dotted attributes load; prefixes are normalised."""
        self.assertIs(
            loadApplication("tests.test_wsgi:flaskApp.wsgi_app").__func__,  # type: ignore[attr-defined]
            Flask.wsgi_app,
        )
        self.assertEqual(
            (parseStatic("a/b/=/")[0], parseStatic("/=/"), parseStatic("//=/")[0]),
            ("/a/b", ("/", "/"), "/"),
        )


#: Foundations of Python Network Programming, ch. 11, rscrape1.py as printed;
#: it crawls a small site like the book's tinysite (L{writeTinySite}).
BOOK_RSCRAPE1 = """#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter11/rscrape1.py
# Recursive scraper built using the Requests library.

import argparse, requests
from urllib.parse import urljoin, urlsplit
from lxml import etree

def GET(url):
    response = requests.get(url)
    if response.headers.get('Content-Type', '').split(';')[0] != 'text/html':
        return
    text = response.text
    try:
        html = etree.HTML(text)
    except Exception as e:
        print('    {}: {}'.format(e.__class__.__name__, e))
        return
    links = html.findall('.//a[@href]')
    for link in links:
        yield GET, urljoin(url, link.attrib['href'])

def scrape(start, url_filter):
    further_work = {start}
    already_seen = {start}
    while further_work:
        call_tuple = further_work.pop()
        function, url, *etc = call_tuple
        print(function.__name__, url, *etc)
        for call_tuple in function(url, *etc):
            if call_tuple in already_seen:
                continue
            already_seen.add(call_tuple)
            function, url, *etc = call_tuple
            if not url_filter(url):
                continue
            further_work.add(call_tuple)

def main(GET):
    parser = argparse.ArgumentParser(description='Scrape a simple site.')
    parser.add_argument('url', help='the URL at which to begin')
    start_url = parser.parse_args().url
    starting_netloc = urlsplit(start_url).netloc
    url_filter = (lambda url: urlsplit(url).netloc == starting_netloc)
    scrape((GET, start_url), url_filter)

if __name__ == '__main__':
    main(GET)
"""


def writeTinySite(directory: str) -> str:
    """
    A small static site of the book's tinysite's shape, written here: an
    index linking two pages in its HTML, one reached only through a form and
    one only through JavaScript (which a scraper without them never finds).
    """
    pages = {
        "index.html": (
            "<html><head><title>Index</title></head><body>"
            '<p><a href="/page1.html">page 1</a> and <a href="/page2.html">page 2</a>'
            '<form action="/search.html"><input name="q" type="hidden" value="A">'
            "</form><script>fetch('/further.html')</script></body></html>"
        ),
        "page1.html": "<html><body><p>Page 1</p></body></html>",
        "page2.html": '<html><body><p>Page 2, <a href="/">home</a></p></body></html>',
        "search.html": "<html><body><p>Found it.</p></body></html>",
        "further.html": "<html><body><p>Later.</p></body></html>",
    }
    os.makedirs(directory)
    for name, text in pages.items():
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)
    return directory


def recordingApp(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """
    A WSGI application answering every request with its C{PATH_INFO}.
    """
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app " + environ["PATH_INFO"].encode("latin-1")]


class ServedTests(TestCase):
    """
    np-wsgi serving over real sockets.
    """

    def serve(self, app: Any = flaskApp, tls: bool = False, **kw: Any) -> str:
        settings: dict[str, Any] = {"accessLog": None}
        if tls:
            pki = PKI(self.mktemp())
            cert, key = pki.serverCertificate("localhost", "127.0.0.1")
            self.caPath = pki.caPath
            settings.update(
                listenTLS=("tcp:0:interface=127.0.0.1",), tlsCert=(cert,), tlsKey=(key,)
            )
        else:
            settings["listen"] = ("tcp:0:interface=127.0.0.1",)
        settings.update(kw)
        service = wsgiService(
            WSGISettings(application=app, stateDir=self.mktemp(), **settings)
        )
        assert isinstance(service, WSGIService)
        self.service = service
        self.service.startService()
        self.addCleanup(self._stop)
        [(_, address, _)] = listeningPorts(self.service)
        self.port = address.port
        scheme = "https" if tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _stop(self) -> Any:
        release.set()
        if self.service.running:
            return self.service.stopService()
        return None

    @inlineCallbacks
    def test_pathDispatcher(self) -> Any:
        """The Cookbook app answers /hello (escaped) and /localtime, 404 otherwise."""
        base = self.serve(pathdispatch.app)
        hello = yield deferToThread(requests.get, base + "/hello?name=<Guido>")
        clock = yield deferToThread(requests.get, base + "/localtime")
        missing = yield deferToThread(requests.get, base + "/nope")
        self.assertIn("<h1>Hello &lt;Guido&gt;!</h1>", hello.text)
        self.assertTrue(clock.text.startswith('<?xml version="1.0"?>\n<time>'))
        self.assertEqual(missing.status_code, 404)

    @inlineCallbacks
    def test_keepAlive(self) -> Any:
        """A requests Session reuses one connection for several requests."""
        base = self.serve()

        def twice() -> list[Any]:
            with requests.Session() as s:
                return [s.get(base + "/whoami").json()["port"] for _ in range(3)]

        ports = yield deferToThread(twice)
        self.assertEqual(len(set(ports)), 1)

    @inlineCallbacks
    def test_chunkedUpload(self) -> Any:
        """A chunked upload from requests reaches the application whole."""
        base = self.serve()
        body = (b"x" * 1000 for _ in range(50))
        r = yield deferToThread(requests.post, base + "/upload", data=body)
        self.assertEqual(r.json(), {"length": 50000})

    @inlineCallbacks
    def test_bodyLimit(self) -> Any:
        """Over maxBodySize, curl's upload gets 413."""
        base = self.serve(maxBodySize=1000)
        out, err, code = yield _curl(
            [
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-d",
                "x" * 2000,
                base + "/upload",
            ]
        )
        self.assertEqual((out, code), (b"413", 0), err)

    @inlineCallbacks
    def test_flaskTLSLDAPAuth(self) -> Any:
        """Flask over TLS with Basic through the ldap: checker against slapd."""
        from tests.slapd import PASSWORDS, PEOPLE, sharedSlapd

        slapd = sharedSlapd()
        base = self.serve(tls=True, auth=[f"ldap:{slapd.url()}/{PEOPLE}?uid?sub"])

        def get(user: str, password: str) -> requests.Response:
            return requests.get(
                base + "/whoami", auth=(user, password), verify=self.caPath
            )

        good = yield deferToThread(get, "alice", PASSWORDS["alice"])
        bad = yield deferToThread(get, "alice", "wrong")
        unknown = yield deferToThread(get, "nobody", "x")
        self.assertEqual((good.status_code, good.json()["user"]), (200, "alice"))
        self.assertEqual((bad.status_code, unknown.status_code), (401, 401))

    @inlineCallbacks
    def test_flaskTLSBasicAuth(self) -> Any:
        """Flask over TLS with Basic via htpasswd: REMOTE_USER, no password, HSTS."""
        users = self.mktemp()
        with open(users, "w") as f:
            f.write("alice:" + hashPassword("wonderland", cost=4) + "\n")
        base = self.serve(tls=True, auth=[f"htpasswd:{users}"], hsts=600)
        good = yield deferToThread(
            requests.get,
            base + "/whoami",
            auth=("alice", "wonderland"),
            verify=self.caPath,
        )
        bad = yield deferToThread(
            requests.get, base + "/whoami", auth=("alice", "x"), verify=self.caPath
        )
        body = good.json()
        self.assertEqual(
            (good.status_code, body["user"], body["scheme"], body["authorization"]),
            (200, "alice", "https", None),
        )
        self.assertEqual(good.headers["Strict-Transport-Security"], "max-age=600")
        self.assertEqual(bad.status_code, 401)

    @inlineCallbacks
    def test_curlOverTLS(self) -> Any:
        """curl talks to np-wsgi over TLS with Basic auth, trusting the test CA."""
        users = self.mktemp()
        with open(users, "w") as f:
            f.write("bob:" + hashPassword("builder", cost=4) + "\n")
        base = self.serve(tls=True, auth=[f"htpasswd:{users}"])
        out, err, code = yield _curl(
            ["-s", "--cacert", self.caPath, "-u", "bob:builder", base + "/whoami"]
        )
        self.assertEqual(code, 0, err)
        self.assertIn(b'"user":"bob"', out.replace(b" ", b""))

    @inlineCallbacks
    def test_cleartextAuthRefused(self) -> Any:
        """Basic over plain HTTP is refused unless allowPlaintextAuth."""
        users = self.mktemp()
        with open(users, "w") as f:
            f.write("alice:" + hashPassword("wonderland", cost=4) + "\n")
        base = self.serve(auth=[f"htpasswd:{users}"])
        r = yield deferToThread(
            requests.get, base + "/whoami", auth=("alice", "wonderland")
        )
        self.assertEqual(r.status_code, 403)

    def confinedTree(self) -> str:
        """
        Make a directory to serve (returned, absolute) holding C{a.txt}, an
        empty C{sub}, a link C{link} to a file outside it and a link
        C{sub/up} to its parent, which holds C{secret.txt}.
        """
        root = os.path.abspath(self.mktemp())
        served = os.path.join(root, "pub")
        os.makedirs(os.path.join(served, "sub"))
        with open(os.path.join(served, "a.txt"), "w") as f:
            f.write("public")
        with open(os.path.join(root, "secret.txt"), "w") as f:
            f.write("secret")
        os.symlink(os.path.join(root, "secret.txt"), os.path.join(served, "link"))
        os.symlink(root, os.path.join(served, "sub", "up"))
        return served

    @inlineCallbacks
    def test_static(self) -> Any:
        """Static files are served under their prefix; .. and symlinks out are not."""
        base = self.serve(static=[f"/files={self.confinedTree()}"])
        paths = [
            "/files/a.txt",
            "/files/link",
            "/files/sub/up/secret.txt",
            "/files/%2e%2e/secret.txt",
            "/files/..%2fsecret.txt",
            "/files/sub/",
            "/whoami",
        ]
        answers = yield _curlEach(base, paths)
        results = {path: answer.rsplit(" ", 1)[-1] for path, answer in answers.items()}
        ok = yield deferToThread(requests.get, base + "/files/a.txt")
        self.assertEqual(ok.text, "public")
        self.assertEqual(
            results,
            {
                "/files/a.txt": "200",
                "/files/link": "404",
                "/files/sub/up/secret.txt": "404",
                "/files/%2e%2e/secret.txt": "404",
                "/files/..%2fsecret.txt": "404",
                "/files/sub/": "404",
                "/whoami": "200",
            },
        )

    @inlineCallbacks
    def test_staticRootBookSite(self) -> Any:
        """The book's rscrape1.py as printed crawls a tiny site served at /."""
        site = writeTinySite(os.path.abspath(self.mktemp()))
        base = self.serve(static=[f"/={site}"])
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "rscrape1.py"), "w") as f:
            f.write(BOOK_RSCRAPE1)
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            [os.path.join(directory, "rscrape1.py"), base + "/"],
            env=os.environ,
            path=directory,
        )
        app = yield deferToThread(requests.get, base + "/whoami")
        self.assertEqual(
            (sorted(out.decode().splitlines()), err, code, app.json()["user"]),
            (
                [f"GET {base}/", f"GET {base}/page1.html", f"GET {base}/page2.html"],
                b"",
                0,
                None,
            ),
        )

    @inlineCallbacks
    def test_staticRoot(self) -> Any:
        """At /, what the files do not answer reaches the app; escapes get 404."""
        base = self.serve(recordingApp, static=[f"/={self.confinedTree()}"])
        answered = {
            "/a.txt": "public 200",
            "/": "app / 200",
            "/missing": "app /missing 200",
            "/sub/": "app /sub/ 200",
            "/a.txt/more": "app /a.txt/more 200",
        }
        refused = ["/link", "/sub/up/secret.txt", "/%2e%2e/secret.txt"]
        refused += ["/..%2fsecret.txt", "/a.txt%00", "/%ff"]
        results = yield _curlEach(base, [*answered, *refused])
        self.assertEqual({path: results.pop(path) for path in answered}, answered)
        # What remains never reached the app: the files' own 404 page.
        self.assertEqual(
            {path: answer.rsplit(" ", 1)[-1] for path, answer in results.items()},
            dict.fromkeys(refused, "404"),
        )
        self.assertNotIn("app ", "".join(results.values()))

    @inlineCallbacks
    def test_staticRootAlone(self) -> Any:
        """--static /=DIR without --app serves the files, 404 for the rest."""
        site = writeTinySite(os.path.abspath(self.mktemp()))
        config = Options()
        config.parseOptions(["--static", f"/={site}"])
        self.assertEqual(config.settings.static, (f"/={site}",))
        base = self.serve(None, static=[f"/={site}"])
        index = yield deferToThread(requests.get, base + "/")
        missing = yield deferToThread(requests.get, base + "/whoami")
        self.assertEqual(
            (index.status_code, "<title>Index</title>" in index.text),
            (200, True),
        )
        self.assertEqual(missing.status_code, 404)

    def serveFile(self) -> bytes:
        """
        Serve a directory under C{/files} holding C{data.bin} (102400 bytes,
        each its offset modulo 256); its contents.
        """
        root = self.mktemp()
        os.mkdir(root)
        data = bytes(range(256)) * 400
        with open(os.path.join(root, "data.bin"), "wb") as f:
            f.write(data)
        self.serve(static=[f"/files={root}"])
        return data

    def getFile(self, path: str, headers: bytes = b"") -> Deferred[bytes]:
        return deferToThread(
            _raw,
            self.port,
            b"GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n%s\r\n"
            % (path.encode(), headers),
        )

    @inlineCallbacks
    def test_staticRanges(self) -> Any:
        """Two ranges across twisted.web's buffer size are sent whole, as multipart."""
        data = self.serveFile()
        answer = yield self.getFile(
            "/files/data.bin", b"Range: bytes=0-65399,65450-65460\r\n"
        )
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 206 "), head)
        boundary = head.split(b'boundary="')[1].split(b'"')[0]
        self.assertTrue(body.endswith(b"\r\n--" + boundary + b"--\r\n"))
        parts = body.split(b"\r\n--" + boundary)[1:-1]
        self.assertEqual(
            [part.partition(b"\r\n\r\n")[2] for part in parts],
            [data[:65400], data[65450:65461]],
        )
        self.assertIn(b"Content-Range: bytes 65450-65460/102400", parts[1])
        self.assertIn(b"Content-Length: %d" % (len(body),), head)

    @inlineCallbacks
    def test_staticRangesOverlapping(self) -> Any:
        """Overlapping ranges (0-65399,0-0) get the whole file with 200, not a hang."""
        data = self.serveFile()
        answer = yield self.getFile("/files/data.bin", b"Range: bytes=0-65399,0-0\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertEqual(body, data)

    @inlineCallbacks
    def test_staticRangesTooMany(self) -> Any:
        """1400 ranges, or 17 apart, get the whole file with 200; 16 are served."""
        data = self.serveFile()
        statuses = []
        for ranges in [
            b",".join([b"0-102399"] * 1400),
            b",".join(b"%d-%d" % (i * 64, i * 64 + 9) for i in range(17)),
            b",".join(b"%d-%d" % (i * 64, i * 64 + 9) for i in range(16)),
        ]:
            answer = yield self.getFile(
                "/files/data.bin", b"Range: bytes=" + ranges + b"\r\n"
            )
            head, _, body = answer.partition(b"\r\n\r\n")
            statuses.append((head[9:12], len(body) == len(data)))
        self.assertEqual(statuses, [(b"200", True), (b"200", True), (b"206", False)])

    @inlineCallbacks
    def test_staticRangesUnsatisfiable(self) -> Any:
        """Ranges all past the end get 416 with the file's length, no traceback."""
        self.serveFile()
        answer = yield self.getFile(
            "/files/data.bin", b"Range: bytes=200000-,300000-\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 416 "), answer)
        self.assertIn(b"Content-Range: bytes */102400\r\n", answer)

    @inlineCallbacks
    def test_staticBadNames(self) -> Any:
        """Names holding NUL or invalid UTF-8 get 404, with nothing logged."""
        self.serveFile()
        answers = []
        with capturedLogs() as events:
            for path in ["/files/data.bin%00.html", "/files/%00", "/files/%ff"]:
                answers.append((yield self.getFile(path))[:13])
        self.assertEqual(answers, [b"HTTP/1.1 404 "] * 3)
        self.assertEqual(
            [e for e in events if e.get("log_failure") or e.get("isError")], []
        )

    @inlineCallbacks
    def test_rawSmuggling(self) -> Any:
        """Over a real socket: CL+TE, duplicate CL, 0x chunks, bare LF get 400."""
        self.serve()
        cases = [
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
            b"Content-Length: 2\r\n\r\nxy",
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0x2\r\nxy\r\n0\r\n\r\n",
            b"GET /whoami HTTP/1.1\nHost: a\n\n",
        ]
        answers = yield deferToThread(lambda: [_raw(self.port, c) for c in cases])
        for answer in answers:
            self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer)

    @inlineCallbacks
    def test_rawPipelining(self) -> Any:
        """Pipelined requests in one write are answered in order."""
        self.serve(pathdispatch.app)
        answer = yield deferToThread(
            _raw,
            self.port,
            b"GET /hello?name=one HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /hello?name=three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        one, three = answer.find(b"Hello one"), answer.find(b"Hello three")
        missing = answer.find(b"Not Found")
        self.assertTrue(0 < one < missing < three, answer)

    @inlineCallbacks
    def test_trickledHeadersClosed(self) -> Any:
        """A request head not complete within headerTimeout gets 408 and a close."""
        self.serve(headerTimeout=0.5)
        answer = yield deferToThread(_raw, self.port, b"GET /whoami HTTP/1.1\r\nX: ")
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)

    @inlineCallbacks
    def test_gracefulShutdown(self) -> Any:
        """Stopping closes the port at once but lets a request in flight finish."""
        release.clear()
        base = self.serve(shutdownTimeout=10)
        response = deferToThread(requests.get, base + "/slow")
        assert self.service.resource is not None
        while not self.service.resource.inFlight:
            yield deferToThread(release.wait, 0.01)
        stopped: Deferred[Any] = self.service.stopService()
        done: list[object] = []

        def record(result: object) -> object:
            done.append(result)
            return result

        stopped.addBoth(record)
        # stopListening closes the socket on the next reactor turn.
        for _ in range(100):
            connects = yield deferToThread(_connects, self.port)
            if not connects:
                break
        self.assertEqual((connects, done), (False, []))
        release.set()
        r = yield response
        yield stopped
        self.assertEqual(r.text, "finished")


def _curl(args: list[str]) -> Deferred[tuple[bytes, bytes, int]]:
    return getProcessOutputAndValue("curl", args, env=os.environ)


@inlineCallbacks
def _curlEach(base: str, paths: list[str]) -> Any:
    """
    GET each of C{paths} under C{base} with curl, as sent (C{--path-as-is});
    a dict of each path's answer, its body then a space and its status code.
    """
    answers = {}
    for path in paths:
        out, _, _ = yield _curl(
            ["-s", "--path-as-is", "-w", " %{http_code}", base + path]
        )
        answers[path] = out.decode("latin-1")
    return answers


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError:
        return False
    return True


def _raw(port: int, data: bytes) -> bytes:
    """
    Send C{data} and read until the server closes (or 10 s pass).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)
