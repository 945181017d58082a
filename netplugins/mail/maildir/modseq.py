"""
A folder's mod-sequences (IMAP CONDSTORE and QRESYNC, RFC 7162), in
C{netplugins-modseq} next to its UID list: the folder's highest
mod-sequence, each message's mod-sequence with the flags it had then, and
which UIDs were expunged at which mod-sequence.

The record is reconciled with the folder on every scan (under the folder's
lock): a message it does not know, or whose flags in its file name differ
from those recorded, gets a new mod-sequence; a UID it records that is no
longer there is expunged.  So changes by any program (POP3, another IMAP
session, a mail client working on the Maildir) raise the highest
mod-sequence, not only those made through the store.

Memory and disk stay bounded: the expunged UIDs are kept as ranges, at most
L{MAX_HISTORY} of them; older history is dropped and its highest
mod-sequence becomes the I{floor}, below which L{Modseqs.vanishedSince}
answers with every UID below the next one that is not in the folder (a
superset, which RFC 7162 allows).

Everything here blocks: the store runs it in its thread pool.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping

from netplugins.mail.maildir.files import replaceFile

MODSEQ = "netplugins-modseq"
#: The most ranges of expunged UIDs a folder remembers.
MAX_HISTORY = 1000
_MAGIC = "netplugins-modseq 1"

Ranges = list[tuple[int, int]]


def toRanges(numbers: Iterable[int]) -> Ranges:
    """
    Ascending, merged ranges covering C{numbers}.
    """
    out: Ranges = []
    for n in sorted(set(numbers)):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def mergeRanges(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """
    C{ranges} sorted, overlapping and adjacent ones joined.
    """
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def intersectRanges(a: Ranges, b: Ranges) -> Ranges:
    """
    The numbers in both C{a} and C{b} (each merged and ascending), as ranges.
    """
    out: Ranges = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def complementRanges(present: Ranges, upTo: int) -> Ranges:
    """
    The numbers from 1 to C{upTo} not in C{present} (merged, ascending).
    """
    out: Ranges = []
    start = 1
    for lo, hi in present:
        if lo > start:
            out.append((start, min(lo - 1, upTo)))
        start = max(start, hi + 1)
        if start > upTo:
            break
    if start <= upTo:
        out.append((start, upTo))
    return [(lo, hi) for lo, hi in out if lo <= hi]


def _formatRanges(ranges: Ranges) -> str:
    return ",".join(f"{lo}-{hi}" for lo, hi in ranges)


def _parseRanges(text: str) -> Ranges:
    out: Ranges = []
    for piece in text.split(","):
        lo, _, hi = piece.partition("-")
        out.append((int(lo), int(hi)))
    return out


def clockStart() -> int:
    """
    Where a folder that lost its record starts again: the clock in
    microseconds, above any value given before unless the folder made more
    than a million changes a second.
    """
    return int(time.time() * 1_000_000)


class Modseqs:
    """
    One folder's mod-sequence record.

    @ivar validity: the UIDVALIDITY the record belongs to.
    @ivar highest: the highest mod-sequence given.
    @ivar floor: expunges at or below it may be forgotten.
    @ivar records: UID to (mod-sequence, flag letters then).
    @ivar history: (mod-sequence, expunged UID ranges), oldest first.
    """

    def __init__(
        self,
        validity: int,
        highest: int,
        floor: int,
        records: dict[int, tuple[int, str]] | None = None,
        history: list[tuple[int, Ranges]] | None = None,
    ) -> None:
        self.validity = validity
        self.highest = highest
        self.floor = floor
        self.records = records if records is not None else {}
        self.history = history if history is not None else []

    @classmethod
    def read(cls, folder: str) -> Modseqs | None:
        """
        The record of the folder at C{folder}; C{None} if missing or
        unreadable.
        """
        try:
            with open(os.path.join(folder, MODSEQ), encoding="ascii") as f:
                lines = f.read().splitlines()
            if not lines or lines[0] != _MAGIC:
                return None
            v, h, fl = lines[1].split()
            if not (v[0], h[0], fl[0]) == ("V", "H", "F"):
                return None
            record = cls(int(v[1:]), int(h[1:]), int(fl[1:]))
            for line in lines[2:]:
                kind, rest = line[0], line[1:]
                if kind == "M":
                    uid, modseq, flags = (rest + " ").split(" ", 2)
                    record.records[int(uid)] = (int(modseq), flags.strip())
                elif kind == "X":
                    modseq, ranges = rest.split(" ", 1)
                    record.history.append((int(modseq), _parseRanges(ranges)))
            return record
        except FileNotFoundError:
            return None
        except (ValueError, IndexError, UnicodeDecodeError):
            return None

    def write(self, folder: str) -> None:
        """
        Replace the record of the folder at C{folder}, atomically.
        """
        lines = [_MAGIC, f"V{self.validity} H{self.highest} F{self.floor}"]
        lines.extend(
            f"M{uid} {modseq} {flags}"
            for uid, (modseq, flags) in sorted(self.records.items())
        )
        lines.extend(f"X{m} {_formatRanges(r)}" for m, r in self.history)
        data = ("\n".join(lines) + "\n").encode("ascii")
        replaceFile(os.path.join(folder, MODSEQ), data)

    def bump(self) -> int:
        """
        A new mod-sequence, above every one given.
        """
        self.highest += 1
        return self.highest

    def changed(self, flags: Mapping[int, str]) -> int | None:
        """
        Record that the messages C{flags} names (UID to letters) have those
        flags now: the ones whose flags differ from the record (or that it
        lacks) share one new mod-sequence.

        @return: that mod-sequence, or C{None} if none differed.
        """
        different = {
            uid: letters
            for uid, letters in flags.items()
            if self.records.get(uid, (0, None))[1] != letters
        }
        if not different:
            return None
        modseq = self.bump()
        for uid, letters in different.items():
            self.records[uid] = (modseq, letters)
        return modseq

    def expunged(self, uids: Iterable[int]) -> int | None:
        """
        Record that C{uids} are gone (those the record knows), at one new
        mod-sequence, forgetting the oldest history beyond L{MAX_HISTORY}
        ranges.

        @return: that mod-sequence, or C{None} if it knew none of them.
        """
        gone = [uid for uid in uids if uid in self.records]
        if not gone:
            return None
        modseq = self.bump()
        for uid in gone:
            del self.records[uid]
        self.history.append((modseq, toRanges(gone)))
        total = sum(len(r) for _, r in self.history)
        while total > MAX_HISTORY:
            dropped, ranges = self.history.pop(0)
            total -= len(ranges)
            self.floor = max(self.floor, dropped)
        return modseq

    def reconcile(self, present: Mapping[int, str]) -> bool:
        """
        Bring the record in line with the folder's messages C{present} (UID
        to flag letters): new or changed ones get a new mod-sequence, the
        missing ones are expunged.

        @return: whether the record changed (and must be written).
        """
        gone = [uid for uid in self.records if uid not in present]
        changed = self.expunged(gone) is not None
        return self.changed(present) is not None or changed

    def vanishedSince(self, modseq: int, uidNext: int) -> Ranges:
        """
        The UIDs expunged after C{modseq}, as ranges; below the floor, every
        UID under C{uidNext} the folder no longer has (more than asked, as
        RFC 7162 allows when history is gone).
        """
        if modseq >= self.floor:
            return mergeRanges(
                r for m, ranges in self.history if m > modseq for r in ranges
            )
        return complementRanges(toRanges(self.records), uidNext - 1)


def loadModseqs(folder: str, validity: int, numberedBefore: bool) -> Modseqs:
    """
    The record of the folder at C{folder} for UIDVALIDITY C{validity}: a
    new one if it is missing, unreadable or of another UIDVALIDITY.  A new
    record starts at 1 if no message was ever numbered in the folder
    (C{numberedBefore} false), else at L{clockStart} with no history.
    """
    record = Modseqs.read(folder)
    if record is not None and record.validity == validity:
        return record
    if record is not None:
        # New UIDs: the old mod-sequences mean nothing, but never go back.
        return Modseqs(validity, record.highest, record.highest)
    if not numberedBefore:
        return Modseqs(validity, 1, 0)
    start = clockStart()
    return Modseqs(validity, start, start)
