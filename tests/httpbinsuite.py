"""
A client test suite written for httpbin, in the style of the requests
library's own httpbin-based tests: it knows nothing of np-httpbin but a base
URL.  C{tests.test_httpbin_clients} runs it against np-httpbin; setting
C{HTTPBIN_URL} runs it against any httpbin as well (e.g. C{HTTPBIN_URL=
http://127.0.0.1:8080 python -m twisted.trial tests.test_httpbin_clients}
against C{gunicorn httpbin:app}).

Every test is a blocking function using C{requests}; a runner calls it off the
reactor thread.  C{baseURL} has no trailing slash.
"""

from __future__ import annotations

import gzip
import io
import json
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import requests
from requests.auth import HTTPBasicAuth, HTTPDigestAuth

TIMEOUT = 20


class HttpbinClientSuite:
    """
    Tests of an HTTP client against httpbin; mix into a test case that sets
    C{baseURL}.
    """

    baseURL: str
    assertEqual: Any
    assertIn: Any
    assertTrue: Any
    assertIsNone: Any
    assertGreaterEqual: Any
    assertLess: Any
    assertRaises: Any

    def url(self, path: str) -> str:
        """
        The absolute URL of C{path} on the server under test.
        """
        return self.baseURL + path

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """
        One request with a deadline.
        """
        kwargs.setdefault("timeout", TIMEOUT)
        return requests.request(method, self.url(path), **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """
        GET C{path}.
        """
        return self.request("GET", path, **kwargs)

    # Request inspection and methods

    def test_getShape(self) -> None:
        """/get shows args, headers, origin and url, and nothing else."""
        r = self.get("/get", params={"a": "1", "b": ["2", "3"]})
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.headers["Content-Type"], "application/json")
        body = r.json()
        self.assertEqual(sorted(body), ["args", "headers", "origin", "url"])
        self.assertEqual(body["args"], {"a": "1", "b": ["2", "3"]})
        self.assertEqual(body["url"], self.url("/get?a=1&b=2&b=3"))

    def test_userAgentAndHeaders(self) -> None:
        """Request headers come back under their names, in /headers and /user-agent."""
        headers = {"User-Agent": "suite/1.0", "X-Custom-Thing": "yes"}
        shown = self.get("/headers", headers=headers).json()["headers"]
        self.assertEqual(
            (shown["User-Agent"], shown["X-Custom-Thing"]), ("suite/1.0", "yes")
        )
        agent = self.get("/user-agent", headers=headers).json()
        self.assertEqual(agent, {"user-agent": "suite/1.0"})

    def test_ip(self) -> None:
        """/ip shows the client's address."""
        self.assertIn("127.0.0.1", self.get("/ip").json()["origin"])

    def test_uuid(self) -> None:
        """/uuid is a fresh version 4 UUID each time."""
        first, second = (uuid.UUID(self.get("/uuid").json()["uuid"]) for _ in "ab")
        self.assertEqual((first.version, first != second), (4, True))

    def test_postForm(self) -> None:
        """A urlencoded POST shows as form, with empty data and null json."""
        r = self.request("POST", "/post", data={"name": "value", "many": ["1", "2"]})
        body = r.json()
        self.assertEqual(
            (body["form"], body["data"], body["json"], body["files"]),
            ({"name": "value", "many": ["1", "2"]}, "", None, {}),
        )

    def test_postJSON(self) -> None:
        """A JSON body shows as data and, parsed, as json."""
        payload = {"life": 42, "list": [1, "two"], "nested": {"ok": True}}
        body = self.request("POST", "/post", json=payload).json()
        self.assertEqual(
            (body["json"], json.loads(body["data"]), body["headers"]["Content-Type"]),
            (payload, payload, "application/json"),
        )

    def test_postFiles(self) -> None:
        """Multipart uploads show files by field name and plain fields as form."""
        r = self.request(
            "POST",
            "/post",
            files={"upload": ("notes.txt", b"file contents\n", "text/plain")},
            data={"field": "value"},
        )
        body = r.json()
        self.assertEqual(
            (body["files"], body["form"]),
            ({"upload": "file contents\n"}, {"field": "value"}),
        )

    def test_postBinary(self) -> None:
        """A body that is not UTF-8 is shown as a base64 data URL."""
        body = self.request("POST", "/post", data=b"\xff\x00\xfe").json()
        self.assertEqual(body["data"], "data:application/octet-stream;base64,/wD+")

    def test_chunkedUpload(self) -> None:
        """A chunked request body (a generator) arrives whole."""
        chunks = (part for part in [b"hello ", b"chunked ", b"world"])
        body = self.request("PUT", "/put", data=chunks).json()
        self.assertEqual(body["data"], "hello chunked world")

    def test_methods(self) -> None:
        """PUT, PATCH and DELETE each have their endpoint, echoing the body."""
        for method in ["PUT", "PATCH", "DELETE"]:
            r = self.request(method, "/" + method.lower(), data={"x": "1"})
            self.assertEqual((r.status_code, r.json()["form"]), (200, {"x": "1"}))

    def test_wrongMethod(self) -> None:
        """GET on /post is 405."""
        self.assertEqual(self.get("/post").status_code, 405)

    def test_anything(self) -> None:
        """/anything/... takes any method and shows it."""
        body = self.request("PATCH", "/anything/some/path?q=1", json=[1]).json()
        self.assertEqual(
            (body["method"], body["args"], body["json"], body["url"]),
            ("PATCH", {"q": "1"}, [1], self.url("/anything/some/path?q=1")),
        )

    def test_head(self) -> None:
        """HEAD has GET's headers and no body."""
        r = self.request("HEAD", "/json")
        self.assertEqual((r.status_code, r.content), (200, b""))
        self.assertEqual(
            int(r.headers["Content-Length"]), len(self.get("/json").content)
        )

    # Status codes

    def test_statusCodes(self) -> None:
        """/status/{code} answers that code; raise_for_status raises for errors."""
        for code in [200, 201, 204, 400, 404, 500, 503]:
            self.assertEqual(self.get(f"/status/{code}").status_code, code)
        with self.assertRaises(requests.HTTPError):
            self.get("/status/500").raise_for_status()

    def test_statusWeighted(self) -> None:
        """A zero weight is never chosen."""
        codes = {self.get("/status/200:0,418:1").status_code for _ in range(5)}
        self.assertEqual(codes, {418})

    def test_statusInvalid(self) -> None:
        """A code that is no number is 400."""
        self.assertEqual(self.get("/status/teapot").status_code, 400)

    def test_statusTeapot(self) -> None:
        """418 is a teapot."""
        self.assertIn("teapot", self.get("/status/418").text)

    def test_statusRedirect(self) -> None:
        """/status/302 redirects, through /redirect/1, to /get."""
        r = self.get("/status/302")
        self.assertEqual(
            ([h.status_code for h in r.history], r.url), ([302, 302], self.url("/get"))
        )

    # Redirects

    def test_redirectHistory(self) -> None:
        """/redirect/3 ends at /get after three 302s."""
        r = self.get("/redirect/3")
        self.assertEqual(
            (r.status_code, [h.status_code for h in r.history], r.url),
            (200, [302, 302, 302], self.url("/get")),
        )

    def test_relativeAndAbsolute(self) -> None:
        """Relative redirects give paths; absolute ones full URLs."""
        relative = self.get("/relative-redirect/2", allow_redirects=False)
        absolute = self.get("/absolute-redirect/2", allow_redirects=False)
        self.assertEqual(
            (relative.headers["Location"], absolute.headers["Location"]),
            ("/relative-redirect/1", self.url("/absolute-redirect/1")),
        )
        self.assertEqual(self.get("/absolute-redirect/3").url, self.url("/get"))

    def test_tooManyRedirects(self) -> None:
        """A session with max_redirects=2 gives up on /redirect/5."""
        with requests.Session() as session:
            session.max_redirects = 2
            with self.assertRaises(requests.TooManyRedirects):
                session.get(self.url("/redirect/5"), timeout=TIMEOUT)

    def test_redirectTo(self) -> None:
        """/redirect-to goes where it is told, with the status asked for."""
        r = self.get(
            "/redirect-to",
            params={"url": "/get?x=1", "status_code": "307"},
            allow_redirects=False,
        )
        self.assertEqual((r.status_code, r.headers["Location"]), (307, "/get?x=1"))

    def test_redirect303TurnsPostIntoGet(self) -> None:
        """After a 303, requests follows with GET."""
        r = self.request(
            "POST", "/redirect-to?url=/get&status_code=303", data={"a": "b"}
        )
        self.assertEqual((r.status_code, r.url), (200, self.url("/get")))

    def test_redirect307KeepsMethodAndBody(self) -> None:
        """After a 307, requests repeats the POST with its body."""
        r = self.request(
            "POST", "/redirect-to?url=/post&status_code=307", data={"a": "b"}
        )
        self.assertEqual((r.status_code, r.json()["form"]), (200, {"a": "b"}))

    def test_links(self) -> None:
        """/links/{n}/{offset} links every other page."""
        text = self.get("/links/5/2").text
        self.assertEqual(text.count("<a href="), 4)
        self.assertEqual(self.get("/links/5").url, self.url("/links/5/0"))

    # Cookies

    def test_cookiesSession(self) -> None:
        """A session keeps cookies set by /cookies/set and drops deleted ones."""
        with requests.Session() as session:
            r = session.get(
                self.url("/cookies/set?flavour=oat&kind=biscuit"), timeout=TIMEOUT
            )
            self.assertEqual(
                (r.json(), session.cookies.get_dict()),
                (
                    {"cookies": {"flavour": "oat", "kind": "biscuit"}},
                    {"flavour": "oat", "kind": "biscuit"},
                ),
            )
            r = session.get(self.url("/cookies/delete?kind"), timeout=TIMEOUT)
            self.assertEqual(r.json(), {"cookies": {"flavour": "oat"}})

    def test_cookiesSetPath(self) -> None:
        """/cookies/set/{name}/{value} sets one cookie."""
        with requests.Session() as session:
            r = session.get(self.url("/cookies/set/one/1"), timeout=TIMEOUT)
            self.assertEqual(r.json(), {"cookies": {"one": "1"}})

    def test_cookiesSent(self) -> None:
        """Cookies sent with a request are shown."""
        r = self.get("/cookies", cookies={"a": "1", "b": "2"})
        self.assertEqual(r.json(), {"cookies": {"a": "1", "b": "2"}})

    # Authentication

    def test_basicAuth(self) -> None:
        """Basic auth passes with the URL's credentials, 401 otherwise."""
        ok = self.get("/basic-auth/user/pass", auth=("user", "pass"))
        bad = self.get("/basic-auth/user/pass", auth=HTTPBasicAuth("user", "nope"))
        self.assertEqual(
            (ok.status_code, ok.json(), bad.status_code),
            (200, {"authenticated": True, "user": "user"}, 401),
        )
        self.assertIn("Basic", bad.headers["WWW-Authenticate"])

    def test_hiddenBasicAuth(self) -> None:
        """Hidden basic auth answers 404 to wrong credentials."""
        ok = self.get("/hidden-basic-auth/user/pass", auth=("user", "pass"))
        bad = self.get("/hidden-basic-auth/user/pass")
        self.assertEqual((ok.status_code, bad.status_code), (200, 404))

    def test_bearer(self) -> None:
        """Any bearer token passes and is shown; none gives 401."""
        ok = self.get("/bearer", headers={"Authorization": "Bearer abc.def"})
        self.assertEqual(ok.json(), {"authenticated": True, "token": "abc.def"})
        self.assertEqual(self.get("/bearer").status_code, 401)

    def test_digestAuth(self) -> None:
        """HTTPDigestAuth logs in with MD5, SHA-256 and SHA-512."""
        for path in [
            "/digest-auth/auth/user/pass",
            "/digest-auth/auth/user/pass/MD5",
            "/digest-auth/auth/user/pass/SHA-256",
            "/digest-auth/auth/user/pass/SHA-512",
        ]:
            r = self.get(path, auth=HTTPDigestAuth("user", "pass"))
            self.assertEqual(
                (path, r.status_code, r.json()),
                (path, 200, {"authenticated": True, "user": "user"}),
            )

    def test_digestAuthWrong(self) -> None:
        """A wrong digest password gets 401 and a Digest challenge."""
        r = self.get("/digest-auth/auth/user/pass", auth=HTTPDigestAuth("user", "x"))
        self.assertEqual(r.status_code, 401)
        self.assertIn("Digest", r.headers["WWW-Authenticate"])

    def test_digestAuthSession(self) -> None:
        """A session reuses its digest credentials for later requests."""
        with requests.Session() as session:
            session.auth = HTTPDigestAuth("user", "pass")
            codes = [
                session.get(
                    self.url("/digest-auth/auth/user/pass"), timeout=TIMEOUT
                ).status_code
                for _ in range(3)
            ]
        self.assertEqual(codes, [200, 200, 200])

    # Dynamic data

    def test_streamLines(self) -> None:
        """/stream/{n} is n JSON lines, read as they come with iter_lines."""
        r = self.get("/stream/5", stream=True)
        lines = [json.loads(line) for line in r.iter_lines() if line]
        self.assertEqual([line["id"] for line in lines], [0, 1, 2, 3, 4])
        self.assertEqual(lines[0]["url"], self.url("/stream/5"))

    def test_streamBytes(self) -> None:
        """/stream-bytes/{n} streams n bytes, read with iter_content."""
        r = self.get("/stream-bytes/5000?chunk_size=1000&seed=1", stream=True)
        chunks = list(r.iter_content(chunk_size=700))
        self.assertEqual(sum(len(c) for c in chunks), 5000)

    def test_bytesSeeded(self) -> None:
        """/bytes/{n} is n bytes, the same ones for the same seed."""
        one = self.get("/bytes/1024?seed=7").content
        two = self.get("/bytes/1024?seed=7").content
        other = self.get("/bytes/1024?seed=8").content
        self.assertEqual((len(one), one == two, one == other), (1024, True, False))

    def test_range(self) -> None:
        """Range requests on /range get 206 with the slice asked for."""
        r = self.get("/range/100", headers={"Range": "bytes=10-19"})
        self.assertEqual(
            (r.status_code, r.content, r.headers["Content-Range"]),
            (206, b"klmnopqrst", "bytes 10-19/100"),
        )
        whole = self.get("/range/30")
        self.assertEqual(
            (whole.status_code, whole.headers["Accept-Ranges"]), (200, "bytes")
        )
        self.assertEqual(whole.content, b"abcdefghijklmnopqrstuvwxyzabcd")

    def test_rangeUnsatisfiable(self) -> None:
        """A range past the end is 416 with the size in Content-Range."""
        r = self.get("/range/100", headers={"Range": "bytes=200-300"})
        self.assertEqual(
            (r.status_code, r.headers["Content-Range"]), (416, "bytes */100")
        )

    def test_rangeSuffix(self) -> None:
        """A suffix range gets the last bytes."""
        r = self.get("/range/26", headers={"Range": "bytes=-3"})
        self.assertEqual((r.status_code, r.content), (206, b"xyz"))

    def test_delay(self) -> None:
        """/delay/1 answers after about a second, as /get with form and data."""
        started = time.monotonic()
        r = self.get("/delay/1")
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, 8)
        self.assertEqual(r.json()["url"], self.url("/delay/1"))

    def test_drip(self) -> None:
        """/drip sends its bytes over the duration, with the code asked for."""
        started = time.monotonic()
        r = self.get("/drip?numbytes=5&duration=1&code=201&delay=0", stream=True)
        data = b"".join(r.iter_content(chunk_size=1))
        elapsed = time.monotonic() - started
        self.assertEqual((r.status_code, data), (201, b"*****"))
        self.assertGreaterEqual(elapsed, 0.5)
        self.assertLess(elapsed, 8)

    def test_base64(self) -> None:
        """/base64 decodes URL-safe base64."""
        self.assertEqual(
            self.get("/base64/SFRUUEJJTiBpcyBhd2Vzb21l").text, "HTTPBIN is awesome"
        )

    # Response formats

    def test_gzip(self) -> None:
        """/gzip is gzip-encoded and decoded by requests."""
        r = self.get("/gzip")
        self.assertEqual(
            (r.headers["Content-Encoding"], r.json()["gzipped"]), ("gzip", True)
        )
        raw = self.get("/gzip", stream=True).raw.read(decode_content=False)
        self.assertTrue(json.loads(gzip.GzipFile(fileobj=io.BytesIO(raw)).read()))

    def test_deflate(self) -> None:
        """/deflate is deflate-encoded and decoded by requests."""
        r = self.get("/deflate")
        self.assertEqual(
            (r.headers["Content-Encoding"], r.json()["deflated"]), ("deflate", True)
        )

    def test_brotli(self) -> None:
        """/brotli is Brotli-encoded and decoded by requests."""
        r = self.get("/brotli", headers={"Accept-Encoding": "br"})
        self.assertEqual(
            (r.headers["Content-Encoding"], r.json()["brotli"]), ("br", True)
        )

    def test_documents(self) -> None:
        """/json, /xml, /html, /robots.txt and /encoding/utf8 are what they say."""
        self.assertEqual(
            self.get("/json").json()["slideshow"]["title"], "Sample Slide Show"
        )
        root = ET.fromstring(self.get("/xml").content)
        self.assertEqual(root.tag, "slideshow")
        html = self.get("/html")
        self.assertIn("text/html", html.headers["Content-Type"])
        self.assertIn("Herman Melville", html.text)
        self.assertIn("Disallow: /deny", self.get("/robots.txt").text)
        self.assertIn("YOU SHOULDN'T BE HERE", self.get("/deny").text)
        utf8 = self.get("/encoding/utf8")
        self.assertEqual(str(utf8.encoding).lower(), "utf-8")
        self.assertTrue(any(ord(c) > 0x3000 for c in utf8.text))

    def test_images(self) -> None:
        """Each /image/* format starts with its magic; /image follows Accept."""
        magic = {
            "png": b"\x89PNG\r\n\x1a\n",
            "jpeg": b"\xff\xd8\xff",
            "webp": b"RIFF",
            "svg": b"<",
        }
        for kind, start in magic.items():
            r = self.get(f"/image/{kind}")
            self.assertEqual((kind, r.content[: len(start)]), (kind, start))
        accepted = self.get("/image", headers={"Accept": "image/jpeg"})
        self.assertEqual(accepted.headers["Content-Type"], "image/jpeg")
        refused = self.get("/image", headers={"Accept": "text/plain"})
        self.assertEqual(refused.status_code, 406)

    def test_formsPost(self) -> None:
        """/forms/post is an HTML form posting to /post."""
        self.assertIn('action="/post"', self.get("/forms/post").text.replace("'", '"'))

    # Response inspection

    def test_responseHeaders(self) -> None:
        """/response-headers sends the headers asked for and lists them."""
        r = self.get("/response-headers", params={"X-Thing": "one", "Y-Other": "2"})
        self.assertEqual(
            (r.headers["X-Thing"], r.json()["X-Thing"], r.json()["Y-Other"]),
            ("one", "one", "2"),
        )
        self.assertEqual(int(r.json()["Content-Length"]), len(r.content))

    def test_responseHeadersContentType(self) -> None:
        """/response-headers sends a requested Content-Type after the JSON one."""
        wanted = "text/plain; charset=UTF-8"
        r = self.get("/response-headers", params={"Content-Type": wanted})
        self.assertEqual(
            (r.raw.headers.getlist("Content-Type"), r.json()["Content-Type"]),
            (["application/json", wanted], ["application/json", wanted]),
        )

    def test_cache(self) -> None:
        """/cache is 304 for conditional requests, else 200 with validators."""
        plain = self.get("/cache")
        self.assertIn("ETag", plain.headers)
        self.assertIn("Last-Modified", plain.headers)
        again = self.get("/cache", headers={"If-None-Match": plain.headers["ETag"]})
        self.assertEqual(again.status_code, 304)
        self.assertEqual(
            self.get("/cache/60").headers["Cache-Control"], "public, max-age=60"
        )

    def test_etag(self) -> None:
        """/etag/{etag} honours If-None-Match (304) and If-Match (412)."""
        self.assertEqual(self.get("/etag/abc").headers["ETag"], "abc")
        matching = self.get("/etag/abc", headers={"If-None-Match": '"abc"'})
        failing = self.get("/etag/abc", headers={"If-Match": '"xyz"'})
        passing = self.get("/etag/abc", headers={"If-Match": '"abc"'})
        self.assertEqual(
            (matching.status_code, failing.status_code, passing.status_code),
            (304, 412, 200),
        )

    def test_keepAlive(self) -> None:
        """A session sends several requests over one connection."""
        with requests.Session() as session:
            answers = [
                session.get(self.url(f"/get?n={i}"), timeout=TIMEOUT).json()["args"]
                for i in range(5)
            ]
        self.assertEqual(answers, [{"n": str(i)} for i in range(5)])

    def test_cors(self) -> None:
        """Responses allow the requesting origin, with credentials."""
        r = self.get("/get", headers={"Origin": "https://example.com"})
        self.assertEqual(
            (
                r.headers["Access-Control-Allow-Origin"],
                r.headers["Access-Control-Allow-Credentials"],
            ),
            ("https://example.com", "true"),
        )
