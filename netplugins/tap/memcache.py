"""
C{twistd np-memcache}: the memcached service's settings, its command line and
its keyword twin.
"""

from __future__ import annotations

from typing import Any, ClassVar

from attrs import frozen
from twisted.application.service import MultiService
from twisted.python import usage

from netplugins.memcache.protocol import MemcacheFactory
from netplugins.memcache.store import (
    DEFAULT_MAX_ITEM_SIZE,
    DEFAULT_MEMORY_LIMIT,
    Store,
)
from netplugins.options import ServiceOptions, ServiceSettings, positiveInt
from netplugins.rpc.web import checkPlaintextAuth
from netplugins.service import served
from netplugins.settings import flag, override, setting

DEFAULT_LISTEN = ("tcp:11211:interface=127.0.0.1",)

#: Idle connections close after this long (--idle-timeout 0: never).
DEFAULT_IDLE_TIMEOUT = 900.0

#: The smallest item size limit (memcached's C{-I} minimum).
MIN_ITEM_SIZE = 1024


@frozen(kw_only=True)
class MemcacheSettings(ServiceSettings):
    """
    What np-memcache is told: the shared settings, how much it may hold and
    whether passwords may travel in the clear.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    memoryLimit: int = setting(
        DEFAULT_MEMORY_LIMIT,
        "Bytes the cache may hold (keys, values and per-item overhead); the "
        "least recently used items are evicted beyond it.",
        positiveInt,
    )
    maxItemSize: int = setting(
        DEFAULT_MAX_ITEM_SIZE,
        "The largest item, in bytes, counted as memcached does (value, key "
        "and a 56-byte header): SERVER_ERROR object too large for cache beyond.",
        positiveInt,
    )
    allowPlaintextAuth: bool = flag(
        "Accept --auth logins over cleartext --listen (passwords can be sniffed)."
    )
    idleTimeout: float | None = override(
        ServiceSettings, "idleTimeout", DEFAULT_IDLE_TIMEOUT
    )

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.workers > 1:
            raise ValueError(
                "np-memcache runs in one process: each of --workers "
                f"{self.workers} would hold a different cache"
            )
        if self.maxItemSize < MIN_ITEM_SIZE:
            raise ValueError(
                f"--max-item-size must be at least {MIN_ITEM_SIZE}, "
                f"not {self.maxItemSize}"
            )


class Options(ServiceOptions):
    """
    Options for C{twistd np-memcache}.
    """

    settingsType = MemcacheSettings
    synopsis = "[options]"
    longdesc = (
        "A memcached-compatible cache speaking the text protocol (get, gets, "
        "gat, gats, set, add, replace, append, prepend, cas, incr, decr, "
        "delete, touch, flush_all, stats, version, verbosity, quit) and the "
        "meta protocol (mg, ms, md, ma, mn, me) as memcached 1.6 does, over "
        "TCP and TLS (no UDP). Items live in this process's memory, least "
        "recently used evicted beyond --memory-limit; so it runs as one "
        "process (--workers refused). With --auth, each connection logs in "
        "first with memcached's ASCII authentication (set <any> 0 0 <n> then "
        "'user password'), over TLS only unless --allow-plaintext-auth."
    )
    tapname = "np-memcache"
    usesCheckers = True

    def postOptions(self) -> None:
        super().postOptions()
        settings: MemcacheSettings = self.settings
        try:
            checkPlaintextAuth(self.common, settings.allowPlaintextAuth, DEFAULT_LISTEN)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


def memcacheService(
    settings: MemcacheSettings = MemcacheSettings(),
    *,
    store: Store | None = None,
    reactor: Any = None,
) -> MultiService:
    """
    The cache service: the keyword twin of C{twistd np-memcache} is
    C{memcacheService(MemcacheSettings(memoryLimit=..., listen=(...), ...))}.

    @param store: a store to serve instead of a new one.
    @raise ValueError: for a bad value.
    """
    common = settings.common()
    checkPlaintextAuth(common, settings.allowPlaintextAuth, DEFAULT_LISTEN)
    if reactor is None:
        from twisted.internet import reactor as default

        reactor = default
    if store is None:
        store = Store(
            settings.memoryLimit,
            settings.maxItemSize,
            now=int(reactor.seconds()),
        )
    factory = MemcacheFactory(
        store,
        clock=reactor,
        checkers=common.checkers,
        maxConnections=common.limits.maxConnections,
    )
    factory.closeGrace = common.limits.closeGrace
    factory.cork = True
    factory.preAuthTimeout = common.limits.preAuthTimeout or 120.0
    return served(
        common,
        factory,
        name="np-memcache",
        defaultListen=settings.defaultListen,
        reactor=reactor,
    )


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The cache service configured by a parsed command line.
    """
    return memcacheService(config.settings, reactor=reactor)
