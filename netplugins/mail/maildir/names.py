"""
The names of the Maildir store (L{netplugins.mail.maildir.store}): which user and
folder names it accepts, the flag letters, and what a message's unique name
(C{<time>.M<micro>P<pid>Q<n>R<random>.<host>,S=<size>,W=<wire size>:2,<flags>})
records and how new ones are made.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Iterable
from itertools import count

from netplugins.mail.maildir.errors import BadNameError

INBOX = "INBOX"

#: Maildir's standard flag letters.
FLAG_LETTERS = "DFPRST"

#: The letters of keywords (IMAP's custom flags), as Dovecot writes them: the
#: keyword with index I{n} in the folder's C{dovecot-keywords} is letter
#: C{a + n}, so a folder holds at most 26 of them.
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"

#: IMAP system flags and their Maildir letters (P, "passed", has no IMAP flag).
IMAP_FLAGS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}


def normaliseFlags(flags: Iterable[str]) -> str:
    """
    Maildir flag letters (keyword letters included), deduplicated and
    sorted; unknown letters dropped.
    """
    return "".join(sorted(set(flags) & set(FLAG_LETTERS + KEYWORD_LETTERS)))


def checkUserName(user: str) -> str:
    """
    @return: C{user}, if it can name a Maildir.
    @raise BadNameError: otherwise.
    """
    if (
        not isinstance(user, str)
        or not user
        or len(user.encode("utf-8", "surrogateescape")) > 255
        or "/" in user
        or "\x00" in user
        or user.startswith(".")
    ):
        raise BadNameError(f"bad user name {user!r}")
    return user


def folderDirectoryName(name: str) -> str | None:
    """
    The directory (relative to the user's Maildir) of folder C{name}: C{None}
    for C{INBOX}, else C{.name}.

    @raise BadNameError: for a name the store refuses.
    """
    if not isinstance(name, str) or "\x00" in name or "/" in name:
        raise BadNameError(f"bad folder name {name!r}")
    if name.upper() == INBOX:
        return None
    parts = name.split(".")
    if parts[0].upper() == INBOX:
        raise BadNameError(f"INBOX cannot have subfolders: {name!r}")
    if any(p in ("", "..") for p in parts) or len(name.encode("utf-8")) > 250:
        raise BadNameError(f"bad folder name {name!r}")
    return "." + name


def splitName(name: str) -> tuple[str, str]:
    """
    A Maildir file name's key and flags.
    """
    key, sep, info = name.partition(":")
    if sep and info.startswith("2,"):
        return key, normaliseFlags(info[2:])
    return key, ""


def wireSize(data: bytes) -> int:
    """
    The size of C{data} once every bare LF is made CRLF (what
    L{netplugins.mail.imap.fetch.canonical} serves).
    """
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def sizeFromKey(key: str, field: str = "S=") -> int | None:
    """
    The size a unique name records in C{field} (C{S=} the file's,
    C{W=} its CRLF size); C{None} if it records none.
    """
    for part in key.split(",")[1:]:
        if part.startswith(field):
            try:
                return int(part[2:])
            except ValueError:
                return None
    return None


def timeFromKey(key: str) -> float | None:
    """
    When a message arrived, as its unique name records it; C{None} for a
    name not in the classic scheme.
    """
    head = key.split(".", 1)[0]
    return float(head) if head.isdigit() else None


_MICROSECONDS = re.compile(r"\d+\.M(\d+)")


def arrivalOrder(key: str) -> tuple[float, int, str]:
    """
    A sort key putting unique names in order of arrival.
    """
    # Seconds, then microseconds compared as numbers: as strings, M99 would
    # sort after M100 and two deliveries in one second could swap UIDs.
    micro = _MICROSECONDS.match(key)
    return (timeFromKey(key) or 0.0, int(micro.group(1)) if micro else 0, key)


class UniqueNames:
    """
    Unique Maildir names: time, microseconds, pid, a counter and randomness,
    then the host (the classic scheme, with randomness against pid reuse
    across containers).
    """

    def __init__(self, hostname: str | None = None) -> None:
        host = hostname or socket.gethostname() or "localhost"
        self.host = host.replace("/", "\\057").replace(":", "\\072")
        self._counter = count()

    def make(self, size: int, wire: int, when: float | None = None) -> str:
        """
        A new unique name for a message of C{size} bytes (C{wire} with CRLF
        line ends) that arrived at C{when} (now by default).
        """
        now = time.time()
        stamp = int(when if when is not None else now)
        micro = int((now % 1) * 1_000_000)
        return (
            f"{stamp}.M{micro}P{os.getpid()}Q{next(self._counter)}"
            f"R{secrets.token_hex(8)}.{self.host},S={size},W={wire}"
        )
