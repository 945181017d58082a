"""
The calls C{np-kv} answers, shared by its XML-RPC and JSON-RPC faces: the
Cookbook's C{get set delete exists keys}, with an optional TTL on C{set}.

Errors are L{RPCError}s with the shared codes, plus L{KEY_NOT_FOUND}.  A
value holding an integer outside 64 bits is refused at C{set}: XML-RPC could
not send it back (C{<i8>} is its widest integer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from netplugins.kv.store import KeyMissingError, KVStore
from netplugins.rpc.methods import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    Method,
    RPCError,
    outsideI8,
)

#: A missing (or expired) key.
KEY_NOT_FOUND = -32001

MAX_KEY_LENGTH = 1024
#: Ten years: longer TTLs are a mistake, and keep expiry times finite.
MAX_TTL = 10 * 365 * 24 * 3600


METHODS = {
    m.name: m
    for m in [
        Method("get", (("any", "string"),), "get(key): the value stored under key."),
        Method(
            "set",
            (("nil", "string", "any"), ("nil", "string", "any", "double")),
            "set(key, value[, ttl]): store value under key, for ttl seconds if given.",
        ),
        Method("delete", (("nil", "string"),), "delete(key): remove key."),
        Method(
            "exists", (("boolean", "string"),), "exists(key): whether key is stored."
        ),
        Method("keys", (("array",),), "keys(): every stored key, sorted."),
    ]
}
#: The names JSON-RPC clients may give parameters by, in order.
PARAMETER_NAMES = {
    "get": ("key",),
    "set": ("key", "value", "ttl"),
    "delete": ("key",),
    "exists": ("key",),
    "keys": (),
}


def _key(value: Any) -> str:
    if type(value) is not str:
        raise RPCError(INVALID_PARAMS, "a key must be a string")
    if len(value) > MAX_KEY_LENGTH:
        raise RPCError(
            INVALID_PARAMS, f"a key must be at most {MAX_KEY_LENGTH} characters"
        )
    return value


def _ttl(value: Any) -> float | None:
    if value is None:
        return None
    if (
        type(value) not in (int, float)
        or not (0 < value <= MAX_TTL)
        or math.isnan(value)
    ):
        raise RPCError(
            INVALID_PARAMS, f"ttl must be seconds, more than 0 and at most {MAX_TTL}"
        )
    return float(value)


def _arity(name: str, params: list[Any], low: int, high: int) -> None:
    if not low <= len(params) <= high:
        wanted = str(low) if low == high else f"{low} to {high}"
        raise RPCError(
            INVALID_PARAMS, f"{name} takes {wanted} parameters, not {len(params)}"
        )


def _positional(name: str, params: dict[str, Any]) -> list[Any]:
    names = PARAMETER_NAMES[name]
    unknown = set(params) - set(names)
    if unknown:
        raise RPCError(INVALID_PARAMS, f"unknown parameters: {sorted(unknown)}")
    given = [n for n in names if n in params]
    if given != list(names[: len(given)]):
        raise RPCError(INVALID_PARAMS, f"{name} takes {', '.join(names)} in order")
    return [params[n] for n in given]


def _ebMissing(failure: Failure) -> Any:
    failure.trap(KeyMissingError)
    assert failure.value is not None
    raise RPCError(KEY_NOT_FOUND, f"no such key: {failure.value.args[0]!r}")


class KVMethods:
    """
    Validate and run calls against one store.
    """

    def __init__(self, store: KVStore):
        self.store = store
        self._calls: dict[str, Callable[[list[Any]], Deferred[Any]]] = {
            "get": self.get,
            "set": self.set,
            "delete": self.delete,
            "exists": self.exists,
            "keys": self.keys,
        }

    def describe(self) -> Mapping[str, Method]:
        return METHODS

    def call(self, name: str, params: list[Any] | dict[str, Any]) -> Deferred[Any]:
        """
        Run C{name(*params)}; named parameters are those of
        L{PARAMETER_NAMES}, a leading run of them.

        @raise RPCError: at once for an unknown method or bad parameters; a
            missing key fails the Deferred with one.
        """
        call = self._calls.get(name)
        if call is None:
            raise RPCError(METHOD_NOT_FOUND, f"no such method: {name!r}")
        if isinstance(params, dict):
            params = _positional(name, params)
        return call(params)

    def get(self, params: list[Any]) -> Deferred[Any]:
        _arity("get", params, 1, 1)
        return self.store.get(_key(params[0])).addErrback(_ebMissing)

    def set(self, params: list[Any]) -> Deferred[Any]:
        _arity("set", params, 2, 3)
        ttl = _ttl(params[2]) if len(params) == 3 else None
        if outsideI8(params[1]):
            raise RPCError(
                INVALID_PARAMS,
                "integers must fit in 64 bits (XML-RPC's i8) to be read back",
            )
        return self.store.set(_key(params[0]), params[1], ttl)

    def delete(self, params: list[Any]) -> Deferred[Any]:
        _arity("delete", params, 1, 1)
        return self.store.delete(_key(params[0])).addErrback(_ebMissing)

    def exists(self, params: list[Any]) -> Deferred[Any]:
        _arity("exists", params, 1, 1)
        return self.store.exists(_key(params[0]))

    def keys(self, params: list[Any]) -> Deferred[Any]:
        _arity("keys", params, 0, 0)
        return self.store.keys()
