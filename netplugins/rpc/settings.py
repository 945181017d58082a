"""
The settings both RPC services (C{np-kv}, C{np-rpc}) declare, made once here:
each service's settings class says C{maxNesting: int = nestingSetting()}.
"""

from __future__ import annotations

from typing import Any

from netplugins.options import positiveInt
from netplugins.rpc.jsonrpc import DEFAULT_MAX_BATCH
from netplugins.rpc.web import MAX_NESTING
from netplugins.safepickle import DEFAULT_MAX_NESTING
from netplugins.settings import flag, setting

#: The C{--no-nil} help, C{what} saying what answers true.
NO_NIL_HELP = (
    "Never send <nil/> in XML-RPC answers (an extension spec-strict clients "
    "such as Ruby's refuse): {what} true instead, and a nil inside an answer "
    "is a fault."
)


def answerableNesting(value: str) -> int:
    """
    Coerce C{--max-nesting}: positive, and at most L{MAX_NESTING}.
    """
    number = positiveInt(value)
    if number > MAX_NESTING:
        raise ValueError(
            f"maximum nesting must be at most {MAX_NESTING} (deeper values "
            f"could not be read back), not {number}"
        )
    return number


answerableNesting.coerceDoc = (  # type: ignore[attr-defined]
    f"A positive whole number, at most {MAX_NESTING}."
)


def nestingSetting() -> Any:
    """
    C{--max-nesting}.
    """
    return setting(
        DEFAULT_MAX_NESTING,
        "How deeply arrays and structs may nest in a request.",
        answerableNesting,
    )


def batchSetting() -> Any:
    """
    C{--max-batch}.
    """
    return setting(
        DEFAULT_MAX_BATCH,
        "The most calls in one JSON-RPC batch or system.multicall.",
        positiveInt,
    )


def noNilFlag(what: str) -> Any:
    """
    C{--no-nil}, its help saying that C{what} answers true.
    """
    return flag(NO_NIL_HELP.format(what=what))
