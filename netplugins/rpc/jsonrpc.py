"""
The JSON-RPC 2.0 face, at C{/jsonrpc}: a set of L{Methods} (and
C{system.listMethods}), with positional or named parameters, batches and
notifications.

JSON has no bytes or dates, so they travel as one-member objects:
C{{"$base64": "..."}} for bytes (either way: a JSON client passes bytes by
sending one) and C{{"$datetime": "ISO 8601"}} for dates (returned only).  A
value JSON cannot carry at all (a struct XML-RPC clients keyed by something
other than strings, a NaN, a set) is answered with an internal error
(-32603) for that call.

A request that is not a valid Request object (JSON-RPC 2.0 section 4: no
C{"jsonrpc": "2.0"}, a C{method} that is not a string, C{params} neither an
array nor an object, an C{id} neither a string, a number nor null) is
answered with -32600 and id C{null} (section 5: the id could not be
detected), even without an id: only a valid request without an id is a
notification, run and never answered (section 4.1).  Ids are answered as
sent (section 5: "MUST be the same"), fractional numbers included: the
specification says clients SHOULD NOT send them, not that servers refuse
them; a number too large for a float (C{1e400}) cannot be sent back as it
came and is refused.

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

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from netplugins.rpc.body import RPCResource
from netplugins.rpc.methods import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    Methods,
    RPCError,
)
from netplugins.safepickle import DEFAULT_MAX_NESTING, RefusedPickleError, checkNesting

DEFAULT_MAX_BATCH = 100
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


def _validRequest(request: Any) -> bool:
    """
    Whether C{request} is a Request object (section 4).
    """
    return (
        isinstance(request, dict)
        and request.get("jsonrpc") == "2.0"
        and isinstance(request.get("method"), str)
        and isinstance(request.get("params", []), list | dict)
        and _validID(request.get("id"))
    )


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
        methods: Methods,
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
        if not _validRequest(request):
            return succeed(_error(RPCError(INVALID_REQUEST, "Invalid Request"), None))
        requestID = request.get("id", _NO_ID)
        d = maybeDeferred(self._call, request["method"], request.get("params", []))
        if requestID is _NO_ID:
            return d.addCallbacks(lambda _: None, self._ebNotification)
        d.addCallback(
            lambda result: {"jsonrpc": "2.0", "result": toJSON(result), "id": requestID}
        )
        d.addErrback(self._ebInternal, requestID)
        return d

    def _call(self, name: str, params: list[Any] | dict[str, Any]) -> Deferred[Any]:
        if name == "system.listMethods":
            if params:
                raise RPCError(INVALID_PARAMS, "system.listMethods takes no parameters")
            return succeed(sorted([*self.methods.describe(), "system.listMethods"]))
        if isinstance(params, dict):
            return self.methods.call(name, {k: fromJSON(v) for k, v in params.items()})
        return self.methods.call(name, [fromJSON(p) for p in params])

    def _ebNotification(self, failure: Failure) -> None:
        if not isinstance(failure.value, RPCError):
            self.log.failure("JSON-RPC notification failed", failure=failure)

    def _ebInternal(self, failure: Failure, requestID: Any) -> dict[str, Any]:
        if isinstance(failure.value, RPCError):
            return _error(failure.value, requestID)
        self.log.failure("JSON-RPC call failed", failure=failure)
        return _error(RPCError(INTERNAL_ERROR, "Internal error"), requestID)
