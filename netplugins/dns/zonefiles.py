# -*- test-case-name: tests.test_dns -*-
"""
Zone files a running server serves: loaded at start, loaded again on SIGHUP,
and, when a file changes on disk, loaded and served if its SOA serial
changed.  Loading runs in the blocking pool; a file that does not load keeps
the zone served before and logs why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from attrs import define
from dns.name import Name
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from netplugins.dns.signing import RESIGN_INTERVAL, ZoneKey
from netplugins.dns.zone import Zone, ZoneError, loadZone
from netplugins.files import Signature, fileSignature
from netplugins.reload import onReload
from netplugins.threads import blockingPool, deferToPool

#: Seconds between two looks at the zone files for a change.
CHECK_INTERVAL = 2.0


@define
class ZoneFile:
    """
    One C{--zone ORIGIN=PATH}, and the signature of the file last loaded.
    """

    origin: Name
    path: str
    #: the keys signing the zone at each load (C{--dnssec-key}), if any
    keys: tuple[ZoneKey, ...] = ()
    signature: Signature | None = None
    serial: int | None = None


def _load(zoneFile: ZoneFile) -> tuple[Zone, Signature | None]:
    before = fileSignature(zoneFile.path)
    return loadZone(zoneFile.origin, zoneFile.path, zoneFile.keys), before


class ZoneFiles(Service):
    """
    Keeps the zones of C{files} served by calling C{install} with each new
    one.

    @ivar installed: called with each zone put into service after the first
        load (a reload): the NOTIFY sender listens here.
    """

    log = Logger()

    def __init__(
        self,
        files: Sequence[ZoneFile],
        install: Callable[[Zone], None],
        reactor: Any,
        interval: float = CHECK_INTERVAL,
        resignInterval: float = RESIGN_INTERVAL,
    ):
        self.files = files
        self.install = install
        self.reactor = reactor
        self.interval = interval
        self.installed: list[Callable[[Zone], None]] = []
        self.resignInterval = resignInterval
        self._loop: LoopingCall | None = None
        self._resign: LoopingCall | None = None
        self._removeReload: Callable[[], None] | None = None

    def loadNow(self) -> None:
        """
        Load every file, blocking: at start, where a bad file is an error.

        @raise ZoneError: for the first file that does not load.
        """
        for zoneFile in self.files:
            zone, signature = _load(zoneFile)
            zoneFile.signature = signature
            zoneFile.serial = zone.serial
            self.install(zone)

    def startService(self) -> None:
        Service.startService(self)
        self._removeReload = onReload(self.reload)
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=False)
        if any(zoneFile.keys for zoneFile in self.files):
            self._resign = LoopingCall(self.resign)
            self._resign.clock = self.reactor
            self._resign.start(self.resignInterval, now=False)

    def stopService(self) -> None:
        Service.stopService(self)
        if self._removeReload is not None:
            self._removeReload()
        for loop in (self._loop, self._resign):
            if loop is not None and loop.running:
                loop.stop()

    def reload(self) -> Deferred[Any]:
        """
        Load every file again and serve what loads (SIGHUP).
        """
        return self._run(force=True)

    def resign(self) -> Deferred[Any]:
        """
        Load and sign again the zones signed at load, for fresh signatures.
        """
        return self._run(force=True, signedOnly=True)

    def check(self) -> Deferred[Any]:
        """
        Load the files that changed on disk and serve those whose serial
        changed.
        """
        return self._run(force=False)

    def _run(self, force: bool, signedOnly: bool = False) -> Deferred[Any]:
        pool = blockingPool(reactor=self.reactor)
        work = []
        for zoneFile in self.files:
            if signedOnly and not zoneFile.keys:
                continue
            d = deferToPool(self.reactor, pool, self._maybeLoad, zoneFile, force)
            d.addCallback(self._loaded, zoneFile, force)
            d.addErrback(self._failed, zoneFile)
            work.append(d)
        return DeferredList(work)

    @staticmethod
    def _maybeLoad(
        zoneFile: ZoneFile, force: bool
    ) -> tuple[Zone, Signature | None] | None:
        if not force and fileSignature(zoneFile.path) == zoneFile.signature:
            return None
        try:
            return _load(zoneFile)
        except ZoneError as e:
            # Do not try the same broken file again until it changes.
            e.signature = fileSignature(zoneFile.path)  # type: ignore[attr-defined]
            raise

    def _loaded(
        self,
        loaded: tuple[Zone, Signature | None] | None,
        zoneFile: ZoneFile,
        force: bool,
    ) -> None:
        if loaded is None:
            return
        zone, signature = loaded
        zoneFile.signature = signature
        if not force and zone.serial == zoneFile.serial:
            self.log.info(
                "Zone {origin}: {path} changed but its serial is still {serial};"
                " not reloaded (SIGHUP reloads it)",
                origin=str(zone.origin),
                path=zoneFile.path,
                serial=zone.serial,
            )
            return
        zoneFile.serial = zone.serial
        self.install(zone)
        self.log.info(
            "Zone {origin} loaded from {path}: serial {serial}, {records} records",
            origin=str(zone.origin),
            path=zoneFile.path,
            serial=zone.serial,
            records=zone.records,
        )
        for callback in self.installed:
            callback(zone)

    def _failed(self, failure: Any, zoneFile: ZoneFile) -> None:
        if failure.check(ZoneError):
            zoneFile.signature = getattr(failure.value, "signature", None)
            self.log.error(
                "Zone {origin} keeps serial {serial}: {reason}",
                origin=str(zoneFile.origin),
                serial=zoneFile.serial,
                reason=str(failure.value),
            )
        else:
            self.log.failure(
                "Zone {origin}: loading {path} failed",
                failure,
                origin=str(zoneFile.origin),
                path=zoneFile.path,
            )
