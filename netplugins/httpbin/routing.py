"""
Routing for np-httpbin: a table from the first path segment to an endpoint,
and the one resource that dispatches through it.

httpbin's URLs are short and flat (C{/status/418}, C{/digest-auth/auth/u/p}),
so a dictionary keyed by the first segment, each entry saying which methods
and how many further segments it takes, reads more plainly than a tree of
L{twisted.web.resource.Resource} children.  Endpoints are plain functions
C{(context, request, *segments)} returning the body as C{bytes} or
C{NOT_DONE_YET}; they refuse bad input by raising L{HttpbinError}, which
becomes a short plain-text response.  Anything else they raise is logged and
answered with a bare 500: no traceback reaches the wire.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from attrs import define, field, frozen
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "TRACE")
# Longest number accepted in a path or query parameter; longer ones are no
# number any endpoint could use, and int() of thousands of digits costs time.
MAX_DIGITS = 18


class HttpbinError(Exception):
    """
    Answer the request with C{code} and a short plain-text C{message}.
    """

    def __init__(
        self, code: int, message: str = "", headers: Mapping[str, str] | None = None
    ):
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def notFound() -> HttpbinError:
    """
    The error for a URL no endpoint serves, as Flask words it.
    """
    return HttpbinError(404, "Not Found")


@define
class Context:
    """
    What endpoints share beyond the request.

    @ivar reactor: for timers (C{/delay}, C{/drip}); a
        L{twisted.internet.task.Clock} in tests.
    @ivar protected: the resource behind C{/protected} (HTTP Basic through
        the C{--auth} checkers), or C{None} without checkers.
    @ivar maxDelay: the longest wait, or drip, a client can ask for (s).
    @ivar secret: keys the digest-auth nonces.
    """

    reactor: Any
    protected: IResource | None = None
    maxDelay: float = 10.0
    secret: bytes = field(factory=lambda: os.urandom(32))


Handler = Callable[..., Any]


@frozen
class Route:
    """
    One endpoint: its function, the methods it answers, and how many path
    segments may follow its name (C{rest=True}: any number, kept as one
    string, for C{/anything/...}).
    """

    handler: Handler
    methods: tuple[str, ...] = ("GET",)
    minArgs: int = 0
    maxArgs: int = 0
    rest: bool = False


def route(
    handler: Handler,
    methods: Iterable[str] = ("GET",),
    args: int | tuple[int, int] = 0,
    rest: bool = False,
) -> Route:
    """
    A L{Route}; C{args} is an exact count or a (least, most) pair.
    """
    low, high = (args, args) if isinstance(args, int) else args
    return Route(handler, tuple(methods), low, high, rest)


class Router(Resource):
    """
    The np-httpbin root: dispatches every request through C{routes}.

    HEAD is answered as GET without the body, and OPTIONS with the methods the
    endpoint allows, as Flask does for httpbin.  Every response carries
    httpbin's permissive CORS headers.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, routes: Mapping[str, Route], context: Context):
        super().__init__()
        self.routes = dict(routes)
        self.context = context

    def render(self, request: Request) -> Any:
        cors(request)
        try:
            return self._dispatch(request)
        except HttpbinError as e:
            return errorBody(request, e)
        except Exception:
            self.log.failure(
                "np-httpbin: endpoint failed for {uri}",
                uri=request.uri.decode("ascii", "replace"),
            )
            return errorBody(request, HttpbinError(500, "Internal Server Error"))

    def _dispatch(self, request: Request) -> Any:
        segments = [
            unquote(s.decode("utf-8", "replace")) for s in request.postpath or []
        ]
        if segments and segments[-1] == "" and len(segments) > 1:
            segments.pop()
        name = segments[0] if segments else ""
        found = self.routes.get(name)
        args = segments[1:]
        if found is None or (
            not found.rest and not found.minArgs <= len(args) <= found.maxArgs
        ):
            raise notFound()
        if found.rest:
            args = ["/".join(args)] if args else []
        method = request.method.decode("ascii", "replace")
        allowed = set(found.methods) | {"OPTIONS"}
        if "GET" in allowed:
            allowed.add("HEAD")
        allow = ", ".join(sorted(allowed))
        if method == "OPTIONS":
            request.setHeader("Allow", allow)
            preflight(request)
            request.setHeader("Content-Type", "text/html; charset=utf-8")
            return b""
        if method not in allowed:
            raise HttpbinError(405, "Method Not Allowed", {"Allow": allow})
        if method != "HEAD":
            return found.handler(self.context, request, *args)
        # Render as GET, so that endpoints see one method; the body is dropped
        # but its length announced, as for GET.
        request.method = b"GET"
        try:
            body = found.handler(self.context, request, *args)
        finally:
            request.method = b"HEAD"
        if isinstance(body, bytes):
            request.setHeader("Content-Length", str(len(body)))
            return b""
        return body


def cors(request: Request) -> None:
    """
    httpbin's CORS headers: any origin, with credentials.
    """
    origin = request.getHeader("Origin")
    request.setHeader("Access-Control-Allow-Origin", origin or "*")
    request.setHeader("Access-Control-Allow-Credentials", "true")


def preflight(request: Request) -> None:
    """
    The extra CORS headers of an OPTIONS (preflight) answer.
    """
    request.setHeader(
        "Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, PATCH, OPTIONS"
    )
    request.setHeader("Access-Control-Max-Age", "3600")
    wanted = request.getHeader("Access-Control-Request-Headers")
    if wanted is not None:
        request.setHeader("Access-Control-Allow-Headers", wanted)


def errorBody(request: Request, error: HttpbinError) -> bytes:
    """
    Set C{error}'s status and headers on C{request}; its plain-text body.
    """
    request.setResponseCode(error.code)
    for name, value in error.headers.items():
        request.setHeader(name, value)
    if not request.responseHeaders.hasHeader("Content-Type"):
        request.setHeader("Content-Type", "text/plain; charset=utf-8")
    return error.message.encode("utf-8")


def jsonBody(request: Request, value: object, code: int = 200) -> bytes:
    """
    C{value} as httpbin (Flask's C{jsonify}) writes it: indented, keys sorted,
    non-ASCII escaped, a trailing newline.
    """
    request.setResponseCode(code)
    request.setHeader("Content-Type", "application/json")
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("ascii")


def textBody(request: Request, text: str, contentType: str) -> bytes:
    """
    C{text} in UTF-8 with its content type.
    """
    request.setHeader("Content-Type", contentType)
    return text.encode("utf-8")


def pathInt(segment: str) -> int:
    """
    A whole number from a path segment, as Flask's C{<int:...>} converter takes
    it: ASCII digits only, else 404.  Absurdly long numbers come back as
    C{10 ** MAX_DIGITS}, which every endpoint caps.
    """
    if not segment.isascii() or not segment.isdigit():
        raise notFound()
    if len(segment) > MAX_DIGITS:
        return 10**MAX_DIGITS
    return int(segment)


def number(value: str | None, default: float, name: str) -> float:
    """
    A finite number from a query or path parameter; 400 for anything else.
    """
    if value is None:
        return default
    try:
        result = float(value) if len(value) <= 64 else math.nan
    except ValueError:
        result = math.nan
    if not math.isfinite(result):
        raise HttpbinError(400, f"{name} must be a number")
    return result


def wholeNumber(value: str | None, default: int, name: str) -> int:
    """
    An integer from a query parameter (sign allowed); 400 for anything else.
    """
    if value is None:
        return default
    text = value.strip()
    digits = text.lstrip("+-")
    if not digits.isascii() or not digits.isdigit() or len(digits) > MAX_DIGITS:
        raise HttpbinError(400, f"{name} must be a whole number")
    return int(text)
