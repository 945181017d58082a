"""
np-httpbin: an HTTP request and response test service with httpbin's
endpoints and JSON shapes, on twisted.web.

The endpoints live in one module per family (L{core} request echo and status
codes, L{redirects}, L{auth}, L{dynamic} data, L{formats}, L{cookies},
L{cache}, L{tlsinfo}); each exports a C{ROUTES} table, merged here into one
L{Router}, which L{httpbinResource} builds.  The service
(L{netplugins.tap.httpbin}) serves it through the shared hardened HTTP layer,
L{netplugins.web.http}.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.portal import Portal
from twisted.web.server import Request

from netplugins.httpbin import (
    auth,
    cache,
    cookies,
    core,
    dynamic,
    formats,
    redirects,
    tlsinfo,
)
from netplugins.httpbin.routing import Context, Route, Router, route, textBody

INDEX = """<!DOCTYPE html>
<html>
  <head><meta charset="utf-8"><title>np-httpbin</title></head>
  <body>
    <h1>np-httpbin</h1>
    <p>An HTTP request and response service with httpbin's endpoints.</p>
    <ul>
{items}
    </ul>
  </body>
</html>
"""


def index(context: Context, request: Request) -> bytes:
    """
    C{/}: a page listing the endpoints.
    """
    items = "\n".join(
        f'      <li><a href="/{name}">/{name}</a></li>'
        for name in sorted(ROUTES)
        if name
    )
    return textBody(request, INDEX.format(items=items), "text/html; charset=utf-8")


ROUTES: dict[str, Route] = {
    "": route(index),
    **core.ROUTES,
    **redirects.ROUTES,
    **auth.ROUTES,
    **dynamic.ROUTES,
    **formats.ROUTES,
    **cookies.ROUTES,
    **cache.ROUTES,
    **tlsinfo.ROUTES,
}


def httpbinResource(
    *,
    portal: Portal | None = None,
    allowPlaintextAuth: bool = False,
    maxDelay: float = 10.0,
    reactor: Any = None,
) -> Router:
    """
    The np-httpbin root resource.

    @param portal: checks C{/protected}'s Basic credentials; make it with
        C{common.portal(RemoteUserRealm())}.  Without one, C{/protected}
        refuses everyone.
    @param allowPlaintextAuth: accept C{/protected}'s credentials without TLS.
    @param maxDelay: the longest wait (C{/delay}, C{/drip}) a client gets.
    @param reactor: for timers; the global reactor when C{None}.
    """
    if reactor is None:
        from twisted.internet import reactor
    protected = None
    if portal is not None:
        protected = auth.protectedResource(
            portal, allowPlaintextAuth=allowPlaintextAuth, reactor=reactor
        )
    if not 0 < maxDelay < float("inf"):
        raise ValueError(f"maxDelay must be a positive number, not {maxDelay!r}")
    return Router(
        ROUTES, Context(reactor=reactor, protected=protected, maxDelay=maxDelay)
    )
