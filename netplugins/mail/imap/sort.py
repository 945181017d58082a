"""
SORT for np-imap (RFC 5256): what a message is sorted and threaded by
(L{SortFields}, read once from its header), the base subject of RFC 5256
section 2.1, and the order of a SORT.

Strings compare as the RFC's default collation, i;unicode-casemap, has them:
decomposed and upper-cased.  Every key is bounded: a subject is read up to
L{MAX_SUBJECT} characters, an address field up to L{MAX_ADDRESS_FIELD}
octets, a References field up to L{MAX_REFERENCES} message IDs.
"""

from __future__ import annotations

import email.utils
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from attrs import frozen

from netplugins.mail.imap.fetch import MAX_ADDRESS_FIELD, Entity
from netplugins.mail.imap.parse import IMAPSyntaxError, Token
from netplugins.mail.imap.search import _decodeHeader as decodeHeader

#: The sort keys of RFC 5256.
SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"})
#: How much of a Subject field is looked at for its base subject.
MAX_SUBJECT = 4096
#: The most message IDs kept from one References field (the last ones).
MAX_REFERENCES = 100
#: The longest message ID kept.
MAX_MESSAGE_ID = 1000

_SPACES = re.compile(r"[ \t\r\n]+")
_BLOB = re.compile(r"\[[^\[\]]*\] *")
_LEADER = re.compile(r"(?:\[[^\[\]]*\] *)*(?:re|fwd?) *(?:\[[^\[\]]*\] *)?:", re.I)
_MESSAGE_ID = re.compile(rb"<[^<>\s]{1,%d}>" % MAX_MESSAGE_ID)


def casemap(text: str) -> str:
    """
    C{text} as i;unicode-casemap compares it: decomposed, upper-cased.
    """
    return unicodedata.normalize("NFKD", text).upper()


def baseSubject(subject: str) -> tuple[str, bool]:
    """
    The base subject of RFC 5256 section 2.1 (not yet case-mapped), and
    whether anything marked the message as a reply or a forward (a leading
    C{Re:} or C{Fwd:}, a trailing C{(fwd)} or a C{[fwd: ...]} wrapper).

    @param subject: the field's text, encoded words decoded.
    """
    reply = False
    # (1) Runs of white space are one space.
    text = _SPACES.sub(" ", subject[:MAX_SUBJECT])
    while True:
        # (2) Trailing "(fwd)" and spaces.
        while True:
            stripped = text.rstrip(" ")
            if stripped[-5:].lower() == "(fwd)":
                reply = True
                stripped = stripped[:-5]
            if stripped == text:
                break
            text = stripped
        # (3)-(5) Leading "Re:", "Fwd: ", blobs and spaces.
        while True:
            before = text
            leader = _LEADER.match(text)
            if leader is not None:
                text = text[leader.end() :]
                reply = True
            text = text.lstrip(" ")
            blob = _BLOB.match(text)
            if blob is not None and text[blob.end() :]:
                text = text[blob.end() :]
            if text == before:
                break
        # (6) A "[fwd: ...]" wrapper.
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            reply = True
            continue
        return text, reply


@frozen
class SortFields:
    """
    What SORT and THREAD read of one message.

    @ivar subject: its base subject, case-mapped.
    @ivar reply: whether its subject marks it a reply or forward.
    @ivar sent: its sent date (C{Date:} in seconds, else its INTERNALDATE).
    @ivar fromKey: the first From address's mailbox part, case-mapped.
    @ivar toKey: the same of To.
    @ivar ccKey: the same of Cc.
    @ivar messageId: its Message-ID, or C{None}.
    @ivar references: the IDs it refers to, oldest first (References, or the
        first In-Reply-To ID).
    """

    subject: str
    reply: bool
    sent: float
    fromKey: str
    toKey: str
    ccKey: str
    messageId: bytes | None
    references: tuple[bytes, ...]


def _mailbox(value: bytes | None) -> str:
    # The first address's local part, as RFC 5256 sorts FROM, TO and CC.
    if value is None:
        return ""
    if len(value) > MAX_ADDRESS_FIELD:
        value = value[:MAX_ADDRESS_FIELD]
    for name, address in email.utils.getaddresses([value.decode("latin-1")]):
        if name or address:
            mailbox, at, _ = address.rpartition("@")
            local = mailbox if at else address
            return casemap(local.encode("latin-1").decode("utf-8", "replace"))
    return ""


def _sentDate(value: bytes | None, internal: float) -> float:
    if value is None:
        return internal
    try:
        return email.utils.parsedate_to_datetime(value.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return internal


def _ids(value: bytes | None) -> list[bytes]:
    if value is None:
        return []
    return _MESSAGE_ID.findall(value[: MAX_REFERENCES * (MAX_MESSAGE_ID + 3) * 4])


def sortFields(entity: Entity, internalDate: float) -> SortFields:
    """
    The L{SortFields} of a message from its header.
    """
    subjectField = entity.field(b"subject")
    subject, reply = baseSubject(
        decodeHeader(subjectField[: MAX_SUBJECT * 4]) if subjectField else ""
    )
    ids = _ids(entity.field(b"message-id"))
    references = _ids(entity.field(b"references"))[-MAX_REFERENCES:]
    if not references:
        references = _ids(entity.field(b"in-reply-to"))[:1]
    return SortFields(
        subject=casemap(subject),
        reply=reply,
        sent=_sentDate(entity.field(b"date"), internalDate),
        fromKey=_mailbox(entity.field(b"from")),
        toKey=_mailbox(entity.field(b"to")),
        ccKey=_mailbox(entity.field(b"cc")),
        messageId=ids[0] if ids else None,
        references=tuple(references),
    )


@frozen
class SortMessage:
    """
    One message to order: its number (sequence or UID, as answered), its
    fields, size and INTERNALDATE.
    """

    number: int
    fields: SortFields
    size: int
    internalDate: float


def parseSortCriteria(token: Token) -> list[tuple[str, bool]]:
    """
    SORT's parenthesised criteria as (key, reversed) pairs.

    @raise IMAPSyntaxError: for an empty list, an unknown key or a REVERSE
        with no key after it.
    """
    if not isinstance(token, list) or not token:
        raise IMAPSyntaxError("SORT needs a list of sort criteria")
    out: list[tuple[str, bool]] = []
    reverse = False
    for item in token:
        if not isinstance(item, str):
            raise IMAPSyntaxError("invalid sort criterion")
        name = item.upper()
        if name == "REVERSE" and not reverse:
            reverse = True
            continue
        if name not in SORT_KEYS:
            raise IMAPSyntaxError("unknown sort criterion")
        out.append((name, reverse))
        reverse = False
    if reverse:
        raise IMAPSyntaxError("REVERSE needs a sort criterion after it")
    return out


def _key(message: SortMessage, name: str) -> Any:
    f = message.fields
    if name == "ARRIVAL":
        return message.internalDate
    if name == "DATE":
        return f.sent
    if name == "SIZE":
        return message.size
    if name == "SUBJECT":
        return f.subject
    if name == "FROM":
        return f.fromKey
    if name == "TO":
        return f.toKey
    return f.ccKey


def sortMessages(
    messages: Sequence[SortMessage], criteria: Sequence[tuple[str, bool]]
) -> list[int]:
    """
    The numbers of C{messages} (given in mailbox order) in the order of
    C{criteria}; ties keep the mailbox order, as RFC 5256 says.
    """
    ordered = list(messages)
    # Stable sorts, least significant key first.
    for name, reverse in reversed(criteria):
        ordered.sort(key=lambda m: _key(m, name), reverse=reverse)
    return [m.number for m in ordered]
