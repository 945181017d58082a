# -*- test-case-name: tests.test_dns -*-
"""
Response rate limiting, after NSD's: answers to one source network (an IPv4
/24, an IPv6 /56) are limited to C{rate} a second; past the limit every
C{slip}-th answer goes out truncated (TC=1, no records), so a real client
behind a spoofed flood retries over TCP, and the others are dropped.  An
attacker spoofing a victim's address gains no amplification: a dropped answer
costs nothing and a slipped one is smaller than the query.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any

from netplugins.ratelimit import TokenBucket

#: NSD's default rate: answers a second to one /24 or /56.
DEFAULT_RATE = 200

#: NSD's default slip: every 2nd limited answer is sent truncated.
DEFAULT_SLIP = 2

#: Source networks remembered; the least recently heard from goes first.
TABLE_SIZE = 65536

SEND = 0
SLIP = 1
DROP = 2


def sourceNetwork(host: str) -> str:
    """
    The network C{host} is limited as: its /24 for IPv4 (IPv4-mapped IPv6
    included), its /56 for IPv6.
    """
    if ":" not in host:
        return host.rpartition(".")[0]
    address = ipaddress.IPv6Address(host.partition("%")[0])
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped).rpartition(".")[0]
    return address.packed[:7].hex()


class _Limited:
    __slots__ = ("bucket", "limited")

    def __init__(self, bucket: TokenBucket):
        self.bucket = bucket
        self.limited = 0


class ResponseRateLimiter:
    """
    Decides, for each UDP answer, whether it goes out whole (L{SEND}),
    truncated (L{SLIP}) or not at all (L{DROP}).
    """

    def __init__(
        self,
        rate: float,
        clock: Any,
        slip: int = DEFAULT_SLIP,
        tableSize: int = TABLE_SIZE,
    ):
        self.rate = rate
        self.slip = slip
        self.clock = clock
        self.tableSize = tableSize
        self._sources: OrderedDict[str, _Limited] = OrderedDict()

    def check(self, host: str) -> int:
        """
        Account for one answer to C{host}.
        """
        now = self.clock.seconds()
        key = sourceNetwork(host)
        source = self._sources.get(key)
        if source is None:
            source = _Limited(TokenBucket(self.rate, max(1, int(self.rate)), now))
            self._sources[key] = source
            if len(self._sources) > self.tableSize:
                self._sources.popitem(last=False)
        if source.bucket.take(now):
            return SEND
        source.limited += 1
        if self.slip and source.limited % self.slip == 0:
            return SLIP
        return DROP
