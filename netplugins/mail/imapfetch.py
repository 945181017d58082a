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
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils
import re
from datetime import UTC, datetime
from typing import Any

from attrs import define, field, frozen

from netplugins.mail.imapparse import (
    IMAPSyntaxError,
    Literal,
    Raw,
    Token,
    formatValue,
    tokenize,
)

MAX_MIME_DEPTH = 20
_LINE_END = re.compile(rb"\r?\n")
_FOLD = re.compile(rb"\r?\n[ \t]+")
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_headerParser = email.parser.BytesHeaderParser(policy=email.policy.compat32)


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


@define
class Entity:
    """
    A MIME entity: a message or a body part.

    @ivar header: its header octets, the blank line that ends them included.
    @ivar body: the octets after them.
    @ivar parts: a multipart's parts.
    @ivar message: a message/rfc822 part's encapsulated message.
    """

    header: bytes
    body: bytes
    mainType: str = "text"
    subType: str = "plain"
    params: list[tuple[str, str]] = field(factory=list)
    parsed: email.message.Message = field(factory=email.message.Message)
    parts: list[Entity] = field(factory=list)
    message: Entity | None = None

    def fields(self) -> list[tuple[bytes, bytes]]:
        """
        The header fields as (name, raw value with folding kept) pairs.
        """
        out: list[tuple[bytes, bytes]] = []
        for line in self.header.split(b"\r\n"):
            if line[:1] in (b" ", b"\t") and out:
                name, value = out[-1]
                out[-1] = (name, value + b"\r\n" + line)
            elif b":" in line:
                name, _, value = line.partition(b":")
                out.append((name.strip(), value.lstrip(b" \t")))
        return out

    def field(self, name: bytes) -> bytes | None:
        """
        The first C{name} field's value, unfolded, or C{None}.
        """
        for fieldName, value in self.fields():
            if fieldName.lower() == name.lower():
                return _FOLD.sub(b" ", value)
        return None


def _headerEnd(raw: bytes) -> int:
    if raw.startswith(b"\r\n"):
        return 2
    blank = raw.find(b"\r\n\r\n")
    # No blank line: it is all header, as Dovecot reads it.
    return len(raw) if blank == -1 else blank + 4


def splitEntity(raw: bytes) -> Entity:
    """
    C{raw} cut into its header and body only, its MIME structure not read:
    all that FETCH items without L{FetchItem.needsStructure} look at.
    """
    end = _headerEnd(raw)
    return Entity(raw[:end], raw[end:])


def parseEntity(
    raw: bytes, default: tuple[str, str] = ("text", "plain"), depth: int = 0
) -> Entity:
    """
    The MIME structure of C{raw} (CRLF line ends).

    @param default: the type of a part without Content-Type (message/rfc822 in
        a multipart/digest).
    """
    end = _headerEnd(raw)
    header, body = raw[:end], raw[end:]
    parsed = _headerParser.parsebytes(header)
    entity = Entity(header, body, parsed=parsed)
    if parsed.get("content-type") is None:
        entity.mainType, entity.subType = default
        if default == ("text", "plain"):
            entity.params = [("charset", "us-ascii")]
    else:
        # An unparseable type reads as text/plain, as email.message has it.
        entity.mainType, _, entity.subType = parsed.get_content_type().partition("/")
        entity.params = _params(parsed.get_params() or [])[1:]
        if entity.mainType == "text" and "charset" not in dict(entity.params):
            # RFC 2045's default, stated as Dovecot states it.
            entity.params.insert(0, ("charset", "us-ascii"))
    if depth >= MAX_MIME_DEPTH:
        return entity
    if entity.mainType == "multipart":
        boundary = parsed.get_boundary()
        if boundary:
            digest = entity.subType == "digest"
            childDefault = ("message", "rfc822") if digest else ("text", "plain")
            entity.parts = [
                parseEntity(p, childDefault, depth + 1)
                for p in splitMultipart(body, boundary.encode("latin-1", "replace"))
            ]
    elif (entity.mainType, entity.subType) == ("message", "rfc822"):
        entity.message = parseEntity(body, depth=depth + 1)
    return entity


def _params(pairs: list[Any]) -> list[tuple[str, str]]:
    out = []
    for name, value in pairs:
        if isinstance(value, tuple):
            value = email.utils.collapse_rfc2231_value(value)
        out.append((name.lower(), str(value)))
    return out


def splitMultipart(body: bytes, boundary: bytes) -> list[bytes]:
    """
    The parts of a multipart body: the octets between delimiter lines (the CRLF
    before a delimiter belongs to it), preamble and epilogue left out.
    """
    delimiter = b"--" + boundary
    parts: list[bytes] = []
    start: int | None = None
    pos = 0
    while pos <= len(body):
        lineEnd = body.find(b"\r\n", pos)
        line = body[pos:] if lineEnd == -1 else body[pos:lineEnd]
        if line.startswith(delimiter):
            rest = line[len(delimiter) :]
            closing = rest.startswith(b"--")
            if closing or not rest.strip(b" \t"):
                if start is not None:
                    parts.append(body[start : max(start, pos - 2)])
                if closing:
                    return parts
                start = len(body) if lineEnd == -1 else lineEnd + 2
        if lineEnd == -1:
            break
        pos = lineEnd + 2
    if start is not None:
        parts.append(body[start:])
    return parts


# ENVELOPE and BODYSTRUCTURE


def _addresses(value: bytes | None) -> Raw | None:
    # RFC 3501's address lists have no spaces between the addresses.
    if value is None:
        return None
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
    return [kind.encode(), _paramList(_params(params)[1:])]


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
        len(entity.body),
    ]
    if entity.message is not None:
        out += [
            envelope(entity.message),
            Raw(bodyStructure(entity.message, extended)),
            entity.body.count(b"\n"),
        ]
    elif entity.mainType == "text":
        out.append(entity.body.count(b"\n"))
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

    def label(self) -> str:
        """
        The section as the response names it (the partial's length dropped).
        """
        spec = ".".join(str(n) for n in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        label = f"BODY[{spec}]"
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
        return entity.body if section.part else entity.header + entity.body
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
    }
)
_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
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
        L{netplugins.mail.maildir.Message.wireSize}).
        """
        return self.name not in ("FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE")

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
    Parse FETCH's attribute argument: one item, a macro or a list.

    @raise IMAPSyntaxError: for an unknown item.
    """
    if isinstance(token, str) and token.upper() in _MACROS:
        return [FetchItem(n) for n in _MACROS[token.upper()]]
    tokens = token if isinstance(token, list) else [token]
    if not tokens:
        raise IMAPSyntaxError("empty FETCH list")
    return [_fetchItem(t) for t in tokens]


def _fetchItem(token: Token) -> FetchItem:
    if not isinstance(token, str):
        raise IMAPSyntaxError("invalid FETCH attribute")
    upper = token.upper()
    if upper in SIMPLE_ITEMS:
        if upper in ("RFC822", "RFC822.TEXT"):
            return FetchItem(upper, peek=False)
        return FetchItem(upper)
    match = _BODY_SECTION.match(token)
    if match is None:
        raise IMAPSyntaxError(f"unknown FETCH attribute {token[:40]}")
    section = parseSection(match.group(2), match.group(3) or "")
    return FetchItem("BODY[]", section, peek=match.group(1).upper() == "BODY.PEEK")


def fetchValue(item: FetchItem, entity: Entity) -> tuple[str, bytes]:
    """
    The response label and wire value of a content item for a message.
    """
    if item.name == "RFC822.SIZE":
        return item.name, str(len(entity.header) + len(entity.body)).encode()
    if item.name == "ENVELOPE":
        return item.name, formatValue(envelope(entity))
    if item.name in ("BODYSTRUCTURE", "BODY"):
        return item.name, bodyStructure(entity, item.name != "BODY")
    if item.name == "RFC822":
        return item.name, _literal(entity.header + entity.body)
    if item.name == "RFC822.HEADER":
        return item.name, _literal(entity.header)
    if item.name == "RFC822.TEXT":
        return item.name, _literal(entity.body)
    assert item.section is not None
    content = partial(sectionContent(entity, item.section), item.section)
    return item.section.label(), _literal(content)


def _literal(value: bytes) -> bytes:
    return formatValue(Literal(value))
