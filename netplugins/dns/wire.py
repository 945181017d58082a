# -*- test-case-name: tests.test_dns -*-
"""
Rendering answers to wire form without dnspython's general renderer, which
compresses every name in every record and dominated the time of an answer.
Here a record is its owner name (compressed against the names already
written) followed by bytes made once per RRset: type, class, TTL, length and
RDATA; the names in the RDATA of NS, CNAME, PTR, MX and SOA are compressed
too, as NSD does, the others never (RFC 3597 section 4).  Whole RRsets that
do not fit are left out, with TC set when they belong to the answer or
authority section, as dnspython's renderer does.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, TypeAlias

from dns.name import Name
from dns.rdatatype import RdataType
from dns.rrset import RRset

_RR = struct.Struct("!HHIH")
_HEADER = struct.Struct("!HHHHHH")
_POINTER = struct.Struct("!H")

_QR = 0x8000
_AA = 0x0400
_TC = 0x0200

#: The OPT record's fixed part: root owner, type 41, payload, extended RCODE
#: 0, version 0, flags, options length.
_OPT = struct.Struct("!BHHBBHH")


#: A record after its owner name: bytes made once, or, for the types whose
#: RDATA names are compressed, the type/class/TTL bytes and the RDATA's parts
#: (bytes, and names to compress).
Record: TypeAlias = bytes | tuple[bytes, tuple[bytes | Name, ...]]

_TTL = struct.Struct("!HHI")
_SOA_NUMBERS = struct.Struct("!IIIII")


def _parts(rdata: Any) -> tuple[bytes | Name, ...] | None:
    """
    The RDATA of the RFC 1035 types NSD (and BIND) compress, as bytes and
    names; C{None} for other types, whose RDATA is written whole.
    """
    rdtype = rdata.rdtype
    if rdtype in (RdataType.NS, RdataType.CNAME, RdataType.PTR):
        return (rdata.target,)
    if rdtype == RdataType.MX:
        return (_POINTER.pack(rdata.preference), rdata.exchange)
    if rdtype == RdataType.SOA:
        numbers = _SOA_NUMBERS.pack(
            rdata.serial, rdata.refresh, rdata.retry, rdata.expire, rdata.minimum
        )
        return (rdata.mname, rdata.rname, numbers)
    return None


def recordBytes(rrset: RRset) -> tuple[Record, ...]:
    """
    Each record of C{rrset} after its owner name, in wire form (or in parts,
    see L{Record}).
    """
    out: list[Record] = []
    for rdata in rrset:
        parts = _parts(rdata)
        if parts is not None:
            out.append((_TTL.pack(rrset.rdtype, rrset.rdclass, rrset.ttl), parts))
            continue
        data = rdata.to_wire()
        assert data is not None
        out.append(_RR.pack(rrset.rdtype, rrset.rdclass, rrset.ttl, len(data)) + data)
    return tuple(out)


class Renderer:
    """
    One message being written.
    """

    __slots__ = ("counts", "dropped", "out", "pointers", "table", "truncated")

    def __init__(self, header: bytes, question: bytes, qname: Name):
        self.out = bytearray(header)
        self.counts = [1, 0, 0, 0]
        self.table: dict[tuple[bytes, ...], int] = {}
        self.truncated = False
        #: whether an RRset was left out (TC or not)
        self.dropped = False
        #: where the compression pointers are, in order, for relocating the
        #: message (L{netplugins.dns.fastpath})
        self.pointers: list[int] = []
        self._remember(qname, _HEADER.size)
        self.out += question

    def _remember(self, name: Name, offset: int) -> None:
        """
        Note where C{name}'s suffixes are, C{name} being written at
        C{offset}, until one already noted (the pointer there).
        """
        labels = name.labels
        for i in range(len(labels) - 1):
            key = tuple(label.lower() for label in labels[i:])
            if offset >= 0x4000 or key in self.table:
                return
            self.table[key] = offset
            offset += len(labels[i]) + 1

    def _write(self, name: Name) -> None:
        """
        Write C{name}, its longest suffix already written replaced by a
        pointer, and note where its new suffixes are.
        """
        labels = name.labels
        out = self.out
        for i in range(len(labels) - 1):
            key = tuple(label.lower() for label in labels[i:])
            offset = self.table.get(key)
            if offset is not None:
                self.pointers.append(len(out))
                out += _POINTER.pack(0xC000 | offset)
                return
            if len(out) < 0x4000:
                self.table[key] = len(out)
            out.append(len(labels[i]))
            out += labels[i]
        out.append(0)

    def add(
        self, section: int, rrset: RRset, records: Sequence[Record], limit: int
    ) -> bool:
        """
        Add C{rrset} (its C{records} from L{recordBytes}) to C{section} (1
        answer, 2 authority, 3 additional) if the whole of it fits in
        C{limit} bytes; if not, TC is set for the answer and authority
        sections.

        @return: whether it fit.
        """
        out = self.out
        start = len(out)
        noted = len(self.table)
        pointers = len(self.pointers)
        self._write(rrset.name)
        owner = bytes(out[start:])
        # The RRset's other records point at the first one's owner.
        pure = len(owner) == 2 and owner[0] & 0xC0 == 0xC0
        later = owner if pure or start >= 0x4000 else _POINTER.pack(0xC000 | start)
        for i, record in enumerate(records):
            if i:
                if later is not owner or pure:
                    self.pointers.append(len(out))
                out += later
            if isinstance(record, bytes):
                out += record
                continue
            head, parts = record
            out += head
            lengthAt = len(out)
            out += b"\0\0"
            for part in parts:
                if isinstance(part, bytes):
                    out += part
                else:
                    self._write(part)
            _POINTER.pack_into(out, lengthAt, len(out) - lengthAt - 2)
        if len(out) > limit:
            del out[start:]
            for key in list(self.table)[noted:]:
                del self.table[key]
            del self.pointers[pointers:]
            self.dropped = True
            if section < 3:
                self.truncated = True
            return False
        self.counts[section] += len(records)
        return True

    def finish(self, opt: bytes | None) -> bytes:
        """
        The message, with C{opt} (an OPT record) at the end when given and
        the header's counts and TC filled in.
        """
        if opt is not None:
            self.out += opt
            self.counts[3] += 1
        ident, flags = struct.unpack_from("!HH", self.out)
        if self.truncated:
            flags |= _TC
        _HEADER.pack_into(self.out, 0, ident, flags, *self.counts)
        return bytes(self.out)


def optRecord(payload: int, flags: int, options: bytes = b"") -> bytes:
    """
    An OPT record (EDNS version 0) advertising C{payload}, with C{flags}
    (DO) and C{options} (already in wire form).
    """
    return _OPT.pack(0, 41, payload, 0, 0, flags, len(options)) + options
