"""
Echo: every message a client sends comes back to it, in one of four framings.

  - C{raw}: bytes, as they arrive (RFC 862 over a stream);
  - C{line}: each LF-terminated line, terminator included, once it is complete;
  - C{netstring}: each netstring, re-framed as a netstring;
  - C{blocks}: each message behind a 4-byte big-endian length prefix
    (C{struct.Struct('!I')}, as in Foundations of Python Network Programming,
    chapter 5, C{blocks.py}), re-framed the same way.

Two rules hold for every framing.  A message longer than the factory's
C{maxMessageSize} closes the connection with a log line naming the peer, and a
declared length is refused before anything is allocated for it.  And a client
that sends without reading cannot grow the server's memory: each protocol is a
streaming producer for its own transport, so when the echoes pile up in the
write buffer the transport pauses it, which stops reading from the client
until the buffer drains.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver, NetstringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from netplugins.session import CLOSE_GRACE, cancelCall, closeWithin
from netplugins.twistedinternals import discardUnparsed

FRAMINGS = ("raw", "line", "netstring", "blocks")
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
_LF = b"\n"


@implementer(IPushProducer)
class _PausesReading:
    """
    The streaming producer of its own transport: when the echoes fill the
    write buffer the transport pauses it, and it stops reading from the peer
    until the buffer drains.
    """

    transport: Any

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        # The transport is going away; it stops reading on its own.
        pass


class RawEcho(_PausesReading, Protocol):
    """
    Write back every chunk as it arrives: nothing is buffered here, so this
    framing needs no size limit and costs one C{write} per read.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _Limited:
    """
    Closing a connection whose peer broke the framing or the size limit.
    """

    log = Logger()
    transport: Any
    factory: Any
    rejected = False
    _closing: IDelayedCall | None = None

    def reject(self, reason: str, **fields: object) -> None:
        """
        Log C{reason} (a format using C{fields}) naming the peer, then close,
        aborting the connection if it is still open C{factory.closeGrace}
        seconds later.
        """
        self.rejected = True
        self.log.warn(
            "np-echo: closing connection from {peer}: " + reason,
            peer=str(self.transport.getPeer()),
            **fields,
        )
        self._closing = closeWithin(
            self.transport, self.factory.closeGrace, self.factory.reactor
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        cancelCall(self._closing)
        super().connectionLost(reason)  # type: ignore[misc]


class LineEcho(_Limited, _PausesReading, Protocol):
    """
    Echo each complete LF-terminated line (CRLF passes through untouched), in
    one write per read.

    @ivar maxLength: the longest line accepted, terminator included.
    """

    def __init__(self, maxLength: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.maxLength = maxLength
        # The unterminated tail, kept as chunks so that a long line arriving
        # in many reads is joined once, not copied on every read.
        self._pending: list[bytes] = []
        self._pendingLength = 0

    def dataReceived(self, data: bytes) -> None:
        if self.rejected:
            return
        if _LF not in data:
            self._pending.append(data)
            self._pendingLength += len(data)
            if self._pendingLength > self.maxLength:
                self._tooLong(self._pendingLength)
            return
        if self._pending:
            data = b"".join(self._pending) + data
            self._pending = []
            self._pendingLength = 0
        start = 0
        while (end := data.find(_LF, start)) != -1:
            if end + 1 - start > self.maxLength:
                self._tooLong(end + 1 - start)
                return
            start = end + 1
        tail = len(data) - start
        if tail > self.maxLength:
            self._tooLong(tail)
            return
        self.transport.write(data[:start])
        if tail:
            self._pending.append(data[start:])
            self._pendingLength = tail

    def _tooLong(self, length: int) -> None:
        self._pending = []
        self.reject(
            "line of {length} bytes or more exceeds {maxLength}",
            length=length,
            maxLength=self.maxLength,
        )


class NetstringEcho(_Limited, _PausesReading, NetstringReceiver):
    """
    Echo each netstring as a netstring; a malformed one, or one declaring a
    length over C{MAX_LENGTH}, closes the connection.
    """

    def __init__(self, maxLength: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.MAX_LENGTH = maxLength

    def dataReceived(self, data: bytes) -> None:
        if self.rejected:
            return
        super().dataReceived(data)
        # NetstringReceiver closes on a parse error itself, but silently.
        if self.brokenPeer:
            self.reject(
                "malformed netstring or one longer than {maxLength} bytes",
                maxLength=self.MAX_LENGTH,
            )

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


class BlocksEcho(_Limited, Int32StringReceiver):
    """
    Echo each length-prefixed block with the same prefix.  The base class's
    pause support stops parsing, as well as reading, while the transport is
    full.
    """

    def __init__(self, maxLength: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.MAX_LENGTH = maxLength

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        # After a refusal the bad prefix is still buffered; resumeProducing
        # would parse it again.
        if not self.rejected:
            super().dataReceived(data)

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)

    def lengthLimitExceeded(self, length: int) -> None:
        discardUnparsed(self)
        self.reject(
            "block length {length} exceeds {maxLength}",
            length=length,
            maxLength=self.MAX_LENGTH,
        )


_PROTOCOLS: dict[str, Any] = {
    "line": LineEcho,
    "netstring": NetstringEcho,
    "blocks": BlocksEcho,
}


class EchoFactory(Factory):
    """
    Builds echo protocols for one framing.

    @ivar framing: one of L{FRAMINGS}.
    @ivar maxMessageSize: the longest message accepted (not used by C{raw},
        which holds nothing back).
    @ivar closeGrace: seconds a refused connection gets to close before it is
        aborted.
    @ivar reactor: times that grace (the global reactor when C{None}).
    """

    closeGrace = CLOSE_GRACE
    reactor: Any = None

    def __init__(
        self, framing: str = "raw", maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE
    ):
        if framing not in FRAMINGS:
            raise ValueError(
                f"framing must be one of {', '.join(FRAMINGS)}, not {framing!r}"
            )
        if maxMessageSize <= 0:
            raise ValueError(
                f"maximum message size must be positive, not {maxMessageSize}"
            )
        self.framing = framing
        self.maxMessageSize = maxMessageSize

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        protocol: Protocol
        if self.framing == "raw":
            protocol = RawEcho()
        else:
            protocol = _PROTOCOLS[self.framing](self.maxMessageSize)
        protocol.factory = self
        return protocol
