"""
C{twistd np-kv}: the key-value service's command line and its keyword twin.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.python import usage

from netplugins.kv.jsonrpc import DEFAULT_MAX_BATCH
from netplugins.kv.store import KVStore, openStore, parseStore
from netplugins.kv.web import DEFAULT_MAX_BODY_SIZE, MAX_NESTING, kvSite
from netplugins.options import ServiceOptions, positiveInt
from netplugins.safepickle import DEFAULT_MAX_NESTING
from netplugins.service import Common, listeningService, resolveCommon, supervised

DEFAULT_LISTEN = ("tcp:15000:interface=127.0.0.1",)


class Options(ServiceOptions):
    """
    Options for C{twistd np-kv}.
    """

    synopsis = "[options]"
    longdesc = (
        "A key-value store over HTTP: XML-RPC at /RPC2 with the Python Cookbook's "
        "get, set, delete, exists and keys (xmlrpc.client.ServerProxy(url, "
        "allow_none=True)) plus system.listMethods, methodHelp, methodSignature "
        "and multicall; JSON-RPC 2.0 at /jsonrpc with the same methods. "
        "set(key, value, ttl) expires a key after ttl seconds. --store memory "
        "keeps data in the process; sqlite:PATH in one durable file (the "
        "default, under the state directory); redis://HOST:PORT/DB in a Redis "
        "several np-kv processes can share. With --auth, requests need HTTP "
        "Basic credentials, over TLS only unless --allow-plaintext-auth."
    )
    defaultListen = DEFAULT_LISTEN
    tapname = "np-kv"
    usesCheckers = True

    optFlags = [
        [
            "allow-plaintext-auth",
            None,
            "Accept --auth credentials over cleartext HTTP (they can be sniffed).",
        ],
    ]
    optParameters = [
        [
            "store",
            None,
            "",
            "memory, sqlite:PATH or redis://HOST:PORT/DB "
            "(default: sqlite in the state directory).",
        ],
        [
            "max-body-size",
            None,
            DEFAULT_MAX_BODY_SIZE,
            "The largest request body, in bytes (413 beyond).",
            positiveInt,
        ],
        [
            "max-nesting",
            None,
            DEFAULT_MAX_NESTING,
            f"How deeply arrays and structs may nest in a request (at most "
            f"{MAX_NESTING}).",
            positiveInt,
        ],
        [
            "max-batch",
            None,
            DEFAULT_MAX_BATCH,
            "The most calls in one JSON-RPC batch or system.multicall.",
            positiveInt,
        ],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        try:
            parseStore(self["store"], self.common.stateDir)
            checkPlaintextAuth(self.common, self["allow-plaintext-auth"])
            checkLimits(self["max-body-size"], self["max-nesting"], self["max-batch"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


def checkPlaintextAuth(common: Common, allowPlaintextAuth: bool) -> None:
    """
    Refuse credential checkers on a cleartext listener unless allowed.

    @raise ValueError: if refused.
    """
    plain = common.listen or (() if common.listenTLS else DEFAULT_LISTEN)
    if common.checkers and plain and not allowPlaintextAuth:
        raise ValueError(
            "--auth over cleartext --listen sends passwords in the clear: "
            "use --listen-tls, or --allow-plaintext-auth"
        )


def checkLimits(maxBodySize: int, maxNesting: int, maxBatch: int) -> None:
    """
    Refuse limits that are not positive, and nesting deeper than
    L{MAX_NESTING}: values np-kv would store but could not send back.

    @raise ValueError: if refused.
    """
    for name, value in [
        ("maximum body size", maxBodySize),
        ("maximum nesting", maxNesting),
        ("maximum batch", maxBatch),
    ]:
        if value <= 0:
            raise ValueError(f"{name} must be positive, not {value}")
    if maxNesting > MAX_NESTING:
        raise ValueError(
            f"maximum nesting must be at most {MAX_NESTING} (deeper values "
            f"could not be read back), not {maxNesting}"
        )


class _StoreCloser(Service):
    def __init__(self, store: KVStore):
        self.store = store

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.store.close()


def kvService(
    *,
    store: str | KVStore = "",
    maxBodySize: int = DEFAULT_MAX_BODY_SIZE,
    maxNesting: int = DEFAULT_MAX_NESTING,
    maxBatch: int = DEFAULT_MAX_BATCH,
    allowPlaintextAuth: bool = False,
    common: Common | None = None,
    reactor: Any = None,
    **settings: Any,
) -> MultiService:
    """
    The key-value service: the keyword twin of C{twistd np-kv}.

    @param store: a C{--store} description, or a store already made.
    @param common: the shared settings, already made; or instead give their
        keywords (L{netplugins.service.commonSettings}) as C{settings}.
    @raise ValueError: for a bad value.
    """
    common = resolveCommon(common, settings)
    checkPlaintextAuth(common, allowPlaintextAuth)
    checkLimits(maxBodySize, maxNesting, maxBatch)
    if isinstance(store, str):
        store = openStore(store, common.stateDir, reactor, maxNesting=maxNesting)
    site = kvSite(
        store,
        maxBodySize=maxBodySize,
        maxNesting=maxNesting,
        maxBatch=maxBatch,
        checkers=common.checkers,
        allowPlaintextAuth=allowPlaintextAuth,
        closeGrace=common.limits.closeGrace,
        reactor=reactor,
    )
    service = listeningService(
        common, site, defaultListen=DEFAULT_LISTEN, name="np-kv", reactor=reactor
    )
    _StoreCloser(store).setServiceParent(service)
    return supervised(service, common, name="np-kv", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The service configured by a parsed command line.
    """
    return kvService(
        store=config["store"],
        maxBodySize=config["max-body-size"],
        maxNesting=config["max-nesting"],
        maxBatch=config["max-batch"],
        allowPlaintextAuth=bool(config["allow-plaintext-auth"]),
        common=config.common,
        reactor=reactor,
    )
