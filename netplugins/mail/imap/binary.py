"""
BINARY for np-imap (RFC 3516): a part's content with its
Content-Transfer-Encoding undone, for C{FETCH BINARY[part]},
C{BINARY.PEEK[part]} and C{BINARY.SIZE[part]}, sent as a C{literal8}
(C{~{n}}) when it holds NUL octets.

Decoding is linear in the part's size and never larger than it (base64 and
quoted-printable only shrink); an encoding other than 7bit, 8bit, binary,
base64 and quoted-printable is C{NO [UNKNOWN-CTE]}, as the RFC asks.
"""

from __future__ import annotations

import binascii
import re

from netplugins.mail.imap.parse import Literal
from netplugins.mail.imap.session import CommandError

#: The encodings whose content is the body as it is.
_IDENTITY = frozenset({b"", b"7bit", b"8bit", b"binary"})
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


class Literal8(Literal):
    """
    A string that arrived as a C{literal8} (C{~{n}}): APPEND's binary form.
    """


class UnknownCTEError(CommandError):
    """
    A part whose Content-Transfer-Encoding np-imap cannot undo.
    """


def decodeBody(body: bytes, encoding: bytes | None) -> bytes:
    """
    C{body} with the transfer encoding C{encoding} (a field value, or
    C{None}) undone.

    @raise UnknownCTEError: for an encoding this does not know.
    """
    name = (encoding or b"").strip().lower()
    if name in _IDENTITY:
        return body
    if name == b"base64":
        # Lenient, as mail readers are: what is not base64 is skipped, a
        # missing pad supplied.
        data = _NOT_BASE64.sub(b"", body)
        data = data[: len(data) - len(data) % 4 if len(data) % 4 == 1 else None]
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    if name == b"quoted-printable":
        return binascii.a2b_qp(body)
    raise UnknownCTEError("[UNKNOWN-CTE] Unknown Content-Transfer-Encoding")


def literalHead(content: bytes) -> bytes:
    """
    The announcement of C{content} as a literal: C{literal8} when it holds
    NUL, which an IMAP4rev1 literal may not.
    """
    if b"\x00" in content:
        return b"~{%d}\r\n" % len(content)
    return b"{%d}\r\n" % len(content)
