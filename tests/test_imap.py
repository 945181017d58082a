"""
Tests for L{netplugins.mail.imap.server} (with its parser, fetch and search modules)
and L{netplugins.tap.imap}.
"""

from __future__ import annotations

import base64
import email
import email.message
import imaplib
import os
import re
import socket
import ssl
import time
from typing import Any

from attrs import evolve
from imapclient import IMAPClient
from imapclient.imapclient import SENT, TRASH
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.mail.imap import selected
from netplugins.mail.imap.fetch import (
    canonical,
    parseEntity,
    parseFetchItems,
    parseSection,
    sectionContent,
)
from netplugins.mail.imap.mailboxes import SPECIAL_USE
from netplugins.mail.imap.parse import (
    IMAPSyntaxError,
    Literal,
    formatSequenceSet,
    literalAnnounced,
    matchPattern,
    parseSequenceSet,
    tokenize,
)
from netplugins.mail.imap.server import MAX_LOGIN_COMMAND, IMAPConfig, IMAPFactory
from netplugins.mail.maildir.folder import Folder
from netplugins.mail.maildir.store import MaildirStore
from netplugins.mail.users import LocalUsers, MailRealm
from netplugins.options import ServiceSettings
from netplugins.session import CLOSE_GRACE
from netplugins.tap.imap import (
    DEFAULT_LISTEN,
    IMAPSettings,
    Options,
    imapService,
    makeService,
)
from netplugins.tls.server import DEFAULT_HANDSHAKE_TIMEOUT
from tests.pki import PKI
from tests.support import WatermarkTransport

USERS = {"alice": b"alice-pw", "bob": b"bob-pw"}

MULTIPART = (
    b"From: Alice Example <alice@example.org>\r\n"
    b'To: bob@example.org, "Carol C" <carol@example.net>\r\n'
    b"Subject: hello there\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="BB"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--BB\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"hello\r\nworld\r\n"
    b"--BB\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\nFrom: x@y\r\n\r\ninner body\r\n"
    b"--BB--\r\n"
)


def plainMessage(
    subject: str, body: str = "body\n", sender: str = "carol@example.net"
) -> bytes:
    """
    A small message with LF line ends, as a Maildir may hold it.
    """
    return (
        f"From: {sender}\nTo: alice@example.org\nSubject: {subject}\n"
        f"Date: Tue, 1 Oct 2024 10:00:00 +0000\n\n{body}"
    ).encode()


def makeFactory(
    root: str,
    reactor: Any,
    store: MaildirStore | None = None,
    tls: Any = None,
    **config: Any,
) -> IMAPFactory:
    """
    An IMAP factory on a Maildir store under C{root}, with the test users;
    C{config} are L{IMAPConfig} fields.  Unless C{autoCreate} is given, no
    mailbox is made at login, so that tests see only those they make.
    """
    config.setdefault("autoCreate", ())
    checker = InMemoryUsernamePasswordDatabaseDontUse(**USERS)
    portal = Portal(MailRealm(LocalUsers(["example.org"], [checker])), [checker])
    if store is None:
        store = MaildirStore(root, reactor=reactor, runBlocking=maybeDeferred)
    return IMAPFactory(
        store, portal, config=IMAPConfig(**config), tls=tls, reactor=reactor
    )


class TLSRecordingTransport(StringTransport):
    """
    A string transport that records C{startTLS} instead of doing it.
    """

    tlsStarted: Any = None

    def startTLS(self, contextFactory: Any) -> None:
        self.tlsStarted = contextFactory


class Session:
    """
    An IMAP session on a string transport, with a clock.
    """

    def __init__(self, case: SynchronousTestCase, **kw: Any) -> None:
        self.clock = kw.pop("clock", None) or Clock()
        transport = kw.pop("transport", None)
        self.root = kw.pop("root", None) or case.mktemp()
        self.factory = kw.pop("factory", None) or makeFactory(
            self.root, self.clock, **kw
        )
        self.store: MaildirStore = self.factory.store
        self.protocol: Any = self.factory.buildProtocol(None)
        self.transport: Any = transport or TLSRecordingTransport()
        self.protocol.makeConnection(self.transport)  # type: ignore[union-attr]

    def send(self, data: bytes) -> bytes:
        """
        Feed C{data} and return (and forget) what the server wrote.
        """
        self.transport.clear()
        self.protocol.dataReceived(data)
        return self.read()

    def read(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def login(self) -> None:
        self.protocol._tls = True
        reply = self.send(b"l LOGIN alice alice-pw\r\n")
        assert b"l OK" in reply, reply


class ParserTests(SynchronousTestCase):
    """
    The bounded IMAP syntax helpers.
    """

    def test_tokens(self) -> None:
        """Atoms, quoted strings, literals, lists and sections tokenise."""
        self.assertEqual(
            tokenize(
                [
                    b"a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM)]<0.9>) "
                    b'"q\\"x" ',
                    Literal(b"lit\r\n"),
                    b" NIL",
                ]
            ),
            [
                "a",
                "FETCH",
                "1:*",
                ["FLAGS", "BODY.PEEK[HEADER.FIELDS (FROM)]<0.9>"],
                b'q"x',
                b"lit\r\n",
                "NIL",
            ],
        )

    def test_negativeLiteral(self) -> None:
        """A literal announcement like {-5} is a syntax error, not a size."""
        self.assertRaises(IMAPSyntaxError, literalAnnounced, b"a APPEND x {-5}")
        self.assertRaises(IMAPSyntaxError, literalAnnounced, b"a LOGIN {99999999999}")
        self.assertEqual(literalAnnounced(b"a LOGIN {5+}").size, 5)  # type: ignore[union-attr]

    def test_depth(self) -> None:
        """Lists nested deeper than the bound are refused."""
        self.assertRaises(IMAPSyntaxError, tokenize, [b"(" * 100 + b")" * 100])

    def test_wildcards(self) -> None:
        """* crosses the delimiter, % does not, INBOX is case-insensitive."""
        self.assertEqual(
            [
                matchPattern("%", "a.b"),
                matchPattern("*", "a.b"),
                matchPattern("a.%", "a.b"),
                matchPattern("inbox", "INBOX"),
                matchPattern("a%", "ab.c"),
                matchPattern("*c", "ab.c"),
            ],
            [False, True, True, True, False, True],
        )

    def test_wildcardsDoNotBacktrack(self) -> None:
        """The GHSA-8pqf-f4m5-798g pattern against a long name ends quickly."""
        start = time.monotonic()
        self.assertFalse(matchPattern("*%" * 30 + "x", "a" * 2000))
        self.assertLess(time.monotonic() - start, 2.0)

    def test_sequenceSets(self) -> None:
        """Sequence sets parse, resolve * and compact back."""
        s = parseSequenceSet("1:3,5,7:*")
        self.assertEqual(s.select(range(1, 11), 10), [1, 2, 3, 5, 7, 8, 9, 10])
        self.assertEqual(formatSequenceSet([1, 2, 3, 5, 7, 8]), "1:3,5,7:8")
        for bad in ("0", "1:", "-1", "a", "1,,2"):
            self.assertRaises(IMAPSyntaxError, parseSequenceSet, bad)


class FetchTests(SynchronousTestCase):
    """
    MIME structure and sections cut from the raw message.
    """

    def test_sections(self) -> None:
        """Parts, MIME headers, encapsulated messages and HEADER.FIELDS."""
        root = parseEntity(MULTIPART)

        def section(spec: str) -> bytes:
            return sectionContent(root, parseSection(spec, ""))

        self.assertEqual(
            [
                section("1"),
                section("2.HEADER"),
                section("2.1"),
                section("1.MIME"),
                section("HEADER.FIELDS (SUBJECT)"),
                section("9"),
            ],
            [
                b"hello\r\nworld",
                b"Subject: inner\r\nFrom: x@y\r\n\r\n",
                b"inner body",
                b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
                b"Subject: hello there\r\n\r\n",
                b"",
            ],
        )

    def test_badItems(self) -> None:
        """Unknown FETCH items and malformed sections are syntax errors."""
        for bad in ["BODY[MIME]", "BODY[1.FOO]", "NOPE", "BODY[]<1.0>"]:
            self.assertRaises(IMAPSyntaxError, parseFetchItems, bad)


class SecurityTests(SynchronousTestCase):
    """
    The hostile inputs of docs/security.md for IMAP, on the protocol.
    """

    def test_loginDisabledBeforeTLS(self) -> None:
        """Before TLS the server says LOGINDISABLED and refuses LOGIN."""
        s = Session(self, tls="context")
        greeting = s.read()
        self.assertIn(b"STARTTLS", greeting)
        self.assertIn(b"LOGINDISABLED", greeting)
        self.assertNotIn(b"AUTH=PLAIN", greeting)
        self.assertEqual(
            s.send(b"a LOGIN alice alice-pw\r\nb AUTHENTICATE PLAIN\r\n"),
            b"a NO [PRIVACYREQUIRED] Use STARTTLS before logging in.\r\n"
            b"b NO [PRIVACYREQUIRED] Use STARTTLS before logging in.\r\n",
        )

    def test_startTLSInjection(self) -> None:
        """Commands pipelined after STARTTLS in one write are discarded."""
        s = Session(self, tls="context")
        s.read()
        reply = s.send(b"a STARTTLS\r\nb LOGIN alice alice-pw\r\n")
        self.assertEqual(reply, b"a OK Begin TLS negotiation now.\r\n")
        self.assertEqual(s.transport.tlsStarted, "context")
        self.assertEqual(s.send(b"c CAPABILITY\r\n").count(b"c OK"), 1)
        self.assertEqual(s.protocol.state, "not authenticated")

    def test_negativeLiteral(self) -> None:
        """{-5} gets BAD and no continuation."""
        s = Session(self)
        s.read()
        self.assertEqual(
            s.send(b"a LOGIN {-5}\r\n"), b"a BAD invalid literal size {-5}\r\n"
        )

    def test_hugeAppend(self) -> None:
        """An APPEND over the limit is refused before any of it is read."""
        s = Session(self, appendLimit=1000)
        s.login()
        self.assertIn(b"APPENDLIMIT=1000", s.send(b"c CAPABILITY\r\n"))
        self.assertEqual(
            s.send(b"a APPEND INBOX {1001}\r\n"), b"a NO [TOOBIG] Message too large\r\n"
        )
        reply = s.send(b"b APPEND INBOX {4000000000+}\r\nxxxx")
        self.assertEqual(
            reply, b"b NO [TOOBIG] Message too large\r\n* BYE Literal too large\r\n"
        )
        self.assertTrue(s.transport.disconnecting)

    def test_otherLiteralsBounded(self) -> None:
        """Literals outside APPEND are bounded by the command size limit."""
        s = Session(self)
        s.login()
        self.assertEqual(
            s.send(b"a SELECT {100000}\r\n"), b"a BAD Command too long\r\n"
        )

    def test_noLargeLiteralBeforeLogin(self) -> None:
        """Before login no literal over MAX_LOGIN_COMMAND is read, APPEND's included."""
        s = Session(self)
        s.read()
        self.assertEqual(
            s.send(b"a APPEND INBOX {26000000}\r\n"),
            b"a BAD Literal too large before login\r\n",
        )
        self.assertEqual(
            s.send(b"b LOGIN {%d}\r\n" % MAX_LOGIN_COMMAND),
            b"b BAD Literal too large before login\r\n",
        )
        self.assertFalse(s.transport.disconnecting)
        self.assertEqual(s.send(b"c NOOP\r\n"), b"c OK NOOP completed.\r\n")
        self.assertEqual(
            s.send(b"d APPEND INBOX {26000000+}\r\n" + b"x" * 10000),
            b"d BAD Literal too large before login\r\n* BYE Literal too large\r\n",
        )
        self.assertTrue(s.transport.disconnecting)
        self.assertIsNone(s.protocol._literal)

    def test_literalOfCommandInWrongState(self) -> None:
        """A synchronizing literal of a command not valid now gets BAD, no +."""
        s = Session(self)
        s.read()
        self.assertEqual(
            s.send(b"a APPEND INBOX {10}\r\n"),
            b"a BAD Command not valid in this state\r\n",
        )

    def test_loginLiteralsStillRead(self) -> None:
        """LOGIN with literals (small ones) still works before login."""
        s = Session(self, allowPlaintextAuth=True)
        s.read()
        self.assertEqual(s.send(b"a LOGIN {5}\r\n"), b"+ Ready for literal data\r\n")
        self.assertEqual(s.send(b"alice {8}\r\n"), b"+ Ready for literal data\r\n")
        self.assertIn(b"a OK [CAPABILITY", s.send(b"alice-pw\r\n"))

    def test_longLine(self) -> None:
        """A line over the limit closes the connection."""
        s = Session(self)
        s.read()
        self.assertEqual(s.send(b"a " + b"x" * 20000), b"* BYE Line too long\r\n")
        self.assertTrue(s.transport.disconnecting)

    def test_loginAttempts(self) -> None:
        """The sixth failed login ends the connection."""
        s = Session(self, allowPlaintextAuth=True, preAuthTimeout=3600)
        s.read()
        replies = b""
        for i in range(6):
            replies += s.send(b"a%d LOGIN alice wrong\r\n" % i)
            s.clock.advance(60)
        self.assertEqual(replies.count(b"NO [AUTHENTICATIONFAILED]"), 6)
        self.assertTrue(replies.endswith(b"* BYE Too many login attempts\r\n"))
        self.assertTrue(s.transport.disconnecting)

    def test_preAuthDeadline(self) -> None:
        """A client not logged in 120 seconds after connecting is dropped."""
        s = Session(self)
        s.read()
        for i in range(2):
            s.clock.advance(55)
            self.assertEqual(
                s.send(b"a%d NOOP\r\n" % i), b"a%d OK NOOP completed.\r\n" % i
            )
        s.clock.advance(9)
        self.assertFalse(s.transport.disconnecting)
        s.clock.advance(1)
        self.assertEqual(s.read(), b"* BYE Autologout; no login in time\r\n")
        self.assertTrue(s.transport.disconnecting)

    def test_preAuthDeadlineEndsAtLogin(self) -> None:
        """Once logged in, the pre-auth deadline is gone; the idle one counts."""
        s = Session(self, preAuthTimeout=100, idleTimeout=300)
        s.read()
        s.clock.advance(90)
        s.login()
        s.clock.advance(299)
        self.assertFalse(s.transport.disconnecting)
        s.clock.advance(1)
        self.assertEqual(s.read(), b"* BYE Autologout; idle for too long\r\n")
        self.assertTrue(s.transport.disconnecting)

    def test_idleTimeout(self) -> None:
        """A logged-in client idle for 30 minutes is dropped; bytes do not count."""
        s = Session(self)
        s.login()
        for _ in range(10):
            s.clock.advance(179)
            s.send(b"x")
        self.assertFalse(s.transport.disconnecting)
        s.clock.advance(30 * 60 - 1790 + 1)
        self.assertTrue(s.transport.disconnecting)


class SessionTests(SynchronousTestCase):
    """
    Commands on the protocol with a real Maildir store run inline.
    """

    def setUp(self) -> None:
        self.s = Session(self)
        self.s.login()
        for i in range(3):
            self.successResultOf(self.s.store.deliver("alice", plainMessage(f"m{i}")))

    def test_authenticatePlain(self) -> None:
        """AUTHENTICATE PLAIN works with a continuation and with SASL-IR."""
        s = Session(self, allowPlaintextAuth=True)
        s.read()
        self.assertEqual(s.send(b"a AUTHENTICATE PLAIN\r\n"), b"+ \r\n")
        token = base64.b64encode(b"\x00alice\x00alice-pw")
        self.assertIn(b"a OK [CAPABILITY", s.send(token + b"\r\n"))
        s2 = Session(self, allowPlaintextAuth=True, root=s.root)
        s2.read()
        self.assertIn(b"b OK", s2.send(b"b AUTHENTICATE PLAIN " + token + b"\r\n"))
        s3 = Session(self, allowPlaintextAuth=True, root=s.root)
        s3.read()
        s3.send(b"c AUTHENTICATE PLAIN\r\n")
        self.assertEqual(s3.send(b"*\r\n"), b"c BAD Authentication cancelled\r\n")

    def test_select(self) -> None:
        """SELECT reports counts, UIDVALIDITY and UIDNEXT, then READ-WRITE."""
        reply = self.s.send(b"s SELECT inbox\r\n")
        self.assertIn(b"* 3 EXISTS\r\n* 3 RECENT\r\n* OK [UNSEEN 1]", reply)
        self.assertIn(b"* OK [UIDNEXT 4]", reply)
        self.assertTrue(reply.endswith(b"s OK [READ-WRITE] Select completed.\r\n"))

    def test_fetchAndStore(self) -> None:
        """FETCH sets \\Seen unless PEEK; STORE +FLAGS.SILENT says nothing."""
        self.s.send(b"s SELECT INBOX\r\n")
        reply = self.s.send(b"f FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] FLAGS)\r\n")
        self.assertEqual(
            reply,
            b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {15}\r\n"
            b"Subject: m0\r\n\r\n FLAGS (\\Recent))\r\nf OK Fetch "
            b"completed.\r\n",
        )
        reply = self.s.send(b"g UID FETCH 2 (BODY[TEXT]<1.2>)\r\n")
        self.assertEqual(
            reply,
            b"* 2 FETCH (UID 2 BODY[TEXT]<1> {2}\r\nod FLAGS "
            b"(\\Seen \\Recent))\r\ng OK Fetch completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b"h STORE 1:3 +FLAGS.SILENT (\\Deleted)\r\n"),
            b"h OK Store completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b"i EXPUNGE\r\n"),
            b"* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n* 1 EXPUNGE\r\ni OK Expunge completed.\r\n",
        )

    def countReads(self) -> list[int]:
        """
        Record how many messages each of the store's content reads asks for.
        """
        reads: list[int] = []
        original = Folder._blockingReadMany

        def readMany(folder: Folder, messages: Any) -> Any:
            reads.append(len(messages))
            return original(folder, messages)

        self.patch(Folder, "_blockingReadMany", readMany)
        self.patch(Folder, "read", None)  # one message per hop: not used
        return reads

    def test_sizeFromNames(self) -> None:
        """RFC822.SIZE is the CRLF size, from the file names, with no read."""
        reads = self.countReads()
        size = len(canonical(plainMessage("m0")))
        self.s.send(b"s SELECT INBOX\r\n")
        self.assertEqual(
            self.s.send(b"f FETCH 1:* RFC822.SIZE\r\n"),
            b"".join(b"* %d FETCH (RFC822.SIZE %d)\r\n" % (n, size) for n in (1, 2, 3))
            + b"f OK Fetch completed.\r\n",
        )
        self.assertEqual(reads, [])
        self.assertIn(
            b"RFC822.SIZE %d BODY[] {%d}" % (size, size),
            self.s.send(b"g FETCH 1 (RFC822.SIZE BODY.PEEK[])\r\n"),
        )

    def test_sizeOfForeignMessage(self) -> None:
        """A message without ,W= in its name is read once for its CRLF size."""
        reads = self.countReads()
        data = plainMessage("foreign")
        with open(os.path.join(self.s.root, "alice", "new", "1.foreign"), "wb") as f:
            f.write(data)
        self.s.send(b"s SELECT INBOX\r\n")
        for tag in (b"f", b"g"):
            self.assertIn(
                b"* 1 FETCH (RFC822.SIZE %d)" % len(canonical(data)),
                self.s.send(tag + b" FETCH 1 RFC822.SIZE\r\n"),
            )
        self.assertEqual(reads, [1])

    def test_fetchReadsInBatches(self) -> None:
        """FETCH and SEARCH read a batch per pool call; \\Seen is one store call."""
        for i in range(30):
            message = plainMessage(f"n{i}")
            self.successResultOf(self.s.store.deliver("alice", message))
        reads = self.countReads()
        marks: list[int] = []
        setFlags = Folder._blockingSetFlags

        def counting(folder: Folder, messages: Any, flags: str) -> Any:
            marks.append(len(messages))
            return setFlags(folder, messages, flags)

        self.patch(Folder, "_blockingSetFlags", counting)
        self.s.send(b"s SELECT INBOX\r\n")
        reply = self.s.send(b"f FETCH 1:* (BODY[TEXT])\r\n")
        self.assertEqual(reply.count(b"FLAGS (\\Seen \\Recent))\r\n"), 33)
        self.assertEqual((reads, marks), ([33], [33]))
        self.patch(selected, "BATCH_MESSAGES", 10)
        self.assertEqual(
            self.s.send(b"g SEARCH BODY body\r\n"),
            b"* SEARCH "
            + b" ".join(b"%d" % n for n in range(1, 34))
            + b"\r\ng OK Search completed.\r\n",
        )
        self.assertEqual(reads, [33, 10, 10, 10, 3])

    def test_fetchWritesPerBatch(self) -> None:
        """A FETCH of N messages takes far fewer than N writes, lines in order."""
        for i in range(247):
            self.successResultOf(self.s.store.deliver("alice", plainMessage(f"w{i}")))
        self.s.send(b"s SELECT INBOX\r\n")
        writes: list[bytes] = []
        transport = self.s.transport
        write = transport.write

        def counting(data: bytes) -> None:
            writes.append(data)
            write(data)

        def countingSequence(data: list[bytes]) -> None:
            counting(b"".join(data))

        self.patch(transport, "write", counting)
        self.patch(transport, "writeSequence", countingSequence)
        for command in [b"f FETCH 1:* (FLAGS)", b"g FETCH 1:* (BODY.PEEK[])"]:
            del writes[:]
            reply = self.s.send(command + b"\r\n")
            seqs = [
                int(line.split(b" ")[1])
                for line in reply.split(b"\r\n")
                if line.startswith(b"* ")
            ]
            self.assertEqual(seqs, list(range(1, 251)))
            # 250 lines of 100 a batch, then the tagged OK.
            self.assertEqual(len(writes), 4)

    def test_search(self) -> None:
        """SEARCH combines flags, headers and NOT/OR."""
        self.s.send(b"s SELECT INBOX\r\nt STORE 2 +FLAGS (\\Flagged)\r\n")
        self.assertEqual(
            self.s.send(
                b"a SEARCH OR FLAGGED SUBJECT m0 NOT DELETED\r\n"
                b"b UID SEARCH BODY body SINCE 1-Jan-2000 2:*\r\n"
                b"c SEARCH FROM nobody\r\n"
            ),
            b"* SEARCH 1 2\r\na OK Search completed.\r\n"
            b"* SEARCH 2 3\r\nb OK Search completed.\r\n"
            b"* SEARCH\r\nc OK Search completed.\r\n",
        )

    def test_newMailSeenAtNoop(self) -> None:
        """Mail delivered by another process shows up as EXISTS at NOOP."""
        self.s.send(b"s SELECT INBOX\r\n")
        self.successResultOf(self.s.store.deliver("alice", plainMessage("late")))
        self.assertEqual(
            self.s.send(b"n NOOP\r\n"),
            b"* 4 EXISTS\r\n* 4 RECENT\r\nn OK NOOP completed.\r\n",
        )

    def test_expungeByOtherSession(self) -> None:
        """Another session's EXPUNGE shows up as EXPUNGE at NOOP."""
        self.s.send(b"s SELECT INBOX\r\n")
        other = Session(self, factory=self.s.factory)
        other.login()
        other.send(b"s SELECT INBOX\r\nd STORE 2 +FLAGS (\\Deleted)\r\ne EXPUNGE\r\n")
        self.assertEqual(
            self.s.send(b"n NOOP\r\n"), b"* 2 EXPUNGE\r\nn OK NOOP completed.\r\n"
        )

    def test_idle(self) -> None:
        """IDLE reports a delivery within a poll interval, DONE ends it."""
        self.s.send(b"s SELECT INBOX\r\n")
        self.assertEqual(self.s.send(b"i IDLE\r\n"), b"+ idling\r\n")
        self.successResultOf(self.s.store.deliver("alice", plainMessage("late")))
        self.s.clock.advance(2)
        self.assertEqual(self.s.read(), b"* 4 EXISTS\r\n* 4 RECENT\r\n")
        self.s.clock.advance(3600)
        self.assertFalse(self.s.transport.disconnecting)
        self.assertEqual(self.s.send(b"DONE\r\n"), b"i OK Idle completed.\r\n")

    def test_appendCopyUidplus(self) -> None:
        """APPEND and COPY answer APPENDUID and COPYUID; UID EXPUNGE is selective."""
        self.s.send(b"c CREATE Archive\r\n")
        reply = self.s.send(b"a APPEND Archive (\\Seen) {5}\r\n")
        self.assertEqual(reply, b"+ Ready for literal data\r\n")
        reply = self.s.send(b"x: y\r\n")
        self.assertRegex(reply, rb"a OK \[APPENDUID \d+ 1\] Append completed.")
        self.s.send(b"s SELECT INBOX\r\n")
        self.assertRegex(
            self.s.send(b"p UID COPY 1:2 Archive\r\n"),
            rb"p OK \[COPYUID \d+ 1:2 2:3\] Copy completed.",
        )
        self.assertIn(b"[TRYCREATE]", self.s.send(b"q COPY 1 Nowhere\r\n"))
        self.s.send(b"d STORE 1:3 +FLAGS.SILENT (\\Deleted)\r\n")
        self.assertEqual(
            self.s.send(b"e UID EXPUNGE 2\r\n"),
            b"* 2 EXPUNGE\r\ne OK Expunge completed.\r\n",
        )

    def test_move(self) -> None:
        """MOVE answers COPYUID untagged, then EXPUNGE highest first, then OK."""
        self.s.send(b"c CREATE Archive\r\ns SELECT INBOX\r\n")
        reply = self.s.send(b"m MOVE 1,3 Archive\r\n")
        self.assertRegex(
            reply,
            rb"\A\* OK \[COPYUID \d+ 1,3 1:2\] Moved UIDs.\r\n"
            rb"\* 3 EXPUNGE\r\n\* 1 EXPUNGE\r\nm OK Move completed.\r\n\Z",
        )
        self.assertIn(b"* 1 EXISTS", self.s.send(b"s SELECT INBOX\r\n"))
        self.assertIn(b"* 2 EXISTS", self.s.send(b"s SELECT Archive\r\n"))

    def test_uidMove(self) -> None:
        """UID MOVE moves by UID; a missing target is NO [TRYCREATE], nothing moved."""
        self.s.send(b"c CREATE Archive\r\ns SELECT INBOX\r\n")
        self.assertIn(b"[TRYCREATE]", self.s.send(b"q UID MOVE 1 Nowhere\r\n"))
        self.assertRegex(
            self.s.send(b"m UID MOVE 2 Archive\r\n"),
            rb"\* OK \[COPYUID \d+ 2 1\] Moved UIDs.\r\n\* 2 EXPUNGE\r\n"
            rb"m OK Move completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b"f UID FETCH 1:* UID\r\n"),
            b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\nf OK Fetch completed.\r\n",
        )

    def test_moveReadOnly(self) -> None:
        """MOVE in an EXAMINEd mailbox is NO and MOVE is in CAPABILITY."""
        self.s.send(b"c CREATE Archive\r\ns EXAMINE INBOX\r\n")
        self.assertIn(b"m NO [CANNOT]", self.s.send(b"m MOVE 1 Archive\r\n"))
        self.assertIn(b" MOVE ", self.s.send(b"c CAPABILITY\r\n"))

    def test_list(self) -> None:
        """LIST shows implied parents as \\Noselect; LSUB follows SUBSCRIBE."""
        self.s.send(b"c CREATE a.b.c\r\nd SUBSCRIBE a.b.c\r\n")
        self.assertEqual(
            self.s.send(b'l LIST "" *\r\nm LIST "" %\r\nn LSUB "" *\r\n'),
            b'* LIST (\\HasNoChildren) "." INBOX\r\n'
            b'* LIST (\\Noselect \\HasChildren) "." a\r\n'
            b'* LIST (\\Noselect \\HasChildren) "." a.b\r\n'
            b'* LIST (\\HasNoChildren) "." a.b.c\r\nl OK List completed.\r\n'
            b'* LIST (\\HasNoChildren) "." INBOX\r\n'
            b'* LIST (\\Noselect \\HasChildren) "." a\r\nm OK List completed.\r\n'
            b'* LSUB () "." a.b.c\r\nn OK Lsub completed.\r\n',
        )

    def test_pipelining(self) -> None:
        """Thousands of pipelined commands in one write all get answers."""
        reply = self.s.send(b"n NOOP\r\n" * 5000)
        self.assertEqual(reply.count(b"n OK NOOP completed."), 5000)

    def test_states(self) -> None:
        """Commands outside their state and unknown commands get BAD."""
        self.assertEqual(
            self.s.send(b"f FETCH 1 FLAGS\r\nx FOO\r\n"),
            b"f BAD Command not valid in this state\r\nx BAD Unknown command\r\n",
        )

    def test_check(self) -> None:
        """CHECK answers CHECK's own completion, not NOOP's."""
        self.s.send(b"s SELECT INBOX\r\n")
        self.assertEqual(self.s.send(b"c CHECK\r\n"), b"c OK Check completed.\r\n")

    def test_mailboxNamesWithLineBreaks(self) -> None:
        """Mailbox names with CR, LF or NUL get NO before any reply or the store."""
        self.s.send(b"s SELECT INBOX\r\nc CREATE Archive\r\n")
        refused = b" NO [CANNOT] Mailbox name holds CR, LF or NUL\r\n"
        for name in [b"x\r\n* OK [ALERT] injected!", b"x\ny", b"x\ry", b"x\x00y"]:
            literal = b"{%d+}\r\n" % len(name) + name
            for command in [
                b"a DELETE " + literal,
                b"b CREATE " + literal,
                b"c RENAME Archive " + literal,
                b"d RENAME " + literal + b" Other",
                b"e APPEND " + literal + b" {6+}\r\nx: y\r\n",
                b"f COPY 1 " + literal,
                b"g UID COPY 1 " + literal,
                b"h SUBSCRIBE " + literal,
                b"i STATUS " + literal + b" (MESSAGES)",
                b"j LIST " + literal + b" *",
                b"k SELECT " + literal,
            ]:
                self.assertEqual(
                    self.s.send(command + b"\r\n"), command[:1] + refused, command
                )
        folders: list[str] = self.successResultOf(self.s.store.listFolders("alice"))
        self.assertEqual(sorted(folders), ["Archive", "INBOX"])
        self.assertEqual(self.successResultOf(self.s.store.subscriptions("alice")), [])

    def test_taggedTextHasNoLineBreak(self) -> None:
        """Whatever text a command answers with, it stays on its own line."""
        self.s.protocol._tagged("t", b"NO", b"a\r\n* OK b\x00c")
        self.assertEqual(self.s.read(), b"t NO a\\r\\n* OK b\\0c\r\n")


class SpecialUseTests(SynchronousTestCase):
    """
    SPECIAL-USE (RFC 6154): the special mailboxes by name, made at login.
    """

    def setUp(self) -> None:
        self.s = Session(self, autoCreate=tuple(SPECIAL_USE))
        self.s.login()

    def test_createdAtLogin(self) -> None:
        """Login makes the special mailboxes; LIST shows their attributes."""
        self.assertEqual(
            self.s.send(b'l LIST "" *\r\n'),
            b'* LIST (\\HasNoChildren \\Archive) "." Archive\r\n'
            b'* LIST (\\HasNoChildren \\Drafts) "." Drafts\r\n'
            b'* LIST (\\HasNoChildren) "." INBOX\r\n'
            b'* LIST (\\HasNoChildren \\Junk) "." Junk\r\n'
            b'* LIST (\\HasNoChildren \\Sent) "." Sent\r\n'
            b'* LIST (\\HasNoChildren \\Trash) "." Trash\r\n'
            b"l OK List completed.\r\n",
        )

    def test_secondLoginKeepsThem(self) -> None:
        """A later login leaves existing special mailboxes and their mail alone."""
        self.s.send(b"a APPEND Sent {5}\r\nx: y\r\n")
        other = Session(self, factory=self.s.factory)
        other.login()
        self.assertIn(b"MESSAGES 1", other.send(b"s STATUS Sent (MESSAGES)\r\n"))

    def test_listSelection(self) -> None:
        """LIST (SPECIAL-USE) lists only them, without children unless asked."""
        self.s.send(b"c CREATE Projects\r\nd CREATE Trash.old\r\n")
        self.assertEqual(
            self.s.send(b'l LIST (SPECIAL-USE) "" "*"\r\n'),
            b'* LIST (\\Archive) "." Archive\r\n'
            b'* LIST (\\Drafts) "." Drafts\r\n'
            b'* LIST (\\Junk) "." Junk\r\n'
            b'* LIST (\\Sent) "." Sent\r\n'
            b'* LIST (\\Trash) "." Trash\r\n'
            b"l OK List completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b'm LIST (SPECIAL-USE) "" "T*" RETURN (CHILDREN)\r\n'),
            b'* LIST (\\HasChildren \\Trash) "." Trash\r\nm OK List completed.\r\n',
        )
        self.assertEqual(
            self.s.send(b'n LIST (X-NONE) "" "*"\r\n'),
            b"n BAD unsupported LIST selection option\r\n",
        )

    def test_createUse(self) -> None:
        """CREATE (USE ...) is accepted for a standard name, else NO [USEATTR]."""
        self.s.send(b"d DELETE Sent\r\n")
        self.assertEqual(
            self.s.send(b"c CREATE Sent (USE (\\Sent))\r\n"),
            b"c OK Create completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b"e CREATE Mine (USE (\\Sent))\r\n"),
            b"e NO [USEATTR] Special-use attributes are given by mailbox name\r\n",
        )
        self.assertIn(
            b"* LIST (\\HasNoChildren \\Sent)", self.s.send(b'l LIST "" Sent\r\n')
        )

    def test_capability(self) -> None:
        """CAPABILITY offers SPECIAL-USE and CREATE-SPECIAL-USE."""
        reply = self.s.send(b"c CAPABILITY\r\n")
        self.assertIn(b" SPECIAL-USE CREATE-SPECIAL-USE ", reply)


class EnableTests(SynchronousTestCase):
    """
    ENABLE (RFC 5161).
    """

    def test_beforeLogin(self) -> None:
        """ENABLE before login is BAD."""
        s = Session(self)
        s.read()
        self.assertEqual(
            s.send(b"e ENABLE CONDSTORE\r\n"),
            b"e BAD Command not valid in this state\r\n",
        )

    def test_enablesWhatIsKnown(self) -> None:
        """ENABLE names what it enabled, once; unknown names are ignored."""
        s = Session(self)
        s.login()
        self.assertEqual(
            s.send(b"e ENABLE X-NONE\r\n"), b"* ENABLED\r\ne OK Enabled.\r\n"
        )
        self.assertEqual(
            s.send(b"e ENABLE utf8=accept X-NONE\r\n"),
            b"* ENABLED UTF8=ACCEPT\r\ne OK Enabled.\r\n",
        )
        self.assertEqual(
            s.send(b"e ENABLE UTF8=ACCEPT\r\n"), b"* ENABLED\r\ne OK Enabled.\r\n"
        )
        self.assertIn(b" ENABLE ", s.send(b"c CAPABILITY\r\n"))

    def test_badArguments(self) -> None:
        """ENABLE without names, or once a mailbox is selected, is BAD."""
        s = Session(self)
        s.login()
        self.assertEqual(
            s.send(b"e ENABLE\r\n"), b"e BAD ENABLE needs capability names\r\n"
        )
        s.send(b"s SELECT INBOX\r\n")
        self.assertEqual(
            s.send(b"f ENABLE X-NONE\r\n"),
            b"f BAD ENABLE is valid only before SELECT\r\n",
        )


class DisciplineTests(SynchronousTestCase):
    """
    The session discipline: no reading past the output watermark or while a
    command waits, deadlines that end in an abort.
    """

    def test_pipelinedNoopStopsAtWatermark(self) -> None:
        """A client pipelining NOOPs and never reading gets a watermark of replies."""
        transport = WatermarkTransport(watermark=1024)
        s = Session(self, transport=transport)
        s.read()
        reply = len(b"n OK NOOP completed.\r\n")
        s.protocol.dataReceived(b"n NOOP\r\n" * 100_000)
        self.assertLessEqual(len(transport.value()), 1024 + reply)
        self.assertEqual(transport.producerState, "paused")
        transport.drain()
        self.assertLessEqual(len(transport.value()), 1024 + reply)
        self.assertGreater(len(transport.value()), 0)
        self.assertEqual(transport.producerState, "paused")

    def test_pipelinedFetchOneAtATime(self) -> None:
        """Pipelined FETCHes of a large message are answered one per drain."""
        transport = WatermarkTransport()
        s = Session(self, transport=transport)
        s.login()
        big = plainMessage("big", ("x" * 76 + "\n") * 3000)
        self.successResultOf(s.store.deliver("alice", big))
        s.send(b"s SELECT INBOX\r\n")
        transport.watermark = 64 * 1024
        s.protocol.dataReceived(b"f FETCH 1 BODY.PEEK[]\r\n" * 100)
        self.assertEqual(transport.value().count(b"* 1 FETCH"), 1)
        self.assertEqual(transport.drain().count(b"f OK Fetch completed."), 1)
        self.assertEqual(transport.value().count(b"* 1 FETCH"), 1)

    def test_fetchBatchesWaitForTheClient(self) -> None:
        """A FETCH 1:* writes its next batch only once the client read the last."""
        transport = WatermarkTransport()
        s = Session(self, transport=transport)
        s.login()
        for i in range(247):
            self.successResultOf(s.store.deliver("alice", plainMessage(f"w{i}")))
        s.send(b"s SELECT INBOX\r\n")
        transport.watermark = 1024
        for command in [b"f FETCH 1:* (FLAGS)", b"g FETCH 1:* (BODY.PEEK[])"]:
            s.protocol.dataReceived(command + b"\r\n")
            counts = [transport.value().count(b" FETCH (")]
            while not transport.value().endswith(b"OK Fetch completed.\r\n"):
                transport.drain()
                counts.append(transport.value().count(b" FETCH ("))
            transport.drain()
            self.assertEqual(counts, [100, 100, 47])

    def test_moveExpungesWaitForTheClient(self) -> None:
        """MOVE 1:* writes its next batch of EXPUNGEs only once the client read."""
        transport = WatermarkTransport()
        s = Session(self, transport=transport)
        s.login()
        for i in range(247):
            self.successResultOf(s.store.deliver("alice", plainMessage(f"w{i}")))
        s.send(b"c CREATE Archive\r\ns SELECT INBOX\r\n")
        transport.watermark = 1024
        s.protocol.dataReceived(b"m MOVE 1:* Archive\r\n")
        counts = [transport.value().count(b" EXPUNGE\r\n")]
        while not transport.value().endswith(b"m OK Move completed.\r\n"):
            transport.drain()
            counts.append(transport.value().count(b" EXPUNGE\r\n"))
        self.assertEqual(counts, [100, 100, 47])

    def test_waitingCommandHoldsReading(self) -> None:
        """While a command waits on the store, nothing more is read or parsed."""
        pending: list[tuple[Deferred[Any], Any, tuple[Any, ...]]] = []

        def later(f: Any, *args: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append((d, f, args))
            return d

        clock = Clock()
        root = self.mktemp()
        store = MaildirStore(root, reactor=clock, runBlocking=later)
        s = Session(self, clock=clock, root=root, store=store)
        s.read()
        s.protocol._tls = True
        self.assertEqual(s.send(b"l LOGIN alice alice-pw\r\nn NOOP\r\n"), b"")
        self.assertEqual(s.transport.producerState, "paused")
        while pending:
            d, f, args = pending.pop(0)
            d.callback(f(*args))
        reply = s.read()
        self.assertIn(b"l OK", reply)
        self.assertTrue(reply.endswith(b"n OK NOOP completed.\r\n"), reply)
        self.assertEqual(s.transport.producerState, "producing")

    def test_preAuthDeadlineAbortsUnclosedConnection(self) -> None:
        """A connection not gone CLOSE_GRACE after its deadline is aborted."""
        transport = WatermarkTransport()
        s = Session(self, transport=transport, preAuthTimeout=5)
        s.read()
        s.clock.advance(5)
        self.assertEqual(s.read(), b"* BYE Autologout; no login in time\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        s.clock.advance(CLOSE_GRACE)
        self.assertTrue(transport.aborted)

    def test_idleDeadlineAbortsBackedUpConnection(self) -> None:
        """An idle deadline aborts at once a session whose output is backed up."""
        transport = WatermarkTransport()
        s = Session(self, transport=transport)
        s.login()
        transport.watermark = 10
        s.protocol.dataReceived(b"n NOOP\r\n")
        s.clock.advance(30 * 60)
        self.assertTrue(transport.aborted)

    def test_stalledStartTLSAborted(self) -> None:
        """A STARTTLS handshake not finished within 10 s is aborted."""
        transport = WatermarkTransport()
        s = Session(self, transport=transport, tls="context")
        s.read()
        self.assertEqual(
            s.send(b"a STARTTLS\r\nb NOOP\r\n"), b"a OK Begin TLS negotiation now.\r\n"
        )
        transport._handshakeDone = False  # type: ignore[attr-defined]
        s.clock.advance(DEFAULT_HANDSHAKE_TIMEOUT)
        self.assertTrue(transport.aborted)


class OptionsTests(SynchronousTestCase):
    """
    The command line and keyword twin.
    """

    def test_options(self) -> None:
        """Options parse the IMAP settings and the mail ones."""
        config = Options()
        config.parseOptions(
            [
                "--maildir-root",
                "/tmp/m",
                "--domain",
                "ex.org",
                "--append-limit",
                "1000",
                "--allow-plaintext-auth",
            ]
        )
        self.assertEqual(
            config.settings,
            IMAPSettings(
                maildirRoot="/tmp/m",
                domains=("ex.org",),
                appendLimit=1000,
                allowPlaintextAuth=True,
            ),
        )
        self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--append-limit", "-1"]
        )

    def test_keywordTwin(self) -> None:
        """imapService listens where told; IMAPSettings refuses a bad append limit."""
        reactor = MemoryReactorClock()
        service = imapService(
            IMAPSettings(
                maildirRoot=self.mktemp(),
                domains=("ex.org",),
                listen=("tcp:1143:interface=127.0.0.1",),
                allowPlaintextAuth=True,
            ),
            reactor=reactor,
        )
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual((reactor.tcpServers[0][0], service.name), (1143, "np-imap"))
        self.assertRaises(ValueError, IMAPSettings, appendLimit=0)

    def test_makeService(self) -> None:
        """makeService listens on the default port."""
        config = Options()
        config.parseOptions(["--state-dir", self.mktemp()])
        reactor = MemoryReactorClock()
        service = makeService(config, reactor=reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            [p[0] for p in reactor.tcpServers], [int(DEFAULT_LISTEN[0].split(":")[1])]
        )

    def test_hostnameInGreeting(self) -> None:
        """--hostname names the host in the greeting of np-imap's sessions."""
        config = Options()
        config.parseOptions(
            ["--state-dir", self.mktemp(), "--hostname", "imap.example.test"]
        )
        reactor = MemoryReactorClock()
        service = makeService(config, reactor=reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        protocol = reactor.tcpServers[0][1].buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 1)
        )
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        greeting = transport.value()
        self.assertTrue(greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 "), greeting)
        self.assertTrue(
            greeting.endswith(b"] imap.example.test np-imap ready.\r\n"), greeting
        )


def serveOverTLS(case: Any) -> None:
    """
    Serve np-imap with STARTTLS on a loopback port for test C{case}, setting
    its C{caPath}, C{root}, C{store}, C{factory} and C{port}.
    """
    from twisted.internet import reactor

    pki = PKI(os.path.abspath(case.mktemp()))
    case.caPath = pki.caPath
    cert, key = pki.serverCertificate("localhost", "127.0.0.1")
    common = ServiceSettings(
        tlsCert=(cert,), tlsKey=(key,), stateDir=os.path.abspath(case.mktemp())
    ).common()
    tls = common.serverTLS(reactor)
    case.root = os.path.abspath(case.mktemp())
    case.store = MaildirStore(case.root, reactor=reactor)
    case.factory = makeFactory(case.root, reactor, store=case.store, tls=tls)
    port = reactor.listenTCP(0, case.factory, interface="127.0.0.1")  # type: ignore[arg-type]
    case.addCleanup(port.stopListening)
    case.port = port.getHost().port  # type: ignore[attr-defined]


class RealClientTests(TestCase):
    """
    np-imap over TCP with imaplib and IMAPClient.
    """

    caPath: str
    root: str
    store: MaildirStore
    factory: IMAPFactory
    port: int

    def setUp(self) -> None:
        serveOverTLS(self)
        # Scanned once so that it has UID 1 before the tests APPEND.
        d = self.store.deliver("alice", MULTIPART)
        return d.addCallback(  # type: ignore[return-value]
            lambda _: self.store.folder("alice").scan(claimNew=False)
        )

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.caPath)

    def test_imaplib(self) -> Deferred[Any]:
        """imaplib: STARTTLS, login, list, select, fetch, search, store, copy, ..."""

        def session() -> list[Any]:
            c = imaplib.IMAP4("127.0.0.1", self.port)
            out: list[Any] = ["LOGINDISABLED" in c.capabilities]
            try:
                c.login("alice", "alice-pw")
            except imaplib.IMAP4.error as e:
                out.append(str(e))
            c.starttls(self.context())
            out.append(c.login("alice", "alice-pw")[0])
            out.append(c.create("Archive")[0])
            out.append(c.list()[1])
            out.append(
                c.append(
                    "INBOX",
                    r"(\Flagged)",
                    None,
                    email.message_from_string("Subject: two\n\nsecond\n").as_bytes(),
                )[0]
            )
            out.append(c.select("INBOX"))
            out.append(c.fetch("1", "(BODY.PEEK[1] BODY.PEEK[2.HEADER])")[1])
            out.append(c.search(None, "FLAGGED"))
            out.append(c.uid("SEARCH", "SUBJECT", "hello"))
            out.append(c.store("1", "+FLAGS", r"(\Deleted)")[1])
            out.append(c.uid("COPY", "2", "Archive")[0])
            out.append(c.expunge()[1])
            out.append(c.status("Archive", "(MESSAGES)")[1])
            out.append(c.logout()[0])
            return out

        def check(out: list[Any]) -> None:
            self.assertTrue(out[0])
            self.assertIn("PRIVACYREQUIRED", out[1])
            self.assertEqual(
                out[2:5],
                [
                    "OK",
                    "OK",
                    [
                        b'(\\HasNoChildren \\Archive) "." Archive',
                        b'(\\HasNoChildren) "." INBOX',
                    ],
                ],
            )
            self.assertEqual(
                out[5:],
                [
                    "OK",
                    ("OK", [b"2"]),
                    [
                        (b"1 (BODY[1] {12}", b"hello\r\nworld"),
                        (
                            b" BODY[2.HEADER] {29}",
                            b"Subject: inner\r\nFrom: x@y\r\n\r\n",
                        ),
                        b")",
                    ],
                    ("OK", [b"2"]),
                    ("OK", [b"1"]),
                    [b"1 (FLAGS (\\Deleted \\Recent))"],
                    "OK",
                    [b"1"],
                    [b"Archive (MESSAGES 1)"],
                    "BYE",
                ],
            )

        return deferToThread(session).addCallback(check)

    def test_imapclientBook(self) -> Deferred[Any]:
        """IMAPClient: Foundations ch. 15 folder listing and message browsing."""

        def session() -> dict[str, Any]:
            c = IMAPClient("127.0.0.1", port=self.port, ssl=False)
            c.starttls(self.context())
            c.login("alice", "alice-pw")
            out: dict[str, Any] = {"folders": c.list_folders()}
            info = c.select_folder("INBOX", readonly=True)
            out["exists"] = info[b"EXISTS"]
            uids = c.search(["ALL"])
            data = c.fetch(uids, ["ENVELOPE", "FLAGS", "RFC822.SIZE", "BODYSTRUCTURE"])
            envelope = data[uids[0]][b"ENVELOPE"]
            out["subject"] = envelope.subject
            out["from"] = (envelope.from_[0].mailbox, envelope.from_[0].host)
            out["size"] = data[uids[0]][b"RFC822.SIZE"]
            out["multipart"] = data[uids[0]][b"BODYSTRUCTURE"].is_multipart
            body = c.fetch(uids, ["BODY[]"])[uids[0]][b"BODY[]"]
            message = email.message_from_bytes(body)
            out["parts"] = [p.get_content_type() for p in message.walk()]
            out["flags"] = c.get_flags(uids)[uids[0]]
            c.logout()
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertEqual(
                out,
                {
                    "folders": [((b"\\HasNoChildren",), b".", "INBOX")],
                    "exists": 1,
                    "subject": b"hello there",
                    "from": (b"alice", b"example.org"),
                    "size": len(MULTIPART),
                    "multipart": True,
                    "parts": [
                        "multipart/mixed",
                        "text/plain",
                        "message/rfc822",
                        "text/plain",
                    ],
                    "flags": (),
                },
            )

        return deferToThread(session).addCallback(check)

    def test_uidValidityAfterDeleteAndCreate(self) -> Deferred[Any]:
        """imaplib: a name deleted and created in one second gets a new UIDVALIDITY."""

        def session() -> list[bytes]:
            c = imaplib.IMAP4("127.0.0.1", self.port)
            c.starttls(self.context())
            c.login("alice", "alice-pw")
            replies = []
            for _ in range(2):
                c.create("Demo")
                replies.append(c.append("Demo", None, None, b"Subject: x\r\n\r\n")[1])
                c.delete("Demo")
            c.logout()
            return [r[0] for r in replies]

        def check(replies: list[bytes]) -> None:
            codes = [re.match(rb"\[APPENDUID (\d+) (\d+)\]", r) for r in replies]
            [(first, uid1), (second, uid2)] = [
                (int(m.group(1)), int(m.group(2))) for m in codes if m
            ]
            self.assertEqual((uid1, uid2), (1, 1))
            self.assertGreater(second, first)
            self.assertLess(second, 2**32)

        return deferToThread(session).addCallback(check)

    def test_listReDoSOverTheWire(self) -> Deferred[Any]:
        """LIST "" "*%*%...x" against a long mailbox name answers quickly."""
        name = "a" * 200

        def session() -> float:
            c = imaplib.IMAP4("127.0.0.1", self.port)
            c.starttls(self.context())
            c.login("alice", "alice-pw")
            c.create(name)
            start = time.monotonic()
            typ, data = c.list('""', '"' + "*%" * 40 + 'x"')
            elapsed = time.monotonic() - start
            # Only INBOX matches (its letters in any case, as in Dovecot).
            assert typ == "OK" and data == [b'(\\HasNoChildren) "." INBOX'], data
            c.logout()
            return elapsed

        return deferToThread(session).addCallback(
            lambda elapsed: self.assertLess(elapsed, 5.0)
        )

    def test_injectionOverTheWire(self) -> Deferred[Any]:
        """STARTTLS with a pipelined LOGIN in one write: only STARTTLS answered."""

        def session() -> bytes:
            with socket.create_connection(("127.0.0.1", self.port)) as raw:
                raw.recv(1000)
                raw.sendall(b"a STARTTLS\r\nb LOGIN alice alice-pw\r\n")
                reply = b""
                while not reply.endswith(b"\r\n"):
                    reply += raw.recv(1000)
                tls = self.context().wrap_socket(raw, server_hostname="localhost")
                tls.sendall(b"c NOOP\r\n")
                answer = b""
                while b"c OK" not in answer:
                    answer += tls.recv(1000)
                return reply + answer

        return deferToThread(session).addCallback(
            self.assertEqual,
            b"a OK Begin TLS negotiation now.\r\nc OK NOOP completed.\r\n",
        )

    def test_imapclientMove(self) -> Deferred[Any]:
        """IMAPClient: move() uses MOVE, the message leaves INBOX for Archive."""

        def session() -> dict[str, Any]:
            c = IMAPClient("127.0.0.1", port=self.port, ssl=False)
            c.starttls(self.context())
            c.login("alice", "alice-pw")
            c.create_folder("Archive")
            out: dict[str, Any] = {"move": c.has_capability("MOVE")}
            c.select_folder("INBOX")
            c.move([1], "Archive")
            out["inbox"] = c.search(["ALL"])
            out["archive"] = c.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"]
            c.logout()
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertEqual(
                out,
                {
                    "move": True,
                    "inbox": [],
                    "archive": 1,
                },
            )

        return deferToThread(session).addCallback(check)

    def test_imapclientSpecialUse(self) -> Deferred[Any]:
        """IMAPClient: find_special_folder finds Sent and Trash by attribute."""
        self.factory.config = evolve(self.factory.config, autoCreate=tuple(SPECIAL_USE))

        def session() -> dict[str, Any]:
            c = IMAPClient("127.0.0.1", port=self.port, ssl=False)
            c.starttls(self.context())
            c.login("alice", "alice-pw")
            out = {
                "sent": c.find_special_folder(SENT),
                "trash": c.find_special_folder(TRASH),
                "special": c.has_capability("SPECIAL-USE"),
            }
            c.logout()
            return out

        return deferToThread(session).addCallback(
            self.assertEqual, {"sent": "Sent", "trash": "Trash", "special": True}
        )

    def test_imaplibEnable(self) -> Deferred[Any]:
        """imaplib: enable() gets OK and ENABLED with what it enabled."""

        def session() -> list[Any]:
            c = imaplib.IMAP4("127.0.0.1", self.port)
            c.starttls(self.context())
            c.login("alice", "alice-pw")
            out = [c.enable("CONDSTORE"), c.response("ENABLED")]
            c.logout()
            return out

        return deferToThread(session).addCallback(
            self.assertEqual, [("OK", [b"Enabled."]), ("ENABLED", [b"CONDSTORE"])]
        )
