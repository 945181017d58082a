"""
Tests for np-smtp's SMTPUTF8 (RFC 6531), CHUNKING/BDAT (RFC 3030) and the
DSN extension's parameters (RFC 3461; the relay queue's reports are tested in
L{tests.test_smtp_queue}): in memory, then smtplib over a real socket.
"""

from __future__ import annotations

import email
import email.policy
import os
import smtplib
from email.message import EmailMessage
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.mail.smtp.dsn import decodeXtext, parseNotify, parseOrcpt
from netplugins.mail.smtp.queuedir import Envelope
from netplugins.mail.smtp.server import SMTPServer
from netplugins.service import listeningPorts
from netplugins.tap.smtp import SMTPSettings, smtpService
from tests.mailfixtures import DOMAIN, waitForSessions, writeHtpasswd
from tests.test_smtp import SMTPTestMixin, maildirMessages, plain


class SMTPUTF8Tests(SMTPTestMixin, SynchronousTestCase):
    """
    Internationalised addresses, with and without MAIL's SMTPUTF8.
    """

    def test_utf8Sender(self) -> None:
        """With SMTPUTF8 a UTF-8 sender is taken and recorded as UTF-8."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            "EHLO c\r\nMAIL FROM:<jürgen@bücher.test> SMTPUTF8\r\n"
            "RCPT TO:<alice@example.org>\r\n"
            "DATA\r\nSubject: Grüße\r\n\r\nhi\r\n.\r\n".encode(),
        )
        self.assertEqual(lines[10:12], ["250 2.1.0 Ok", "250 2.1.5 Ok"])
        self.assertTrue(lines[-1].startswith("250 2.0.0 Ok: queued as "))
        [message] = self.world.newMessages("alice")
        self.assertTrue(
            message.startswith("Return-Path: <jürgen@bücher.test>\r\n".encode())
        )
        self.assertIn(b" with UTF8SMTP id ", message)
        self.assertIn("Subject: Grüße\r\n".encode(), message)

    def test_withoutSMTPUTF8(self) -> None:
        """Without SMTPUTF8 a UTF-8 sender or recipient gets 553 5.6.7."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            "EHLO c\r\nMAIL FROM:<jürgen@bücher.test>\r\nMAIL FROM:<x@remote.test>\r\n"
            "RCPT TO:<jürgen@example.org>\r\n".encode(),
        )
        self.assertEqual(
            lines[10:],
            [
                "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
                "250 2.1.0 Ok",
                "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
            ],
        )

    def test_badUTF8(self) -> None:
        """An address that is not UTF-8 gets 501."""
        server, transport = self.connect()
        lines = self.talk(server, transport, b"EHLO c\r\nMAIL FROM:<\xff@x.test>\r\n")
        self.assertEqual(lines[-1], "501 5.5.2 Error: invalid UTF-8 in command")

    def test_notRelayed(self) -> None:
        """A UTF-8 foreign recipient is refused 553 5.6.7 rather than relayed."""
        server, transport = self.secured(queue=self.relayQueue())
        self.talk(
            server,
            transport,
            f"AUTH PLAIN {plain('alice', 'alice-password')}\r\n".encode(),
        )
        lines = self.talk(
            server,
            transport,
            "MAIL FROM:<alice@example.org> SMTPUTF8\r\nRCPT TO:<jürgen@bücher.test>\r\n"
            "RCPT TO:<x@remote.test>\r\n".encode(),
        )
        self.assertEqual(
            lines,
            [
                "250 2.1.0 Ok",
                "553 5.6.7 <jürgen@bücher.test>: cannot relay unicode addresses",
                "250 2.1.5 Ok",
            ],
        )


class DSNParameterTests(SMTPTestMixin, SynchronousTestCase):
    """
    RET=, ENVID=, NOTIFY= and ORCPT= (RFC 3461): parsed, bounded, kept.
    """

    def test_keptInQueueEnvelope(self) -> None:
        """The relayed message's envelope keeps RET, ENVID, NOTIFY and ORCPT."""
        queue = self.relayQueue()
        queue.relay = lambda *a: Deferred()  # never answers: stays queued
        server, transport = self.authenticated(queue=queue)
        lines = self.talk(
            server,
            transport,
            b"MAIL FROM:<alice@example.org> RET=hdrs ENVID=QQ+2B1\r\n"
            b"RCPT TO:<x@remote.test> NOTIFY=success,DELAY"
            b" ORCPT=rfc822;X+2Bo@remote.test\r\n"
            b"RCPT TO:<y@remote.test> NOTIFY=NEVER\r\n"
            b"RCPT TO:<z@remote.test>\r\n"
            b"DATA\r\nhi\r\n.\r\n",
        )
        self.assertTrue(lines[-1].startswith("250 2.0.0 Ok: queued as "), lines)
        [queueId] = queue.queued()
        with open(os.path.join(queue.directory.path, queueId), "rb") as f:
            envelope = Envelope.decode(f.readline())
        self.assertEqual((envelope.ret, envelope.envid), ("HDRS", "QQ+1"))
        self.assertEqual(
            [(r.address, r.notify, r.orcpt) for r in envelope.recipients],
            [
                ("x@remote.test", ("SUCCESS", "DELAY"), "rfc822;X+o@remote.test"),
                ("y@remote.test", (), None),
                ("z@remote.test", None, None),
            ],
        )

    def test_badParameters(self) -> None:
        """Malformed, repeated, overlong or control-character values get 501."""
        server, transport = self.connect()
        self.talk(server, transport, b"EHLO c\r\n")
        mail = [
            b"RET=PARTIAL",
            b"RET=FULL RET=HDRS",
            b"ENVID=" + b"x" * 101,
            b"ENVID=a+0Db",
            b"ENVID=a+zz",
            b"ENVID=a=b",
            b"ENVID=",
        ]
        for param in mail:
            self.assertEqual(
                self.talk(
                    server, transport, b"MAIL FROM:<a@b.test> " + param + b"\r\n"
                ),
                [f"501 5.5.4 Bad {param[: param.index(b'=')].decode()} parameter"],
                param,
            )
        self.assertEqual(
            self.talk(
                server, transport, b"MAIL FROM:<a@b.test> ENVID=" + b"x" * 100 + b"\r\n"
            ),
            ["250 2.1.0 Ok"],
        )
        rcpt = [
            b"NOTIFY=NEVER,SUCCESS",
            b"NOTIFY=SUCCESS,SUCCESS",
            b"NOTIFY=SOMETIMES",
            b"NOTIFY=",
            b"NOTIFY=FAILURE NOTIFY=DELAY",
            b"ORCPT=alice@example.org",
            b"ORCPT=rfc822;",
            b"ORCPT=rfc822;" + b"a" * 494,
            b"ORCPT=rfc822;a+0Ab@example.org",
            b"ORCPT=;a@example.org",
        ]
        for param in rcpt:
            self.assertEqual(
                self.talk(
                    server, transport, b"RCPT TO:<alice@example.org> " + param + b"\r\n"
                ),
                [f"501 5.5.4 Bad {param[: param.index(b'=')].decode()} parameter"],
                param,
            )

    def test_localSuccess(self) -> None:
        """NOTIFY=SUCCESS to a local user: the local sender gets a delivered DSN."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<alice@example.org> ENVID=env-1\r\n"
            b"RCPT TO:<bob@example.org> NOTIFY=SUCCESS ORCPT=rfc822;Bob@Example.org\r\n"
            b"RCPT TO:<postmaster> NOTIFY=FAILURE\r\n"
            b"DATA\r\nSubject: hi\r\n\r\nhi\r\n.\r\n",
        )
        self.assertTrue(lines[-1].startswith("250 2.0.0 Ok: queued as "), lines)
        [report] = self.world.newMessages("alice")
        parsed = email.message_from_bytes(report, policy=email.policy.default)
        self.assertEqual(parsed["Subject"], "Successful Mail Delivery Report")
        [status] = [
            part
            for part in parsed.walk()
            if part.get_content_type() == "message/delivery-status"
        ]
        perMessage, *blocks = cast("list[Any]", status.get_payload())
        self.assertEqual(perMessage["Original-Envelope-Id"], "env-1")
        self.assertEqual(
            [
                (
                    b["Original-Recipient"],
                    b["Final-Recipient"],
                    b["Action"],
                    b["Status"],
                )
                for b in blocks
            ],
            [
                (
                    "rfc822;Bob@Example.org",
                    "rfc822; bob@example.org",
                    "delivered",
                    "2.0.0",
                )
            ],
        )

    def test_noSuccessForStrangers(self) -> None:
        """An unauthenticated foreign sender gets no delivered DSN."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<carol@remote.test>\r\n"
            b"RCPT TO:<bob@example.org> NOTIFY=SUCCESS\r\n"
            b"DATA\r\nhi\r\n.\r\n",
        )
        self.assertTrue(lines[-1].startswith("250 2.0.0 Ok: queued as "), lines)
        self.assertEqual(len(self.world.newMessages("bob")), 1)
        self.assertEqual(self.relayed, [])

    def test_xtext(self) -> None:
        """xtext decodes +XX within its limit; NOTIFY and ORCPT parse."""
        self.assertEqual(decodeXtext("a+2Bb+3Dc", 100), "a+b=c")
        self.assertIsNone(decodeXtext("a+2b", 100))
        self.assertIsNone(decodeXtext("abc", 2))
        self.assertIsNone(decodeXtext("caf\u00e9", 100))
        self.assertEqual(parseNotify("never"), ())
        self.assertEqual(parseNotify("delay,failure"), ("DELAY", "FAILURE"))
        self.assertEqual(parseOrcpt("utf-8;a@b"), "utf-8;a@b")


class ChunkingTests(SMTPTestMixin, SynchronousTestCase):
    """
    BDAT: chunks read by count, refused ones read and dropped.
    """

    def transaction(self, **config: Any) -> tuple[SMTPServer, Any]:
        """
        A session after EHLO, MAIL and RCPT (C{alice}), with C{config}.
        """
        server, transport = self.connect(**config)
        self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.org>\r\n",
        )
        return server, transport

    def test_chunks(self) -> None:
        """Two chunks, the last with LAST, make one message; dots are not special."""
        server, transport = self.transaction()
        lines = self.talk(
            server,
            transport,
            b"BDAT 15\r\nSubject: s\r\n\r\n.BDAT 8 LAST\r\n.\r\nend\r\nNOOP\r\n",
        )
        self.assertEqual(lines[0], "250 2.0.0 15 octets received")
        self.assertTrue(lines[1].startswith("250 2.0.0 Ok: queued as "))
        self.assertEqual(lines[2], "250 2.0.0 Ok")
        [message] = self.world.newMessages("alice")
        self.assertTrue(message.endswith(b"\r\nSubject: s\r\n\r\n..\r\nend\r\n"))

    def test_splitReads(self) -> None:
        """A chunk arriving a byte at a time is read whole."""
        server, _ = self.transaction()
        for byte in b"BDAT 6 LAST\r\nhi\r\n\r\n":
            server.dataReceived(bytes([byte]))
        [message] = self.world.newMessages("alice")
        self.assertTrue(message.endswith(b"\r\nhi\r\n\r\n"))

    def test_refusedChunkConsumed(self) -> None:
        """BDAT before MAIL: its octets are read and dropped, then 503."""
        server, transport = self.connect()
        lines = self.talk(
            server, transport, b"EHLO c\r\nBDAT 6 LAST\r\nNOOP\r\nNOOP\r\n"
        )
        self.assertEqual(
            lines[10:], ["503 5.5.1 Error: need MAIL command", "250 2.0.0 Ok"]
        )

    def test_dataAfterBDAT(self) -> None:
        """DATA after a BDAT in the same transaction gets 503."""
        server, transport = self.transaction()
        lines = self.talk(server, transport, b"BDAT 3\r\nabcDATA\r\n")
        self.assertEqual(lines[-1], "503 5.5.1 Error: DATA after BDAT")

    def test_oversize(self) -> None:
        """Chunks past the size limit are counted, not kept, and refused 552."""
        server, transport = self.transaction(maxMessageSize=10)
        lines = self.talk(
            server, transport, b"BDAT 8\r\n12345678BDAT 8 LAST\r\n12345678"
        )
        self.assertEqual(lines[-1], "552 5.3.4 Error: message file too big")
        self.assertEqual(server._chunks, None)
        self.assertEqual(self.world.newMessages("alice"), [])

    def test_bareLF(self) -> None:
        """A chunked message with a bare LF is refused as DATA's is."""
        server, transport = self.transaction()
        lines = self.talk(server, transport, b"BDAT 5 LAST\r\na\nb\r\n")
        self.assertEqual(lines[-1], "550 5.5.2 Error: bare <LF> or <CR> received")

    def test_deadline(self) -> None:
        """One data deadline runs from the first chunk to the last."""
        server, transport = self.transaction(dataTimeout=10.0)
        self.talk(server, transport, b"BDAT 1\r\na")
        self.world.clock.advance(6)
        self.talk(server, transport, b"BDAT 1\r\nb")
        transport.clear()
        self.world.clock.advance(6)
        self.assertEqual(
            transport.value(), b"421 4.4.2 mx.test Error: timeout exceeded\r\n"
        )

    def test_syntax(self) -> None:
        """A BDAT without a size gets 501."""
        server, transport = self.transaction()
        lines = self.talk(server, transport, b"BDAT LAST\r\n")
        self.assertEqual(lines[-1], "501 5.5.4 Syntax: BDAT size [LAST]")


class BinaryMIMETests(SMTPTestMixin, SynchronousTestCase):
    """
    BODY=BINARYMIME (RFC 3030): BDAT only, stored as received, never relayed.
    """

    def test_offered(self) -> None:
        """EHLO offers BINARYMIME beside CHUNKING."""
        server, transport = self.connect()
        lines = self.talk(server, transport, b"EHLO c\r\n")
        self.assertIn("250-CHUNKING", lines)
        self.assertIn("250-BINARYMIME", lines)

    def test_storedAsReceived(self) -> None:
        """Bare CR, LF and NUL in a BINARYMIME message are kept; W= is S=."""
        server, transport = self.connect()
        body = b"Subject: b\r\n\r\na\nb\rc\x00d\r\n"
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<x@remote.test> BODY=BINARYMIME\r\n"
            b"RCPT TO:<alice@example.org>\r\n"
            b"BDAT %d LAST\r\n" % len(body) + body,
        )
        self.assertEqual(lines[-3:-1], ["250 2.1.0 Ok", "250 2.1.5 Ok"])
        self.assertTrue(lines[-1].startswith("250 2.0.0 Ok: queued as "))
        [message] = self.world.newMessages("alice")
        self.assertTrue(message.endswith(body))
        [name] = os.listdir(os.path.join(self.world.root, "alice", "new"))
        self.assertIn(f",S={len(message)},W={len(message)}", name)

    def test_dataRefused(self) -> None:
        """DATA after MAIL BODY=BINARYMIME gets 503 5.5.1; the session goes on."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<x@remote.test> BODY=BINARYMIME\r\n"
            b"RCPT TO:<alice@example.org>\r\nDATA\r\nNOOP\r\n",
        )
        self.assertEqual(
            lines[-2:], ["503 5.5.1 Error: BINARYMIME requires BDAT", "250 2.0.0 Ok"]
        )

    def test_afterHELO(self) -> None:
        """BODY=BINARYMIME after HELO, which offered nothing, gets 555."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"HELO c\r\nMAIL FROM:<x@remote.test> BODY=BINARYMIME\r\n",
        )
        self.assertEqual(lines[-1][:3], "555")

    def test_notRelayed(self) -> None:
        """A foreign recipient of a BINARYMIME message gets 554 5.6.3, a local 250."""
        server, transport = self.authenticated(queue=self.relayQueue())
        lines = self.talk(
            server,
            transport,
            b"MAIL FROM:<alice@example.org> BODY=BINARYMIME\r\n"
            b"RCPT TO:<x@remote.test>\r\nRCPT TO:<bob@example.org>\r\n"
            b"BDAT 12 LAST\r\nSubject: b\r\n\x00\n",
        )
        self.assertEqual(
            lines[:3],
            [
                "250 2.1.0 Ok",
                "554 5.6.3 <x@remote.test>: cannot relay a BINARYMIME message",
                "250 2.1.5 Ok",
            ],
        )
        self.assertTrue(lines[3].startswith("250 2.0.0 Ok: queued as "))
        self.assertEqual(len(self.world.newMessages("bob")), 1)


class SmtplibTests(TestCase):
    """
    smtplib against np-smtp on 127.0.0.1.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        htpasswd = writeHtpasswd(self.directory)
        waitForSessions(self, SMTPServer)
        service = smtpService(
            SMTPSettings(
                domains=(DOMAIN,),
                hostname="mx.test",
                auth=(f"htpasswd:{htpasswd}",),
                stateDir=self.directory,
                listen=("tcp:0:interface=127.0.0.1",),
            )
        )
        service.startService()
        self.addCleanup(service.stopService)
        [(_, address, _)] = listeningPorts(service)
        self.port = address.port

    def bob(self) -> list[bytes]:
        return maildirMessages(os.path.join(self.directory, "mail"), "bob")

    def test_sendMessageSMTPUTF8(self) -> Deferred[None]:
        """send_message with a UTF-8 sender uses SMTPUTF8; the mail arrives intact."""
        message = EmailMessage()
        message["From"] = "Jürgen <jürgen@bücher.test>"
        message["To"] = "bob@example.org"
        message["Subject"] = "Grüße aus Köln"
        message.set_content("Schöne Grüße\n")

        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
                client.ehlo("client.test")
                supported = client.has_extn("smtputf8")
                return supported, client.send_message(message)

        def check(result: tuple[bool, Any]) -> None:
            self.assertEqual(result, (True, {}))
            [stored] = self.bob()
            self.assertTrue(
                stored.startswith("Return-Path: <jürgen@bücher.test>\r\n".encode())
            )
            parsed = email.message_from_bytes(stored, policy=email.policy.default)
            self.assertEqual(parsed["Subject"], "Grüße aus Köln")
            self.assertIn("From: Jürgen <jürgen@bücher.test>\r\n".encode(), stored)

        return deferToThread(send).addCallback(check)

    def test_bdat(self) -> Deferred[None]:
        """smtplib sends BDAT chunks by hand: each is acknowledged, the last queues."""
        body = b"Subject: chunked\r\n\r\n" + b"x" * 70000 + b"\r\n.\r\n"

        def send() -> list[tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
                client.ehlo("client.test")
                assert client.has_extn("chunking")
                client.mail("x@remote.test")
                client.rcpt("bob@example.org")
                replies = []
                for start in range(0, len(body), 32768):
                    chunk = body[start : start + 32768]
                    last = " LAST" if start + 32768 >= len(body) else ""
                    client.send(f"BDAT {len(chunk)}{last}\r\n".encode() + chunk)
                    replies.append(client.getreply())
                return replies

        def check(replies: list[tuple[int, bytes]]) -> None:
            self.assertEqual([r[:1] for r in replies[:-1]], [(250,), (250,)])
            self.assertEqual(replies[0][1], b"2.0.0 32768 octets received")
            self.assertTrue(replies[-1][1].startswith(b"2.0.0 Ok: queued as "))
            [stored] = self.bob()
            self.assertTrue(stored.endswith(b"\r\n\r\n" + b"x" * 70000 + b"\r\n.\r\n"))

        return deferToThread(send).addCallback(check)
