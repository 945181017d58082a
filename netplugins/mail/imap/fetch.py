"""
FETCH for IMAP4rev1: a message's MIME structure taken from its raw octets, its
ENVELOPE and BODYSTRUCTURE, BODY[section]<partial> extraction, and parsing of
the FETCH attribute list.

Sections are cut from the original octets (with CRLF line ends), never from a
re-serialised C{email} object, so that C{BODY[2.MIME]} and friends return
exactly what the sender wrote; the stdlib C{email} package is used only to read
header parameters.  The shapes follow RFC 3501 and, where it leaves a choice
(defaults for a part without Content-Type, line counts, unfolding), what
Dovecot answers, which the differential test checks.

A message is parsed once per command (its header fields kept on its
L{Entity}), in time linear in its size: however a field is folded, however
many parts it has (at most L{MAX_MIME_PARTS} are told apart, at most
L{MAX_MIME_DEPTH} levels deep).  A FETCH names at most L{MAX_FETCH_ITEMS}
attributes, answers each once, and returns at most L{FETCH_COPIES} times a
message's octets (plus L{FETCH_SLACK}) for it.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from attrs import define, evolve, field, frozen

from netplugins.mail.imap.binary import decodeBody, literalHead
from netplugins.mail.imap.parse import (
    IMAPSyntaxError,
    Raw,
    Token,
    formatValue,
    tokenize,
)
from netplugins.mail.imap.session import CommandError

MAX_MIME_DEPTH = 20
#: The most MIME entities (the message itself included) read out of one
#: message, as Dovecot's C{MESSAGE_PARSER_DEFAULT_MAX_TOTAL_MIME_PARTS}: the
#: part at which the count runs out holds the rest of its multipart, unparsed.
MAX_MIME_PARTS = 10000
#: The parameters read from a Content-Type or Content-Disposition field: the
#: email package's parameter parser takes time in their number times the
#: field's length.
MAX_PARAMS = 64
#: How many times over a message's octets are looked through for delimiters
#: (a part nested in N multiparts is in N bodies): past it, multiparts are
#: leaves.  Four lets a twice forwarded attachment through.
MAX_MIME_SCANS = 4
#: The longest multipart boundary looked for: Dovecot's bound (RFC 2046 allows
#: 70 characters).
MAX_BOUNDARY = 80
#: Lines in one multipart body that begin like a delimiter followed by
#: white space but are none, after which that form is not looked for.
MAX_PADDING_MISSES = 64
#: How much of an address field ENVELOPE reads (up to its last comma):
#: C{email.utils} parses addresses at up to 2 microseconds an octet.
MAX_ADDRESS_FIELD = 64 * 1024
#: The most attributes one FETCH may name (macros count as what they stand
#: for); identical ones are answered once.
MAX_FETCH_ITEMS = 64
#: What one message's FETCH response may carry of its contents (sections,
#: RFC822*): this many times the message, plus L{FETCH_SLACK} octets.
FETCH_COPIES = 2
FETCH_SLACK = 64 * 1024
_LINE_END = re.compile(rb"\r?\n")
_FOLD = re.compile(rb"\r?\n[ \t]+")
_FIELD_START = re.compile(rb"\r\n(?![ \t])")
_FOLD_RUN = re.compile(rb"\n[ \t][ \t]")
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_headerParser = email.parser.BytesHeaderParser(policy=email.policy.compat32)


class FetchTooLargeError(CommandError):
    """
    One message's FETCH response would carry more of its contents than
    L{FETCH_COPIES} and L{FETCH_SLACK} allow: the command ends in
    C{NO [LIMIT]}.
    """


def canonical(data: bytes) -> bytes:
    """
    C{data} with every line ending CRLF, as IMAP serves messages.
    """
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return _LINE_END.sub(b"\r\n", data)


def formatInternalDate(when: float) -> bytes:
    """
    An INTERNALDATE: C{17-Jul-1996 02:44:25 +0000}.
    """
    t = datetime.fromtimestamp(when, UTC)
    return (f"{t.day:02d}-{_MONTHS[t.month - 1]}-{t.year} {t:%H:%M:%S} +0000").encode()


def parseFields(header: bytes) -> list[tuple[bytes, bytes]]:
    """
    The fields of C{header} as (name, raw value with folding kept) pairs.

    Linear in the header's size however its fields are folded: the header is
    cut where a line does not continue the one before, and a field's pieces
    are joined once.  A line without a colon is no field; lines folded under
    it continue the field before it.
    """
    names: list[bytes] = []
    values: list[list[bytes]] = []
    for chunk in _FIELD_START.split(header):
        first, _, folded = chunk.partition(b"\r\n")
        if b":" in first:
            name, _, value = chunk.partition(b":")
            names.append(name.strip())
            values.append([value.lstrip(b" \t")])
        elif folded and values:
            values[-1].append(folded)
    return [
        (name, b"\r\n".join(pieces)) for name, pieces in zip(names, values, strict=True)
    ]


@define
class Entity:
    """
    A MIME entity: a message or a body part, parsed for one command.

    It holds no copy of its octets, only where they are in the message's, so
    a structure nested N deep does not hold N copies of what is innermost;
    its header fields are read once, when first asked for, and kept.

    @ivar source: the octets of the whole message (CRLF line ends).
    @ivar start: where the entity begins in C{source}.
    @ivar bodyStart: where its body begins, after the blank line that ends
        its header.
    @ivar end: where it ends.
    @ivar parts: a multipart's parts.
    @ivar message: a message/rfc822 part's encapsulated message.
    @ivar served: how many content octets FETCH has answered from it so far
        (see L{FETCH_COPIES}).
    """

    source: bytes
    start: int
    bodyStart: int
    end: int
    mainType: str = "text"
    subType: str = "plain"
    params: list[tuple[str, str]] = field(factory=list)
    parsed: email.message.Message = field(factory=email.message.Message)
    parts: list[Entity] = field(factory=list)
    message: Entity | None = None
    served: int = field(default=0, init=False, eq=False)
    _fields: list[tuple[bytes, bytes]] | None = field(
        default=None, init=False, repr=False, eq=False
    )
    _first: dict[bytes, bytes] | None = field(
        default=None, init=False, repr=False, eq=False
    )

    @property
    def header(self) -> bytes:
        """
        Its header octets, the blank line that ends them included.
        """
        return self.source[self.start : self.bodyStart]

    @property
    def body(self) -> bytes:
        """
        The octets after its header.
        """
        return self.source[self.bodyStart : self.end]

    @property
    def octets(self) -> bytes:
        """
        All its octets: header and body (the message itself, not a copy, for
        a whole message).
        """
        return self.source[self.start : self.end]

    @property
    def size(self) -> int:
        """
        How many octets it has.
        """
        return self.end - self.start

    @property
    def bodySize(self) -> int:
        """
        How many octets its body has.
        """
        return self.end - self.bodyStart

    def bodyLines(self) -> int:
        """
        How many line ends its body holds.
        """
        return self.source.count(b"\n", self.bodyStart, self.end)

    def fields(self) -> list[tuple[bytes, bytes]]:
        """
        The header fields as (name, raw value with folding kept) pairs.
        """
        if self._fields is None:
            self._fields = parseFields(self.header)
        return self._fields

    def field(self, name: bytes) -> bytes | None:
        """
        The first C{name} field's value, unfolded, or C{None}.
        """
        if self._first is None:
            first: dict[bytes, bytes] = {}
            for fieldName, raw in self.fields():
                first.setdefault(fieldName.lower(), raw)
            self._first = first
        key = name.lower()
        value = self._first.get(key)
        if value is not None and b"\n" in value:
            # Unfolded once, when first asked for.
            value = self._first[key] = unfold(value)
        return value


def unfold(value: bytes) -> bytes:
    """
    A folded field value on one line: each line break and the white space
    after it become one space, as Dovecot's ENVELOPE has it.
    """
    if value.count(b"\n") == value.count(b"\r\n") and not _FOLD_RUN.search(value):
        # Folds of one space or tab, the usual kind: replaced in C, an
        # order of magnitude faster than the substitution.
        return value.replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    return _FOLD.sub(b" ", value)


def _headerEnd(raw: bytes, start: int, end: int) -> int:
    # Where the body of the entity in raw[start:end] begins.
    if raw.startswith(b"\r\n", start, end):
        return start + 2
    blank = raw.find(b"\r\n\r\n", start, end)
    # No blank line: it is all header, as Dovecot reads it.
    return end if blank == -1 else blank + 4


def splitEntity(raw: bytes) -> Entity:
    """
    C{raw} cut into its header and body only, its MIME structure not read:
    all that FETCH items without L{FetchItem.needsStructure} look at.
    """
    return Entity(raw, 0, _headerEnd(raw, 0, len(raw)), len(raw))


@define
class _Budget:
    # What is left of one message's parse: entities to make, and octets of
    # container bodies to look through for parts.
    parts: int
    octets: int


def parseEntity(raw: bytes, default: tuple[str, str] = ("text", "plain")) -> Entity:
    """
    The MIME structure of C{raw} (CRLF line ends), in time linear in its
    size: at most L{MAX_MIME_PARTS} entities, at most L{MAX_MIME_DEPTH}
    levels deep, looking through its octets for delimiters at most
    L{MAX_MIME_SCANS} times over; what is past those bounds is a leaf.

    @param default: the type of a part without Content-Type.
    """
    budget = _Budget(MAX_MIME_PARTS, MAX_MIME_SCANS * len(raw))
    return _parse(raw, 0, len(raw), default, 0, budget)


def _parse(
    source: bytes,
    start: int,
    end: int,
    default: tuple[str, str],
    depth: int,
    budget: _Budget,
) -> Entity:
    """
    The entity in C{source[start:end]} and, within C{budget}, its parts.

    @param default: the type of a part without Content-Type (message/rfc822
        in a multipart/digest).
    """
    budget.parts -= 1
    entity = Entity(source, start, _headerEnd(source, start, end), end)
    entity.parsed = parsed = _typeFields(entity)
    if parsed.get("content-type") is None:
        entity.mainType, entity.subType = default
        if default == ("text", "plain"):
            entity.params = [("charset", "us-ascii")]
    else:
        # An unparseable type reads as text/plain, as email.message has it.
        entity.mainType, _, entity.subType = parsed.get_content_type().partition("/")
        entity.params = _params((parsed.get_params() or [])[1:])
        if entity.mainType == "text" and "charset" not in dict(entity.params):
            # RFC 2045's default, stated as Dovecot states it.
            entity.params.insert(0, ("charset", "us-ascii"))
    if depth >= MAX_MIME_DEPTH or budget.parts <= 0:
        return entity
    if (entity.mainType, entity.subType) == ("message", "rfc822"):
        entity.message = _parse(
            source, entity.bodyStart, end, ("text", "plain"), depth + 1, budget
        )
        return entity
    boundary = parsed.get_boundary() if entity.mainType == "multipart" else None
    if boundary and budget.octets >= entity.bodySize:
        # Looking for delimiters reads the whole body: a part nested in N
        # multiparts is read N times, so that is what is bounded.
        budget.octets -= entity.bodySize
        digest = entity.subType == "digest"
        childDefault = ("message", "rfc822") if digest else ("text", "plain")
        entity.parts = _parseParts(
            entity, boundary.encode("latin-1", "replace"), childDefault, depth, budget
        )
    return entity


def _typeFields(entity: Entity) -> email.message.Message:
    """
    An entity's Content-Type and Content-Disposition (all its parsed header
    holds: what BODYSTRUCTURE reads through the email package), each cut
    after L{MAX_PARAMS} parameters.
    """
    lines = []
    for name in (b"Content-Type", b"Content-Disposition"):
        value = entity.field(name)
        if value is not None:
            if value.count(b";") > MAX_PARAMS:
                value = b";".join(value.split(b";", MAX_PARAMS + 1)[:-1])
            lines.append(name + b": " + value + b"\r\n")
    return _headerParser.parsebytes(b"".join(lines) + b"\r\n")


def _parseParts(
    entity: Entity,
    boundary: bytes,
    default: tuple[str, str],
    depth: int,
    budget: _Budget,
) -> list[Entity]:
    """
    The parts of a multipart, as many as C{budget} allows: when it runs out,
    the part it ran out at holds the rest of the body, its structure not
    read (Dovecot's overflow part).
    """
    source, parts = entity.source, []
    spans = partSpans(source, boundary, entity.bodyStart, entity.end)
    for start, stop in spans:
        part = None
        if budget.parts > 1:
            part = _parse(source, start, stop, default, depth + 1, budget)
            if budget.parts > 0:
                parts.append(part)
                continue
        if next(spans, None) is not None:
            stop = entity.end
            part = None
        if part is None:
            part = _parse(source, start, stop, default, MAX_MIME_DEPTH, budget)
        parts.append(part)
        break
    return parts


def _params(pairs: list[Any]) -> list[tuple[str, str]]:
    # Empty parameters (";;") are left out, as Dovecot leaves them out.
    out = []
    for name, value in pairs:
        if not name:
            continue
        if isinstance(value, tuple):
            value = email.utils.collapse_rfc2231_value(value)
        out.append((name.lower(), str(value)))
    return out


def partSpans(
    body: bytes, boundary: bytes, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, int]]:
    """
    Where the parts of the multipart body C{body[start:end]} are: (start,
    end) offsets in C{body} of the octets between delimiter lines (the CRLF
    before a delimiter belongs to it), preamble and epilogue left out.  A
    boundary over L{MAX_BOUNDARY} characters is not looked for.
    """
    hi = len(body) if end is None else end
    if not 0 < len(boundary) <= MAX_BOUNDARY:
        return
    partStart: int | None = None
    for pos, closing in _delimiterLines(body, b"--" + boundary, start, hi):
        if partStart is not None:
            yield partStart, max(partStart, pos - 2)
        if closing:
            return
        lineEnd = body.find(b"\r\n", pos, hi)
        partStart = hi if lineEnd == -1 else lineEnd + 2
    if partStart is not None:
        yield partStart, hi


def _delimiterLines(
    body: bytes, delimiter: bytes, lo: int, hi: int
) -> Iterator[tuple[int, bool]]:
    """
    Where the delimiter lines of C{body[lo:hi]} start, in order, and whether
    each is the close delimiter: a line that is C{delimiter} (C{--boundary})
    and white space, or C{delimiter--} and anything.

    Each form is found by C{bytes.find} of its exact start (CRLF before,
    what follows the boundary after), so lines that only begin like a
    delimiter cost no Python work, and a body costs time linear in its size.
    Only the white space form needs the rest of its line looked at; after
    L{MAX_PADDING_MISSES} such lines that were no delimiter, that form is no
    longer looked for in this body.
    """
    if body.startswith(delimiter, lo, hi):
        closing = body.startswith(b"--", lo + len(delimiter), hi)
        if closing or _onlyPadding(body, lo + len(delimiter), hi):
            yield lo, closing
    needle = b"\r\n" + delimiter
    exact = {needle + b"\r\n": False, needle + b"--": True}
    padded = (needle + b" ", needle + b"\t")
    found = {form: body.find(form, lo, hi) for form in (*exact, *padded)}
    misses = 0
    while True:
        pos, form = min(
            ((p, f) for f, p in found.items() if p != -1), default=(-1, b"")
        )
        if pos == -1:
            break
        found[form] = body.find(form, pos + 1, hi)
        if form in exact:
            yield pos + 2, exact[form]
        elif _onlyPadding(body, pos + len(needle), hi):
            yield pos + 2, False
        else:
            misses += 1
            if misses >= MAX_PADDING_MISSES:
                for form in padded:
                    found[form] = -1
    if body.endswith(needle, lo, hi):
        # The last line, with no line end after it.
        yield hi - len(delimiter), False


def _onlyPadding(body: bytes, pos: int, hi: int) -> bool:
    # Whether the line from pos on holds only spaces and tabs.
    lineEnd = body.find(b"\r\n", pos, hi)
    return not body[pos : hi if lineEnd == -1 else lineEnd].strip(b" \t")


# ENVELOPE and BODYSTRUCTURE


def _addresses(value: bytes | None) -> Raw | None:
    # RFC 3501's address lists have no spaces between the addresses.
    if value is None:
        return None
    if len(value) > MAX_ADDRESS_FIELD:
        cut = value.rfind(b",", 0, MAX_ADDRESS_FIELD)
        value = value[: cut if cut > 0 else MAX_ADDRESS_FIELD]
    out: list[list[bytes | None]] = []
    for name, address in email.utils.getaddresses([value.decode("latin-1")]):
        if not name and not address:
            continue
        mailbox, at, host = address.rpartition("@")
        if not at:
            mailbox, host = address, ""
        out.append(
            [
                name.encode("latin-1") or None,
                None,
                mailbox.encode("latin-1") or None,
                host.encode("latin-1") or None,
            ]
        )
    if not out:
        return None
    return Raw(b"(" + b"".join(formatValue(a) for a in out) + b")")


def envelope(entity: Entity) -> list[object]:
    """
    The ENVELOPE of a message: date, subject, from, sender, reply-to, to, cc,
    bcc, in-reply-to, message-id; sender and reply-to default to from.
    """
    f = entity.field
    sender = _addresses(f(b"from"))
    return [
        (f(b"date")),
        (f(b"subject")),
        sender,
        _addresses(f(b"sender")) or sender,
        _addresses(f(b"reply-to")) or sender,
        _addresses(f(b"to")),
        _addresses(f(b"cc")),
        _addresses(f(b"bcc")),
        (f(b"in-reply-to")),
        (f(b"message-id")),
    ]


def _paramList(params: list[tuple[str, str]]) -> list[bytes] | None:
    flat = []
    for name, value in params:
        flat += [name.encode("utf-8", "replace"), value.encode("utf-8", "replace")]
    return flat or None


def _disposition(entity: Entity) -> list[object] | None:
    value = entity.parsed.get("content-disposition")
    if value is None:
        return None
    kind = str(value).split(";")[0].strip().lower()
    params = entity.parsed.get_params(header="content-disposition") or []
    return [kind.encode(), _paramList(_params(params[1:]))]


def bodyStructure(entity: Entity, extended: bool = True) -> bytes:
    """
    The wire form of an entity's BODYSTRUCTURE (C{extended}) or BODY.
    """
    if entity.mainType == "multipart" and entity.parts:
        parts = b"".join(bodyStructure(p, extended) for p in entity.parts)
        rest: list[object] = [entity.subType.encode()]
        if extended:
            rest += [
                _paramList(entity.params),
                _disposition(entity),
                entity.field(b"content-language"),
                entity.field(b"content-location"),
            ]
        return b"(" + parts + b" " + b" ".join(formatValue(v) for v in rest) + b")"
    encoding = entity.field(b"content-transfer-encoding")
    out: list[object] = [
        entity.mainType.encode(),
        entity.subType.encode(),
        _paramList(entity.params),
        entity.field(b"content-id"),
        entity.field(b"content-description"),
        (encoding or b"7bit").strip().lower(),
        entity.bodySize,
    ]
    if entity.message is not None:
        out += [
            envelope(entity.message),
            Raw(bodyStructure(entity.message, extended)),
            entity.bodyLines(),
        ]
    elif entity.mainType == "text":
        out.append(entity.bodyLines())
    if extended:
        out += [
            entity.field(b"content-md5"),
            _disposition(entity),
            entity.field(b"content-language"),
            entity.field(b"content-location"),
        ]
    return formatValue(out)


# Sections


@frozen
class Section:
    """
    A parsed C{BODY[...]<a.b>}.

    @ivar part: the part numbers (empty for the whole message).
    @ivar text: C{""}, C{HEADER}, C{HEADER.FIELDS}, C{HEADER.FIELDS.NOT}, C{TEXT}
        or C{MIME}.
    @ivar fields: the field names for C{HEADER.FIELDS[.NOT]}, upper-cased.
    @ivar partial: (origin, length) or C{None}.
    """

    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None
    #: C{BINARY} or C{BINARY.SIZE} for RFC 3516's items (C{BODY} otherwise).
    binary: str = ""

    def label(self) -> str:
        """
        The section as the response names it (the partial's length dropped).
        """
        spec = ".".join(str(n) for n in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        label = f"{self.binary or 'BODY'}[{spec}]"
        if self.partial is not None:
            label += f"<{self.partial[0]}>"
        return label


_SECTION = re.compile(
    r"(?P<part>[1-9][0-9]{0,8}(?:\.[1-9][0-9]{0,8})*)?"
    r"(?:(?(part)\.)(?P<text>HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME))?"
    r"(?P<fields> \(.*\))?\Z",
    re.IGNORECASE,
)
_PARTIAL = re.compile(r"<([0-9]{1,10})\.([1-9][0-9]{0,9})>\Z")


def parseSection(spec: str, partial: str) -> Section:
    """
    Parse the inside of C{BODY[...]} and an optional C{<a.b>}.

    @raise IMAPSyntaxError: for anything RFC 3501 does not allow.
    """
    match = _SECTION.match(spec)
    if match is None:
        raise IMAPSyntaxError(f"invalid section [{spec[:40]}]")
    text = (match.group("text") or "").upper()
    if text == "MIME" and not match.group("part"):
        raise IMAPSyntaxError("MIME needs a part number")
    names: tuple[str, ...] = ()
    if text.startswith("HEADER.FIELDS"):
        if not match.group("fields"):
            raise IMAPSyntaxError("HEADER.FIELDS needs a list of names")
        tokens = tokenize([match.group("fields").encode()])
        if len(tokens) != 1 or not isinstance(tokens[0], list) or not tokens[0]:
            raise IMAPSyntaxError("HEADER.FIELDS needs a list of names")
        names = tuple(_fieldName(t) for t in tokens[0])
    elif match.group("fields"):
        raise IMAPSyntaxError("field names only follow HEADER.FIELDS")
    origin: tuple[int, int] | None = None
    if partial:
        p = _PARTIAL.match(partial)
        if p is None:
            raise IMAPSyntaxError(f"invalid partial {partial[:30]}")
        origin = (int(p.group(1)), int(p.group(2)))
    part = (
        tuple(int(n) for n in match.group("part").split("."))
        if match.group("part")
        else ()
    )
    return Section(part, text, names, origin)


def _fieldName(token: Token) -> str:
    if isinstance(token, list):
        raise IMAPSyntaxError("field names are strings")
    name = token.decode("ascii", "replace") if isinstance(token, bytes) else token
    if not name or ":" in name or not name.isprintable() or " " in name:
        raise IMAPSyntaxError("invalid header field name")
    return name.upper()


def _child(entity: Entity, number: int) -> Entity | None:
    if entity.message is not None:
        entity = entity.message
    if entity.mainType == "multipart" and entity.parts:
        return entity.parts[number - 1] if number <= len(entity.parts) else None
    return entity if number == 1 else None


def sectionContent(root: Entity, section: Section) -> bytes:
    """
    The octets of C{section} (before any partial); empty for a part that does
    not exist, as Dovecot answers.
    """
    entity: Entity | None = root
    for number in section.part:
        assert entity is not None
        entity = _child(entity, number)
        if entity is None:
            return b""
    assert entity is not None
    if section.text == "MIME":
        return entity.header
    if section.part and section.text:
        # HEADER and TEXT of a part apply to an encapsulated message.
        if entity.message is None:
            return b""
        entity = entity.message
    if section.text == "":
        return entity.body if section.part else entity.octets
    if section.text == "TEXT":
        return entity.body
    if section.text == "HEADER":
        return entity.header
    wanted = {name.encode().lower() for name in section.fields}
    keep = section.text == "HEADER.FIELDS"
    lines = [
        name + b": " + value + b"\r\n"
        for name, value in entity.fields()
        if (name.lower() in wanted) == keep
    ]
    return b"".join(lines) + b"\r\n"


def partial(content: bytes, section: Section) -> bytes:
    """
    C{content} cut to the section's C{<origin.length>}.
    """
    if section.partial is None:
        return content
    origin, length = section.partial
    return content[origin : origin + length]


# The FETCH attribute list


SIMPLE_ITEMS = frozenset(
    {
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "BODY",
        "UID",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
        "MODSEQ",
    }
)
_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
_BINARY_SECTION = re.compile(
    r"(BINARY(?:\.PEEK|\.SIZE)?)\[([1-9][0-9]{0,8}(?:\.[1-9][0-9]{0,8})*)?\]"
    r"(<[^>]*>)?\Z",
    re.IGNORECASE,
)
_BODY_SECTION = re.compile(
    r"(BODY(?:\.PEEK)?)\[(.*)\](<[^>]*>)?\Z", re.IGNORECASE | re.DOTALL
)


@frozen
class FetchItem:
    """
    One requested FETCH attribute.

    @ivar name: an item of L{SIMPLE_ITEMS}, or C{BODY[]} for a section.
    @ivar section: for C{BODY[...]}.
    @ivar peek: whether reading it leaves C{\\Seen} alone.
    """

    name: str
    section: Section | None = None
    peek: bool = True

    @property
    def needsContent(self) -> bool:
        """
        Whether answering needs the message's contents; RFC822.SIZE only does
        for a message whose size the store does not know (see
        L{netplugins.mail.maildir.folder.Message.wireSize}).
        """
        return self.name not in (
            "FLAGS",
            "UID",
            "INTERNALDATE",
            "RFC822.SIZE",
            "MODSEQ",
        )

    @property
    def needsStructure(self) -> bool:
        """
        Whether answering needs the message's MIME structure (L{parseEntity}),
        not only its header and body (L{splitEntity}): the email package's
        parse was most of the cost of a plain C{BODY.PEEK[]} FETCH.
        """
        if self.name in ("BODY", "BODYSTRUCTURE"):
            return True
        return self.section is not None and bool(self.section.part)


def parseFetchItems(token: Token) -> list[FetchItem]:
    """
    Parse FETCH's attribute argument: one item, a macro or a list of at most
    L{MAX_FETCH_ITEMS}.  Items asked for more than once are answered once (a
    C{BODY[...]} and its C{BODY.PEEK[...]} too, marking C{\\Seen}).

    @raise IMAPSyntaxError: for an unknown item or too many.
    """
    if isinstance(token, str) and token.upper() in _MACROS:
        return [FetchItem(n) for n in _MACROS[token.upper()]]
    tokens = token if isinstance(token, list) else [token]
    if not tokens:
        raise IMAPSyntaxError("empty FETCH list")
    if len(tokens) > MAX_FETCH_ITEMS:
        raise IMAPSyntaxError(f"at most {MAX_FETCH_ITEMS} FETCH attributes")
    unique: dict[tuple[str, Section | None], FetchItem] = {}
    for t in tokens:
        item = _fetchItem(t)
        key = (item.name, item.section)
        seen = unique.get(key)
        if seen is None or (seen.peek and not item.peek):
            # Dicts keep the first position of a key whatever its value.
            unique[key] = item
    return list(unique.values())


def _fetchItem(token: Token) -> FetchItem:
    if not isinstance(token, str):
        raise IMAPSyntaxError("invalid FETCH attribute")
    upper = token.upper()
    if upper in SIMPLE_ITEMS:
        if upper in ("RFC822", "RFC822.TEXT"):
            return FetchItem(upper, peek=False)
        return FetchItem(upper)
    binary = _BINARY_SECTION.match(token)
    if binary is not None:
        kind = binary.group(1).upper()
        if kind == "BINARY.SIZE" and binary.group(3):
            raise IMAPSyntaxError("BINARY.SIZE takes no partial")
        section = parseSection(binary.group(2) or "", binary.group(3) or "")
        label = "BINARY.SIZE" if kind == "BINARY.SIZE" else "BINARY"
        return FetchItem(
            label + "[]", evolve(section, binary=label), peek=kind != "BINARY"
        )
    match = _BODY_SECTION.match(token)
    if match is None:
        raise IMAPSyntaxError(f"unknown FETCH attribute {token[:40]}")
    section = parseSection(match.group(2), match.group(3) or "")
    return FetchItem("BODY[]", section, peek=match.group(1).upper() == "BODY.PEEK")


def fetchValue(item: FetchItem, entity: Entity) -> tuple[str, list[bytes]]:
    """
    The response label and wire value of a content item for a message, the
    value as pieces to write in sequence (a literal's contents are not copied
    into one string with its length).

    @raise FetchTooLargeError: when the contents this answer and those before it
        for the same message (L{Entity.served}) pass L{FETCH_COPIES} times
        the message plus L{FETCH_SLACK}.
    """
    if item.name == "RFC822.SIZE":
        return item.name, [str(entity.size).encode()]
    if item.name == "ENVELOPE":
        return item.name, [formatValue(envelope(entity))]
    if item.name in ("BODYSTRUCTURE", "BODY"):
        return item.name, [bodyStructure(entity, item.name != "BODY")]
    if item.name in ("BINARY[]", "BINARY.SIZE[]"):
        return _binaryValue(item, entity)
    label = item.name
    if item.name == "RFC822":
        content = entity.octets
    elif item.name == "RFC822.HEADER":
        content = entity.header
    elif item.name == "RFC822.TEXT":
        content = entity.body
    else:
        assert item.section is not None
        content = partial(sectionContent(entity, item.section), item.section)
        label = item.section.label()
    _serve(entity, content)
    if b"\x00" in content:
        # An IMAP4rev1 literal holds no NUL (a BINARYMIME message may): as
        # Dovecot does, BODY[] shows each as 0x80; BINARY[] has them all.
        content = content.replace(b"\x00", b"\x80")
    # Written out rather than through Literal, which would copy it once more.
    return label, [b"{%d}\r\n" % len(content), content]


def _serve(entity: Entity, content: bytes) -> None:
    """
    Count C{content} against what one message's FETCH may return.

    @raise FetchTooLargeError: past L{FETCH_COPIES} times the message plus
        L{FETCH_SLACK}.
    """
    entity.served += len(content)
    if entity.served > FETCH_COPIES * entity.size + FETCH_SLACK:
        raise FetchTooLargeError(
            "[LIMIT] FETCH would return too much of one message: "
            "ask for fewer sections at a time"
        )


def _binaryValue(item: FetchItem, root: Entity) -> tuple[str, list[bytes]]:
    """
    RFC 3516's BINARY[part] and BINARY.SIZE[part]: the part's content with
    its transfer encoding undone (the whole message as it is for C{[]}).
    """
    section = item.section
    assert section is not None
    entity: Entity | None = root
    for number in section.part:
        assert entity is not None
        entity = _child(entity, number)
        if entity is None:
            break
    if entity is None:
        content = b""
    elif not section.part:
        content = entity.octets
    else:
        encoding = entity.field(b"content-transfer-encoding")
        content = decodeBody(entity.body, encoding)
    if item.name == "BINARY.SIZE[]":
        return section.label(), [b"%d" % len(content)]
    content = partial(content, section)
    _serve(root, content)
    return section.label(), [literalHead(content), content]
