"""
The HTTP side of C{np-kv}: C{/RPC2} and C{/jsonrpc} on the shared hardened
site (L{netplugins.web.http}: body and header limits, header deadline, no
tracebacks), with optional HTTP Basic authentication.

  - With credential checkers, every request needs HTTP Basic credentials, and
    is refused (403) when it did not arrive over TLS unless plaintext
    authentication was explicitly allowed.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.portal import IRealm, Portal
from twisted.web.guard import BasicCredentialFactory, HTTPAuthSessionWrapper
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from zope.interface import implementer

from netplugins.kv.jsonrpc import DEFAULT_MAX_BATCH, JSONRPCResource
from netplugins.kv.methods import KVMethods
from netplugins.kv.store import KVStore
from netplugins.kv.xmlrpc import XMLRPCResource
from netplugins.safepickle import DEFAULT_MAX_NESTING
from netplugins.web.http import HardenedSite, hardenedSite

DEFAULT_MAX_BODY_SIZE = 4 * 1024 * 1024


class _TLSOnly(Resource):
    """
    Refuse (403) requests that did not arrive over TLS, before their
    credentials are looked at.
    """

    def __init__(self, wrapped: Any):
        super().__init__()
        self._wrapped = wrapped

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        if not request.isSecure():
            return _Forbidden()
        return self._wrapped.getChildWithDefault(path, request)  # type: ignore[no-any-return]

    def render(self, request: Request) -> bytes:
        if not request.isSecure():
            return _Forbidden().render(request)
        return self._wrapped.render(request)  # type: ignore[no-any-return]


class _Forbidden(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(403)
        request.setHeader(b"content-type", b"text/plain")
        return b"authentication needs TLS\n"


@implementer(IRealm)
class _Realm:
    """
    Every authenticated user gets the same resource.
    """

    def __init__(self, resource: Resource):
        self.resource = resource

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        if IResource not in interfaces:
            raise NotImplementedError(interfaces)
        return IResource, self.resource, lambda: None


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
    reactor: Any = None,
) -> HardenedSite:
    """
    The C{np-kv} site; with C{checkers}, behind HTTP Basic authentication.
    """
    resource: Any = kvResource(store, maxNesting=maxNesting, maxBatch=maxBatch)
    if checkers:
        portal = Portal(_Realm(resource), list(checkers))
        resource = HTTPAuthSessionWrapper(portal, [BasicCredentialFactory(b"np-kv")])
        if not allowPlaintextAuth:
            resource = _TLSOnly(resource)
    return hardenedSite(resource, maxBodySize=maxBodySize, reactor=reactor)
