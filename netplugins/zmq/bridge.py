"""
ZeroMQ sockets on the reactor.

A ZeroMQ socket is not a file descriptor: pyzmq's C{zmq.FD} is a signalling
descriptor that becomes readable when the socket's state I{may} have changed,
and it is edge-triggered.  Any C{send} or C{recv} (and reading C{zmq.EVENTS})
processes the socket's pending commands and may consume the signal, so a
reader that waits for the descriptor after doing work can sleep forever while
messages wait (txZMQ lost messages this way).  The rule this module keeps:

  - the descriptor only says "look"; what to do comes from C{zmq.EVENTS};
  - after every send and receive, work goes on until it would block
    (C{zmq.Again}) and C{zmq.EVENTS} is read again before going back to the
    reactor: the descriptor is trusted to wake us only after that;
  - work is done in bounded turns; a turn that ends with work left schedules
    the next one itself, since no wake-up will come for it.

L{SocketReader} is the reactor's reader for one socket's descriptor;
L{Drainer} runs a turn function by that rule for one or more sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import zmq
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

#: Messages moved in one turn before the reactor gets control back.
DEFAULT_BUDGET = 2000
#: Seconds before a turn that raised is tried again.
RETRY_DELAY = 0.1


def _reactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor
    return reactor


def events(socket: zmq.Socket[Any]) -> int:
    """
    The socket's C{zmq.EVENTS} (C{zmq.POLLIN}, C{zmq.POLLOUT}): reading it
    processes the socket's pending commands and re-arms its descriptor.
    """
    return cast(int, socket.getsockopt(zmq.EVENTS))


@implementer(IReadDescriptor)
class SocketReader:
    """
    The reactor's reader for a ZeroMQ socket's C{zmq.FD}: a readable
    descriptor calls C{wake}, which must follow the rule of this module.
    """

    def __init__(self, socket: zmq.Socket[Any], wake: Callable[[], None]) -> None:
        self.socket = socket
        self._fd = int(socket.getsockopt(zmq.FD))
        self._wake = wake

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        # Nothing is read from the descriptor itself: reading zmq.EVENTS
        # (which the wake's turn does) is what resets it.
        self._wake()

    def connectionLost(self, reason: Failure) -> None:
        pass

    def logPrefix(self) -> str:
        return "zmq"


class Drainer:
    """
    Runs C{turn(budget)} for a set of ZeroMQ sockets, each watched by a
    L{SocketReader}, by the edge-trigger rule.

    C{turn} does at most C{budget} units of work (sends and receives, each
    with C{zmq.NOBLOCK}) and returns C{True} if it stopped for the budget,
    C{False} once it has read C{zmq.EVENTS} on every socket after its last
    send or receive and found nothing it can do now.  A wake during a turn
    (a callback that sent something) runs one more turn after it.
    """

    log = Logger()

    def __init__(
        self,
        turn: Callable[[int], bool],
        reactor: Any = None,
        budget: int = DEFAULT_BUDGET,
    ) -> None:
        self._turn = turn
        self._reactor = _reactor(reactor)
        self.budget = budget
        self._readers: list[SocketReader] = []
        self._busy = False
        self._again = False
        self._next: IDelayedCall | None = None
        self.running = False

    def watch(self, *sockets: zmq.Socket[Any]) -> None:
        """
        Wake on these sockets' descriptors (from L{start} on).
        """
        for socket in sockets:
            reader = SocketReader(socket, self.wake)
            self._readers.append(reader)
            if self.running:
                self._reactor.addReader(reader)

    def start(self) -> None:
        """
        Add the readers to the reactor and run a first turn: messages may
        have arrived before anyone watched.
        """
        self.running = True
        for reader in self._readers:
            self._reactor.addReader(reader)
        self.wake()

    def stop(self) -> None:
        """
        Remove the readers; no turn runs after this.
        """
        self.running = False
        for reader in self._readers:
            self._reactor.removeReader(reader)
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None

    def wake(self) -> None:
        """
        Run turns until one finds nothing to do, or schedule the next turn
        if the budget ran out.  Call it after sending from outside a turn.
        """
        if not self.running:
            return
        if self._busy:
            self._again = True
            return
        self._busy = True
        try:
            while True:
                self._again = False
                try:
                    more = self._turn(self.budget)
                except Exception:
                    # Try again a little later: the descriptor may never
                    # wake us for what is still waiting.
                    self.log.failure("ZeroMQ turn failed")
                    self._schedule(RETRY_DELAY)
                    return
                if more:
                    self._schedule(0)
                    return
                if not self._again:
                    return
        finally:
            self._busy = False

    def _schedule(self, delay: float) -> None:
        if self._next is None or not self._next.active():
            self._next = self._reactor.callLater(delay, self._continue)

    def _continue(self) -> None:
        self._next = None
        self.wake()
