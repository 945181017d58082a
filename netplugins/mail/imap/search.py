"""
IMAP SEARCH: the search keys of RFC 3501 compiled into a tree and evaluated
against one message at a time.

Strings match case-insensitively as substrings; header fields are compared
after decoding RFC 2047 encoded words, bodies after undoing the transfer
encoding of their text parts, as Dovecot does.  Dates compare the date part
only, in UTC.

A message's text is decoded once per command however many keys look at it,
in time linear in its size: encoded words are decoded here rather than by
C{email.header}, which is quadratic on some headers, and a charset that is
unknown, fails, or names a codec that is no mail charset (C{punycode}, whose
decoder is quadratic, C{idna}, C{undefined}) reads as UTF-8 for that part
only.
"""

from __future__ import annotations

import binascii
import codecs
import email.utils
import quopri
import re
from base64 import b64decode
from binascii import Error as BinasciiError
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from attrs import field, frozen

from netplugins.mail.imap.fetch import Entity
from netplugins.mail.imap.parse import (
    IMAPSyntaxError,
    SequenceSet,
    Token,
    astring,
    isSequenceSet,
    parseSequenceSet,
)

_MONTHS = {
    m: i + 1
    for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())
}
_DATE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})\Z")
# No lazy quantifiers and no "?" or white space inside a word: each attempt
# stops at the next "?", so finding every encoded word is linear.
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([QqBb])\?([^?\s]*)\?=")
_UNSAFE_CODECS = frozenset({"punycode", "idna", "undefined"})

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True),
    "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True),
    "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True),
    "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True),
    "UNSEEN": ("\\Seen", False),
    "RECENT": ("\\Recent", True),
    "OLD": ("\\Recent", False),
}
_HEADER_KEYS = {"FROM", "TO", "CC", "BCC", "SUBJECT"}
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
MAX_KEYS = 1000
_ENTRY_TYPES = frozenset({"priv", "shared", "all"})


@frozen
class Candidate:
    """
    What a search looks at for one message.

    @ivar entity: its parsed content, when the search needs it.
    """

    seq: int
    uid: int
    flags: frozenset[str]
    internalDate: float
    size: int
    entity: Entity | None = None
    modseq: int = 0
    decoded: dict[tuple[str, ...], Any] = field(factory=dict, eq=False, repr=False)


Key = tuple[Any, ...]


def parseDate(token: Token) -> date:
    """
    An IMAP date (C{1-Feb-1994}).

    @raise IMAPSyntaxError: otherwise.
    """
    text = astring(token).decode("ascii", "replace")
    match = _DATE.match(text)
    month = _MONTHS.get(match.group(2).lower()) if match else None
    if match is None or month is None:
        raise IMAPSyntaxError(f"invalid date {text[:20]!r}")
    try:
        return date(int(match.group(3)), month, int(match.group(1)))
    except ValueError:
        raise IMAPSyntaxError(f"invalid date {text[:20]!r}") from None


def parseSearch(args: list[Token]) -> tuple[Key, bool]:
    """
    Compile SEARCH arguments (after any CHARSET).

    @return: the key tree, and whether it needs message content.
    @raise IMAPSyntaxError: for unknown keys or missing arguments.
    """
    if not args:
        raise IMAPSyntaxError("SEARCH needs a key")
    stream = list(args)
    stream.reverse()
    counter = [0]
    keys = []
    while stream:
        keys.append(_key(stream, counter, 0))
    tree: Key = ("and", tuple(keys))
    return tree, _needsContent(tree)


def _hasKind(key: Key, kinds: frozenset[str]) -> bool:
    """
    Whether C{key} or a key within it is of one of C{kinds}.
    """
    kind = key[0]
    if kind in kinds:
        return True
    if kind == "and":
        return any(_hasKind(k, kinds) for k in key[1])
    if kind == "or":
        return _hasKind(key[1], kinds) or _hasKind(key[2], kinds)
    if kind == "not":
        return _hasKind(key[1], kinds)
    return False


_CONTENT_KINDS = frozenset({"header", "body", "text", "sent", "size"})


def _needsContent(key: Key) -> bool:
    return _hasKind(key, _CONTENT_KINDS)


def usesModseq(key: Key) -> bool:
    """
    Whether C{key} has a MODSEQ key (its SEARCH answer then ends with the
    highest mod-sequence found, RFC 7162 section 3.1.5).
    """
    return _hasKind(key, frozenset({"modseq"}))


def _pop(stream: list[Token]) -> Token:
    if not stream:
        raise IMAPSyntaxError("missing search argument")
    return stream.pop()


def _text(token: Token) -> str:
    return astring(token).decode("utf-8", "replace").casefold()


def _key(stream: list[Token], counter: list[int], depth: int) -> Key:
    counter[0] += 1
    if counter[0] > MAX_KEYS or depth > 32:
        raise IMAPSyntaxError("search too complex")
    token = _pop(stream)
    if isinstance(token, list):
        inner = list(reversed(token))
        if not inner:
            raise IMAPSyntaxError("empty search list")
        keys = []
        while inner:
            keys.append(_key(inner, counter, depth + 1))
        return ("and", tuple(keys))
    if isinstance(token, bytes):
        raise IMAPSyntaxError("expected a search key")
    name = token.upper()
    if name == "ALL":
        return ("all",)
    if name == "NEW":
        return ("and", (("flag", "\\Recent", True), ("flag", "\\Seen", False)))
    if name in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[name]
        return ("flag", flag, present)
    if name in ("KEYWORD", "UNKEYWORD"):
        flag = astring(_pop(stream)).decode("utf-8", "replace")
        return ("flag", flag, name == "KEYWORD")
    if name in _HEADER_KEYS:
        return ("header", name.lower(), _text(_pop(stream)))
    if name == "HEADER":
        field = astring(_pop(stream)).decode("ascii", "replace").lower()
        return ("header", field, _text(_pop(stream)))
    if name in ("BODY", "TEXT"):
        return (name.lower(), _text(_pop(stream)))
    if name in _DATE_KEYS:
        when = parseDate(_pop(stream))
        sent = name.startswith("SENT")
        return ("sent" if sent else "date", name.removeprefix("SENT"), when)
    if name in ("LARGER", "SMALLER"):
        size = _pop(stream)
        if not isinstance(size, str) or not size.isdigit() or len(size) > 12:
            raise IMAPSyntaxError("expected a size")
        return ("size", name, int(size))
    if name == "UID":
        return ("uid", parseSequenceSet(_pop(stream)))
    if name == "MODSEQ":
        # RFC 7162: MODSEQ [entry-name entry-type-req] mod-sequence-valzer;
        # each message has one mod-sequence, whatever the entry.
        value = _pop(stream)
        if isinstance(value, bytes):
            kind = _pop(stream)
            if not isinstance(kind, str) or kind.lower() not in _ENTRY_TYPES:
                raise IMAPSyntaxError("invalid MODSEQ entry type")
            value = _pop(stream)
        if not isinstance(value, str) or not value.isdigit() or len(value) > 19:
            raise IMAPSyntaxError("expected a mod-sequence")
        return ("modseq", int(value))
    if name == "NOT":
        return ("not", _key(stream, counter, depth + 1))
    if name == "OR":
        first = _key(stream, counter, depth + 1)
        return ("or", first, _key(stream, counter, depth + 1))
    if isSequenceSet(token):
        return ("seq", parseSequenceSet(token))
    raise IMAPSyntaxError(f"unknown search key {token[:30]}")


def matches(key: Key, message: Candidate, largestSeq: int, largestUid: int) -> bool:
    """
    Whether C{message} satisfies C{key}.
    """
    kind = key[0]
    if kind == "all":
        return True
    if kind == "and":
        return all(matches(k, message, largestSeq, largestUid) for k in key[1])
    if kind == "or":
        return matches(key[1], message, largestSeq, largestUid) or matches(
            key[2], message, largestSeq, largestUid
        )
    if kind == "not":
        return not matches(key[1], message, largestSeq, largestUid)
    if kind == "flag":
        return (key[1] in message.flags) == key[2]
    if kind == "seq":
        sequence: SequenceSet = key[1]
        return sequence.contains(message.seq, largestSeq)
    if kind == "uid":
        return key[1].contains(message.uid, largestUid)  # type: ignore[no-any-return]
    if kind == "modseq":
        return message.modseq >= key[1]  # type: ignore[no-any-return]
    if kind == "date":
        when = datetime.fromtimestamp(message.internalDate, UTC).date()
        return _compareDate(key[1], when, key[2])
    if kind == "size":
        return message.size > key[2] if key[1] == "LARGER" else message.size < key[2]
    entity = message.entity
    assert entity is not None
    if kind == "sent":
        sent = _sentDate(entity)
        return sent is not None and _compareDate(key[1], sent, key[2])
    if kind == "header":
        index = _memo(message, ("fields",), _fieldIndex, entity)
        values = _memo(message, ("header", key[1]), _decodeAll, index.get(key[1], []))
        return any(key[2] in value for value in values)
    if kind == "text" and key[1] in _memo(
        message, ("text",), _decodeHeader, entity.header
    ):
        return True
    if kind in ("body", "text"):
        return key[1] in _memo(message, ("body",), _bodyText, entity)  # type: ignore[no-any-return]
    raise AssertionError(kind)


def _memo(
    message: Candidate, key: tuple[str, ...], f: Callable[..., Any], *args: Any
) -> Any:
    # What one message's keys share, worked out once per command.
    if key not in message.decoded:
        message.decoded[key] = f(*args)
    return message.decoded[key]


def _fieldIndex(entity: Entity) -> dict[str, list[bytes]]:
    # The raw values of each field, by lower-case name.
    index: dict[str, list[bytes]] = {}
    for name, value in entity.fields():
        index.setdefault(name.decode("ascii", "replace").lower(), []).append(value)
    return index


def _decodeAll(values: list[bytes]) -> list[str]:
    return [_decodeHeader(value) for value in values]


def _compareDate(op: str, when: date, limit: date) -> bool:
    if op == "BEFORE":
        return when < limit
    if op == "ON":
        return when == limit
    return when >= limit


def _sentDate(entity: Entity) -> date | None:
    value = entity.field(b"date")
    if value is None:
        return None
    try:
        return email.utils.parsedate_to_datetime(value.decode("latin-1")).date()
    except (TypeError, ValueError, IndexError):
        return None


def _decodeHeader(value: bytes) -> str:
    """
    Header octets as text to search: RFC 2047 encoded words decoded (the
    white space between two of them dropped), folds made spaces, casefolded.
    """
    text = value.decode("utf-8", "replace")
    out: list[str] = []
    last = 0
    afterWord = False
    for match in _ENCODED_WORD.finditer(text):
        gap = text[last : match.start()]
        if not (afterWord and gap.isspace()):
            out.append(gap)
        word = _decodeWord(match.group(1), match.group(2), match.group(3))
        afterWord = word is not None
        out.append(match.group(0) if word is None else word)
        last = match.end()
    out.append(text[last:])
    return "".join(out).replace("\r\n", " ").casefold()


def _decodeWord(charset: str, encoding: str, encoded: str) -> str | None:
    # One encoded word's text, or None to leave it as it is.
    data = encoded.encode("utf-8")
    try:
        if encoding in "Qq":
            raw = binascii.a2b_qp(data, header=True)
        else:
            raw = binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except (BinasciiError, ValueError):
        return None
    # RFC 2231 lets a language follow the charset: utf-8*en.
    return decodeText(raw, charset.partition("*")[0])


def decodeText(data: bytes, charset: str) -> str:
    """
    C{data} decoded from C{charset}, or from UTF-8 (bad octets replaced) when
    that charset is unknown, names a codec that is no mail charset or
    cannot decode it: one part's odd label never fails the search.
    """
    try:
        codec = codecs.lookup(charset)
    except (LookupError, ValueError):
        codec = None
    if codec is not None and codec.name not in _UNSAFE_CODECS:
        try:
            return data.decode(codec.name, "replace")
        except (LookupError, ValueError, TypeError):
            # Not a text encoding (base64, rot13), or no "replace" handling.
            pass
    return data.decode("utf-8", "replace")


def _bodyText(entity: Entity) -> str:
    chunks: list[str] = []
    _collect(entity, chunks, 0)
    return "\n".join(chunks).casefold()


def _collect(entity: Entity, chunks: list[str], depth: int) -> None:
    if depth > 20:
        return
    if entity.parts:
        for part in entity.parts:
            _collect(part, chunks, depth + 1)
        return
    if entity.message is not None:
        chunks.append(_decodeHeader(entity.message.header))
        _collect(entity.message, chunks, depth + 1)
        return
    body = entity.body
    encoding = (entity.field(b"content-transfer-encoding") or b"").strip().lower()
    try:
        if encoding == b"base64":
            body = b64decode(body)
        elif encoding == b"quoted-printable":
            body = quopri.decodestring(body)
    except (BinasciiError, ValueError):
        pass
    chunks.append(decodeText(body, dict(entity.params).get("charset", "utf-8")))
