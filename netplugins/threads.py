"""
Bounded thread pools for blocking work: password hashing, ldap3 calls, bulk disk I/O.

A pool is created on first use, started at once (its threads are made on demand) and
stopped when the reactor shuts down, the way C{twisted.web.tap} manages its WSGI pool.
Checkers made by strcred factories have no application to hang a service on, so this
is the one lifecycle that works both in netplugins services and inside Twisted's own
plugins (C{twistd ftp --auth htpasswd:...}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

_P = ParamSpec("_P")
_T = TypeVar("_T")

DEFAULT_MAX_THREADS = 8

_pools: dict[tuple[int, str], ThreadPool] = {}


def _defaultReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def blockingPool(
    name: str = "netplugins",
    maxThreads: int = DEFAULT_MAX_THREADS,
    reactor: Any = None,
) -> ThreadPool:
    """
    Return the shared pool called C{name} for C{reactor}, creating it if needed.

    @param maxThreads: the bound on concurrent blocking calls; used only when the
        pool is created.
    """
    if reactor is None:
        reactor = _defaultReactor()
    key = (id(reactor), name)
    pool = _pools.get(key)
    if pool is None:
        pool = ThreadPool(minthreads=0, maxthreads=maxThreads, name=name)
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
    """
    return deferToThreadPool(reactor, pool, f, *args, **kwargs)
