"""
The HTTP side of C{np-kv}: its store's calls served by
L{netplugins.rpc.web.rpcResource} (C{/RPC2}, C{/jsonrpc}, optional HTTP Basic
authentication) on the shared hardened site.
"""

from __future__ import annotations

from typing import Any

from netplugins.cred.throttle import LoginThrottle
from netplugins.kv.methods import KVMethods
from netplugins.kv.store import KVStore
from netplugins.limits.settings import DEFAULT_CLOSE_GRACE
from netplugins.rpc.jsonrpc import DEFAULT_MAX_BATCH
from netplugins.rpc.web import rpcResource
from netplugins.safepickle import DEFAULT_MAX_NESTING
from netplugins.web.http import HardenedSite, hardenedSite

DEFAULT_MAX_BODY_SIZE = 4 * 1024 * 1024


def kvSite(
    store: KVStore,
    *,
    maxBodySize: int = DEFAULT_MAX_BODY_SIZE,
    maxNesting: int = DEFAULT_MAX_NESTING,
    maxBatch: int = DEFAULT_MAX_BATCH,
    allowNone: bool = True,
    checkers: tuple[Any, ...] = (),
    allowPlaintextAuth: bool = False,
    throttle: LoginThrottle | None = None,
    closeGrace: float = DEFAULT_CLOSE_GRACE,
    reactor: Any = None,
) -> HardenedSite:
    """
    The C{np-kv} site; with C{checkers}, behind HTTP Basic authentication.

    @param allowNone: whether XML-RPC answers may carry C{<nil/>}; if not,
        C{set} and C{delete} answer C{true}.
    @param throttle: the logins' throttle; by default one on C{reactor}
        allowing six logins per connection.
    """
    resource = rpcResource(
        KVMethods(store),
        maxNesting=maxNesting,
        maxBatch=maxBatch,
        allowNone=allowNone,
        checkers=checkers,
        allowPlaintextAuth=allowPlaintextAuth,
        throttle=throttle,
        realmName="np-kv",
        reactor=reactor,
    )
    return hardenedSite(
        resource, maxBodySize=maxBodySize, closeGrace=closeGrace, reactor=reactor
    )
