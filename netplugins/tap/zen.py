"""
C{twistd np-zen}: the zen service's command line and its keyword twin.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from netplugins.options import ServiceOptions, positiveInt
from netplugins.service import Common, listeningService, resolveCommon, supervised
from netplugins.zen import DEFAULT_MAX_QUESTION_SIZE, ZenFactory

#: Idle connections close after this long (--idle-timeout 0: never).
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_LISTEN = ("tcp:1060:interface=127.0.0.1",)


class Options(ServiceOptions):
    """
    Options for C{twistd np-zen}.
    """

    synopsis = "[options]"
    longdesc = (
        "Answer Zen of Python questions as in Foundations of Python Network "
        "Programming, chapter 7: a client sends b'Beautiful is better than?' and "
        "reads up to the '.' of b'Ugly.'; an unknown question gets b'Error: "
        "unknown aphorism.'. Pipelined questions are answered in order. A "
        "question over --max-question-size closes the connection."
    )
    defaultListen = DEFAULT_LISTEN
    tapname = "np-zen"
    defaultIdleTimeout = DEFAULT_IDLE_TIMEOUT

    optParameters = [
        [
            "max-question-size",
            None,
            DEFAULT_MAX_QUESTION_SIZE,
            "The longest question accepted, in bytes, counting its '?' and any "
            "whitespace before it.",
            positiveInt,
        ],
    ]


def zenService(
    *,
    maxQuestionSize: int = DEFAULT_MAX_QUESTION_SIZE,
    common: Common | None = None,
    reactor: Any = None,
    **settings: Any,
) -> MultiService:
    """
    The zen service: the keyword twin of C{twistd np-zen}.

    @param maxQuestionSize: C{--max-question-size}.
    @param common: the shared settings, already made; or instead give their
        keywords (L{netplugins.service.commonSettings}) as C{settings}.
    @raise ValueError: for a bad value.
    """
    common = resolveCommon(common, settings, idleTimeout=DEFAULT_IDLE_TIMEOUT)
    factory = ZenFactory(maxQuestionSize)
    factory.closeGrace = common.limits.closeGrace
    factory.reactor = reactor
    listeners = listeningService(
        common,
        factory,
        defaultListen=DEFAULT_LISTEN,
        name="np-zen",
        reactor=reactor,
    )
    return supervised(listeners, common, name="np-zen", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The zen service configured by a parsed command line.
    """
    return zenService(
        maxQuestionSize=config["max-question-size"],
        common=config.common,
        reactor=reactor,
    )
