"""
The HTTP side of C{np-kv}: C{/RPC2} and C{/jsonrpc} on the shared hardened
site (L{netplugins.web.http}: body and header limits, header deadline, no
tracebacks), with optional HTTP Basic authentication.

  - With credential checkers, every request needs HTTP Basic credentials
    (L{netplugins.web.auth}, as C{np-wsgi}: logins throttled per connection,
    user name and address), and is refused (403) when it did not arrive over
    TLS unless plaintext authentication was explicitly allowed.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.portal import Portal
from twisted.web.resource import Resource

from netplugins.cred.throttle import LoginThrottle
from netplugins.kv.jsonrpc import DEFAULT_MAX_BATCH, JSONRPCResource
from netplugins.kv.methods import KVMethods
from netplugins.kv.store import KVStore
from netplugins.kv.xmlrpc import XMLRPCResource
from netplugins.limits.settings import DEFAULT_CLOSE_GRACE
from netplugins.safepickle import DEFAULT_MAX_NESTING
from netplugins.web.auth import BasicAuthResource, RemoteUserRealm
from netplugins.web.http import HardenedSite, hardenedSite

DEFAULT_MAX_BODY_SIZE = 4 * 1024 * 1024
#: The deepest nesting np-kv accepts a value with: reading a value back
#: recurses (JSON and XML-RPC encoding), a few Python frames a level, so
#: deeper values could be stored but never sent back.
MAX_NESTING = 256


def kvResource(
    store: KVStore,
    *,
    maxNesting: int = DEFAULT_MAX_NESTING,
    maxBatch: int = DEFAULT_MAX_BATCH,
) -> Resource:
    """
    The root resource: C{/RPC2} and C{/jsonrpc} over one store.
    """
    methods = KVMethods(store)
    root = Resource()
    root.putChild(
        b"RPC2", XMLRPCResource(methods, maxNesting=maxNesting, maxCalls=maxBatch)
    )
    root.putChild(
        b"jsonrpc", JSONRPCResource(methods, maxNesting=maxNesting, maxBatch=maxBatch)
    )
    return root


def kvSite(
    store: KVStore,
    *,
    maxBodySize: int = DEFAULT_MAX_BODY_SIZE,
    maxNesting: int = DEFAULT_MAX_NESTING,
    maxBatch: int = DEFAULT_MAX_BATCH,
    checkers: tuple[Any, ...] = (),
    allowPlaintextAuth: bool = False,
    throttle: LoginThrottle | None = None,
    closeGrace: float = DEFAULT_CLOSE_GRACE,
    reactor: Any = None,
) -> HardenedSite:
    """
    The C{np-kv} site; with C{checkers}, behind HTTP Basic authentication.

    @param throttle: the logins' throttle; by default one on C{reactor}
        allowing six logins per connection.
    """
    resource: Any = kvResource(store, maxNesting=maxNesting, maxBatch=maxBatch)
    if checkers:
        resource = BasicAuthResource(
            resource,
            Portal(RemoteUserRealm(), list(checkers)),
            realmName="np-kv",
            allowPlaintextAuth=allowPlaintextAuth,
            throttle=throttle,
            reactor=reactor,
        )
    return hardenedSite(
        resource, maxBodySize=maxBodySize, closeGrace=closeGrace, reactor=reactor
    )
