# -*- test-case-name: tests.test_dns_fastpath -*-
"""
The fast path: the common query (opcode QUERY, one question of class IN, no
EDNS or an OPT without options) read straight from its bytes, and answered
from a template, the reply made once by the engine's own answer logic.

A reply depends on the question only through what the zone walk finds for
the name: the name itself when it exists, or the closest encloser (a
wildcard below it, or nothing: NXDOMAIN), or a delegation above it.  So
templates are keyed by that name of the zone (the I{anchor}), whether the
question asked for it or for a name below it, the type (every type the zone
does not hold answers alike), EDNS and DO, and with DO in a signed zone, for
a name that does not exist, the NSEC or NSEC3 record its denial carries
(L{Zone.denial}: the NSEC before it in canonical order, the NSEC3 whose
range holds its next closer name's hash).  Keys come from the zone, not from
the client: a flood of random names shares a handful of templates.

A template is the reply after its question, made for one question; for
another name under the same anchor, the compression pointers past the
anchor's place in the question move by the difference in the names'
lengths (the question is copied from the query, so its case is kept, and
the owner names that point at it follow).  A template is made only when
the relocation gives the same bytes the engine would render: no DNAME (its
CNAME spells the name asked), nothing left out for size, under 16 KiB (the
reach of a pointer), and no name of the reply within the labels the
question has below the anchor (checked again for each question).  Anything
else, and any reply longer than the client takes over UDP, goes the general
way (L{netplugins.dns.server.Engine}).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from netplugins.dns.answer import ANY, Answer
from netplugins.dns.zone import DNAME, DS, RRSIG, Zone, nameKey, wireKey

if TYPE_CHECKING:
    from dns.name import Name

#: The most templates kept, and the most bytes of reply they hold (all of
#: them are dropped past either): bounded by the zones anyway, this bounds
#: their memory.
MAX_TEMPLATES = 100_000
MAX_TEMPLATE_BYTES = 32 * 1024 * 1024

#: Relocated bodies kept per template, by the change in length.
MAX_SHIFTS = 8

_HEADER = struct.Struct("!HHHHHH")
_QUESTION = struct.Struct("!HH")
#: OPT after its root owner: type, payload, extended RCODE, version, flags,
#: RDATA length.
_OPT = struct.Struct("!HHBBHH")
_POINTER = struct.Struct("!H")
_HEAD = struct.Struct("!HHHHH")

_QR = 0x8000
_RD_CD = 0x0100 | 0x0010
_AA_RCODE = 0x0400 | 0x000F
_DO = 0x8000
_OPT_TYPE = 41
_IN = 1
#: Types the fast path leaves to the engine: transfers, meta types, and DS
#: (answered from the parent side of a cut).
_GENERAL = frozenset((251, 252, _OPT_TYPE, 250, 249, DS))

#: What a template is keyed by: anchor, exact, type, EDNS, DO, denial (see
#: L{Zone.denial}).
TemplateKey = tuple[bytes, bool, int, bool, int, int]


#: A query read by L{parse}: its flags, its name in wire form (lower case),
#: where each label of the name starts in it, the type, where the question
#: ends, whether it has EDNS, its payload and its DO bit.
Query = tuple[int, bytes, list[int], int, int, bool, int, int]


def parse(data: bytes) -> Query | None:
    """
    C{data} as a L{Query}, or C{None} when it is not one: another opcode,
    not exactly one question, records other than one OPT (version 0, no
    options), a compression pointer or a bad length in the name, trailing
    bytes.
    """
    size = len(data)
    if size < 17 or data[4:10] != b"\0\1\0\0\0\0":
        return None
    flags, arcount = data[2] << 8 | data[3], data[10] << 8 | data[11]
    if flags & 0xF800 or arcount > 1:
        return None  # a response, another opcode; TSIG, several records
    labels = []
    at = 12
    while True:
        length = data[at]
        if length == 0:
            break
        if length > 63:
            return None  # a pointer, or a reserved label type
        labels.append(at - 12)
        at += length + 1
        if at >= size:
            return None
    at += 1
    end = at + 4
    if at > 267 or end > size:
        return None
    qtype, qclass = _QUESTION.unpack_from(data, at)
    if qclass != _IN:
        return None
    if arcount == 0:
        if end != size:
            return None
        return (flags, data[12:at].lower(), labels, qtype, end, False, 0, 0)
    if size != end + 11 or data[end] != 0:
        return None
    rdtype, payload, extended, version, ednsflags, rdlength = _OPT.unpack_from(
        data, end + 1
    )
    if rdtype != _OPT_TYPE or extended or version or rdlength:
        return None
    name = data[12:at].lower()
    return (flags, name, labels, qtype, end, True, payload, ednsflags & _DO)


class Template:
    """
    A reply after its question, made for one question and relocatable to
    others under the same anchor.

    @param head: the header's flags (RCODE, AA) and its counts but the
        question's.
    @ivar length: the length of the question's name it was made for.
    @ivar below: the suffixes of the reply's names that a question's labels
        below the anchor must not be.
    """

    __slots__ = ("below", "bodies", "heads", "length", "pointers")

    def __init__(
        self,
        head: tuple[int, int, int, int],
        body: bytes,
        length: int,
        pointers: list[tuple[int, int]],
        below: frozenset[bytes],
    ):
        flags, *counts = head
        #: the header but its ID, by the query's RD and CD bits
        self.heads = {
            bits: _HEAD.pack(_QR | bits | flags, 1, *counts)
            for bits in (0, 0x0010, 0x0100, 0x0110)
        }
        self.length = length
        #: the compression pointers that move with the anchor: where they
        #: are in the body, and where they point
        self.pointers = pointers
        self.below = below
        #: the body for each change in length of the question's name
        self.bodies = {0: body}

    def relocated(self, shift: int) -> bytes:
        """
        The body for a question's name C{shift} bytes longer than the one
        the template was made for.
        """
        body = bytearray(self.bodies[0])
        for at, target in self.pointers:
            _POINTER.pack_into(body, at, 0xC000 | (target + shift))
        return bytes(body)


def _names(zone: Zone, found: Answer, qname: Name) -> set[bytes] | None:
    """
    Every suffix (in wire form) of every name a reply carrying C{found}
    writes where the renderer compresses names (owners, the names in NS,
    CNAME, PTR, MX and SOA data), but the owners standing for C{qname} (a
    wildcard's records made for it); C{None} if the reply spells part of
    the name asked (a DNAME's CNAME).
    """
    names: set[Name] = set()
    for section in (found.answer, found.authority, found.additional):
        for rrset in section:
            if rrset.rdtype == DNAME:
                return None
            if id(rrset) in zone.wire or rrset.name != qname:
                names.add(rrset.name)
            for rdata in rrset:
                for field in ("target", "exchange", "mname", "rname"):
                    name = getattr(rdata, field, None)
                    if name is not None:
                        names.add(name)
    suffixes: set[bytes] = set()
    for name in names:
        key = nameKey(name)
        suffixes.update(wireKey(key[i:]) for i in range(len(key)))
    return suffixes


#: Not yet made (C{None} in L{FastPath.templates} is: cannot be made).
_UNMADE = Template((0, 0, 0, 0), b"", 0, [], frozenset())


class FastPath:
    """
    Replies to queries of the fast path's shape from templates.

    @ivar zones: origin (in wire form, lower case) to zone.
    @ivar payload: the EDNS payload advertised, and the UDP maximum.
    @ivar make: renders the whole reply to a query (no size limit) for a
        template: C{(data, zone, payload limit)} to the reply, the offsets
        of its compression pointers, whether something was left out and
        the answer; C{None} if it must not be templated.
    """

    def __init__(
        self,
        payload: int,
        make: Callable[
            [bytes, Zone], tuple[bytes, list[int], bool, Answer, Name] | None
        ],
    ):
        self.payload = payload
        self.make = make
        self.zones: dict[bytes, Zone] = {}
        self.templates: dict[TemplateKey, Template | None] = {}
        #: the bytes of reply the templates hold
        self.size = 0

    def setZone(self, zone: Zone) -> None:
        """
        Serve C{zone} (replacing the one with its origin); templates made
        from the others are dropped too.
        """
        self.zones[zone.originWire] = zone
        self._forget()

    def _forget(self) -> None:
        self.templates.clear()
        self.size = 0

    def reply(self, data: bytes, tcp: bool) -> bytes | None:
        """
        The reply to C{data}, or C{None} if the engine must make it.
        """
        query = parse(data)
        if query is None:
            return None
        flags, name, labels, qtype, end, edns, payload, do = query
        if qtype in _GENERAL:
            return None
        # The zone with the longest origin above or at the name.
        zones = self.zones
        n = 0
        for start in labels:
            zone = zones.get(name[start:])
            if zone is not None:
                break
            n += 1
        else:
            return None  # outside our zones: REFUSED, or forwarded
        # Down from the origin as answer._step walks: the first delegation,
        # or the closest encloser.
        anchor = name
        for i in range(n - 1, -1, -1):
            suffix = name[labels[i] :]
            if suffix in zone.wireCuts:
                anchor = suffix
                break
            if i and suffix in zone.wireDNames:
                return None
            if suffix not in zone.wireNames:
                anchor = name[labels[i + 1] :]
                break
        exact = len(anchor) == len(name)
        denial = 0
        if not exact and do and zone.signed and anchor not in zone.wireCuts:
            # The NSEC or NSEC3 records proving the name does not exist.
            proof = zone.denial(name, labels, labels[i])
            if proof is None:
                return None
            denial = proof
        if qtype not in zone.types and qtype != ANY and qtype != RRSIG:
            qtype = -1  # NODATA or NXDOMAIN alike for any of them
        key = (anchor, exact, qtype, edns, do, denial)
        templates = self.templates
        template = templates.get(key, _UNMADE)
        if template is _UNMADE:
            template = self._make(data, zone, query, anchor)
            if len(templates) >= MAX_TEMPLATES or self.size > MAX_TEMPLATE_BYTES:
                self._forget()
            templates[key] = template
            if template is not None:
                self.size += len(template.bodies[0])
        if template is None:
            return None
        if exact:
            body = template.bodies[0]
        else:
            below = template.below
            if below:
                for start in labels:
                    suffix = name[start:]
                    if len(suffix) == len(anchor):
                        break
                    if suffix in below:
                        return None
            shift = len(name) - template.length
            bodies = template.bodies
            moved = bodies.get(shift)
            if moved is None:
                moved = template.relocated(shift)
                if len(bodies) < MAX_SHIFTS and self.size < MAX_TEMPLATE_BYTES:
                    bodies[shift] = moved
                    self.size += len(moved)
            body = moved
        reply = data[:2] + template.heads[flags & _RD_CD] + data[12:end] + body
        if tcp:
            return reply
        if len(reply) <= 512:
            return reply
        if edns and len(reply) <= payload and len(reply) <= self.payload:
            return reply
        return None

    def _make(
        self, data: bytes, zone: Zone, query: Query, anchor: bytes
    ) -> Template | None:
        made = self.make(data, zone)
        if made is None:
            return None
        reply, pointers, dropped, found, qname = made
        if dropped or len(reply) >= 0x4000:
            return None
        below = _names(zone, found, qname)
        if below is None:
            return None
        _, name, labels, _, end, _, _, _ = query
        depth = len(anchor)
        below = {s for s in below if len(s) > depth and s.endswith(anchor)}
        if any(name[start:] in below for start in labels):
            return None
        # The anchor's place in the question: pointers at or past it move
        # with it; one to the name itself (offset 12) is the name asked.
        at = 12 + len(name) - depth
        moving = []
        for offset in pointers:
            (pointer,) = _POINTER.unpack_from(reply, offset)
            target = pointer & 0x3FFF
            if target >= at:
                moving.append((offset - end, target))
            elif target != 12:
                return None
        _, flags, _, ancount, nscount, arcount = _HEADER.unpack_from(reply)
        return Template(
            (flags & _AA_RCODE, ancount, nscount, arcount),
            reply[end:],
            len(name),
            moving,
            frozenset(below),
        )
