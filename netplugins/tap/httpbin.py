"""
C{twistd np-httpbin}: the httpbin-compatible test service's command line and
its keyword twin.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from netplugins.httpbin import httpbinResource
from netplugins.options import ServiceOptions, positiveFloat
from netplugins.service import Common, listeningService, resolveCommon, supervised
from netplugins.web.accesslog import AccessLog
from netplugins.web.auth import RemoteUserRealm
from netplugins.web.http import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
)
from netplugins.web.options import HTTPOptionsMixin, httpSettings, serviceSite

DEFAULT_LISTEN = ("tcp:8000:interface=127.0.0.1",)
DEFAULT_MAX_DELAY = 10.0


class Options(ServiceOptions, HTTPOptionsMixin):
    """
    Options for C{twistd np-httpbin}.
    """

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
    defaultListen = DEFAULT_LISTEN
    tapname = "np-httpbin"
    usesCheckers = True

    optParameters = [
        [
            "max-delay",
            None,
            DEFAULT_MAX_DELAY,
            "The longest wait /delay and /drip give a client, in seconds.",
            positiveFloat,
        ],
    ]


def httpbinService(
    *,
    maxDelay: float = DEFAULT_MAX_DELAY,
    maxBodySize: int = DEFAULT_MAX_BODY_SIZE,
    maxHeaderSize: int = DEFAULT_MAX_HEADER_SIZE,
    headerTimeout: float = DEFAULT_HEADER_TIMEOUT,
    bodyTimeout: float = DEFAULT_BODY_TIMEOUT,
    keepaliveTimeout: float = DEFAULT_IDLE_TIMEOUT,
    hsts: int | None = None,
    accessLog: str | AccessLog | None = "-",
    allowPlaintextAuth: bool = False,
    common: Common | None = None,
    reactor: Any = None,
    **settings: Any,
) -> MultiService:
    """
    The httpbin service: the keyword twin of C{twistd np-httpbin}.

    @param accessLog: C{--access-log}: a path, C{"-"}, C{"none"}/C{None} or an
        L{AccessLog}.
    @param common: the shared settings, already made; or instead give their
        keywords (L{netplugins.service.commonSettings}) as C{settings}.  Its
        checkers (C{auth=[...]}) guard C{/protected}.
    @raise ValueError: for a bad value.
    """
    if reactor is None:
        from twisted.internet import reactor
    common = resolveCommon(common, settings)
    portal = common.portal(RemoteUserRealm()) if common.checkers else None
    resource = httpbinResource(
        portal=portal,
        allowPlaintextAuth=allowPlaintextAuth,
        maxDelay=maxDelay,
        reactor=reactor,
    )
    site = serviceSite(
        resource,
        maxBodySize=maxBodySize,
        maxHeaderSize=maxHeaderSize,
        headerTimeout=headerTimeout,
        bodyTimeout=bodyTimeout,
        keepaliveTimeout=keepaliveTimeout,
        hsts=hsts,
        accessLog=accessLog,
        closeGrace=common.limits.closeGrace,
        reactor=reactor,
    )
    listeners = listeningService(
        common, site, defaultListen=DEFAULT_LISTEN, name="np-httpbin", reactor=reactor
    )
    return supervised(listeners, common, name="np-httpbin", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The httpbin service configured by a parsed command line.
    """
    return httpbinService(
        maxDelay=config["max-delay"],
        **httpSettings(config),
        common=config.common,
        reactor=reactor,
    )
