"""
Tests for L{netplugins.echo} and L{netplugins.tap.echo}.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, ProcessProtocol, ServerFactory
from twisted.internet.task import Clock, LoopingCall
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.basic import Int32StringReceiver
from twisted.python import usage
from twisted.python.failure import Failure
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
from netplugins.options import ServiceSettings
from netplugins.service import ListeningService, listeningService
from netplugins.session import CLOSE_GRACE
from netplugins.tap.echo import EchoSettings, Options, echoService, makeService
from tests.pki import PKI

BLOCK = struct.Struct("!I")


def connect(framing: str, maxMessageSize: int = 16) -> tuple[Any, StringTransport]:
    """
    An echo protocol for C{framing} connected to a fresh L{StringTransport}.
    """
    factory = EchoFactory(framing, maxMessageSize)
    factory.reactor = Clock()
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class RefusalTests(SynchronousTestCase):
    """
    A refused connection is closed, and aborted if it lingers.
    """

    def test_abortedAfterGrace(self) -> None:
        """A refused connection still open closeGrace seconds later is aborted."""
        for framing in ["line", "netstring", "blocks"]:
            protocol, transport = connect(framing, maxMessageSize=4)
            protocol.dataReceived(b"\xff" * 64)
            self.assertTrue(transport.disconnecting, framing)
            self.assertFalse(transport.disconnected, framing)
            protocol.factory.reactor.advance(CLOSE_GRACE)
            self.assertTrue(transport.disconnected, framing)

    def test_lossCancelsAbort(self) -> None:
        """A refused connection that closes in time leaves no timer behind."""
        protocol, _ = connect("line", maxMessageSize=4)
        protocol.dataReceived(b"x" * 64)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(protocol.factory.reactor.getDelayedCalls(), [])


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


class OptionsTests(SynchronousTestCase):
    """
    C{twistd np-echo}'s options.
    """

    def test_defaults(self) -> None:
        """Raw framing, 1 MiB messages, port 7007 on 127.0.0.1."""
        config = Options()
        config.parseOptions([])
        self.assertEqual(
            (config["framing"], config["max-message-size"], config.defaultListen),
            ("raw", 1024 * 1024, ("tcp:7007:interface=127.0.0.1",)),
        )

    def test_framing(self) -> None:
        """--framing and --max-message-size are read."""
        config = Options()
        config.parseOptions(["--framing", "blocks", "--max-message-size", "4096"])
        self.assertEqual(
            (config["framing"], config["max-message-size"]), ("blocks", 4096)
        )

    def test_badFraming(self) -> None:
        """An unknown framing is a one-line usage error listing the choices."""
        with self.assertRaises(usage.UsageError) as e:
            Options().parseOptions(["--framing", "json"])
        self.assertEqual(
            str(e.exception),
            "Parameter type enforcement failed: "
            "--framing must be one of raw, line, netstring, blocks, not 'json'",
        )

    def test_badSize(self) -> None:
        """A size that is not a positive number is a one-line usage error."""
        with self.assertRaises(usage.UsageError) as e:
            Options().parseOptions(["--max-message-size", "1MiB"])
        self.assertEqual(str(e.exception).count("\n"), 0)

    def test_udpRefused(self) -> None:
        """A udp: listener is a usage error: echo over UDP would amplify."""
        with self.assertRaises(usage.UsageError) as e:
            Options().parseOptions(["--listen", "udp:7007"])
        self.assertEqual(str(e.exception), "np-echo does not speak UDP: 'udp:7007'")

    def test_help(self) -> None:
        """--help names the framings, the book, and the default listener."""
        text = " ".join(str(Options()).split())
        self.assertEqual(
            [
                s in text
                for s in [
                    "raw, line, netstring, blocks",
                    "4-byte big-endian length prefix",
                    "tcp:7007:interface=127.0.0.1",
                ]
            ],
            [True, True, True],
        )


class ServiceTests(SynchronousTestCase):
    """
    L{makeService} and L{echoService} listen where told, with the framing asked.
    """

    def test_default(self) -> None:
        """By default the service listens on 127.0.0.1:7007."""
        config = Options()
        config.parseOptions([])
        reactor = MemoryReactorClock()
        makeService(config, reactor=reactor).startService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(7007, "127.0.0.1")],
        )

    def test_unix(self) -> None:
        """--listen unix:PATH listens on that UNIX socket."""
        config = Options()
        config.parseOptions(["--listen", "unix:/tmp/np-echo.sock", "--framing", "line"])
        reactor = MemoryReactorClock()
        makeService(config, reactor=reactor).startService()
        self.assertEqual(
            [address for address, *_ in reactor.unixServers], ["/tmp/np-echo.sock"]
        )

    def test_keywordTwin(self) -> None:
        """echoService passes framing and size to the factory it listens with."""
        reactor = MemoryReactorClock()
        echoService(
            EchoSettings(framing="netstring", maxMessageSize=10, listen=("tcp:9007",)),
            reactor=reactor,
        ).startService()
        protocol = reactor.tcpServers[0][1].buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 1)
        )
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        with capturedLogs():
            protocol.dataReceived(b"2:hi,11:")
        self.assertEqual((transport.value(), transport.disconnecting), (b"2:hi,", True))


def exchange(
    family: int, address: Any, data: bytes, expected: int, context: Any = None
) -> bytes:
    """
    Connect with the stdlib, send C{data}, read C{expected} bytes back.
    """
    with socket.socket(family) as raw:
        raw.settimeout(5)
        raw.connect(address)
        sock = (
            raw
            if context is None
            else context.wrap_socket(raw, server_hostname="localhost")
        )
        sock.sendall(data)
        received = b""
        while len(received) < expected:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


class RealSocketTests(TestCase):
    """
    Stdlib and openssl clients against the echo service over TCP, UNIX and TLS.
    """

    def start(self, **kwargs: Any) -> Any:
        """
        Start C{echoService(EchoSettings(**kwargs))}; return its first
        listening port.
        """
        service = echoService(EchoSettings(**kwargs))
        service.startService()
        self.addCleanup(service.stopService)
        return next(s for s in service if isinstance(s, ListeningService)).port

    def test_tcpLine(self) -> Deferred[None]:
        """Line framing over TCP: lines echo exactly, CRLF and all."""
        port = self.start(framing="line", listen=["tcp:0:interface=127.0.0.1"])
        data = b"one\r\ntwo\nthree\n"
        d = deferToThread(
            exchange,
            socket.AF_INET,
            ("127.0.0.1", port.getHost().port),
            data,
            len(data),
        )
        return d.addCallback(self.assertEqual, data)

    def test_unixBlocks(self) -> Deferred[None]:
        """Blocks framing over a UNIX socket: the book's framing round-trips."""
        path = os.path.abspath(self.mktemp())
        self.start(framing="blocks", listen=[f"unix:{path}"])
        data = b"".join(BLOCK.pack(len(m)) + m for m in [b"hello", b"", b"z" * 70000])
        d = deferToThread(exchange, socket.AF_UNIX, path, data, len(data))
        return d.addCallback(self.assertEqual, data)

    def test_tlsVerified(self) -> Deferred[None]:
        """--listen-tls with a CA-issued certificate: a verifying stdlib client."""
        pki = PKI(os.path.abspath(self.mktemp()))
        cert, key = pki.serverCertificate("localhost", "127.0.0.1")
        port = self.start(
            listenTLS=["tcp:0:interface=127.0.0.1"], tlsCert=[cert], tlsKey=[key]
        )
        context = ssl.create_default_context(cafile=pki.caPath)
        d = deferToThread(
            exchange,
            socket.AF_INET,
            ("127.0.0.1", port.getHost().port),
            b"over TLS" * 1000,
            8000,
            context,
        )
        return d.addCallback(self.assertEqual, b"over TLS" * 1000)

    def test_tlsRefusalClosesAtOnce(self) -> Deferred[None]:
        """Over TLS, a line over the limit closes the connection politely, at once."""
        pki = PKI(os.path.abspath(self.mktemp()))
        cert, key = pki.serverCertificate("localhost", "127.0.0.1")
        port = self.start(
            framing="line",
            maxMessageSize=16,
            listenTLS=["tcp:0:interface=127.0.0.1"],
            tlsCert=[cert],
            tlsKey=[key],
        )
        context = ssl.create_default_context(cafile=pki.caPath)

        def refused() -> tuple[bytes, float]:
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port.getHost().port)) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.settimeout(30)
                    tls.sendall(b"x" * 64)
                    received = tls.recv(100)
            return received, time.monotonic() - started

        def check(result: tuple[bytes, float]) -> None:
            received, elapsed = result
            self.assertEqual(received, b"")
            self.assertLess(elapsed, CLOSE_GRACE / 2)

        return deferToThread(refused).addCallback(check)

    def test_tlsDevelopmentCertificate(self) -> Deferred[None]:
        """--listen-tls alone: the generated development certificate verifies."""
        stateDir = os.path.abspath(self.mktemp())
        with capturedLogs():
            port = self.start(
                listenTLS=["tcp:0:interface=127.0.0.1"], stateDir=stateDir
            )
        context = ssl.create_default_context(
            cafile=os.path.join(stateDir, "tls", "development-cert.pem")
        )
        d = deferToThread(
            exchange,
            socket.AF_INET,
            ("127.0.0.1", port.getHost().port),
            b"hello",
            5,
            context,
        )
        return d.addCallback(self.assertEqual, b"hello")

    def test_opensslClient(self) -> Deferred[None]:
        """openssl s_client, verifying against the CA, gets its line echoed."""
        from twisted.internet import reactor

        pki = PKI(os.path.abspath(self.mktemp()))
        cert, key = pki.serverCertificate("localhost")
        port = self.start(
            framing="line",
            listenTLS=["tcp:0:interface=127.0.0.1"],
            tlsCert=[cert],
            tlsKey=[key],
        )
        client = _UntilEchoed(b"echo me over openssl\n")
        reactor.spawnProcess(  # type: ignore[attr-defined]
            client,
            "openssl",
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{port.getHost().port}",
                "-servername",
                "localhost",
                "-verify_hostname",
                "localhost",
                "-CAfile",
                pki.caPath,
                "-verify_return_error",
            ],
            env=os.environ,
        )
        return client.done.addCallback(self.assertEqual, 0)

    def test_backpressureThroughLimits(self) -> Deferred[None]:
        """Behind the shared limits wrapper, a non-reading client still stalls."""
        from twisted.internet import reactor

        factory = _Recording(EchoFactory("raw"))
        service = listeningService(
            ServiceSettings(
                listen=("tcp:0:interface=127.0.0.1",),
                maxConnections=5,
                maxConnectionsPerIP=2,
                idleTimeout=60,
            ).common(),
            factory,
        )
        service.startService()
        self.addCleanup(service.stopService)
        port = next(iter(service)).port  # type: ignore[attr-defined]
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            port.socket.setsockopt(socket.SOL_SOCKET, option, 65536)
        sock = floodClient(port)
        self.addCleanup(sock.close)

        def measure() -> int:
            if not factory.built:
                return 0
            transport = factory.built[0].transport
            while not hasattr(transport, "dataBuffer"):
                transport = transport.transport
            return bufferedBytes(transport)

        payload = b"x" * (32 * 1024 * 1024)
        flood = Flood(sock, payload, len(payload), measure)

        def check(echoed: bytes) -> None:
            self.assertEqual(
                (len(echoed), flood.peak <= 256 * 1024),
                (len(payload), True),
                f"peak {flood.peak}",
            )

        return flood.start(reactor).addCallback(check)


class _UntilEchoed(ProcessProtocol):
    """
    Write C{line} to a child's stdin; once it appears on stdout, close stdin
    and fire C{done} with the exit code.
    """

    def __init__(self, line: bytes):
        self.line = line
        self.output = b""
        self.done: Deferred[int] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.line)

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if self.line in self.output:
            assert self.transport is not None
            self.transport.closeStdin()

    def processEnded(self, reason: Any) -> None:
        if self.line in self.output:
            self.done.callback(reason.value.exitCode)
        else:
            self.done.errback(AssertionError(f"no echo in {self.output!r}"))
