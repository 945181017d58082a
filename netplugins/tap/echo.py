"""
C{twistd np-echo}: the echo service's settings, its command line and its
keyword twin.
"""

from __future__ import annotations

from typing import Any, ClassVar

from attrs import frozen
from twisted.application.service import MultiService
from twisted.python import usage

from netplugins.coerce import choice
from netplugins.echo import DEFAULT_MAX_MESSAGE_SIZE, FRAMINGS, EchoFactory
from netplugins.options import ServiceOptions, ServiceSettings, positiveInt
from netplugins.service import served
from netplugins.settings import override, setting

#: Idle connections close after this long (--idle-timeout 0: never).
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_LISTEN = ("tcp:7007:interface=127.0.0.1",)


framingChoice = choice(*FRAMINGS, name="--framing")


@frozen(kw_only=True)
class EchoSettings(ServiceSettings):
    """
    What np-echo is told: the shared settings, and how messages are framed.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    framing: str = setting("raw", "What a message is.", framingChoice)
    maxMessageSize: int = setting(
        DEFAULT_MAX_MESSAGE_SIZE,
        "The longest line, netstring or block accepted, in bytes.",
        positiveInt,
    )
    idleTimeout: float | None = override(
        ServiceSettings, "idleTimeout", DEFAULT_IDLE_TIMEOUT
    )


class Options(ServiceOptions):
    """
    Options for C{twistd np-echo}.
    """

    settingsType = EchoSettings
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
    tapname = "np-echo"

    compData = usage.Completions(optActions={"framing": usage.CompleteList(FRAMINGS)})


def echoService(
    settings: EchoSettings = EchoSettings(), *, reactor: Any = None
) -> MultiService:
    """
    The echo service: the keyword twin of C{twistd np-echo} is
    C{echoService(EchoSettings(framing=..., listen=(...), ...))}.

    @raise ValueError: for a bad value.
    """
    common = settings.common()
    factory = EchoFactory(settings.framing, settings.maxMessageSize)
    factory.closeGrace = common.limits.closeGrace
    factory.reactor = reactor
    return served(
        common,
        factory,
        name="np-echo",
        defaultListen=settings.defaultListen,
        reactor=reactor,
    )


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The echo service configured by a parsed command line.
    """
    return echoService(config.settings, reactor=reactor)
