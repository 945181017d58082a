"""
Redirects: C{/redirect/{n}}, C{/relative-redirect/{n}},
C{/absolute-redirect/{n}} (chains ending at C{/get}), C{/redirect-to} (any
target, but never a script, a C{data:} URL or a header split) and
C{/links/{n}[/{offset}]}.
"""

from __future__ import annotations

import re
from html import escape

from twisted.web.server import Request

from netplugins.httpbin.core import absoluteURL, queryArgs
from netplugins.httpbin.routing import (
    ALL_METHODS,
    Context,
    HttpbinError,
    notFound,
    pathInt,
    route,
)

MAX_LINKS = 200
# Schemes a browser would run or render as a document of their own, rather
# than fetch: a redirect to them is an injection, not a test.
REFUSED_SCHEMES = ("javascript", "data", "vbscript", "file")
_SCHEME = re.compile(r"^\s*([a-zA-Z][a-zA-Z0-9+.\-]*)\s*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def redirectTo(request: Request, location: str, code: int = 302) -> bytes:
    """
    Redirect to C{location}, with the short HTML body Werkzeug writes.
    """
    request.setResponseCode(code)
    request.setHeader("Location", location)
    request.setHeader("Content-Type", "text/html; charset=utf-8")
    target = escape(location)
    return (
        "<!doctype html>\n<html lang=en>\n<title>Redirecting...</title>\n"
        "<h1>Redirecting...</h1>\n<p>You should be redirected automatically to "
        f'the target URL: <a href="{target}">{target}</a>. If not, click the '
        "link.\n"
    ).encode()


def _positive(segment: str) -> int:
    n = pathInt(segment)
    if n < 1:
        raise notFound()
    return n


def redirect(context: Context, request: Request, n: str) -> bytes:
    """
    C{/redirect/{n}}: C{n} relative redirects, or absolute with
    C{?absolute=true}, then C{/get}.
    """
    count = _positive(n)
    absolute = queryArgs(request).get("absolute", "false").lower() == "true"
    if count == 1:
        path = "/get"
    else:
        kind = "absolute" if absolute else "relative"
        path = f"/{kind}-redirect/{count - 1}"
    return redirectTo(request, absoluteURL(request, path) if absolute else path)


def relativeRedirect(context: Context, request: Request, n: str) -> bytes:
    """
    C{/relative-redirect/{n}}.
    """
    count = _positive(n)
    return redirectTo(
        request, "/get" if count == 1 else f"/relative-redirect/{count - 1}"
    )


def absoluteRedirect(context: Context, request: Request, n: str) -> bytes:
    """
    C{/absolute-redirect/{n}}.
    """
    count = _positive(n)
    path = "/get" if count == 1 else f"/absolute-redirect/{count - 1}"
    return redirectTo(request, absoluteURL(request, path))


def checkedLocation(url: str) -> str:
    """
    C{url} if it is safe to send as a C{Location}.

    @raise HttpbinError: 400 for control characters (CR and LF would split the
        response) or a L{REFUSED_SCHEMES} scheme.
    """
    if _CONTROL.search(url):
        raise HttpbinError(400, "control characters are not allowed in url")
    # Browsers drop tabs and newlines and ignore case before reading the
    # scheme: so does this check (the control characters are refused anyway).
    match = _SCHEME.match(url)
    if match and match.group(1).lower() in REFUSED_SCHEMES:
        raise HttpbinError(400, f"refusing to redirect to a {match.group(1)}: URL")
    return url


def redirectToURL(context: Context, request: Request) -> bytes:
    """
    C{/redirect-to?url=...[&status_code=3xx]}: redirect anywhere safe.
    """
    args = {k.lower(): v for k, v in queryArgs(request).items()}
    url = args.get("url")
    if not url:
        raise HttpbinError(400, "url is required")
    code = 302
    wanted = args.get("status_code", "")
    if len(wanted) == 3 and wanted.isdigit() and 300 <= int(wanted) < 400:
        code = int(wanted)
    return redirectTo(request, checkedLocation(url), code)


def links(context: Context, request: Request, n: str, offset: str = "") -> bytes:
    """
    C{/links/{n}/{offset}}: a page of C{n} links to its siblings;
    C{/links/{n}} redirects to the first.
    """
    count = min(max(1, pathInt(n)), MAX_LINKS)
    if not offset:
        return redirectTo(request, f"/links/{count}/0")
    current = pathInt(offset)
    html = ["<html><head><title>Links</title></head><body>"]
    for i in range(count):
        if i == current:
            html.append(f"{i} ")
        else:
            html.append(f"<a href='/links/{count}/{i}'>{i}</a> ")
    html.append("</body></html>")
    request.setHeader("Content-Type", "text/html; charset=utf-8")
    return "".join(html).encode("utf-8")


ROUTES = {
    "redirect": route(redirect, args=1),
    "relative-redirect": route(relativeRedirect, args=1),
    "absolute-redirect": route(absoluteRedirect, args=1),
    "redirect-to": route(redirectToURL, ALL_METHODS),
    "links": route(links, args=(1, 2)),
}
