# -*- test-case-name: tests.test_dns -*-
"""
Zones: a BIND zone file loaded with dnspython (C{$ORIGIN}, C{$TTL},
C{$INCLUDE}, C{$GENERATE}) and indexed once, at load, for the answer logic:
which names exist (empty non-terminals included), where the delegations,
DNAMEs and wildcards are, the RRSIGs of each RRset, and the NSEC and NSEC3
chains in canonical order for denial of existence.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import dns.dnssec
import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rrset
import dns.zone
from dns.name import Name
from dns.rdatatype import RdataType
from dns.rrset import RRset

from netplugins.dns.signing import ZoneKey, signZone
from netplugins.dns.wire import Record, recordBytes

SOA = RdataType.SOA
NS = RdataType.NS
CNAME = RdataType.CNAME
DNAME = RdataType.DNAME
RRSIG = RdataType.RRSIG
NSEC = RdataType.NSEC
NSEC3 = RdataType.NSEC3
NSEC3PARAM = RdataType.NSEC3PARAM
DS = RdataType.DS
A = RdataType.A
AAAA = RdataType.AAAA

#: The most records a zone may hold: a bound on the memory one file costs.
MAX_RECORDS = 1_000_000


class ZoneError(Exception):
    """
    A zone file that cannot be served; the message says why, in one line.
    """


#: A name as the zone's tables key it: its labels, lower-cased (hashing a
#: tuple of bytes is much cheaper than hashing a Name, which lowers its
#: labels each time).
Key: TypeAlias = tuple[bytes, ...]


def nameKey(name: Name) -> Key:
    """
    The L{Key} of C{name}.
    """
    return tuple(label.lower() for label in name.labels)


def wireKey(key: Key) -> bytes:
    """
    The name of C{key} in wire form (lower case, uncompressed): how the fast
    path (L{netplugins.dns.fastpath}) keys names, as sliced from a query.
    """
    return b"".join(bytes((len(label),)) + label for label in key)


class Node:
    """
    The RRsets at one owner name, by type, and their signatures, by the type
    they cover.
    """

    __slots__ = ("rrsets", "sigs")

    def __init__(self) -> None:
        self.rrsets: dict[int, RRset] = {}
        self.sigs: dict[int, RRset] = {}


class Zone:
    """
    One zone, indexed for answering.  Immutable once made: a reload makes a
    new one and swaps it in.

    @ivar origin: the apex.
    @ivar serial: the SOA serial.
    @ivar soa: the apex SOA RRset.
    @ivar negativeSOA: the SOA as negative answers carry it: its TTL is the
        smaller of its own TTL and its MINIMUM field (RFC 2308 section 3).
    @ivar nodes: every owner name with data, by L{Key} (names below a
        delegation only serve as glue).
    @ivar names: the L{Key} of every name that exists, empty non-terminals
        included.
    @ivar cuts: the delegation points (NS below the apex), as keys.
    @ivar dnames: the owners of DNAME records, as keys.
    @ivar nsec: NSEC owner names in canonical order.
    @ivar nsec3: NSEC3 hashes (base32hex, upper case) in order, to the owner.
    @ivar nsec3param: the NSEC3PARAM rdata, when the zone has NSEC3.
    @ivar records: how many records the zone holds.
    @ivar signed: whether the apex SOA has an RRSIG.
    @ivar wire: each RRset's records in wire form, by the RRset's id.
    @ivar originWire: L{originKey} in wire form (L{wireKey}).
    @ivar wireNames: L{names} in wire form.
    @ivar wireCuts: L{cuts} in wire form.
    @ivar wireDNames: L{dnames} in wire form.
    @ivar types: every type of RRset the zone holds (RRSIG not included).
    """

    def __init__(self, zone: dns.zone.Zone):
        origin = zone.origin
        assert origin is not None
        self.origin: Name = origin
        self.originKey = nameKey(origin)
        self.nodes: dict[Key, Node] = {}
        self.names: set[Key] = {self.originKey}
        self.cuts: set[Key] = set()
        self.dnames: set[Key] = set()
        self.records = 0
        nsec: list[Name] = []
        nsec3: dict[str, Name] = {}
        self.nsec3param: dns.rdata.Rdata | None = None
        depth = len(self.originKey)
        for name, node in zone.nodes.items():
            if not name.is_absolute():
                name = name.derelativize(origin)
            entry = Node()
            for rdataset in node.rdatasets:
                self.records += len(rdataset)
                rrset = dns.rrset.RRset(
                    name, rdataset.rdclass, rdataset.rdtype, rdataset.covers
                )
                rrset.update(rdataset)
                if rdataset.rdtype == RRSIG:
                    entry.sigs[rdataset.covers] = rrset
                else:
                    entry.rrsets[rdataset.rdtype] = rrset
            if not entry.rrsets and not entry.sigs:
                continue
            key = nameKey(name)
            self.nodes[key] = entry
            if NS in entry.rrsets and name != origin:
                self.cuts.add(key)
            if DNAME in entry.rrsets:
                self.dnames.add(key)
            if NSEC in entry.rrsets:
                nsec.append(name)
            if NSEC3 in entry.rrsets:
                nsec3[name.labels[0].decode("ascii").upper()] = name
            if NSEC3PARAM in entry.rrsets and name == origin:
                self.nsec3param = entry.rrsets[NSEC3PARAM][0]
            if NSEC3 in entry.rrsets and len(entry.rrsets) == 1:
                # NSEC3 owners are hashes, not names of the zone's tree.
                continue
            # The name and every name between it and the origin exist.
            for i in range(len(key) - depth):
                if key[i:] in self.names:
                    break
                self.names.add(key[i:])
        if self.records > MAX_RECORDS:
            raise ZoneError(f"more than {MAX_RECORDS} records")
        apex = self.nodes.get(self.originKey)
        if apex is None or SOA not in apex.rrsets:
            raise ZoneError(f"no SOA record at {origin}")
        self.soa: RRset = apex.rrsets[SOA]
        soa = self.soa[0]
        assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
        self.serial: int = soa.serial
        self.negativeSOA = dns.rrset.RRset(origin, self.soa.rdclass, SOA)
        self.negativeSOA.update(self.soa)
        self.negativeSOA.ttl = min(self.soa.ttl, soa.minimum)
        #: the SOA's RRSIG with the negative answer's TTL, if signed
        self.negativeSOASig: RRset | None = None
        sig = apex.sigs.get(SOA)
        #: whether the zone is signed: DNSSEC records go only with its answers
        self.signed = sig is not None
        if sig is not None:
            self.negativeSOASig = dns.rrset.RRset(origin, sig.rdclass, RRSIG, SOA)
            self.negativeSOASig.update(sig)
            self.negativeSOASig.ttl = self.negativeSOA.ttl
        #: each RRset's records in wire form (L{netplugins.dns.wire}), by
        #: the id of the RRset, which lives as long as the zone
        self.wire: dict[int, tuple[Record, ...]] = {
            id(rrset): recordBytes(rrset)
            for node in self.nodes.values()
            for rrsets in (node.rrsets, node.sigs)
            for rrset in rrsets.values()
        }
        for extra in (self.negativeSOA, self.negativeSOASig):
            if extra is not None:
                self.wire[id(extra)] = recordBytes(extra)
        self.originWire = wireKey(self.originKey)
        self.wireNames = {wireKey(key) for key in self.names}
        self.wireCuts = {wireKey(key) for key in self.cuts}
        self.wireDNames = {wireKey(key) for key in self.dnames}
        self.types = {t for node in self.nodes.values() for t in node.rrsets}
        self.nsec: list[Name] = sorted(nsec)
        #: L{nsec} as label tuples, top label first: Python orders them as
        #: DNSSEC's canonical order orders the names
        self._nsecKeys = [tuple(reversed(nameKey(name))) for name in self.nsec]
        self._nsec3Hashes: list[str] = sorted(nsec3)
        self.nsec3: dict[str, Name] = nsec3

    def __repr__(self) -> str:
        return f"<Zone {self.origin} serial {self.serial}>"

    def node(self, name: Name) -> Node | None:
        """
        The node at C{name}, if it has data.
        """
        return self.nodes.get(nameKey(name))

    def rrsets(self) -> Iterator[RRset]:
        """
        Every RRset of the zone, signatures included, the apex SOA first.
        """
        yield self.soa
        for node in self.nodes.values():
            for rrset in node.rrsets.values():
                if rrset is not self.soa:
                    yield rrset
            yield from node.sigs.values()

    def covering(self, name: Name) -> Name | None:
        """
        The owner of the NSEC record that covers or matches C{name}: the last
        one not after it in canonical order (the last of all wraps around).
        """
        if not self.nsec:
            return None
        i = bisect.bisect_right(self.nsec, name)
        return self.nsec[i - 1]

    def hashed(self, name: Name) -> str | None:
        """
        C{name}'s NSEC3 hash with the zone's parameters, or C{None} without
        NSEC3.
        """
        param = self.nsec3param
        if param is None:
            return None
        return dns.dnssec.nsec3_hash(
            name,
            param.salt,  # type: ignore[attr-defined]
            param.iterations,  # type: ignore[attr-defined]
            param.algorithm,  # type: ignore[attr-defined]
        ).upper()

    def nsec3Matching(self, name: Name) -> Name | None:
        """
        The owner of the NSEC3 record whose hash is C{name}'s, if any.
        """
        digest = self.hashed(name)
        return None if digest is None else self.nsec3.get(digest)

    def nsec3Covering(self, name: Name) -> Name | None:
        """
        The owner of the NSEC3 record whose hash range covers C{name}'s hash.
        """
        digest = self.hashed(name)
        if digest is None or not self._nsec3Hashes:
            return None
        i = bisect.bisect_left(self._nsec3Hashes, digest)
        return self.nsec3[self._nsec3Hashes[i - 1]]

    def denial(self, name: bytes, starts: list[int], nextCloser: int) -> int | None:
        """
        Where the name C{name} (in wire form, lower case, its labels
        starting at C{starts}) falls in the zone's NSEC or NSEC3 chain: two
        names under one closest encloser with the same answer here get the
        same NSEC or NSEC3 records in a denial (L{netplugins.dns.fastpath}).
        C{None} for an NSEC3 hash other than SHA-1.

        @param nextCloser: where in C{name} the next closer name starts (the
            name one label below the closest encloser).
        """
        param: Any = self.nsec3param
        if param is not None:
            if param.algorithm != 1:
                return None
            # RFC 5155's hash: SHA-1, salted, iterated.
            salt = param.salt
            digest = hashlib.sha1(name[nextCloser:] + salt, usedforsecurity=False)
            for _ in range(param.iterations):
                digest = hashlib.sha1(digest.digest() + salt, usedforsecurity=False)
            return bisect.bisect_left(
                self._nsec3Hashes, base64.b32hexencode(digest.digest()).decode("ascii")
            )
        if self.nsec:
            labels = [name[i + 1 : i + 1 + name[i]] for i in reversed(starts)]
            return bisect.bisect_right(self._nsecKeys, (b"", *labels))
        return 0


def loadZone(origin: str | Name, path: str, keys: Sequence[ZoneKey] = ()) -> Zone:
    """
    Read the BIND zone file C{path} for C{origin}, sign it with C{keys} if
    any (L{netplugins.dns.signing}), and index it.  Blocking: call it in a
    thread.

    @raise ZoneError: with a one-line reason, for a file that cannot be
        served (unreadable, a syntax error, no SOA at the origin, too big).
    """
    if isinstance(origin, str):
        origin = dns.name.from_text(origin)
    try:
        zone = dns.zone.from_file(
            path, origin, relativize=False, check_origin=True, allow_include=True
        )
    except (OSError, dns.exception.DNSException, ValueError, UnicodeError) as e:
        raise ZoneError(f"{path}: {e}") from None
    if keys:
        try:
            signZone(zone, keys)
        except (dns.exception.DNSException, ValueError) as e:
            raise ZoneError(f"{path}: cannot sign: {e}") from None
    return Zone(zone)
