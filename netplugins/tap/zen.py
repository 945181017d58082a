"""
C{twistd np-zen}: the zen service's settings, its command line and its keyword
twin.
"""

from __future__ import annotations

from typing import Any, ClassVar

from attrs import frozen
from twisted.application.service import MultiService

from netplugins.options import ServiceOptions, ServiceSettings, positiveInt
from netplugins.service import served
from netplugins.settings import override, setting
from netplugins.zen import DEFAULT_MAX_QUESTION_SIZE, ZenFactory

#: Idle connections close after this long (--idle-timeout 0: never).
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_LISTEN = ("tcp:1060:interface=127.0.0.1",)


@frozen(kw_only=True)
class ZenSettings(ServiceSettings):
    """
    What np-zen is told: the shared settings and the question size limit.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    maxQuestionSize: int = setting(
        DEFAULT_MAX_QUESTION_SIZE,
        "The longest question accepted, in bytes, counting its '?' and any "
        "whitespace before it.",
        positiveInt,
    )
    idleTimeout: float | None = override(
        ServiceSettings, "idleTimeout", DEFAULT_IDLE_TIMEOUT
    )


class Options(ServiceOptions):
    """
    Options for C{twistd np-zen}.
    """

    settingsType = ZenSettings
    synopsis = "[options]"
    longdesc = (
        "Answer Zen of Python questions as in Foundations of Python Network "
        "Programming, chapter 7: a client sends b'Beautiful is better than?' and "
        "reads up to the '.' of b'Ugly.'; an unknown question gets b'Error: "
        "unknown aphorism.'. Pipelined questions are answered in order. A "
        "question over --max-question-size closes the connection."
    )
    tapname = "np-zen"


def zenService(
    settings: ZenSettings = ZenSettings(), *, reactor: Any = None
) -> MultiService:
    """
    The zen service: the keyword twin of C{twistd np-zen} is
    C{zenService(ZenSettings(maxQuestionSize=..., listen=(...), ...))}.

    @raise ValueError: for a bad value.
    """
    common = settings.common()
    factory = ZenFactory(settings.maxQuestionSize)
    factory.closeGrace = common.limits.closeGrace
    factory.reactor = reactor
    return served(
        common,
        factory,
        name="np-zen",
        defaultListen=settings.defaultListen,
        reactor=reactor,
    )


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The zen service configured by a parsed command line.
    """
    return zenService(config.settings, reactor=reactor)
