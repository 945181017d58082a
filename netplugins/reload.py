"""
One SIGHUP handler for the whole process.

Certificates, password files, key files and LDAP configurations all reload on
SIGHUP.  Each registers a callable here; the first registration installs one
handler (chaining to any handler that was there before), which hops to the reactor
thread and runs every registered callable there.  A callable that raises is logged
and the others still run.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

log = Logger()

_callbacks: list[Callable[[], object]] = []
_installed: dict[str, Any] = {}


def _runAll() -> None:
    log.info("SIGHUP: reloading {count} sources", count=len(_callbacks))
    for callback in list(_callbacks):
        try:
            callback()
        except Exception:
            log.failure("reload with {callback!r} failed", callback=callback)


def _schedule(f: Callable[[], None]) -> None:
    from twisted.internet import reactor

    reactor.callFromThread(f)  # type: ignore[attr-defined]


def _install() -> None:
    if _installed or not hasattr(signal, "SIGHUP"):
        return

    previous: Any = None

    def handler(signum: int, frame: Any) -> None:
        # Python runs signal handlers between bytecodes of the main thread, maybe
        # in the middle of reactor work: hop to a clean point of the loop.
        _schedule(_runAll)
        if callable(previous):
            previous(signum, frame)

    try:
        previous = signal.signal(signal.SIGHUP, handler)
    except ValueError:
        # Not the main thread (an embedding program): reload stays available
        # through reloadAll().
        return
    _installed["previous"] = previous
    _installed["handler"] = handler


def onReload(callback: Callable[[], object]) -> Callable[[], None]:
    """
    Run C{callback} on the reactor thread at every SIGHUP.

    @return: a callable that unregisters C{callback}.
    """
    _install()
    _callbacks.append(callback)

    def remove() -> None:
        if callback in _callbacks:
            _callbacks.remove(callback)

    return remove


def reloadAll() -> None:
    """
    Run every registered reload now, as SIGHUP would.
    """
    _runAll()
