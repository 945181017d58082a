"""
C{twistd np-kv}: the key-value service's settings, its command line and its
keyword twin.
"""

from __future__ import annotations

from typing import Any, ClassVar

from attrs import frozen
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.python import usage

from netplugins.kv.store import KVStore, openStore, parseStore
from netplugins.kv.web import DEFAULT_MAX_BODY_SIZE, kvSite
from netplugins.options import ServiceOptions, ServiceSettings, positiveInt
from netplugins.rpc.settings import batchSetting, nestingSetting, noNilFlag
from netplugins.rpc.web import checkPlaintextAuth
from netplugins.service import served
from netplugins.settings import flag, setting

DEFAULT_LISTEN = ("tcp:15000:interface=127.0.0.1",)


@frozen(kw_only=True)
class KVSettings(ServiceSettings):
    """
    What np-kv is told: the shared settings, the store, the request limits,
    whether credentials may travel in the clear and whether XML-RPC answers
    may carry C{<nil/>}.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    allowPlaintextAuth: bool = flag(
        "Accept --auth credentials over cleartext HTTP (they can be sniffed)."
    )
    store: str = setting(
        "",
        "memory, sqlite:PATH or redis://HOST:PORT/DB "
        "(default: sqlite in the state directory).",
    )
    maxBodySize: int = setting(
        DEFAULT_MAX_BODY_SIZE,
        "The largest request body, in bytes (413 beyond).",
        positiveInt,
    )
    maxNesting: int = nestingSetting()
    maxBatch: int = batchSetting()
    noNil: bool = noNilFlag("set and delete answer")


class Options(ServiceOptions):
    """
    Options for C{twistd np-kv}.
    """

    settingsType = KVSettings
    synopsis = "[options]"
    longdesc = (
        "A key-value store over HTTP: XML-RPC at /RPC2 with the Python Cookbook's "
        "get, set, delete, exists and keys (xmlrpc.client.ServerProxy(url, "
        "allow_none=True)) plus system.listMethods, methodHelp, methodSignature "
        "and multicall; JSON-RPC 2.0 at /jsonrpc with the same methods. "
        "set and delete answer nil (<nil/>), or true with --no-nil. "
        "set(key, value, ttl) expires a key after ttl seconds. --store memory "
        "keeps data in the process; sqlite:PATH in one durable file (the "
        "default, under the state directory); redis://HOST:PORT/DB in a Redis "
        "several np-kv processes can share. With --auth, requests need HTTP "
        "Basic credentials, over TLS only unless --allow-plaintext-auth."
    )
    tapname = "np-kv"
    usesCheckers = True

    def postOptions(self) -> None:
        super().postOptions()
        settings: KVSettings = self.settings
        try:
            parseStore(settings.store, self.common.stateDir)
            checkPlaintextAuth(self.common, settings.allowPlaintextAuth, DEFAULT_LISTEN)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


class _StoreCloser(Service):
    def __init__(self, store: KVStore):
        self.store = store

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.store.close()


def kvService(
    settings: KVSettings = KVSettings(),
    *,
    store: KVStore | None = None,
    reactor: Any = None,
) -> MultiService:
    """
    The key-value service: the keyword twin of C{twistd np-kv} is
    C{kvService(KVSettings(store=..., listen=(...), ...))}.

    @param store: a store already made, served instead of the one
        C{settings.store} describes (and closed when the service stops).
    @raise ValueError: for a bad value.
    """
    common = settings.common()
    checkPlaintextAuth(common, settings.allowPlaintextAuth, settings.defaultListen)
    if store is None:
        store = openStore(
            settings.store, common.stateDir, reactor, maxNesting=settings.maxNesting
        )
    site = kvSite(
        store,
        maxBodySize=settings.maxBodySize,
        maxNesting=settings.maxNesting,
        maxBatch=settings.maxBatch,
        allowNone=not settings.noNil,
        checkers=common.checkers,
        allowPlaintextAuth=settings.allowPlaintextAuth,
        closeGrace=common.limits.closeGrace,
        reactor=reactor,
    )
    return served(
        common,
        site,
        name="np-kv",
        defaultListen=settings.defaultListen,
        children=[_StoreCloser(store)],
        reactor=reactor,
    )


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The service configured by a parsed command line.
    """
    return kvService(config.settings, reactor=reactor)
