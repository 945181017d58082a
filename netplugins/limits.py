"""
Connection limits shared by every netplugins service: who may connect
(C{--allow}, C{--deny}), how many at once (C{--max-connections},
C{--max-connections-per-ip}), how long a silent connection lives
(C{--idle-timeout}), and how much a UDP source can make a service say
(SECURITY.md, "No amplification or relay").

One L{ConnectionTracker} per service wraps every factory and datagram protocol
that service listens with, so its counts cover all of the service's listeners.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any, TypeAlias, cast

from attrs import frozen
from twisted.internet import address
from twisted.internet.interfaces import (
    IAddress,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy
from zope.interface.declarations import Provides

from netplugins.addresses import describe
from netplugins.ratelimit import (
    REPORT_INTERVAL,
    REPORTS_PER_INTERVAL,
    ReportGate,
    TokenBucket,
)

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Source ports of UDP services that answer anything (echo, daytime, qotd,
#: chargen, time): replying to them starts a loop between two servers.  Port 0
#: is never a real client's.
IGNORED_SOURCE_PORTS = frozenset({0, 7, 13, 17, 19, 37})

#: Seconds a connection closed for idleness gets to finish closing (flushing
#: what was written to a peer that may not be reading) before it is aborted.
CLOSE_GRACE = 10.0


@frozen
class Limits:
    """
    The limits one service applies to its connections and datagrams.

    @ivar maxConnections: connections open at once, all listeners together.
    @ivar maxConnectionsPerIP: connections open at once from one IP address.
    @ivar idleTimeout: seconds without a byte read or written before a
        connection is closed.
    @ivar allow: when not empty, only these networks may connect or send.
    @ivar deny: these networks may not connect or send, even if allowed.
    @ivar datagramRate: datagrams per second one source address may have
        answered, sustained.
    @ivar datagramBurst: datagrams one source may have answered at once.
    @ivar ignoredSourcePorts: datagrams from these source ports are dropped.
    @ivar datagramSources: how many sources the datagram rate limit remembers;
        the least recently heard from is forgotten first.
    """

    maxConnections: int | None = None
    maxConnectionsPerIP: int | None = None
    idleTimeout: float | None = None
    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    datagramRate: float = 5.0
    datagramBurst: int = 10
    ignoredSourcePorts: frozenset[int] = IGNORED_SOURCE_PORTS
    datagramSources: int = 4096

    def limitsConnections(self) -> bool:
        """
        Whether any of these limits applies to stream connections.
        """
        return (
            self.maxConnections is not None
            or self.maxConnectionsPerIP is not None
            or self.idleTimeout is not None
            or bool(self.allow)
            or bool(self.deny)
        )


def parseNetwork(text: str) -> IPNetwork:
    """
    Parse an C{--allow}/C{--deny} value: a CIDR network or a single address,
    IPv4 or IPv6.  Host bits are ignored (C{10.1.2.3/8} is C{10.0.0.0/8}).

    @raise ValueError: with a one-line message naming C{text}.
    """
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"expected a network such as 192.0.2.0/24 or 2001:db8::/32, not {text!r}"
        ) from None


def _unmapped(ip: IPAddress) -> IPAddress:
    """
    The IPv4 address behind an IPv4-mapped IPv6 one (C{::ffff:192.0.2.1}, how a
    dual-stack socket sees IPv4 peers), so both count and match as one address.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _unmappedNetwork(network: IPNetwork) -> IPNetwork:
    """
    The IPv4 network behind an IPv4-mapped IPv6 one, for the same reason.
    """
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


def _ipOf(peer: IAddress) -> IPAddress | None:
    """
    The IP address of a peer, or C{None} for one that has none (UNIX sockets).
    """
    if isinstance(peer, (address.IPv4Address, address.IPv6Address)):
        return _unmapped(ipaddress.ip_address(peer.host))
    return None


class _Source:
    """
    What the datagram limits remember about one source address.

    @ivar refusal: why the source may not send at all (C{--allow}/C{--deny}),
        decided once when it is first heard from.
    """

    __slots__ = ("bucket", "dropped", "refusal", "reported")

    def __init__(self, bucket: TokenBucket, refusal: str | None):
        self.bucket = bucket
        self.refusal = refusal
        self.dropped = 0
        self.reported: float | None = None


class ConnectionTracker:
    """
    Applies one service's L{Limits} to all of its listeners.

    @ivar connections: connections open now, all listeners together.
    """

    log = Logger()

    def __init__(self, limits: Limits, reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor
        self.limits = limits
        self._clock: IReactorTime = reactor
        self._allow = tuple(_unmappedNetwork(n) for n in limits.allow)
        self._deny = tuple(_unmappedNetwork(n) for n in limits.deny)
        self.connections = 0
        self._perIP: dict[IPAddress, int] = {}
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._reports = TokenBucket(
            REPORTS_PER_INTERVAL / REPORT_INTERVAL,
            REPORTS_PER_INTERVAL,
            reactor.seconds(),
        )
        # Refused connections share the datagram lines' global cap.
        self._refusals = ReportGate(reactor.seconds(), lines=self._reports)

    def wrapFactory(self, factory: IProtocolFactory) -> IProtocolFactory:
        """
        Apply the connection limits to connections built by C{factory}.

        @return: C{factory} itself when no connection limit is set.
        """
        if not self.limits.limitsConnections():
            return factory
        return _LimitedFactory(self, factory)

    def wrapDatagram(self, protocol: DatagramProtocol) -> DatagramProtocol:
        """
        Apply C{--allow}/C{--deny}, the ignored source ports and the per-source
        rate limit to datagrams before C{protocol} sees them.  Dropped
        datagrams get no reply.
        """
        return _LimitedDatagram(self, protocol)

    def _refusal(self, ip: IPAddress) -> str | None:
        """
        Why C{--allow}/C{--deny} keep C{ip} out, or C{None}.
        """
        if any(ip in network for network in self._deny):
            return "address denied (--deny)"
        if self._allow and not any(ip in network for network in self._allow):
            return "address not allowed (--allow)"
        return None

    def _admit(self, ip: IPAddress | None) -> str | None:
        """
        Count a new connection from C{ip} (C{None}: not an IP peer), or say why
        it is refused.
        """
        limits = self.limits
        if ip is not None:
            refusal = self._refusal(ip)
            if refusal is not None:
                return refusal
        if limits.maxConnections is not None:
            if self.connections >= limits.maxConnections:
                return (
                    f"{self.connections} connections already open (--max-connections)"
                )
        if ip is not None and limits.maxConnectionsPerIP is not None:
            if self._perIP.get(ip, 0) >= limits.maxConnectionsPerIP:
                return (
                    f"{self._perIP[ip]} connections already open from this"
                    " address (--max-connections-per-ip)"
                )
        self.connections += 1
        if ip is not None:
            self._perIP[ip] = self._perIP.get(ip, 0) + 1
        return None

    def _reportRefusal(self, peer: IAddress, ip: IPAddress | None, reason: str) -> None:
        """
        Log a refused connection, at most once per source address per
        L{REPORT_INTERVAL}, counting the ones left unlogged.
        """
        suppressed = self._refusals.report(
            describe(peer) if ip is None else str(ip), self._clock.seconds()
        )
        if suppressed is None:
            return
        if suppressed:
            self.log.info(
                "Refused connection from {peer}: {reason} ({suppressed} more "
                "refused from this address since the last line)",
                peer=describe(peer),
                reason=reason,
                suppressed=suppressed,
            )
        else:
            self.log.info(
                "Refused connection from {peer}: {reason}",
                peer=describe(peer),
                reason=reason,
            )

    def _release(self, ip: IPAddress | None) -> None:
        """
        Forget a connection counted by L{_admit}.
        """
        self.connections -= 1
        if ip is not None:
            left = self._perIP.pop(ip) - 1
            if left:
                self._perIP[ip] = left

    def _admitDatagram(self, addr: tuple[Any, ...]) -> bool:
        """
        Whether a datagram from C{addr} may reach the service; drops (and now
        and then logs) the others.
        """
        host, port = addr[0], addr[1]
        now = self._clock.seconds()
        source = self._sources.get(host)
        if source is None:
            source = self._newSource(host, now)
        else:
            self._sources.move_to_end(host)
        if port in self.limits.ignoredSourcePorts:
            reason = f"source port {port} belongs to a service that answers back"
        elif source.refusal is not None:
            reason = source.refusal
        elif source.bucket.take(now):
            return True
        else:
            reason = "over the rate limit"
        source.dropped += 1
        if (
            source.reported is None or now - source.reported >= REPORT_INTERVAL
        ) and self._reports.take(now):
            self.log.info(
                "Dropped {count} datagram(s) from {source}: {reason}",
                count=source.dropped,
                source=host,
                reason=reason,
            )
            source.dropped = 0
            source.reported = now
        return False

    def _newSource(self, host: str, now: float) -> _Source:
        """
        Remember a source heard from for the first time, forgetting the least
        recently heard from one if the table is full.
        """
        refusal = None
        if self._allow or self._deny:
            refusal = self._refusal(_unmapped(ipaddress.ip_address(host)))
        limits = self.limits
        source = _Source(
            TokenBucket(limits.datagramRate, limits.datagramBurst, now), refusal
        )
        self._sources[host] = source
        if len(self._sources) > limits.datagramSources:
            self._sources.popitem(last=False)
        return source


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
        refusal = self._tracker._admit(self._ip)
        if refusal is not None:
            self._tracker._reportRefusal(peer, self._ip, refusal)
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
            self._tracker._release(self._ip)
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.connectionLost(reason)

    def logPrefix(self) -> str:
        protocol = self.wrappedProtocol
        if protocol is None:
            return "Refused"
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
        clock = self._tracker._clock
        self._seconds = clock.seconds
        self._lastActivity = clock.seconds()
        timeout = self._tracker.limits.idleTimeout
        assert timeout is not None
        self._timeout = timeout
        self._timer = clock.callLater(self._timeout, self._checkIdle)
        protocol.makeConnection(cast(ITransport, _ActivityTransport(transport, self)))

    def dataReceived(self, data: bytes) -> None:
        if self.wrappedProtocol is not None:
            self._lastActivity = self._seconds()
            self.wrappedProtocol.dataReceived(data)

    def _checkIdle(self) -> None:
        clock = self._tracker._clock
        idle = clock.seconds() - self._lastActivity
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
        self._abortCall = clock.callLater(CLOSE_GRACE, self._abort)
        self.transport.loseConnection()

    def _abort(self) -> None:
        self._abortCall = None
        assert self.transport is not None
        self._tracker.log.info(
            "Aborting connection from {peer}: not closed {grace:.0f} s after"
            " its idle timeout",
            peer=describe(self.transport.getPeer()),
            grace=CLOSE_GRACE,
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
        self._guard = guard
        self._seconds = guard._seconds

    @property
    def __providedBy__(self) -> Provides:
        # Read at every check, not copied once: startTLS makes the real
        # transport an ISSLTransport later.
        return providedBy(self._transport)  # type: ignore[return-value]

    def write(self, data: bytes) -> None:
        self._guard._lastActivity = self._seconds()
        self._transport.write(data)

    def writeSequence(self, data: Any) -> None:
        self._guard._lastActivity = self._seconds()
        self._transport.writeSequence(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _LimitedDatagram(DatagramProtocol):
    """
    A datagram protocol that passes on only the datagrams the tracker admits.
    The wrapped protocol gets the real port as its transport, for replies.
    """

    def __init__(self, tracker: ConnectionTracker, wrapped: DatagramProtocol):
        self._admit = tracker._admitDatagram
        self.wrappedProtocol = wrapped

    def makeConnection(self, transport: Any) -> None:
        super().makeConnection(transport)
        self.wrappedProtocol.makeConnection(transport)

    def doStop(self) -> None:
        self.wrappedProtocol.doStop()
        super().doStop()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self._admit(addr):
            self.wrappedProtocol.datagramReceived(datagram, addr)

    def connectionRefused(self) -> None:
        self.wrappedProtocol.connectionRefused()

    def logPrefix(self) -> str:
        return self.wrappedProtocol.logPrefix()
