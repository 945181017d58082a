# -*- test-case-name: tests.test_tls -*-
"""
Server-side TLS connections with a handshake deadline, and log lines for the
handshakes that fail: the peer and OpenSSL's reason, at most once per peer
address per minute and a bounded number of lines in all (L{ReportGate}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from OpenSSL import SSL
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure

from netplugins.addresses import describe
from netplugins.twistedinternals import tlsFailure, tlsHandshakeDone

if TYPE_CHECKING:
    from netplugins.tls.server import ServerTLS


class _DeadlineTLSProtocol(BufferingTLSTransport):
    """
    Server-side TLS that aborts a connection whose handshake is not done in
    time (docs/security.md).
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
        if tlsHandshakeDone(self):
            self._cancelDeadline()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # The handshake's own error, when it failed, is kept until now.
        failure = tlsFailure(self) or reason
        pending = self._deadline is not None
        self._cancelDeadline()
        if pending and not tlsHandshakeDone(self):
            if isinstance(failure.value, SSL.Error):
                self._report(
                    "TLS handshake with {peer} failed: {reason}",
                    _opensslReason(failure.value),
                )
            else:
                self._report(
                    "TLS connection from {peer} closed before its handshake "
                    "finished: {reason}",
                    failure.getErrorMessage(),
                )
        super().connectionLost(reason)

    def _report(self, format: str, reason: str, **fields: object) -> None:
        peer = self.getPeer()
        gate = self.factory.reports
        suppressed = gate.report(_source(peer), self.factory.reactor.seconds())
        if suppressed is None:
            return
        if suppressed:
            format += " ({suppressed} more from this address since the last line)"
        self.log.warn(
            format,
            peer=describe(peer),
            reason=reason,
            suppressed=suppressed,
            **fields,
        )

    def _cancelDeadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _handshakeTimedOut(self) -> None:
        self._deadline = None
        self._report(
            "TLS handshake from {peer} not finished in time; disconnecting: {reason}",
            f"no handshake within {self.factory.handshakeTimeout:g} seconds",
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
        creator: IOpenSSLServerConnectionCreator | None = None,
    ):
        super().__init__(
            creator if creator is not None else serverTLS,
            False,
            wrappedFactory,
            clock=reactor,
        )
        self.reactor = reactor
        self.handshakeTimeout = handshakeTimeout
        self.reports = serverTLS.handshakeReports(reactor)


def handshakeDone(transport: Any) -> bool:
    """
    Whether the TLS handshake on C{transport} (a transport that started TLS
    with C{startTLS}, or a TLS protocol itself) has finished.
    """
    # After startTLS, the transport's protocol is the TLS one.
    for candidate in (transport, getattr(transport, "protocol", None)):
        done = tlsHandshakeDone(candidate)
        if done is not None:
            return done
    return True


def _source(peer: IAddress) -> str:
    # One source per IP address, whatever the port.
    host = getattr(peer, "host", None)
    return host if isinstance(host, str) else describe(peer)


def _opensslReason(error: SSL.Error) -> str:
    """
    OpenSSL's reasons from an C{SSL.Error}: its queue of (library, function,
    reason) triples, joined.
    """
    queue = error.args[0] if error.args else None
    if isinstance(queue, list) and queue:
        return "; ".join(
            str(entry[-1]) if isinstance(entry, tuple) else str(entry)
            for entry in queue
        )
    return str(error) or error.__class__.__name__
