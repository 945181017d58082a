"""
The stream side of the limits: every connection passes the tracker's
C{--allow}/C{--deny} and caps before its protocol is built, and under
C{--idle-timeout} is closed after a silence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from twisted.internet.interfaces import (
    IAddress,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    ITransport,
)
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy
from zope.interface.declarations import Provides

from netplugins.addresses import describe
from netplugins.limits.settings import DEFAULT_CLOSE_GRACE, IPAddress, _ipOf

if TYPE_CHECKING:
    from netplugins.limits.tracker import ConnectionTracker

#: Seconds a connection closed for idleness gets to finish closing (flushing
#: what was written to a peer that may not be reading) before it is aborted,
#: unless C{--close-grace} says otherwise.
CLOSE_GRACE = DEFAULT_CLOSE_GRACE


@implementer(IProtocolFactory, ILoggingContext)
class _LimitedFactory:
    """
    A factory whose connections pass the tracker's limits first.

    It provides what the wrapped factory provides (C{IProtocolNegotiationFactory}
    for ALPN, ...) and hands any other attribute lookup to it.
    """

    def __init__(self, tracker: ConnectionTracker, wrappedFactory: IProtocolFactory):
        self.tracker = tracker
        self.wrappedFactory = wrappedFactory
        directlyProvides(self, providedBy(wrappedFactory))
        self._guard = _Guard if tracker.limits.idleTimeout is None else _IdleGuard

    def doStart(self) -> None:
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        self.wrappedFactory.doStop()

    def buildProtocol(self, addr: IAddress) -> _Guard:
        return self._guard(self.tracker, self.wrappedFactory, addr)

    def logPrefix(self) -> str:
        if ILoggingContext.providedBy(self.wrappedFactory):
            return self.wrappedFactory.logPrefix()  # type: ignore[attr-defined]
        return self.wrappedFactory.__class__.__name__

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrappedFactory, name)


@implementer(IProtocol, ILoggingContext)
class _Guard:
    """
    Stands between a transport and one connection's protocol: admits the
    connection or refuses it, and gives its place back when it ends.

    The wrapped protocol is only built once the connection is admitted, so a
    refused peer costs the service nothing.  It gets the real transport.  The
    guard provides what the wrapped protocol provides (C{IHalfCloseableProtocol},
    C{IHandshakeListener}, ...) and hands any other attribute lookup to it.
    """

    wrappedProtocol: IProtocol | None = None
    transport: ITransport | None = None

    def __init__(
        self, tracker: ConnectionTracker, factory: IProtocolFactory, addr: IAddress
    ):
        self._tracker = tracker
        self._factory = factory
        self._addr = addr
        self._ip: IPAddress | None = None
        self._admitted = False

    def makeConnection(self, transport: ITransport) -> None:
        self.transport = transport
        peer = transport.getPeer()
        self._ip = _ipOf(peer)
        refusal = self._tracker.admit(self._ip)
        if refusal is not None:
            self._tracker.reportRefusal(peer, self._ip, refusal)
            transport.loseConnection()
            return
        self._admitted = True
        protocol = self._factory.buildProtocol(self._addr)
        if protocol is None:
            transport.loseConnection()
            return
        self.wrappedProtocol = protocol
        directlyProvides(self, providedBy(protocol))
        self._connect(protocol, transport)

    def _connect(self, protocol: IProtocol, transport: ITransport) -> None:
        protocol.makeConnection(transport)

    def connectionMade(self) -> None:
        """
        Never called: L{makeConnection} does the connecting.
        """

    def dataReceived(self, data: bytes) -> None:
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        if self._admitted:
            self._admitted = False
            self._tracker.release(self._ip)
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.connectionLost(reason)

    def logPrefix(self) -> str:
        """
        The wrapped protocol's; before it is built (a transport asks when the
        connection is accepted, for its log lines), the name of the protocol
        the factory makes.
        """
        protocol = self.wrappedProtocol
        if protocol is None:
            made = getattr(self._factory, "protocol", None)
            if isinstance(made, type):
                return made.__name__
            return self._factory.__class__.__name__
        if ILoggingContext.providedBy(protocol):
            return protocol.logPrefix()  # type: ignore[attr-defined]
        return protocol.__class__.__name__

    def __getattr__(self, name: str) -> Any:
        if self.wrappedProtocol is None:
            raise AttributeError(name)
        return getattr(self.wrappedProtocol, name)


class _IdleGuard(_Guard):
    """
    A L{_Guard} that also closes the connection after C{idleTimeout} seconds
    without a byte read or written.

    Activity only stamps the time; one timer checks the stamp when it could
    have expired, so the per-read and per-write cost is a clock reading.
    """

    _lastActivity = 0.0
    _timer: Any = None
    _abortCall: Any = None

    def _connect(self, protocol: IProtocol, transport: ITransport) -> None:
        clock = self._tracker.clock
        self._seconds = clock.seconds
        self._lastActivity = clock.seconds()
        timeout = self._tracker.limits.idleTimeout
        assert timeout is not None
        self._timeout = timeout
        self._timer = clock.callLater(self._timeout, self._checkIdle)
        self._activity = _ActivityTransport(transport, self)
        protocol.makeConnection(cast(ITransport, self._activity))

    def dataReceived(self, data: bytes) -> None:
        if self.wrappedProtocol is not None:
            self._lastActivity = self._seconds()
            self.wrappedProtocol.dataReceived(data)

    def _checkIdle(self) -> None:
        clock = self._tracker.clock
        # Writes stamp the wrapper, not the guard: one attribute hop less
        # on every write.
        idle = clock.seconds() - max(self._lastActivity, self._activity._lastWrite)
        if idle < self._timeout:
            self._timer = clock.callLater(self._timeout - idle, self._checkIdle)
            return
        self._timer = None
        assert self.transport is not None
        self._tracker.log.info(
            "Closing connection from {peer}: idle for {idle:.1f} s (--idle-timeout)",
            peer=describe(self.transport.getPeer()),
            idle=idle,
        )
        # Set before closing: a transport may report the loss at once.
        self._abortCall = clock.callLater(self._tracker.limits.closeGrace, self._abort)
        self.transport.loseConnection()

    def _abort(self) -> None:
        self._abortCall = None
        assert self.transport is not None
        self._tracker.log.info(
            "Aborting connection from {peer}: not closed {grace:.0f} s after"
            " its idle timeout",
            peer=describe(self.transport.getPeer()),
            grace=self._tracker.limits.closeGrace,
        )
        self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure) -> None:
        for call in (self._timer, self._abortCall):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._abortCall = None
        super().connectionLost(reason)


class _ActivityTransport:
    """
    The transport as a protocol under C{--idle-timeout} sees it: writes count as
    activity; everything else is the real transport's.
    """

    def __init__(self, transport: ITransport, guard: _IdleGuard):
        self._transport = transport
        self._seconds = guard._seconds
        self._lastWrite = guard._lastActivity

    @property
    def __providedBy__(self) -> Provides:
        # Read at every check, not copied once: startTLS makes the real
        # transport an ISSLTransport later.
        return providedBy(self._transport)  # type: ignore[return-value]

    def write(self, data: bytes) -> None:
        self._lastWrite = self._seconds()
        self._transport.write(data)

    def writeSequence(self, data: Any) -> None:
        self._lastWrite = self._seconds()
        self._transport.writeSequence(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
