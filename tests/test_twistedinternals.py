"""
Tests for L{netplugins.twistedinternals}: every private Twisted name netplugins
relies on still exists, keeps the signature netplugins overrides or calls, and
behaves as netplugins relies on.

Run them first on a new Twisted release: a failure names the private, the
Twisted version and what netplugins does with it, so the fix starts in
C{netplugins/twistedinternals.py} (and the bound in C{setup.cfg} moves only
once they pass).
"""

from __future__ import annotations

import ast
import inspect
import io
import os
import select
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import requires
from typing import Any

import trustme
from OpenSSL import SSL
from packaging.requirements import Requirement
from packaging.version import Version
from twisted.internet import _newtls, error, posixbase, tcp, unix
from twisted.internet.address import IPv4Address
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import IHalfCloseableDescriptor, ISSLTransport
from twisted.internet.main import CONNECTION_DONE
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.basic import Int32StringReceiver, LineReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python import log, usage
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http
from twisted.web.test.requesthelper import DummyChannel, DummyRequest
from zope.interface import implementer

import netplugins
import twisted
from netplugins import twistedinternals as ti
from netplugins.transport import _WriteThroughBypass
from netplugins.twistedinternals import conch

TWISTED = twisted.__version__


class InternalsCase(SynchronousTestCase):
    """
    Assertions that name the private Twisted name they are about.
    """

    @contextmanager
    def relyingOn(self, private: str, use: str) -> Iterator[None]:
        """
        Run the block; turn any error or failed assertion in it into a
        failure naming C{private}, the Twisted version, and C{use} (what
        netplugins does with it).
        """
        try:
            yield
        except Exception as e:
            raise self.failureException(
                f"Twisted {TWISTED}: {private} is gone or changed "
                f"({e.__class__.__name__}: {e}); netplugins uses it {use} "
                "(see netplugins/twistedinternals.py)"
            ) from e

    def assertCalledAs(self, function: Callable[..., Any], names: list[str]) -> None:
        """
        C{function} takes the positional parameters C{names}, in order, and
        any others have defaults.
        """
        parameters = list(inspect.signature(function).parameters.values())
        self.assertEqual([p.name for p in parameters[: len(names)]], names)
        for extra in parameters[len(names) :]:
            self.assertIsNot(extra.default, inspect.Parameter.empty, extra.name)


# An accepted connection's listening port, which these tests do without.
_NO_PORT: Any = None


def _socketPair(family: int = socket.AF_UNIX) -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair(family)
    ours.setblocking(False)
    return ours, theirs


class TransportTests(InternalsCase):
    """
    twisted.internet.abstract, tcp, unix and _newtls: what the write-through
    transports (L{netplugins.transport}) rely on.
    """

    def tcpServer(self) -> tuple[tcp.Server, socket.socket]:
        ours, theirs = _socketPair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        server = tcp.Server(
            ours, Protocol(), ("127.0.0.1", 1), _NO_PORT, 1, MemoryReactorClock()
        )
        return server, theirs

    def test_dataMustBeBytes(self) -> None:
        """abstract._dataMustBeBytes passes bytes and raises TypeError for str."""
        with self.relyingOn("twisted.internet.abstract._dataMustBeBytes", "on writes"):
            ti.dataMustBeBytes(b"bytes")
            self.assertRaises(TypeError, ti.dataMustBeBytes, "text")

    def test_tempDataLen(self) -> None:
        """FileDescriptor._tempDataLen and dataBuffer say a write is queued."""
        server, peer = self.tcpServer()
        with self.relyingOn(
            "twisted.internet.abstract.FileDescriptor._tempDataLen / dataBuffer",
            "to send at once only when nothing is queued",
        ):
            self.assertTrue(ti.outputIdle(server))
            server.write(b"queued")
            self.assertFalse(ti.outputIdle(server))
            self.assertIsNone(server.doWrite())
            self.assertTrue(ti.outputIdle(server))
            self.assertEqual(peer.recv(100), b"queued")

    def test_writeDisconnected(self) -> None:
        """FileDescriptor._writeDisconnected is set by a completed half-close."""
        server, peer = self.tcpServer()
        with self.relyingOn(
            "twisted.internet.abstract.FileDescriptor._writeDisconnected",
            "to drop writes after loseWriteConnection",
        ):
            self.assertFalse(ti.writesShut(server))
            server.loseWriteConnection()
            server.doWrite()
            self.assertTrue(ti.writesShut(server))
            self.assertFalse(ti.outputIdle(server))
            self.assertEqual(peer.recv(100), b"")

    def test_aborting(self) -> None:
        """tcp._AbortingMixin._aborting is set by abortConnection."""
        server, _ = self.tcpServer()
        with self.relyingOn(
            "twisted.internet.tcp._AbortingMixin._aborting",
            "to drop writes while a connection is aborted",
        ):
            server.abortConnection()
            self.assertTrue(ti.writesShut(server))
            self.assertFalse(ti.outputIdle(server))

    def test_sendmsgQueue(self) -> None:
        """unix._SendmsgMixin._sendmsgQueue holds descriptors until sent."""
        ours, theirs = _socketPair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        server = unix.Server(ours, Protocol(), "peer", None, 1, MemoryReactorClock())
        with self.relyingOn(
            "twisted.internet.unix._SendmsgMixin._sendmsgQueue",
            "to keep writes behind queued file descriptors",
        ):
            self.assertEqual(ti.queuedFileDescriptors(server), 0)
            server.sendFileDescriptor(theirs.fileno())
            self.assertEqual(ti.queuedFileDescriptors(server), 1)
            server.write(b"x")
            server.doWrite()
            self.assertEqual(ti.queuedFileDescriptors(server), 0)

    def test_startTLS(self) -> None:
        """
        _newtls.startTLS(transport, contextFactory, normal, bypass) sets TLS,
        makes the TLS protocol the transport's, and sends through the bypass.
        """
        sent: list[tuple[object, bytes]] = []

        class Bypass:
            @staticmethod
            def write(transport: object, data: bytes) -> None:
                sent.append((transport, data))

        class Connection:
            _tlsClientDefault = False
            producer = None
            streamingProducer = False
            TLS = False

            def __init__(self, protocol: Protocol) -> None:
                self.protocol: Any = protocol

        application = Protocol()
        connection = Connection(application)
        server, client = _tlsOptions()
        with self.relyingOn(
            "twisted.internet._newtls.startTLS",
            "for STARTTLS on the write-through transports",
        ):
            self.assertCalledAs(
                _newtls.startTLS, ["transport", "contextFactory", "normal", "bypass"]
            )
            ti.startTLSWithBypass(connection, server, True, Bypass)
            self.assertTrue(connection.TLS)
            self.assertTrue(ISSLTransport.providedBy(connection))
            self.assertIsInstance(connection.protocol, TLSMemoryBIOProtocol)
            self.assertIs(connection.protocol.wrappedProtocol, application)
            hello = StringTransport()
            TLSMemoryBIOFactory(
                client, True, Factory.forProtocol(Protocol)
            ).buildProtocol(None).makeConnection(hello)
            connection.protocol.dataReceived(hello.value())
            self.assertTrue(sent)
            self.assertIs(sent[0][0], connection)

    def test_bypassTLS(self) -> None:
        """_newtls._BypassTLS forwards exactly TLS_BYPASS_METHODS to the bypass."""
        with self.relyingOn(
            "twisted.internet._newtls._BypassTLS",
            "as the contract of the write-through TLS bypass",
        ):
            forwarded = {
                name for name in vars(_newtls._BypassTLS) if not name.startswith("__")
            }
            self.assertEqual(forwarded, ti.TLS_BYPASS_METHODS)
        for name in ti.TLS_BYPASS_METHODS:
            self.assertTrue(callable(getattr(_WriteThroughBypass, name)), name)

    def test_reusePort(self) -> None:
        """tcp.Port._reusePort makes createInternetSocket set SO_REUSEPORT."""
        port = tcp.Port(0, Factory(), reactor=MemoryReactorClock())
        with self.relyingOn(
            "twisted.internet.tcp.Port._reusePort", "for --workers on one address"
        ):
            ti.setReusePort(port)
            skt = port.createInternetSocket()
            self.addCleanup(skt.close)
            self.assertTrue(skt.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))

    def test_portType(self) -> None:
        """tcp.Port._type names the port in its closing log line."""
        port = tcp.Port(
            0, Factory(), interface="127.0.0.1", reactor=MemoryReactorClock()
        )
        events: list[dict[str, Any]] = []
        with self.relyingOn(
            "twisted.internet.tcp.Port._type", "to log TLS ports as Twisted does"
        ):
            ti.markPortTLS(port)
            port.startListening()
            log.addObserver(events.append)
            try:
                port.connectionLost(None)
            finally:
                log.removeObserver(events.append)
            messages = [" ".join(map(str, e.get("message", ()))) for e in events]
            self.assertTrue(any("(TLS Port" in m for m in messages), messages)

    def test_tcpFromListeningDescriptor(self) -> None:
        """tcp.Port._fromListeningDescriptor(reactor, fd, family, factory)."""
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(5)
        listening.setblocking(False)

        class Port(tcp.Port):
            pass

        with self.relyingOn(
            "twisted.internet.tcp.Port._fromListeningDescriptor",
            "to adopt systemd: sockets",
        ):
            self.assertCalledAs(
                tcp.Port._fromListeningDescriptor,
                ["reactor", "fd", "addressFamily", "factory"],
            )
            port = ti.tcpPortFromDescriptor(
                Port,
                MemoryReactorClock(),
                listening.fileno(),
                socket.AF_INET,
                Factory(),
            )
            self.assertIsInstance(port, Port)
            port.startListening()
            self.addCleanup(port.connectionLost, None)
            self.assertEqual(port.getHost().port, listening.getsockname()[1])

    def test_unixFromListeningDescriptor(self) -> None:
        """unix.Port._fromListeningDescriptor(reactor, fd, factory)."""
        path = os.path.join(self.mktemp() + "-d", "s")
        os.makedirs(os.path.dirname(path))
        listening = socket.socket(socket.AF_UNIX)
        self.addCleanup(listening.close)
        listening.bind(path)
        listening.listen(5)
        listening.setblocking(False)

        class Port(unix.Port):
            pass

        with self.relyingOn(
            "twisted.internet.unix.Port._fromListeningDescriptor",
            "to adopt systemd: UNIX sockets",
        ):
            self.assertCalledAs(
                unix.Port._fromListeningDescriptor, ["reactor", "fd", "factory"]
            )
            port = ti.unixPortFromDescriptor(
                Port, MemoryReactorClock(), listening.fileno(), Factory()
            )
            self.assertIsInstance(port, Port)
            port.startListening()
            self.addCleanup(port.connectionLost, None)
            self.assertEqual(port.getHost().name, path.encode())


class _Selectable:
    """
    A selectable whose descriptor is gone; records how it is disconnected.
    """

    def __init__(self) -> None:
        self.lost: list[Failure] = []
        self.readLost: list[Failure] = []

    def fileno(self) -> int:
        return -1

    def logPrefix(self) -> str:
        return "-"

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)


@implementer(IHalfCloseableDescriptor)
class _HalfCloseable(_Selectable):
    def readConnectionLost(self, reason: Failure) -> None:
        self.readLost.append(reason)

    def writeConnectionLost(self, reason: Failure) -> None:
        pass


class ReactorTests(InternalsCase):
    """
    twisted.internet.epollreactor and posixbase: what the lean reactor
    (L{netplugins.reactor}) relies on.
    """

    def setUp(self) -> None:
        self.reactor = EPollReactor()
        self.addCleanup(self.reactor._poller.close)

    def test_poller(self) -> None:
        """EPollReactor._poller is its select.epoll."""
        with self.relyingOn(
            "twisted.internet.epollreactor.EPollReactor._poller", "to poll"
        ):
            self.assertIsInstance(ti.epollOf(self.reactor), select.epoll)

    def test_selectables(self) -> None:
        """EPollReactor._selectables maps descriptors to what is registered."""
        ours, theirs = _socketPair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        server = tcp.Server(
            ours, Protocol(), ("127.0.0.1", 1), _NO_PORT, 1, self.reactor
        )
        with self.relyingOn(
            "twisted.internet.epollreactor.EPollReactor._selectables",
            "to dispatch events",
        ):
            self.assertIs(ti.selectablesOf(self.reactor)[ours.fileno()], server)
            self.reactor.removeReader(server)
            self.assertNotIn(ours.fileno(), ti.selectablesOf(self.reactor))

    def test_doReadOrWrite(self) -> None:
        """
        _PollLikeMixin._doReadOrWrite(selectable, fd, event) disconnects a
        selectable without a descriptor with posixbase._NO_FILEDESC.
        """
        selectable = _Selectable()
        with self.relyingOn(
            "twisted.internet.posixbase._PollLikeMixin._doReadOrWrite and _NO_FILEDESC",
            "for every event but a plain read",
        ):
            self.assertCalledAs(
                self.reactor._doReadOrWrite, ["selectable", "fd", "event"]
            )
            ti.doReadOrWrite(self.reactor, selectable, 99, select.EPOLLIN)
            [reason] = selectable.lost
            self.assertIs(reason.value, ti.NO_FILE_DESCRIPTOR)

    def test_disconnectSelectable(self) -> None:
        """
        _DisconnectSelectableMixin._disconnectSelectable(selectable, why,
        isRead) half-closes a half-closeable selectable on a clean read end.
        """
        selectable = _HalfCloseable()
        with self.relyingOn(
            "twisted.internet.posixbase._DisconnectSelectableMixin."
            "_disconnectSelectable",
            "to end connections from the inlined read path",
        ):
            self.assertCalledAs(
                self.reactor._disconnectSelectable, ["selectable", "why", "isRead"]
            )
            ti.disconnectSelectable(self.reactor, selectable, CONNECTION_DONE, True)
            self.assertEqual(len(selectable.readLost), 1)
            self.assertEqual(selectable.lost, [])

    def test_noFileDescriptor(self) -> None:
        """posixbase._NO_FILEDESC is a ConnectionFdescWentAway."""
        with self.relyingOn(
            "twisted.internet.posixbase._NO_FILEDESC", "as Twisted's reason"
        ):
            self.assertIs(ti.NO_FILE_DESCRIPTOR, posixbase._NO_FILEDESC)
            self.assertIsInstance(ti.NO_FILE_DESCRIPTOR, error.ConnectionFdescWentAway)


def _tlsOptions() -> tuple[Any, Any]:
    """
    Server and client TLS options from a throwaway CA, in memory.
    """
    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    server = PrivateCertificate.loadPEM(
        issued.private_key_pem.bytes() + issued.cert_chain_pems[0].bytes()
    ).options()
    client = optionsForClientTLS(
        "localhost", trustRoot=Certificate.loadPEM(ca.cert_pem.bytes())
    )
    return server, client


class TLSTests(InternalsCase):
    """
    twisted.protocols.tls: what the handshake deadlines and reports
    (L{netplugins.tls.handshake}) rely on.
    """

    def test_handshakeDone(self) -> None:
        """TLSMemoryBIOProtocol._handshakeDone turns true with the handshake."""
        serverOptions, clientOptions = _tlsOptions()
        app = Factory.forProtocol(Protocol)
        server = TLSMemoryBIOFactory(serverOptions, False, app).buildProtocol(None)
        client = TLSMemoryBIOFactory(clientOptions, True, app).buildProtocol(None)
        with self.relyingOn(
            "twisted.protocols.tls.TLSMemoryBIOProtocol._handshakeDone",
            "for the handshake deadlines",
        ):
            self.assertIs(ti.tlsHandshakeDone(server), False)
            _, _, pump = iosim.connectedServerAndClient(lambda: server, lambda: client)
            pump.flush()
            self.assertIs(ti.tlsHandshakeDone(server), True)
            self.assertIs(ti.tlsHandshakeDone(client), True)
        self.assertIsNone(ti.tlsHandshakeDone(object()))

    def test_reason(self) -> None:
        """
        TLSMemoryBIOProtocol._reason holds the SSL.Error of a failed handshake
        until connectionLost.
        """
        serverOptions, _ = _tlsOptions()
        server = TLSMemoryBIOFactory(
            serverOptions, False, Factory.forProtocol(Protocol)
        ).buildProtocol(None)
        server.makeConnection(StringTransport())
        with self.relyingOn(
            "twisted.protocols.tls.TLSMemoryBIOProtocol._reason",
            "to log why a handshake failed",
        ):
            self.assertIsNone(ti.tlsFailure(server))
            server.dataReceived(b"\x16\x03\x01\x00\x05hello, not a TLS handshake")
            failure = ti.tlsFailure(server)
            self.assertIsNotNone(failure)
            assert failure is not None
            self.assertIsInstance(failure.value, SSL.Error)
            self.assertIs(ti.tlsHandshakeDone(server), False)


class _Decoder(ti.ChunkedDecoder):
    """
    Records its hooks' calls.
    """

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.finished: list[bytes] = []
        super().__init__(self.data.append, self.finished.append)
        self.sizes: list[int] = []
        self.trailers: list[bytes] = []

    def chunkSizeReceived(self, size: int) -> None:
        self.sizes.append(size)
        if size > 100:
            raise ti.MalformedChunkedData("too large")

    def trailerDataReceived(self, buffered: bytearray) -> None:
        self.trailers.append(bytes(buffered))


class _Channel(ti.HookedHTTPChannel):
    """
    Records its hooks' calls and the state read when the headers end.
    """

    def __init__(self) -> None:
        super().__init__()
        self.chosen: list[tuple[bytes, bytes]] = []
        self.badRequests = 0
        self.version: bytes | None = None
        self.replacement: _Decoder | None = None

    def chooseTransferDecoder(self, header: bytes, value: bytes) -> bool:
        self.chosen.append((header, value))
        ok = super().chooseTransferDecoder(header, value)
        if ok and self.replacement is not None and header == b"Transfer-Encoding":
            ti.setTransferDecoder(self, self.replacement)
        return ok

    def badRequest(self) -> None:
        self.badRequests += 1
        super().badRequest()

    def allHeadersReceived(self) -> None:
        self.version = ti.requestVersion(self)
        super().allHeadersReceived()


def _channel() -> tuple[_Channel, StringTransport]:
    channel = _Channel()
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


class HTTPTests(InternalsCase):
    """
    twisted.web.http and twisted.protocols.basic: what the hardened HTTP
    channel (L{netplugins.web.http}), np-kv and np-echo rely on.
    """

    def test_malformedChunkedData(self) -> None:
        """_MalformedChunkedDataError is what the chunked decoder raises."""
        with self.relyingOn(
            "twisted.web.http._MalformedChunkedDataError", "to refuse chunked bodies"
        ):
            decoder = _Decoder()
            self.assertRaises(ti.MalformedChunkedData, decoder.dataReceived, b"zz\r\n")

    def test_chunkLength(self) -> None:
        """
        _ChunkedTransferDecoder._dataReceived_CHUNK_LENGTH() runs once per
        size line, before the chunk's data; what it raises propagates.
        """
        with self.relyingOn(
            "twisted.web.http._ChunkedTransferDecoder._dataReceived_CHUNK_LENGTH",
            "for the chunked body limit",
        ):
            self.assertCalledAs(
                http._ChunkedTransferDecoder._dataReceived_CHUNK_LENGTH, ["self"]
            )
            decoder = _Decoder()
            decoder.dataReceived(b"5\r\nhello\r\n0\r\n\r\n")
            self.assertEqual(
                (decoder.sizes, decoder.data, decoder.finished),
                ([5, 0], [b"hello"], [b""]),
            )
            decoder = _Decoder()
            self.assertRaises(
                ti.MalformedChunkedData, decoder.dataReceived, b"1000\r\nabc"
            )
            self.assertEqual(decoder.data, [])

    def test_trailer(self) -> None:
        """
        _ChunkedTransferDecoder._dataReceived_TRAILER() runs at the start of
        each trailer line, its _buffer starting there.
        """
        with self.relyingOn(
            "twisted.web.http._ChunkedTransferDecoder._dataReceived_TRAILER / _buffer",
            "to refuse bare LF in trailers",
        ):
            self.assertCalledAs(
                http._ChunkedTransferDecoder._dataReceived_TRAILER, ["self"]
            )
            decoder = _Decoder()
            decoder.dataReceived(b"0\r\nX: y\r\n\r\nnext")
            self.assertEqual(decoder.trailers, [b"X: y\r\n\r\nnext", b"\r\nnext"])
            self.assertEqual(decoder.finished, [b"next"])

    def test_maybeChooseTransferDecoder(self) -> None:
        """
        HTTPChannel._maybeChooseTransferDecoder(header, data) sees every
        header, canonicalized, and leaves Twisted's chunked decoder in
        _transferDecoder.
        """
        channel, _ = _channel()
        with self.relyingOn(
            "twisted.web.http.HTTPChannel._maybeChooseTransferDecoder / "
            "_transferDecoder",
            "to refuse transfer codings and limit chunked bodies",
        ):
            self.assertCalledAs(
                http.HTTPChannel._maybeChooseTransferDecoder,
                ["self", "header", "data"],
            )
            channel.dataReceived(
                b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            self.assertEqual(
                channel.chosen,
                [(b"Host", b"a"), (b"Transfer-Encoding", b"chunked")],
            )
            decoder = ti.transferDecoder(channel)
            self.assertIsInstance(decoder, http._ChunkedTransferDecoder)
            self.assertTrue(callable(decoder.dataCallback))
            self.assertTrue(callable(decoder.finishCallback))

    def test_setTransferDecoder(self) -> None:
        """HTTPChannel._transferDecoder, once replaced, decodes the body."""
        channel, _ = _channel()
        channel.replacement = _Decoder()
        with self.relyingOn(
            "twisted.web.http.HTTPChannel._transferDecoder",
            "to put the limited chunked decoder in place",
        ):
            channel.dataReceived(
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n"
            )
            self.assertEqual(channel.replacement.sizes, [3])
            self.assertEqual(channel.replacement.data, [b"abc"])

    def test_respondToBadRequestAndDisconnect(self) -> None:
        """
        HTTPChannel._respondToBadRequestAndDisconnect() answers a bad request
        line and a malformed chunked body.
        """
        with self.relyingOn(
            "twisted.web.http.HTTPChannel._respondToBadRequestAndDisconnect",
            "to answer malformed requests with its own 400",
        ):
            self.assertCalledAs(
                http.HTTPChannel._respondToBadRequestAndDisconnect, ["self"]
            )
            channel, transport = _channel()
            channel.dataReceived(b"GARBAGE\r\n")
            self.assertEqual(channel.badRequests, 1)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400"))
            channel, _ = _channel()
            channel.dataReceived(
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"zz\r\n"
            )
            self.assertEqual(channel.badRequests, 1)

    def test_firstLine(self) -> None:
        """HTTPChannel.__first_line is true exactly while a request line is due."""
        channel, _ = _channel()
        with self.relyingOn(
            "twisted.web.http.HTTPChannel.__first_line (_HTTPChannel__first_line)",
            "to tell 414 from 431 and start the header deadline",
        ):
            self.assertTrue(ti.inRequestLine(channel))
            channel.dataReceived(b"GET / HTTP/1.1\r\n")
            self.assertFalse(ti.inRequestLine(channel))
            channel.dataReceived(b"Host: a\r\n\r\n")
            self.assertTrue(ti.inRequestLine(channel))

    def test_version(self) -> None:
        """HTTPChannel._version is the request line's version until the headers end."""
        channel, _ = _channel()
        with self.relyingOn(
            "twisted.web.http.HTTPChannel._version", "to require Host on HTTP/1.1"
        ):
            channel.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
            self.assertEqual(channel.version, b"HTTP/1.0")

    def test_receivedHeaderSize(self) -> None:
        """HTTPChannel._receivedHeaderSize counts the head's lines, CRLF excluded."""
        channel, _ = _channel()
        with self.relyingOn(
            "twisted.web.http.HTTPChannel._receivedHeaderSize",
            "to answer 431 for a head over the limit",
        ):
            self.assertEqual(ti.receivedHeaderSize(channel), 0)
            channel.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n")
            self.assertEqual(ti.receivedHeaderSize(channel), 14 + 7)

    def test_networkProducer(self) -> None:
        """HTTPChannel._networkProducer is the transport, which it pauses."""
        channel, transport = _channel()
        with self.relyingOn(
            "twisted.web.http.HTTPChannel._networkProducer",
            "to stop reading while a pipelined request waits",
        ):
            self.assertIs(ti.networkProducer(channel), transport)
            ti.networkProducer(channel).pauseProducing()
            self.assertEqual(transport.producerState, "paused")

    def test_lineBuffer(self) -> None:
        """LineReceiver._buffer holds what follows the last complete line."""
        receiver = LineReceiver()
        receiver.lineReceived = lambda line: None  # type: ignore[method-assign]
        with self.relyingOn(
            "twisted.protocols.basic.LineReceiver._buffer",
            "to find bare LF and request heads on their way",
        ):
            receiver.dataReceived(b"line\r\npart")
            self.assertEqual(ti.lineBuffer(receiver), b"part")

    def test_setLineBuffer(self) -> None:
        """Bytes put back in LineReceiver._buffer are parsed at the next read."""
        lines: list[bytes] = []
        receiver = LineReceiver()
        receiver.lineReceived = lines.append  # type: ignore[method-assign]
        receiver.makeConnection(StringTransport())
        with self.relyingOn(
            "twisted.protocols.basic.LineReceiver._buffer",
            "to hand np-smtp the commands pipelined after a message's data",
        ):
            ti.setLineBuffer(receiver, b"one\r\ntw")
            self.assertEqual(lines, [])
            receiver.dataReceived(b"o\r\n")
            self.assertEqual(lines, [b"one", b"two"])

    def test_coerceDoc(self) -> None:
        """usage.Options._dispatch maps a coerced parameter to its coercer."""

        def number(value: str) -> int:
            return int(value)

        number.coerceDoc = "A number."  # type: ignore[attr-defined]

        class Options(usage.Options):
            optParameters = [
                ["size", None, 1, "How big.", number],
                ["name", None, "x", "Who."],
            ]

        with self.relyingOn(
            "twisted.python.usage.Options._dispatch",
            "to tidy coerced parameters' --help text",
        ):
            options = Options()
            self.assertEqual(
                (ti.coerceDoc(options, "size"), ti.coerceDoc(options, "name")),
                ("A number.", None),
            )

    def test_listeningService(self) -> None:
        """StreamServerEndpointService's _raiseSynchronously and _waitingForPort."""
        from twisted.application.internet import StreamServerEndpointService
        from twisted.internet.endpoints import TCP4ServerEndpoint

        with self.relyingOn(
            "twisted.application.internet.StreamServerEndpointService."
            "_raiseSynchronously and _waitingForPort",
            "to stop twistd when a port cannot be had, and to log the port",
        ):
            reactor = MemoryReactorClock()
            service = StreamServerEndpointService(
                TCP4ServerEndpoint(reactor, 8080), Factory.forProtocol(Protocol)
            )
            ti.raiseListenFailures(service)
            service.privilegedStartService()
            port = self.successResultOf(ti.whenListening(service))
            self.assertEqual(port.getHost().port, 8080)

            class Refusing:
                def listen(self, factory: Any) -> Any:
                    from twisted.internet.defer import fail

                    return fail(error.CannotListenError("", 1, OSError("taken")))

            failing = StreamServerEndpointService(
                Refusing(),
                Factory.forProtocol(Protocol),  # type: ignore[arg-type]
            )
            ti.raiseListenFailures(failing)
            self.assertRaises(error.CannotListenError, failing.privilegedStartService)

    def test_requestDisconnected(self) -> None:
        """Request._disconnected turns true when the connection is lost."""
        channel: Any = DummyChannel()
        request = http.Request(channel)
        with self.relyingOn(
            "twisted.web.http.Request._disconnected",
            "to drop late np-kv responses",
        ):
            self.assertFalse(ti.requestDisconnected(request))
            request.connectionLost(Failure(error.ConnectionLost()))
            self.assertTrue(ti.requestDisconnected(request))

    def test_unprocessed(self) -> None:
        """
        IntNStringReceiver._unprocessed, emptied on a refused prefix, is not
        parsed again.
        """
        refused: list[int] = []
        received: list[bytes] = []

        class Receiver(Int32StringReceiver):
            MAX_LENGTH = 3

            def lengthLimitExceeded(self, length: int) -> None:
                refused.append(length)
                ti.discardUnparsed(self)

            def stringReceived(self, string: bytes) -> None:
                received.append(string)

        receiver = Receiver()
        with self.relyingOn(
            "twisted.protocols.basic.IntNStringReceiver._unprocessed",
            "to refuse an np-echo block once",
        ):
            receiver.dataReceived(struct.pack("!I", 10) + b"abc")
            receiver.dataReceived(b"")
            self.assertEqual(refused, [10])
            receiver.dataReceived(struct.pack("!I", 2) + b"ok")
            self.assertEqual(received, [b"ok"])


class WSGITests(InternalsCase):
    """
    twisted.web.wsgi: what np-wsgi (L{netplugins.wsgi}) relies on.
    """

    def test_wsgiResponse(self) -> None:
        """
        _WSGIResponse(reactor, threadpool, application, request) builds the
        environ, and start() hands its run to the thread pool.
        """
        from twisted.web.wsgi import _WSGIResponse

        calls: list[Callable[[], None]] = []

        class Pool:
            def callInThread(self, f: Callable[[], None]) -> None:
                calls.append(f)

        class Request(DummyRequest):
            def isSecure(self) -> bool:
                return False

        request: Any = Request([b""])
        request.content = io.BytesIO()
        request.client = IPv4Address("TCP", "127.0.0.1", 12345)
        with self.relyingOn(
            "twisted.web.wsgi._WSGIResponse", "to add to the WSGI environment"
        ):
            self.assertCalledAs(
                _WSGIResponse.__init__,
                ["self", "reactor", "threadpool", "application", "request"],
            )
            response = ti.wsgiResponse(
                MemoryReactorClock(),
                Pool(),
                lambda environ, start: [],
                request,
            )
            self.assertEqual(response.environ["REQUEST_METHOD"], "GET")
            response.environ["REMOTE_USER"] = "alice"
            response.start()
            self.assertEqual(len(calls), 1)


class DeclarationTests(SynchronousTestCase):
    """
    The Twisted range netplugins claims, and the rule that private Twisted
    names stay in L{netplugins.twistedinternals}.
    """

    def test_versionClaimed(self) -> None:
        """The Twisted running these tests is in the range netplugins requires."""
        [twistedRequirement] = [
            Requirement(line)
            for line in requires("netplugins") or []
            if Requirement(line).name.lower() == "twisted"
        ]
        specifier = twistedRequirement.specifier
        self.assertTrue(
            any(spec.operator in ("<", "<=", "==", "~=") for spec in specifier),
            f"no upper bound on Twisted in {twistedRequirement}",
        )
        self.assertTrue(
            specifier.contains(Version(TWISTED)),
            f"these tests ran on Twisted {TWISTED}, outside {twistedRequirement}: "
            "move the bound in setup.cfg once they pass",
        )

    def test_noReactorInstalled(self) -> None:
        """
        Importing the internals and the service layer installs no reactor, so
        C{twistd --reactor NAME} can choose one (only np-ssh's conch part,
        L{netplugins.twistedinternals.conch}, may install the default one).
        """
        import subprocess
        import sys

        program = (
            "import sys, netplugins.twistedinternals, netplugins.options, "
            "netplugins.service, netplugins.tap.echo\n"
            "print('twisted.internet.reactor' in sys.modules)"
        )
        result = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, check=True
        )
        self.assertEqual(result.stdout, "False\n")

    def test_onlyHere(self) -> None:
        """
        No other netplugins module imports a private Twisted module or name,
        or names a private Twisted attribute routed through
        L{netplugins.twistedinternals}.
        """
        root = os.path.dirname(netplugins.__file__)
        found: list[str] = []
        for directory, _, names in os.walk(root):
            for name in sorted(names):
                path = os.path.join(directory, name)
                module = os.path.relpath(path, root)
                if not name.endswith(".py") or module.startswith("twistedinternals"):
                    continue
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                found.extend(
                    f"netplugins/{module}:{line}: {used}"
                    for line, used in _privateTwistedUses(tree, module)
                )
        self.assertEqual(found, [], "route these through netplugins.twistedinternals")


#: Private Twisted attribute names routed through netplugins.twistedinternals,
#: looked for everywhere else.  Generic ones (_buffer, _version, _reason,
#: _poller, _type) are netplugins' own names too, so are left out.
_ROUTED = frozenset(
    {
        "_HTTPChannel__first_line",
        "_aborting",
        "_dataReceived_CHUNK_LENGTH",
        "_dataReceived_TRAILER",
        "_disconnectSelectable",
        "_doReadOrWrite",
        "_fromListeningDescriptor",
        "_handshakeDone",
        "_maybeChooseTransferDecoder",
        "_networkProducer",
        "_raiseSynchronously",
        "_receivedHeaderSize",
        "_respondToBadRequestAndDisconnect",
        "_reusePort",
        "_selectables",
        "_sendmsgQueue",
        "_tempDataLen",
        "_transferDecoder",
        "_unprocessed",
        "_waitingForPort",
        "_writeDisconnected",
    }
)

#: Private Twisted names not routed yet, and the one module each may still be
#: used in (none now; usage.Options._dispatch, routed too, is too generic a
#: name to look for).
_PENDING: dict[str, str] = {}


def _isPrivateTwisted(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] == "twisted" and any(part.startswith("_") for part in parts)


def _privateTwistedUses(tree: ast.AST, module: str) -> Iterator[tuple[int, str]]:
    """
    The line and name of each private Twisted module or name that C{tree}
    (the source of C{module}) imports, and of each routed or misplaced
    pending attribute it names (as an attribute, a method or a string).
    """
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if _isPrivateTwisted(dotted):
                    yield line, dotted
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _isPrivateTwisted(alias.name):
                    yield line, alias.name
            continue
        name: object = None
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.FunctionDef):
            name = node.name
        elif isinstance(node, ast.Constant):
            name = node.value
        if not isinstance(name, str):
            continue
        if name in _ROUTED or _PENDING.get(name, module) != module:
            yield line, name


class ConchTests(InternalsCase):
    """
    twisted.conch.ssh: what np-ssh (L{netplugins.ssh}) relies on.
    """

    def test_fixedGroupKeyExchange(self) -> None:
        """
        _kex._kexAlgorithms takes a new fixed group that isFixedGroup,
        getDHGeneratorAndPrime and getHashProcessor then answer for.
        """
        from hashlib import sha512

        from twisted.conch.ssh import _kex

        with self.relyingOn(
            "twisted.conch.ssh._kex._kexAlgorithms", "to add DH group16/18-sha512"
        ):
            conch.addFixedGroupKeyExchange(b"test-group-sha512", 2, 23, sha512)
            self.addCleanup(_kex._kexAlgorithms.pop, b"test-group-sha512")
            self.assertEqual(
                (
                    _kex.isFixedGroup(b"test-group-sha512"),
                    _kex.getDHGeneratorAndPrime(b"test-group-sha512"),
                    _kex.getHashProcessor(b"test-group-sha512"),
                ),
                (True, (2, 23), sha512),
            )

    def test_keyExchangeHolds(self) -> None:
        """
        After KEXINIT is sent, a service request waits (held, then sent by
        _newKeys) while key exchange messages do not.
        """
        from twisted.conch.ssh import transport

        t = conch.HookedSSHServerTransport()
        sent: list[int] = []
        t.sendPacket = lambda kind, payload: sent.append(kind)  # type: ignore[method-assign]
        with self.relyingOn(
            "SSHTransportBase._keyExchangeState and _blockedByKeyExchange",
            "to hold messages in np-ssh's packet layer",
        ):
            self.assertFalse(t.keyExchangeHolds(transport.MSG_SERVICE_REQUEST))
            t._keyExchangeState = t._KEY_EXCHANGE_REQUESTED
            t._blockedByKeyExchange = []
            self.assertEqual(
                (
                    t.keyExchangeHolds(transport.MSG_SERVICE_ACCEPT),
                    t.keyExchangeHolds(transport.MSG_KEXDH_REPLY),
                ),
                (True, False),
            )
            t.holdForKeyExchange(transport.MSG_SERVICE_ACCEPT, b"")
            t.nextEncryptions = t.currentEncryptions = None  # type: ignore[assignment]
            t.outgoingCompressionType = t.incomingCompressionType = b"none"
            t.adoptNewKeys()
            self.assertEqual(
                (sent, t.keyExchangeHolds(transport.MSG_SERVICE_ACCEPT)),
                ([transport.MSG_SERVICE_ACCEPT], False),
            )

    def test_userAuthHooks(self) -> None:
        """
        serviceStarted sets _cancelLoginTimeout; _ebBadAuth is the final
        errback, taking the failure.
        """
        from twisted.conch.ssh.userauth import SSHUserAuthServer

        with self.relyingOn(
            "SSHUserAuthServer._cancelLoginTimeout and _ebBadAuth",
            "to replace conch's login window and attempt count",
        ):
            self.assertCalledAs(SSHUserAuthServer._ebBadAuth, ["self", "reason"])
            self.assertIn(
                "self._cancelLoginTimeout = self.clock.callLater",
                inspect.getsource(SSHUserAuthServer.serviceStarted),
            )
            server = conch.HookedUserAuthServer()
            call = MemoryReactorClock().callLater(10, lambda: None)
            server._cancelLoginTimeout = call
            server.cancelConchLoginTimeout()
            self.assertEqual((call.active(), server._cancelLoginTimeout), (False, None))

    def test_fileTransferHooks(self) -> None:
        """
        FileTransferServer's _sendStatus, _packAttributes, _parseAttributes
        and _ebStatus keep their shapes; attributes round-trip.
        """
        from twisted.conch.ssh.filetransfer import FileTransferServer

        with self.relyingOn(
            "FileTransferServer._sendStatus, _packAttributes, _parseAttributes, "
            "_ebStatus",
            "for np-ssh's SFTP extensions and error replies",
        ):
            self.assertCalledAs(
                FileTransferServer._sendStatus,
                ["self", "requestId", "code", "message", "lang"],
            )
            self.assertCalledAs(
                FileTransferServer._ebStatus, ["self", "reason", "requestId", "msg"]
            )
            hooked = conch.HookedFileTransferServer
            server = hooked.__new__(hooked)
            attrs = {"size": 5, "permissions": 0o100644, "atime": 1, "mtime": 2}
            self.assertEqual(
                server.parseAttributes(server.packAttributes(attrs) + b"rest"),
                (attrs, b"rest"),
            )
            transport = StringTransport()
            server.makeConnection(transport)
            server.sendStatus(b"\0\0\0\1", 2, b"gone")
            self.assertEqual(
                transport.value(),
                b"\0\0\0\x15\x65\0\0\0\1\0\0\0\2\0\0\0\4gone\0\0\0\0",
            )


_ROUTED = _ROUTED | {
    "_allowedKeyExchangeMessageType",
    "_blockedByKeyExchange",
    "_cancelLoginTimeout",
    "_ebBadAuth",
    "_ebStatus",
    "_kexAlgorithms",
    "_keyExchangeState",
    "_newKeys",
    "_packAttributes",
    "_parseAttributes",
}
# (filetransfer's _sendStatus is routed too, but np-imap has a _sendStatus
# of its own: too generic a name to look for.)


class DatagramTests(InternalsCase):
    """
    The UDP port's socket, which np-dns writes its replies with.
    """

    def test_datagramSender(self) -> None:
        """udp.Port.socket's sendto sends a datagram from the port."""
        from twisted.internet import udp
        from twisted.internet.protocol import DatagramProtocol

        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(peer.close)
        peer.bind(("127.0.0.1", 0))
        port = udp.Port(
            0, DatagramProtocol(), interface="127.0.0.1", reactor=MemoryReactorClock()
        )
        with self.relyingOn(
            "twisted.internet.udp.Port.socket", "to send np-dns's UDP replies"
        ):
            port.startListening()
            self.addCleanup(port.connectionLost)
            send = ti.datagramSender(port)
            assert send is not None
            send(b"reply", peer.getsockname())
            peer.settimeout(5)
            self.assertEqual(
                peer.recvfrom(100), (b"reply", ("127.0.0.1", port.getHost().port))
            )
        self.assertIsNone(ti.datagramSender(StringTransport()))
