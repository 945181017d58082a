"""
New mail at once in IDLE: the selected folder's C{new/} and C{cur/} watched
through C{twisted.internet.inotify} (Linux), the session refreshed as soon as
a file arrives, leaves or is renamed there (a delivery, an expunge, another
session's flag change), instead of every L{IMAPConfig.pollInterval} seconds.

One L{FolderWatcher} per factory holds one inotify descriptor while anybody
idles, and closes it when the last one stops; a folder two sessions idle on is
watched once.  At most L{MAX_WATCHED_FOLDERS} folders are watched (two
watches each); a session past that bound, a reactor without file descriptors
(a test's C{Clock}) or a system without inotify polls as before.

Events are coalesced: a burst of renames (a client's STORE on many messages)
makes one rescan, and a rescan that is running when more events come is
followed by exactly one more.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

#: How many folders one factory watches at most (each is two inotify watches,
#: C{new/} and C{cur/}); sessions idling on further folders poll.
MAX_WATCHED_FOLDERS = 1024
#: How long after the first event of a burst the session rescans, in seconds.
SETTLE = 0.02

_watchers: weakref.WeakKeyDictionary[Any, FolderWatcher] = weakref.WeakKeyDictionary()


class FolderWatcher:
    """
    The inotify watches of one factory's idling sessions, by folder.

    @ivar folders: the callbacks to call, by watched folder directory.
    """

    log = Logger()

    def __init__(self, reactor: Any, maxFolders: int = MAX_WATCHED_FOLDERS) -> None:
        self._reactor = reactor
        self._maxFolders = maxFolders
        self._notifier: Any = None
        self.folders: dict[str, set[Callable[[], None]]] = {}

    def _start(self) -> Any:
        # Linux only: elsewhere the import or the descriptor fails.
        if not IReactorFDSet.providedBy(self._reactor):
            return None
        try:
            from twisted.internet import inotify

            notifier = inotify.INotify(reactor=self._reactor)
            notifier.startReading()
        except Exception as e:
            self.log.info("np-imap: no inotify ({error}); IDLE polls", error=e)
            return None
        return notifier

    def watch(self, path: str, callback: Callable[[], None]) -> bool:
        """
        Call C{callback} whenever a file arrives in, leaves or is renamed
        within the folder at C{path}.

        @return: whether it is watched; C{False} means the caller polls.
        """
        if path in self.folders:
            self.folders[path].add(callback)
            return True
        if len(self.folders) >= self._maxFolders:
            return False
        if self._notifier is None:
            self._notifier = self._start()
            if self._notifier is None:
                return False
        from twisted.internet import inotify

        mask = (
            inotify.IN_CREATE
            | inotify.IN_MOVED_TO
            | inotify.IN_MOVED_FROM
            | inotify.IN_DELETE
        )
        watched: list[FilePath[str]] = []
        try:
            for sub in ("new", "cur"):
                directory = FilePath(path).child(sub)
                self._notifier.watch(directory, mask, callbacks=[self._event(path)])
                watched.append(directory)
        except Exception as e:
            self.log.info(
                "np-imap: cannot watch {path} ({error}); IDLE polls",
                path=path,
                error=e,
            )
            for directory in watched:
                self._notifier.ignore(directory)
            self._stopIfUnused()
            return False
        self.folders[path] = {callback}
        return True

    def _event(self, path: str) -> Callable[[object, object, int], None]:
        def event(ignored: object, filepath: object, mask: int) -> None:
            for callback in list(self.folders.get(path, ())):
                callback()

        return event

    def unwatch(self, path: str, callback: Callable[[], None]) -> None:
        """
        Stop calling C{callback} for the folder at C{path}; its watches go
        with its last callback, the descriptor with the last folder.
        """
        callbacks = self.folders.get(path)
        if callbacks is None:
            return
        callbacks.discard(callback)
        if callbacks:
            return
        del self.folders[path]
        for sub in ("new", "cur"):
            try:
                self._notifier.ignore(FilePath(path).child(sub))
            except KeyError:
                pass  # the directory went (a deleted folder): so did its watch
        self._stopIfUnused()

    def _stopIfUnused(self) -> None:
        if not self.folders and self._notifier is not None:
            notifier, self._notifier = self._notifier, None
            notifier.loseConnection()


def watcherFor(factory: Any) -> FolderWatcher:
    """
    The L{FolderWatcher} of C{factory}, made when first asked for.
    """
    watcher = _watchers.get(factory)
    if watcher is None:
        watcher = _watchers[factory] = FolderWatcher(factory.reactor)
    return watcher


class IdleWatch:
    """
    What refreshes one idling session: a watch on its folder, or a poll.
    Has C{running} and C{stop()}, as the L{LoopingCall} it stands in for.

    @ivar watching: whether inotify watches the folder (else it is polled).
    """

    def __init__(self, factory: Any, path: str, refresh: Callable[[], Any]) -> None:
        self._factory = factory
        self._path = path
        self._refresh = refresh
        self._pending: Any = None
        self._busy = False
        self._again = False
        self.running = True
        self._poll: LoopingCall | None = None
        self.watching = watcherFor(factory).watch(path, self._changed)
        if not self.watching:
            poll = LoopingCall(refresh)
            poll.clock = factory.reactor
            poll.start(factory.config.pollInterval, now=False)
            self._poll = poll

    def _changed(self) -> None:
        if not self.running:
            return
        if self._busy:
            self._again = True
        elif self._pending is None:
            self._pending = self._factory.reactor.callLater(SETTLE, self._run)

    def _run(self) -> None:
        self._pending = None
        if not self.running:
            return
        self._busy = True
        self._again = False
        d = self._refresh()
        if d is None:
            self._done()
        else:
            d.addBoth(self._done)

    def _done(self, result: object = None) -> None:
        self._busy = False
        if self._again:
            self._changed()

    def stop(self) -> None:
        """
        Stop refreshing: the watch or the poll ends.
        """
        if not self.running:
            return
        self.running = False
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self._poll is not None:
            if self._poll.running:
                self._poll.stop()
            self._poll = None
        if self.watching:
            watcherFor(self._factory).unwatch(self._path, self._changed)
