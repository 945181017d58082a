# -*- test-case-name: tests.test_dns -*-
"""
Authoritative answers, as RFC 1034 section 4.3.2 lays out the algorithm:
find the zone, walk down from its apex towards the name (a delegation gives a
referral, a DNAME a synthesized CNAME), then answer from the name, from a
wildcard (RFC 4592), or deny it with the SOA (RFC 2308); CNAMEs are chased
within the zone, empty non-terminals exist (RFC 8020).  With the DO bit the
answer carries the zone's RRSIGs and NSEC or NSEC3 proofs (RFC 4035, 5155).
"""

from __future__ import annotations

from collections.abc import Iterable

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rrset
from dns.name import Name
from dns.rrset import RRset

from netplugins.dns.zone import (
    AAAA,
    CNAME,
    DNAME,
    DS,
    NS,
    NSEC,
    NSEC3,
    RRSIG,
    A,
    Node,
    Zone,
    nameKey,
)

#: The longest CNAME/DNAME chain followed within a zone.
MAX_CHAIN = 8

_WILD = b"*"
ANY = 255
MX = 15
SRV = 33
#: Types whose target names get their addresses in the additional section.
_ADDITIONAL = {NS: "target", MX: "exchange", SRV: "target"}


class Answer:
    """
    What the zone says: the RCODE, whether it is authoritative, and the
    three sections (lists of RRsets, no duplicates).
    """

    __slots__ = ("aa", "additional", "answer", "authority", "complete", "rcode")

    def __init__(self) -> None:
        self.rcode = dns.rcode.NOERROR
        self.aa = True
        #: whether the type asked for was found (at the end of any chain)
        self.complete = False
        self.answer: list[RRset] = []
        self.authority: list[RRset] = []
        self.additional: list[RRset] = []

    @staticmethod
    def _add(section: list[RRset], rrsets: Iterable[RRset | None]) -> None:
        # The zone's RRsets are shared objects, and the ones made per answer
        # (wildcard copies, DNAME's CNAME) are made once: identity is enough
        # to keep a section free of duplicates.
        for rrset in rrsets:
            if rrset is not None and not any(r is rrset for r in section):
                section.append(rrset)


def findZone(zones: dict[Name, Zone], qname: Name, qtype: int) -> Zone | None:
    """
    The zone that answers for C{qname}: the one with the longest origin
    above or at it.  A DS record lives on the parent side of a cut, so a DS
    question for an apex goes to the parent zone when it is served here.
    """
    name = qname
    while True:
        zone = zones.get(name)
        if zone is not None and not (
            qtype == DS
            and name == qname
            and name != name.parent()
            and _parentServed(zones, name)
        ):
            return zone
        if name == dns.name.root:
            return None
        name = name.parent()


def _parentServed(zones: dict[Name, Zone], name: Name) -> bool:
    while name != dns.name.root:
        name = name.parent()
        if name in zones:
            return True
    return False


def _signed(node: Node | None, rdtype: int, dnssec: bool) -> list[RRset | None]:
    """
    The RRset of C{rdtype} at C{node}, and its RRSIG when C{dnssec}.
    """
    if node is None:
        return []
    rrset = node.rrsets.get(rdtype)
    if rrset is None:
        return []
    if dnssec:
        return [rrset, node.sigs.get(rdtype)]
    return [rrset]


def _renamed(rrset: RRset | None, owner: Name) -> RRset | None:
    """
    A copy of C{rrset} owned by C{owner}: a wildcard's data as it answers for
    a name it matched.
    """
    if rrset is None:
        return None
    copy = dns.rrset.RRset(owner, rrset.rdclass, rrset.rdtype, rrset.covers)
    copy.update(rrset)
    return copy


def answer(zone: Zone, qname: Name, qtype: int, dnssec: bool) -> Answer:
    """
    Answer C{qname}/C{qtype} (class IN) from C{zone}.

    @param dnssec: whether the query set DO: include RRSIGs and proofs.
    """
    result = Answer()
    dnssec = dnssec and zone.signed
    seen: set[Name] = set()
    name = qname
    for _ in range(MAX_CHAIN + 1):
        if name in seen:
            break
        seen.add(name)
        following = _step(zone, name, qtype, dnssec, result)
        if following is None or not following.is_subdomain(zone.origin):
            break
        name = following
    if result.complete:
        # As NSD does (and BIND without minimal-responses): a positive
        # answer names the zone's servers, with their addresses.
        apex = zone.nodes[zone.originKey]
        ns = apex.rrsets.get(NS)
        if ns is not None and not any(r is ns for r in result.answer):
            result._add(result.authority, _signed(apex, NS, dnssec))
            _additional(zone, ns, dnssec, result)
    return result


def _step(
    zone: Zone, qname: Name, qtype: int, dnssec: bool, result: Answer
) -> Name | None:
    """
    One name of a chain: add what the zone says about C{qname} to
    C{result}; return the name a CNAME or DNAME leads to, if any.
    """
    # Names as keys (lower-cased label tuples): the walk makes no Name.
    key = nameKey(qname)
    labels = qname.labels
    depth = len(key) - len(zone.originKey)
    found = 0  # how many labels below the origin the closest encloser has
    for i in range(depth - 1, -1, -1):
        suffix = key[i:]
        if suffix in zone.cuts and not (i == 0 and qtype == DS):
            _referral(zone, Name(labels[i:]), dnssec, result)
            return None
        if i and suffix in zone.dnames:
            return _dname(zone, qname, Name(labels[i:]), dnssec, result)
        if suffix not in zone.names:
            break
        found = depth - i
    if found == depth:
        node = zone.nodes.get(key)
        return _fromNode(zone, qname, qname, node, qtype, dnssec, result)
    encloser = Name(labels[depth - found :])
    wildcard = Name((_WILD, *encloser.labels))
    node = zone.nodes.get((_WILD, *key[depth - found :]))
    if node is not None:
        following = _fromNode(zone, qname, wildcard, node, qtype, dnssec, result)
        if dnssec:
            # Prove that qname itself does not exist (RFC 4035 3.1.3.3).
            if zone.nsec3param is not None:
                result._add(
                    result.authority,
                    _nsec3(zone, _nextCloser(qname, encloser), covering=True),
                )
            else:
                result._add(result.authority, _nsec(zone, qname))
        return following
    # A chain ending at a name that does not exist is NXDOMAIN (RFC 6604).
    result.rcode = dns.rcode.NXDOMAIN
    _negative(zone, result, dnssec)
    if dnssec:
        _denyName(zone, qname, encloser, result)
    return None


def _fromNode(
    zone: Zone,
    qname: Name,
    owner: Name,
    node: Node | None,
    qtype: int,
    dnssec: bool,
    result: Answer,
) -> Name | None:
    """
    Answer from the node at C{owner} (C{qname} itself, or the wildcard that
    matched it): the RRset asked for, a CNAME to follow, or NODATA.
    """
    wild = owner != qname
    rrsets = node.rrsets if node is not None else {}
    assert node is not None or not wild

    def own(found: list[RRset | None]) -> list[RRset | None]:
        return [_renamed(r, qname) for r in found] if wild else found

    if qtype == ANY and rrsets:
        # One RRset, the first (RFC 8482 section 4.2, as NSD answers).
        first = next(iter(rrsets.values()))
        result._add(result.answer, own(_signed(node, first.rdtype, dnssec)))
        _additional(zone, first, dnssec, result)
        return None
    if qtype in rrsets:
        # A DS answered from the parent side of a cut says nothing of the
        # zone's servers (NSD adds none).
        result.complete = not (qtype == DS and nameKey(owner) in zone.cuts)
        found = own(_signed(node, qtype, dnssec))
        result._add(result.answer, found)
        _additional(zone, rrsets[qtype], dnssec, result)
        return None
    if qtype == RRSIG and node is not None and node.sigs:
        result.complete = True
        result._add(result.answer, own(list(node.sigs.values())))
        return None
    cname = rrsets.get(CNAME)
    if cname is not None:
        result._add(result.answer, own(_signed(node, CNAME, dnssec)))
        return cname[0].target  # type: ignore[attr-defined,no-any-return]
    # NODATA: the name exists, the type does not.
    _negative(zone, result, dnssec)
    if dnssec:
        if zone.nsec3param is not None:
            result._add(result.authority, _nsec3(zone, owner, covering=False))
            if owner.labels[0] == _WILD:
                # Wildcard NODATA (RFC 5155 7.2.5): the closest encloser,
                # and for a name the wildcard matched, the next closer name.
                encloser = owner.parent()
                result._add(result.authority, _nsec3(zone, encloser, covering=False))
                if wild:
                    result._add(
                        result.authority,
                        _nsec3(zone, _nextCloser(qname, encloser), covering=True),
                    )
        elif node is not None and NSEC in rrsets:
            result._add(result.authority, _signed(node, NSEC, True))
            if wild:
                result._add(result.authority, _nsec(zone, qname))
        else:
            # An empty non-terminal has no NSEC: the one before it covers it.
            result._add(result.authority, _nsec(zone, qname))
    return None


def _additional(zone: Zone, rrset: RRset, dnssec: bool, result: Answer) -> None:
    """
    Addresses of the names an NS, MX or SRV RRset points to, from the zone.
    """
    field = _ADDITIONAL.get(rrset.rdtype)
    if field is None:
        return
    for rdata in rrset:
        target = getattr(rdata, field)
        node = zone.node(target)
        if node is not None:
            result._add(result.additional, _signed(node, A, dnssec))
            result._add(result.additional, _signed(node, AAAA, dnssec))


def _negative(zone: Zone, result: Answer, dnssec: bool) -> None:
    """
    The SOA a negative answer carries in its authority section.
    """
    result._add(result.authority, [zone.negativeSOA])
    if dnssec:
        result._add(result.authority, [zone.negativeSOASig])


def _referral(zone: Zone, cut: Name, dnssec: bool, result: Answer) -> None:
    """
    A referral to the delegation at C{cut}: its NS, with DNSSEC its DS or the
    proof that there is none, and the glue.
    """
    node = zone.node(cut)
    assert node is not None
    if not result.answer:
        result.aa = False
    ns = node.rrsets[NS]
    result._add(result.authority, [ns])
    if dnssec:
        if DS in node.rrsets:
            result._add(result.authority, _signed(node, DS, True))
        elif zone.nsec3param is not None:
            matching = zone.nsec3Matching(cut)
            if matching is not None:
                result._add(result.authority, _nsec3At(zone, matching))
            else:
                encloser = _closestProvable(zone, cut)
                result._add(
                    result.authority,
                    _nsec3(zone, encloser, covering=False)
                    + _nsec3(zone, _nextCloser(cut, encloser), covering=True),
                )
        elif NSEC in node.rrsets:
            result._add(result.authority, _signed(node, NSEC, True))
    for rdata in ns:
        target = rdata.target  # type: ignore[attr-defined]
        glue = zone.node(target)
        if glue is not None:
            result._add(result.additional, _signed(glue, A, False))
            result._add(result.additional, _signed(glue, AAAA, False))


def _dname(
    zone: Zone, qname: Name, owner: Name, dnssec: bool, result: Answer
) -> Name | None:
    """
    The DNAME at C{owner} and the CNAME it synthesizes for C{qname} (RFC
    6672); YXDOMAIN when the new name would be too long.
    """
    node = zone.node(owner)
    assert node is not None
    dname = node.rrsets[DNAME]
    result._add(result.answer, _signed(node, DNAME, dnssec))
    try:
        target = qname.relativize(owner).derelativize(dname[0].target)  # type: ignore[attr-defined]
    except dns.name.NameTooLong:
        result.rcode = dns.rcode.YXDOMAIN
        return None
    cname = dns.rrset.from_text(
        qname, dname.ttl, dns.rdataclass.IN, CNAME, target.to_text()
    )
    result._add(result.answer, [cname])
    return target


def _nextCloser(qname: Name, encloser: Name) -> Name:
    """
    The name one label longer than C{encloser} on the way to C{qname}.
    """
    return Name(qname.labels[-(len(encloser.labels) + 1) :])


def _closestProvable(zone: Zone, name: Name) -> Name:
    while name != zone.origin:
        name = name.parent()
        if zone.nsec3Matching(name) is not None:
            return name
    return name


def _nsec(zone: Zone, name: Name) -> list[RRset | None]:
    """
    The NSEC record covering or matching C{name}, with its RRSIG.
    """
    owner = zone.covering(name)
    if owner is None:
        return []
    return _signed(zone.node(owner), NSEC, True)


def _nsec3At(zone: Zone, owner: Name) -> list[RRset | None]:
    return _signed(zone.node(owner), NSEC3, True)


def _nsec3(zone: Zone, name: Name, covering: bool) -> list[RRset | None]:
    """
    The NSEC3 record matching (or, with C{covering}, covering) C{name}'s
    hash, with its RRSIG.
    """
    owner = zone.nsec3Covering(name) if covering else zone.nsec3Matching(name)
    if owner is None:
        return []
    return _nsec3At(zone, owner)


def _denyName(zone: Zone, qname: Name, encloser: Name, result: Answer) -> None:
    """
    Prove NXDOMAIN: nothing at C{qname} and no wildcard at its closest
    encloser (RFC 4035 3.1.3.2, RFC 5155 7.2.2).
    """
    wildcard = Name((_WILD, *encloser.labels))
    if zone.nsec3param is not None:
        result._add(
            result.authority,
            _nsec3(zone, encloser, covering=False)
            + _nsec3(zone, _nextCloser(qname, encloser), covering=True)
            + _nsec3(zone, wildcard, covering=True),
        )
    else:
        result._add(result.authority, _nsec(zone, qname) + _nsec(zone, wildcard))
