"""
What a service's limits are: L{Limits}, C{--allow}/C{--deny} networks, and
the address helpers the stream and datagram parts share.
"""

from __future__ import annotations

import ipaddress
from typing import TypeAlias

from attrs import frozen
from twisted.internet import address
from twisted.internet.interfaces import IAddress

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Source ports of UDP services that answer anything (echo, daytime, qotd,
#: chargen, time): replying to them starts a loop between two servers.  Port 0
#: is never a real client's.
IGNORED_SOURCE_PORTS = frozenset({0, 7, 13, 17, 19, 37})

#: Seconds a connection closed by the server (a deadline, an error, a goodbye)
#: gets to send what is queued before it is aborted (C{--close-grace}).
DEFAULT_CLOSE_GRACE = 10.0


@frozen
class Limits:
    """
    The limits one service applies to its connections and datagrams.

    @ivar maxConnections: connections open at once, all listeners together.
    @ivar maxConnectionsPerIP: connections open at once from one IP address.
    @ivar idleTimeout: seconds without a byte read or written before a
        connection is closed.
    @ivar preAuthTimeout: seconds a connection may stay without logging in,
        for services that log users in (C{None}: the service's default).
    @ivar closeGrace: seconds a connection the server closed gets to finish
        closing before it is aborted.
    @ivar allow: when not empty, only these networks may connect or send.
    @ivar deny: these networks may not connect or send, even if allowed.
    @ivar datagramRate: datagrams per second one source address may have
        answered, sustained.
    @ivar datagramBurst: datagrams one source may have answered at once.
    @ivar ignoredSourcePorts: datagrams from these source ports are dropped.
    @ivar datagramSources: how many sources the datagram rate limit remembers;
        the least recently heard from is forgotten first.
    """

    maxConnections: int | None = None
    maxConnectionsPerIP: int | None = None
    idleTimeout: float | None = None
    preAuthTimeout: float | None = None
    closeGrace: float = DEFAULT_CLOSE_GRACE
    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    datagramRate: float = 5.0
    datagramBurst: int = 10
    ignoredSourcePorts: frozenset[int] = IGNORED_SOURCE_PORTS
    datagramSources: int = 4096

    def limitsConnections(self) -> bool:
        """
        Whether any of these limits applies to stream connections.
        """
        return (
            self.maxConnections is not None
            or self.maxConnectionsPerIP is not None
            or self.idleTimeout is not None
            or bool(self.allow)
            or bool(self.deny)
        )


def parseNetwork(text: str) -> IPNetwork:
    """
    Parse an C{--allow}/C{--deny} value: a CIDR network or a single address,
    IPv4 or IPv6.  Host bits are ignored (C{10.1.2.3/8} is C{10.0.0.0/8}).

    @raise ValueError: with a one-line message naming C{text}.
    """
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"expected a network such as 192.0.2.0/24 or 2001:db8::/32, not {text!r}"
        ) from None


def _unmapped(ip: IPAddress) -> IPAddress:
    """
    The IPv4 address behind an IPv4-mapped IPv6 one (C{::ffff:192.0.2.1}, how a
    dual-stack socket sees IPv4 peers), so both count and match as one address.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _unmappedNetwork(network: IPNetwork) -> IPNetwork:
    """
    The IPv4 network behind an IPv4-mapped IPv6 one, for the same reason.
    """
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


def sourceOf(ip: IPAddress) -> IPAddress | IPNetwork:
    """
    What C{--max-connections-per-ip} counts C{ip} as: an IPv4 address itself,
    an IPv6 address as its /64 (one host is usually given a whole /64, so
    counting each address would let it open a cap's worth from every one), as
    the login throttle counts them.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        return ipaddress.IPv6Network((ip, 64), strict=False)
    return ip


def _ipOf(peer: IAddress) -> IPAddress | None:
    """
    The IP address of a peer, or C{None} for one that has none (UNIX sockets).
    """
    if isinstance(peer, (address.IPv4Address, address.IPv6Address)):
        return _unmapped(ipaddress.ip_address(peer.host))
    return None
