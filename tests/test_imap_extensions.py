"""
Tests for np-imap's extensions beyond those of L{tests.test_imap}: keywords
(custom flags), RENAME of INBOX, MULTIAPPEND, UTF8=ACCEPT, LIST-EXTENDED and
LIST-STATUS; in memory, and with imaplib and IMAPClient over TCP.
"""

from __future__ import annotations

import imaplib
import os
import re
import ssl
from typing import Any

from imapclient import IMAPClient
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.mail.imap import server
from netplugins.mail.maildir.files import KEYWORDS
from netplugins.mail.maildir.store import MaildirStore
from tests.test_imap import Session, plainMessage, serveOverTLS


class KeywordTests(SynchronousTestCase):
    """
    Keywords are stored with the Maildir, as Dovecot stores them.
    """

    def setUp(self) -> None:
        self.s = Session(self)
        self.s.login()
        for i in range(2):
            self.successResultOf(self.s.store.deliver("alice", plainMessage(f"m{i}")))
        self.s.send(b"s SELECT INBOX\r\n")

    def test_permanentFlags(self) -> None:
        """SELECT offers \\* in PERMANENTFLAGS; EXAMINE offers nothing."""
        reply = self.s.send(b"s SELECT INBOX\r\n")
        self.assertIn(
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft"
            b" \\*)]",
            reply,
        )
        self.assertIn(b"* OK [PERMANENTFLAGS ()]", self.s.send(b"e EXAMINE INBOX\r\n"))

    def test_storeNewKeyword(self) -> None:
        """A new keyword is announced in FLAGS and PERMANENTFLAGS, then FETCHed."""
        reply = self.s.send(b"t STORE 1 +FLAGS ($Forwarded Work)\r\n")
        self.assertEqual(
            reply,
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded"
            b" Work)\r\n"
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft"
            b" $Forwarded Work \\*)] Flags permitted.\r\n"
            b"* 1 FETCH (FLAGS ($Forwarded Work \\Recent))\r\n"
            b"t OK Store completed.\r\n",
        )
        keywords = os.path.join(self.s.root, "alice", KEYWORDS)
        with open(keywords) as f:
            self.assertEqual(f.read(), "0 $Forwarded\n1 Work\n")
        self.assertEqual(
            sorted(
                n.split(":2,")[1]
                for n in os.listdir(os.path.join(self.s.root, "alice", "cur"))
            ),
            ["", "ab"],
        )
        reply = self.s.send(b"u STORE 1 -FLAGS (Work)\r\n")
        self.assertIn(b"* 1 FETCH (FLAGS ($Forwarded \\Recent))", reply)
        self.assertNotIn(b"* FLAGS", reply)

    def test_keptAcrossSessions(self) -> None:
        """Another session sees the keywords in FLAGS, FETCH and SEARCH KEYWORD."""
        self.s.send(b"t STORE 2 FLAGS (\\Seen Work)\r\n")
        other = Session(self, root=self.s.root)
        other.login()
        reply = other.send(b"s SELECT INBOX\r\n")
        self.assertIn(
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft Work)\r\n", reply
        )
        self.assertIn(
            b"* 2 FETCH (FLAGS (\\Seen Work))", other.send(b"f FETCH 2 FLAGS\r\n")
        )
        self.assertIn(b"* SEARCH 2\r\n", other.send(b"k SEARCH KEYWORD Work\r\n"))
        self.assertIn(b"* SEARCH 1\r\n", other.send(b"k SEARCH UNKEYWORD Work\r\n"))

    def test_otherSessionsTold(self) -> None:
        """A selected session learns of a new keyword at NOOP, FLAGS first."""
        other = Session(self, root=self.s.root)
        other.login()
        other.send(b"s SELECT INBOX\r\n")
        self.s.send(b"t STORE 1 +FLAGS (Later)\r\n")
        reply = other.send(b"n NOOP\r\n")
        self.assertRegex(
            reply,
            rb"\A\* FLAGS \(.* Later\)\r\n\* OK \[PERMANENTFLAGS \(.* Later \\\*\)\]"
            rb".*\r\n\* 1 FETCH \(FLAGS \(Later\)\)\r\n",
        )

    def test_appendAndCopyCarryKeywords(self) -> None:
        """APPEND stores keywords; COPY gives them the target's own letters."""
        self.s.send(b"c CREATE Archive\r\n")
        self.s.send(b"k STORE 1 +FLAGS (First)\r\n")
        self.assertIn(
            b"a OK [APPENDUID",
            self.s.send(b"a APPEND Archive (Second \\Seen) {3}\r\nx\r\n\r\n"),
        )
        self.s.send(b"c COPY 1 Archive\r\n")
        reply = self.s.send(b"s SELECT Archive\r\n")
        self.assertIn(b"Second First)", reply)
        reply = self.s.send(b"f FETCH 1:* FLAGS\r\n")
        self.assertIn(b"* 1 FETCH (FLAGS (\\Seen Second))", reply)
        self.assertIn(b"* 2 FETCH (FLAGS (First))", reply)

    def test_bounds(self) -> None:
        """26 keywords a mailbox (then NO [LIMIT], \\* gone); bad ones are BAD."""
        names = b" ".join(b"k%d" % i for i in range(26))
        reply = self.s.send(b"t STORE 1 +FLAGS (" + names + b")\r\n")
        self.assertIn(b"t OK", reply)
        self.assertNotIn(b"\\*)]", reply)
        self.assertIn(
            b"u NO [LIMIT]", self.s.send(b"u STORE 2 +FLAGS (one-too-many)\r\n")
        )
        self.assertIn(b"v OK", self.s.send(b"v STORE 2 +FLAGS (k25)\r\n"))
        long = b"x" * 101
        self.assertIn(b"w BAD", self.s.send(b"w STORE 1 +FLAGS (" + long + b")\r\n"))
        self.assertIn(b"x BAD", self.s.send(b"x STORE 1 +FLAGS (\\Bogus)\r\n"))
        self.assertIn(b"y BAD", self.s.send(b'y STORE 1 +FLAGS ("a b")\r\n'))


class RenameInboxTests(SynchronousTestCase):
    """
    RENAME INBOX moves its messages to a new mailbox; INBOX stays, empty.
    """

    def test_renameInbox(self) -> None:
        """The messages move with their flags and keywords; INBOX is empty."""
        s = Session(self)
        s.login()
        for i in range(3):
            self.successResultOf(s.store.deliver("alice", plainMessage(f"m{i}")))
        s.send(b"s SELECT INBOX\r\n")
        s.send(b"t STORE 2 +FLAGS (\\Flagged Work)\r\n")
        s.send(b"u UNSELECT\r\n")
        self.successResultOf(s.store.deliver("alice", plainMessage("m3")))
        self.assertEqual(
            s.send(b"r RENAME inbox Old\r\n"), b"r OK Rename completed.\r\n"
        )
        self.assertIn(b"* 0 EXISTS", s.send(b"s SELECT INBOX\r\n"))
        reply = s.send(b"e EXAMINE Old\r\n")
        self.assertIn(b"* 4 EXISTS", reply)
        self.assertIn(b"* OK [UIDNEXT 5]", reply)
        reply = s.send(b"f FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
        self.assertEqual(
            re.findall(rb"Subject: (m\d)", reply), [b"m0", b"m1", b"m2", b"m3"]
        )
        self.assertIn(b"* 2 FETCH (FLAGS (\\Flagged Work)", reply)
        self.assertIn(b"[ALREADYEXISTS]", s.send(b"r RENAME INBOX Old\r\n"))
        self.assertIn(b"[ALREADYEXISTS]", s.send(b"r RENAME Old INBOX\r\n"))
        self.assertIn(b"t OK", s.send(b"t RENAME INBOX Old2\r\n"))
        self.assertIn(b"* 0 EXISTS", s.send(b"e EXAMINE Old2\r\n"))


class MultiappendTests(SynchronousTestCase):
    """
    MULTIAPPEND (RFC 3502): several messages in one APPEND, all or nothing.
    """

    def setUp(self) -> None:
        self.s = Session(self, appendLimit=100)
        self.s.login()
        self.s.send(b"c CREATE Box\r\n")

    def status(self) -> bytes:
        return self.s.send(b"s STATUS Box (MESSAGES UIDNEXT)\r\n").split(b"\r\n")[0]

    def test_capability(self) -> None:
        """CAPABILITY lists MULTIAPPEND."""
        self.assertIn(b" MULTIAPPEND ", self.s.send(b"c CAPABILITY\r\n"))

    def test_multiappend(self) -> None:
        """Each message gets its flags and date; APPENDUID names the UIDs in order."""
        self.s.send(b"a APPEND Box (\\Seen) {5}\r\n")
        reply = self.s.send(
            b'first (\\Flagged Work) "04-Oct-2024 10:00:00 +0000" {6}\r\n'
        )
        self.assertEqual(reply, b"+ Ready for literal data\r\n")
        reply = self.s.send(b"second {5+}\r\nthird\r\n")
        self.assertRegex(
            reply, rb"\Aa OK \[APPENDUID \d+ 1:3\] Append completed.\r\n\Z"
        )
        self.s.send(b"e EXAMINE Box\r\n")
        reply = self.s.send(b"f FETCH 1:* (FLAGS INTERNALDATE BODY[])\r\n")
        self.assertIn(b"* 1 FETCH (FLAGS (\\Seen) ", reply)
        self.assertIn(
            b'* 2 FETCH (FLAGS (\\Flagged Work) INTERNALDATE "04-Oct-2024 10:00:00'
            b' +0000" BODY[] {6}\r\nsecond)',
            reply,
        )
        self.assertIn(b"BODY[] {5}\r\nthird)", reply)

    def test_allOrNothing(self) -> None:
        """A bad message, or keywords over the limit, stores none of them."""
        before = self.status()
        reply = self.s.send(b"a APPEND Box {5+}\r\nfirst {3+}\r\nx\x00y\r\n")
        self.assertIn(b"a BAD", reply)
        reply = self.s.send(b'a APPEND Box {5+}\r\nfirst "32-Oct-2024" {3+}\r\nxyz\r\n')
        self.assertIn(b"a BAD", reply)
        many = b" ".join(b"k%d" % i for i in range(20))
        more = b" ".join(b"j%d" % i for i in range(10))
        reply = self.s.send(
            b"a APPEND Box ("
            + many
            + b") {5+}\r\nfirst ("
            + more
            + b") {3+}\r\nxyz\r\n"
        )
        self.assertIn(b"a NO [LIMIT]", reply)
        self.assertEqual(self.status(), before)
        self.assertIn(b"(MESSAGES 0 UIDNEXT 1)", before)
        self.assertIn(
            b"[TRYCREATE]", self.s.send(b"a APPEND Nowhere {1+}\r\nx {1+}\r\ny\r\n")
        )

    def test_limits(self) -> None:
        """Messages within APPENDLIMIT, twice it together, else NO before reading."""
        reply = self.s.send(b"a APPEND Box {100+}\r\n" + b"x" * 100 + b" {60}\r\n")
        self.assertEqual(reply, b"+ Ready for literal data\r\n")
        reply = self.s.send(b"y" * 60 + b" {41}\r\n")
        self.assertEqual(reply, b"a NO [TOOBIG] Messages too large together\r\n")
        self.assertIn(
            b"b NO [TOOBIG] Message too large", self.s.send(b"b APPEND Box {101}\r\n")
        )
        self.assertIn(b"(MESSAGES 0 ", self.status())

    def test_count(self) -> None:
        """At most MAX_MULTIAPPEND messages in one APPEND."""
        self.patch(server, "MAX_MULTIAPPEND", 3)
        reply = self.s.send(b"a APPEND Box {1+}\r\nx {1+}\r\ny {1+}\r\nz {1}\r\n")
        self.assertEqual(reply, b"a NO [LIMIT] Too many messages in one APPEND\r\n")
        self.assertIn(b"(MESSAGES 0 ", self.status())


class UTF8AcceptTests(SynchronousTestCase):
    """
    UTF8=ACCEPT (RFC 6855): mailbox names in UTF-8 once enabled.
    """

    def setUp(self) -> None:
        self.s = Session(self)
        self.s.login()

    def test_namesBothWays(self) -> None:
        """Names made in UTF-8 are stored as modified UTF-7, which others see."""
        self.assertIn(b" UTF8=ACCEPT ", self.s.send(b"c CAPABILITY\r\n"))
        self.s.send(b"e ENABLE UTF8=ACCEPT\r\n")
        self.assertIn(b"c OK", self.s.send('c CREATE "Entwürfe"\r\n'.encode()))
        self.assertIn(b"d OK", self.s.send('d CREATE "日本語.台北"\r\n'.encode()))
        self.assertIn(b"d OK", self.s.send(b'd CREATE "a&b"\r\n'))
        folders = os.listdir(os.path.join(self.s.root, "alice"))
        self.assertEqual(
            sorted(f for f in folders if f.startswith(".")),
            [".&ZeVnLIqe-.&U,BTFw-", ".Entw&APw-rfe", ".a&-b"],
        )
        reply = self.s.send(b'l LIST "" "*"\r\n')
        self.assertIn('* LIST (\\HasNoChildren) "." "Entwürfe"\r\n'.encode(), reply)
        self.assertIn(
            '* LIST (\\Noselect \\HasChildren) "." "日本語"\r\n'.encode(), reply
        )
        self.assertIn(b'* LIST (\\HasNoChildren) "." a&b\r\n', reply)
        reply = self.s.send('l LIST "" "日本語.%"\r\n'.encode())
        self.assertIn('"日本語.台北"\r\nl OK'.encode(), reply)
        reply = self.s.send('s STATUS "Entwürfe" (MESSAGES)\r\n'.encode())
        self.assertIn('* STATUS "Entwürfe" (MESSAGES 0)'.encode(), reply)
        self.assertIn(b"s OK", self.s.send('s SELECT "Entwürfe"\r\n'.encode()))
        other = Session(self, root=self.s.root)
        other.login()
        reply = other.send(b'l LIST "" *\r\n')
        self.assertIn(b'"." Entw&APw-rfe\r\n', reply)
        self.assertIn(b'"." a&-b\r\n', reply)
        self.assertIn(b"OK", other.send(b"s SELECT Entw&APw-rfe\r\n"))

    def test_badUTF8(self) -> None:
        """A name that is not UTF-8 is BAD."""
        self.s.send(b"e ENABLE UTF8=ACCEPT\r\n")
        self.assertIn(b"c BAD", self.s.send(b'c CREATE "\xff\xfe"\r\n'))


class ListExtendedTests(SynchronousTestCase):
    """
    LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819).
    """

    def setUp(self) -> None:
        self.s = Session(self)
        self.s.login()
        self.s.send(b"c CREATE Work.Done\r\nc CREATE Sent\r\n")
        self.s.send(b"u SUBSCRIBE Work.Done\r\nu SUBSCRIBE Gone\r\n")
        for i in range(2):
            self.successResultOf(self.s.store.deliver("alice", plainMessage(f"m{i}")))

    def test_capability(self) -> None:
        """CAPABILITY lists LIST-EXTENDED and LIST-STATUS."""
        reply = self.s.send(b"c CAPABILITY\r\n")
        self.assertIn(b" LIST-EXTENDED LIST-STATUS ", reply)

    def test_subscribed(self) -> None:
        """(SUBSCRIBED) lists subscriptions, \\NonExistent ones too; CHILDINFO."""
        self.assertEqual(
            self.s.send(b'l LIST (SUBSCRIBED) "" *\r\n'),
            b'* LIST (\\NonExistent \\Subscribed) "." Gone\r\n'
            b'* LIST (\\Subscribed) "." Work.Done\r\n'
            b"l OK List completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b'l LIST (SUBSCRIBED RECURSIVEMATCH) "" %\r\n'),
            b'* LIST (\\NonExistent \\Subscribed) "." Gone\r\n'
            b'* LIST (\\NonExistent) "." Work (CHILDINFO ("SUBSCRIBED"))\r\n'
            b"l OK List completed.\r\n",
        )

    def test_patternsAndReturns(self) -> None:
        """Several patterns, RETURN (SUBSCRIBED CHILDREN SPECIAL-USE)."""
        self.assertEqual(
            self.s.send(
                b'l LIST "" (INBOX Work Sent)'
                b" RETURN (SUBSCRIBED CHILDREN SPECIAL-USE)\r\n"
            ),
            b'* LIST (\\HasNoChildren) "." INBOX\r\n'
            b'* LIST (\\HasNoChildren \\Sent) "." Sent\r\n'
            b'* LIST (\\NonExistent \\HasChildren) "." Work\r\n'
            b"l OK List completed.\r\n",
        )
        self.assertIn(b"l BAD", self.s.send(b'l LIST (RECURSIVEMATCH) "" *\r\n'))
        self.assertIn(b"l BAD", self.s.send(b'l LIST "" * RETURN (STATUS ())\r\n'))
        self.assertIn(b"l BAD", self.s.send(b'l LIST "" () \r\n'))

    def test_status(self) -> None:
        """RETURN (STATUS ...) follows each selectable mailbox's LIST with STATUS."""
        self.assertEqual(
            self.s.send(b'l LIST "" * RETURN (STATUS (MESSAGES UNSEEN))\r\n'),
            b'* LIST () "." INBOX\r\n'
            b"* STATUS INBOX (MESSAGES 2 UNSEEN 2)\r\n"
            b'* LIST () "." Sent\r\n'
            b"* STATUS Sent (MESSAGES 0 UNSEEN 0)\r\n"
            b'* LIST (\\NonExistent) "." Work\r\n'
            b'* LIST () "." Work.Done\r\n'
            b"* STATUS Work.Done (MESSAGES 0 UNSEEN 0)\r\n"
            b"l OK List completed.\r\n",
        )


class ExtensionClientTests(TestCase):
    """
    The extensions with imaplib and IMAPClient over TCP (STARTTLS).
    """

    caPath: str
    root: str
    store: MaildirStore
    factory: Any
    port: int

    def setUp(self) -> None:
        serveOverTLS(self)
        return self.store.deliver(  # type: ignore[return-value]
            "alice", plainMessage("hello")
        )

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.caPath)

    def imapclient(self) -> IMAPClient:
        c = IMAPClient("127.0.0.1", port=self.port, ssl=False)
        c.starttls(self.context())
        c.login("alice", "alice-pw")
        return c

    def test_imapclientKeywords(self) -> Deferred[Any]:
        """IMAPClient: add_flags with a keyword, get_flags and a new session see it."""

        def session() -> dict[str, Any]:
            c = self.imapclient()
            selected = c.select_folder("INBOX")
            out: dict[str, Any] = {"permanent": selected[b"PERMANENTFLAGS"]}
            c.add_flags([1], ["$Label1", "\\Seen"])
            c.logout()
            c = self.imapclient()
            selected = c.select_folder("INBOX")
            out["flags"] = selected[b"FLAGS"]
            out["fetched"] = c.get_flags([1])
            out["search"] = c.search(["KEYWORD", "$Label1"])
            c.logout()
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertIn(b"\\*", out["permanent"])
            self.assertIn(b"$Label1", out["flags"])
            self.assertEqual(out["fetched"], {1: (b"\\Seen", b"$Label1")})
            self.assertEqual(out["search"], [1])

        return deferToThread(session).addCallback(check)

    def test_imaplibRenameInbox(self) -> Deferred[Any]:
        """imaplib: rename('INBOX', ...) empties INBOX into the new mailbox."""

        def session() -> list[Any]:
            c = imaplib.IMAP4("127.0.0.1", self.port)
            c.starttls(self.context())
            c.login("alice", "alice-pw")
            out: list[Any] = [c.rename("INBOX", "Saved")[0]]
            out.append(c.select("INBOX"))
            out.append(c.select("Saved", readonly=True))
            c.logout()
            return out

        return deferToThread(session).addCallback(
            self.assertEqual, ["OK", ("OK", [b"0"]), ("OK", [b"1"])]
        )

    def test_imapclientMultiappend(self) -> Deferred[Any]:
        """IMAPClient: multiappend() stores its messages in order with their flags."""

        def session() -> dict[str, Any]:
            c = self.imapclient()
            c.create_folder("Box")
            out: dict[str, Any] = {"capability": c.has_capability("MULTIAPPEND")}
            out["reply"] = c.multiappend(
                "Box",
                [
                    {"msg": plainMessage("one"), "flags": ["\\Seen"]},
                    plainMessage("two"),
                    {"msg": plainMessage("three"), "flags": ["Work"]},
                ],
            )
            c.select_folder("Box", readonly=True)
            fetched = c.fetch(
                [1, 2, 3], ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]
            )
            out["messages"] = [
                (m[b"FLAGS"], m[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip())
                for _, m in sorted(fetched.items())
            ]
            c.logout()
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertTrue(out["capability"])
            self.assertRegex(repr(out["reply"]), r"\[APPENDUID \d+ 1:3\]")
            self.assertEqual(
                out["messages"],
                [
                    ((b"\\Seen",), b"Subject: one"),
                    ((), b"Subject: two"),
                    ((b"Work",), b"Subject: three"),
                ],
            )

        return deferToThread(session).addCallback(check)

    def test_imaplibUTF8(self) -> Deferred[Any]:
        """imaplib: UTF-8 names after enable('UTF8=ACCEPT'); others see UTF-7."""

        def session() -> list[Any]:
            c = imaplib.IMAP4("127.0.0.1", self.port)
            c.starttls(self.context())
            c.login("alice", "alice-pw")
            out: list[Any] = [c.enable("UTF8=ACCEPT")[0], c.utf8_enabled]
            out.append(c.create('"Brouillons été"')[0])
            out.append(c.list('""', '"Brouillons*"')[1])
            out.append(c.select('"Brouillons été"')[0])
            c.logout()
            c = imaplib.IMAP4("127.0.0.1", self.port)
            c.starttls(self.context())
            c.login("alice", "alice-pw")
            out.append(c.list('""', '"Brouillons*"')[1])
            c.logout()
            return out

        return deferToThread(session).addCallback(
            self.assertEqual,
            [
                "OK",
                True,
                "OK",
                ['(\\HasNoChildren) "." "Brouillons été"'.encode()],
                "OK",
                [b'(\\HasNoChildren) "." "Brouillons &AOk-t&AOk-"'],
            ],
        )

    def test_listStatusClients(self) -> Deferred[Any]:
        """IMAPClient's list_sub_folders; imaplib's list() with RETURN (STATUS)."""

        def session() -> dict[str, Any]:
            c = self.imapclient()
            c.create_folder("Work")
            c.subscribe_folder("Work")
            out: dict[str, Any] = {"lsub": c.list_sub_folders()}
            c.logout()
            i = imaplib.IMAP4("127.0.0.1", self.port)
            i.starttls(self.context())
            i.login("alice", "alice-pw")
            out["list"] = i.list('""', "* RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))")
            out["status"] = i.response("STATUS")
            i.logout()
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertEqual(out["lsub"], [((), b".", "Work")])
            self.assertEqual(
                out["list"], ("OK", [b'() "." INBOX', b'(\\Subscribed) "." Work'])
            )
            self.assertEqual(
                out["status"],
                (
                    "STATUS",
                    [b"INBOX (MESSAGES 1 UNSEEN 1)", b"Work (MESSAGES 0 UNSEEN 0)"],
                ),
            )

        return deferToThread(session).addCallback(check)
