"""
Tests for L{netplugins.echo} and L{netplugins.tap.echo}.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, ServerFactory
from twisted.internet.task import LoopingCall
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.basic import Int32StringReceiver
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.echo import (
    DEFAULT_MAX_MESSAGE_SIZE,
    BlocksEcho,
    EchoFactory,
    LineEcho,
    NetstringEcho,
    RawEcho,
)

BLOCK = struct.Struct("!I")


def connect(framing: str, maxMessageSize: int = 16) -> tuple[Any, StringTransport]:
    """
    An echo protocol for C{framing} connected to a fresh L{StringTransport}.
    """
    protocol = EchoFactory(framing, maxMessageSize).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class FactoryTests(SynchronousTestCase):
    """
    L{EchoFactory} builds the protocol for its framing and checks its settings.
    """

    def test_protocols(self) -> None:
        """Each framing gets its protocol class, limited by maxMessageSize."""
        built = {f: connect(f, 99)[0] for f in ["raw", "line", "netstring", "blocks"]}
        self.assertEqual(
            [
                (type(p), getattr(p, "maxLength", getattr(p, "MAX_LENGTH", None)))
                for p in built.values()
            ],
            [(RawEcho, None), (LineEcho, 99), (NetstringEcho, 99), (BlocksEcho, 99)],
        )

    def test_badFraming(self) -> None:
        """An unknown framing is a ValueError naming it."""
        with self.assertRaises(ValueError) as e:
            EchoFactory("lines")
        self.assertIn("'lines'", str(e.exception))

    def test_badSize(self) -> None:
        """A maximum message size below 1 is a ValueError."""
        self.assertRaises(ValueError, EchoFactory, "line", 0)

    def test_registersAsStreamingProducer(self) -> None:
        """Every framing registers its protocol as a streaming producer."""
        for framing in ["raw", "line", "netstring", "blocks"]:
            protocol, transport = connect(framing)
            self.assertEqual(
                (transport.producer, transport.streaming), (protocol, True)
            )


class RawTests(SynchronousTestCase):
    """
    C{raw} echoes bytes as they arrive and pauses reading when asked.
    """

    def test_echo(self) -> None:
        """Every chunk, of any size and content, comes straight back."""
        protocol, transport = connect("raw")
        for chunk in [b"hello", b"\x00\xff" * 1000, b"\n"]:
            protocol.dataReceived(chunk)
        self.assertEqual(transport.value(), b"hello" + b"\x00\xff" * 1000 + b"\n")

    def test_pauseAndResume(self) -> None:
        """Pausing the producer pauses the transport; resuming resumes it."""
        protocol, transport = connect("raw")
        protocol.pauseProducing()
        states = [transport.producerState]
        protocol.resumeProducing()
        self.assertEqual([*states, transport.producerState], ["paused", "producing"])


class LineTests(SynchronousTestCase):
    """
    C{line} echoes complete LF-terminated lines exactly, within a size limit.
    """

    def test_completeLines(self) -> None:
        """Complete lines come back with their own terminators; partial ones wait."""
        protocol, transport = connect("line")
        protocol.dataReceived(b"one\r\ntw")
        first = transport.value()
        protocol.dataReceived(b"o\nthr")
        protocol.dataReceived(b"ee")
        protocol.dataReceived(b"\n")
        self.assertEqual(
            (first, transport.value()), (b"one\r\n", b"one\r\ntwo\nthree\n")
        )

    def test_byteAtATime(self) -> None:
        """A line delivered one byte at a time echoes once, whole."""
        protocol, transport = connect("line")
        for byte in b"0123456789abcd\n":
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(transport.value(), b"0123456789abcd\n")

    def test_atLimit(self) -> None:
        """A line of exactly maxMessageSize bytes, LF included, is accepted."""
        protocol, transport = connect("line", 16)
        protocol.dataReceived(b"x" * 15 + b"\n")
        self.assertEqual(
            (transport.value(), transport.disconnecting), (b"x" * 15 + b"\n", False)
        )

    def test_unterminatedOverLimit(self) -> None:
        """An unfinished line past the limit closes, logging the peer."""
        protocol, transport = connect("line", 16)
        with capturedLogs() as events:
            protocol.dataReceived(b"x" * 10)
            protocol.dataReceived(b"x" * 7)
            protocol.dataReceived(b"\n")
        self.assertEqual(
            (transport.value(), transport.disconnecting, formatEvent(events[0])),
            (
                b"",
                True,
                "np-echo: closing connection from "
                f"{transport.getPeer()}: line of 17 bytes or more exceeds 16",
            ),
        )

    def test_completeOverLimit(self) -> None:
        """A too-long complete line closes before anything in its read is echoed."""
        protocol, transport = connect("line", 16)
        with capturedLogs():
            protocol.dataReceived(b"ok\n" + b"x" * 16 + b"\nok\n")
        self.assertEqual((transport.value(), transport.disconnecting), (b"", True))


class NetstringTests(SynchronousTestCase):
    """
    C{netstring} echoes netstrings and refuses bad ones.
    """

    def test_echo(self) -> None:
        """Each complete netstring comes back; a partial one waits."""
        protocol, transport = connect("netstring")
        protocol.dataReceived(b"3:abc,0:,5:he")
        first = transport.value()
        protocol.dataReceived(b"llo,")
        self.assertEqual(
            (first, transport.value()), (b"3:abc,0:,", b"3:abc,0:,5:hello,")
        )

    def test_hugeLength(self) -> None:
        """A declared length over the limit closes at once, before any payload."""
        protocol, transport = connect("netstring", 1000)
        with capturedLogs() as events:
            protocol.dataReceived(b"4294967295:")
        self.assertEqual(
            (transport.disconnecting, [e["log_format"] for e in events]),
            (
                True,
                [
                    "np-echo: closing connection from {peer}: "
                    "malformed netstring or one longer than {maxLength} bytes"
                ],
            ),
        )

    def test_malformed(self) -> None:
        """A missing comma closes the connection once, later data ignored."""
        protocol, transport = connect("netstring")
        with capturedLogs() as events:
            protocol.dataReceived(b"1:ab")
            protocol.dataReceived(b"3:abc,")
        self.assertEqual(
            (transport.value(), transport.disconnecting, len(events)), (b"", True, 1)
        )


class BlocksTests(SynchronousTestCase):
    """
    C{blocks}: the book's 4-byte big-endian length prefix.
    """

    def test_echo(self) -> None:
        """Blocks come back with the same prefix, split reads reassembled."""
        protocol, transport = connect("blocks")
        wire = BLOCK.pack(5) + b"hello" + BLOCK.pack(0) + BLOCK.pack(3) + b"bye"
        for i in range(len(wire)):
            protocol.dataReceived(wire[i : i + 1])
        self.assertEqual(transport.value(), wire)

    def test_lengthOverLimit(self) -> None:
        """A 0xFFFFFFFF prefix closes with a log line; nothing is kept or echoed."""
        protocol, transport = connect("blocks", DEFAULT_MAX_MESSAGE_SIZE)
        with capturedLogs() as events:
            protocol.dataReceived(BLOCK.pack(0xFFFFFFFF) + b"x" * 100)
            protocol.dataReceived(b"")
        self.assertEqual(
            (
                transport.value(),
                transport.disconnecting,
                protocol._unprocessed,
                [formatEvent(e) for e in events],
            ),
            (
                b"",
                True,
                b"",
                [
                    f"np-echo: closing connection from {transport.getPeer()}: "
                    f"block length 4294967295 exceeds {DEFAULT_MAX_MESSAGE_SIZE}"
                ],
            ),
        )

    def test_pausedHoldsBlocks(self) -> None:
        """While paused, blocks are held; resuming echoes them in order."""
        protocol, transport = connect("blocks")
        protocol.pauseProducing()
        protocol.dataReceived(BLOCK.pack(1) + b"a" + BLOCK.pack(1) + b"b")
        held = transport.value()
        protocol.resumeProducing()
        self.assertEqual(
            (held, transport.value()),
            (b"", BLOCK.pack(1) + b"a" + BLOCK.pack(1) + b"b"),
        )

    def test_iosim(self) -> None:
        """A Twisted Int32StringReceiver client gets its blocks back."""
        received: list[bytes] = []

        class Client(Int32StringReceiver):
            def connectionMade(self) -> None:
                for message in [b"one", b"", b"x" * 5000]:
                    self.sendString(message)

            def stringReceived(self, string: bytes) -> None:
                received.append(string)

        server = EchoFactory("blocks").buildProtocol(None)
        _, _, pump = iosim.connectedServerAndClient(lambda: server, Client)
        pump.flush()
        self.assertEqual(received, [b"one", b"", b"x" * 5000])


class _Recording(ServerFactory):
    """
    Wraps a factory and keeps the protocols it builds.
    """

    def __init__(self, wrapped: Factory):
        self.wrapped = wrapped
        self.built: list[Any] = []

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self.wrapped.buildProtocol(addr)
        if protocol is not None:
            self.built.append(protocol)
        return protocol


def bufferedBytes(transport: Any) -> int:
    """
    What a reactor TCP transport holds in memory, waiting to be written.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class Flood:
    """
    Drive a non-blocking stdlib socket from the reactor: send C{payload}
    without reading until the server stops taking it, then read and send the
    rest until C{expected} bytes are back.

    @ivar peak: the largest C{measure()} seen while flooding.
    @ivar sentBeforeStall: how much was sent before sending stalled.
    """

    STALL = 0.25
    DEADLINE = 30.0

    def __init__(
        self,
        sock: socket.socket,
        payload: bytes,
        expected: int,
        measure: Callable[[], int],
    ):
        self.sock = sock
        self.payload = memoryview(payload)
        self.expected = expected
        self.measure = measure
        self.sent = 0
        self.received: list[bytes] = []
        self.receivedLength = 0
        self.peak = 0
        self.sentBeforeStall: int | None = None
        self.done: Deferred[bytes] = Deferred()

    def start(self, reactor: Any) -> Deferred[bytes]:
        self._started = self._progress = time.monotonic()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._loop.start(0.002)
        return self.done

    def _send(self) -> bool:
        progress = False
        while self.sent < len(self.payload):
            try:
                self.sent += self.sock.send(self.payload[self.sent : self.sent + 65536])
            except BlockingIOError:
                break
            progress = True
        return progress

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._started > self.DEADLINE:
            self._finish(AssertionError(f"flood stuck: {self.__dict__}"))
            return
        if self.sentBeforeStall is None:
            self.peak = max(self.peak, self.measure())
            if self._send():
                self._progress = now
            elif now - self._progress > self.STALL:
                self.sentBeforeStall = self.sent
            return
        self._send()
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not data:
                self._finish(AssertionError("server closed the connection"))
                return
            self.received.append(data)
            self.receivedLength += len(data)
        if self.receivedLength >= self.expected:
            self._finish(b"".join(self.received))

    def _finish(self, result: Any) -> None:
        self._loop.stop()
        if isinstance(result, Exception):
            self.done.errback(result)
        else:
            self.done.callback(result)


def floodClient(port: Any, bufferSize: int = 65536) -> socket.socket:
    """
    A non-blocking stdlib client connected to C{port}, with small kernel
    buffers so that backpressure shows quickly.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufferSize)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufferSize)
    sock.connect(("127.0.0.1", port.getHost().port))
    sock.setblocking(False)
    return sock


def listenSmall(
    testCase: TestCase, factory: ServerFactory, bufferSize: int = 65536
) -> Any:
    """
    Listen on 127.0.0.1 with small kernel buffers (accepted sockets inherit
    them), stopped at cleanup.
    """
    from twisted.internet import reactor

    port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    testCase.addCleanup(port.stopListening)
    port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufferSize)
    port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufferSize)
    return port


class BackpressureTests(TestCase):
    """
    A client that sends without reading cannot grow the server's memory.
    """

    def flood(self, framing: str, payload: bytes) -> Deferred[Flood]:
        from twisted.internet import reactor

        factory = _Recording(EchoFactory(framing))
        port = listenSmall(self, factory)
        sock = floodClient(port)
        self.addCleanup(sock.close)

        def measure() -> int:
            if not factory.built:
                return 0
            transport = factory.built[0].transport
            return bufferedBytes(transport) if transport is not None else 0

        flood = Flood(sock, payload, len(payload), measure)

        def check(echoed: bytes) -> Flood:
            # Compare lengths first: a failure message of 32 MiB helps nobody.
            self.assertEqual(len(echoed), len(payload))
            self.assertTrue(echoed == payload, "echo differs from what was sent")
            return flood

        return flood.start(reactor).addCallback(check)

    def test_rawNeverRead(self) -> Deferred[None]:
        """32 MiB sent unread: the server stops reading, its buffer stays small."""
        payload = bytes(range(256)) * (32 * 4096)

        def check(flood: Flood) -> None:
            self.assertEqual(
                (flood.peak <= 256 * 1024, (flood.sentBeforeStall or 0) < len(payload)),
                (True, True),
                f"peak {flood.peak}, sent before stall {flood.sentBeforeStall}",
            )

        return self.flood("raw", payload).addCallback(check)

    def test_blocksNeverRead(self) -> Deferred[None]:
        """Blocks sent unread: buffered output bounded, every block echoed."""
        block = BLOCK.pack(60000) + b"b" * 60000
        payload = block * 300

        def check(flood: Flood) -> None:
            self.assertTrue(flood.peak <= 256 * 1024, f"peak {flood.peak}")

        return self.flood("blocks", payload).addCallback(check)
