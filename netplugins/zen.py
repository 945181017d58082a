"""
Zen: the question-and-answer protocol of Foundations of Python Network
Programming, chapter 7, byte for byte.

A client sends questions ending in C{?}, such as C{b"Beautiful is better
than?"}, and reads each answer up to its C{.}: C{b"Ugly."}.  A question the
server does not know gets C{b"Error: unknown aphorism."}.  Unlike the book's
servers this one also splits questions pipelined in one write, answering them
in order, and ignores whitespace before a question.

A question longer than the factory's C{maxQuestionSize} bytes (counting the
whitespace before it and its C{?}) closes the connection with a log line
naming the peer.  The protocol is a streaming producer for its transport: while
a client is not reading its answers, the server stops answering and stops
reading, so pipelining cannot grow its memory.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netplugins.session import CLOSE_GRACE, cancelCall, closeWithin

DEFAULT_MAX_QUESTION_SIZE = 1024

# The book's three pairs first; then the other "X is better than Y." lines of
# "import this" in the same style.
APHORISMS: dict[bytes, bytes] = {
    b"Beautiful is better than?": b"Ugly.",
    b"Explicit is better than?": b"Implicit.",
    b"Simple is better than?": b"Complex.",
    b"Complex is better than?": b"Complicated.",
    b"Flat is better than?": b"Nested.",
    b"Sparse is better than?": b"Dense.",
    b"Now is better than?": b"Never.",
}
UNKNOWN = b"Error: unknown aphorism."


def answer(question: bytes) -> bytes:
    """
    The answer to C{question} (with its C{?}), or the book's error reply.
    """
    return APHORISMS.get(question, UNKNOWN)


@implementer(IPushProducer)
class Zen(Protocol):
    """
    Answer each C{?}-terminated question in order, pausing while the
    transport's write buffer is full.
    """

    log = Logger()
    transport: Any
    factory: Any
    _closing: IDelayedCall | None = None

    def __init__(self, maxQuestionSize: int = DEFAULT_MAX_QUESTION_SIZE):
        self.maxQuestionSize = maxQuestionSize
        self._buffer = b""
        self._paused = False
        self._rejected = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        if self._rejected:
            return
        if not self._buffer and not self._paused and len(data) <= self.maxQuestionSize:
            # The common read: exactly one known question.  Every known
            # question has its one C{?} last and no whitespace before it, so
            # a read equal to one is a whole question with nothing after it.
            reply = APHORISMS.get(data)
            if reply is not None:
                self.transport.write(reply)
                return
        self._buffer += data
        self._answerQuestions()

    def _answerQuestions(self) -> None:
        buffer, start = self._buffer, 0
        # Scan by offset so a read full of questions is not copied per question.
        while not self._paused:
            end = buffer.find(b"?", start)
            if end == -1:
                break
            if end + 1 - start > self.maxQuestionSize:
                self._tooLong(end + 1 - start)
                return
            self.transport.write(answer(buffer[start : end + 1].lstrip()))
            start = end + 1
        self._buffer = buffer[start:]
        # While paused the buffer holds answered-later questions, bounded by
        # what one read delivered; only an unfinished question is limited here.
        if not self._paused and len(self._buffer) > self.maxQuestionSize:
            self._tooLong(len(self._buffer))

    def _tooLong(self, length: int) -> None:
        self._rejected = True
        self._buffer = b""
        self.log.warn(
            "np-zen: closing connection from {peer}: question of {length} bytes "
            "or more exceeds {maxQuestionSize}",
            peer=str(self.transport.getPeer()),
            length=length,
            maxQuestionSize=self.maxQuestionSize,
        )
        self._closing = closeWithin(
            self.transport, self.factory.closeGrace, self.factory.reactor
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        cancelCall(self._closing)

    def pauseProducing(self) -> None:
        self._paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self.transport.resumeProducing()
        if not self._rejected:
            self._answerQuestions()

    def stopProducing(self) -> None:
        self._paused = True


class ZenFactory(Factory):
    """
    Builds L{Zen} protocols.

    @ivar maxQuestionSize: the longest question accepted, in bytes.
    @ivar closeGrace: seconds a refused connection gets to close before it is
        aborted.
    @ivar reactor: times that grace (the global reactor when C{None}).
    """

    closeGrace = CLOSE_GRACE
    reactor: Any = None

    def __init__(self, maxQuestionSize: int = DEFAULT_MAX_QUESTION_SIZE):
        if maxQuestionSize <= 0:
            raise ValueError(
                f"maximum question size must be positive, not {maxQuestionSize}"
            )
        self.maxQuestionSize = maxQuestionSize

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        protocol = Zen(self.maxQuestionSize)
        protocol.factory = self
        return protocol
