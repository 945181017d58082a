"""
The HTTP settings every netplugins web service takes (C{--max-body-size},
C{--max-header-size}, C{--header-timeout}, C{--body-timeout},
C{--keepalive-timeout}, C{--hsts}, C{--access-log}, C{--allow-plaintext-auth}),
declared once in L{HTTPSettings}, and the hardened site they configure.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.web.resource import IResource

from netplugins.options import ServiceSettings, positiveFloat, positiveInt
from netplugins.settings import flag, setting
from netplugins.web.accesslog import AccessLog
from netplugins.web.http import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
    HardenedSite,
    accessLogFor,
    hardenedSite,
)


def nonNegativeInt(value: str) -> int:
    """
    Coerce a whole number of seconds, zero allowed.
    """
    number = int(value)
    if number < 0:
        raise ValueError(f"expected zero or more, not {number}")
    return number


nonNegativeInt.coerceDoc = "Seconds, 0 or more."  # type: ignore[attr-defined]


@frozen(kw_only=True)
class HTTPSettings(ServiceSettings):
    """
    The settings of a web service: the shared ones, the request limits and
    deadlines, HSTS, the access log, and whether HTTP Basic credentials may
    travel in the clear.  A web service's settings class subclasses it.
    """

    maxBodySize: int = setting(
        DEFAULT_MAX_BODY_SIZE,
        "The largest request body accepted, in bytes.",
        positiveInt,
    )
    maxHeaderSize: int = setting(
        DEFAULT_MAX_HEADER_SIZE,
        "The largest request line plus headers, in bytes.",
        positiveInt,
    )
    headerTimeout: float = setting(
        DEFAULT_HEADER_TIMEOUT,
        "Seconds a client has to send a request's line and headers.",
        positiveFloat,
    )
    bodyTimeout: float = setting(
        DEFAULT_BODY_TIMEOUT,
        "Seconds a client has to send a request's body, once its headers are in.",
        positiveFloat,
    )
    keepaliveTimeout: float = setting(
        DEFAULT_IDLE_TIMEOUT,
        "Seconds a connection may stay silent between requests.",
        positiveFloat,
    )
    hsts: int | None = setting(
        None,
        "Send Strict-Transport-Security with this max-age on TLS connections.",
        nonNegativeInt,
    )
    #: In Python, C{None} is nowhere too.
    accessLog: str | None = setting(
        "-",
        "Where the combined-format access log goes: a file, - for the twistd "
        "log, none for nowhere.",
    )
    allowPlaintextAuth: bool = flag(
        "Accept HTTP Basic credentials over connections without TLS."
    )
    #: An access log made already, to share with other services; used
    #: instead of C{accessLog}.
    sharedAccessLog: AccessLog | None = None

    def site(self, resource: IResource, reactor: Any = None) -> HardenedSite:
        """
        The hardened site serving C{resource} under these limits, deadlines
        (the shared C{closeGrace} among them) and access log;
        C{allowPlaintextAuth} guards the resource, not the site.

        @raise ValueError: for a bad access log.
        """
        return hardenedSite(
            resource,
            maxBodySize=self.maxBodySize,
            maxHeaderSize=self.maxHeaderSize,
            headerTimeout=self.headerTimeout,
            bodyTimeout=self.bodyTimeout,
            closeGrace=self.closeGrace,
            idleTimeout=self.keepaliveTimeout,
            hsts=self.hsts,
            accessLog=(
                self.sharedAccessLog
                if self.sharedAccessLog is not None
                else accessLogFor(self.accessLog, reactor=reactor)
            ),
            reactor=reactor,
        )
