# -*- test-case-name: tests.test_tls -*-
"""
Server-side TLS connections with a handshake deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IProtocolFactory
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from netplugins.tls.server import ServerTLS


class _DeadlineTLSProtocol(BufferingTLSTransport):
    """
    Server-side TLS that aborts a connection whose handshake is not done in
    time (SECURITY.md, "Deadlines and caps").
    """

    factory: _DeadlineTLSFactory
    log = Logger()
    _deadline: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        self._deadline = self.factory.reactor.callLater(
            self.factory.handshakeTimeout, self._handshakeTimedOut
        )
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        # TLSMemoryBIOProtocol tells only the wrapped protocol (and only if it
        # is an IHandshakeListener) that the handshake finished; check here.
        if self._handshakeDone:
            self._cancelDeadline()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelDeadline()
        super().connectionLost(reason)

    def _cancelDeadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _handshakeTimedOut(self) -> None:
        self._deadline = None
        self.log.warn(
            "TLS handshake from {peer} not finished within {timeout} seconds; "
            "disconnecting",
            peer=self.getPeer(),
            timeout=self.factory.handshakeTimeout,
        )
        self.abortConnection()


class _DeadlineTLSFactory(TLSMemoryBIOFactory):
    protocol = _DeadlineTLSProtocol

    def __init__(
        self,
        serverTLS: ServerTLS,
        wrappedFactory: IProtocolFactory,
        reactor: Any,
        handshakeTimeout: float,
    ):
        super().__init__(serverTLS, False, wrappedFactory, clock=reactor)
        self.reactor = reactor
        self.handshakeTimeout = handshakeTimeout
