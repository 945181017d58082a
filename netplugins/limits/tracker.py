"""
L{ConnectionTracker}: one service's counts, refusals and their log lines,
shared by the stream and datagram wrappers of all its listeners.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress, IProtocolFactory, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from netplugins.addresses import describe
from netplugins.limits.datagram import _DatagramSources, _LimitedDatagram
from netplugins.limits.settings import (
    IPAddress,
    IPNetwork,
    Limits,
    _unmappedNetwork,
    sourceOf,
)
from netplugins.limits.stream import _LimitedFactory
from netplugins.ratelimit import (
    REPORT_INTERVAL,
    REPORTS_PER_INTERVAL,
    ReportGate,
    TokenBucket,
)


class ConnectionTracker:
    """
    Applies one service's L{Limits} to all of its listeners: the stream and
    datagram wrappers ask it L{admit}, L{release}, L{refusal} and
    L{reportRefusal}, and time themselves with its C{clock}.

    @ivar connections: connections open now, all listeners together.
    @ivar clock: the reactor's clock, for idle deadlines and rate limits.
    """

    log = Logger()

    def __init__(self, limits: Limits, reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor
        self.limits = limits
        self.clock: IReactorTime = reactor
        self._allow = tuple(_unmappedNetwork(n) for n in limits.allow)
        self._deny = tuple(_unmappedNetwork(n) for n in limits.deny)
        self.connections = 0
        self._perIP: dict[IPAddress | IPNetwork, int] = {}
        self._datagrams = _DatagramSources(self)
        self._reports = TokenBucket(
            REPORTS_PER_INTERVAL / REPORT_INTERVAL,
            REPORTS_PER_INTERVAL,
            reactor.seconds(),
        )
        # Refused connections share the datagram lines' global cap.
        self._refusals = ReportGate(reactor.seconds(), lines=self._reports)

    def wrapFactory(self, factory: IProtocolFactory) -> IProtocolFactory:
        """
        Apply the connection limits to connections built by C{factory}.

        @return: C{factory} itself when no connection limit is set.
        """
        if not self.limits.limitsConnections():
            return factory
        return _LimitedFactory(self, factory)

    def wrapDatagram(self, protocol: DatagramProtocol) -> DatagramProtocol:
        """
        Apply C{--allow}/C{--deny}, the ignored source ports and the per-source
        rate limit to datagrams before C{protocol} sees them.  Dropped
        datagrams get no reply.
        """
        return _LimitedDatagram(self._datagrams, protocol)

    @property
    def filters(self) -> bool:
        """
        Whether C{--allow} or C{--deny} is set (L{refusal} can refuse).
        """
        return bool(self._allow or self._deny)

    def mayReport(self, now: float) -> bool:
        """
        Whether one more log line about refused traffic fits the global cap
        now (and count it).
        """
        return self._reports.take(now)

    def refusal(self, ip: IPAddress) -> str | None:
        """
        Why C{--allow}/C{--deny} keep C{ip} out, or C{None}.
        """
        if any(ip in network for network in self._deny):
            return "address denied (--deny)"
        if self._allow and not any(ip in network for network in self._allow):
            return "address not allowed (--allow)"
        return None

    def admit(self, ip: IPAddress | None) -> str | None:
        """
        Count a new connection from C{ip} (C{None}: not an IP peer), or say why
        it is refused.
        """
        limits = self.limits
        if ip is not None:
            refusal = self.refusal(ip)
            if refusal is not None:
                return refusal
        if limits.maxConnections is not None:
            if self.connections >= limits.maxConnections:
                return (
                    f"{self.connections} connections already open (--max-connections)"
                )
        source = None if ip is None else sourceOf(ip)
        if source is not None and limits.maxConnectionsPerIP is not None:
            if self._perIP.get(source, 0) >= limits.maxConnectionsPerIP:
                return (
                    f"{self._perIP[source]} connections already open from this"
                    " address (--max-connections-per-ip)"
                )
        self.connections += 1
        if source is not None:
            self._perIP[source] = self._perIP.get(source, 0) + 1
        return None

    def reportRefusal(self, peer: IAddress, ip: IPAddress | None, reason: str) -> None:
        """
        Log a refused connection, at most once per source address per
        L{REPORT_INTERVAL}, counting the ones left unlogged.
        """
        suppressed = self._refusals.report(
            describe(peer) if ip is None else str(ip), self.clock.seconds()
        )
        if suppressed is None:
            return
        if suppressed:
            self.log.info(
                "Refused connection from {peer}: {reason} ({suppressed} more "
                "refused from this address since the last line)",
                peer=describe(peer),
                reason=reason,
                suppressed=suppressed,
            )
        else:
            self.log.info(
                "Refused connection from {peer}: {reason}",
                peer=describe(peer),
                reason=reason,
            )

    def release(self, ip: IPAddress | None) -> None:
        """
        Forget a connection counted by L{admit}.
        """
        self.connections -= 1
        if ip is not None:
            source = sourceOf(ip)
            left = self._perIP.pop(source) - 1
            if left:
                self._perIP[source] = left
