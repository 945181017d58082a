"""
Reload on SIGHUP for objects that may be dropped: the registration holds only a
weak reference, so an object nobody uses any more drops out of
L{netplugins.reload} at the next SIGHUP instead of living as long as the process.
And L{follow}, with which a reloading checker hands out its reload's outcome.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred

_T = TypeVar("_T")


def reloadWhileAlive(owner: _T, reload: Callable[[_T], object]) -> None:
    """
    Call C{reload(owner)} at every SIGHUP for as long as C{owner} lives.
    """
    from netplugins.reload import onReload

    ref = weakref.ref(owner)

    def onSignal() -> None:
        live = ref()
        if live is None:
            unregister()
        else:
            reload(live)

    unregister = onReload(onSignal)


def follow(source: Deferred[_T]) -> Deferred[_T]:
    """
    A L{Deferred} firing with C{source}'s result, leaving C{source}'s own
    callback chain untouched.
    """
    follower: Deferred[_T] = Deferred()

    def relay(result: _T) -> _T:
        follower.callback(result)
        return result

    source.addCallback(relay)
    return follower
