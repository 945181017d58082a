"""
Tests for np-imap's BINARY (RFC 3516): FETCH BINARY[part], BINARY.PEEK and
BINARY.SIZE with transfer encodings undone and literal8 for NUL octets,
APPEND's literal8; in memory, with imaplib over TCP, and against Dovecot.
"""

from __future__ import annotations

import base64
import imaplib
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.mail.imap.binary import UnknownCTEError, decodeBody, literalHead
from netplugins.mail.imap.parse import Literal, Token
from netplugins.mail.maildir.store import MaildirStore
from tests import test_imap_dovecot
from tests.test_imap import Session, serveOverTLS
from tests.test_imap_sort import compareWithDovecot

#: The attachment: every octet value, NUL included.
ATTACHMENT = bytes(range(256)) * 4

MIXED = (
    b"From: carol@example.net\r\nTo: alice@example.org\r\nSubject: binary\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nau lait\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(ATTACHMENT).replace(b"\n", b"\r\n")
    + b"--b--\r\n"
)
#: A message whose second part has an encoding np-imap does not know.
ODD = (
    b"Subject: odd\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
    b"--b\r\nContent-Type: application/x-odd\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
    b"--b--\r\n"
)


class DecodeTests(SynchronousTestCase):
    """
    Transfer encodings undone.
    """

    def test_encodings(self) -> None:
        """Identity, base64 (lenient), quoted-printable; others refused."""
        self.assertEqual(decodeBody(b"a\r\nb", None), b"a\r\nb")
        self.assertEqual(decodeBody(b"a", b" 8BIT "), b"a")
        self.assertEqual(decodeBody(b"AAEC\r\nAw==\r\n", b"base64"), b"\0\1\2\3")
        self.assertEqual(decodeBody(b"AA!E", b"Base64"), b"\x00\x01")
        self.assertEqual(decodeBody(b"a=3D=\r\nb", b"quoted-printable"), b"a=b")
        self.assertRaises(UnknownCTEError, decodeBody, b"", b"x-uuencode")

    def test_literalHead(self) -> None:
        """NUL makes a literal8."""
        self.assertEqual(literalHead(b"ab"), b"{2}\r\n")
        self.assertEqual(literalHead(b"a\x00"), b"~{2}\r\n")


class BinaryFetchTests(SynchronousTestCase):
    """
    FETCH BINARY and APPEND's literal8 in memory.
    """

    def setUp(self) -> None:
        self.s = Session(self)
        self.s.login()
        reply = self.s.send(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (len(MIXED), MIXED))
        assert b"a OK" in reply, reply
        self.s.send(b"s SELECT INBOX\r\n")

    def test_capability(self) -> None:
        """CAPABILITY offers BINARY."""
        self.assertIn(b" BINARY", self.s.send(b"c CAPABILITY\r\n"))

    def test_fetch(self) -> None:
        """Decoded parts, literal8 for NUL, sizes, partials; PEEK keeps \\Seen off."""
        reply = self.s.send(
            b"f FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[2] BINARY.PEEK[1]<2.4>)\r\n"
        )
        self.assertEqual(
            reply,
            b"* 1 FETCH (BINARY[1] {13}\r\ncaf\xc3\xa9 au lait"
            b" BINARY.SIZE[2] 1024 BINARY[1]<2> {4}\r\nf\xc3\xa9 )\r\n"
            b"f OK Fetch completed.\r\n",
        )
        reply = self.s.send(b"g FETCH 1 BINARY[2]\r\n")
        self.assertTrue(
            reply.startswith(
                b"* 1 FETCH (BINARY[2] ~{1024}\r\n" + ATTACHMENT + b" FLAGS (\\Seen"
            )
        )

    def test_errors(self) -> None:
        """Unknown encodings are NO [UNKNOWN-CTE]; HEADER sections are BAD."""
        self.s.send(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (len(ODD), ODD))
        self.s.send(b"n NOOP\r\n")
        self.assertEqual(
            self.s.send(b"f FETCH 2 BINARY.PEEK[2]\r\n"),
            b"f NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n",
        )
        for bad in (b"BINARY[1.HEADER]", b"BINARY.SIZE[1]<0.2>", b"BINARY[0]"):
            self.assertIn(b"g BAD", self.s.send(b"g FETCH 1 " + bad + b"\r\n"))

    def test_appendLiteral8(self) -> None:
        """APPEND ~{n} stores text; NUL in it is NO [UNKNOWN-CTE], in {n} BAD."""
        self.assertIn(
            b"a OK [APPENDUID", self.s.send(b"a APPEND INBOX ~{3+}\r\nx\r\n\r\n")
        )
        self.assertEqual(
            self.s.send(b"b APPEND INBOX ~{3+}\r\nx\x00y\r\n"),
            b"b NO [UNKNOWN-CTE] NUL octets cannot be stored\r\n",
        )
        self.assertIn(b"c BAD", self.s.send(b"c APPEND INBOX {3+}\r\nx\x00y\r\n"))


class BinaryClientTests(TestCase):
    """
    imaplib reads BINARY's literal8 over STARTTLS.
    """

    caPath: str
    root: str
    store: MaildirStore
    factory: Any
    port: int

    def setUp(self) -> None:
        serveOverTLS(self)
        return self.store.deliver("alice", MIXED)  # type: ignore[return-value]

    def test_imaplib(self) -> Deferred[Any]:
        """imaplib: FETCH BINARY.PEEK[2] returns the attachment's octets."""
        import ssl

        def session() -> Any:
            c = imaplib.IMAP4("127.0.0.1", self.port)
            c.starttls(ssl.create_default_context(cafile=self.caPath))
            c.login("alice", "alice-pw")
            try:
                c.select("INBOX")
                return c.fetch("1", "(BINARY.PEEK[2] BINARY.SIZE[1])")
            finally:
                c.logout()

        def check(result: Any) -> None:
            status, data = result
            self.assertEqual(status, "OK")
            self.assertEqual(data[0][1], ATTACHMENT)
            self.assertIn(b"BINARY.SIZE[1] 13", data[1])

        return deferToThread(session).addCallback(check)


#: The differential's session (not BINARY[2] of ODD: Dovecot sends a
#: FETCH of the UID alone before its NO [UNKNOWN-CTE]; not BINARY[1.MIME],
#: which Dovecot answers though RFC 3516's grammar has no such section).
SCRIPT: list[str | tuple[str, bytes]] = [
    ('APPEND INBOX "01-Oct-2024 10:00:00 +0000" ', MIXED),
    ('APPEND INBOX "02-Oct-2024 10:00:00 +0000" ~', b"Subject: b\r\n\r\ntext\r\n"),
    ('APPEND INBOX "03-Oct-2024 10:00:00 +0000" ', ODD),
    "SELECT INBOX",
    "FETCH 1 (BINARY.PEEK[1] BINARY.PEEK[2] BINARY.SIZE[1] BINARY.SIZE[2])",
    "FETCH 1 (BINARY.PEEK[1]<2.5> BINARY.PEEK[2]<1000.100>)",
    "FETCH 3 BINARY.PEEK[1]",
    "FETCH 1 BINARY.PEEK[9]",
    "FETCH 2 (BINARY.PEEK[1] BINARY.SIZE[1])",
    "FETCH 1 (BINARY[1] FLAGS)",
    "FETCH 2 (BINARY.PEEK[] BINARY.SIZE[])",
]


class DovecotBinaryTests(TestCase):
    """
    BINARY answered as Dovecot answers it.
    """

    timeout = 120
    maxDiff = None

    def test_sameAnswers(self) -> Deferred[None]:
        """Every BINARY FETCH and the literal8 APPEND agree with Dovecot."""
        # The differential's tokenizer knows no literal8: its "~" is dropped
        # (test_fetch checks that np-imap sends one).
        tokenize = test_imap_dovecot.tokenize

        def withoutTilde(pieces: list[bytes]) -> list[Token]:
            return tokenize(
                [p if isinstance(p, Literal) else p.removesuffix(b"~") for p in pieces]
            )

        self.patch(test_imap_dovecot, "tokenize", withoutTilde)
        return compareWithDovecot(self, SCRIPT)
