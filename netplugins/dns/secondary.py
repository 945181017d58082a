# -*- test-case-name: tests.test_dns_transfer -*-
"""
Secondary zones (C{--secondary ORIGIN=PRIMARY}): transferred from the
primary at start, then again when the primary sends NOTIFY or the SOA's
refresh interval passes (its retry interval after a failure).  A transfer
asks IXFR from the serial held, which the primary may answer with the whole
zone (dnspython applies either), AXFR when nothing is held yet; TSIG-signed
with the first C{--tsig-key}.  Transfers run in the blocking pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.xfr
import dns.zone
from dns.name import Name
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from netplugins.dns.zone import Zone
from netplugins.threads import blockingPool, deferToPool

if TYPE_CHECKING:
    from netplugins.dns.server import Engine

#: Seconds a transfer may take in all.
TRANSFER_LIFETIME = 60.0

#: Bounds on the SOA's refresh and retry intervals, in seconds.
MIN_REFRESH = 5
MAX_REFRESH = 86400


class _Held:
    """
    One secondary zone: its primary, the dnspython zone IXFR updates (only
    ever touched by one transfer at a time, in the pool) and the timer of the
    next transfer.
    """

    def __init__(self, origin: Name, host: str, port: int):
        self.origin = origin
        self.host = host
        self.port = port
        self.raw = dns.zone.Zone(origin, relativize=False)
        self.call: IDelayedCall | None = None
        self.busy = False
        self.again = False


class Secondaries(Service):
    """
    Keeps the secondary zones of an L{Engine} transferred from their
    primaries.
    """

    log = Logger()

    def __init__(
        self,
        zones: Sequence[tuple[Name, str, int]],
        engine: Engine,
        reactor: Any,
        key: dns.tsig.Key | None = None,
    ):
        self.held = {origin: _Held(origin, host, port) for origin, host, port in zones}
        self.engine = engine
        self.reactor = reactor
        self.key = key

    def startService(self) -> None:
        Service.startService(self)
        for held in self.held.values():
            self._schedule(held, 0)

    def stopService(self) -> None:
        Service.stopService(self)
        for held in self.held.values():
            if held.call is not None and held.call.active():
                held.call.cancel()
            held.call = None

    def _schedule(self, held: _Held, seconds: float) -> None:
        if held.call is not None and held.call.active():
            held.call.cancel()
        held.call = self.reactor.callLater(seconds, self.transfer, held.origin)

    def transfer(self, origin: Name) -> None:
        """
        Bring C{origin} up to date from its primary now.
        """
        held = self.held[origin]
        if held.busy:
            held.again = True
            return
        held.busy = True
        d = deferToPool(
            self.reactor, blockingPool(reactor=self.reactor), self._fetch, held
        )
        d.addCallbacks(
            self._fetched, self._failed, callbackArgs=(held,), errbackArgs=(held,)
        )

    def _fetch(self, held: _Held) -> Zone:
        keyring = None if self.key is None else {self.key.name: self.key}
        query, _ = dns.xfr.make_query(
            held.raw,
            keyring=keyring,
            keyname=None if self.key is None else self.key.name,
            keyalgorithm=(
                dns.tsig.default_algorithm if self.key is None else self.key.algorithm
            ),
        )
        dns.query.inbound_xfr(
            held.host, held.raw, query, port=held.port, lifetime=TRANSFER_LIFETIME
        )
        return Zone(held.raw)

    def _done(self, held: _Held, seconds: float) -> None:
        held.busy = False
        if held.again:
            held.again = False
            seconds = 0
        if self.running:
            self._schedule(held, seconds)

    def _fetched(self, zone: Zone, held: _Held) -> None:
        current = self.engine.zones.get(held.origin)
        if current is None or current.serial != zone.serial:
            self.engine.setZone(zone)
            self.log.info(
                "Zone {origin} transferred from {host}:{port}: serial {serial}",
                origin=str(held.origin),
                host=held.host,
                port=held.port,
                serial=zone.serial,
            )
        soa = zone.soa[0]
        refresh = soa.refresh  # type: ignore[attr-defined]
        self._done(held, min(max(refresh, MIN_REFRESH), MAX_REFRESH))

    def _failed(self, failure: Any, held: _Held) -> None:
        current = self.engine.zones.get(held.origin)
        retry = MIN_REFRESH * 6
        if current is not None:
            retry = min(max(current.soa[0].retry, MIN_REFRESH), MAX_REFRESH)  # type: ignore[attr-defined]
        self.log.warn(
            "Transfer of {origin} from {host}:{port} failed ({why});"
            " again in {retry} s",
            origin=str(held.origin),
            host=held.host,
            port=held.port,
            why=failure.getErrorMessage() or failure.type.__name__,
            retry=retry,
        )
        self._done(held, retry)

    def notified(
        self, query: dns.message.Message, host: str, engine: Engine
    ) -> bytes | None:
        """
        Answer a NOTIFY: from a zone's primary, transfer it; from anyone
        else, REFUSED.
        """
        name = query.question[0].name
        held = self.held.get(name)
        if held is None or host != held.host:
            self.log.info(
                "Refused NOTIFY for {zone} from {peer}", zone=str(name), peer=host
            )
            return engine.reply(query, dns.rcode.REFUSED, False)
        self.reactor.callLater(0, self.transfer, name)
        response = engine.response(query, dns.rcode.NOERROR)
        response.flags |= dns.flags.AA
        return engine.render(response, query, False)
