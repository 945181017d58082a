"""
Cookies: C{/cookies} shows them; C{/cookies/set}, C{/cookies/set/{name}/{value}}
and C{/cookies/delete} change them and redirect to C{/cookies}.

Cookie headers are parsed and written here rather than by twisted.web, whose
C{addCookie} replaces characters it cannot send: values outside RFC 6265's
cookie-octets are sent as quoted strings with backslash escapes (octal for
bytes beyond ASCII), as Werkzeug quotes them, and read back the same way.
Names must be RFC 7230 tokens.
"""

from __future__ import annotations

import re

from twisted.web.server import Request

from netplugins.httpbin.core import queryArgs, queryPairs
from netplugins.httpbin.redirects import redirectTo
from netplugins.httpbin.routing import Context, HttpbinError, jsonBody, route

# Cookies an analytics script on httpbin.org sets, hidden unless show_env.
ENV_COOKIES = frozenset(
    (
        "_gauges_unique",
        "_gauges_unique_year",
        "_gauges_unique_month",
        "_gauges_unique_day",
        "_gauges_unique_hour",
        "__utmz",
        "__utma",
        "__utmb",
    )
)
MAX_COOKIES = 100
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_OCTETS = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
_ESCAPE = re.compile(r"\\([0-3][0-7][0-7]|.)", re.DOTALL)
EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"


def quoteValue(value: str) -> str:
    """
    A cookie value as sent: as is when it needs no quoting, else quoted.
    """
    if _OCTETS.fullmatch(value):
        return value
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def unquoteValue(value: str) -> str:
    """
    The value L{quoteValue} quoted (other values unchanged).
    """
    if len(value) < 2 or not (value[0] == value[-1] == '"'):
        return value

    def unescape(match: re.Match[str]) -> str:
        text = match.group(1)
        return chr(int(text, 8)) if len(text) == 3 else text

    raw = _ESCAPE.sub(unescape, value[1:-1])
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


def requestCookies(request: Request) -> dict[str, str]:
    """
    The cookies the client sent, unquoted; a later duplicate wins.
    """
    cookies: dict[str, str] = {}
    for header in request.requestHeaders.getRawHeaders(b"cookie", []):
        for pair in header.decode("latin-1").split(";")[:MAX_COOKIES]:
            name, eq, value = pair.strip().partition("=")
            if eq and name:
                cookies[name] = unquoteValue(value.strip())
    return cookies


def setCookie(request: Request, name: str, value: str, *extra: str) -> None:
    """
    Add a C{Set-Cookie} header for the root path.

    @raise HttpbinError: 400 for a name that is not a token.
    """
    if not _TOKEN.fullmatch(name):
        raise HttpbinError(400, "cookie names must be tokens")
    attributes = [f"{name}={quoteValue(value)}", *extra, "Path=/"]
    if request.isSecure():
        attributes.append("Secure")
    request.responseHeaders.addRawHeader(b"Set-Cookie", "; ".join(attributes))


def cookies(context: Context, request: Request) -> bytes:
    """
    C{/cookies}: C{{"cookies": {...}}}.
    """
    sent = requestCookies(request)
    if not any(name == "show_env" for name, _ in queryPairs(request)):
        sent = {k: v for k, v in sent.items() if k not in ENV_COOKIES}
    return jsonBody(request, {"cookies": sent})


def setCookies(
    context: Context, request: Request, name: str = "", value: str = ""
) -> bytes:
    """
    C{/cookies/set?name=value...} and C{/cookies/set/{name}/{value}}.
    """
    wanted = {name: value} if name else queryArgs(request)
    for cookieName, cookieValue in list(wanted.items())[:MAX_COOKIES]:
        setCookie(request, cookieName, cookieValue)
    return redirectTo(request, "/cookies")


def deleteCookies(context: Context, request: Request) -> bytes:
    """
    C{/cookies/delete?name...}: expire the named cookies.
    """
    for cookieName in list(queryArgs(request))[:MAX_COOKIES]:
        setCookie(request, cookieName, "", f"Expires={EXPIRED}", "Max-Age=0")
    return redirectTo(request, "/cookies")


def cookieRoute(
    context: Context, request: Request, action: str = "", *rest: str
) -> bytes:
    """
    C{/cookies} and its two actions.
    """
    if action == "" and not rest:
        return cookies(context, request)
    if action == "set" and len(rest) in (0, 2):
        return setCookies(context, request, *rest)
    if action == "delete" and not rest:
        return deleteCookies(context, request)
    raise HttpbinError(404, "Not Found")


ROUTES = {"cookies": route(cookieRoute, args=(0, 3))}
