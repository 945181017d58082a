"""
np-ftp's data connections and the transfers over them.

A session gets its data connection from a L{PassivePort} (C{PASV}, C{EPSV}:
a listener on a port of the passive range that accepts one connection, from
the control connection's peer address only; anything else is closed and
logged) or an L{ActivePort} (C{PORT}, C{EPRT}: a connection made at the
transfer to an address the session checked: the control peer's, a port of
1024 or more, RFC 2577).  C{PROT P} wraps the connection in TLS, the server
side of the handshake whichever side connected (RFC 4217).

Transfers are producers: a L{Sender} reads the next chunk (in the thread
pool) only while the data connection's transport is not paused, and a
L{Receiver} stops reading the socket while more than L{RECEIVE_HIGH} bytes
wait to be written, so a slow peer or a slow disk never grows memory.  A
binary download over a connection in the clear is a L{FileSender}: the
kernel copies the file to the socket (C{sendfile}), no byte passing through
Python.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import re
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import CannotListenError, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IListeningPort,
    IPullProducer,
    IPushProducer,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netplugins.addresses import describe
from netplugins.transport import WriteThroughReactor

#: Bytes read from a file per chunk of a download (TLS and ASCII; binary
#: downloads in the clear go by sendfile).  Each chunk is one trip to the
#: pool and back and one round of the transport's buffering: at 1 MiB,
#: np-ftp's server CPU per 32 MiB FTPS download fell by a third from 256 KiB.
CHUNK = 1024 * 1024
#: The most bytes one read of a data connection's socket asks for
#: (Twisted's default is 64 KiB): fewer reads and deliveries per upload.
RECEIVE_CHUNK = 256 * 1024
#: Received bytes gathered before they go to the pool in one write (or
#: fewer, at the end): one trip to the pool per batch, not per TLS record.
WRITE_BATCH = 256 * 1024
#: Received bytes waiting for the disk before the socket stops being read.
RECEIVE_HIGH = 1024 * 1024
#: Bytes a data connection may send before its transfer starts.
EARLY_LIMIT = 64 * 1024
#: The most bytes one sendfile call is asked to move (it moves what the
#: socket's buffer takes).
SENDFILE_CHUNK = 4 * 1024 * 1024
#: sendfile's errors for a file or socket it cannot copy between: the
#: download falls back to reads, when no byte was sent yet.
_NO_SENDFILE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def sameHost(a: str, b: str) -> bool:
    """
    Whether C{a} and C{b} are the same IP address (IPv4-mapped IPv6 as IPv4).
    """
    try:
        x, y = (
            ipaddress.ip_address(a.split("%")[0]),
            ipaddress.ip_address(b.split("%")[0]),
        )
    except ValueError:
        return a == b
    if isinstance(x, ipaddress.IPv6Address) and x.ipv4_mapped is not None:
        x = x.ipv4_mapped
    if isinstance(y, ipaddress.IPv6Address) and y.ipv4_mapped is not None:
        y = y.ipv4_mapped
    return x == y


_LOST = Failure(ConnectionLost("data connection lost"))
_LONE_LF = re.compile(rb"(?<!\r)\n")


class ToNetwork:
    """
    TYPE A downloads: a lone LF becomes CRLF (CRLF stays), across chunks.
    """

    def __init__(self) -> None:
        self._afterCR = False

    def __call__(self, data: bytes) -> bytes:
        if not data:
            return data
        if self._afterCR and data[:1] == b"\n":
            head, data = b"\n", data[1:]
        else:
            head = b""
        self._afterCR = data[-1:] == b"\r" or (not data and self._afterCR)
        return head + _LONE_LF.sub(b"\r\n", data)


class FromNetwork:
    """
    TYPE A uploads: CRLF becomes LF, across chunks.
    """

    def __init__(self) -> None:
        self._carry = b""

    def __call__(self, data: bytes) -> bytes:
        data = self._carry + data
        self._carry = b""
        if data.endswith(b"\r"):
            data, self._carry = data[:-1], b"\r"
        return data.replace(b"\r\n", b"\n")

    def flush(self) -> bytes:
        carry, self._carry = self._carry, b""
        return carry


@implementer(IHandshakeListener)
class DataChannel(Protocol):
    """
    One data connection.  It tells L{whenMade} when it is up (and, with TLS,
    L{handshaken} when the handshake is done), keeps what arrives before its
    transfer (at most L{EARLY_LIMIT} bytes, then stops reading), and hands
    everything to its transfer.
    """

    transport: Any

    def __init__(self, made: Deferred[DataChannel]) -> None:
        self.whenMade = made
        self.handshaken: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.transfer: Any = None
        self.early: list[bytes] = []
        self._earlySize = 0
        self.gone = False

    def connectionMade(self) -> None:
        self.transport.bufferSize = RECEIVE_CHUNK
        made, self.whenMade = self.whenMade, Deferred()
        if not made.called:
            made.callback(self)

    def handshakeCompleted(self) -> None:
        if not self.handshaken.called:
            self.handshaken.callback(None)

    def dataReceived(self, data: bytes) -> None:
        if self.transfer is not None:
            self.transfer.dataReceived(data)
            return
        self.early.append(data)
        self._earlySize += len(data)
        if self._earlySize > EARLY_LIMIT:
            self.transport.pauseProducing()

    def connectionLost(self, reason: Failure = _LOST) -> None:  # type: ignore[override]
        self.gone = True
        self.reason = reason
        if not self.handshaken.called:
            self.handshaken.errback(reason)
            self.handshaken.addErrback(lambda _: None)
        if self.transfer is not None:
            self.transfer.connectionLost(reason)
        self.lost.callback(None)

    def close(self) -> None:
        """
        Close after what was written.
        """
        if not self.gone:
            self.transport.loseConnection()

    def abort(self) -> None:
        """
        Drop the connection now.
        """
        if not self.gone:
            self.transport.abortConnection()


class _ChannelFactory(Factory):
    def __init__(self, made: Deferred[DataChannel]) -> None:
        self.made = made

    def buildProtocol(self, addr: IAddress | None) -> DataChannel:
        return DataChannel(self.made)


class PassivePort(Factory):
    """
    A PASV/EPSV listener: the first connection from C{peerHost} is the data
    connection; the port closes then, at L{close}, or after C{timeout}.

    @ivar port: the port number listened on.
    """

    log = Logger()
    noisy = False

    def __init__(
        self,
        reactor: Any,
        host: str,
        peerHost: str,
        *,
        wrap: Callable[[], Any] | None,
        ports: tuple[int, int] | None,
        timeout: float,
    ) -> None:
        """
        @param wrap: returns the TLS wrapping factory to use for the
            connection (C{None}, or returning C{None}: in the clear), asked
            when the connection arrives.
        @param ports: the passive range (inclusive), or C{None} for any.
        @raise CannotListenError: when every port of the range is taken.
        """
        self.reactor = reactor
        self.peerHost = peerHost
        self.wrap = wrap
        self.made: Deferred[DataChannel] = Deferred()
        self._channels = _ChannelFactory(self.made)
        self._listening: IListeningPort | None = self._listen(host, ports)
        self.port: int = self._listening.getHost().port  # type: ignore[attr-defined]
        self._timer = reactor.callLater(timeout, self._timedOut)

    def _listen(self, host: str, ports: tuple[int, int] | None) -> IListeningPort:
        # The write-through transports of every listener: sends at once, and
        # TCP_NODELAY (a transfer's last TLS records do not wait for the
        # client's delayed ACK).
        reactor = WriteThroughReactor(self.reactor)
        if ports is None:
            return reactor.listenTCP(0, self, interface=host)
        low, high = ports
        start = random.randint(low, high)  # noqa: S311 (spreading, not secrecy)
        for offset in range(high - low + 1):
            number = low + (start - low + offset) % (high - low + 1)
            try:
                return reactor.listenTCP(number, self, interface=host)
            except CannotListenError:
                continue
        raise CannotListenError(host, f"{low}-{high}", "every passive port is taken")

    def buildProtocol(self, addr: IAddress | None) -> Any:
        if not sameHost(getattr(addr, "host", ""), self.peerHost):
            self.log.warn(
                "np-ftp: refused a data connection from {peer}: not the control "
                "connection's address {expected}",
                peer=describe(addr),
                expected=self.peerHost,
            )
            return None
        if self._listening is None or self.made.called:
            return None
        self._stop()
        wrapper = self.wrap() if self.wrap is not None else None
        if wrapper is not None:
            return wrapper(self._channels).buildProtocol(addr)
        return self._channels.buildProtocol(addr)

    def _timedOut(self) -> None:
        self._stop()
        if not self.made.called:
            self.made.errback(CancelledError("no data connection in time"))

    def _stop(self) -> None:
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.stopListening()
        if self._timer.active():
            self._timer.cancel()

    def connect(self) -> Deferred[DataChannel]:
        """
        The data connection, when it arrives.
        """
        return self.made

    def close(self) -> None:
        """
        Stop waiting for the data connection.
        """
        self._stop()
        if not self.made.called:
            self.made.errback(CancelledError("closed"))
            self.made.addErrback(lambda _: None)


class _ActiveFactory(ClientFactory):
    noisy = False

    def __init__(self, made: Deferred[DataChannel]) -> None:
        self.made = made

    def buildProtocol(self, addr: IAddress | None) -> DataChannel:
        return DataChannel(self.made)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.made.called:
            self.made.errback(reason)


class ActivePort:
    """
    A PORT/EPRT address, connected to at the transfer.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        *,
        bindHost: str,
        wrap: Callable[[], Any] | None,
        timeout: float,
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.bindHost = bindHost
        self.wrap = wrap
        self.timeout = timeout
        self._connector: Any = None

    def connect(self) -> Deferred[DataChannel]:
        """
        Connect to the client's address; the data connection.
        """
        made: Deferred[DataChannel] = Deferred()
        factory: Any = _ActiveFactory(made)
        wrapper = self.wrap() if self.wrap is not None else None
        if wrapper is not None:
            factory = wrapper(factory)
        self._connector = self.reactor.connectTCP(
            self.host,
            self.port,
            factory,
            timeout=self.timeout,
            bindAddress=(self.bindHost, 0),
        )
        return made

    def close(self) -> None:
        """
        Stop connecting.
        """
        connector, self._connector = self._connector, None
        if connector is not None and getattr(connector, "state", "") == "connecting":
            connector.stopConnecting()


@implementer(IPushProducer)
class Sender:
    """
    Sends what C{read} gives (a chunk, C{b""} at the end) over a data
    connection, asking for the next chunk only while its transport is not
    paused, and one chunk ahead: the next read runs while the chunk just
    read is being sent, so the socket does not wait for the pool.  L{done}
    fires only once no read is running, so the file can be closed then.
    """

    def __init__(
        self,
        channel: DataChannel,
        read: Callable[[], Deferred[bytes]],
        convert: Callable[[bytes], bytes] | None = None,
        progress: Callable[[], None] | None = None,
    ) -> None:
        self.channel = channel
        self.read = read
        self.convert = convert
        self.progress = progress
        self.sent = 0
        self.done: Deferred[int] = Deferred()
        self._paused = False
        self._waiting = False
        self._stopped = False
        self._ahead: Deferred[bytes] | None = None
        self._reads = 0
        self._whenIdle: Callable[[], None] | None = None

    def start(self) -> Deferred[int]:
        """
        Send everything; fires with the byte count once the last byte was
        written (the connection is then closed by the caller).
        """
        self.channel.transfer = self
        self.channel.transport.registerProducer(self, True)
        self._next()
        return self.done

    def _read(self) -> Deferred[bytes]:
        d = self.read()
        if not d.called:
            self._reads += 1
            d.addBoth(self._readEnded)
        return d

    def _readEnded(self, result: Any) -> Any:
        self._reads -= 1
        if not self._reads and self._whenIdle is not None:
            idle, self._whenIdle = self._whenIdle, None
            idle()
        return result

    def _next(self) -> None:
        while not self._stopped:
            if self._paused:
                self._waiting = True
                return
            d, self._ahead = self._ahead or self._read(), None
            if not d.called:
                d.addCallbacks(self._cbRead, self._ebRead)
                d.addCallback(lambda more: self._next() if more else None)
                return
            result: list[Any] = []
            d.addBoth(result.append)
            if isinstance(result[0], Failure):
                self._ebRead(result[0])
                return
            if not self._cbRead(result[0]):
                return

    def _cbRead(self, data: bytes) -> bool:
        if self._stopped:
            return False
        if not data:
            self._finish()
            return False
        if self._ahead is None:
            self._ahead = self._read()
        if self.convert is not None:
            data = self.convert(data)
        self.sent += len(data)
        self.channel.transport.write(data)
        if self.progress is not None:
            self.progress()
        return True

    def _ebRead(self, reason: Failure) -> None:
        self._stopped = True
        self._unregister()
        self._settle(lambda: self.done.errback(reason))

    def _finish(self) -> None:
        self._stopped = True
        self._unregister()
        self._settle(lambda: self.done.callback(self.sent))

    def _settle(self, fire: Callable[[], None]) -> None:
        """
        C{fire} L{done} (once) when no read is running any more.
        """
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.addErrback(lambda _: None)

        def once() -> None:
            if not self.done.called:
                fire()

        if self._reads:
            self._whenIdle = once
        else:
            once()

    def _unregister(self) -> None:
        if not self.channel.gone:
            self.channel.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._waiting:
            self._waiting = False
            self._next()

    def stopProducing(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._settle(
                lambda: self.done.errback(ConnectionLost("data connection lost"))
            )

    def dataReceived(self, data: bytes) -> None:
        """
        A download's peer has nothing to say; ignore it.
        """

    def connectionLost(self, reason: Failure) -> None:
        self.stopProducing()


@implementer(IPullProducer)
class FileSender:
    """
    Sends C{file} from C{offset} to C{end} (its size when opened; less if
    it shrinks) over a data connection in the clear with C{os.sendfile}:
    the kernel copies from the page cache to the socket, as much as the
    socket's buffer takes per call, so nothing is buffered in the process
    however slowly the peer reads.

    It is the transport's pull producer: Twisted asks it for more
    (C{resumeProducing}) once the transport is writable with nothing
    buffered, which C{startWriting} after each call arranges.  Each call runs
    in C{inPool} (a cold page cache reads the disk there, never on the
    reactor) on a duplicate of the socket's descriptor, so a connection
    closed meanwhile never leaves the call writing to a reused descriptor
    number; L{done} fires only once no call is running, so the file can be
    closed then.

    @ivar fallback: what sends the file instead if C{sendfile} refuses the
        pair at the first call (a file system without it).
    """

    def __init__(
        self,
        channel: DataChannel,
        file: Any,
        offset: int,
        end: int,
        inPool: Callable[..., Deferred[Any]],
        progress: Callable[[], None] | None = None,
        fallback: Callable[[], Deferred[int]] | None = None,
    ) -> None:
        self.channel = channel
        self.file = file
        self.offset = offset
        self.end = end
        self.inPool = inPool
        self.progress = progress
        self.fallback = fallback
        self.sent = 0
        self.done: Deferred[int] = Deferred()
        self._socket = -1
        self._busy = False
        self._stopped = False
        self._outcome: Failure | None = None

    def start(self) -> Deferred[int]:
        """
        Send the file; fires with the byte count once the last byte was
        handed to the kernel (the caller then closes the connection).
        """
        self.channel.transfer = self
        transport = self.channel.transport
        self._socket = os.dup(transport.getHandle().fileno())
        # A pull producer is asked for its first data at once.
        transport.registerProducer(self, False)
        return self.done

    def _send(self) -> int | None:
        # In the pool.  None: the socket's buffer is full.
        count = min(SENDFILE_CHUNK, self.end - self.offset)
        try:
            return os.sendfile(self._socket, self.file.fileno(), self.offset, count)
        except BlockingIOError:
            return None

    def resumeProducing(self) -> None:
        if self._busy or self._stopped:
            return
        if self.offset >= self.end:
            self._stopped = True
            self._end()
            return
        self._busy = True
        self.inPool(self._send).addCallbacks(self._sent, self._failed)

    def _sent(self, count: int | None) -> None:
        self._busy = False
        if count:
            self.offset += count
            self.sent += count
            if self.progress is not None:
                self.progress()
        if count == 0 or self.offset >= self.end:
            # All of it is the kernel's, even if the peer, having read it,
            # closed before this call's answer came back.
            self._stopped = True
            self._outcome = None
            self._end()
            return
        if self._stopped:
            self._end()
            return
        # Writable with nothing buffered: Twisted calls resumeProducing.
        self.channel.transport.startWriting()

    def _failed(self, reason: Failure) -> None:
        self._busy = False
        error = getattr(reason.value, "errno", None)
        if (
            not self._stopped
            and not self.sent
            and error in _NO_SENDFILE
            and self.fallback is not None
        ):
            self._stopped = True
            self._release()
            self.fallback().chainDeferred(self.done)
            return
        if self._outcome is None:
            self._outcome = reason
        self._stopped = True
        self._end()

    def _release(self) -> None:
        if not self.channel.gone:
            self.channel.transport.unregisterProducer()
        if self._socket >= 0:
            os.close(self._socket)
            self._socket = -1

    def _end(self) -> None:
        self._release()
        if self.done.called:
            return
        if self._outcome is not None:
            self.done.errback(self._outcome)
        else:
            self.done.callback(self.sent)

    def stopProducing(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._outcome = Failure(ConnectionLost("data connection lost"))
        if not self._busy:
            self._end()

    def dataReceived(self, data: bytes) -> None:
        """
        A download's peer has nothing to say; ignore it.
        """

    def connectionLost(self, reason: Failure) -> None:
        self.stopProducing()


class Receiver:
    """
    Writes what a data connection brings with C{write} (run in the pool),
    in batches of L{WRITE_BATCH} (one at a time; the last may be smaller);
    the socket is not read while more than
    L{RECEIVE_HIGH} bytes wait.  Fires L{done} with the byte count once the
    peer closed and everything is written.
    """

    def __init__(
        self,
        channel: DataChannel,
        write: Callable[[bytes], Deferred[Any]],
        convert: FromNetwork | None = None,
        progress: Callable[[], None] | None = None,
    ) -> None:
        self.channel = channel
        self.write = write
        self.convert = convert
        self.progress = progress
        self.received = 0
        self.done: Deferred[int] = Deferred()
        self._pending: list[bytes] = []
        self._pendingSize = 0
        self._writing = False
        self._paused = False
        self._ended = False
        self._failed = False

    def start(self) -> Deferred[int]:
        channel = self.channel
        channel.transfer = self
        early, channel.early = channel.early, []
        for data in early:
            self.dataReceived(data)
        if channel.gone:
            self.connectionLost(Failure(ConnectionLost()))
        elif not self._paused:
            channel.transport.resumeProducing()
        return self.done

    def dataReceived(self, data: bytes) -> None:
        if self._failed:
            return
        self.received += len(data)
        if self.convert is not None:
            data = self.convert(data)
        self._pending.append(data)
        self._pendingSize += len(data)
        if self._pendingSize > RECEIVE_HIGH and not self._paused:
            self._paused = True
            self.channel.transport.pauseProducing()
        if self.progress is not None:
            self.progress()
        if not self._writing and self._pendingSize >= WRITE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._failed:
            return
        if not self._pending:
            self._writing = False
            if self._ended:
                self._finish()
            return
        batch = b"".join(self._pending)
        self._pending, self._pendingSize = [], 0
        self._writing = True
        if self._paused and not self.channel.gone:
            self._paused = False
            self.channel.transport.resumeProducing()
        d = self.write(batch)
        d.addCallbacks(lambda _: self._written(), self._ebWrite)

    def _written(self) -> None:
        self._writing = False
        if self._ended or self._pendingSize >= WRITE_BATCH:
            self._flush()

    def _ebWrite(self, reason: Failure) -> None:
        self._failed = True
        self._writing = False
        self.channel.abort()
        if not self.done.called:
            self.done.errback(reason)

    def connectionLost(self, reason: Failure) -> None:
        if self._ended:
            return
        self._ended = True
        if self.convert is not None:
            rest = self.convert.flush()
            if rest:
                self._pending.append(rest)
        if not self._writing:
            self._flush()

    def _finish(self) -> None:
        if not self.done.called:
            self.done.callback(self.received)


def memoryReader(data: bytes, chunk: int = 64 * 1024) -> Callable[[], Deferred[bytes]]:
    """
    A C{read} for L{Sender} over bytes already in memory (a listing).
    """
    view = memoryview(data)
    position = 0

    def read() -> Deferred[bytes]:
        nonlocal position
        piece = bytes(view[position : position + chunk])
        position += len(piece)
        return succeed(piece)

    return read
