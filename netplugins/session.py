"""
The session discipline every netplugins stream protocol follows, so that a
client costs bounded memory and loses its slot at its deadlines:

  - B{read only while the output drains}: a session registers a L{Discipline}
    as its transport's streaming producer.  Once the transport holds more than
    its C{bufferSize} (64 KiB) of unsent output it pauses the producer, and
    the session stops reading from the socket and stops taking commands from
    what it already read, until the peer has read enough for the transport to
    resume it.  A client that pipelines commands and never reads gets at most
    one reply over the watermark queued, however much it sends.
  - B{one command at a time}: a command that waits for a Deferred (a login, a
    store operation) holds reading the same way, for its own reason, so the
    two never resume each other's pause.  A command that writes a large answer
    in batches writes the next one when L{Discipline.whenWritable} fires.
  - B{deadlines end in an abort}: L{Discipline.close} closes politely, letting
    the output already written go out, and aborts the connection if it is not
    gone C{grace} seconds later.  A TLS transport with unsent data never closes
    by itself, and a peer that stopped reading never takes the rest; a session
    whose output is already backed up is aborted at once.

Use it from a protocol whose own C{pause} stops both the socket and the
command parsing (L{twisted.protocols.basic.LineReceiver.pauseProducing} does)::

    def connectionMade(self):
        self.discipline = Discipline(
            self.transport, reactor,
            pause=lambda: LineReceiver.pauseProducing(self),
            resume=lambda: LineReceiver.resumeProducing(self),
        )

    def connectionLost(self, reason):
        self.discipline.lost()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from netplugins.addresses import describe
from netplugins.limits.settings import DEFAULT_CLOSE_GRACE
from netplugins.tls.handshake import handshakeDone

#: Seconds a politely closed connection gets to send what is queued before it
#: is aborted (the default of C{--close-grace}).
CLOSE_GRACE = DEFAULT_CLOSE_GRACE

#: The reason reading is held while the transport's output is over its
#: watermark.
OUTPUT = "output"

#: The reason reading is held while a command waits for its result.
COMMAND = "command"


def closeWithin(
    transport: Any, grace: float = CLOSE_GRACE, clock: IReactorTime | None = None
) -> IDelayedCall:
    """
    Close C{transport} after what was written, and abort it if it is still
    open C{grace} seconds later: for protocols that close once, on a refusal,
    without a L{Discipline}.  Cancel the returned call in C{connectionLost}.
    """
    if clock is None:
        from twisted.internet import reactor

        clock = reactor  # type: ignore[assignment]
    assert clock is not None
    # A TLS transport shuts down only once no producer is registered (np-echo
    # and np-zen register themselves).
    try:
        transport.unregisterProducer()
    except RuntimeError:
        pass  # a test transport with no producer registered
    transport.loseConnection()
    return clock.callLater(grace, _abortLingering, transport, grace)


def _abortLingering(transport: Any, grace: float) -> None:
    if getattr(transport, "disconnected", False):
        return
    Discipline.log.info(
        "Aborting connection from {peer}: not closed {grace:g} s after it was",
        peer=describe(transport.getPeer()),
        grace=grace,
    )
    transport.abortConnection()


def cancelCall(call: IDelayedCall | None) -> None:
    """
    Cancel C{call} if it is still pending.
    """
    if call is not None and call.active():
        call.cancel()


class Deadlines:
    """
    A session's named deadlines (C{"idle"}, C{"preauth"}, C{"data"}, ...):
    each is armed for some seconds (arming it again starts it over),
    disarmed, or calls C{expired(name)} when it passes; L{cancelAll} when
    the connection is lost.
    """

    def __init__(self, clock: IReactorTime, expired: Callable[[str], object]):
        self._clock = clock
        self._expired = expired
        self._calls: dict[str, IDelayedCall] = {}

    def __contains__(self, name: str) -> bool:
        """
        Whether deadline C{name} is armed and has not passed.
        """
        call = self._calls.get(name)
        return call is not None and call.active()

    def arm(self, name: str, seconds: float) -> None:
        """
        Call C{expired(name)} C{seconds} from now, unless armed again or
        disarmed first.
        """
        call = self._calls.get(name)
        if call is not None and call.active():
            call.reset(seconds)
        else:
            self._calls[name] = self._clock.callLater(seconds, self._expired, name)

    def disarm(self, name: str) -> None:
        """
        Forget deadline C{name}.
        """
        cancelCall(self._calls.pop(name, None))

    def cancelAll(self) -> None:
        """
        Forget every deadline.
        """
        for call in self._calls.values():
            cancelCall(call)
        self._calls.clear()


@implementer(IPushProducer)
class Discipline:
    """
    One connection's reading gate and closer.  See the module docstring.

    @ivar holds: the reasons reading is held now (empty: reading).
    @ivar closing: whether L{close} or L{abort} was called.
    """

    log = Logger()

    def __init__(
        self,
        transport: Any,
        clock: IReactorTime,
        *,
        pause: Callable[[], None],
        resume: Callable[[], None],
        grace: float = CLOSE_GRACE,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._pause = pause
        self._resume = resume
        self._grace = grace
        self.holds: set[str] = set()
        self.closing = False
        self._abortCall: IDelayedCall | None = None
        self._calls: list[IDelayedCall] = []
        self._writable: list[Deferred[None]] = []
        self._lost = False
        transport.registerProducer(self, True)

    # Reading

    def hold(self, reason: str) -> None:
        """
        Stop reading for C{reason} (until L{release} of the same reason).
        """
        if reason in self.holds:
            return
        self.holds.add(reason)
        if len(self.holds) == 1 and not self._lost:
            self._pause()

    def release(self, reason: str) -> None:
        """
        Drop C{reason}; reading resumes when no other reason holds it.
        """
        if reason not in self.holds:
            return
        self.holds.discard(reason)
        if not self.holds and not self._lost and not self.closing:
            self._resume()

    @property
    def reading(self) -> bool:
        """
        Whether the session takes its next command now.
        """
        return not self.holds and not self.closing

    @property
    def outputBlocked(self) -> bool:
        """
        Whether the transport holds more unsent output than its watermark.
        """
        return OUTPUT in self.holds

    # IPushProducer, for the transport

    def whenWritable(self) -> Deferred[None]:
        """
        A Deferred that fires once the transport's output is under its
        watermark (at once if it is, or if the connection is closing or
        gone): a command writing its answer in batches waits on it between
        batches, while its own hold keeps the next command unread.
        """
        if not self.outputBlocked or self.closing or self._lost:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._writable.append(d)
        return d

    def _fireWritable(self) -> None:
        waiting, self._writable = self._writable, []
        for d in waiting:
            d.callback(None)

    def pauseProducing(self) -> None:
        # A TLS transport also pauses its producer for what is written before
        # its handshake (a greeting); stopping reads then would stall the
        # handshake itself.  Before the handshake the peer can send no
        # command, so there is nothing to hold back.
        if handshakeDone(self._transport):
            self.hold(OUTPUT)

    def resumeProducing(self) -> None:
        self.release(OUTPUT)
        self._fireWritable()

    def stopProducing(self) -> None:
        self.lost()

    # Timers

    def callLater(self, seconds: float, f: Callable[..., object], *args: Any) -> None:
        """
        Call C{f(*args)} in C{seconds} unless the connection is gone by then.
        """
        self._calls = [call for call in self._calls if call.active()]
        self._calls.append(self._clock.callLater(seconds, f, *args))

    # Closing

    def close(self, why: str = "") -> None:
        """
        Close after the output already written, aborting the connection if it
        is not gone within the grace period; at once if the peer is not
        reading.

        @param why: logged with the peer when the connection has to be
            aborted.
        """
        if self.closing or self._lost:
            return
        self.closing = True
        self._fireWritable()
        if self.outputBlocked:
            self.abort(why or "closed while its output was backed up")
            return
        # A TLS transport waits for its producer to go before it shuts down.
        self._transport.unregisterProducer()
        self._transport.loseConnection()
        if not self._lost:
            self._abortCall = self._clock.callLater(
                self._grace, self.abort, why or "not closed within the grace period"
            )

    def abort(self, why: str = "") -> None:
        """
        Drop the connection now, whatever is still queued.
        """
        self._abortCall = None
        if self._lost:
            return
        self.closing = True
        self.log.info(
            "Aborting connection from {peer}: {why}",
            peer=describe(self._transport.getPeer()),
            why=why or "aborted",
        )
        self._transport.abortConnection()

    def lost(self) -> None:
        """
        The connection is gone: cancel the pending abort.  Call from the
        protocol's C{connectionLost}.
        """
        self._lost = True
        self._fireWritable()
        calls = [*self._calls, self._abortCall]
        self._calls, self._abortCall = [], None
        for call in calls:
            if call is not None and call.active():
                call.cancel()
