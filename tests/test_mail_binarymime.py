"""
A BINARYMIME message (RFC 3030) end to end through np-mail in this process:
sent with smtplib's BDAT, read back whole with imaplib's BINARY (RFC 3516)
and converted (its binary part base64) with poplib.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import poplib
import re
import smtplib
import ssl
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.mailfixtures import PASSWORDS
from tests.test_mail import inProcessHost

#: Every octet, NUL, bare CR and bare LF included.
PAYLOAD = bytes(range(256)) * 4

MESSAGE = (
    b"From: alice@example.org\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: binary\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b0undary"\r\n'
    b"\r\n"
    b"--b0undary\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"See the attachment.\r\n"
    b"--b0undary\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n" + PAYLOAD + b"\r\n"
    b"--b0undary--\r\n"
)


class BinaryMIMETests(TestCase):
    """
    BDAT with BODY=BINARYMIME, then np-imap and np-pop3 serving the message.
    """

    def test_roundTrip(self) -> Deferred[None]:
        """smtplib BDAT → IMAP BINARY[2] is the payload; POP3 gets it as base64."""
        ports, context = inProcessHost(self)
        return deferToThread(self.exchange, ports, context).addCallback(self.check)

    def exchange(self, ports: dict[str, int], context: ssl.SSLContext) -> Any:
        """
        Send with BDAT (in blocking clients, off the reactor); read back.
        """
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=10) as smtp:
            smtp.ehlo("client.test")
            offered = smtp.has_extn("binarymime") and smtp.has_extn("chunking")
            smtp.mail("alice@example.org", ["BODY=BINARYMIME"])
            smtp.rcpt("bob@example.org")
            smtp.send(b"DATA\r\n")
            refusedData = smtp.getreply()
            half = len(MESSAGE) // 2
            smtp.send(b"BDAT %d\r\n" % half + MESSAGE[:half])
            first = smtp.getreply()
            rest = MESSAGE[half:]
            smtp.send(b"BDAT %d LAST\r\n" % len(rest) + rest)
            last = smtp.getreply()
        imap = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=10)
        try:
            imap.starttls(context)
            imap.login("bob", PASSWORDS["bob"])
            imap.select("INBOX", readonly=True)
            _, binary = imap.fetch("1", "(BINARY.PEEK[2] BINARY.SIZE[2])")
            _, whole = imap.fetch("1", "(BINARY.PEEK[])")
            _, body = imap.fetch("1", "(BODY.PEEK[])")
        finally:
            imap.logout()
        pop = poplib.POP3("127.0.0.1", ports["pop3"], timeout=10)
        try:
            pop.stls(context)
            pop.user("bob")
            pop.pass_(PASSWORDS["bob"])
            _, lines, _ = pop.retr(1)
        finally:
            pop.quit()
        return offered, refusedData, first, last, binary, whole, body, lines

    def check(self, result: Any) -> None:
        offered, refusedData, first, last, binary, whole, body, lines = result
        self.assertTrue(offered)
        self.assertEqual(refusedData, (503, b"5.5.1 Error: BINARYMIME requires BDAT"))
        self.assertEqual(first[0], 250)
        self.assertEqual(last[0], 250, last)
        # imaplib reads the literal8 (~{n}) as a literal: the part, decoded.
        self.assertEqual(binary[0][1], PAYLOAD)
        self.assertIn(b"BINARY.SIZE[2] %d" % len(PAYLOAD), binary[1])
        self.assertTrue(whole[0][1].endswith(MESSAGE))
        # BODY[] is a plain literal, which holds no NUL: 0x80 instead.
        self.assertTrue(body[0][1].endswith(MESSAGE.replace(b"\x00", b"\x80")))
        # POP3: lines only; the binary part arrives base64, the text as sent.
        served = b"\r\n".join(lines) + b"\r\n"
        self.assertIsNone(re.search(rb"\x00|\r(?!\n)|(?<!\r)\n", served))
        parsed = email.message_from_bytes(served, policy=email.policy.default)
        self.assertEqual(parsed["Subject"], "binary")
        text, attachment = parsed.iter_parts()
        self.assertEqual(text.get_content(), "See the attachment.")
        self.assertEqual(attachment["Content-Transfer-Encoding"], "base64")
        self.assertEqual(attachment.get_content(), PAYLOAD)
