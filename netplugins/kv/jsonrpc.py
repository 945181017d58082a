"""
C{np-kv}'s JSON-RPC 2.0 face, at C{/jsonrpc}: the same C{get set delete exists
keys} (and C{system.listMethods}), with positional or named parameters
(C{key}, C{value}, C{ttl}), batches and notifications.

JSON has no bytes or dates, so they travel as one-member objects:
C{{"$base64": "..."}} for bytes (either way: a JSON client stores bytes by
sending one) and C{{"$datetime": "ISO 8601"}} for the dates XML-RPC clients
store (returned only).  A stored value JSON cannot carry at all (a struct
XML-RPC clients keyed by something other than strings, a NaN) is answered
with an internal error (-32603) for that call.

Request ids are answered back as sent when they are strings, numbers
(integers or finite floats) or C{null}; any other id makes the request
invalid (-32600, answered with id C{null}, and not run).

Parsing is bounded: C{NaN}/C{Infinity} and integers over 4300 digits are parse
errors (-32700), as is nesting deep enough to exhaust the parser's stack;
nesting past the limit is -32600, and so is a batch over the limit.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import math
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from netplugins.kv.body import RPCResource
from netplugins.kv.methods import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHODS,
    PARSE_ERROR,
    KVMethods,
    RPCError,
)
from netplugins.safepickle import DEFAULT_MAX_NESTING, RefusedPickleError, checkNesting

DEFAULT_MAX_BATCH = 100
PARAMETER_NAMES = {
    "get": ("key",),
    "set": ("key", "value", "ttl"),
    "delete": ("key",),
    "exists": ("key",),
    "keys": (),
    "system.listMethods": (),
}
_NO_ID = object()


def _refuseConstant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parseBody(body: bytes, maxNesting: int = DEFAULT_MAX_NESTING) -> Any:
    """
    Parse a JSON-RPC request body.

    @raise RPCError: C{PARSE_ERROR} for bad JSON, C{INVALID_REQUEST} for
        nesting past C{maxNesting}.
    """
    try:
        parsed = json.loads(body, parse_constant=_refuseConstant)
    except RecursionError:
        raise RPCError(PARSE_ERROR, "Parse error: nested too deeply") from None
    except ValueError as e:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; so is an
        # integer of more than 4300 digits.
        raise RPCError(PARSE_ERROR, f"Parse error: {type(e).__name__}") from None
    try:
        # Two levels for the batch and the request object themselves.
        checkNesting(parsed, maxNesting + 2)
    except RefusedPickleError:
        raise RPCError(INVALID_REQUEST, "Invalid Request: nested too deeply") from None
    return parsed


def fromJSON(value: Any) -> Any:
    """
    A JSON parameter as a stored value: C{{"$base64": ...}} becomes bytes.

    @raise RPCError: for bad base64.
    """
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("$base64"), str):
            try:
                return base64.b64decode(value["$base64"], validate=True)
            except binascii.Error:
                raise RPCError(INVALID_PARAMS, "bad $base64 value") from None
        return {k: fromJSON(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fromJSON(v) for v in value]
    return value


def _unrepresentable() -> RPCError:
    return RPCError(INTERNAL_ERROR, "the value cannot be sent as JSON")


def toJSON(value: Any) -> Any:
    """
    A stored value as JSON: bytes and dates as one-member objects.

    @raise RPCError: C{INTERNAL_ERROR} for a value JSON cannot carry: a
        mapping with keys other than strings, a non-finite float, or a type
        of its own.
    """
    if isinstance(value, bytes | bytearray):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime.datetime | datetime.date):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dict):
        if not all(type(k) is str for k in value):
            raise _unrepresentable()
        return {k: toJSON(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [toJSON(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise _unrepresentable()
    if value is None or isinstance(value, str | int | float):
        return value
    raise _unrepresentable()


def _validID(requestID: Any) -> bool:
    """
    Whether C{requestID} is an id JSON-RPC 2.0 allows and JSON can echo: a
    string, a number (not a boolean, not infinite) or C{None}.
    """
    if requestID is None or type(requestID) in (str, int):
        return True
    return type(requestID) is float and math.isfinite(requestID)


def _error(error: RPCError, requestID: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "error": {"code": error.code, "message": error.message},
        "id": requestID,
    }


def _encode(response: Any) -> bytes | None:
    """
    A response as JSON; C{None} (only notifications) stays C{None}.
    """
    if response is None:
        return None
    try:
        return json.dumps(response, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        return json.dumps(_error(_unrepresentable(), None)).encode("utf-8")


class JSONRPCResource(RPCResource):
    """
    The C{/jsonrpc} resource.
    """

    log = Logger()
    protocolName = "JSON-RPC"
    contentType = b"application/json"

    def __init__(
        self,
        methods: KVMethods,
        *,
        maxNesting: int = DEFAULT_MAX_NESTING,
        maxBatch: int = DEFAULT_MAX_BATCH,
    ):
        super().__init__(methods, maxNesting=maxNesting)
        self.maxBatch = maxBatch

    def answer(self, body: bytes, request: Request) -> Deferred[bytes | None]:
        d = maybeDeferred(self.handle, body)
        d.addErrback(self._ebInternal, None)
        return d.addCallback(_encode)

    def handle(self, body: bytes) -> Deferred[Any]:
        """
        The response to a request body: an object, a list, or C{None} when
        only notifications were sent.
        """
        try:
            parsed = parseBody(body, self.maxNesting)
        except RPCError as e:
            return succeed(_error(e, None))
        if not isinstance(parsed, list):
            return self.handleOne(parsed)
        if not parsed:
            return succeed(
                _error(RPCError(INVALID_REQUEST, "Invalid Request: empty batch"), None)
            )
        if len(parsed) > self.maxBatch:
            return succeed(
                _error(
                    RPCError(
                        INVALID_REQUEST, f"Invalid Request: batch over {self.maxBatch}"
                    ),
                    None,
                )
            )
        d = gatherResults([self.handleOne(r) for r in parsed])
        return d.addCallback(lambda rs: [r for r in rs if r is not None] or None)

    def handleOne(self, request: Any) -> Deferred[Any]:
        """
        The response object to one request, or C{None} for a notification.
        """
        requestID = request.get("id", _NO_ID) if isinstance(request, dict) else None
        if requestID is not _NO_ID and not _validID(requestID):
            return succeed(
                _error(
                    RPCError(
                        INVALID_REQUEST,
                        "Invalid Request: id must be a string, a number or null",
                    ),
                    None,
                )
            )
        try:
            name, params = self._validate(request)
            d = self._call(name, params)
        except RPCError as e:
            d = fail(e)
        if requestID is _NO_ID:
            return d.addCallbacks(lambda _: None, lambda _: None)
        d.addCallback(
            lambda result: {"jsonrpc": "2.0", "result": toJSON(result), "id": requestID}
        )
        d.addErrback(self._ebInternal, requestID)
        return d

    def _validate(self, request: Any) -> tuple[str, list[Any]]:
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
            or not isinstance(request.get("params", []), list | dict)
        ):
            raise RPCError(INVALID_REQUEST, "Invalid Request")
        name = request["method"]
        params = request.get("params", [])
        if isinstance(params, dict):
            names = PARAMETER_NAMES.get(name)
            if names is None:
                return name, []
            unknown = set(params) - set(names)
            if unknown:
                raise RPCError(INVALID_PARAMS, f"unknown parameters: {sorted(unknown)}")
            given = [n for n in names if n in params]
            if given != list(names[: len(given)]):
                raise RPCError(
                    INVALID_PARAMS, f"{name} takes {', '.join(names)} in order"
                )
            params = [params[n] for n in given]
        return name, [fromJSON(p) for p in params]

    def _call(self, name: str, params: list[Any]) -> Deferred[Any]:
        if name == "system.listMethods":
            if params:
                raise RPCError(INVALID_PARAMS, "system.listMethods takes no parameters")
            return succeed(sorted([*METHODS, "system.listMethods"]))
        return self.methods.call(name, params)

    def _ebInternal(self, failure: Failure, requestID: Any) -> dict[str, Any]:
        if isinstance(failure.value, RPCError):
            return _error(failure.value, requestID)
        self.log.failure("np-kv: JSON-RPC call failed", failure=failure)
        return _error(RPCError(INTERNAL_ERROR, "Internal error"), requestID)
