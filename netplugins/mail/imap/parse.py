"""
IMAP4rev1 syntax: reading commands off the wire, tokenising them, formatting
responses, sequence sets and LIST wildcards.

Everything here is bounded so that a client cannot make the server allocate or
compute without limit:
  - a command line is at most C{maxLine} bytes between literals;
  - a literal's size is validated before anything is read (C{{-5}} or
    C{{99999999999}} are syntax errors) and checked against a limit the caller
    chooses per command (APPEND's is the message size limit);
  - parenthesised lists nest at most L{MAX_DEPTH} deep;
  - LIST wildcards are matched by simulating the pattern as a set of states
    held in the bits of an integer (L{ListPattern}), in time linear in the
    name, never a backtracking regular expression (Twisted's
    C{wildcardToRegexp} is exponential: GHSA-8pqf-f4m5-798g).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Union

from attrs import define, frozen

MAX_DEPTH = 16
MAX_LITERAL_DIGITS = 10
MAX_PATTERN = 1024
INBOX_NAME = "INBOX"

_LITERAL_MARKER = re.compile(rb"\{([^{}]*)\}\Z")
_LITERAL_SIZE = re.compile(rb"([0-9]{1,%d})(\+?)\Z" % MAX_LITERAL_DIGITS)
_ATOM_STOP = frozenset(b' ()"\r\n')


class IMAPSyntaxError(Exception):
    """
    A command the grammar does not allow: answered with BAD.
    """


class Literal(bytes):
    """
    A string that arrived as a literal (so it may hold any octet), or one to
    be sent as a literal whatever it holds.
    """


class Raw(bytes):
    """
    Response octets formatted already, written as they are.
    """


Token = Union[str, bytes, list["Token"]]  # noqa: UP007 (a runtime alias)
"""
A parsed argument: an atom as C{str}, a quoted string or literal as C{bytes},
a parenthesised list as C{list}.
"""


@frozen
class Command:
    """
    One complete client command.

    @ivar tag: the client's tag.
    @ivar name: the command name, upper-cased (C{UID FETCH} for UID variants).
    @ivar args: the arguments after the name.
    """

    tag: str
    name: str
    args: list[Token]


@frozen
class LiteralRequest:
    """
    The command line so far ends in a literal announcement.

    @ivar size: the announced octet count.
    @ivar synchronising: C{False} for LITERAL+ (C{{n+}}): the client does not
        wait for a continuation request.
    """

    size: int
    synchronising: bool


def literalAnnounced(line: bytes) -> LiteralRequest | None:
    """
    The literal a command line (without its CRLF) announces, if any.

    @raise IMAPSyntaxError: for a malformed announcement such as C{{-5}}.
    """
    marker = _LITERAL_MARKER.search(line)
    if marker is None:
        return None
    size = _LITERAL_SIZE.match(marker.group(1))
    if size is None:
        raise IMAPSyntaxError(
            "invalid literal size " + marker.group(0).decode("ascii", "replace")[:20]
        )
    return LiteralRequest(int(size.group(1)), not size.group(2))


def commandHead(line: bytes) -> tuple[str, str]:
    """
    The tag and upper-cased command name (C{UID X} for UID variants) at the start
    of a command's first line, for choosing limits before the rest arrives.

    @raise IMAPSyntaxError: when there is no tag or no command.
    """
    words = line.split(b" ", 3)
    if len(words) < 2 or not words[0] or not words[1]:
        raise IMAPSyntaxError("expected a tag and a command")
    tag = words[0].decode("ascii", "replace")
    if any(c in tag for c in '(){%*"\\+') or not tag.isprintable():
        raise IMAPSyntaxError("invalid tag")
    name = words[1].decode("ascii", "replace").upper()
    if name == "UID" and len(words) > 2 and not words[2].startswith(b"{"):
        name = "UID " + words[2].decode("ascii", "replace").upper()
    return tag, name


@define
class _Cursor:
    # pieces alternate: line text, Literal, line text, ..., line text.
    pieces: list[bytes]
    index: int = 0
    pos: int = 0

    def peek(self) -> int | None:
        """
        The next octet; C{None} at a literal, C{-1} at the end.
        """
        piece = self.pieces[self.index]
        if isinstance(piece, Literal):
            return None
        if self.pos < len(piece):
            return piece[self.pos]
        if self.index + 1 < len(self.pieces):
            self.index += 1
            self.pos = 0
            return self.peek()
        return -1

    def atEnd(self) -> bool:
        return self.peek() == -1

    def literal(self) -> Literal:
        piece = self.pieces[self.index]
        assert isinstance(piece, Literal)
        self.index += 1
        self.pos = 0
        return piece


def tokenize(pieces: list[bytes]) -> list[Token]:
    """
    Parse a command's arguments.

    @param pieces: command-line text (C{bytes}, literal announcements removed)
        alternating with the L{Literal}s that followed each announcement.
    @raise IMAPSyntaxError: for unbalanced brackets, bad quoting or lists nested
        deeper than L{MAX_DEPTH}.
    """
    cursor = _Cursor(pieces)
    result = _tokens(cursor, 0)
    if not cursor.atEnd():
        raise IMAPSyntaxError("unexpected )")
    return result


def _tokens(cursor: _Cursor, depth: int) -> list[Token]:
    tokens: list[Token] = []
    while True:
        c = cursor.peek()
        if c is None:
            tokens.append(cursor.literal())
            continue
        if c == -1 or c == ord(")"):
            return tokens
        if c == ord(" "):
            cursor.pos += 1
            continue
        piece = cursor.pieces[cursor.index]
        if c == ord("("):
            if depth >= MAX_DEPTH:
                raise IMAPSyntaxError("lists nested too deeply")
            cursor.pos += 1
            tokens.append(_tokens(cursor, depth + 1))
            if cursor.peek() != ord(")"):
                raise IMAPSyntaxError("missing )")
            cursor.pos += 1
        elif c == ord('"'):
            tokens.append(_quoted(piece, cursor))
        else:
            tokens.append(_atom(piece, cursor))


def _quoted(piece: bytes, cursor: _Cursor) -> bytes:
    out = bytearray()
    i = cursor.pos + 1
    while i < len(piece):
        c = piece[i]
        if c == ord("\\"):
            if i + 1 >= len(piece) or piece[i + 1] not in b'"\\':
                raise IMAPSyntaxError("bad escape in quoted string")
            out.append(piece[i + 1])
            i += 2
        elif c == ord('"'):
            cursor.pos = i + 1
            return bytes(out)
        elif c in (ord("\r"), ord("\n"), 0):
            break
        else:
            out.append(c)
            i += 1
    raise IMAPSyntaxError("unterminated quoted string")


def _atom(piece: bytes, cursor: _Cursor) -> str:
    start = i = cursor.pos
    while i < len(piece) and piece[i] not in _ATOM_STOP:
        if piece[i] == ord("["):
            # A section (BODY[HEADER.FIELDS (A B)]) is part of its atom,
            # spaces and parentheses included.
            end = piece.find(b"]", i)
            if end == -1:
                raise IMAPSyntaxError("missing ]")
            i = end + 1
        elif piece[i] < 0x20 or piece[i] == 0x7F:
            raise IMAPSyntaxError("control character in atom")
        else:
            i += 1
    if i == start:
        raise IMAPSyntaxError("unexpected character")
    cursor.pos = i
    return piece[start:i].decode("utf-8", "replace")


# Responses


_QUOTABLE = re.compile(rb"[^\x00\r\n\x80-\xff]{0,1024}\Z")


def formatValue(value: object) -> bytes:
    """
    The wire form of a response value: C{None} is NIL, C{int} a number, C{str}
    an atom written as is, C{bytes} a quoted string or (when it holds CR, LF,
    NUL or 8-bit octets, or is long) a literal, lists parenthesised.
    """
    if value is None:
        return b"NIL"
    if isinstance(value, bool):
        raise TypeError("no booleans in IMAP")
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, bytes):
        if not isinstance(value, Literal) and _QUOTABLE.match(value):
            return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        return b"{%d}\r\n" % len(value) + value
    if isinstance(value, (list, tuple)):
        return b"(" + b" ".join(formatValue(v) for v in value) + b")"
    raise TypeError(f"cannot format {type(value).__name__}")


def astring(token: Token) -> bytes:
    """
    An astring argument (atom, quoted string or literal) as bytes.

    @raise IMAPSyntaxError: for a list.
    """
    if isinstance(token, str):
        return token.encode("utf-8")
    if isinstance(token, bytes):
        return token
    raise IMAPSyntaxError("expected a string")


def mailboxName(token: Token) -> str:
    """
    A mailbox argument as text (modified UTF-7 left as sent), with any case of
    C{INBOX} folded to C{INBOX}.

    @raise IMAPSyntaxError: for a list or undecodable bytes.
    """
    raw = astring(token)
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise IMAPSyntaxError("mailbox name is not UTF-8") from None
    if name.upper() == "INBOX" or name.upper().startswith("INBOX."):
        name = "INBOX" + name[5:]
    return name


def encodeModifiedUTF7(name: str) -> str:
    """
    C{name} in IMAP's modified UTF-7 (RFC 3501 section 5.1.3): how mailbox
    names are stored and how clients without UTF8=ACCEPT see them.
    """
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            data = "".join(run).encode("utf-16-be", "surrogatepass")
            encoded = base64.b64encode(data).decode("ascii").rstrip("=")
            out.append("&" + encoded.replace("/", ",") + "-")
            run.clear()

    for c in name:
        if " " <= c <= "~":
            flush()
            out.append("&-" if c == "&" else c)
        else:
            run.append(c)
    flush()
    return "".join(out)


_MODIFIED_BASE64 = re.compile(r"&([A-Za-z0-9+,]*)-")


def decodeModifiedUTF7(name: str) -> str:
    """
    The text of C{name}, a mailbox name in modified UTF-7.

    @raise ValueError: if it is not valid modified UTF-7.
    """

    def decode(match: re.Match[str]) -> str:
        encoded = match.group(1)
        if not encoded:
            return "&"
        data = base64.b64decode(
            encoded.replace(",", "/") + "=" * (-len(encoded) % 4), validate=True
        )
        return data.decode("utf-16-be")

    if any(not " " <= c <= "~" for c in name):
        raise ValueError("not modified UTF-7")
    text = _MODIFIED_BASE64.sub(decode, name)
    if encodeModifiedUTF7(text) != name:
        raise ValueError("not modified UTF-7")
    return text


# Sequence sets


@frozen
class SequenceSet:
    """
    A parsed sequence set: ranges whose ends may be C{None} for C{*}.
    """

    ranges: tuple[tuple[int | None, int | None], ...]

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """
        The ranges with C{*} replaced by C{largest}, each low end first.
        """
        out = []
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            out.append((min(a, b), max(a, b)))
        return out

    def contains(self, number: int, largest: int) -> bool:
        """
        Whether C{number} is in the set, C{*} meaning C{largest}.
        """
        return any(lo <= number <= hi for lo, hi in self.resolve(largest))

    def select(self, numbers: Iterable[int], largest: int) -> list[int]:
        """
        The C{numbers} (ascending) that are in the set.
        """
        ranges = self.resolve(largest)
        return [n for n in numbers if any(lo <= n <= hi for lo, hi in ranges)]


_SEQ_NUMBER = re.compile(r"\*|[1-9][0-9]{0,9}\Z")


def parseSequenceSet(token: Token) -> SequenceSet:
    """
    Parse C{1:3,5,7:*}.

    @raise IMAPSyntaxError: for anything else (zero, negatives, empty pieces).
    """
    if not isinstance(token, str) or not token:
        raise IMAPSyntaxError("expected a sequence set")
    ranges = []
    for piece in token.split(","):
        ends = piece.split(":")
        if len(ends) > 2 or not all(_SEQ_NUMBER.match(e) for e in ends):
            raise IMAPSyntaxError(f"invalid sequence set {token[:40]!r}")
        values = [None if e == "*" else int(e) for e in ends]
        ranges.append((values[0], values[-1]))
    return SequenceSet(tuple(ranges))


def isSequenceSet(token: Token) -> bool:
    """
    Whether C{token} reads as a sequence set (for SEARCH keys).
    """
    try:
        parseSequenceSet(token)
    except IMAPSyntaxError:
        return False
    return True


def formatSequenceSet(numbers: Iterable[int]) -> str:
    """
    Compact C{numbers} into a sequence set (C{1:3,5}), for UIDPLUS responses.
    """
    out: list[str] = []
    run: list[int] = []
    for n in numbers:
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(_run(run))
        run = [n]
    if run:
        out.append(_run(run))
    return ",".join(out)


def _run(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1]}"


# LIST wildcards


class ListPattern:
    """
    A LIST pattern (C{*} matches anything, C{%} anything but the delimiter;
    the letters of INBOX match in any case, as Dovecot has it) compiled for
    matching many names.

    The pattern runs as a set of positions held in the bits of one integer,
    all advanced together by a few integer operations per character of the
    name (the shift-and method): no backtracking, whatever the wildcards,
    and no per-position loop in Python (GHSA-8pqf-f4m5-798g).
    """

    def __init__(self, pattern: str, delimiter: str = ".") -> None:
        """
        @raise IMAPSyntaxError: for a pattern over L{MAX_PATTERN} characters.
        """
        if len(pattern) > MAX_PATTERN:
            raise IMAPSyntaxError("pattern too long")
        self.delimiter = delimiter
        self._literal: dict[str, int] = {}
        self._caseless: dict[str, int] = {}
        self._star = self._percent = 0
        for i, p in enumerate(pattern):
            bit = 1 << i
            if p == "*":
                self._star |= bit
            elif p == "%":
                self._percent |= bit
            else:
                self._literal[p] = self._literal.get(p, 0) | bit
                upper = p.upper()
                self._caseless[upper] = self._caseless.get(upper, 0) | bit
        self._wild = self._star | self._percent
        self._accept = 1 << len(pattern)
        self._start = self._closure(1)

    def _closure(self, states: int) -> int:
        # A wildcard may match nothing: a position on one also stands after
        # it, and after a run of them.  Adding the run's bits carries each
        # position on it to the run's end in one step.
        wild = self._wild
        return states | (((states & wild) + wild) ^ wild)

    def prefixes(self, name: str) -> list[int]:
        """
        The lengths of the matching names among C{name}'s ancestors (the
        prefixes ending before a delimiter) and C{name} itself, shortest
        first: one pass over C{name} for all of them.
        """
        out = []
        states = self._start
        # The letters of INBOX match in any case (as Dovecot has it: "*x"
        # matches INBOX too).
        caseless = 5 if name[:5].upper() == INBOX_NAME else 0
        star, percent, delimiter = self._star, self._percent, self.delimiter
        for i, ch in enumerate(name):
            if ch == delimiter:
                if states & self._accept:
                    out.append(i)
                stay = states & star
            else:
                stay = states & (star | percent)
            if i < caseless:
                advance = self._caseless.get(ch.upper(), 0)
            else:
                advance = self._literal.get(ch, 0)
            states = stay | ((states & advance) << 1)
            if not states:
                return out
            states = self._closure(states)
        if states & self._accept:
            out.append(len(name))
        return out

    def matches(self, name: str) -> bool:
        """
        Whether C{name} matches, in time linear in its length.
        """
        found = self.prefixes(name)
        return bool(found) and found[-1] == len(name)


def matchPattern(pattern: str, name: str, delimiter: str = ".") -> bool:
    """
    Whether mailbox C{name} matches LIST C{pattern} (see L{ListPattern}).

    @raise IMAPSyntaxError: for a pattern over L{MAX_PATTERN} characters.
    """
    return ListPattern(pattern, delimiter).matches(name)
