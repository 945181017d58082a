"""
C{/tls}: what the connection's TLS negotiated, beyond httpbin: protocol
version, cipher, the SNI name the client sent, and the identity in the client
certificate when one was presented and verified (L{netplugins.tls.peer.peerIdentity}).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from netplugins.httpbin.routing import Context, jsonBody, route
from netplugins.tls.peer import peerIdentity, tlsConnection


def connectionTransport(request: Request) -> Any:
    """
    The transport under the request's HTTP channel (TLS-wrapped, perhaps
    through the limits wrapper).
    """
    channel = request.channel
    return getattr(channel, "transport", None)


def tls(context: Context, request: Request) -> bytes:
    """
    C{/tls}: C{{"tls": false}} in the clear, else the negotiated parameters.
    """
    transport = connectionTransport(request)
    handle = tlsConnection(transport)
    if handle is None:
        return jsonBody(request, {"tls": False})
    sni = handle.get_servername()
    return jsonBody(
        request,
        {
            "tls": True,
            "version": handle.get_protocol_version_name(),
            "cipher": handle.get_cipher_name(),
            "sni": sni.decode("ascii", "replace") if sni else None,
            "client_certificate": peerIdentity(transport),
        },
    )


ROUTES = {"tls": route(tls)}
