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
does not hold answers alike), EDNS and DO.  Keys come from the zone, not
from the client: a flood of random names shares a handful of templates.

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

#: The most templates kept (all of them are dropped past it): bounded by the
#: zones anyway, this bounds their memory.
MAX_TEMPLATES = 100_000

#: Relocated bodies kept per template, by the change in length.
MAX_SHIFTS = 64

_HEADER = struct.Struct("!HHHHHH")
_FLAGS = struct.Struct("!H")
_QUESTION = struct.Struct("!HH")
#: OPT after its root owner: type, payload, extended RCODE, version, flags,
#: RDATA length.
_OPT = struct.Struct("!HHBBHH")
_POINTER = struct.Struct("!H")
_COUNTS = struct.Struct("!HHHH")

_QR = 0x8000
_RD_CD = 0x0100 | 0x0010
_AA_RCODE = 0x0400 | 0x000F
_DO = 0x8000
_OPT_TYPE = 41
_IN = 1
#: Types the fast path leaves to the engine: transfers, meta types, and DS
#: (answered from the parent side of a cut).
_GENERAL = frozenset((251, 252, _OPT_TYPE, 250, 249, DS))

#: What a template is keyed by: anchor, exact, type, EDNS, DO.
TemplateKey = tuple[bytes, bool, int, bool, int]


class Query:
    """
    A query in the fast path's shape, read by L{parse}.

    @ivar end: where the question ends.
    @ivar name: the question's name in wire form, lower case.
    @ivar labels: where each label of C{name} starts in it.
    """

    __slots__ = ("do", "edns", "end", "flags", "labels", "name", "payload", "qtype")

    def __init__(
        self,
        flags: int,
        name: bytes,
        labels: list[int],
        qtype: int,
        end: int,
        edns: bool,
        payload: int,
        do: int,
    ):
        self.flags = flags
        self.name = name
        self.labels = labels
        self.qtype = qtype
        self.end = end
        self.edns = edns
        self.payload = payload
        self.do = do


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
    if at - 12 > 255 or at + 4 > size:
        return None
    qtype, qclass = _QUESTION.unpack_from(data, at)
    end = at + 4
    if qclass != _IN:
        return None
    name = data[12:at].lower()
    if arcount == 0:
        if end != size:
            return None
        return Query(flags, name, labels, qtype, end, False, 0, 0)
    if size != end + 11 or data[end] != 0:
        return None
    rdtype, payload, extended, version, ednsflags, rdlength = _OPT.unpack_from(
        data, end + 1
    )
    if rdtype != _OPT_TYPE or extended or version or rdlength:
        return None
    return Query(flags, name, labels, qtype, end, True, payload, ednsflags & _DO)


class Template:
    """
    A reply after its question, made for one question and relocatable to
    others under the same anchor.

    @ivar head: the header's flags (RCODE, AA) and its counts but the
        question's.
    @ivar length: the length of the question's name it was made for.
    @ivar below: the suffixes of the reply's names that a question's labels
        below the anchor must not be.
    """

    __slots__ = ("below", "bodies", "head", "length", "pointers")

    def __init__(
        self,
        head: tuple[int, int, int, int],
        body: bytes,
        length: int,
        pointers: list[tuple[int, int]],
        below: frozenset[bytes],
    ):
        self.head = head
        self.length = length
        #: the compression pointers that move with the anchor: where they
        #: are in the body, and where they point
        self.pointers = pointers
        self.below = below
        #: the body for each change in length of the question's name
        self.bodies = {0: body}

    def body(self, shift: int) -> bytes:
        """
        The body for a question's name C{shift} bytes longer than the one
        the template was made for.
        """
        body = self.bodies.get(shift)
        if body is None:
            relocated = bytearray(self.bodies[0])
            for at, target in self.pointers:
                _POINTER.pack_into(relocated, at, 0xC000 | (target + shift))
            body = bytes(relocated)
            if len(self.bodies) < MAX_SHIFTS:
                self.bodies[shift] = body
        return body


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

    def setZone(self, zone: Zone) -> None:
        """
        Serve C{zone} (replacing the one with its origin); templates made
        from the others are dropped too.
        """
        self.zones[zone.originWire] = zone
        self.templates.clear()

    def reply(self, data: bytes, tcp: bool) -> bytes | None:
        """
        The reply to C{data}, or C{None} if the engine must make it.
        """
        query = parse(data)
        if query is None or query.qtype in _GENERAL:
            return None
        name = query.name
        labels = query.labels
        # The zone with the longest origin above or at the name.
        n = 0
        while True:
            if n == len(labels):
                return None  # outside our zones: REFUSED, or forwarded
            zone = self.zones.get(name[labels[n] :])
            if zone is not None:
                break
            n += 1
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
        if not exact and query.do and zone.signed and anchor not in zone.wireCuts:
            # Its NSEC or NSEC3 proofs are the name's own.
            return None
        qtype = query.qtype
        if qtype not in zone.types and qtype != ANY and qtype != RRSIG:
            qtype = -1  # NODATA or NXDOMAIN alike for any of them
        key = (anchor, exact, qtype, query.edns, query.do)
        templates = self.templates
        template = templates.get(key, _UNMADE)
        if template is _UNMADE:
            template = self._make(data, zone, query, anchor)
            if len(templates) >= MAX_TEMPLATES:
                templates.clear()
            templates[key] = template
        if template is None:
            return None
        shift = len(name) - template.length
        if not exact:
            below = template.below
            if below:
                for start in labels:
                    suffix = name[start:]
                    if len(suffix) == len(anchor):
                        break
                    if suffix in below:
                        return None
        flags, *counts = template.head
        reply = b"".join(
            (
                data[:2],
                _FLAGS.pack(_QR | (query.flags & _RD_CD) | flags),
                _COUNTS.pack(1, *counts),
                data[12 : query.end],
                template.body(shift),
            )
        )
        if tcp:
            return reply
        if query.edns:
            limit = max(512, min(query.payload, self.payload))
        else:
            limit = 512
        return reply if len(reply) <= limit else None

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
        name = query.name
        depth = len(anchor)
        below = {s for s in below if len(s) > depth and s.endswith(anchor)}
        if any(name[start:] in below for start in query.labels):
            return None
        end = query.end
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
