"""
Tests for L{netplugins.starttls}: starting TLS mid-stream without running
the commands pipelined behind the TLS command (CVE-2011-0411), and with a
deadline on the handshake.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from netplugins.session import Discipline
from netplugins.starttls import isSecure, startTLSDiscarding
from netplugins.tls.server import DEFAULT_HANDSHAKE_TIMEOUT
from tests.support import WatermarkTransport

PEER = IPv4Address("TCP", "192.0.2.7", 40000)
PEER_TEXT = "IPv4Address(type='TCP', host='192.0.2.7', port=40000)"
READY = b"220 Ready to start TLS\r\n"


class ContextFactory:
    """
    A stand-in server TLS context factory, with its handshake deadline.
    """

    def __init__(self, handshakeTimeout: float | None = None) -> None:
        if handshakeTimeout is not None:
            self.handshakeTimeout = handshakeTimeout


class Starter(LineReceiver):
    """
    A line protocol that records its lines and starts TLS on C{STARTTLS}.
    """

    delimiter = b"\r\n"
    discipline: Discipline | None = None

    def __init__(self, contextFactory: Any) -> None:
        self.contextFactory = contextFactory
        self.lines: list[bytes] = []
        self.discarded: bytes | None = None

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        if line == b"STARTTLS":
            self.discarded = startTLSDiscarding(self, self.contextFactory, READY)


class StartTLSDiscardingTests(SynchronousTestCase):
    """
    L{startTLSDiscarding} answers, discards what was pipelined, logs it and
    starts TLS.
    """

    def connect(self, contextFactory: Any = None) -> tuple[Starter, WatermarkTransport]:
        """
        A L{Starter} on a L{WatermarkTransport} from L{PEER}.
        """
        protocol = Starter(contextFactory or ContextFactory())
        transport = WatermarkTransport(peerAddress=PEER)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_discardsPipelined(self) -> None:
        """Lines after the TLS command are returned and never handled."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"EHLO a\r\nSTARTTLS\r\nRCPT TO:<x>\r\nQUIT\r\n")
        self.assertEqual(
            (protocol.lines, protocol.discarded, transport.value()),
            ([b"EHLO a", b"STARTTLS"], b"RCPT TO:<x>\r\nQUIT\r\n", READY),
        )

    def test_replyBeforeTLS(self) -> None:
        """The go-ahead is written in the clear, then TLS starts."""
        contextFactory = ContextFactory()
        protocol, transport = self.connect(contextFactory)
        protocol.dataReceived(b"STARTTLS\r\n")
        self.assertEqual(transport.writtenInClear, READY)
        self.assertIs(transport.tlsStarted, contextFactory)

    def test_logsDiscarded(self) -> None:
        """The discarded bytes are logged by length, with the peer."""
        protocol, _ = self.connect()
        with capturedLogs() as events:
            protocol.dataReceived(b"STARTTLS\r\nRCPT TO:<x>\r\n")
        self.assertEqual(
            [(e["log_namespace"], e["log_level"], formatEvent(e)) for e in events],
            [
                (
                    "netplugins.starttls",
                    LogLevel.warn,
                    "discarded 13 bytes pipelined after the TLS command by "
                    + PEER_TEXT,
                )
            ],
        )

    def test_nothingDiscarded(self) -> None:
        """Without pipelined bytes nothing is discarded and nothing logged."""
        protocol, transport = self.connect()
        with capturedLogs() as events:
            protocol.dataReceived(b"STARTTLS\r\n")
        self.assertEqual((protocol.discarded, events, transport.TLS), (b"", [], True))

    def test_clearBuffer(self) -> None:
        """A protocol with a buffer of its own empties it through C{clearBuffer}."""
        protocol = Protocol()
        transport = WatermarkTransport(peerAddress=PEER)
        protocol.makeConnection(transport)
        buffered = [b"A002 LOGIN x y\r\n"]
        with capturedLogs() as events:
            discarded = startTLSDiscarding(
                protocol, ContextFactory(), clearBuffer=buffered.pop
            )
        self.assertEqual(
            (discarded, buffered, transport.value(), transport.TLS),
            (b"A002 LOGIN x y\r\n", [], b"", True),
        )
        self.assertEqual(
            [formatEvent(e) for e in events],
            [f"discarded 16 bytes pipelined after the TLS command by {PEER_TEXT}"],
        )


class HandshakeDeadlineTests(SynchronousTestCase):
    """
    The handshake after the TLS command has a deadline, timed by the
    session's L{Discipline}.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def start(
        self, done: bool, contextFactory: Any = None, explicit: bool = False
    ) -> WatermarkTransport:
        """
        Start TLS on a protocol with a discipline (its own, or given as the
        C{discipline} argument when C{explicit}); C{done} is whether the
        handshake finishes.
        """
        protocol = Starter(contextFactory or ContextFactory())
        transport = WatermarkTransport(peerAddress=PEER)
        protocol.makeConnection(transport)
        discipline = Discipline(
            transport, self.clock, pause=lambda: None, resume=lambda: None
        )
        if explicit:
            startTLSDiscarding(protocol, protocol.contextFactory, discipline=discipline)
        else:
            protocol.discipline = discipline
            protocol.dataReceived(b"STARTTLS\r\n")
        # How the handshake state reads on a transport after startTLS.
        transport._handshakeDone = done  # type: ignore[attr-defined]
        self.discipline = discipline
        return transport

    def test_stalledAborted(self) -> None:
        """A handshake not finished within the default 10 s is aborted, and logged."""
        transport = self.start(done=False)
        self.clock.advance(DEFAULT_HANDSHAKE_TIMEOUT - 1)
        self.assertFalse(transport.aborted)
        with capturedLogs() as events:
            self.clock.advance(1)
        self.assertTrue(transport.aborted)
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                f"TLS handshake after STARTTLS from {PEER_TEXT} not finished in 10 s;"
                " aborting"
            ],
        )

    def test_finishedKept(self) -> None:
        """A handshake that finished keeps its connection."""
        transport = self.start(done=True)
        with capturedLogs() as events:
            self.clock.advance(DEFAULT_HANDSHAKE_TIMEOUT)
        self.assertEqual(
            (transport.aborted, transport.disconnecting, events), (False, False, [])
        )

    def test_contextFactoryTimeout(self) -> None:
        """The context factory's C{handshakeTimeout} is the deadline."""
        transport = self.start(done=False, contextFactory=ContextFactory(3))
        self.clock.advance(2.5)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.5)
        self.assertTrue(transport.aborted)

    def test_explicitDiscipline(self) -> None:
        """A discipline given as an argument times the handshake."""
        transport = self.start(done=False, explicit=True)
        self.clock.advance(DEFAULT_HANDSHAKE_TIMEOUT)
        self.assertTrue(transport.aborted)

    def test_lostConnection(self) -> None:
        """A connection lost before the deadline leaves no call behind."""
        transport = self.start(done=False)
        self.discipline.lost()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(DEFAULT_HANDSHAKE_TIMEOUT)
        self.assertFalse(transport.aborted)


class IsSecureTests(SynchronousTestCase):
    """
    L{isSecure} tells a transport that speaks TLS.
    """

    def test_isSecure(self) -> None:
        """TLS is an ISSLTransport or a transport after startTLS; plain is not."""
        plain, started, ssl = (WatermarkTransport() for _ in range(3))
        started.startTLS(ContextFactory())
        directlyProvides(ssl, ISSLTransport)
        self.assertEqual(
            [isSecure(t) for t in (plain, started, ssl)], [False, True, True]
        )
