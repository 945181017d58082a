"""
The resource tree the RPC services serve on the shared hardened site
(L{netplugins.web.http}: body and header limits, header deadline, no
tracebacks): C{/RPC2} (XML-RPC), C{/jsonrpc} (JSON-RPC 2.0) and C{/}, which
answers JSON-RPC when the request says it is JSON (C{Content-Type:
application/json...}, as jsonrpclib sends to a URL without a path) and
XML-RPC otherwise, as C{SimpleXMLRPCServer} answers at C{/} too.

With credential checkers, every request needs HTTP Basic credentials
(L{netplugins.web.auth}, as C{np-wsgi}: logins throttled per connection, user
name and address), and is refused (403) when it did not arrive over TLS
unless plaintext authentication was explicitly allowed.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.portal import Portal
from twisted.web.resource import Resource
from twisted.web.server import Request

from netplugins.cred.throttle import LoginThrottle
from netplugins.rpc.jsonrpc import DEFAULT_MAX_BATCH, JSONRPCResource
from netplugins.rpc.methods import Methods
from netplugins.rpc.xmlrpc import XMLRPCResource
from netplugins.safepickle import DEFAULT_MAX_NESTING
from netplugins.service import Common
from netplugins.web.auth import BasicAuthResource, RemoteUserRealm

#: The deepest nesting a request may have: answering recurses (JSON and
#: XML-RPC encoding), a few Python frames a level, so a deeper value (np-kv's
#: stored, np-rpc's echoed) could be taken but never sent back.
MAX_NESTING = 256


def checkPlaintextAuth(
    common: Common, allowPlaintextAuth: bool, defaultListen: tuple[str, ...]
) -> None:
    """
    Refuse credential checkers on a cleartext listener (C{--listen}, or the
    service's C{defaultListen} when neither C{--listen} nor C{--listen-tls}
    is given) unless allowed.

    @raise ValueError: if refused.
    """
    plain = common.listen or (() if common.listenTLS else defaultListen)
    if common.checkers and plain and not allowPlaintextAuth:
        raise ValueError(
            "--auth over cleartext --listen sends passwords in the clear: "
            "use --listen-tls, or --allow-plaintext-auth"
        )


class ByContentType(Resource):
    """
    C{/}: JSON-RPC for a request whose C{Content-Type} is JSON, else XML-RPC.
    """

    isLeaf = True

    def __init__(self, xml: XMLRPCResource, json: JSONRPCResource):
        super().__init__()
        self.xml = xml
        self.json = json

    def render(self, request: Request) -> Any:
        contentType = (request.getHeader(b"content-type") or b"").lower()
        if contentType.startswith(b"application/json"):
            return self.json.render(request)
        return self.xml.render(request)


def rpcResource(
    methods: Methods,
    *,
    maxNesting: int = DEFAULT_MAX_NESTING,
    maxBatch: int = DEFAULT_MAX_BATCH,
    allowNone: bool = True,
    checkers: tuple[Any, ...] = (),
    allowPlaintextAuth: bool = False,
    throttle: LoginThrottle | None = None,
    realmName: str = "netplugins",
    reactor: Any = None,
) -> Resource:
    """
    The root resource serving C{methods}; with C{checkers}, behind HTTP Basic
    authentication.

    @param allowNone: whether XML-RPC answers may carry C{<nil/>} (see
        L{XMLRPCResource}).
    @param throttle: the logins' throttle; by default one on C{reactor}
        allowing six logins per connection.
    """
    xml = XMLRPCResource(
        methods, maxNesting=maxNesting, maxCalls=maxBatch, allowNone=allowNone
    )
    json = JSONRPCResource(methods, maxNesting=maxNesting, maxBatch=maxBatch)
    root: Any = Resource()
    root.putChild(b"RPC2", xml)
    root.putChild(b"jsonrpc", json)
    root.putChild(b"", ByContentType(xml, json))
    if checkers:
        root = BasicAuthResource(
            root,
            Portal(RemoteUserRealm(), list(checkers)),
            realmName=realmName,
            allowPlaintextAuth=allowPlaintextAuth,
            throttle=throttle,
            reactor=reactor,
        )
    return root
