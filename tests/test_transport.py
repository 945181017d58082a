"""
Tests for L{netplugins.transport}: the write-through transports keep every
semantic of Twisted's (ordering, producers, half-close, closing after pending
data, aborting, TLS, addresses) while sending at once.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from netplugins.tls.identity import TLSSettings
from netplugins.tls.server import ServerTLS
from netplugins.transport import (
    WriteThroughPort,
    WriteThroughServer,
    WriteThroughUNIXPort,
    WriteThroughUNIXServer,
    fastServerFromString,
)
from tests.pki import PKI

BIG = 8 * 1024 * 1024


@implementer(IHalfCloseableProtocol)
class Recorder(Protocol):
    """
    Records what happens to it.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost: list[Failure] = []
        self.readLost = 0
        self.writeLost = 0

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:  # type: ignore[assignment]
        self.lost.append(reason)

    def readConnectionLost(self) -> None:
        self.readLost += 1

    def writeConnectionLost(self) -> None:
        self.writeLost += 1


class Producer:
    """
    A producer that records the calls it gets.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class WriteThroughUnitTests(SynchronousTestCase):
    """
    The transport on one end of a socket pair, with a memory reactor standing
    in for the event loop, so the test drives C{doWrite} itself.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        ours, self.peer = socket.socketpair()
        # Small kernel buffers, so a few hundred KiB already fill them.
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.peer.settimeout(5)
        self.addCleanup(self.peer.close)
        self.protocol = Recorder()
        self.transport = WriteThroughServer(
            ours, self.protocol, ("127.0.0.1", 4321), None, 0, self.reactor
        )
        self.protocol.makeConnection(self.transport)
        self.addCleanup(ours.close)

    def receive(self, size: int) -> bytes:
        """
        Read C{size} bytes from the peer, calling C{doWrite} as the reactor
        would whenever the transport waits for a writable socket.
        """
        received = bytearray()
        self.peer.setblocking(False)
        while len(received) < size:
            try:
                chunk = self.peer.recv(1 << 20)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                break
            if chunk:
                received += chunk
            elif self.transport in self.reactor.getWriters():
                self.assertIsNone(self.transport.doWrite())
            else:
                self.fail(f"stalled after {len(received)} of {size} bytes")
        return bytes(received)

    def test_sendsAtOnce(self) -> None:
        """A write with nothing buffered is on the wire before write returns."""
        self.transport.write(b"hello")
        self.assertEqual(self.peer.recv(100), b"hello")
        self.assertNotIn(self.transport, self.reactor.getWriters())
        self.assertEqual(
            (self.transport.dataBuffer, self.transport._tempDataLen), (b"", 0)
        )

    def test_writeSequence(self) -> None:
        """writeSequence sends its chunks at once, in order."""
        self.transport.writeSequence([b"a", b"bc", b"def"])
        self.assertEqual(self.peer.recv(100), b"abcdef")
        self.assertNotIn(self.transport, self.reactor.getWriters())

    def test_notBytes(self) -> None:
        """Text is refused with TypeError, as Twisted's transports do."""
        self.assertRaises(TypeError, self.transport.write, "text")  # type: ignore[arg-type]
        self.assertRaises(TypeError, self.transport.writeSequence, ["text"])

    def test_remainderBuffered(self) -> None:
        """What the kernel does not take waits in order behind later writes."""
        first = bytes(range(256)) * (BIG // 256)
        self.transport.write(first)
        self.assertIn(self.transport, self.reactor.getWriters())
        self.transport.write(b"after")
        self.assertEqual(self.receive(len(first) + 5), first + b"after")
        self.assertNotIn(self.transport, self.reactor.getWriters())

    def test_streamingProducerPaused(self) -> None:
        """A streaming producer pauses over bufferSize and resumes once drained."""
        # A streaming producer pauses when the remainder is over bufferSize and resumes
        # when it has drained.
        producer = Producer()
        self.transport.registerProducer(producer, True)
        self.transport.write(b"x" * BIG)
        self.assertEqual(producer.calls, ["pause"])
        self.receive(BIG)
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_streamingProducerSmallWrites(self) -> None:
        """Writes that go out whole never pause a streaming producer."""
        producer = Producer()
        self.transport.registerProducer(producer, True)
        self.transport.write(b"x" * 100)
        self.assertEqual((producer.calls, self.peer.recv(1000)), ([], b"x" * 100))

    def test_pullProducer(self) -> None:
        """A pull producer is resumed each time what it wrote has gone out."""
        producer = Producer()
        self.transport.registerProducer(producer, False)
        self.assertEqual(producer.calls, ["resume"])
        self.transport.write(b"chunk")
        self.assertEqual(self.receive(5), b"chunk")
        self.assertEqual(producer.calls, ["resume", "resume"])

    def test_loseConnectionAfterPending(self) -> None:
        """loseConnection waits for buffered data, then reports a clean close."""
        self.transport.write(b"y" * BIG)
        self.transport.write(b"last")
        self.transport.loseConnection()
        received = bytearray()
        self.peer.setblocking(False)
        while True:
            try:
                received += self.peer.recv(1 << 20)
            except BlockingIOError:
                why = self.transport.doWrite()
                if why is not None:
                    break
        # Everything was sent: the rest is already in the peer's buffer.
        received += self.peer.recv(1 << 20)
        self.assertEqual((len(received), bytes(received[-4:])), (BIG + 4, b"last"))
        self.assertIs(why, CONNECTION_DONE)

    def test_writeAfterLoseConnection(self) -> None:
        """Bytes written after loseConnection (before the close) still arrive."""
        self.transport.loseConnection()
        self.transport.write(b"late")
        self.assertIs(self.transport.doWrite(), CONNECTION_DONE)
        self.assertEqual(self.peer.recv(100), b"late")

    def test_abortDropsWrites(self) -> None:
        """After abortConnection nothing more is sent."""
        self.transport.abortConnection()
        self.transport.write(b"never")
        self.peer.setblocking(False)
        self.assertRaises(BlockingIOError, self.peer.recv, 100)

    def test_halfClose(self) -> None:
        """loseWriteConnection sends pending data, then EOF, and tells the protocol."""
        # loseWriteConnection sends pending data, then EOF, and tells the protocol its
        # write side is closed.
        self.transport.write(b"z" * BIG)
        self.transport.loseWriteConnection()
        self.transport.write(b"end")
        data = self.receive(BIG + 3)
        self.assertEqual(len(data), BIG + 3)
        self.assertEqual(self.peer.recv(10), b"")
        self.assertEqual(self.protocol.writeLost, 1)
        self.transport.write(b"dropped")
        self.assertEqual(self.transport._tempDataLen, 0)

    def test_sendErrorBuffers(self) -> None:
        """A send to a dead peer is buffered and reported by doWrite, never raised."""
        # A send to a dead peer is buffered and reported by doWrite as a lost
        # connection, never raised to the caller.
        self.peer.close()
        self.transport.write(b"into the void")
        self.assertIn(self.transport, self.reactor.getWriters())
        self.assertIs(self.transport.doWrite(), CONNECTION_LOST)

    def test_reads(self) -> None:
        """doRead hands all available data to the protocol and reports the close."""
        # doRead hands everything available (up to readSize) to the protocol and reports
        # the peer's close.
        self.peer.sendall(b"q" * 3000)
        self.assertIsNone(self.transport.doRead())
        self.assertEqual(b"".join(self.protocol.received), b"q" * 3000)
        self.assertIsNone(self.transport.doRead())
        self.peer.shutdown(socket.SHUT_WR)
        self.assertIs(self.transport.doRead(), CONNECTION_DONE)


class UNIXUnitTests(SynchronousTestCase):
    """
    The UNIX transport keeps passing file descriptors.
    """

    def test_fileDescriptorThenBytes(self) -> None:
        """Bytes written after sendFileDescriptor wait for the descriptor, carry it."""
        ours, peer = socket.socketpair()
        self.addCleanup(peer.close)
        self.addCleanup(ours.close)
        memory = MemoryReactor()
        transport = WriteThroughUNIXServer(ours, Recorder(), "peer", None, 0, memory)
        transport.protocol.makeConnection(transport)
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        transport.sendFileDescriptor(w)
        transport.write(b"x")
        self.assertIn(transport, memory.getWriters())
        self.assertIsNone(transport.doWrite())
        data, fds, _, _ = socket.recv_fds(peer, 10, 1)
        self.addCleanup(os.close, fds[0])
        self.assertEqual((data, len(fds)), (b"x", 1))
        self.assertNotIn(transport, memory.getWriters())


class Echo(Protocol):
    """
    Echoes; C{STARTTLS\\n} on its own switches the connection to TLS.
    """

    tls: Any = None

    def dataReceived(self, data: bytes) -> None:
        if data == b"STARTTLS\n" and self.tls is not None:
            self.transport.write(b"GO\n")  # type: ignore[union-attr]
            self.transport.startTLS(self.tls)  # type: ignore[union-attr]
            return
        self.transport.write(data)  # type: ignore[union-attr]


def echoFactory(tls: Any = None) -> Factory[Any]:
    """
    A factory of L{Echo}, switching to C{tls} on C{STARTTLS}.
    """
    factory = Factory.forProtocol(Echo)
    factory.protocol = type("ConfiguredEcho", (Echo,), {"tls": tls})
    return factory


def exchange(
    family: int,
    address: Any,
    data: bytes,
    context: ssl.SSLContext | None = None,
    starttls: bool = False,
) -> bytes:
    """
    Connect, (start TLS), send C{data}, half-close, and read to the end.
    """
    raw = socket.socket(family, socket.SOCK_STREAM)
    raw.settimeout(10)
    raw.connect(address)
    sock: socket.socket = raw
    if starttls:
        raw.sendall(b"STARTTLS\n")
        assert raw.recv(3) == b"GO\n"
    if context is not None:
        sock = context.wrap_socket(raw, server_hostname="localhost")
    with sock:
        sock.sendall(data)
        received = bytearray()
        while len(received) < len(data):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += chunk
        return bytes(received)


class RealSocketTests(TestCase):
    """
    Stdlib clients against listeners from L{fastServerFromString}.
    """

    def listen(self, description: str, factory: Any, **kwargs: Any) -> Deferred[Any]:
        d = fastServerFromString(reactor, description, **kwargs).listen(factory)

        def listening(port: Any) -> Any:
            self.addCleanup(port.stopListening)
            return port

        return d.addCallback(listening)

    def pki(self) -> tuple[PKI, ServerTLS]:
        pki = PKI(os.path.abspath(self.mktemp()))
        cert, key = pki.serverCertificate("localhost", "127.0.0.1")
        return pki, ServerTLS(TLSSettings(certificates=((cert, key),)), reactor=reactor)

    async def test_tcp(self) -> None:
        """tcp: listens with write-through ports; 4 MiB echo intact; right addresses."""
        # tcp: listens with write-through ports; 4 MiB echo intact; peer and host
        # addresses are the client's and the listener's.
        seen: list[Any] = []

        class Addresses(Echo):
            def connectionMade(self) -> None:
                seen.append((self.transport.getPeer(), self.transport.getHost()))  # type: ignore[union-attr]

        port = await self.listen(
            "tcp:0:interface=127.0.0.1", Factory.forProtocol(Addresses)
        )
        self.assertIsInstance(port, WriteThroughPort)
        address = ("127.0.0.1", port.getHost().port)
        data = os.urandom(4 << 20)
        self.assertEqual(
            await deferToThread(exchange, socket.AF_INET, address, data), data
        )
        [(peer, host)] = seen
        self.assertEqual(
            (peer.host, host.host, host.port), ("127.0.0.1", "127.0.0.1", address[1])
        )
        self.assertIsInstance(peer.port, int)

    async def test_tcp6(self) -> None:
        """tcp6: listens on IPv6 with write-through connections."""
        port = await self.listen("tcp6:0:interface=\\:\\:1", echoFactory())
        self.assertIsInstance(port, WriteThroughPort)
        data = b"six" * 1000
        got = await deferToThread(
            exchange, socket.AF_INET6, ("::1", port.getHost().port), data
        )
        self.assertEqual(got, data)

    async def test_unix(self) -> None:
        """unix: listens with write-through connections; 1 MiB echo intact."""
        path = os.path.abspath(self.mktemp())
        port = await self.listen(f"unix:{path}", echoFactory())
        self.assertIsInstance(port, WriteThroughUNIXPort)
        data = os.urandom(1 << 20)
        self.assertEqual(
            await deferToThread(exchange, socket.AF_UNIX, path, data), data
        )

    async def test_noDelay(self) -> None:
        """Accepted TCP connections have TCP_NODELAY set, as asyncio's do."""
        flags: list[bool] = []

        class Check(Echo):
            def connectionMade(self) -> None:
                flags.append(self.transport.getTcpNoDelay())  # type: ignore[union-attr]

        port = await self.listen(
            "tcp:0:interface=127.0.0.1", Factory.forProtocol(Check)
        )
        await deferToThread(
            exchange, socket.AF_INET, ("127.0.0.1", port.getHost().port), b"x"
        )
        self.assertEqual(flags, [True])

    async def test_backlog(self) -> None:
        """Listeners get a 1024-connection backlog unless the description names one."""
        ports = [
            await self.listen(description, echoFactory())
            for description in (
                "tcp:0:interface=127.0.0.1",
                "tcp:0:interface=127.0.0.1:backlog=10",
                f"unix:{os.path.abspath(self.mktemp())}",
            )
        ]
        self.assertEqual([port.backlog for port in ports], [1024, 10, 1024])

    async def test_reusePort(self) -> None:
        """reusePort=True lets a second listener bind the same address."""
        first = await self.listen(
            "tcp:0:interface=127.0.0.1", echoFactory(), reusePort=True
        )
        number = first.getHost().port
        second = await self.listen(
            f"tcp:{number}:interface=127.0.0.1", echoFactory(), reusePort=True
        )
        self.assertEqual(second.getHost().port, number)

    async def test_tlsWrapped(self) -> None:
        """TLS around the transport echoes 2 MiB to a verifying stdlib client."""
        # TLS wrapped around the transport (TLSMemoryBIOFactory) echoes 2 MiB to a
        # verifying stdlib client.
        pki, tls = self.pki()
        factory = TLSMemoryBIOFactory(tls, False, echoFactory())
        port = await self.listen("tcp:0:interface=127.0.0.1", factory)
        context = ssl.create_default_context(cafile=pki.caPath)
        data = os.urandom(2 << 20)
        got = await deferToThread(
            exchange, socket.AF_INET, ("127.0.0.1", port.getHost().port), data, context
        )
        self.assertEqual(got, data)

    async def test_startTLS(self) -> None:
        """startTLS on the transport switches to TLS mid-stream; 2 MiB echo."""
        pki, tls = self.pki()
        port = await self.listen("tcp:0:interface=127.0.0.1", echoFactory(tls))
        context = ssl.create_default_context(cafile=pki.caPath)
        data = os.urandom(2 << 20)
        got = await deferToThread(
            exchange,
            socket.AF_INET,
            ("127.0.0.1", port.getHost().port),
            data,
            context,
            True,
        )
        self.assertEqual(got, data)

    async def test_readHalfClose(self) -> None:
        """A client's SHUT_WR reaches the protocol as readConnectionLost; it answers."""
        # A client's shutdown(SHUT_WR) reaches a half-closeable protocol as
        # readConnectionLost, and it can still answer.
        done: Deferred[None] = Deferred()

        @implementer(IHalfCloseableProtocol)
        class Answer(Protocol):
            def readConnectionLost(self) -> None:
                self.transport.write(b"bye")  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

            def writeConnectionLost(self) -> None:
                pass

            def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:  # type: ignore[assignment]
                done.callback(None)

        port = await self.listen(
            "tcp:0:interface=127.0.0.1", Factory.forProtocol(Answer)
        )

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", port.getHost().port), 10) as s:
                s.shutdown(socket.SHUT_WR)
                return s.recv(100) + s.recv(100)

        self.assertEqual(await deferToThread(client), b"bye")
        await done

    async def test_otherEndpointsUnchanged(self) -> None:
        """Descriptions other than stream listeners parse as Twisted's do."""
        from twisted.internet.endpoints import serverFromString

        ours = fastServerFromString(reactor, "tcp:0:interface=127.0.0.1")
        theirs = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        self.assertIs(type(ours), type(theirs))
        self.assertRaises(ValueError, fastServerFromString, reactor, "tcp:notaport")


class MemoryReactorTests(SynchronousTestCase):
    """
    Listeners on a test's memory reactor stay the memory reactor's.
    """

    def test_delegates(self) -> None:
        """fastServerFromString on a MemoryReactor listens through it."""
        # fastServerFromString on a MemoryReactor listens through it, so tests of
        # services keep seeing tcpServers and unixServers.
        memory = MemoryReactor()
        factory = Factory.forProtocol(Protocol)
        fastServerFromString(memory, "tcp:1234:interface=127.0.0.1").listen(factory)
        fastServerFromString(memory, "unix:/tmp/x.sock").listen(factory)
        self.assertEqual(
            ([s[:2] for s in memory.tcpServers], [s[0] for s in memory.unixServers]),
            ([(1234, factory)], ["/tmp/x.sock"]),
        )
