"""
Tests for L{netplugins.mail.smtp.server} and L{netplugins.tap.smtp}: the ESMTP state
machine in memory, then smtplib, swaks and a smarthost over real sockets.
"""

from __future__ import annotations

import email
import email.policy
import os
import smtplib
import ssl
import subprocess
from base64 import b64encode
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.cred.htpasswd import hashPassword
from netplugins.mail.aliases import AliasFile
from netplugins.mail.maildir import files
from netplugins.mail.smtp.queue import RelayQueue
from netplugins.mail.smtp.relay import smarthostRelay
from netplugins.mail.smtp.server import SMTPConfig, SMTPFactory, SMTPServer
from netplugins.mail.users import LocalUsers
from netplugins.service import Listener, listeningPorts
from netplugins.session import CLOSE_GRACE
from netplugins.tap.smtp import Options, SMTPSettings, makeService, smtpService
from netplugins.tls.server import DEFAULT_HANDSHAKE_TIMEOUT
from tests.mailfixtures import (
    DOMAIN,
    MailWorld,
    TLSStringTransport,
    inline,
    waitForSessions,
    writeHtpasswd,
)
from tests.pki import PKI
from tests.support import WatermarkTransport

TLS = object()

_T = TypeVar("_T")


def plain(user: str, password: str) -> str:
    """
    An AUTH PLAIN initial response.
    """
    return b64encode(f"\0{user}\0{password}".encode()).decode()


async def eventually(check: Callable[[], _T | None], timeout: float = 20.0) -> _T:
    """
    Poll C{check} on the reactor until it returns something, or fail.
    """
    waited = 0.0
    while True:
        found = check()
        if found is not None:
            return found
        if waited > timeout:
            raise AssertionError(f"still nothing after {timeout} s")
        await deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


def maildirMessages(root: str, user: str) -> list[bytes]:
    """
    The messages in C{new/} of C{user}'s Maildir under C{root}, in name order
    (none if it has no Maildir yet).
    """
    directory = os.path.join(root, user, "new")
    if not os.path.isdir(directory):
        return []
    out = []
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out.append(f.read())
    return out


class SMTPTestMixin:
    """
    An SMTP session over a L{TLSStringTransport}.
    """

    def setUp(self) -> None:
        self.world = MailWorld(self.mktemp())  # type: ignore[attr-defined]
        self.relayed: list[tuple[str, list[str], bytes]] = []

    def connect(
        self, transport: TLSStringTransport | None = None, **config: Any
    ) -> tuple[SMTPServer, TLSStringTransport]:
        config.setdefault("hostname", "mx.test")
        factory = SMTPFactory(
            self.world.store,
            self.world.portal,
            users=self.world.users,
            config=SMTPConfig(**config),
            tls=TLS,
            throttle=self.world.throttle,
            reactor=self.world.clock,
        )
        server = factory.buildProtocol(None)
        if transport is None:
            transport = TLSStringTransport()
        server.makeConnection(transport)
        transport.clear()
        return server, transport

    def relay(self, sender: str, recipients: list[str], data: bytes) -> Deferred[Any]:
        self.relayed.append((sender, recipients, data))
        return succeed((len(recipients), [(r, 250, b"Ok") for r in recipients]))

    def relayQueue(self, **kwargs: Any) -> RelayQueue:
        """
        A started relay queue sending with L{relay}, its disk work inline,
        under C{<world>/queue}.
        """
        queue = RelayQueue(
            os.path.join(self.world.root, "..", "queue"),
            self.relay,
            store=self.world.store,
            users=self.world.users,
            hostname="mx.test",
            smarthost="relay.test:25",
            reactor=self.world.clock,
            runBlocking=inline,
            **kwargs,
        )
        queue.startService()
        self.addCleanup(queue.stopService)  # type: ignore[attr-defined]
        return queue

    def talk(
        self, server: SMTPServer, transport: TLSStringTransport, data: bytes
    ) -> list[str]:
        """
        Send C{data}; return the reply lines it produced.
        """
        transport.clear()
        server.dataReceived(data)
        return transport.value().decode().splitlines()

    def secured(self, **config: Any) -> tuple[SMTPServer, TLSStringTransport]:
        """
        A session after EHLO and STARTTLS and EHLO again.
        """
        server, transport = self.connect(**config)
        self.talk(server, transport, b"EHLO client\r\nSTARTTLS\r\n")
        self.talk(server, transport, b"EHLO client\r\n")
        return server, transport

    def authenticated(self, **config: Any) -> tuple[SMTPServer, TLSStringTransport]:
        """
        A L{secured} session after AUTH PLAIN as C{alice}.
        """
        server, transport = self.secured(**config)
        self.talk(
            server,
            transport,
            f"AUTH PLAIN {plain('alice', 'alice-password')}\r\n".encode(),
        )
        return server, transport


class SessionTests(SMTPTestMixin, SynchronousTestCase):
    """
    Greeting, EHLO, STARTTLS and the basic commands.
    """

    def test_greeting(self) -> None:
        """The server greets with 220 and its host name."""
        factory = SMTPFactory(
            self.world.store,
            self.world.portal,
            users=self.world.users,
            config=SMTPConfig(hostname="mx.test"),
            reactor=self.world.clock,
        )
        server = factory.buildProtocol(None)
        transport = TLSStringTransport()
        server.makeConnection(transport)
        self.assertEqual(transport.value(), b"220 mx.test ESMTP netplugins\r\n")

    def test_ehloBeforeTLS(self) -> None:
        """EHLO in the clear offers STARTTLS but not AUTH."""
        server, transport = self.connect()
        self.assertEqual(
            self.talk(server, transport, b"EHLO client.example\r\n"),
            [
                "250-mx.test",
                "250-PIPELINING",
                "250-SIZE 10485760",
                "250-8BITMIME",
                "250-ENHANCEDSTATUSCODES",
                "250-CHUNKING",
                "250-BINARYMIME",
                "250-SMTPUTF8",
                "250-DSN",
                "250 STARTTLS",
            ],
        )

    def test_ehloOneWrite(self) -> None:
        """The whole multi-line EHLO reply goes to the transport in one write."""
        server, transport = self.connect()
        writes: list[bytes] = []
        write = transport.write

        def counting(data: bytes) -> None:
            writes.append(data)
            write(data)

        transport.write = counting  # type: ignore[method-assign]
        server.dataReceived(b"EHLO client.example\r\n")
        self.assertEqual(
            writes,
            [
                b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n"
                b"250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n"
                b"250-BINARYMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250 STARTTLS\r\n"
            ],
        )

    def test_ehloAfterTLS(self) -> None:
        """After STARTTLS, EHLO offers AUTH and no more STARTTLS."""
        server, transport = self.connect()
        self.talk(server, transport, b"EHLO client\r\nSTARTTLS\r\n")
        self.assertIs(transport.tlsStarted, TLS)
        lines = self.talk(server, transport, b"EHLO client\r\n")
        self.assertEqual(lines[-1], "250 AUTH PLAIN LOGIN")
        self.assertNotIn("250-STARTTLS", lines)

    def test_startTLSInjection(self) -> None:
        """Commands pipelined after STARTTLS in the same write get no answer."""
        server, transport = self.connect()
        self.talk(server, transport, b"EHLO client\r\n")
        lines = self.talk(
            server,
            transport,
            b"STARTTLS\r\nMAIL FROM:<evil@evil.test>\r\n"
            b"RCPT TO:<alice@example.org>\r\n",
        )
        self.assertEqual(lines, ["220 2.0.0 Ready to start TLS"])
        # And the session was forgotten: MAIL now needs a new EHLO.
        self.assertEqual(
            self.talk(server, transport, b"MAIL FROM:<a@b.test>\r\n"),
            ["503 Error: send HELO/EHLO first"],
        )

    def test_startTLSTwice(self) -> None:
        """STARTTLS over TLS is refused."""
        server, transport = self.secured()
        self.assertEqual(
            self.talk(server, transport, b"STARTTLS\r\n"),
            ["454 4.7.0 TLS not available"],
        )

    def test_simpleCommands(self) -> None:
        """NOOP, RSET, VRFY, HELP, unknown commands and QUIT."""
        server, transport = self.connect()
        self.assertEqual(
            self.talk(
                server,
                transport,
                b"EHLO c\r\nNOOP\r\nRSET\r\nVRFY alice\r\nHELP\r\nXYZZY\r\n"
                b"\xff\r\nQUIT\r\n",
            )[10:],
            [
                "250 2.0.0 Ok",
                "250 2.0.0 Ok",
                "252 2.0.0 Cannot VRFY user; try RCPT",
                "214 2.0.0 See RFC 5321",
                "502 5.5.2 Error: command not recognized",
                "500 5.5.2 Error: command not recognized",
                "221 2.0.0 Bye",
            ],
        )
        self.assertTrue(transport.disconnecting)

    def test_lineTooLong(self) -> None:
        """A command line over the limit gets 500 and the connection closes."""
        server, transport = self.connect()
        lines = self.talk(server, transport, b"NOOP " + b"x" * 5000 + b"\r\n")
        self.assertEqual(lines, ["500 Error: line too long"])
        self.assertTrue(transport.disconnecting)

    def test_bareLFCommand(self) -> None:
        """A command line with a bare LF inside is refused."""
        server, transport = self.connect()
        self.assertEqual(
            self.talk(server, transport, b"EHLO c\r\nNOOP\nNOOP\r\n")[-1],
            "500 5.5.2 Error: bare <LF> or <CR> received",
        )

    def test_tooManyErrors(self) -> None:
        """After maxErrors bad commands the server says 421 and hangs up."""
        server, transport = self.connect(maxErrors=3)
        lines = self.talk(server, transport, b"X\r\nX\r\nX\r\nNOOP\r\n")
        self.assertEqual(lines[-1], "421 mx.test Error: too many errors")
        self.assertTrue(transport.disconnecting)

    def test_idleTimeout(self) -> None:
        """An idle session is closed with 421 after idleTimeout."""
        server, transport = self.connect(idleTimeout=30)
        self.world.clock.advance(29)
        self.talk(server, transport, b"NOOP\r\n")
        self.world.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.world.clock.advance(2)
        self.assertIn(b"421", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_preAuthDeadline(self) -> None:
        """Submission: no AUTH within preAuthTimeout closes, however busy."""
        server, transport = self.connect(requireAuth=True, preAuthTimeout=120)
        for _ in range(13):
            self.world.clock.advance(10)
            self.talk(server, transport, b"NOOP\r\n")
        self.assertTrue(transport.disconnecting)


class AuthTests(SMTPTestMixin, SynchronousTestCase):
    """
    AUTH PLAIN and LOGIN through the portal and the throttle.
    """

    def test_authBeforeTLS(self) -> None:
        """AUTH in the clear is refused with 530."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            f"EHLO c\r\nAUTH PLAIN {plain('alice', 'alice-password')}\r\n".encode(),
        )
        self.assertEqual(lines[-1], "530 5.7.0 Must issue a STARTTLS command first")

    def test_plaintextOptOut(self) -> None:
        """With allowPlaintextAuth, AUTH works in the clear."""
        server, transport = self.connect(allowPlaintextAuth=True)
        lines = self.talk(
            server,
            transport,
            f"EHLO c\r\nAUTH PLAIN {plain('alice', 'alice-password')}\r\n".encode(),
        )
        self.assertEqual(lines[-1], "235 2.7.0 Authentication successful")

    def test_plain(self) -> None:
        """AUTH PLAIN with an initial response, right and wrong passwords."""
        server, transport = self.secured()
        self.assertEqual(
            self.talk(
                server, transport, f"AUTH PLAIN {plain('alice', 'wrong')}\r\n".encode()
            ),
            ["535 5.7.8 Authentication credentials invalid"],
        )
        self.world.clock.advance(60)
        self.assertEqual(
            self.talk(
                server,
                transport,
                f"AUTH PLAIN {plain('alice', 'alice-password')}\r\n".encode(),
            ),
            ["235 2.7.0 Authentication successful"],
        )
        self.assertEqual(server.account.mailbox, "alice")  # type: ignore[union-attr]

    def test_plainContinuation(self) -> None:
        """AUTH PLAIN without an initial response asks with 334."""
        server, transport = self.secured()
        self.assertEqual(self.talk(server, transport, b"AUTH PLAIN\r\n"), ["334 "])
        self.assertEqual(
            self.talk(
                server, transport, plain("bob", "bob-password").encode() + b"\r\n"
            ),
            ["235 2.7.0 Authentication successful"],
        )

    def test_login(self) -> None:
        """AUTH LOGIN asks for the user name and password."""
        server, transport = self.secured()
        self.assertEqual(
            self.talk(server, transport, b"AUTH LOGIN\r\n"), ["334 VXNlcm5hbWU6"]
        )
        self.assertEqual(
            self.talk(server, transport, b64encode(b"alice") + b"\r\n"),
            ["334 UGFzc3dvcmQ6"],
        )
        self.assertEqual(
            self.talk(server, transport, b64encode(b"alice-password") + b"\r\n"),
            ["235 2.7.0 Authentication successful"],
        )

    def test_abortAndGarbage(self) -> None:
        """'*' aborts and undecodable base64 is refused."""
        server, transport = self.secured()
        self.talk(server, transport, b"AUTH PLAIN\r\n")
        self.assertEqual(
            self.talk(server, transport, b"*\r\n"), ["501 5.0.0 Authentication aborted"]
        )
        self.assertEqual(
            self.talk(server, transport, b"AUTH PLAIN !!!\r\n"),
            ["501 5.5.2 Error: cannot decode response"],
        )

    def test_tooManyAttempts(self) -> None:
        """The sixth failure ends the connection with 421."""
        server, transport = self.secured()
        lines: list[str] = []
        for _ in range(6):
            lines += self.talk(
                server, transport, f"AUTH PLAIN {plain('alice', 'x')}\r\n".encode()
            )
            self.world.clock.advance(60)
        self.assertEqual(
            lines[-1], "421 4.7.0 Error: too many failed authentication attempts"
        )
        self.assertTrue(transport.disconnecting)

    def test_senderLoginMismatch(self) -> None:
        """Once authenticated, MAIL FROM must be the user's own address, else 553."""
        server, transport = self.secured(requireAuth=True)
        self.talk(
            server,
            transport,
            f"AUTH PLAIN {plain('alice', 'alice-password')}\r\n".encode(),
        )
        self.assertEqual(
            self.talk(
                server,
                transport,
                b"MAIL FROM:<bob@example.org>\r\nMAIL FROM:<alice@remote.test>"
                b"\r\nMAIL FROM:<Alice@EXAMPLE.org>\r\nRSET\r\n"
                b"MAIL FROM:<>\r\n",
            ),
            [
                "553 5.7.1 <bob@example.org>: Sender address rejected: not owned by "
                "user alice",
                "553 5.7.1 <alice@remote.test>: Sender address rejected: not owned by "
                "user alice",
                "250 2.1.0 Ok",
                "250 2.0.0 Ok",
                "250 2.1.0 Ok",
            ],
        )

    def test_unauthenticatedSenderUnchecked(self) -> None:
        """Without AUTH (mail from the world), any sender is taken."""
        server, transport = self.connect()
        self.assertEqual(
            self.talk(server, transport, b"EHLO c\r\nMAIL FROM:<bob@example.org>\r\n")[
                -1
            ],
            "250 2.1.0 Ok",
        )

    def test_submissionNeedsAuth(self) -> None:
        """On submission, MAIL before AUTH gets 530."""
        server, transport = self.secured(requireAuth=True)
        self.assertEqual(
            self.talk(server, transport, b"MAIL FROM:<alice@example.org>\r\n"),
            ["530 5.7.0 Authentication required"],
        )


class TransactionTests(SMTPTestMixin, SynchronousTestCase):
    """
    MAIL, RCPT, DATA: delivery, relay refusal, smuggling, limits.
    """

    def test_deliver(self) -> None:
        """A pipelined transaction delivers with a Received header, dots unstuffed."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"EHLO client.test\r\nMAIL FROM:<x@remote.test> BODY=8BITMIME SIZE=100\r\n"
            b"RCPT TO:<alice@example.org>\r\nRCPT TO:<BOB@Example.ORG>\r\nDATA\r\n"
            b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n",
        )
        self.assertEqual(lines[10:13], ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok"])
        self.assertEqual(lines[13], "354 End data with <CR><LF>.<CR><LF>")
        self.assertTrue(lines[14].startswith("250 2.0.0 Ok: queued as "))
        self.assertEqual(lines[15], "221 2.0.0 Bye")
        for user in ["alice", "bob"]:
            [message] = self.world.newMessages(user)
            headers, _, body = message.partition(b"\r\n\r\n")
            self.assertTrue(
                headers.startswith(
                    b"Return-Path: <x@remote.test>\r\nReceived: from client.test ("
                )
            )
            self.assertIn(b"by mx.test (netplugins) with ESMTP id ", headers)
            self.assertEqual(body, b".dot\r\nbody\r\n")

    def test_returnPathNullSender(self) -> None:
        """The null sender is delivered with C{Return-Path: <>} first."""
        server, transport = self.connect()
        self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
            b"Subject: bounce\r\n\r\nbody\r\n.\r\n",
        )
        [message] = self.world.newMessages("alice")
        self.assertTrue(message.startswith(b"Return-Path: <>\r\nReceived: from c ("))

    def test_relayedWithoutReturnPath(self) -> None:
        """A relayed copy is not final delivery: it gets no C{Return-Path:}."""
        server, transport = self.secured(queue=self.relayQueue())
        self.talk(
            server,
            transport,
            f"AUTH PLAIN {plain('alice', 'alice-password')}\r\n".encode(),
        )
        self.talk(
            server,
            transport,
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<x@remote.test>\r\n"
            b"DATA\r\n\r\nbody\r\n.\r\n",
        )
        self.assertEqual(
            [(s, r, d[:10]) for s, r, d in self.relayed],
            [("alice@example.org", ["x@remote.test"], b"Received: ")],
        )

    def test_unicodeRecipient(self) -> None:
        """A non-ASCII recipient without SMTPUTF8 is refused 553 5.6.7."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<>\r\n" + "RCPT TO:<jürgen@example.org>\r\n".encode(),
        )
        self.assertEqual(
            lines[-1], "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
        )

    def test_rcptParameter(self) -> None:
        """NOTIFY= after HELO (no extension offered) or an unknown one: 555 5.5.4."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"HELO c\r\nMAIL FROM:<>\r\n"
            b"RCPT TO:<alice@example.org> NOTIFY=SUCCESS,FAILURE\r\n"
            b"EHLO c\r\nMAIL FROM:<>\r\n"
            b"RCPT TO:<alice@example.org> XFOO=1\r\n"
            b"RCPT TO:<alice@example.org> NOTIFY=SUCCESS,FAILURE\r\n",
        )
        self.assertEqual(lines[2], "555 Unsupported option: NOTIFY=SUCCESS,FAILURE")
        self.assertEqual(
            lines[-2:], ["555 5.5.4 Unsupported option: XFOO=1", "250 2.1.5 Ok"]
        )

    def test_unknownLocalUser(self) -> None:
        """An unknown local recipient is refused at RCPT with 550 5.1.1, logged."""
        server, transport = self.connect()
        with capturedLogs() as events:
            lines = self.talk(
                server,
                transport,
                b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<nobody@example.org>\r\nDATA\r\n",
            )
        self.assertEqual(
            [(e["recipient"], e["peer"]) for e in events if "recipient" in e],
            [("nobody@example.org", str(transport.getPeer()))],
        )
        self.assertEqual(
            lines[-2:],
            [
                "550 5.1.1 <nobody@example.org>: "
                "Recipient address rejected: User unknown",
                "554 5.5.1 Error: no valid recipients",
            ],
        )

    def test_userAddedToHtpasswd(self) -> None:
        """A user added to the htpasswd file receives mail before ever logging in."""
        with open(self.world.htpasswd, "a") as f:
            f.write(f"carol:{hashPassword('carol-password', cost=4)}\n")
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<carol@example.org>\r\n",
        )
        self.assertEqual(lines[-1], "250 2.1.5 Ok")

    def test_postmaster(self) -> None:
        """The postmaster, with or without a local domain, any case, is accepted."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<Postmaster>\r\n"
            b"RCPT TO:<POSTMASTER@Example.ORG>\r\nRCPT TO:<postmaster@mx.test>\r\n"
            b"RCPT TO:<postmaster@localhost>\r\nRCPT TO:<postmaster@remote.test>\r\n"
            b"DATA\r\n\r\nhello\r\n.\r\n",
        )
        self.assertEqual(
            lines[11:17],
            ["250 2.1.5 Ok"] * 4
            + [
                "550 5.7.1 <postmaster@remote.test>: Relay access denied",
                "354 End data with <CR><LF>.<CR><LF>",
            ],
        )
        [message] = self.world.newMessages("postmaster")
        self.assertTrue(message.endswith(b"\r\n\r\nhello\r\n"))

    def test_postmasterConfigured(self) -> None:
        """C{SMTPConfig.postmaster} names the Maildir postmaster mail goes to."""
        server, transport = self.connect(postmaster="alice")
        self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\n"
            b"DATA\r\n\r\nhello\r\n.\r\n",
        )
        self.assertEqual(len(self.world.newMessages("alice")), 1)
        self.assertEqual(self.world.newMessages("postmaster"), [])
        self.assertRaises(ValueError, SMTPConfig, postmaster="../x")

    def test_noOpenRelay(self) -> None:
        """Unauthenticated mail for a foreign domain is refused with 550 5.7.1."""
        server, transport = self.connect(queue=self.relayQueue())
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<v@victim.test>\r\n",
        )
        self.assertEqual(lines[-1], "550 5.7.1 <v@victim.test>: Relay access denied")

    def test_authenticatedWithoutSmarthost(self) -> None:
        """Authenticated users cannot relay when no smarthost is configured."""
        server, transport = self.secured()
        self.talk(
            server,
            transport,
            f"AUTH PLAIN {plain('alice', 'alice-password')}\r\n".encode(),
        )
        lines = self.talk(
            server,
            transport,
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<v@victim.test>\r\n",
        )
        self.assertEqual(lines[-1], "550 5.7.1 <v@victim.test>: Relay access denied")

    def test_authenticatedRelay(self) -> None:
        """Authenticated users relay foreign mail through the configured relay."""
        server, transport = self.secured(queue=self.relayQueue())
        self.talk(
            server,
            transport,
            f"AUTH PLAIN {plain('alice', 'alice-password')}\r\n".encode(),
        )
        lines = self.talk(
            server,
            transport,
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<v@remote.test>\r\n"
            b"RCPT TO:<bob@example.org>\r\nDATA\r\nhello\r\n.\r\n",
        )
        self.assertTrue(lines[-1].startswith("250 2.0.0 Ok"))
        [(sender, recipients, data)] = self.relayed
        self.assertEqual((sender, recipients), ("alice@example.org", ["v@remote.test"]))
        self.assertIn(b"with ESMTPSA id", data)
        self.assertEqual(len(self.world.newMessages("bob")), 1)

    def test_smugglingLF(self) -> None:
        """<LF>.<LF> does not end DATA; the whole message is refused for bare LF."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.org>\r\n"
            b"DATA\r\nSubject: one\r\n\r\nfirst\n.\nMAIL FROM:<evil@remote.test>\r\n"
            b"RCPT TO:<bob@example.org>\r\nDATA\r\nsmuggled\r\n.\r\nNOOP\r\n",
        )
        self.assertEqual(
            lines[12:],
            [
                "354 End data with <CR><LF>.<CR><LF>",
                "550 5.5.2 Error: bare <LF> or <CR> received",
                "250 2.0.0 Ok",
            ],
        )
        self.assertEqual(self.world.newMessages("alice"), [])
        self.assertEqual(self.world.newMessages("bob"), [])

    def test_smugglingLFCRLF(self) -> None:
        """<LF>.<CR><LF> does not end DATA either."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.org>\r\n"
            b"DATA\r\nfirst\n.\r\nRSET\r\nsecond\r\n.\r\n",
        )
        self.assertEqual(lines[-1], "550 5.5.2 Error: bare <LF> or <CR> received")
        self.assertEqual(self.world.newMessages("alice"), [])

    def test_smugglingCR(self) -> None:
        """<CR>.<CR> does not end DATA; a bare CR refuses the message."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.org>\r\n"
            b"DATA\r\nfirst\r.\rMAIL FROM:<b@remote.test>\r\n.\r\n",
        )
        self.assertEqual(lines[-1], "550 5.5.2 Error: bare <LF> or <CR> received")

    def test_sizeParameter(self) -> None:
        """MAIL FROM with SIZE over the limit gets 552."""
        server, transport = self.connect(maxMessageSize=1000)
        lines = self.talk(server, transport, b"EHLO c\r\nMAIL FROM:<> SIZE=1001\r\n")
        self.assertEqual(lines[-1], "552 5.3.4 Message size exceeds fixed limit")

    def test_oversizeData(self) -> None:
        """DATA over the limit, in many chunks, gets 552 and stores nothing."""
        server, transport = self.connect(maxMessageSize=1000)
        self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n",
        )
        for _ in range(100):
            server.dataReceived(b"x" * 3000)
        lines = self.talk(server, transport, b"\r\n.\r\n")
        self.assertEqual(lines, ["552 5.3.4 Error: message file too big"])
        self.assertEqual(self.world.newMessages("alice"), [])

    def test_longLineInChunks(self) -> None:
        """A long body line split over reads arrives intact, with its dot unstuffed."""
        server, transport = self.connect()
        self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n",
        )
        line = b".." + b"y" * 20000
        for i in range(0, len(line), 7000):
            server.dataReceived(line[i : i + 7000])
        self.talk(server, transport, b"\r\n.\r\n")
        [message] = self.world.newMessages("alice")
        self.assertTrue(
            message.endswith(b"\r\n\r\n" + line[1:] + b"\r\n")
            or message.endswith(line[1:] + b"\r\n")
        )

    def test_diskFull(self) -> None:
        """A full disk (ENOSPC injected at the write) gets 452; nothing in new/."""
        import errno

        def full(fd: int, data: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(files, "writeAll", full)
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
            b"hello\r\n.\r\n",
        )
        self.assertEqual(lines[-1], "452 4.3.1 Error: insufficient system storage")
        self.assertEqual(self.world.newMessages("alice"), [])
        self.assertEqual(os.listdir(os.path.join(self.world.root, "alice", "tmp")), [])

    def test_diskFullOnLaterCopy(self) -> None:
        """ENOSPC on the second recipient's copy: 452 and neither copy delivered."""
        import errno

        writes: list[bytes] = []
        writeAll = files.writeAll

        def fullOnSecond(fd: int, data: bytes) -> None:
            writes.append(data)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            writeAll(fd, data)

        self.patch(files, "writeAll", fullOnSecond)
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\n"
            b"RCPT TO:<bob@example.org>\r\nDATA\r\nhello\r\n.\r\n",
        )
        self.assertEqual(lines[-1], "452 4.3.1 Error: insufficient system storage")
        self.assertEqual(len(writes), 2)
        for user in ["alice", "bob"]:
            self.assertEqual(self.world.newMessages(user), [])
            self.assertEqual(os.listdir(os.path.join(self.world.root, user, "tmp")), [])

    def test_sequenceErrors(self) -> None:
        """RCPT before MAIL, nested MAIL, bad syntax get 5xx without state change."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"MAIL FROM:<>\r\nEHLO c\r\nRCPT TO:<alice@example.org>\r\n"
            b"MAIL FROM:<>\r\nMAIL FROM:<>\r\nRCPT TO:alice\r\nMAIL FROM:<> X=Y\r\n",
        )
        self.assertEqual(
            [lines[0], *lines[11:]],
            [
                "503 Error: send HELO/EHLO first",
                "503 5.5.1 Error: need MAIL command",
                "250 2.1.0 Ok",
                "503 5.5.1 Error: nested MAIL command",
                "501 5.5.4 Syntax: RCPT TO:<address>",
                "503 5.5.1 Error: nested MAIL command",
            ],
        )


class DisciplineTests(SMTPTestMixin, SynchronousTestCase):
    """
    The session discipline: no reading past the output watermark, deadlines
    that end in an abort.
    """

    def test_pipelinedNoopsStopAtWatermark(self) -> None:
        """A client that never reads gets no more replies than the watermark."""
        transport = WatermarkTransport(watermark=1024)
        server, _ = self.connect(transport)
        server.dataReceived(b"NOOP\r\n" * 10_000)
        replies = transport.value().count(b"\r\n")
        self.assertLessEqual(replies, 1024 // len(b"250 Ok\r\n") + 1)
        self.assertEqual(transport.producerState, "paused")
        answered = 0
        while transport.producerPaused:
            answered += transport.drain().count(b"\r\n")
        answered += transport.value().count(b"\r\n")
        self.assertEqual(answered, 10_000)
        self.assertEqual(transport.producerState, "producing")

    def test_deadlineAbortsUnclosedConnection(self) -> None:
        """A connection not gone CLOSE_GRACE after its deadline is aborted."""
        transport = WatermarkTransport()
        self.connect(transport, requireAuth=True, preAuthTimeout=5)
        self.world.clock.advance(5)
        self.assertTrue(transport.value().startswith(b"421 "))
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        self.world.clock.advance(CLOSE_GRACE)
        self.assertTrue(transport.aborted)

    def test_deadlineAbortsAtOnceWhenBackedUp(self) -> None:
        """A deadline aborts at once when the client is not reading."""
        transport = WatermarkTransport(watermark=100)
        server, _ = self.connect(transport, requireAuth=True, preAuthTimeout=5)
        server.dataReceived(b"NOOP\r\n" * 100)
        self.world.clock.advance(5)
        self.assertTrue(transport.aborted)

    def test_stalledStartTLSAborted(self) -> None:
        """A STARTTLS handshake not finished within 10 s is aborted."""
        transport = WatermarkTransport()
        server, _ = self.connect(transport)
        server.dataReceived(b"EHLO client\r\nSTARTTLS\r\n")
        transport._handshakeDone = False  # type: ignore[attr-defined]
        self.world.clock.advance(DEFAULT_HANDSHAKE_TIMEOUT)
        self.assertTrue(transport.aborted)

    def test_finishedStartTLSKept(self) -> None:
        """A STARTTLS handshake that finished keeps its connection."""
        transport = WatermarkTransport()
        server, _ = self.connect(transport)
        server.dataReceived(b"EHLO client\r\nSTARTTLS\r\n")
        transport._handshakeDone = True  # type: ignore[attr-defined]
        self.world.clock.advance(DEFAULT_HANDSHAKE_TIMEOUT)
        self.assertFalse(transport.aborted)
        self.assertFalse(transport.disconnecting)


class AliasTests(SMTPTestMixin, SynchronousTestCase):
    """
    Recipients that are local aliases (C{--aliases}).
    """

    def setUp(self) -> None:
        super().setUp()
        path = self.world.root + "-aliases"
        with open(path, "w") as f:
            f.write("team: alice,\n  boss\nboss: bob\nbroken: alice, carol\n")
            f.write("postmaster: bob\n")
        self.world.users = LocalUsers(
            [DOMAIN], [self.world.checker], AliasFile(path, runBlocking=inline)
        )

    def test_listAlias(self) -> None:
        """A list alias reaches each Maildir once, with the user also named."""
        server, transport = self.connect()
        lines = self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<Team@example.org>\r\n"
            b"RCPT TO:<bob@example.org>\r\nDATA\r\nSubject: s\r\n\r\nhi\r\n.\r\n",
        )
        self.assertEqual(lines[-4:-2], ["250 2.1.5 Ok", "250 2.1.5 Ok"])
        self.assertTrue(lines[-1].startswith("250 2.0.0 Ok: queued as "))
        self.assertEqual(
            [len(self.world.newMessages(user)) for user in ("alice", "bob")], [1, 1]
        )

    def test_unknownTarget(self) -> None:
        """An alias to an unknown user is refused at RCPT with 550 5.1.1, logged."""
        server, transport = self.connect()
        with capturedLogs() as events:
            lines = self.talk(
                server,
                transport,
                b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<broken@example.org>\r\n",
            )
        self.assertEqual(
            lines[-1],
            "550 5.1.1 <broken@example.org>: Recipient address rejected: User unknown",
        )
        self.assertIn(
            ("broken@example.org", "carol@example.org"),
            [(e["address"], e["unknown"]) for e in events if "unknown" in e],
        )

    def test_aliasAsSender(self) -> None:
        """A user may send as an alias reaching them; not as one that does not."""
        server, transport = self.secured()
        self.talk(
            server,
            transport,
            f"AUTH PLAIN {plain('alice', 'alice-password')}\r\n".encode(),
        )
        answers = [
            self.talk(server, transport, f"MAIL FROM:<{sender}>\r\nRSET\r\n".encode())
            for sender in ("Team@example.org", "boss@example.org", "broken@example.org")
        ]
        self.assertEqual(
            [lines[0][:9] for lines in answers], ["250 2.1.0", "553 5.7.1", "553 5.7.1"]
        )

    def test_postmasterAlias(self) -> None:
        """A postmaster alias takes <postmaster> mail to its target."""
        server, transport = self.connect()
        self.talk(
            server,
            transport,
            b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\n"
            b"DATA\r\nSubject: s\r\n\r\nhi\r\n.\r\n",
        )
        self.assertEqual(len(self.world.newMessages("bob")), 1)
        self.assertEqual(self.world.newMessages("postmaster"), [])


class OptionsTests(SynchronousTestCase):
    """
    C{twistd np-smtp} options.
    """

    def test_parse(self) -> None:
        """Mail options parse into np-smtp's settings."""
        options = Options()
        options.parseOptions(
            [
                "--domain",
                "example.org",
                "--domain",
                "example.net",
                "--submission",
                "tcp:587",
                "--smtps",
                "tcp:465",
                "--maildir-root",
                "/srv/mail",
                "--smarthost",
                "relay.test:2525",
                "--allow-plaintext-auth",
            ]
        )
        self.assertEqual(
            options.settings,
            SMTPSettings(
                domains=("example.org", "example.net"),
                submission=("tcp:587",),
                smtps=("tcp:465",),
                maildirRoot="/srv/mail",
                smarthost="relay.test:2525",
                allowPlaintextAuth=True,
            ),
        )

    def test_badValues(self) -> None:
        """Bad endpoints and smarthosts are the one-line errors of their checks."""
        for argv, check in [
            (["--submission", "nope:1"], lambda: Listener.parse("nope:1")),
            (["--smarthost", "h:x"], lambda: smarthostRelay("h:x")),
        ]:
            expected = str(self.assertRaises(ValueError, check))
            if argv[0] == "--submission":
                expected = f"--submission: {expected}"
            error = self.assertRaises(usage.UsageError, Options().parseOptions, argv)
            self.assertEqual(str(error), expected)

    def test_keywordTwinRefuses(self) -> None:
        """SMTPSettings refuses bad values with the command line's messages."""

        def load(**kwargs: Any) -> None:
            SMTPSettings(**kwargs).common()

        refusals: list[dict[str, Any]] = [
            {"smtps": ("nope:1",)},
            {"smarthost": "h:x"},
            {"maxMessageSize": 0},
        ]
        messages = [
            str(self.assertRaises(ValueError, load, **kwargs)) for kwargs in refusals
        ]
        self.assertEqual(
            messages,
            [
                "--smtps: bad endpoint 'nope:1': Unknown endpoint type: 'nope'",
                "--smarthost must be HOST or HOST:PORT, not 'h:x'",
                "--max-message-size: expected a positive number, not 0",
            ],
        )


class RealSocketTests(TestCase):
    """
    smtplib and swaks against np-smtp on 127.0.0.1; a second np-smtp as smarthost.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.pki = PKI(os.path.join(self.directory, "pki"))
        self.cert, self.key = self.pki.serverCertificate("localhost", "127.0.0.1")
        self.htpasswd = writeHtpasswd(self.directory)
        waitForSessions(self, SMTPServer)

    def start(self, **kwargs: Any) -> dict[str, int]:
        """
        Start C{smtpService(SMTPSettings(**kwargs))}; return its ports by
        listener name.
        """
        kwargs.setdefault("listen", ("tcp:0:interface=127.0.0.1",))
        service = smtpService(
            SMTPSettings(
                domains=(DOMAIN,),
                hostname="mx.test",
                tlsCert=(self.cert,),
                tlsKey=(self.key,),
                auth=(f"htpasswd:{self.htpasswd}",),
                stateDir=self.directory,
                **kwargs,
            )
        )
        service.startService()
        self.addCleanup(service.stopService)
        return {name: address.port for name, address, _ in listeningPorts(service)}

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.pki.caPath)

    def maildirMessages(self, root: str, user: str) -> list[bytes]:
        return maildirMessages(root, user)

    def test_smtplibSubmission(self) -> Deferred[None]:
        """smtplib: STARTTLS, AUTH and a message with an attachment, stored intact."""
        ports = self.start(listen=(), submission=("tcp:0:interface=127.0.0.1",))
        port = ports["np-smtp submission"]
        message = EmailMessage()
        message["From"] = "alice@example.org"
        message["To"] = "bob@example.org"
        message["Subject"] = "Report"
        message.set_content("See the attachment.\n.\nA dot line above.\n")
        attachment = bytes(range(256)) * 40
        message.add_attachment(
            attachment,
            maintype="application",
            subtype="octet-stream",
            filename="data.bin",
        )

        def send() -> dict[str, Any]:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo("client.test")
                refused = client.login  # not offered before TLS
                try:
                    refused("alice", "alice-password")
                except smtplib.SMTPNotSupportedError:
                    pass
                else:
                    raise AssertionError("AUTH offered in the clear")
                client.starttls(context=self.context())
                client.ehlo("client.test")
                client.login("alice", "alice-password")
                return client.send_message(message)

        def check(refused: dict[str, Any]) -> None:
            self.assertEqual(refused, {})
            [stored] = self.maildirMessages(os.path.join(self.directory, "mail"), "bob")
            self.assertTrue(stored.startswith(b"Return-Path: <alice@example.org>\r\n"))
            self.assertIn(b"with ESMTPSA id", stored)
            parsed = email.message_from_bytes(stored, policy=email.policy.default)
            [part] = list(parsed.iter_attachments())  # type: ignore[attr-defined]
            self.assertEqual(part.get_filename(), "data.bin")
            self.assertEqual(part.get_content(), attachment)
            body: Any = parsed.get_body(("plain",))  # type: ignore[attr-defined]
            text = body.get_content().replace("\r\n", "\n")
            self.assertIn("\n.\nA dot line", text)

        return deferToThread(send).addCallback(check)

    def test_smtplibRelayRefused(self) -> Deferred[None]:
        """smtplib without AUTH: mail for a foreign domain is refused 550."""
        port = self.start()["np-smtp"]

        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                try:
                    client.sendmail("a@example.org", ["v@victim.test"], b"x\r\n")
                except smtplib.SMTPRecipientsRefused as e:
                    return e.recipients
            return None

        return deferToThread(send).addCallback(
            self.assertEqual,
            {"v@victim.test": (550, b"5.7.1 <v@victim.test>: Relay access denied")},
        )

    def test_smtplibRecipientRefusals(self) -> Deferred[None]:
        """smtplib: an unknown RCPT option gets 555 5.5.4, a UTF-8 address 553 5.6.7."""
        port = self.start()["np-smtp"]

        def send() -> list[tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo("client.test")
                client.mail("")
                notify = client.rcpt("alice@example.org", ["XFOO=1"])
                client.send("RCPT TO:<jürgen@example.org>\r\n".encode())
                return [notify, client.getreply()]

        return deferToThread(send).addCallback(
            self.assertEqual,
            [
                (555, b"5.5.4 Unsupported option: XFOO=1"),
                (553, b"5.6.7 Must declare SMTPUTF8 to send unicode address"),
            ],
        )

    def test_smtplibPostmaster(self) -> Deferred[None]:
        """smtplib: <postmaster> and <postmaster@localhost> are delivered."""
        port = self.start()["np-smtp"]

        def send() -> dict[str, Any]:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                return client.sendmail(
                    "x@remote.test",
                    ["postmaster", "Postmaster@localhost"],
                    b"Subject: hi\r\n\r\nhello\r\n",
                )

        def check(refused: dict[str, Any]) -> None:
            self.assertEqual(refused, {})
            root = os.path.join(self.directory, "mail")
            [stored] = self.maildirMessages(root, "postmaster")
            self.assertTrue(stored.startswith(b"Return-Path: <x@remote.test>\r\n"))

        return deferToThread(send).addCallback(check)

    def test_smtplibPostmasterOption(self) -> Deferred[None]:
        """np-smtp --postmaster alice: smtplib's mail to <postmaster> reaches alice."""
        options = Options()
        options.parseOptions(
            [
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--domain",
                DOMAIN,
                "--auth",
                f"htpasswd:{self.htpasswd}",
                "--state-dir",
                self.directory,
                "--postmaster",
                "alice",
            ]
        )
        service = makeService(options)
        service.startService()
        self.addCleanup(service.stopService)
        [(_, address, _)] = listeningPorts(service)

        def send() -> dict[str, Any]:
            with smtplib.SMTP("127.0.0.1", address.port, timeout=10) as client:
                return client.sendmail(
                    "x@remote.test", ["postmaster"], b"Subject: hi\r\n\r\nhello\r\n"
                )

        def check(refused: dict[str, Any]) -> None:
            self.assertEqual(refused, {})
            root = os.path.join(self.directory, "mail")
            [stored] = self.maildirMessages(root, "alice")
            self.assertIn(b"\r\n\r\nhello\r\n", stored)
            self.assertFalse(os.path.exists(os.path.join(root, "postmaster")))

        return deferToThread(send).addCallback(check)

    def test_smtplibAliases(self) -> Deferred[None]:
        """smtplib to an alias and a list alias: each user's Maildir gets one copy."""
        aliases = os.path.join(self.directory, "aliases")
        with open(aliases, "w") as f:
            f.write("# local names\nboss: alice\nteam: boss,\n\tbob\n")
        port = self.start(aliases=aliases)["np-smtp"]

        def send() -> list[dict[str, Any]]:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                return [
                    client.sendmail(
                        "x@remote.test", [to], f"Subject: {to}\r\n\r\nhi\r\n"
                    )
                    for to in ("boss@example.org", "team@example.org")
                ]

        def check(refused: list[dict[str, Any]]) -> None:
            self.assertEqual(refused, [{}, {}])
            root = os.path.join(self.directory, "mail")
            subjects = {
                user: [
                    email.message_from_bytes(m)["Subject"]
                    for m in self.maildirMessages(root, user)
                ]
                for user in ("alice", "bob")
            }
            self.assertEqual(
                {user: sorted(found) for user, found in subjects.items()},
                {
                    "alice": ["boss@example.org", "team@example.org"],
                    "bob": ["team@example.org"],
                },
            )

        return deferToThread(send).addCallback(check)

    def test_smtplibAliasAsSender(self) -> Deferred[None]:
        """smtplib: alice, logged in, sends as her alias; bob cannot."""
        aliases = os.path.join(self.directory, "aliases")
        with open(aliases, "w") as f:
            f.write("sales: alice\n")
        port = self.start(aliases=aliases)["np-smtp"]

        def send(user: str) -> Any:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.starttls(context=self.context())
                client.login(user, f"{user}-password")
                try:
                    return client.sendmail(
                        "sales@example.org",
                        ["bob@example.org"],
                        b"Subject: s\r\n\r\nx\r\n",
                    )
                except smtplib.SMTPSenderRefused as e:
                    return e.smtp_code

        def check(results: list[Any]) -> None:
            self.assertEqual(results, [{}, 553])
            [stored] = self.maildirMessages(os.path.join(self.directory, "mail"), "bob")
            self.assertTrue(stored.startswith(b"Return-Path: <sales@example.org>\r\n"))

        return deferToThread(lambda: [send("alice"), send("bob")]).addCallback(check)

    def test_smtplibAliasesReloaded(self) -> Deferred[None]:
        """An alias added to the running server's file takes mail at the next RCPT."""
        aliases = os.path.join(self.directory, "aliases")
        with open(aliases, "w") as f:
            f.write("boss: alice\n")
        port = self.start(aliases=aliases)["np-smtp"]
        with open(aliases, "a") as f:
            f.write("ops: bob\n")
        # A later mtime even on file systems with coarse timestamps.
        os.utime(aliases, (0, os.stat(aliases).st_mtime + 5))

        def send() -> dict[str, Any]:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                return client.sendmail("x@remote.test", ["ops@example.org"], b"hi\r\n")

        def check(refused: dict[str, Any]) -> None:
            self.assertEqual(refused, {})
            root = os.path.join(self.directory, "mail")
            self.assertEqual(len(self.maildirMessages(root, "bob")), 1)

        return deferToThread(send).addCallback(check)

    def test_swaksPipelining(self) -> Deferred[None]:
        """swaks with PIPELINING, STARTTLS and AUTH delivers one message."""
        port = self.start()["np-smtp"]
        argv = [
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(port),
            "--from",
            "alice@example.org",
            "--to",
            "bob@example.org",
            "--helo",
            "swaks.test",
            "--pipeline",
            "--tls",
            "--tls-ca-path",
            self.pki.caPath,
            "--tls-verify",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "alice-password",
            "--timeout",
            "10",
        ]

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(argv, capture_output=True, text=True, timeout=60)

        def check(result: subprocess.CompletedProcess[str]) -> None:
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn("250 2.0.0 Ok: queued as", result.stdout)
            [stored] = self.maildirMessages(os.path.join(self.directory, "mail"), "bob")
            self.assertTrue(stored.startswith(b"Return-Path: <alice@example.org>\r\n"))
            self.assertIn(b"with ESMTPSA id", stored)

        return deferToThread(run).addCallback(check)

    def test_smarthost(self) -> Deferred[None]:
        """An authenticated user's foreign mail is relayed to the smarthost."""
        remoteRoot = os.path.join(self.directory, "remote")
        remote = smtpService(
            SMTPSettings(
                domains=("remote.test",),
                hostname="remote.test",
                tlsCert=(self.cert,),
                tlsKey=(self.key,),
                auth=(f"htpasswd:{self.htpasswd}",),
                maildirRoot=remoteRoot,
                listen=("tcp:0:interface=127.0.0.1",),
                stateDir=self.directory,
            )
        )
        remote.startService()
        self.addCleanup(remote.stopService)
        [(_, address, _)] = listeningPorts(remote)
        port = self.start(
            smarthost=f"127.0.0.1:{address.port}", smarthostCA=self.pki.caPath
        )["np-smtp"]

        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.starttls(context=self.context())
                client.login("alice", "alice-password")
                return client.sendmail(
                    "alice@example.org",
                    ["bob@remote.test"],
                    b"Subject: r\r\n\r\n.leading dot\r\nx\r\n",
                )

        async def check(refused: Any) -> None:
            self.assertEqual(refused, {})
            bob = os.path.join(remoteRoot, "bob", "new")
            await eventually(lambda: os.path.isdir(bob) or None)
            [stored] = self.maildirMessages(remoteRoot, "bob")
            self.assertIn(b"by remote.test", stored)
            self.assertIn(b"by mx.test", stored)
            self.assertIn(b"(netplugins) with ESMTPS id", stored)
            self.assertTrue(stored.endswith(b"\r\n\r\n.leading dot\r\nx\r\n"))

        return deferToThread(send).addCallback(lambda r: ensureDeferred(check(r)))

    def test_startTLSInjectionSocket(self) -> Deferred[None]:
        """Over a real socket, a NOOP sent with STARTTLS is never answered."""
        import socket

        port = self.start()["np-smtp"]

        def talk() -> tuple[bytes, bytes]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                reader = raw.makefile("rb")
                reader.readline()
                raw.sendall(b"EHLO c\r\n")
                while not reader.readline().startswith(b"250 "):
                    pass
                raw.sendall(b"STARTTLS\r\nNOOP injected\r\n")
                ready = reader.readline()
                secure = self.context().wrap_socket(raw, server_hostname="localhost")
                secure.sendall(b"EHLO again\r\n")
                first = secure.recv(1024)
                secure.sendall(b"QUIT\r\n")
                secure.recv(1024)
                return ready, first

        def check(result: tuple[bytes, bytes]) -> None:
            ready, first = result
            self.assertEqual(ready, b"220 2.0.0 Ready to start TLS\r\n")
            self.assertTrue(first.startswith(b"250-mx.test\r\n"), first)

        return deferToThread(talk).addCallback(check)
