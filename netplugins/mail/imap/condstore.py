"""
The parsing and formatting np-imap's CONDSTORE and QRESYNC (RFC 7162) need:
mod-sequence values, the modifiers of SELECT, FETCH and STORE, and UID sets
kept as ranges (C{VANISHED} answers stay as long as the ranges, never as
long as the UIDs they cover).

The store keeps the mod-sequences (L{netplugins.mail.maildir.modseq}); the
commands are in L{netplugins.mail.imap.selected}.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from attrs import frozen

from netplugins.mail.imap.parse import (
    IMAPSyntaxError,
    SequenceSet,
    Token,
    parseSequenceSet,
)
from netplugins.mail.maildir.modseq import Ranges, intersectRanges, mergeRanges

#: RFC 7162's mod-sequence-value: 63 bits.
MAX_MODSEQ = 2**63 - 1
#: How many ranges one C{VANISHED} response carries (longer sets are sent
#: as several responses).
RANGES_PER_LINE = 200
_DIGITS = re.compile(r"[0-9]{1,19}\Z")


def parseModseq(token: Token, zero: bool = False) -> int:
    """
    A mod-sequence value (C{zero}: or 0, RFC 7162's mod-sequence-valzer).

    @raise IMAPSyntaxError: otherwise.
    """
    if not isinstance(token, str) or not _DIGITS.match(token):
        raise IMAPSyntaxError("expected a mod-sequence")
    value = int(token)
    if value > MAX_MODSEQ or (value == 0 and not zero):
        raise IMAPSyntaxError("invalid mod-sequence")
    return value


@frozen
class FetchModifiers:
    """
    FETCH's modifiers: C{(CHANGEDSINCE n [VANISHED])}.
    """

    changedSince: int | None = None
    vanished: bool = False


def parseFetchModifiers(token: Token) -> FetchModifiers:
    """
    FETCH's modifier list.

    @raise IMAPSyntaxError: for anything but CHANGEDSINCE and VANISHED, or
        VANISHED without CHANGEDSINCE.
    """
    if not isinstance(token, list) or not token:
        raise IMAPSyntaxError("expected FETCH modifiers")
    changedSince = None
    vanished = False
    items = list(token)
    while items:
        name = items.pop(0)
        upper = name.upper() if isinstance(name, str) else ""
        if upper == "CHANGEDSINCE" and items and changedSince is None:
            changedSince = parseModseq(items.pop(0))
        elif upper == "VANISHED" and not vanished:
            vanished = True
        else:
            raise IMAPSyntaxError("unknown FETCH modifier")
    if vanished and changedSince is None:
        raise IMAPSyntaxError("VANISHED needs CHANGEDSINCE")
    return FetchModifiers(changedSince, vanished)


def parseStoreModifiers(token: Token) -> int:
    """
    STORE's modifier list: C{(UNCHANGEDSINCE n)}, n possibly 0.

    @return: n.
    @raise IMAPSyntaxError: otherwise.
    """
    if (
        not isinstance(token, list)
        or len(token) != 2
        or not isinstance(token[0], str)
        or token[0].upper() != "UNCHANGEDSINCE"
    ):
        raise IMAPSyntaxError("unknown STORE modifier")
    return parseModseq(token[1], zero=True)


@frozen
class Qresync:
    """
    SELECT's C{(QRESYNC (uidvalidity modseq [known-uids [seq-match]]))}.
    """

    uidValidity: int
    modseq: int
    knownUids: SequenceSet | None = None


@frozen
class SelectParameters:
    """
    SELECT's and EXAMINE's parameters.
    """

    condstore: bool = False
    qresync: Qresync | None = None


def parseSelectParameters(token: Token) -> SelectParameters:
    """
    SELECT's parameter list: C{CONDSTORE} and C{QRESYNC (...)}.

    @raise IMAPSyntaxError: for anything else.
    """
    if not isinstance(token, list):
        raise IMAPSyntaxError("expected SELECT parameters")
    items = list(token)
    condstore = False
    qresync = None
    while items:
        name = items.pop(0)
        upper = name.upper() if isinstance(name, str) else ""
        if upper == "CONDSTORE" and not condstore:
            condstore = True
        elif upper == "QRESYNC" and qresync is None and items:
            qresync = _parseQresync(items.pop(0))
        else:
            raise IMAPSyntaxError("unknown SELECT parameter")
    return SelectParameters(condstore, qresync)


def _parseQresync(token: Token) -> Qresync:
    if not isinstance(token, list) or not 2 <= len(token) <= 4:
        raise IMAPSyntaxError("QRESYNC needs a UIDVALIDITY and a mod-sequence")
    validity = token[0]
    if not isinstance(validity, str) or not re.match(r"[1-9][0-9]{0,9}\Z", validity):
        raise IMAPSyntaxError("invalid UIDVALIDITY")
    known = parseSequenceSet(token[2]) if len(token) > 2 else None
    if len(token) > 3:
        # The sequence match data only saves a server without history
        # work; ours has it (or answers with a superset): checked, unused.
        match = token[3]
        if not isinstance(match, list) or len(match) != 2:
            raise IMAPSyntaxError("invalid sequence match data")
        parseSequenceSet(match[0])
        parseSequenceSet(match[1])
    return Qresync(int(validity), parseModseq(token[1], zero=True), known)


def setRanges(sequence: SequenceSet, largest: int) -> Ranges:
    """
    The numbers of C{sequence} (C{*} being C{largest}) as merged ranges.
    """
    return mergeRanges(sequence.resolve(largest))


def restrict(ranges: Ranges, sequence: SequenceSet | None, largest: int) -> Ranges:
    """
    C{ranges} within C{sequence} (all of them for C{None}).
    """
    if sequence is None:
        return ranges
    return intersectRanges(ranges, setRanges(sequence, largest))


def formatRanges(ranges: Iterable[tuple[int, int]]) -> bytes:
    """
    Ranges as an IMAP sequence set (C{1:3,5}).
    """
    return b",".join(
        b"%d" % lo if lo == hi else b"%d:%d" % (lo, hi) for lo, hi in ranges
    )


def vanishedLines(ranges: Ranges, earlier: bool) -> list[bytes]:
    """
    The C{* VANISHED} responses (with CRLF) for C{ranges},
    L{RANGES_PER_LINE} ranges each.
    """
    head = b"* VANISHED (EARLIER) " if earlier else b"* VANISHED "
    return [
        head + formatRanges(ranges[i : i + RANGES_PER_LINE]) + b"\r\n"
        for i in range(0, len(ranges), RANGES_PER_LINE)
    ]
