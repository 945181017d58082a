"""
C{twistd np-daytime}: the daytime service's settings, its command line and its
keyword twin.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, ClassVar

from attrs import frozen
from twisted.application.service import MultiService
from twisted.python import usage

from netplugins.coerce import choice
from netplugins.daytime import FORMATS, DaytimeDatagram, DaytimeFactory
from netplugins.options import ServiceOptions, ServiceSettings
from netplugins.service import served
from netplugins.settings import setting

DEFAULT_LISTEN = ("tcp:1313:interface=127.0.0.1", "udp:1313:interface=127.0.0.1")


formatChoice = choice(*FORMATS, name="--format")


@frozen(kw_only=True)
class DaytimeSettings(ServiceSettings):
    """
    What np-daytime is told: the shared settings and how the time is written.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    format: str = setting("ctime", "How the time is written.", formatChoice)


class Options(ServiceOptions):
    """
    Options for C{twistd np-daytime}.
    """

    settingsType = DaytimeSettings
    synopsis = "[options]"
    longdesc = (
        "Tell the time: each TCP connection gets it and is closed; each UDP "
        "datagram (even an empty one) gets one datagram back. --format ctime is "
        "RFC 867 daytime, laid out like time.ctime() but in UTC, plus CRLF; "
        "rfc3339 is like 2024-01-01T00:00:00Z plus CRLF; rfc868 is RFC 868 "
        "binary time, 4 bytes of seconds since 1900 (big-endian). Listen on UDP "
        "with --listen udp:PORT[:interface=ADDR]."
    )
    tapname = "np-daytime"
    speaksUDP = True

    compData = usage.Completions(optActions={"format": usage.CompleteList(FORMATS)})


def daytimeService(
    settings: DaytimeSettings = DaytimeSettings(), *, reactor: Any = None
) -> MultiService:
    """
    The daytime service, over TCP and UDP: the keyword twin of C{twistd
    np-daytime} is C{daytimeService(DaytimeSettings(format=..., ...))}.

    @param reactor: also the clock.
    @raise ValueError: for a bad value.
    """
    common = settings.common()
    seconds = time.time if reactor is None else reactor.seconds
    factory = DaytimeFactory(settings.format, seconds)
    factory.closeGrace = common.limits.closeGrace
    factory.reactor = reactor
    return served(
        common,
        factory,
        name="np-daytime",
        defaultListen=settings.defaultListen,
        datagram=partial(DaytimeDatagram, settings.format, seconds),
        reactor=reactor,
    )


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The daytime service configured by a parsed command line.
    """
    return daytimeService(config.settings, reactor=reactor)
