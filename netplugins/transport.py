"""
A write-through stream transport for every netplugins listener.

Twisted's L{FileDescriptor.write <twisted.internet.abstract.FileDescriptor.write>}
never sends: it buffers and asks the reactor for a writable event, so every
request/response round trip costs two C{epoll_ctl} calls (start and stop
writing) and a trip through the reactor before the reply leaves.  The
transports here send at once when nothing is buffered, buffering only what the
kernel did not take; once something is buffered they behave exactly like
Twisted's (ordering, producers, half-close, C{loseConnection} after pending
data, C{abortConnection}, TLS on top).

Use L{fastServerFromString} wherever C{serverFromString} would be: C{tcp:},
C{tcp6:}, C{unix:} and C{systemd:} listeners, and the ones wrapped around them
(C{haproxy:}, C{hmac:}, C{nptls:}, Twisted's C{ssl:}), get these transports;
other endpoint types are Twisted's own, unchanged.

The Twisted internals these transports depend on (buffer state, the TLS
bypass, port flags) are reached through L{netplugins.twistedinternals}.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp, udp, unix
from twisted.internet.abstract import FileDescriptor
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from zope.interface import directlyProvides, providedBy

from netplugins.twistedinternals import (
    dataMustBeBytes,
    markPortTLS,
    outputIdle,
    queuedFileDescriptors,
    setReusePort,
    startTLSWithBypass,
    tcpPortFromDescriptor,
    unixPortFromDescriptor,
    writesShut,
)

#: The listen backlog Twisted's endpoints pass when a description names none,
#: and what netplugins listens with instead (memcached's default; the kernel
#: caps it at net.core.somaxconn).  With 50, 300 clients connecting at once
#: overflowed the accept queue: their SYNs were dropped and retried a second
#: later, and some connections the kernel had completed were never accepted.
TWISTED_BACKLOG = 50
LISTEN_BACKLOG = 1024

# asyncio reads up to 256 KiB at a time: one recv() takes a whole 64 KiB
# message (and then some) where Twisted's 64 KiB reads need two.
READ_SIZE = 256 * 1024

# recv(256 KiB) would allocate 256 KiB per call, above glibc's mmap threshold:
# mmap, mremap and munmap on every read.  Reads land in this one buffer
# instead (the reactor reads on one thread, and each read is copied out before
# the protocol sees it).
_readBuffer = bytearray(READ_SIZE)
_readView = memoryview(_readBuffer)


class WriteThroughMixin:
    """
    Write-through sending and large reads for a L{tcp.Server}-derived
    transport.

    C{write} sends at once when no byte is waiting in the buffer and no pull
    producer is registered (a pull producer is resumed by the buffer draining,
    so it keeps Twisted's buffered path); what the kernel does not take is
    buffered and sent by Twisted's C{doWrite} as usual, with streaming
    producers paused once more than C{bufferSize} bytes wait.  A send error
    buffers the data instead, so the loss is reported by the normal
    C{doWrite} path, from the reactor rather than from inside the caller.

    @cvar readSize: the most bytes one C{recv} asks for, at most
        L{READ_SIZE}.
    """

    readSize = READ_SIZE

    # Set by the classes this is mixed into; declared for the type checker.
    socket: socket.socket
    connected: int
    TLS: bool
    protocol: Any
    producer: Any
    streamingProducer: bool

    def write(self, data: bytes) -> None:
        """
        Send C{data} now if nothing is queued before it, else queue it; through
        TLS when TLS was started on this transport.
        """
        if self.TLS:
            if self.connected:
                self.protocol.write(data)
            return
        self._writeThrough(data)

    def writeSequence(self, iovec: Any) -> None:
        """
        Send the concatenation of C{iovec} as one L{write}.
        """
        if self.TLS:
            if self.connected:
                self.protocol.writeSequence(iovec)
            return
        iovec = list(iovec)
        for chunk in iovec:
            dataMustBeBytes(chunk)
        self._writeThrough(b"".join(iovec))

    def _writeThrough(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            dataMustBeBytes(data)
        if not data or not self.connected:
            return
        # One check for the common case: open, nothing queued.
        if not outputIdle(self) or self._mustBuffer():  # type: ignore[arg-type]
            if not writesShut(self):  # type: ignore[arg-type]
                FileDescriptor.write(self, data)  # type: ignore[arg-type]
            return
        try:
            sent = self.socket.send(data)
        except OSError:
            # EAGAIN, EINTR, or a dead connection: buffer, and let doWrite
            # retry or report the loss from the reactor.
            sent = 0
        if sent < len(data):
            FileDescriptor.write(self, data[sent:])  # type: ignore[arg-type]

    def _mustBuffer(self) -> bool:
        """
        Whether writes must take the buffered path even with an empty buffer.
        """
        return self.producer is not None and not self.streamingProducer

    def startTLS(self, ctx: Any, normal: bool = True) -> None:
        """
        Start TLS; the TLS records go out through the write-through methods.
        """
        startTLSWithBypass(self, ctx, normal, _WriteThroughBypass)

    def doRead(self) -> Any:
        """
        Read up to C{readSize} bytes and hand them to the protocol.
        """
        try:
            size = self.socket.recv_into(_readView, self.readSize)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return CONNECTION_LOST
        if not size:
            return CONNECTION_DONE
        self.protocol.dataReceived(bytes(_readView[:size]))
        return None


class _WriteThroughBypass:
    """
    What L{startTLS}'s TLS layer calls to put its records on the wire: the
    write-through send, below any TLS (the methods
    L{netplugins.twistedinternals.TLS_BYPASS_METHODS} names).
    """

    @staticmethod
    def write(transport: Any, data: bytes) -> None:
        transport._writeThrough(data)

    @staticmethod
    def writeSequence(transport: Any, iovec: Any) -> None:
        transport._writeThrough(b"".join(iovec))

    loseConnection = FileDescriptor.loseConnection
    registerProducer = FileDescriptor.registerProducer
    unregisterProducer = FileDescriptor.unregisterProducer


class WriteThroughServer(WriteThroughMixin, tcp.Server):
    """
    An accepted TCP connection that writes through.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.server is not None and getattr(self.server, "noDelay", False):
            # A reply goes out whole, in one send: Nagle's algorithm could
            # only hold back the tail of a reply larger than one segment.
            self.setTcpNoDelay(True)


class WriteThroughPort(tcp.Port):
    """
    A TCP listening port whose connections write through.

    @ivar noDelay: set C{TCP_NODELAY} on accepted connections.
    @ivar reusePort: set C{SO_REUSEPORT} before binding, so several processes
        can listen on the same address and the kernel balances connections
        between them.
    """

    transport = WriteThroughServer

    def __init__(
        self,
        port: int,
        factory: IProtocolFactory,
        backlog: int = 50,
        interface: str = "",
        reactor: Any = None,
        *,
        noDelay: bool = True,
        reusePort: bool = False,
    ):
        super().__init__(port, factory, backlog, interface, reactor)
        self.noDelay = noDelay
        if reusePort:
            setReusePort(self)


class WriteThroughUNIXServer(WriteThroughMixin, unix.Server):
    """
    An accepted UNIX connection that writes through; file descriptors queued
    with C{sendFileDescriptor} travel on Twisted's buffered path, with the
    bytes written after them.
    """

    def _mustBuffer(self) -> bool:
        return bool(queuedFileDescriptors(self)) or super()._mustBuffer()

    def doRead(self) -> Any:
        # recvmsg, to receive passed file descriptors.
        return unix.Server.doRead(self)


class WriteThroughUNIXPort(unix.Port):
    """
    A UNIX listening port whose connections write through.
    """

    transport = WriteThroughUNIXServer


def listenTCP(
    reactor: Any,
    port: int,
    factory: IProtocolFactory,
    backlog: int = 50,
    interface: str = "",
    *,
    noDelay: bool = True,
    reusePort: bool = False,
) -> WriteThroughPort:
    """
    Listen on TCP with write-through connections, as C{reactor.listenTCP}.
    """
    listening = WriteThroughPort(
        port,
        factory,
        backlog,
        interface,
        reactor,
        noDelay=noDelay,
        reusePort=reusePort,
    )
    listening.startListening()
    return listening


def listenUNIX(
    reactor: Any,
    address: str,
    factory: IProtocolFactory,
    backlog: int = 50,
    mode: int = 0o666,
    wantPID: int = 0,
) -> WriteThroughUNIXPort:
    """
    Listen on a UNIX socket with write-through connections, as
    C{reactor.listenUNIX}.
    """
    # Twisted's annotation says bytes; it takes (and its endpoints pass) str.
    path: Any = address
    listening = WriteThroughUNIXPort(path, factory, backlog, mode, reactor, wantPID)
    listening.startListening()
    return listening


def adoptStreamPort(
    reactor: Any, fileDescriptor: int, addressFamily: int, factory: IProtocolFactory
) -> tcp.Port:
    """
    Listen on an inherited listening socket with write-through connections,
    as C{reactor.adoptStreamPort}.  The descriptor is duplicated: the caller
    still owns C{fileDescriptor}.
    """
    listening: tcp.Port
    if addressFamily == socket.AF_UNIX:
        listening = unixPortFromDescriptor(
            WriteThroughUNIXPort, reactor, fileDescriptor, factory
        )
    elif addressFamily in (socket.AF_INET, socket.AF_INET6):
        listening = tcpPortFromDescriptor(
            WriteThroughPort, reactor, fileDescriptor, addressFamily, factory
        )
    else:
        raise ValueError(f"cannot adopt a socket of address family {addressFamily}")
    listening.startListening()
    return listening


class ReusePortUDP(udp.Port):
    """
    A UDP port bound with C{SO_REUSEPORT}, so each worker of a
    multi-process service binds the same address.
    """

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return skt


def listenUDP(
    reactor: Any,
    port: int,
    protocol: Any,
    interface: str = "",
    maxPacketSize: int = 8192,
    *,
    reusePort: bool = False,
) -> udp.Port:
    """
    C{reactor.listenUDP}, with C{SO_REUSEPORT} when C{reusePort} is set.
    """
    if not reusePort:
        return reactor.listenUDP(  # type: ignore[no-any-return]
            port, protocol, interface, maxPacketSize
        )
    listening = ReusePortUDP(port, protocol, interface, maxPacketSize, reactor)
    listening.startListening()
    return listening


_UNBOUND = "no reactor yet (an endpoint listens once its service is made for one)"


class WriteThroughReactor:
    """
    A stand-in for a reactor whose stream listening methods make write-through
    ports; everything else is the reactor's own.  Endpoint parsers given this
    build Twisted's endpoints, which then listen through it.  A reactor that
    is not a POSIX file-descriptor reactor (a test's C{MemoryReactor}) is
    left to listen its own way.

    Made without a reactor, it stands in for the one that is bound later
    (L{bind}): an endpoint string is parsed once, when the settings are
    loaded, and its endpoint listens with whatever reactor the service is
    made for (L{netplugins.service.Listener}).

    @ivar reactor: the real reactor, or C{None} until bound.
    @ivar reusePort: listen on TCP with C{SO_REUSEPORT} (for workers).
    """

    def __init__(self, reactor: Any = None, *, reusePort: bool = False):
        self._reactor: Any = None
        self.reusePort = reusePort
        self.posix = False
        if reactor is not None:
            self.bind(reactor, reusePort=reusePort)

    def bind(self, reactor: Any, *, reusePort: bool = False) -> None:
        """
        Stand in for C{reactor} from now on.
        """
        from twisted.internet.posixbase import PosixReactorBase

        self._reactor = reactor
        self.reusePort = reusePort
        self.posix = isinstance(reactor, PosixReactorBase)
        directlyProvides(self, providedBy(reactor))

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            raise RuntimeError(_UNBOUND)
        return self._reactor

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or self.__dict__.get("_reactor") is None:
            raise AttributeError(f"{name}: {_UNBOUND}")
        return getattr(self._reactor, name)

    def listenTCP(
        self,
        port: int,
        factory: IProtocolFactory,
        backlog: int = 50,
        interface: str = "",
    ) -> Any:
        backlog = _backlog(backlog)
        if not self.posix:
            return self.reactor.listenTCP(port, factory, backlog, interface)
        return listenTCP(
            self.reactor, port, factory, backlog, interface, reusePort=self.reusePort
        )

    def listenUNIX(
        self,
        address: str,
        factory: IProtocolFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> Any:
        backlog = _backlog(backlog)
        if not self.posix:
            return self.reactor.listenUNIX(address, factory, backlog, mode, wantPID)
        return listenUNIX(self.reactor, address, factory, backlog, mode, wantPID)

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> Any:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        backlog = _backlog(backlog)
        if not self.posix:
            return self.reactor.listenSSL(
                port, factory, contextFactory, backlog, interface
            )
        wrapped = TLSMemoryBIOFactory(contextFactory, False, factory)
        listening = self.listenTCP(port, wrapped, backlog, interface)
        markPortTLS(listening)
        return listening

    def adoptStreamPort(
        self, fileDescriptor: int, addressFamily: int, factory: IProtocolFactory
    ) -> Any:
        if not self.posix:
            return self.reactor.adoptStreamPort(fileDescriptor, addressFamily, factory)
        return adoptStreamPort(self.reactor, fileDescriptor, addressFamily, factory)


def _backlog(backlog: int) -> int:
    """
    The backlog to listen with when an endpoint passes C{backlog}: Twisted's
    default becomes L{LISTEN_BACKLOG}, any other value is kept (an explicit
    C{backlog=50} too, then).
    """
    return LISTEN_BACKLOG if backlog == TWISTED_BACKLOG else backlog


def fastServerFromString(
    reactor: Any, description: str, *, reusePort: bool = False
) -> IStreamServerEndpoint:
    """
    C{serverFromString}, with write-through transports for the listeners it
    makes (C{tcp:}, C{tcp6:}, C{unix:}, C{systemd:}, and those wrapped in
    C{haproxy:}, C{hmac:}, C{nptls:}, C{ssl:}).

    @param reusePort: listen on TCP with C{SO_REUSEPORT}, as each worker of a
        multi-process service does.
    @raise ValueError: for a bad description, as C{serverFromString}.
    """
    return serverFromString(  # type: ignore[no-any-return]
        WriteThroughReactor(reactor, reusePort=reusePort), description
    )
