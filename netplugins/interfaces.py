"""
Interfaces the service layer recognises in the parts it is given.
"""

from __future__ import annotations

from twisted.internet.interfaces import IStreamServerEndpoint
from zope.interface import Attribute


class IHandshakeEndpoint(IStreamServerEndpoint):
    """
    A server endpoint that runs a handshake (a login, such as C{hmac:}'s) on
    every connection before the service's protocol sees it.

    The layers that must see connections before they authenticate (connection
    caps, C{--allow}/C{--deny}) are given to it as C{outerWrapper}, so that
    they count every connection, not only the ones that passed.
    """

    outerWrapper = Attribute(
        "A callable wrapping the handshake's protocol factory, or None."
    )
