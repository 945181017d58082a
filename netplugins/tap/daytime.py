"""
C{twistd np-daytime}: the daytime service's command line and its keyword twin.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from twisted.application.service import MultiService
from twisted.python import usage

from netplugins.coerce import choice
from netplugins.daytime import FORMATS, DaytimeDatagram, DaytimeFactory
from netplugins.options import ServiceOptions
from netplugins.service import Common, listeningService, resolveCommon, supervised

DEFAULT_LISTEN = ("tcp:1313:interface=127.0.0.1", "udp:1313:interface=127.0.0.1")


formatChoice = choice(*FORMATS, name="--format")


class Options(ServiceOptions):
    """
    Options for C{twistd np-daytime}.
    """

    synopsis = "[options]"
    longdesc = (
        "Tell the time: each TCP connection gets it and is closed; each UDP "
        "datagram (even an empty one) gets one datagram back. --format ctime is "
        "RFC 867 daytime, laid out like time.ctime() but in UTC, plus CRLF; "
        "rfc3339 is like 2024-01-01T00:00:00Z plus CRLF; rfc868 is RFC 868 "
        "binary time, 4 bytes of seconds since 1900 (big-endian). Listen on UDP "
        "with --listen udp:PORT[:interface=ADDR]."
    )
    defaultListen = DEFAULT_LISTEN
    tapname = "np-daytime"
    speaksUDP = True

    optParameters = [
        ["format", None, "ctime", "How the time is written.", formatChoice],
    ]

    compData = usage.Completions(optActions={"format": usage.CompleteList(FORMATS)})


def daytimeService(
    *,
    format: str = "ctime",
    common: Common | None = None,
    reactor: Any = None,
    **settings: Any,
) -> MultiService:
    """
    The daytime service, over TCP and UDP: the keyword twin of C{twistd
    np-daytime}.

    @param format: C{--format}, one of L{netplugins.daytime.FORMATS}.
    @param common: the shared settings, already made; or instead give their
        keywords (L{netplugins.service.commonSettings}) as C{settings}.
    @param reactor: also the clock.
    @raise ValueError: for a bad value.
    """
    common = resolveCommon(common, settings)
    seconds = time.time if reactor is None else reactor.seconds
    listeners = listeningService(
        common,
        DaytimeFactory(format, seconds),
        datagram=partial(DaytimeDatagram, format, seconds),
        defaultListen=DEFAULT_LISTEN,
        name="np-daytime",
        reactor=reactor,
    )
    return supervised(listeners, common, name="np-daytime", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The daytime service configured by a parsed command line.
    """
    return daytimeService(
        format=config["format"], common=config.common, reactor=reactor
    )
