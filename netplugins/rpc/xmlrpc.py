"""
The XML-RPC face, at C{/RPC2}: a set of L{Methods} plus
C{system.listMethods}, C{system.methodHelp}, C{system.methodSignature} and
C{system.multicall}.

Requests are parsed with defusedxml's expat parser (no DTDs, no entities: no
billion laughs, no XXE) feeding the standard library's C{Unmarshaller}, with
the element depth bounded while parsing and the value nesting checked after.
Bytes travel as C{base64} (C{xmlrpc.client.Binary}), C{None} as C{<nil/>}
(or, with C{allowNone} false, a C{None} result as C{true} and a nested one as
a fault), integers past 32 bits as C{<i8>} (past 64, a fault).  Every error
is a fault with one of the codes in L{netplugins.rpc.methods}, never a
traceback.
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Callable
from typing import Any

from defusedxml.xmlrpc import DefusedExpatParser
from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from netplugins.rpc.body import RPCResource
from netplugins.rpc.methods import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_I8,
    METHOD_NOT_FOUND,
    MIN_I8,
    PARSE_ERROR,
    Methods,
    RPCError,
)
from netplugins.safepickle import DEFAULT_MAX_NESTING, RefusedPickleError, checkNesting

DEFAULT_MAX_CALLS = 100
SYSTEM_METHODS = {
    "system.listMethods": "system.listMethods(): the methods this server has.",
    "system.methodHelp": "system.methodHelp(name): what the method does.",
    "system.methodSignature": "system.methodSignature(name): its signatures.",
    "system.multicall": "system.multicall(calls): several calls in one request; "
    "each call is {'methodName': ..., 'params': [...]}, each answer [result] "
    "or a fault struct.",
}


class _DepthLimited:
    """
    An expat target passing events to an C{Unmarshaller}, refusing elements
    nested deeper than C{maxDepth} as they open.
    """

    def __init__(self, target: xmlrpc.client.Unmarshaller, maxDepth: int):
        self._target = target
        self._depth = 0
        self._maxDepth = maxDepth
        self.data = target.data
        self.xml = target.xml

    def start(self, tag: str, attrs: Any) -> None:
        self._depth += 1
        if self._depth > self._maxDepth:
            raise RPCError(INVALID_REQUEST, "request nested too deeply")
        self._target.start(tag, attrs)

    def end(self, tag: str) -> None:
        self._depth -= 1
        self._target.end(tag)


def parseCall(
    body: bytes, maxNesting: int = DEFAULT_MAX_NESTING
) -> tuple[str, list[Any]]:
    """
    Parse an XML-RPC C{methodCall}.

    @return: the method name and parameters.
    @raise RPCError: for anything but a well-formed, safe, bounded call.
    """
    unmarshaller = xmlrpc.client.Unmarshaller(use_builtin_types=True)
    # A value level is three elements (value, array, data or struct, member,
    # value); the call itself is a few more.
    target = _DepthLimited(unmarshaller, 3 * maxNesting + 6)
    parser = DefusedExpatParser(target, forbid_dtd=True)  # type: ignore[arg-type]
    try:
        parser.feed(body)
        parser.close()
        params = unmarshaller.close()
        name = unmarshaller.getmethodname()
    except RPCError:
        raise
    except Exception as e:
        raise RPCError(
            PARSE_ERROR, f"not well-formed XML-RPC ({type(e).__name__})"
        ) from None
    if not isinstance(name, str):
        raise RPCError(INVALID_REQUEST, "not an XML-RPC methodCall")
    try:
        checkNesting(list(params), maxNesting)
    except RefusedPickleError:
        raise RPCError(INVALID_REQUEST, "request nested too deeply") from None
    return name, list(params)


class _Marshaller(xmlrpc.client.Marshaller):
    """
    The standard library's marshaller, with C{<i8>} for integers past 32 bits
    (it refuses them).
    """

    dispatch = dict(xmlrpc.client.Marshaller.dispatch)

    def dump_long(self, value: Any, write: Callable[[str], object]) -> None:
        if xmlrpc.client.MININT <= value <= xmlrpc.client.MAXINT:
            tag = "int"
        elif MIN_I8 <= value <= MAX_I8:
            tag = "i8"
        else:
            raise OverflowError("int exceeds XML-RPC limits")
        write(f"<value><{tag}>{int(value)}</{tag}></value>\n")

    dispatch[int] = dump_long  # type: ignore[assignment]


def dumpResponse(result: Any, allowNone: bool = True) -> bytes:
    """
    An XML-RPC C{methodResponse}, or a fault for a value XML-RPC cannot carry.

    @param allowNone: whether C{None} may go as C{<nil/>}, an extension.
    """
    try:
        params = _Marshaller("utf-8", allowNone).dumps((result,))
        return (
            "<?xml version='1.0'?>\n<methodResponse>\n" + params + "</methodResponse>\n"
        ).encode("utf-8")
    except (OverflowError, TypeError, ValueError, RecursionError) as e:
        return dumpFault(
            RPCError(INTERNAL_ERROR, f"the value cannot be sent over XML-RPC: {e}")
        )


def dumpFault(error: RPCError) -> bytes:
    """
    An XML-RPC fault response.
    """
    return xmlrpc.client.dumps(
        xmlrpc.client.Fault(error.faultCode, error.message), methodresponse=True
    ).encode("utf-8")


class XMLRPCResource(RPCResource):
    """
    The C{/RPC2} resource.
    """

    log = Logger()
    protocolName = "XML-RPC"
    contentType = b"text/xml; charset=utf-8"

    def __init__(
        self,
        methods: Methods,
        *,
        maxNesting: int = DEFAULT_MAX_NESTING,
        maxCalls: int = DEFAULT_MAX_CALLS,
        allowNone: bool = True,
    ):
        """
        @param allowNone: whether C{None} may go as C{<nil/>}; if not, a
            method that returns nothing (its signatures return C{nil}, or it
            has none, as a registry's function) answers C{true} instead, as
            spec-strict clients expect, and any other C{None} is a fault.
        """
        super().__init__(methods, maxNesting=maxNesting)
        self.maxCalls = maxCalls
        self.allowNone = allowNone

    def answer(self, body: bytes, request: Request) -> Deferred[bytes | None]:
        try:
            name, params = parseCall(body, self.maxNesting)
            d = self.dispatch(name, params)
        except RPCError as e:
            d = fail(e)
        return d.addCallbacks(
            lambda result: dumpResponse(self._plain(result, name), self.allowNone),
            self._ebFault,
            errbackArgs=(request,),
        )

    def _plain(self, result: Any, name: str) -> Any:
        """
        The result of C{name} as answered: without C{<nil/>}, C{True} when
        C{name} returns nothing.
        """
        if result is not None or self.allowNone:
            return result
        described = self.methods.describe().get(name)
        if described is None:
            return result
        signatures = described.signatures
        if signatures is None or all(s[0] == "nil" for s in signatures):
            return True
        return result

    def _ebFault(self, failure: Failure, request: Request) -> bytes:
        if isinstance(failure.value, RPCError):
            return dumpFault(failure.value)
        self.log.failure(
            "XML-RPC call from {peer} failed",
            failure=failure,
            peer=str(request.getClientAddress()),
        )
        return dumpFault(RPCError(INTERNAL_ERROR, "internal error"))

    def dispatch(self, name: str, params: list[Any]) -> Deferred[Any]:
        """
        Run one call, C{system.*} included.

        @raise RPCError: for an unknown method or bad parameters.
        """
        if name == "system.multicall":
            if len(params) != 1 or not isinstance(params[0], list):
                raise RPCError(INVALID_PARAMS, "system.multicall takes one array")
            return self.multicall(params[0])
        if name == "system.listMethods":
            return succeed(sorted([*self.methods.describe(), *SYSTEM_METHODS]))
        if name in ("system.methodHelp", "system.methodSignature"):
            if len(params) != 1 or not isinstance(params[0], str):
                raise RPCError(INVALID_PARAMS, f"{name} takes one method name")
            return succeed(self.introspect(name, params[0]))
        return self.methods.call(name, params)

    def introspect(self, what: str, method: str) -> Any:
        """
        Help or signatures for C{method}.
        """
        described = self.methods.describe().get(method)
        if described is not None:
            if what == "system.methodHelp":
                return described.help
            if described.signatures is None:
                return "signatures not supported"
            return [list(s) for s in described.signatures]
        if method in SYSTEM_METHODS:
            if what == "system.methodHelp":
                return SYSTEM_METHODS[method]
            return "signatures not supported"
        raise RPCError(METHOD_NOT_FOUND, f"no such method: {method!r}")

    def multicall(self, calls: list[Any]) -> Deferred[Any]:
        """
        Run C{calls} concurrently; answer each with C{[result]} or a fault
        struct, in order.
        """
        if len(calls) > self.maxCalls:
            raise RPCError(INVALID_REQUEST, f"more than {self.maxCalls} calls")
        results = []
        for call in calls:
            d: Deferred[Any]
            if (
                not isinstance(call, dict)
                or not isinstance(call.get("methodName"), str)
                or not isinstance(call.get("params", []), list)
            ):
                d = fail(
                    RPCError(INVALID_REQUEST, "each call needs methodName and params")
                )
            elif call["methodName"] == "system.multicall":
                d = fail(RPCError(INVALID_REQUEST, "system.multicall cannot nest"))
            else:
                d = maybeDeferred(
                    self.dispatch, call["methodName"], call.get("params", [])
                )
            d.addCallbacks(
                lambda result, name: [self._plain(result, name)],
                self._faultStruct,
                callbackArgs=(
                    call.get("methodName") if isinstance(call, dict) else "",
                ),
            )
            results.append(d)
        return gatherResults(results)

    def _faultStruct(self, failure: Failure) -> dict[str, Any]:
        if isinstance(failure.value, RPCError):
            error = failure.value
        else:
            self.log.failure("XML-RPC call in a multicall failed", failure=failure)
            error = RPCError(INTERNAL_ERROR, "internal error")
        return {"faultCode": error.faultCode, "faultString": error.message}
