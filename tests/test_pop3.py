"""
Tests for L{netplugins.mail.pop3} and L{netplugins.tap.pop3}: the POP3 state
machine in memory, then poplib over a real socket.
"""

from __future__ import annotations

import os
import poplib
import ssl
from base64 import b64encode
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.cred.htpasswd import hashPassword
from netplugins.mail.maildir.store import MaildirStore
from netplugins.mail.pop3 import (
    POP3Config,
    POP3Factory,
    POP3Server,
    byteStuff,
    downgradeBinary,
    topOf,
)
from netplugins.service import listeningPorts
from netplugins.session import CLOSE_GRACE
from netplugins.tap.pop3 import Options, POP3Settings, pop3Service
from netplugins.tls.server import DEFAULT_HANDSHAKE_TIMEOUT
from tests.mailfixtures import (
    MailWorld,
    TLSStringTransport,
    waitForSessions,
    writeHtpasswd,
)
from tests.pki import PKI
from tests.support import WatermarkTransport

TLS = object()
CAROL_PASSWORD = "pässwörd-日本"
FIRST = b"Subject: one\r\nFrom: x@remote.test\r\n\r\nline 1\r\n.dotted\r\nline 3\r\n"
SECOND = b"Subject: two\r\n\r\nbody\r\n"


def addUser(htpasswd: str, name: str, password: str) -> None:
    """
    Add C{name} with C{password} (cheap bcrypt) to the htpasswd file C{htpasswd}.
    """
    with open(htpasswd, "a", encoding="utf-8") as f:
        f.write(f"{name}:{hashPassword(password, cost=4)}\n")


class POP3TestMixin:
    """
    A POP3 session over a L{TLSStringTransport}, with two messages for alice.
    """

    def setUp(self) -> None:
        self.world = MailWorld(self.mktemp())  # type: ignore[attr-defined]
        self.world.store.deliver("alice", FIRST)
        self.world.store.deliver("alice", SECOND)

    def connect(
        self, transport: TLSStringTransport | None = None, **config: Any
    ) -> tuple[POP3Server, TLSStringTransport]:
        factory = POP3Factory(
            self.world.store,
            self.world.portal,
            config=POP3Config(hostname="pop.test", **config),
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

    def talk(
        self, server: POP3Server, transport: TLSStringTransport, data: bytes
    ) -> list[str]:
        transport.clear()
        server.dataReceived(data)
        return transport.value().decode().split("\r\n")[:-1]

    def loggedIn(
        self, transport: TLSStringTransport | None = None
    ) -> tuple[POP3Server, TLSStringTransport]:
        server, transport = self.connect(transport)
        self.talk(server, transport, b"STLS\r\n")
        lines = self.talk(server, transport, b"USER alice\r\nPASS alice-password\r\n")
        self.assertEqual(  # type: ignore[attr-defined]
            lines, ["+OK Send PASS", f"+OK 2 messages ({len(FIRST + SECOND)} octets)"]
        )
        return server, transport


class AuthorizationTests(POP3TestMixin, SynchronousTestCase):
    """
    Greeting, CAPA, STLS and logging in.
    """

    def test_greeting(self) -> None:
        """The server greets with +OK."""
        factory = POP3Factory(
            self.world.store, self.world.portal, reactor=self.world.clock
        )
        server = factory.buildProtocol(None)
        transport = TLSStringTransport()
        server.makeConnection(transport)
        self.assertEqual(transport.value(), b"+OK localhost POP3 netplugins ready\r\n")

    def test_capaBeforeTLS(self) -> None:
        """Before TLS, CAPA offers STLS but no USER or SASL."""
        server, transport = self.connect()
        self.assertEqual(
            self.talk(server, transport, b"CAPA\r\n"),
            [
                "+OK Capability list follows",
                "TOP",
                "UIDL",
                "RESP-CODES",
                "PIPELINING",
                "AUTH-RESP-CODE",
                "STLS",
                "UTF8",
                "LANG",
                "IMPLEMENTATION netplugins",
                ".",
            ],
        )

    def test_capaAfterTLS(self) -> None:
        """After STLS, CAPA offers USER and SASL PLAIN, no STLS."""
        server, transport = self.connect()
        self.assertEqual(
            self.talk(server, transport, b"STLS\r\n"), ["+OK Begin TLS negotiation"]
        )
        self.assertIs(transport.tlsStarted, TLS)
        lines = self.talk(server, transport, b"CAPA\r\n")
        self.assertIn("USER", lines)
        self.assertIn("SASL PLAIN", lines)
        self.assertNotIn("STLS", lines)

    def test_utf8AndLang(self) -> None:
        """UTF8 before login only; LANG lists and takes en, refuses others."""
        server, transport = self.connect()
        self.talk(server, transport, b"STLS\r\n")
        self.assertIn("UTF8 USER", self.talk(server, transport, b"CAPA\r\n"))
        self.assertEqual(
            self.talk(
                server,
                transport,
                b"UTF8 now\r\nUTF8\r\nLANG\r\nLANG *\r\nLANG fr\r\n",
            ),
            [
                "-ERR Syntax: UTF8",
                "+OK UTF8 enabled",
                "+OK Language listing follows",
                "en English",
                ".",
                "+OK en Language changed",
                "-ERR Invalid language",
            ],
        )
        self.assertTrue(server.utf8)
        self.talk(server, transport, b"USER alice\r\nPASS alice-password\r\n")
        self.assertEqual(
            self.talk(server, transport, b"UTF8\r\nLANG EN\r\n"),
            ["-ERR Unknown command or wrong state", "+OK en Language changed"],
        )

    def test_loginBeforeTLS(self) -> None:
        """USER and AUTH before TLS are refused."""
        server, transport = self.connect()
        self.assertEqual(
            self.talk(server, transport, b"USER alice\r\nAUTH PLAIN\r\n"),
            ["-ERR [AUTH] Plaintext login refused: use STLS first"] * 2,
        )

    def test_stlsInjection(self) -> None:
        """Commands pipelined after STLS in the same write get no answer."""
        server, transport = self.connect()
        self.assertEqual(
            self.talk(
                server, transport, b"STLS\r\nUSER alice\r\nPASS alice-password\r\n"
            ),
            ["+OK Begin TLS negotiation"],
        )
        self.assertEqual(
            self.talk(server, transport, b"PASS x\r\n"), ["-ERR USER first"]
        )

    def test_userPass(self) -> None:
        """USER/PASS after STLS logs in and reports the maildrop."""
        self.loggedIn()

    def test_wrongPassword(self) -> None:
        """A wrong password is refused with [AUTH]."""
        server, transport = self.connect()
        self.talk(server, transport, b"STLS\r\n")
        self.assertEqual(
            self.talk(server, transport, b"USER alice\r\nPASS nope\r\n")[-1],
            "-ERR [AUTH] Authentication failed",
        )

    def test_passUTF8(self) -> None:
        """PASS with a UTF-8 password logs in with the password's own bytes."""
        addUser(self.world.htpasswd, "carol", CAROL_PASSWORD)
        server, transport = self.connect()
        self.talk(server, transport, b"STLS\r\n")
        line = b"USER carol\r\nPASS " + CAROL_PASSWORD.encode() + b"\r\n"
        self.assertEqual(
            self.talk(server, transport, line),
            ["+OK Send PASS", "+OK 0 messages (0 octets)"],
        )

    def test_passInvalidUTF8(self) -> None:
        """PASS with bytes that are not UTF-8 is refused with -ERR."""
        server, transport = self.connect()
        self.talk(server, transport, b"STLS\r\n")
        self.assertEqual(
            self.talk(server, transport, b"USER alice\r\nPASS \xff\xfe\r\n"),
            ["+OK Send PASS", "-ERR Invalid UTF-8 in argument"],
        )
        self.assertFalse(transport.disconnecting)

    def test_commandStaysASCII(self) -> None:
        """A non-ASCII command or an argument of another command is refused."""
        server, transport = self.connect()
        self.assertEqual(
            self.talk(server, transport, b"N\xc3\x96OP\r\nAUTH PL\xc3\x84IN\r\n"),
            ["-ERR Unknown command", "-ERR Invalid ASCII in argument"],
        )

    def test_authPlain(self) -> None:
        """AUTH PLAIN with a continuation logs in."""
        server, transport = self.connect()
        self.talk(server, transport, b"STLS\r\n")
        self.assertEqual(self.talk(server, transport, b"AUTH PLAIN\r\n"), ["+ "])
        self.assertEqual(
            self.talk(
                server, transport, b64encode(b"\0alice\0alice-password") + b"\r\n"
            ),
            [f"+OK 2 messages ({len(FIRST + SECOND)} octets)"],
        )

    def test_plaintextOptOut(self) -> None:
        """With allowPlaintextAuth, USER/PASS work in the clear."""
        server, transport = self.connect(allowPlaintextAuth=True)
        self.assertEqual(
            self.talk(server, transport, b"USER bob\r\nPASS bob-password\r\n")[-1],
            "+OK 0 messages (0 octets)",
        )

    def test_mailboxLocked(self) -> None:
        """A second session for the same mailbox is refused [IN-USE]."""
        self.loggedIn()
        server, transport = self.connect()
        self.talk(server, transport, b"STLS\r\n")
        self.assertEqual(
            self.talk(server, transport, b"USER alice\r\nPASS alice-password\r\n")[-1],
            "-ERR [IN-USE] Mailbox in use by another session",
        )

    def test_wrongState(self) -> None:
        """Transaction commands before login are refused."""
        server, transport = self.connect()
        self.assertEqual(
            self.talk(server, transport, b"STAT\r\nRETR 1\r\n"),
            ["-ERR Unknown command or wrong state"] * 2,
        )

    def test_preAuthDeadline(self) -> None:
        """A session that does not log in within 120 s is closed."""
        server, transport = self.connect()
        for _ in range(13):
            self.world.clock.advance(10)
            self.talk(server, transport, b"NOOP\r\n")
        self.assertTrue(transport.disconnecting)


class TransactionTests(POP3TestMixin, SynchronousTestCase):
    """
    STAT, LIST, UIDL, TOP, RETR, DELE, RSET and QUIT.
    """

    def test_statListUidl(self) -> None:
        """STAT, LIST and UIDL describe the maildrop; UIDL is validity.uid."""
        server, transport = self.loggedIn()
        validity = self.successResultOf(
            self.world.store.folder("alice").scan()
        ).uidValidity
        self.assertEqual(
            self.talk(
                server, transport, b"STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 9\r\n"
            ),
            [
                f"+OK 2 {len(FIRST + SECOND)}",
                "+OK",
                f"1 {len(FIRST)}",
                f"2 {len(SECOND)}",
                ".",
                f"+OK 2 {len(SECOND)}",
                "+OK",
                f"1 {validity}.1",
                f"2 {validity}.2",
                ".",
                "-ERR No such message",
            ],
        )

    def test_sizesCountCRLF(self) -> None:
        """LIST, STAT and RETR count a bare-LF message as sent: CRLF line ends."""
        self.world.store.deliver("alice", b"Subject: three\n\nbare\n")
        server, transport = self.connect()
        self.talk(server, transport, b"STLS\r\n")
        self.talk(server, transport, b"USER alice\r\nPASS alice-password\r\n")
        lines = self.talk(server, transport, b"LIST 3\r\nSTAT\r\nRETR 3\r\n")
        total = len(FIRST + SECOND) + 24
        self.assertEqual(lines[:3], ["+OK 3 24", f"+OK 3 {total}", "+OK 24 octets"])
        self.assertEqual(
            len(transport.value().split(b"+OK 24 octets\r\n")[1]) - len(b".\r\n"), 24
        )

    def test_retrAndTop(self) -> None:
        """RETR sends the message dot-stuffed; TOP the headers and N lines."""
        server, transport = self.loggedIn()
        transport.clear()
        server.dataReceived(b"RETR 1\r\nTOP 1 1\r\n")
        self.assertEqual(
            transport.value(),
            f"+OK {len(FIRST)} octets\r\n".encode()
            + FIRST.replace(b"\r\n.dotted", b"\r\n..dotted")
            + b".\r\n"
            + f"+OK {len(FIRST)} octets\r\n".encode()
            + b"Subject: one\r\nFrom: x@remote.test\r\n\r\nline 1\r\n.\r\n",
        )

    def test_deleAppliedAtQuit(self) -> None:
        """DELE marks; RSET unmarks; QUIT deletes what is still marked."""
        server, transport = self.loggedIn()
        self.assertEqual(
            self.talk(
                server,
                transport,
                b"DELE 1\r\nDELE 1\r\nRETR 1\r\nRSET\r\nDELE 2\r\nSTAT\r\n",
            ),
            [
                "+OK Message 1 deleted",
                "-ERR Message deleted",
                "-ERR Message deleted",
                "+OK 2 messages",
                "+OK Message 2 deleted",
                f"+OK 1 {len(FIRST)}",
            ],
        )
        self.assertEqual(
            len(self.successResultOf(self.world.store.folder("alice").scan()).messages),
            2,
        )
        self.assertEqual(
            self.talk(server, transport, b"QUIT\r\n"), ["+OK Bye, 1 messages deleted"]
        )
        state = self.successResultOf(self.world.store.folder("alice").scan())
        self.assertEqual([m.uid for m in state.messages], [1])

    def test_dropWithoutQuit(self) -> None:
        """A connection lost without QUIT deletes nothing and frees the lock."""
        server, transport = self.loggedIn()
        self.talk(server, transport, b"DELE 1\r\nDELE 2\r\n")
        server.connectionLost(None)
        self.assertEqual(
            len(self.successResultOf(self.world.store.folder("alice").scan()).messages),
            2,
        )
        self.loggedIn()


class DisciplineTests(POP3TestMixin, SynchronousTestCase):
    """
    The session discipline: no reading past the output watermark, deadlines
    that end in an abort.
    """

    def test_pipelinedBeforeLoginStopsAtWatermark(self) -> None:
        """Before login, a client that never reads gets at most a watermark."""
        transport = WatermarkTransport(watermark=1024)
        server, _ = self.connect(transport)
        self.talk(server, transport, b"STLS\r\n")
        transport.clear()
        server.dataReceived(b"USER alice\r\n" * 10_000)
        self.assertLessEqual(len(transport.value()), 1024 + len(b"+OK Send PASS\r\n"))
        self.assertEqual(transport.producerState, "paused")

    def test_pipelinedRetrOneAtATime(self) -> None:
        """Pipelined RETRs are answered only as the client reads them."""
        transport = WatermarkTransport()
        server, _ = self.loggedIn(transport)
        transport.watermark = 16
        transport.clear()
        server.dataReceived(b"RETR 1\r\n" * 100)
        self.assertEqual(transport.value().count(b"+OK"), 1)
        transport.drain()
        self.assertEqual(transport.value().count(b"+OK"), 1)

    def test_deadlineAbortsUnclosedConnection(self) -> None:
        """A connection not gone CLOSE_GRACE after its deadline is aborted."""
        transport = WatermarkTransport()
        self.connect(transport, preAuthTimeout=5)
        self.world.clock.advance(5)
        self.assertEqual(transport.value(), b"-ERR Timeout, closing\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        self.world.clock.advance(CLOSE_GRACE)
        self.assertTrue(transport.aborted)

    def test_stalledSTLSAborted(self) -> None:
        """An STLS handshake not finished within 10 s is aborted."""
        transport = WatermarkTransport()
        server, _ = self.connect(transport)
        server.dataReceived(b"STLS\r\n")
        transport._handshakeDone = False  # type: ignore[attr-defined]
        self.world.clock.advance(DEFAULT_HANDSHAKE_TIMEOUT)
        self.assertTrue(transport.aborted)


class HelperTests(SynchronousTestCase):
    """
    Byte-stuffing and TOP.
    """

    def test_byteStuff(self) -> None:
        """Dot lines are doubled, LF becomes CRLF, a final CRLF is added."""
        self.assertEqual(byteStuff(b".a\nb\r\n.\r\nc"), b"..a\r\nb\r\n..\r\nc\r\n")

    def test_topZero(self) -> None:
        """TOP n 0 sends headers and the blank line only."""
        self.assertEqual(topOf(b"A: b\r\n\r\nx\r\n", 0), b"A: b\n\n")

    def test_downgradeBinary(self) -> None:
        """A binary single part becomes base64; its headers stay as they were."""
        self.assertEqual(
            downgradeBinary(
                b"Subject: x\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\n\r\xff"
            ),
            b"Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\nAAoN/w==\r\n",
        )


class OptionsTests(SynchronousTestCase):
    """
    C{twistd np-pop3} options.
    """

    def test_parse(self) -> None:
        """Options parse into np-pop3's settings."""
        options = Options()
        options.parseOptions(["--maildir-root", "/m", "--allow-plaintext-auth"])
        self.assertEqual(
            options.settings, POP3Settings(maildirRoot="/m", allowPlaintextAuth=True)
        )


class PoplibTests(TestCase):
    """
    poplib against np-pop3 on 127.0.0.1.
    """

    def test_poplib(self) -> Deferred[None]:
        """poplib: stls, user/pass, uidl, top, retr, dele then quit deletes."""
        directory = os.path.abspath(self.mktemp())
        pki = PKI(os.path.join(directory, "pki"))
        cert, key = pki.serverCertificate("localhost", "127.0.0.1")
        htpasswd = writeHtpasswd(directory)
        root = os.path.join(directory, "mail")
        store = MaildirStore(root)
        waitForSessions(self, POP3Server)
        service = pop3Service(
            POP3Settings(
                maildirRoot=root,
                listen=("tcp:0:interface=127.0.0.1",),
                tlsCert=(cert,),
                tlsKey=(key,),
                auth=(f"htpasswd:{htpasswd}",),
                stateDir=directory,
            )
        )
        service.startService()
        self.addCleanup(service.stopService)
        [(_, address, _)] = listeningPorts(service)
        context = ssl.create_default_context(cafile=pki.caPath)

        def session(delete: bool) -> dict[str, Any]:
            client = poplib.POP3("127.0.0.1", address.port, timeout=10)
            try:
                caps = client.capa()
                client.stls(context)
                client.user("alice")
                client.pass_("alice-password")
                result = {
                    "caps": sorted(caps),
                    "stat": client.stat(),
                    "uidl": client.uidl()[1],
                    "top": client.top(1, 0)[1],
                    "retr": client.retr(1)[1],
                }
                if delete:
                    client.dele(1)
            finally:
                client.quit()
            return result

        def run() -> tuple[dict[str, Any], dict[str, Any]]:
            return session(True), session(False)

        def check(results: tuple[dict[str, Any], dict[str, Any]]) -> None:
            first, second = results
            self.assertIn("STLS", first["caps"])
            self.assertNotIn("USER", first["caps"])
            self.assertEqual(first["stat"], (2, len(FIRST + SECOND)))
            self.assertEqual(len(first["uidl"]), 2)
            self.assertEqual(
                first["top"], [b"Subject: one", b"From: x@remote.test", b""]
            )
            self.assertEqual(b"\r\n".join(first["retr"]) + b"\r\n", FIRST)
            self.assertEqual(second["stat"], (1, len(SECOND)))
            # Renumbered from 1, but the unique ID stays.
            self.assertEqual(
                [u.split()[1] for u in second["uidl"]],
                [u.split()[1] for u in first["uidl"][1:]],
            )

        async def scenario() -> None:
            await store.deliver("alice", FIRST)
            await store.deliver("alice", SECOND)
            check(await deferToThread(run))

        return Deferred.fromCoroutine(scenario())

    def test_poplibUTF8Password(self) -> Deferred[None]:
        """poplib's USER/PASS with a non-ASCII password (sent as UTF-8) logs in."""
        directory = os.path.abspath(self.mktemp())
        pki = PKI(os.path.join(directory, "pki"))
        cert, key = pki.serverCertificate("localhost", "127.0.0.1")
        htpasswd = writeHtpasswd(directory)
        addUser(htpasswd, "carol", CAROL_PASSWORD)
        root = os.path.join(directory, "mail")
        waitForSessions(self, POP3Server)
        service = pop3Service(
            POP3Settings(
                maildirRoot=root,
                listen=("tcp:0:interface=127.0.0.1",),
                tlsCert=(cert,),
                tlsKey=(key,),
                auth=(f"htpasswd:{htpasswd}",),
                stateDir=directory,
            )
        )
        service.startService()
        self.addCleanup(service.stopService)
        [(_, address, _)] = listeningPorts(service)
        context = ssl.create_default_context(cafile=pki.caPath)

        def session() -> tuple[bytes, tuple[int, int]]:
            client = poplib.POP3("127.0.0.1", address.port, timeout=10)
            try:
                client.stls(context)
                client.user("carol")
                return client.pass_(CAROL_PASSWORD), client.stat()
            finally:
                client.quit()

        def check(result: tuple[bytes, tuple[int, int]]) -> None:
            self.assertEqual(result, (b"+OK 0 messages (0 octets)", (0, 0)))

        return deferToThread(session).addCallback(check)

    def test_poplibUTF8Mode(self) -> Deferred[None]:
        """poplib: CAPA's UTF8 USER, utf8(), then a UTF-8 header retrieved intact."""
        directory = os.path.abspath(self.mktemp())
        pki = PKI(os.path.join(directory, "pki"))
        cert, key = pki.serverCertificate("localhost", "127.0.0.1")
        htpasswd = writeHtpasswd(directory)
        addUser(htpasswd, "carol", CAROL_PASSWORD)
        root = os.path.join(directory, "mail")
        store = MaildirStore(root)
        waitForSessions(self, POP3Server)
        service = pop3Service(
            POP3Settings(
                maildirRoot=root,
                listen=("tcp:0:interface=127.0.0.1",),
                tlsCert=(cert,),
                tlsKey=(key,),
                auth=(f"htpasswd:{htpasswd}",),
                stateDir=directory,
            )
        )
        service.startService()
        self.addCleanup(service.stopService)
        [(_, address, _)] = listeningPorts(service)
        context = ssl.create_default_context(cafile=pki.caPath)
        message = (
            "From: jürgen@bücher.test\r\nSubject: Grüße\r\n\r\nHallo.\r\n".encode()
        )

        def session() -> tuple[dict[str, list[str]], bytes, list[bytes]]:
            client = poplib.POP3("127.0.0.1", address.port, timeout=10)
            try:
                client.stls(context)
                caps = client.capa()
                enabled = client.utf8()
                client.user("carol")
                client.pass_(CAROL_PASSWORD)
                return caps, enabled, client.retr(1)[1]
            finally:
                client.quit()

        def check(result: tuple[dict[str, list[str]], bytes, list[bytes]]) -> None:
            caps, enabled, lines = result
            self.assertEqual((caps["UTF8"], caps["LANG"]), (["USER"], []))
            self.assertEqual(enabled, b"+OK UTF8 enabled")
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", message)

        async def scenario() -> None:
            await store.deliver("carol", message)
            check(await deferToThread(session))

        return Deferred.fromCoroutine(scenario())
