"""
The Python Cookbook's recipe 11.5 application: a small REST-style WSGI
application dispatching on (method, path).

  - C{GET /hello?name=Guido}: an HTML greeting;
  - C{GET /localtime}: the server's local time as XML.

Serve it with::

    twistd -n np-wsgi --app netplugins.examples.pathdispatch:app

The recipe parses parameters with the C{cgi} module, which Python 3.13
removed; here C{urllib.parse} reads the query string and form bodies (of at
most L{MAX_FORM_SIZE} bytes).  The greeting escapes the name it echoes.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

StartResponse = Callable[..., Any]
Handler = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

MAX_FORM_SIZE = 64 * 1024


def notFound(environ: dict[str, Any], startResponse: StartResponse) -> list[bytes]:
    """
    The answer for a (method, path) nobody registered.
    """
    startResponse("404 Not Found", [("Content-Type", "text/plain")])
    return [b"Not Found"]


def readParameters(environ: dict[str, Any]) -> dict[str, str]:
    """
    The query string's parameters, and for a form POST the body's; the last
    value of a repeated name wins.
    """
    pairs = parse_qsl(environ.get("QUERY_STRING", ""))
    contentType = environ.get("CONTENT_TYPE", "")
    if contentType.startswith("application/x-www-form-urlencoded"):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(min(max(length, 0), MAX_FORM_SIZE))
        pairs += parse_qsl(body.decode("utf-8", "replace"))
    return dict(pairs)


class PathDispatcher:
    """
    Calls the handler registered for the request's method and path, with the
    request's parameters in C{environ["params"]}.
    """

    def __init__(self) -> None:
        self.pathmap: dict[tuple[str, str], Handler] = {}

    def __call__(
        self, environ: dict[str, Any], startResponse: StartResponse
    ) -> Iterable[bytes]:
        environ["params"] = readParameters(environ)
        key = (environ["REQUEST_METHOD"].lower(), environ.get("PATH_INFO", ""))
        handler = self.pathmap.get(key, notFound)
        return handler(environ, startResponse)

    def register(self, method: str, path: str, function: Handler) -> Handler:
        """
        Route C{method} requests for C{path} to C{function}.
        """
        self.pathmap[method.lower(), path] = function
        return function


HELLO = """\
<html>
  <head>
     <title>Hello {name}</title>
  </head>
  <body>
     <h1>Hello {name}!</h1>
  </body>
</html>"""


def helloWorld(environ: dict[str, Any], startResponse: StartResponse) -> list[bytes]:
    """
    Greet C{name}.
    """
    startResponse("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    name = html.escape(environ["params"].get("name") or "")
    return [HELLO.format(name=name).encode("utf-8")]


LOCALTIME = """\
<?xml version="1.0"?>
<time>
  <year>{t.tm_year}</year>
  <month>{t.tm_mon}</month>
  <day>{t.tm_mday}</day>
  <hour>{t.tm_hour}</hour>
  <minute>{t.tm_min}</minute>
  <second>{t.tm_sec}</second>
</time>"""


def localtime(environ: dict[str, Any], startResponse: StartResponse) -> list[bytes]:
    """
    The server's local time as XML.
    """
    startResponse("200 OK", [("Content-Type", "application/xml")])
    return [LOCALTIME.format(t=time.localtime()).encode("utf-8")]


app = PathDispatcher()
app.register("GET", "/hello", helloWorld)
app.register("GET", "/localtime", localtime)
