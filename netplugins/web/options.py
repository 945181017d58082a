"""
The HTTP settings every netplugins web service takes (C{--max-body-size},
C{--max-header-size}, C{--header-timeout}, C{--body-timeout},
C{--keepalive-timeout}, C{--hsts}, C{--access-log}, C{--allow-plaintext-auth}),
declared once in L{HTTPSettings}, and the hardened site they configure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import frozen
from twisted.web.resource import IResource

from netplugins.limits.settings import DEFAULT_CLOSE_GRACE
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


class HTTPOptionsMixin:
    """
    The HTTP options of a web service's L{netplugins.options.ServiceOptions};
    L{httpSettings} turns them into the keyword twin's settings.
    """

    optParameters: ClassVar[list[Any]] = [
        [
            "max-body-size",
            None,
            DEFAULT_MAX_BODY_SIZE,
            "The largest request body accepted, in bytes.",
            positiveInt,
        ],
        [
            "max-header-size",
            None,
            DEFAULT_MAX_HEADER_SIZE,
            "The largest request line plus headers, in bytes.",
            positiveInt,
        ],
        [
            "header-timeout",
            None,
            DEFAULT_HEADER_TIMEOUT,
            "Seconds a client has to send a request's line and headers.",
            positiveFloat,
        ],
        [
            "body-timeout",
            None,
            DEFAULT_BODY_TIMEOUT,
            "Seconds a client has to send a request's body, once its headers are in.",
            positiveFloat,
        ],
        [
            "keepalive-timeout",
            None,
            DEFAULT_IDLE_TIMEOUT,
            "Seconds a connection may stay silent between requests.",
            positiveFloat,
        ],
        [
            "hsts",
            None,
            None,
            "Send Strict-Transport-Security with this max-age on TLS connections.",
            nonNegativeInt,
        ],
        [
            "access-log",
            None,
            "-",
            "Where the combined-format access log goes: a file, - for the twistd "
            "log, none for nowhere.",
        ],
    ]
    optFlags: ClassVar[list[Any]] = [
        [
            "allow-plaintext-auth",
            None,
            "Accept HTTP Basic credentials over connections without TLS.",
        ],
    ]


def httpSettings(config: Mapping[str, Any]) -> dict[str, Any]:
    """
    The keyword-twin settings of the L{HTTPOptionsMixin} options in a parsed
    command line.
    """
    return {
        "maxBodySize": config["max-body-size"],
        "maxHeaderSize": config["max-header-size"],
        "headerTimeout": config["header-timeout"],
        "bodyTimeout": config["body-timeout"],
        "keepaliveTimeout": config["keepalive-timeout"],
        "hsts": config["hsts"],
        "accessLog": config["access-log"],
        "allowPlaintextAuth": config["allow-plaintext-auth"],
    }


def serviceSite(
    resource: IResource,
    *,
    maxBodySize: int = DEFAULT_MAX_BODY_SIZE,
    maxHeaderSize: int = DEFAULT_MAX_HEADER_SIZE,
    headerTimeout: float = DEFAULT_HEADER_TIMEOUT,
    bodyTimeout: float = DEFAULT_BODY_TIMEOUT,
    keepaliveTimeout: float = DEFAULT_IDLE_TIMEOUT,
    hsts: int | None = None,
    accessLog: str | AccessLog | None = "-",
    closeGrace: float = DEFAULT_CLOSE_GRACE,
    reactor: Any = None,
) -> HardenedSite:
    """
    The hardened site a web service's keyword twin serves C{resource} from,
    given the twin's HTTP settings (the keywords of L{httpSettings} but
    C{allowPlaintextAuth}, which guards the resource, not the site).

    @param accessLog: C{--access-log}: a path, C{"-"}, C{"none"}/C{None} or an
        L{AccessLog}; see L{accessLogFor}.
    @param closeGrace: the shared C{--close-grace}.
    @raise ValueError: for a limit that is not positive.
    """
    return hardenedSite(
        resource,
        maxBodySize=maxBodySize,
        maxHeaderSize=maxHeaderSize,
        headerTimeout=headerTimeout,
        bodyTimeout=bodyTimeout,
        closeGrace=closeGrace,
        idleTimeout=keepaliveTimeout,
        hsts=hsts,
        accessLog=accessLogFor(accessLog, reactor=reactor),
        reactor=reactor,
    )
