"""
A lean epoll reactor: Twisted's, without a log context pushed per event.

Twisted's epoll reactor runs every read and write event inside
C{log.callWithLogger}, which asks the selectable for its log prefix and pushes
a context (two dictionaries and four calls) so that legacy C{log.msg} calls
made while handling the event say which connection they came from.  Here the
reactor only notes which selectable it is serving; a lookup entry at the
bottom of the context stack turns that into the same C{system} prefix, and
only when something actually logs.

Install with C{twistd --reactor np-epoll ...} or L{install}.  The internals
of Twisted's epoll reactor it uses are reached through
L{netplugins.twistedinternals}.
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLIN
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.python import context, log

from netplugins.twistedinternals import (
    NO_FILE_DESCRIPTOR,
    disconnectSelectable,
    doReadOrWrite,
    epollOf,
    selectablesOf,
)


class _ServingContext(dict):  # type: ignore[type-arg]
    """
    The context entry that gives legacy log events the C{system} of the
    selectable the reactor is serving, if any.
    """

    def __init__(self, reactor: LeanEPollReactor):
        super().__init__()
        self.reactor = reactor

    def __getitem__(self, key: Any) -> Any:
        selectable = self.reactor._serving
        if key is not log.ILogContext or selectable is None:
            raise KeyError(key)
        try:
            prefix = selectable.logPrefix()
        except Exception:
            prefix = "(buggy logPrefix method)"
        return {**context.defaultContextDict[log.ILogContext], "system": prefix}


class LeanEPollReactor(EPollReactor):
    """
    Twisted's epoll reactor with cheaper event dispatch; log prefixes as
    Twisted's.
    """

    _serving: Any = None
    _contextInstalled = False

    def _installContext(self) -> None:
        # The context stack is per thread: install on the reactor's own.
        tracker = context.theContextTracker.currentContext()
        tracker.contexts.insert(1, _ServingContext(self))
        self._contextInstalled = True

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll, and serve each event with the selectable noted for logging.
        """
        if not self._contextInstalled:
            self._installContext()
        selectables = selectablesOf(self)
        try:
            events = epollOf(self).poll(
                -1 if timeout is None else timeout, len(selectables)
            )
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            self._serving = selectable
            try:
                if event == EPOLLIN:
                    # The common case, read-only: Twisted's checks inline.
                    try:
                        why = (
                            selectable.doRead()
                            if selectable.fileno() != -1
                            else NO_FILE_DESCRIPTOR
                        )
                    except BaseException:
                        why = sys.exc_info()[1]
                        log.err()
                    if why:
                        disconnectSelectable(self, selectable, why, True)
                else:
                    doReadOrWrite(self, selectable, fd, event)
            finally:
                self._serving = None

    doIteration = doPoll


def install() -> LeanEPollReactor:
    """
    Install the lean epoll reactor as the global reactor.
    """
    from twisted.internet.main import installReactor

    reactor = LeanEPollReactor()
    installReactor(reactor)
    return reactor
