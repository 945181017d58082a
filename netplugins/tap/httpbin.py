"""
C{twistd np-httpbin}: the httpbin-compatible test service's settings, its
command line and its keyword twin.
"""

from __future__ import annotations

from typing import Any, ClassVar

from attrs import frozen
from twisted.application.service import MultiService

from netplugins.httpbin import httpbinResource
from netplugins.options import ServiceOptions, positiveFloat
from netplugins.service import served
from netplugins.settings import setting
from netplugins.web.auth import RemoteUserRealm
from netplugins.web.options import HTTPSettings

DEFAULT_LISTEN = ("tcp:8000:interface=127.0.0.1",)
DEFAULT_MAX_DELAY = 10.0


@frozen(kw_only=True)
class HTTPBinSettings(HTTPSettings):
    """
    What np-httpbin is told: the shared and HTTP settings, and the longest
    wait a client may ask for.  The C{auth}/C{checkers} guard C{/protected}.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    maxDelay: float = setting(
        DEFAULT_MAX_DELAY,
        "The longest wait /delay and /drip give a client, in seconds.",
        positiveFloat,
    )


class Options(ServiceOptions):
    """
    Options for C{twistd np-httpbin}.
    """

    settingsType = HTTPBinSettings
    synopsis = "[options]"
    longdesc = (
        "An HTTP request and response test service with httpbin's endpoints and "
        "JSON shapes (/get, /post, /status/418, /redirect/3, /cookies, "
        "/basic-auth/u/p, /digest-auth/auth/u/p, /delay/2, /drip, /stream/5, "
        "/range/1024, /gzip, /image/png, ...), so suites written against "
        "httpbin run against it with only their base URL changed. Beyond "
        "httpbin: /tls shows the negotiated TLS parameters and the verified "
        "client certificate, and /protected requires HTTP Basic checked by the "
        "--auth checkers. Waits and sizes clients ask for are capped "
        "(--max-delay, 100 KiB) and never block other clients."
    )
    tapname = "np-httpbin"
    usesCheckers = True


def httpbinService(
    settings: HTTPBinSettings = HTTPBinSettings(), *, reactor: Any = None
) -> MultiService:
    """
    The httpbin service: the keyword twin of C{twistd np-httpbin} is
    C{httpbinService(HTTPBinSettings(maxDelay=..., listen=(...), ...))}.

    @raise ValueError: for a bad value.
    """
    if reactor is None:
        from twisted.internet import reactor
    common = settings.common()
    portal = common.portal(RemoteUserRealm()) if common.checkers else None
    resource = httpbinResource(
        portal=portal,
        allowPlaintextAuth=settings.allowPlaintextAuth,
        maxDelay=settings.maxDelay,
        reactor=reactor,
    )
    return served(
        common,
        settings.site(resource, reactor=reactor),
        name="np-httpbin",
        defaultListen=settings.defaultListen,
        reactor=reactor,
    )


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The httpbin service configured by a parsed command line.
    """
    return httpbinService(config.settings, reactor=reactor)
