"""
Tests for np-imap's COMPRESS=DEFLATE (RFC 4978): the deflate layer in memory
(pipelining across the switch, a compression bomb, bad input), and imaplib
over STARTTLS with the deflate streams done by hand with zlib.
"""

from __future__ import annotations

import imaplib
import ssl
import zlib
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.mail.imap.compress import INFLATE_CHUNK, DeflateTransport
from netplugins.mail.imap.server import MAX_LINE
from netplugins.mail.maildir.store import MaildirStore
from tests.test_imap import Session, plainMessage, serveOverTLS


class Deflater:
    """
    A client's two deflate streams.
    """

    def __init__(self) -> None:
        self.out = zlib.compressobj(wbits=-15)
        self.inflate = zlib.decompressobj(-15)

    def pack(self, data: bytes) -> bytes:
        return self.out.compress(data) + self.out.flush(zlib.Z_SYNC_FLUSH)

    def unpack(self, data: bytes) -> bytes:
        return self.inflate.decompress(data)


class CompressSessionTests(SynchronousTestCase):
    """
    COMPRESS DEFLATE on a session in memory.
    """

    def setUp(self) -> None:
        self.s = Session(self)
        self.successResultOf(self.s.store.deliver("alice", plainMessage("hi")))
        self.s.login()
        self.z = Deflater()

    def compress(self, pipelined: bytes = b"") -> bytes:
        return self.s.send(b"z COMPRESS DEFLATE\r\n" + pipelined)

    def test_capability(self) -> None:
        """CAPABILITY offers COMPRESS=DEFLATE."""
        self.assertIn(b" COMPRESS=DEFLATE", self.s.send(b"c CAPABILITY\r\n"))

    def test_bothWays(self) -> None:
        """The OK is in the clear; then commands and answers are deflated."""
        self.assertEqual(self.compress(), b"z OK DEFLATE active\r\n")
        self.assertIsInstance(self.s.protocol.transport, DeflateTransport)
        reply = self.s.send(self.z.pack(b"s SELECT INBOX\r\nf FETCH 1 BODY[]\r\n"))
        text = self.z.unpack(reply)
        self.assertIn(b"s OK [READ-WRITE]", text)
        self.assertIn(b"Subject: hi", text)
        self.assertTrue(text.endswith(b"f OK Fetch completed.\r\n"))

    def test_pipelinedAfterCompress(self) -> None:
        """Octets sent right after COMPRESS in the same write are read inflated."""
        reply = self.compress(self.z.pack(b"n NOOP\r\n"))
        clear, _, rest = reply.partition(b"\r\n")
        self.assertEqual(clear, b"z OK DEFLATE active")
        self.assertEqual(self.z.unpack(rest), b"n OK NOOP completed.\r\n")

    def test_twiceAndBadMechanism(self) -> None:
        """A second COMPRESS is NO [COMPRESSIONACTIVE]; other mechanisms BAD."""
        self.assertIn(b"y BAD", self.s.send(b"y COMPRESS LZ4\r\n"))
        self.compress()
        reply = self.z.unpack(self.s.send(self.z.pack(b"z COMPRESS DEFLATE\r\n")))
        self.assertEqual(reply, b"z NO [COMPRESSIONACTIVE] DEFLATE already active\r\n")

    def test_notBeforeLogin(self) -> None:
        """Before login COMPRESS is BAD."""
        s = Session(self, root=self.s.root)
        s.read()
        self.assertIn(b"z BAD", s.send(b"z COMPRESS DEFLATE\r\n"))

    def test_bomb(self) -> None:
        """64 MiB of A's in 64 KiB: closed at the line limit, little inflated."""
        self.compress()
        bomb = self.z.pack(b"a " + b"A" * (64 * 1024 * 1024))
        self.assertLess(len(bomb), 100 * 1024)
        sizes: list[int] = []
        original = self.s.protocol._inflateMore

        def inflateMore(buffer: bytearray) -> bool:
            sizes.append(len(buffer))
            return original(buffer)  # type: ignore[no-any-return]

        self.s.protocol._inflateMore = inflateMore
        reply = self.z.unpack(self.s.send(bomb))
        self.assertEqual(reply, b"* BYE Line too long\r\n")
        self.assertLessEqual(max(sizes), MAX_LINE + INFLATE_CHUNK)
        self.assertTrue(self.s.transport.disconnecting)

    def test_badStream(self) -> None:
        """Input that is no deflate stream ends the session with BYE."""
        self.compress()
        reply = self.z.unpack(self.s.send(b"\xff" * 32))
        self.assertEqual(reply, b"* BYE Invalid compressed data\r\n")
        self.assertTrue(self.s.transport.disconnecting)


class DeflateIMAP4(imaplib.IMAP4):
    """
    imaplib with RFC 4978's COMPRESS DEFLATE done by hand.
    """

    z: Deflater | None = None
    pending = b""

    def compress(self) -> Any:
        result = self._simple_command("COMPRESS", "DEFLATE")
        self.z = Deflater()
        return result

    def send(self, data: bytes) -> None:  # type: ignore[override]
        if self.z is not None:
            data = self.z.pack(data)
        self.sock.sendall(data)

    def _more(self) -> None:
        assert self.z is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise self.abort("connection closed")
        self.pending += self.z.unpack(chunk)

    def read(self, size: int) -> bytes:
        if self.z is None:
            return super().read(size)
        while len(self.pending) < size:
            self._more()
        data, self.pending = self.pending[:size], self.pending[size:]
        return data

    def readline(self) -> bytes:
        if self.z is None:
            return super().readline()
        while b"\n" not in self.pending:
            self._more()
        line, _, self.pending = self.pending.partition(b"\n")
        return line + b"\n"


class CompressClientTests(TestCase):
    """
    imaplib with zlib over STARTTLS.
    """

    caPath: str
    root: str
    store: MaildirStore
    factory: Any
    port: int

    def setUp(self) -> None:
        serveOverTLS(self)
        data = plainMessage("deflated", body="line of text\n" * 5000)
        return self.store.deliver("alice", data)  # type: ignore[return-value]

    def test_imaplibOverTLS(self) -> Deferred[Any]:
        """imaplib: COMPRESS after STARTTLS and login, then SELECT, FETCH, APPEND."""

        # imaplib knows no COMPRESS: allowed where RFC 4978 allows it.
        commands = {**imaplib.Commands, "COMPRESS": ("AUTH", "SELECTED")}
        self.patch(imaplib, "Commands", commands)

        def session() -> dict[str, Any]:
            c = DeflateIMAP4("127.0.0.1", self.port)
            c.starttls(ssl.create_default_context(cafile=self.caPath))
            c.login("alice", "alice-pw")
            try:
                out: dict[str, Any] = {"compress": c.compress()}
                out["select"] = c.select("INBOX")
                out["fetch"] = c.fetch("1", "(BODY.PEEK[])")
                out["append"] = c.append(
                    "INBOX", None, None, b"Subject: x\r\n\r\ny\r\n"
                )
                out["search"] = c.search(None, "ALL")
            finally:
                c.logout()
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertEqual(out["compress"][0], "OK")
            self.assertEqual(out["select"][0], "OK")
            body = out["fetch"][1][0][1]
            self.assertEqual(body.count(b"line of text\r\n"), 5000)
            self.assertEqual(out["append"][0], "OK")
            self.assertEqual(out["search"], ("OK", [b"1 2"]))

        return deferToThread(session).addCallback(check)
