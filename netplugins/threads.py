"""
Bounded thread pools for blocking work: password hashing, ldap3 calls, bulk disk I/O.

A pool is created on first use, started at once (its threads are made on demand) and
stopped when the reactor shuts down, the way C{twisted.web.tap} manages its WSGI pool.
Checkers made by strcred factories have no application to hang a service on, so this
is the one lifecycle that works both in netplugins services and inside Twisted's own
plugins (C{twistd ftp --auth htpasswd:...}).

Each pool also bounds the work waiting for a thread: past C{maxQueued} waiting
calls, new ones fail at once with L{PoolFullError} rather than queueing without end
behind a slow LDAP server or a flood of logins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

_P = ParamSpec("_P")
_T = TypeVar("_T")

DEFAULT_MAX_THREADS = 8
#: Calls that may wait for a thread in one pool before new ones are refused.
DEFAULT_MAX_QUEUED = 256

_pools: dict[tuple[int, str], ThreadPool] = {}


class PoolFullError(Exception):
    """
    A blocking pool already has as many calls waiting for a thread as it
    accepts; the call was not queued.
    """


class BlockingPool(ThreadPool):
    """
    A thread pool that refuses work beyond C{maxQueued} calls waiting for a
    thread (calls running in a thread do not count).

    @ivar maxQueued: the bound on waiting calls.
    """

    def __init__(self, maxThreads: int, maxQueued: int, name: str) -> None:
        super().__init__(minthreads=0, maxthreads=maxThreads, name=name)
        self.maxQueued = maxQueued
        self._queued = 0
        # Counted from the reactor thread and from the pool's threads.
        self._queuedLock = threading.Lock()

    @property
    def queued(self) -> int:
        """
        How many calls are waiting for a thread now.
        """
        return self._queued

    def deferToThread(
        self,
        reactor: IReactorFromThreads,
        f: Callable[_P, _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        """
        Run C{f(*args, **kwargs)} in this pool, or fail with L{PoolFullError} at
        once if C{maxQueued} calls are already waiting.
        """
        with self._queuedLock:
            if self._queued >= self.maxQueued:
                return fail(
                    PoolFullError(f"{self.name}: {self._queued} calls already waiting")
                )
            self._queued += 1

        def started() -> _T:
            with self._queuedLock:
                self._queued -= 1
            return f(*args, **kwargs)

        return deferToThreadPool(reactor, self, started)


def _defaultReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def blockingPool(
    name: str = "netplugins",
    maxThreads: int = DEFAULT_MAX_THREADS,
    maxQueued: int = DEFAULT_MAX_QUEUED,
    reactor: Any = None,
) -> ThreadPool:
    """
    Return the shared pool called C{name} for C{reactor}, creating it if needed.

    @param maxThreads: the bound on concurrent blocking calls; used only when the
        pool is created.
    @param maxQueued: the bound on calls waiting for a thread (see
        L{BlockingPool}); used only when the pool is created.
    """
    if reactor is None:
        reactor = _defaultReactor()
    key = (id(reactor), name)
    pool = _pools.get(key)
    if pool is None:
        pool = BlockingPool(maxThreads, maxQueued, name)
        pool.start()
        _pools[key] = pool

        def stop() -> None:
            _pools.pop(key, None)
            pool.stop()

        if IReactorCore.providedBy(reactor):
            reactor.addSystemEventTrigger("during", "shutdown", stop)
    return pool


def deferToBlocking(
    f: Callable[_P, _T],
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> Deferred[_T]:
    """
    Run C{f(*args, **kwargs)} in the default shared pool of the global reactor.

    @return: its result, or a failure with L{PoolFullError} if that pool's queue is
        full.
    """
    reactor = _defaultReactor()
    return deferToPool(reactor, blockingPool(reactor=reactor), f, *args, **kwargs)


def deferToPool(
    reactor: IReactorFromThreads,
    pool: ThreadPool,
    f: Callable[_P, _T],
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> Deferred[_T]:
    """
    Run C{f(*args, **kwargs)} in C{pool}; the result arrives on the reactor thread.

    @return: its result, or a failure with L{PoolFullError} if C{pool} is a
        L{BlockingPool} (as L{blockingPool} makes) whose queue is full.
    """
    if isinstance(pool, BlockingPool):
        return pool.deferToThread(reactor, f, *args, **kwargs)
    return deferToThreadPool(reactor, pool, f, *args, **kwargs)
