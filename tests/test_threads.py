"""
Tests for L{netplugins.threads}: bounded blocking pools, and the checkers
refusing logins (rather than queueing them) when their pool is full.
"""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import TestCase

from netplugins import threads
from netplugins.cred.htpasswd import HtpasswdChecker
from netplugins.threads import BlockingPool, PoolFullError, blockingPool, deferToPool
from tests.test_htpasswd import ALICE
from tests.test_ldap import _CheckerMixin, _listen, _Silent


class _NotACore:
    """
    A reactor that is no L{IReactorCore}: L{blockingPool} hooks no shutdown.
    """


def _globalReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def busyPool(case: TestCase, maxQueued: int) -> tuple[BlockingPool, threading.Event]:
    """
    A started one-thread pool whose thread is held until the returned event is
    set (at cleanup at the latest).
    """
    reactor = _globalReactor()
    pool = BlockingPool(1, 1, "test-busy")
    pool.start()
    case.addCleanup(pool.stop)
    started, release = threading.Event(), threading.Event()
    case.addCleanup(release.set)

    def hold() -> None:
        started.set()
        release.wait(30)

    deferToPool(reactor, pool, hold)
    # A thread start, not a timing guess: the pool's thread is busy from here.
    case.assertTrue(started.wait(30))
    pool.maxQueued = maxQueued
    return pool, release


class BlockingPoolTests(TestCase):
    @inlineCallbacks
    def test_fullQueueFailsFast(self) -> Any:
        """Past maxQueued waiting calls, deferToPool fails at once: PoolFullError."""
        reactor = _globalReactor()
        pool, release = busyPool(self, maxQueued=2)
        waiting = [deferToPool(reactor, pool, int, n) for n in range(2)]
        self.assertEqual(pool.queued, 2)
        self.failureResultOf(deferToPool(reactor, pool, int, 3), PoolFullError)
        self.assertEqual(pool.queued, 2)
        release.set()
        results = yield Deferred.fromCoroutine(_gather(waiting))
        self.assertEqual((results, pool.queued), ([0, 1], 0))

    def test_blockingPoolSettings(self) -> None:
        """blockingPool passes maxThreads and maxQueued to the pool it makes."""
        reactor = _NotACore()
        pool = blockingPool("test-settings", 3, maxQueued=7, reactor=reactor)
        self.addCleanup(pool.stop)
        self.addCleanup(threads._pools.pop, (id(reactor), "test-settings"))
        self.assertIsInstance(pool, BlockingPool)
        assert isinstance(pool, BlockingPool)
        self.assertEqual((pool.max, pool.maxQueued), (3, 7))
        self.assertEqual(threads.DEFAULT_MAX_QUEUED, 256)


async def _gather(ds: list[Deferred[Any]]) -> list[Any]:
    return [await d for d in ds]


class HtpasswdPoolFullTests(TestCase):
    @inlineCallbacks
    def test_refusedAndLogged(self) -> Any:
        """htpasswd turns a full pool into UnauthorizedLogin with one log line."""
        reactor = _globalReactor()
        pool, release = busyPool(self, maxQueued=0)
        path = Path(self.mktemp())
        path.write_text(f"alice:{ALICE}\n")
        checker = HtpasswdChecker(
            str(path), runBlocking=partial(deferToPool, reactor, pool)
        )
        events: list[dict[str, Any]] = []
        checker.log = Logger(observer=events.append)  # type: ignore[misc,arg-type]
        yield self.assertFailure(
            checker.requestAvatarId(UsernamePassword(b"alice", b"alice-pw")),
            UnauthorizedLogin,
        )
        [event] = events
        self.assertIn("too many checks waiting", formatEvent(event))
        self.assertNotIn("log_failure", event)
        release.set()


class LDAPPoolFullTests(_CheckerMixin, TestCase):
    @inlineCallbacks
    def test_refusedAndLogged(self) -> Any:
        """LDAP turns a full pool into UnauthorizedLogin with one log line."""
        factory, port = _listen(self, _Silent)
        pool, release = busyPool(self, maxQueued=0)
        checker = self.checker(url=f"ldap://127.0.0.1:{port}/dc=example")
        checker._pool = pool
        yield self.refused(checker, "alice", "alice-pw")
        # Before the checker's cleanup, which unbinds through the same pool.
        release.set()
        self.assertEqual(factory.connections, 0)
        self.assertIn("too many LDAP calls waiting", self.logText())
        self.assertFalse(any("log_failure" in e for e in self.events))
