"""
The datagram side of the limits: C{--allow}/C{--deny}, the ignored source ports
and the per-source rate limit, applied before a datagram protocol sees
anything (docs/security.md).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import DatagramProtocol

from netplugins.limits.settings import _unmapped
from netplugins.ratelimit import REPORT_INTERVAL, TokenBucket

if TYPE_CHECKING:
    from netplugins.limits.tracker import ConnectionTracker


class _Source:
    """
    What the datagram limits remember about one source address.

    @ivar refusal: why the source may not send at all (C{--allow}/C{--deny}),
        decided once when it is first heard from.
    """

    __slots__ = ("bucket", "dropped", "refusal", "reported")

    def __init__(self, bucket: TokenBucket, refusal: str | None):
        self.bucket = bucket
        self.refusal = refusal
        self.dropped = 0
        self.reported: float | None = None


class _DatagramSources:
    """
    The sources one tracker has heard datagrams from, most recent last, and
    the decision for each datagram.
    """

    def __init__(self, tracker: ConnectionTracker):
        self._tracker = tracker
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def admit(self, addr: tuple[Any, ...]) -> bool:
        """
        Whether a datagram from C{addr} may reach the service; drops (and now
        and then logs) the others.
        """
        host, port = addr[0], addr[1]
        tracker = self._tracker
        now = tracker.clock.seconds()
        source = self._sources.get(host)
        if source is None:
            source = self._newSource(host, now)
        else:
            self._sources.move_to_end(host)
        if port in tracker.limits.ignoredSourcePorts:
            reason = f"source port {port} belongs to a service that answers back"
        elif source.refusal is not None:
            reason = source.refusal
        elif source.bucket.take(now):
            return True
        else:
            reason = "over the rate limit"
        source.dropped += 1
        if (
            source.reported is None or now - source.reported >= REPORT_INTERVAL
        ) and tracker.mayReport(now):
            tracker.log.info(
                "Dropped {count} datagram(s) from {source}: {reason}",
                count=source.dropped,
                source=host,
                reason=reason,
            )
            source.dropped = 0
            source.reported = now
        return False

    def _newSource(self, host: str, now: float) -> _Source:
        """
        Remember a source heard from for the first time, forgetting the least
        recently heard from one if the table is full.
        """
        refusal = None
        tracker = self._tracker
        if tracker.filters:
            refusal = tracker.refusal(_unmapped(ipaddress.ip_address(host)))
        limits = tracker.limits
        source = _Source(
            TokenBucket(limits.datagramRate, limits.datagramBurst, now), refusal
        )
        self._sources[host] = source
        if len(self._sources) > limits.datagramSources:
            self._sources.popitem(last=False)
        return source


class _LimitedDatagram(DatagramProtocol):
    """
    A datagram protocol that passes on only the datagrams the tracker admits.
    The wrapped protocol gets the real port as its transport, for replies.
    """

    def __init__(self, sources: _DatagramSources, wrapped: DatagramProtocol):
        self._admit = sources.admit
        self.wrappedProtocol = wrapped

    def makeConnection(self, transport: Any) -> None:
        super().makeConnection(transport)
        self.wrappedProtocol.makeConnection(transport)

    def doStop(self) -> None:
        self.wrappedProtocol.doStop()
        super().doStop()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self._admit(addr):
            self.wrappedProtocol.datagramReceived(datagram, addr)

    def connectionRefused(self) -> None:
        self.wrappedProtocol.connectionRefused()

    def logPrefix(self) -> str:
        return self.wrappedProtocol.logPrefix()
