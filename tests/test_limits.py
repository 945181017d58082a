"""
Tests for L{netplugins.limits}: allow/deny, connection caps, idle timeouts and
the datagram rate limit.
"""

from __future__ import annotations

import socket
import ssl
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

import trustme
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IProtocolNegotiationFactory,
    IPushProducer,
    ISSLTransport,
    ITLSTransport,
    ITransport,
)
from twisted.internet.protocol import (
    DatagramProtocol,
    Factory,
    Protocol,
    connectionDone,
)
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport, StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import directlyProvides, implementer

from netplugins.limits.settings import Limits, parseNetwork
from netplugins.limits.stream import CLOSE_GRACE
from netplugins.limits.tracker import ConnectionTracker
from netplugins.ratelimit import REPORT_INTERVAL, REPORTS_PER_INTERVAL


def v4(host: str, port: int = 40000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


def v6(host: str, port: int = 40000) -> IPv6Address:
    return IPv6Address("TCP", host, port)


def networks(*texts: str) -> tuple[IPv4Network | IPv6Network, ...]:
    return tuple(parseNetwork(t) for t in texts)


def lost() -> Failure:
    return Failure(ConnectionDone())


class Recorder(Protocol):
    """
    Remembers what happened to it.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lostReason: Failure | None = None

    def connectionMade(self) -> None:
        self.factory.made.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lostReason = reason


class RecorderFactory(Factory):
    protocol = Recorder

    def __init__(self) -> None:
        self.made: list[Recorder] = []
        self.built = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.built += 1
        return super().buildProtocol(addr)


# StringTransport declares ITCPTransport without its TCP options.
@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):  # type: ignore[misc]
    """
    A L{StringTransport} that can start TLS (as TCP's does, by becoming an
    L{ISSLTransport} at once) and records an abort.
    """

    aborted = False
    tlsContext: object = None

    def startTLS(self, contextFactory: object, normal: bool = True) -> None:
        self.tlsContext = contextFactory
        directlyProvides(self, ISSLTransport)

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class TrackerMixin:
    """
    Builds trackers on a L{Clock} and connects to them over string transports.
    """

    def tracker(self, **kwargs: Any) -> ConnectionTracker:
        self.clock = Clock()
        return ConnectionTracker(Limits(**kwargs), reactor=self.clock)

    def connect(self, factory: Any, peer: Any) -> tuple[Any, TLSStringTransport]:
        protocol = factory.buildProtocol(peer)
        transport = TLSStringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def admitted(self, factory: Any, peer: Any) -> bool:
        """
        Connect from C{peer}; whether the connection was kept open.
        """
        _, transport = self.connect(factory, peer)
        return not transport.disconnecting


class ParseNetworkTests(SynchronousTestCase):
    def test_ipv4(self) -> None:
        """
        A CIDR IPv4 network parses, its host bits ignored.
        """
        self.assertEqual(parseNetwork("10.1.2.3/8"), IPv4Network("10.0.0.0/8"))

    def test_ipv6(self) -> None:
        """
        A CIDR IPv6 network parses, its host bits ignored.
        """
        self.assertEqual(parseNetwork("2001:db8::1/32"), IPv6Network("2001:db8::/32"))

    def test_singleAddress(self) -> None:
        """
        An address without a prefix length is a network of one.
        """
        self.assertEqual(parseNetwork("192.0.2.7"), IPv4Network("192.0.2.7/32"))

    def test_bad(self) -> None:
        """
        A bad value is a ValueError whose one-line message names the value.
        """
        for text in ["10.0.0.0/33", "example.com", "", "1.2.3"]:
            e = self.assertRaises(ValueError, parseNetwork, text)
            self.assertIn(repr(text), str(e))
            self.assertNotIn("\n", str(e))


class LimitsTests(SynchronousTestCase, TrackerMixin):
    def test_defaults(self) -> None:
        """By default nothing limits connections; echo-like source ports are ignored."""
        # By default nothing limits connections, while datagrams from the echo, daytime,
        # qotd, chargen and time ports (and port 0) are ignored.
        limits = Limits()
        self.assertFalse(limits.limitsConnections())
        self.assertEqual(limits.ignoredSourcePorts, {0, 7, 13, 17, 19, 37})
        self.assertTrue(Limits(idleTimeout=1.0).limitsConnections())
        self.assertTrue(Limits(deny=networks("10.0.0.0/8")).limitsConnections())

    def test_unlimitedFactoryUnchanged(self) -> None:
        """
        Without any connection limit the factory is returned unwrapped.
        """
        factory = RecorderFactory()
        self.assertIs(self.tracker().wrapFactory(factory), factory)


class FilterTests(SynchronousTestCase, TrackerMixin):
    def test_allowIPv4(self) -> None:
        """With --allow only allowed peers stay; the refused never reach the factory."""
        # With --allow, only peers in the allowed networks stay connected, and a refused
        # one never reaches the service's factory.
        factory = RecorderFactory()
        wrapped = self.tracker(allow=networks("10.0.0.0/8")).wrapFactory(factory)
        self.assertTrue(self.admitted(wrapped, v4("10.1.2.3")))
        self.assertFalse(self.admitted(wrapped, v4("192.0.2.1")))
        self.assertEqual((factory.built, len(factory.made)), (1, 1))

    def test_denyIPv6(self) -> None:
        """
        --deny refuses IPv6 peers in the denied networks only.
        """
        wrapped = self.tracker(deny=networks("2001:db8::/32")).wrapFactory(
            RecorderFactory()
        )
        self.assertFalse(self.admitted(wrapped, v6("2001:db8::5")))
        self.assertTrue(self.admitted(wrapped, v6("2001:db9::5")))

    def test_denyWins(self) -> None:
        """
        A peer both allowed and denied is refused.
        """
        wrapped = self.tracker(
            allow=networks("10.0.0.0/8", "2001:db8::/32"),
            deny=networks("10.9.0.0/16", "2001:db8:9::/48"),
        ).wrapFactory(RecorderFactory())
        self.assertFalse(self.admitted(wrapped, v4("10.9.0.1")))
        self.assertFalse(self.admitted(wrapped, v6("2001:db8:9::1")))
        self.assertTrue(self.admitted(wrapped, v4("10.8.0.1")))
        self.assertTrue(self.admitted(wrapped, v6("2001:db8:8::1")))

    def test_mappedPeerMatchesIPv4(self) -> None:
        """
        An IPv4-mapped IPv6 peer matches IPv4 networks as its IPv4 address.
        """
        wrapped = self.tracker(
            allow=networks("192.0.2.0/24", "10.0.0.0/8"),
            deny=networks("10.0.0.0/16"),
        ).wrapFactory(RecorderFactory())
        self.assertTrue(self.admitted(wrapped, v6("::ffff:192.0.2.1")))
        self.assertFalse(self.admitted(wrapped, v6("::ffff:10.0.0.5")))
        self.assertFalse(self.admitted(wrapped, v6("::ffff:198.51.100.1")))

    def test_mappedNetworkMatchesIPv4(self) -> None:
        """
        A network written as IPv4-mapped IPv6 matches plain IPv4 peers.
        """
        wrapped = self.tracker(deny=networks("::ffff:10.0.0.0/104")).wrapFactory(
            RecorderFactory()
        )
        self.assertFalse(self.admitted(wrapped, v4("10.1.1.1")))
        self.assertTrue(self.admitted(wrapped, v4("11.0.0.1")))

    def test_familiesKeptApart(self) -> None:
        """
        Allowing every IPv4 address allows no IPv6 one.
        """
        wrapped = self.tracker(allow=networks("0.0.0.0/0")).wrapFactory(
            RecorderFactory()
        )
        self.assertTrue(self.admitted(wrapped, v4("198.51.100.1")))
        self.assertFalse(self.admitted(wrapped, v6("2001:db8::1")))

    def test_refusalLogged(self) -> None:
        """
        A refused connection is logged with the peer and the reason.
        """
        wrapped = self.tracker(allow=networks("10.0.0.0/8")).wrapFactory(
            RecorderFactory()
        )
        with capturedLogs() as events:
            self.connect(wrapped, v4("192.0.2.1", 4321))
            self.connect(wrapped, v6("2001:db8::1", 4322))
        lines = [formatEvent(e) for e in events]
        self.assertEqual(
            lines,
            [
                "Refused connection from 192.0.2.1:4321: address not allowed (--allow)",
                "Refused connection from [2001:db8::1]:4322: "
                "address not allowed (--allow)",
            ],
        )

    def test_unixPeersNotFiltered(self) -> None:
        """
        UNIX-socket peers have no IP address and pass --allow/--deny.
        """
        wrapped = self.tracker(
            allow=networks("10.0.0.0/8"), deny=networks("0.0.0.0/0", "::/0")
        ).wrapFactory(RecorderFactory())
        self.assertTrue(self.admitted(wrapped, UNIXAddress(None)))
        self.assertTrue(self.admitted(wrapped, UNIXAddress(b"/run/np.sock")))

    def test_refusalsLoggedOncePerInterval(self) -> None:
        """One address's refusals log a line per interval, counting the rest."""
        wrapped = self.tracker(deny=networks("192.0.2.0/24")).wrapFactory(
            RecorderFactory()
        )
        with capturedLogs() as events:
            for port in range(1000, 1100):
                self.connect(wrapped, v4("192.0.2.1", port))
            self.connect(wrapped, v4("192.0.2.2", 2000))
            self.clock.advance(REPORT_INTERVAL)
            self.connect(wrapped, v4("192.0.2.1", 3000))
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "Refused connection from 192.0.2.1:1000: address denied (--deny)",
                "Refused connection from 192.0.2.2:2000: address denied (--deny)",
                "Refused connection from 192.0.2.1:3000: address denied (--deny) "
                "(99 more refused from this address since the last line)",
            ],
        )

    def test_floodOfRefusalsLogBounded(self) -> None:
        """Refusals from many addresses log at most the global cap of lines."""
        wrapped = self.tracker(deny=networks("10.0.0.0/8")).wrapFactory(
            RecorderFactory()
        )
        with capturedLogs() as events:
            for i in range(1000):
                self.connect(wrapped, v4(f"10.0.{i // 256}.{i % 256}"))
        self.assertEqual(len(events), REPORTS_PER_INTERVAL)


class CountTests(SynchronousTestCase, TrackerMixin):
    def test_maxConnections(self) -> None:
        """The connection beyond --max-connections is refused, logged, then freed."""
        # The connection beyond --max-connections is refused and logged; once one
        # closes, a new one is admitted.
        wrapped = self.tracker(maxConnections=2).wrapFactory(RecorderFactory())
        first, _ = self.connect(wrapped, v4("10.0.0.1"))
        self.assertTrue(self.admitted(wrapped, v4("10.0.0.2")))
        with capturedLogs() as events:
            self.assertFalse(self.admitted(wrapped, v4("10.0.0.3")))
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "Refused connection from 10.0.0.3:40000: "
                "2 connections already open (--max-connections)"
            ],
        )
        first.connectionLost(lost())
        self.assertTrue(self.admitted(wrapped, v4("10.0.0.3")))
        self.assertFalse(self.admitted(wrapped, v4("10.0.0.4")))

    def test_countedAcrossListeners(self) -> None:
        """
        Every factory wrapped by one tracker shares its --max-connections.
        """
        tracker = self.tracker(maxConnections=2)
        plain = tracker.wrapFactory(RecorderFactory())
        secure = tracker.wrapFactory(RecorderFactory())
        self.assertTrue(self.admitted(plain, v4("10.0.0.1")))
        self.assertTrue(self.admitted(secure, v4("10.0.0.2")))
        self.assertFalse(self.admitted(plain, v4("10.0.0.3")))
        self.assertFalse(self.admitted(secure, v4("10.0.0.3")))
        self.assertEqual(tracker.connections, 2)

    def test_perIP(self) -> None:
        """The connection beyond the per-IP cap is refused; other addresses get in."""
        # The connection beyond --max-connections-per-ip from one address is refused,
        # other addresses still get in, and a close frees a place.
        wrapped = self.tracker(maxConnectionsPerIP=2).wrapFactory(RecorderFactory())
        first, _ = self.connect(wrapped, v4("10.0.0.1", 1))
        self.assertTrue(self.admitted(wrapped, v4("10.0.0.1", 2)))
        with capturedLogs() as events:
            self.assertFalse(self.admitted(wrapped, v4("10.0.0.1", 3)))
        self.assertIn("--max-connections-per-ip", formatEvent(events[0]))
        self.assertTrue(self.admitted(wrapped, v4("10.0.0.2")))
        first.connectionLost(lost())
        self.assertTrue(self.admitted(wrapped, v4("10.0.0.1", 4)))
        self.assertFalse(self.admitted(wrapped, v4("10.0.0.1", 5)))

    def test_perIPForgotten(self) -> None:
        """An address is forgotten once its last connection closes."""
        # An address is forgotten once its last connection closes, so the per-address
        # table only holds peers connected now.
        tracker = self.tracker(maxConnectionsPerIP=2)
        wrapped = tracker.wrapFactory(RecorderFactory())
        guards = [self.connect(wrapped, v4("10.0.0.1", p))[0] for p in (1, 2)]
        guards[0].connectionLost(lost())
        self.assertEqual(tracker._perIP, {ip_address("10.0.0.1"): 1})
        guards[1].connectionLost(lost())
        self.assertEqual((tracker._perIP, tracker.connections), ({}, 0))

    def test_perIPMapped(self) -> None:
        """
        An IPv4-mapped IPv6 peer counts as its IPv4 address.
        """
        wrapped = self.tracker(maxConnectionsPerIP=1).wrapFactory(RecorderFactory())
        self.assertTrue(self.admitted(wrapped, v4("10.0.0.1")))
        self.assertFalse(self.admitted(wrapped, v6("::ffff:10.0.0.1")))

    def test_perIPv6(self) -> None:
        """IPv6 peers are counted per /64, as the login throttle counts them."""
        tracker = self.tracker(maxConnectionsPerIP=1)
        wrapped = tracker.wrapFactory(RecorderFactory())
        self.assertTrue(self.admitted(wrapped, v6("2001:db8::1")))
        self.assertFalse(self.admitted(wrapped, v6("2001:db8:0::1")))
        self.assertFalse(self.admitted(wrapped, v6("2001:db8::2")))
        self.assertFalse(self.admitted(wrapped, v6("2001:db8::ffff:1:2:3")))
        self.assertTrue(self.admitted(wrapped, v6("2001:db8:0:1::1")))
        self.assertEqual(
            tracker._perIP,
            {IPv6Network("2001:db8::/64"): 1, IPv6Network("2001:db8:0:1::/64"): 1},
        )

    def test_unixCountsTowardMax(self) -> None:
        """UNIX-socket peers count toward --max-connections but not per IP."""
        wrapped = self.tracker(maxConnections=2, maxConnectionsPerIP=1).wrapFactory(
            RecorderFactory()
        )
        self.assertTrue(self.admitted(wrapped, UNIXAddress(None)))
        self.assertTrue(self.admitted(wrapped, UNIXAddress(None)))
        self.assertFalse(self.admitted(wrapped, UNIXAddress(None)))

    def test_refusedLossReleasesNothing(self) -> None:
        """
        The close of a refused connection does not free anyone's place.
        """
        wrapped = self.tracker(maxConnections=1).wrapFactory(RecorderFactory())
        self.assertTrue(self.admitted(wrapped, v4("10.0.0.1")))
        refused, transport = self.connect(wrapped, v4("10.0.0.2"))
        self.assertTrue(transport.disconnecting)
        refused.connectionLost(lost())
        self.assertFalse(self.admitted(wrapped, v4("10.0.0.3")))

    def test_releasedWhenProtocolRaises(self) -> None:
        """A connection's place is freed even if the protocol's connectionLost fails."""

        class Raising(Protocol):
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                raise RuntimeError("oops")

        wrapped = self.tracker(maxConnections=1).wrapFactory(
            Factory.forProtocol(Raising)
        )
        guard, _ = self.connect(wrapped, v4("10.0.0.1"))
        self.assertRaises(RuntimeError, guard.connectionLost, lost())
        self.assertTrue(self.admitted(wrapped, v4("10.0.0.2")))

    def test_releasedWhenFactoryBuildsNothing(self) -> None:
        """When the factory builds no protocol, the connection closes and is freed."""
        # When the service's factory builds no protocol the connection is closed and its
        # place freed when it is lost.

        class Nothing(Factory):
            def buildProtocol(self, addr: Any) -> None:
                return None

        tracker = self.tracker(maxConnections=1)
        wrapped = tracker.wrapFactory(Nothing())
        guard, transport = self.connect(wrapped, v4("10.0.0.1"))
        self.assertTrue(transport.disconnecting)
        guard.connectionLost(lost())
        self.assertEqual(tracker.connections, 0)

    def test_lossForwarded(self) -> None:
        """
        The service's protocol gets its data and its connectionLost.
        """
        factory = RecorderFactory()
        wrapped = self.tracker(maxConnections=1).wrapFactory(factory)
        guard, _ = self.connect(wrapped, v4("10.0.0.1"))
        guard.dataReceived(b"hello")
        reason = lost()
        guard.connectionLost(reason)
        self.assertEqual(factory.made[0].received, [b"hello"])
        self.assertIs(factory.made[0].lostReason, reason)


class IdleTests(SynchronousTestCase, TrackerMixin):
    def setUp(self) -> None:
        self.factory = RecorderFactory()
        self.wrapped = self.tracker(idleTimeout=10.0).wrapFactory(self.factory)
        self.guard, self.transport = self.connect(self.wrapped, v4("10.0.0.1"))
        self.protocol = self.factory.made[0]
        self.seen: Any = self.protocol.transport

    def test_idleCloses(self) -> None:
        """
        A connection with no traffic for the idle timeout is closed and logged.
        """
        self.clock.advance(9.9)
        self.assertFalse(self.transport.disconnecting)
        with capturedLogs() as events:
            self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "Closing connection from 10.0.0.1:40000: idle for 10.0 s"
                " (--idle-timeout)"
            ],
        )

    def test_readResets(self) -> None:
        """
        Bytes received restart the idle timeout.
        """
        self.clock.advance(9)
        self.guard.dataReceived(b"x")
        self.clock.advance(9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.protocol.received, [b"x"])

    def test_writeResets(self) -> None:
        """
        Bytes sent (write or writeSequence) restart the idle timeout.
        """
        self.clock.advance(9)
        self.seen.write(b"a")
        self.clock.advance(9)
        self.seen.writeSequence([b"b", b"c"])
        self.clock.advance(9)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), b"abc")
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)

    def test_abortWhenCloseStalls(self) -> None:
        """A connection not closed some time after its idle timeout is aborted."""
        # A connection that has not closed some time after its idle timeout (a peer that
        # does not read) is aborted.
        self.clock.advance(10)
        self.assertFalse(self.transport.aborted)
        self.clock.advance(CLOSE_GRACE - 0.1)
        self.assertFalse(self.transport.aborted)
        with capturedLogs() as events:
            self.clock.advance(0.1)
        self.assertTrue(self.transport.aborted)
        self.assertIn("Aborting connection from 10.0.0.1:40000", formatEvent(events[0]))

    def test_lossCancelsTimers(self) -> None:
        """Once the connection is lost no timer is left and the protocol is told."""
        # Once the connection is lost no idle or abort timer is left, and the service's
        # protocol is told.
        self.clock.advance(10)
        self.guard.connectionLost(lost())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNotNone(self.protocol.lostReason)

    def test_noTimerWithoutIdleTimeout(self) -> None:
        """
        Without --idle-timeout, connections schedule nothing.
        """
        wrapped = self.tracker(maxConnections=5).wrapFactory(RecorderFactory())
        self.connect(wrapped, v4("10.0.0.1"))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class TransportTests(SynchronousTestCase, TrackerMixin):
    def test_countingGivesRealTransport(self) -> None:
        """When only counting and filtering, the protocol gets the real transport."""
        factory = RecorderFactory()
        wrapped = self.tracker(maxConnections=5).wrapFactory(factory)
        _, transport = self.connect(wrapped, v4("10.0.0.1"))
        self.assertIs(factory.made[0].transport, transport)

    def test_logPrefixBeforeAdmission(self) -> None:
        """Before admission the guard logs as the protocol it will build."""
        wrapped = self.tracker(maxConnections=5).wrapFactory(RecorderFactory())
        guard: Any = wrapped.buildProtocol(v4("10.0.0.1"))
        self.assertEqual(guard.logPrefix(), "Recorder")

    def idleConnection(self) -> tuple[Any, TLSStringTransport]:
        factory = RecorderFactory()
        wrapped = self.tracker(idleTimeout=10.0).wrapFactory(factory)
        _, transport = self.connect(wrapped, v4("10.0.0.1"))
        return factory.made[0].transport, transport

    def test_idleTransportInterfaces(self) -> None:
        """Under --idle-timeout the transport provides the real one's interfaces."""
        # Under --idle-timeout the protocol's transport provides the real transport's
        # interfaces, including ISSLTransport once TLS has started.
        seen, real = self.idleConnection()
        for interface in [ITransport, ITLSTransport, IConsumer, IPushProducer]:
            self.assertTrue(interface.providedBy(seen), interface)
        self.assertFalse(ISSLTransport.providedBy(seen))
        context = object()
        seen.startTLS(context)
        self.assertIs(real.tlsContext, context)
        self.assertTrue(ISSLTransport.providedBy(seen))

    def test_idleTransportDelegates(self) -> None:
        """Under --idle-timeout the transport delegates addresses, flow, aborts."""
        # Under --idle-timeout the protocol's transport passes addresses, flow control
        # and aborts through to the real one.
        seen, real = self.idleConnection()
        self.assertEqual(seen.getPeer(), v4("10.0.0.1"))
        self.assertEqual(seen.getHost(), real.getHost())
        seen.registerProducer(seen, True)
        self.assertIs(real.producer, seen)
        seen.pauseProducing()
        self.assertEqual(real.producerState, "paused")
        seen.resumeProducing()
        self.assertEqual(real.producerState, "producing")
        seen.unregisterProducer()
        self.assertIsNone(real.producer)
        seen.abortConnection()
        self.assertTrue(real.aborted)

    def test_protocolInterfacesMirrored(self) -> None:
        """What the service's protocol provides is seen through the wrapper."""
        # What the service's protocol provides (half-close, ...) the transport sees
        # through the wrapper, and the calls reach it.

        @implementer(IHalfCloseableProtocol)
        class HalfCloser(Protocol):
            readLost = False

            def readConnectionLost(self) -> None:
                self.readLost = True

            def writeConnectionLost(self) -> None:
                pass

        factory = Factory.forProtocol(HalfCloser)
        settings: list[dict[str, Any]] = [{"maxConnections": 1}, {"idleTimeout": 1}]
        for kwargs in settings:
            guard, _ = self.connect(
                self.tracker(**kwargs).wrapFactory(factory), v4("10.0.0.1")
            )
            self.assertTrue(IHalfCloseableProtocol.providedBy(guard))
            guard.readConnectionLost()
            self.assertTrue(guard.wrappedProtocol.readLost)

    def test_factoryForwards(self) -> None:
        """The wrapper passes calls, attributes and interfaces to the factory."""
        # The wrapper passes doStart/doStop, attribute lookups and interfaces (ALPN's
        # IProtocolNegotiationFactory) through to the service's factory, whose protocols
        # still point at it.

        @implementer(IProtocolNegotiationFactory)
        class ALPNFactory(RecorderFactory):
            greeting = "hi"

            def acceptableProtocols(self) -> list[bytes]:
                return [b"h2"]

        factory = ALPNFactory()
        wrapped: Any = self.tracker(maxConnections=1).wrapFactory(factory)
        wrapped.doStart()
        self.assertEqual(factory.numPorts, 1)
        self.assertTrue(IProtocolNegotiationFactory.providedBy(wrapped))
        self.assertEqual(wrapped.acceptableProtocols(), [b"h2"])
        self.assertEqual(wrapped.greeting, "hi")
        self.assertEqual(wrapped.logPrefix(), "ALPNFactory")
        self.connect(wrapped, v4("10.0.0.1"))
        self.assertIs(factory.made[0].factory, factory)
        wrapped.doStop()
        self.assertEqual(factory.numPorts, 0)


class EchoDatagram(DatagramProtocol):
    """
    Answers every datagram with itself.
    """

    started = stopped = False

    def startProtocol(self) -> None:
        self.started = True

    def stopProtocol(self) -> None:
        self.stopped = True

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        assert self.transport is not None
        self.transport.write(datagram, addr)


class DatagramTests(SynchronousTestCase, TrackerMixin):
    def limited(self, **kwargs: Any) -> tuple[Any, FakeDatagramTransport]:
        self.echo = EchoDatagram()
        wrapper = self.tracker(**kwargs).wrapDatagram(self.echo)
        transport = FakeDatagramTransport()
        wrapper.makeConnection(transport)
        return wrapper, transport

    def answered(self, wrapper: Any, transport: Any, addr: Any, n: int = 1) -> int:
        """
        Send C{n} datagrams from C{addr}; how many were answered.
        """
        before = len(transport.written)
        for _ in range(n):
            wrapper.datagramReceived(b"q", addr)
        return len(transport.written) - before

    def test_burstThenRate(self) -> None:
        """A source gets the burst at once, then the rate; others have their own."""
        # A source gets at most the burst answered at once, then the rate per second;
        # another source has its own allowance.
        wrapper, transport = self.limited(datagramRate=5.0, datagramBurst=10)
        source = ("192.0.2.1", 5000)
        self.assertEqual(self.answered(wrapper, transport, source, 20), 10)
        self.clock.advance(1)
        self.assertEqual(self.answered(wrapper, transport, source, 20), 5)
        self.assertEqual(self.answered(wrapper, transport, ("192.0.2.2", 1), 20), 10)
        self.assertEqual(transport.written[0], (b"q", source))
        self.clock.advance(1000)
        self.assertEqual(self.answered(wrapper, transport, source, 20), 10)

    def test_ratePerAddress(self) -> None:
        """
        Changing source port does not buy a source a new allowance.
        """
        wrapper, transport = self.limited(datagramBurst=3)
        answered = sum(
            self.answered(wrapper, transport, ("192.0.2.1", port))
            for port in range(5000, 5010)
        )
        self.assertEqual(answered, 3)

    def test_ignoredPorts(self) -> None:
        """
        Datagrams from the ports of services that answer back are dropped.
        """
        wrapper, transport = self.limited()
        for port in [0, 7, 13, 17, 19, 37]:
            self.assertEqual(self.answered(wrapper, transport, ("192.0.2.1", port)), 0)
        self.assertEqual(self.answered(wrapper, transport, ("192.0.2.1", 1024)), 1)

    def test_allowDeny(self) -> None:
        """Datagrams from denied or not-allowed sources (v4, v6, mapped) are dropped."""
        wrapper, transport = self.limited(
            allow=networks("192.0.2.0/24", "2001:db8::/32"),
            deny=networks("192.0.2.128/25"),
        )
        for host, expected in [
            ("192.0.2.1", 1),
            ("192.0.2.200", 0),
            ("::ffff:192.0.2.2", 1),
            ("::ffff:192.0.2.201", 0),
            ("198.51.100.1", 0),
            ("2001:db8::1", 1),
            ("2001:db9::1", 0),
        ]:
            self.assertEqual(
                self.answered(wrapper, transport, (host, 5000, 0, 0)), expected, host
            )

    def test_dropsLoggedOncePerInterval(self) -> None:
        """Dropped datagrams are logged once per source per interval, with a count."""
        # Dropped datagrams are logged once per source per interval, with the count
        # dropped since the last report.
        wrapper, transport = self.limited(datagramBurst=1)
        with capturedLogs() as events:
            self.answered(wrapper, transport, ("192.0.2.1", 5000), 100)
            self.clock.advance(REPORT_INTERVAL - 1)
            self.answered(wrapper, transport, ("192.0.2.1", 7), 100)
            self.clock.advance(1)
            self.answered(wrapper, transport, ("192.0.2.1", 7))
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "Dropped 1 datagram(s) from 192.0.2.1: over the rate limit",
                "Dropped 199 datagram(s) from 192.0.2.1:"
                " source port 7 belongs to a service that answers back",
            ],
        )

    def test_floodOfSourcesLogBounded(self) -> None:
        """
        A flood from many (spoofed) sources logs a bounded number of lines.
        """
        wrapper, transport = self.limited(deny=networks("10.0.0.0/8"))
        with capturedLogs() as events:
            for i in range(1000):
                self.answered(wrapper, transport, (f"10.0.{i // 256}.{i % 256}", 1))
        self.assertEqual(len(events), REPORTS_PER_INTERVAL)

    def test_sourceTableBounded(self) -> None:
        """Only recent sources are remembered: a flood of sources cannot grow memory."""
        # Only the most recently heard sources are remembered: a flood of sources cannot
        # grow memory, and a forgotten source starts afresh.
        wrapper, transport = self.limited(datagramBurst=1, datagramSources=3)
        tracker = wrapper._admit.__self__
        self.assertEqual(self.answered(wrapper, transport, ("192.0.2.1", 1), 2), 1)
        for i in range(2, 5):
            self.assertEqual(self.answered(wrapper, transport, (f"192.0.2.{i}", 1)), 1)
        self.assertEqual(self.answered(wrapper, transport, ("192.0.2.1", 1)), 1)
        self.assertEqual(self.answered(wrapper, transport, ("192.0.2.4", 1)), 0)
        for i in range(1000):
            self.answered(wrapper, transport, (f"10.0.{i // 256}.{i % 256}", 1))
        self.assertEqual(len(tracker._sources), 3)

    def test_protocolLifecycle(self) -> None:
        """The wrapped protocol starts and stops with the port, answers through it."""
        # The wrapped protocol is started and stopped with the port and answers through
        # the port's transport.
        wrapper, transport = self.limited()
        self.assertTrue(self.echo.started)
        self.assertIs(self.echo.transport, transport)
        wrapper.doStop()
        self.assertTrue(self.echo.stopped)
        self.assertIsNone(self.echo.transport)


class Echo(Protocol):
    def connectionMade(self) -> None:
        self.lost: Deferred[None] = Deferred()
        self.factory.lost.append(self.lost)

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class EchoFactory(Factory):
    """
    Echo protocols, and a Deferred per connection fired when the server side
    has seen it close.
    """

    protocol = Echo

    def __init__(self) -> None:
        self.lost: list[Deferred[None]] = []


class StartTLSLines(LineReceiver):
    """
    Answers each line with the line and whether the transport is secure;
    C{STARTTLS} is answered with C{GO} and starts TLS.
    """

    def lineReceived(self, line: bytes) -> None:
        if line == b"STARTTLS":
            self.sendLine(b"GO")
            transport: Any = self.transport
            transport.startTLS(self.factory.contextFactory)
            return
        secure = ISSLTransport.providedBy(self.transport)
        self.sendLine(line + (b" secure" if secure else b" clear"))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.lost.callback(None)


def readLine(sock: Any) -> bytes:
    line = b""
    while not line.endswith(b"\r\n"):
        byte = sock.recv(1)
        if not byte:
            break
        line += byte
    return line


class RealSocketTests(TestCase):
    timeout = 20

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor

    def listen(self, limits: Limits, factory: Any) -> int:
        tracker = ConnectionTracker(limits, reactor=self.reactor)
        port = self.reactor.listenTCP(
            0, tracker.wrapFactory(factory), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def test_perIPClosesThird(self) -> Deferred[Any]:
        """Behind a per-IP cap of 2, a third stdlib connection is closed."""
        # Behind --max-connections-per-ip 2, a third stdlib connection from 127.0.0.1 is
        # closed by the server while the first two echo.
        factory = EchoFactory()
        portNumber = self.listen(Limits(maxConnectionsPerIP=2), factory)

        def client() -> tuple[list[bytes], bytes]:
            address = ("127.0.0.1", portNumber)
            open_ = [socket.create_connection(address, timeout=5) for _ in range(2)]
            try:
                echoes = []
                for s in open_:
                    s.sendall(b"ping")
                    echoes.append(s.recv(4))
                with socket.create_connection(address, timeout=5) as third:
                    try:
                        closing = third.recv(4)
                    except ConnectionResetError:
                        closing = b""
            finally:
                for s in open_:
                    s.close()
            return echoes, closing

        def check(result: tuple[list[bytes], bytes]) -> Deferred[Any]:
            self.assertEqual(result, ([b"ping", b"ping"], b""))
            self.assertEqual(len(factory.lost), 2)
            return gatherResults(factory.lost)

        return deferToThread(client).addCallback(check)

    def startTLSThroughTracker(self, limits: Limits) -> Deferred[Any]:
        """
        A stdlib TLS client upgrades a line protocol behind a tracker with
        C{limits} by STARTTLS.
        """
        ca = trustme.CA()
        pem = ca.issue_cert("localhost").private_key_and_cert_chain_pem.bytes()
        factory: Any = Factory.forProtocol(StartTLSLines)
        factory.contextFactory = PrivateCertificate.loadPEM(pem).options()
        factory.lost = Deferred()
        portNumber = self.listen(limits, factory)

        def client() -> list[bytes]:
            context = ssl.create_default_context()
            ca.configure_trust(context)
            with socket.create_connection(("127.0.0.1", portNumber), 5) as raw:
                raw.sendall(b"before\r\n")
                lines = [readLine(raw)]
                raw.sendall(b"STARTTLS\r\n")
                lines.append(readLine(raw))
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"after\r\n")
                    lines.append(readLine(tls))
            return lines

        def check(lines: list[bytes]) -> Deferred[None]:
            self.assertEqual(
                lines, [b"before clear\r\n", b"GO\r\n", b"after secure\r\n"]
            )
            return factory.lost

        return deferToThread(client).addCallback(check)

    def test_startTLSCounting(self) -> Deferred[Any]:
        """
        STARTTLS works through a counting-only tracker.
        """
        return self.startTLSThroughTracker(Limits(maxConnections=5))

    def test_startTLSIdle(self) -> Deferred[Any]:
        """STARTTLS works under an idle timeout; the transport is then ISSLTransport."""
        # STARTTLS works through a tracker with an idle timeout, and the protocol's
        # transport then provides ISSLTransport.
        return self.startTLSThroughTracker(Limits(idleTimeout=60.0))

    def test_udpAtMostBurst(self) -> Deferred[Any]:
        """A stdlib UDP client sending 20 datagrams at once gets only the burst."""
        tracker = ConnectionTracker(
            Limits(datagramRate=0.001, datagramBurst=3), reactor=self.reactor
        )
        port = self.reactor.listenUDP(
            0, tracker.wrapDatagram(EchoDatagram()), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        server = ("127.0.0.1", port.getHost().port)

        def client() -> tuple[list[bytes], bytes]:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flooder,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as marker,
            ):
                flooder.bind(("127.0.0.1", 0))
                # Another source address, with its own allowance: once its
                # answer is back, the server has handled every earlier datagram.
                marker.bind(("127.0.0.2", 0))
                marker.settimeout(5)
                for i in range(20):
                    flooder.sendto(b"%d" % i, server)
                marker.sendto(b"done", server)
                done = marker.recv(100)
                flooder.setblocking(False)
                answers = []
                while True:
                    try:
                        answers.append(flooder.recv(100))
                    except BlockingIOError:
                        return answers, done

        def check(result: tuple[list[bytes], bytes]) -> None:
            self.assertEqual(result, ([b"0", b"1", b"2"], b"done"))

        return deferToThread(client).addCallback(check)
