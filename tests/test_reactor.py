"""
Tests for L{netplugins.reactor}: the lean epoll reactor serves connections
and keeps legacy log prefixes, without a context pushed per event.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.python import context, log
from twisted.trial.unittest import SynchronousTestCase

from netplugins.reactor import LeanEPollReactor
from netplugins.transport import listenTCP


class Talker(Protocol):
    """
    Logs with legacy log.msg, echoes, and fails on C{boom}.
    """

    def dataReceived(self, data: bytes) -> None:
        log.msg("got data")
        if data == b"boom":
            raise RuntimeError("boom")
        self.transport.write(data)  # type: ignore[union-attr]


class LeanReactorTests(SynchronousTestCase):
    """
    A private lean reactor, iterated by hand.
    """

    def setUp(self) -> None:
        self.reactor = LeanEPollReactor()
        self.addCleanup(self.reactor._poller.close)
        self.events: list[dict[str, Any]] = []
        log.addObserver(self.events.append)
        self.addCleanup(log.removeObserver, self.events.append)
        # The reactor adds an entry to this thread's context stack: undo it.
        contexts = context.theContextTracker.currentContext().contexts
        saved = list(contexts)
        self.addCleanup(contexts.__setitem__, slice(None), saved)
        port = listenTCP(
            self.reactor, 0, Factory.forProtocol(Talker), interface="127.0.0.1"
        )
        self.addCleanup(port.connectionLost, None)
        self.client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(self.client.close)
        self.client.settimeout(5)

    def spin(self, times: int = 5) -> None:
        for _ in range(times):
            self.reactor.doPoll(0.05)

    def test_echoWithPrefix(self) -> None:
        """Data echoes, and log.msg in dataReceived carries the log prefix."""
        # Data echoes, and log.msg in dataReceived carries the connection's log prefix,
        # as on Twisted's reactor.
        self.client.sendall(b"hi")
        self.spin()
        self.assertEqual(self.client.recv(10), b"hi")
        [event] = [e for e in self.events if e.get("message") == ("got data",)]
        self.assertEqual(event["system"], "Talker,0,127.0.0.1")

    def test_prefixOnlyWhileServing(self) -> None:
        """Outside an event, log.msg says system '-' again."""
        self.client.sendall(b"hi")
        self.spin()
        log.msg("outside")
        [event] = [e for e in self.events if e.get("message") == ("outside",)]
        self.assertEqual(event["system"], "-")

    def test_errorLoggedAndDisconnected(self) -> None:
        """An exception in dataReceived is logged with the prefix and disconnects."""
        self.client.sendall(b"boom")
        self.spin()
        self.assertEqual(self.client.recv(10), b"")
        [error] = [e for e in self.events if e.get("isError")]
        self.assertEqual(error["system"], "Talker,0,127.0.0.1")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
