"""
Python functions as RPC methods (C{np-rpc}): a registry, the mapping of names
to functions C{np-mpconn --functions} loads too
(L{netplugins.mpconn.loadFunctions}), served by the XML-RPC and JSON-RPC
faces.

  - Positional parameters are passed as arguments, JSON-RPC's named ones as
    keyword arguments; parameters the function's signature does not take are
    refused (-32602) before it runs.
  - Functions marked with L{netplugins.mpconn.blocking} (the marker
    C{np-mpconn} honours, so one registry serves both) run in a bounded
    thread pool; the others run on the reactor thread and may return a
    Deferred or be coroutines.
  - A function's exception becomes the answer C{SimpleXMLRPCServer} gives,
    its type and message: C{"<class 'ValueError'>:math domain error"} (XML-RPC
    fault code 1, JSON-RPC error -32000), never a traceback.  An exception
    that is an L{RPCError} is answered with its own code and message.
  - Help is the function's docstring; signatures are not given, as
    C{SimpleXMLRPCServer} gives none.
"""

from __future__ import annotations

import inspect
import pydoc
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from netplugins.mpconn import isBlocking
from netplugins.rpc.methods import (
    FUNCTION_FAULT,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    SERVER_ERROR,
    Method,
    RPCError,
)
from netplugins.threads import PoolFullError


def _awaited(result: Any) -> Any:
    if inspect.iscoroutine(result):
        return Deferred.fromCoroutine(result)
    return result


class FunctionMethods:
    """
    A registry's functions as L{netplugins.rpc.methods.Methods}.

    @ivar runBlocking: runs a function marked blocking off the reactor
        thread, returning a Deferred: C{runBlocking(f, *args, **kwargs)}.
    """

    log = Logger()

    def __init__(
        self,
        functions: Mapping[str, Callable[..., Any]],
        runBlocking: Callable[..., Deferred[Any]],
    ):
        self.functions = dict(functions)
        self.runBlocking = runBlocking
        self._described = {
            name: Method(name, None, pydoc.getdoc(function))
            for name, function in self.functions.items()
        }

    def describe(self) -> Mapping[str, Method]:
        return self._described

    def call(self, name: str, params: list[Any] | dict[str, Any]) -> Deferred[Any]:
        """
        Run the function called C{name}.

        @raise RPCError: at once for an unknown name or parameters its
            signature refuses; its own exception fails the Deferred with one.
        """
        function = self.functions.get(name)
        if function is None:
            raise RPCError(METHOD_NOT_FOUND, f"no such method: {name!r}")
        args, kwargs = (params, {}) if isinstance(params, list) else ([], params)
        _checkArguments(name, function, args, kwargs)
        if isBlocking(function):
            d = self.runBlocking(function, *args, **kwargs)
        else:
            d = maybeDeferred(function, *args, **kwargs).addCallback(_awaited)
        return d.addErrback(self._ebFunction, name)

    def _ebFunction(self, failure: Failure, name: str) -> Any:
        error = failure.value
        if isinstance(error, RPCError):
            return failure
        if isinstance(error, PoolFullError):
            self.log.warn("np-rpc: {name} refused: {error}", name=name, error=error)
            raise RPCError(INTERNAL_ERROR, "Internal error: too many calls waiting")
        self.log.info(
            "np-rpc: {name} raised {kind}", name=name, kind=type(error).__name__
        )
        raise RPCError(SERVER_ERROR, f"{type(error)}:{error}", FUNCTION_FAULT)


def _checkArguments(
    name: str,
    function: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        # Some builtins have no signature to check against: let them say.
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as e:
        raise RPCError(INVALID_PARAMS, f"{name}: {e}") from None
