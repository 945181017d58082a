"""
Directory listings for np-ftp: C{LIST} (the C{ls -l} lines clients parse),
C{NLST} (names) and the RFC 3659 facts of C{MLSD}/C{MLST}.
"""

from __future__ import annotations

import calendar
import os
import re
import stat
import time
from collections.abc import Iterable, Sequence

#: The facts MLST/MLSD know, in FEAT's order; all are shown by default.
FACTS = (
    "type",
    "size",
    "modify",
    "perm",
    "unique",
    "UNIX.mode",
    "UNIX.uid",
    "UNIX.gid",
)

_MONTHS = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
#: ls shows the year instead of the time for files older than this.
_HALF_YEAR = 182 * 24 * 3600


def printable(name: str) -> bool:
    """
    Whether C{name} can go on a reply or listing line (no CR, LF or NUL).
    """
    return not any(c in name for c in "\r\n\x00")


def timestamp(seconds: float) -> str:
    """
    C{YYYYMMDDHHMMSS} in UTC, as MDTM and the C{modify} fact give it.
    """
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))


def _mode(st: os.stat_result) -> str:
    return stat.filemode(st.st_mode)


def listLine(name: str, st: os.stat_result, now: float) -> str:
    """
    One C{ls -l} line, owner and group shown as C{ftp} (as vsftpd hides them).
    """
    when = time.gmtime(st.st_mtime)
    day = f"{_MONTHS[when.tm_mon - 1]} {when.tm_mday:2d}"
    if abs(now - st.st_mtime) < _HALF_YEAR:
        date = f"{day} {when.tm_hour:02d}:{when.tm_min:02d}"
    else:
        date = f"{day}  {when.tm_year}"
    return (
        f"{_mode(st)} {st.st_nlink:3d} ftp      ftp      {st.st_size:12d} {date} {name}"
    )


def _perm(st: os.stat_result, writable: bool) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "elcmfpd" if writable else "el"
    return "radfw" if writable else "r"


def _type(st: os.stat_result, role: str | None) -> str:
    if role is not None:
        return role
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "OS.unix=" + ("symlink" if stat.S_ISLNK(st.st_mode) else "special")


def factsLine(
    name: str,
    st: os.stat_result,
    *,
    writable: bool,
    facts: Sequence[str] = FACTS,
    role: str | None = None,
) -> str:
    """
    One MLSD/MLST line: the C{facts} asked for, then a space and C{name}.

    @param role: C{cdir} or C{pdir} for the listed directory and its parent.
    """
    values = {
        "type": lambda: _type(st, role),
        "size": lambda: str(st.st_size),
        "modify": lambda: timestamp(st.st_mtime),
        "perm": lambda: _perm(st, writable),
        "unique": lambda: f"{st.st_dev:x}g{st.st_ino:x}",
        "UNIX.mode": lambda: f"0{stat.S_IMODE(st.st_mode):o}",
        "UNIX.uid": lambda: str(st.st_uid),
        "UNIX.gid": lambda: str(st.st_gid),
    }
    shown = "".join(
        f"{fact}={values[fact]()};"
        for fact in FACTS
        if fact in facts and not (fact == "size" and stat.S_ISDIR(st.st_mode))
    )
    return f"{shown} {name}"


def selectFacts(argument: str) -> tuple[str, ...]:
    """
    The facts C{OPTS MLST fact;fact;} selects (unknown ones ignored).
    """
    asked = {f.lower() for f in argument.split(";") if f}
    return tuple(f for f in FACTS if f.lower() in asked)


def featFacts(selected: Iterable[str]) -> str:
    """
    The MLST line of FEAT: every fact, the selected ones starred.
    """
    chosen = set(selected)
    return "".join(f"{f}{'*' if f in chosen else ''};" for f in FACTS)


#: The facts C{MFF} sets, in FEAT's order.
SETTABLE_FACTS = ("modify", "UNIX.mode")

_TIME = re.compile(r"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.(\d{1,3}))?")
_MODE = re.compile(r"0?[0-7]{1,3}")


def parseTime(value: str) -> float | None:
    """
    The seconds since the epoch of an RFC 3659 C{time-val}
    (C{YYYYMMDDHHMMSS[.sss]}, UTC), or C{None} if it is not one.
    """
    match = _TIME.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7) or ""
    try:
        seconds = calendar.timegm(
            time.struct_time((year, month, day, hour, minute, second, 0, 0, 0))
        )
        # timegm normalises 31 February: a date that comes back different
        # was not a date.
        if time.gmtime(seconds)[:6] != (year, month, day, hour, minute, second):
            return None
    except (OverflowError, ValueError):
        return None
    return seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def parseSettableFacts(argument: str) -> tuple[dict[str, str], str] | str:
    """
    The facts and the path of C{MFF fact=value;fact=value; path}: a
    mapping from each fact's name (as L{SETTABLE_FACTS} spells it) to its
    value, or the error reply.
    """
    facts, space, path = argument.partition(" ")
    if not space or not path or not facts.endswith(";"):
        return "501 Syntax: MFF fact=value;... path"
    known = {name.lower(): name for name in SETTABLE_FACTS}
    found: dict[str, str] = {}
    for item in facts[:-1].split(";"):
        name, equals, value = item.partition("=")
        if not equals or not name:
            return "501 Syntax: MFF fact=value;... path"
        fact = known.get(name.lower())
        if fact is None:
            return f"504 Fact {name} cannot be set."
        if fact == "modify" and parseTime(value) is None:
            return "501 Bad time value."
        if fact == "UNIX.mode" and _MODE.fullmatch(value) is None:
            return "501 Bad mode value."
        found[fact] = value
    return found, path


def featSettableFacts() -> str:
    """
    The MFF line of FEAT's facts.
    """
    return "".join(f"{f};" for f in SETTABLE_FACTS)
