"""
What the XML-RPC and JSON-RPC faces need of a set of methods (L{Methods}),
and the errors they answer with.

Errors are L{RPCError}s with the codes both XML-RPC (the fault code
interoperability specification) and JSON-RPC 2.0 use; a method may add its
own from the range both leave to servers (-32000 to -32099).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from attrs import frozen
from twisted.internet.defer import Deferred

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: An exception a function raised (JSON-RPC; XML-RPC says L{FUNCTION_FAULT}).
SERVER_ERROR = -32000
#: The fault code C{SimpleXMLRPCServer} gives a function's exception.
FUNCTION_FAULT = 1

#: The integers XML-RPC carries: C{<int>} within 32 bits, C{<i8>} within 64.
MIN_I8 = -(2**63)
MAX_I8 = 2**63 - 1


class RPCError(Exception):
    """
    An error reply: a code and a message for the client, never a traceback.

    @ivar faultCode: the code an XML-RPC fault carries; C{code} unless said.
    """

    def __init__(self, code: int, message: str, faultCode: int | None = None):
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.faultCode = code if faultCode is None else faultCode


@frozen
class Method:
    """
    One method as introspection describes it: its signatures (return type
    first, XML-RPC type names), or C{None} when it has none to give, and its
    help text.
    """

    name: str
    signatures: tuple[tuple[str, ...], ...] | None
    help: str


class Methods(Protocol):
    """
    A set of methods the XML-RPC and JSON-RPC faces serve.
    """

    def describe(self) -> Mapping[str, Method]:
        """
        Every method by name (the faces add their C{system.*} ones).
        """

    def call(self, name: str, params: list[Any] | dict[str, Any]) -> Deferred[Any]:
        """
        Run C{name} with positional C{params} (a list) or named ones (a dict,
        from JSON-RPC).

        @raise RPCError: at once or through the Deferred, for an unknown
            method, bad parameters or the method's own error.
        """


def outsideI8(value: Any) -> bool:
    """
    Whether C{value} holds an integer XML-RPC cannot carry (outside 64 bits),
    anywhere in its lists, tuples and dicts (keys included).
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, int):
            if not MIN_I8 <= item <= MAX_I8:
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False
