"""
C{twistd np-echo}: the echo service's command line and its keyword twin.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.python import usage

from netplugins.coerce import choice
from netplugins.echo import DEFAULT_MAX_MESSAGE_SIZE, FRAMINGS, EchoFactory
from netplugins.options import ServiceOptions, positiveInt
from netplugins.service import Common, listeningService, resolveCommon, supervised

#: Idle connections close after this long (--idle-timeout 0: never).
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_LISTEN = ("tcp:7007:interface=127.0.0.1",)


framingChoice = choice(*FRAMINGS, name="--framing")


class Options(ServiceOptions):
    """
    Options for C{twistd np-echo}.
    """

    synopsis = "[options]"
    longdesc = (
        "Echo every message back to its sender, over TCP, UNIX sockets or TLS. "
        "--framing picks what a message is: raw (bytes as they arrive), line "
        "(LF-terminated, echoed with its terminator), netstring, or blocks (a "
        "4-byte big-endian length prefix, as in Foundations of Python Network "
        "Programming, chapter 5). A message over --max-message-size closes the "
        "connection. A client that sends without reading is paused, not "
        "buffered."
    )
    defaultListen = DEFAULT_LISTEN
    tapname = "np-echo"
    defaultIdleTimeout = DEFAULT_IDLE_TIMEOUT

    optParameters = [
        ["framing", None, "raw", "What a message is.", framingChoice],
        [
            "max-message-size",
            None,
            DEFAULT_MAX_MESSAGE_SIZE,
            "The longest line, netstring or block accepted, in bytes.",
            positiveInt,
        ],
    ]

    compData = usage.Completions(optActions={"framing": usage.CompleteList(FRAMINGS)})


def echoService(
    *,
    framing: str = "raw",
    maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
    common: Common | None = None,
    reactor: Any = None,
    **settings: Any,
) -> MultiService:
    """
    The echo service: the keyword twin of C{twistd np-echo}.

    @param framing: C{--framing}, one of L{netplugins.echo.FRAMINGS}.
    @param maxMessageSize: C{--max-message-size}.
    @param common: the shared settings, already made; or instead give their
        keywords (L{netplugins.service.commonSettings}) as C{settings}.
    @raise ValueError: for a bad value.
    """
    common = resolveCommon(common, settings, idleTimeout=DEFAULT_IDLE_TIMEOUT)
    factory = EchoFactory(framing, maxMessageSize)
    factory.closeGrace = common.limits.closeGrace
    factory.reactor = reactor
    listeners = listeningService(
        common, factory, defaultListen=DEFAULT_LISTEN, name="np-echo", reactor=reactor
    )
    return supervised(listeners, common, name="np-echo", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The echo service configured by a parsed command line.
    """
    return echoService(
        framing=config["framing"],
        maxMessageSize=config["max-message-size"],
        common=config.common,
        reactor=reactor,
    )
