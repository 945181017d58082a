"""
Tests for np-imap's SORT and THREAD (RFC 5256): base subjects, orders and
threads as pure functions, the commands in memory, IMAPClient's sort() and
thread() over TCP, and the same commands against Dovecot.
"""

from __future__ import annotations

import os
from typing import Any

from imapclient import IMAPClient
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.mail.imap.fetch import splitEntity
from netplugins.mail.imap.mailboxes import SPECIAL_USE
from netplugins.mail.imap.parse import IMAPSyntaxError
from netplugins.mail.imap.sort import (
    MAX_REFERENCES,
    SortMessage,
    baseSubject,
    parseSortCriteria,
    sortFields,
    sortMessages,
)
from netplugins.mail.imap.thread import formatThreads, thread
from netplugins.mail.maildir.store import MaildirStore
from tests import dovecot, test_imap_dovecot
from tests.dovecot import Dovecot
from tests.test_imap import Session, makeFactory, serveOverTLS


def message(
    subject: str | None,
    date: str | None = "Tue, 1 Oct 2024 10:00:00 +0000",
    messageId: str | None = None,
    references: str | None = None,
    inReplyTo: str | None = None,
    sender: str = "carol@example.net",
    to: str = "alice@example.org",
    cc: str | None = None,
    body: str = "body\r\n",
) -> bytes:
    """
    A message with the given header fields (those C{None} left out).
    """
    fields = [("From", sender), ("To", to), ("Cc", cc), ("Subject", subject)]
    fields += [("Date", date), ("Message-ID", messageId)]
    fields += [("References", references), ("In-Reply-To", inReplyTo)]
    header = "".join(f"{k}: {v}\r\n" for k, v in fields if v is not None)
    return (header + "\r\n" + body).encode()


#: Messages exercising the base subject, dates, addresses and references.
MESSAGES = [
    message("Hello", messageId="<1@x>", sender="Bob <bob@example.org>"),
    message(
        "Re: hello",
        date="Tue, 1 Oct 2024 09:00:00 -0200",
        messageId="<2@x>",
        references="<1@x>",
        sender="alice@example.org",
        cc="Zed <zed@example.org>",
    ),
    message(
        "[list] Fwd: Other",
        date="Wed, 2 Oct 2024 10:00:00 +0000",
        messageId="<3@x>",
        sender="zed@example.org",
        to="bob@example.org",
        body="a longer body\r\n" * 20,
    ),
    message(
        "other (fwd)",
        date="Mon, 30 Sep 2024 10:00:00 +0000",
        messageId="<4@x>",
        inReplyTo="<missing@x>",
        cc="amy@example.org",
    ),
    message(None, date=None, messageId="<5@x>", references="<1@x> <2@x>"),
    message(
        "Re: Hello",
        date="Thu, 3 Oct 2024 10:00:00 +0000",
        messageId="<6@x>",
        references="<gone@x>",
    ),
    message(
        "=?utf-8?q?caf=C3=A9?=",
        date="Thu, 3 Oct 2024 11:00:00 +0000",
        messageId="<7@x>",
        references="<gone@x>",
    ),
    message("Hello", date="Fri, 4 Oct 2024 10:00:00 +0000", messageId="<1@x>"),
    message("[fwd: Re: unrelated]", date="Fri, 4 Oct 2024 11:00:00 +0000"),
]

#: Their arrival times, the first the latest (so ARRIVAL differs from DATE).
ARRIVALS = [f"{28 - i:02d}-Sep-2024 10:00:00 +0000" for i in range(len(MESSAGES))]


class BaseSubjectTests(SynchronousTestCase):
    """
    RFC 5256 section 2.1.
    """

    def test_examples(self) -> None:
        """Leaders, blobs, trailers and [fwd: ] wrappers go; replies are told."""
        cases = {
            "Hello": ("Hello", False),
            "Re: hello": ("hello", True),
            "RE:  Re: Fwd:\tHello  ": ("Hello", True),
            "[list] Re: hello (fwd)": ("hello", True),
            "[a][b] Re: x": ("x", True),
            "Re [blob]: x": ("x", True),
            "[a] x": ("x", False),
            "[only blob]": ("[only blob]", False),
            "[fwd: Re: wrapped]": ("wrapped", True),
            "Re:": ("", True),
            "  ": ("", False),
            "Fw: x": ("x", True),
            "Fwd x": ("Fwd x", False),
        }
        self.assertEqual({k: baseSubject(k) for k in cases}, cases)

    def test_bounded(self) -> None:
        """A subject of many blobs is read only up to its bound."""
        subject, _ = baseSubject("[x]" * 100_000 + " tail")
        self.assertLessEqual(len(subject), 4096)

    def test_fields(self) -> None:
        """Sort fields: case-mapped keys, Date in UTC, references kept in order."""
        entity = splitEntity(MESSAGES[1])
        fields = sortFields(entity, 0.0)
        self.assertEqual(
            (fields.subject, fields.reply, fields.fromKey, fields.ccKey),
            ("HELLO", True, "ALICE", "ZED"),
        )
        self.assertEqual(fields.sent, 1727780400.0)
        self.assertEqual(fields.references, (b"<1@x>",))
        self.assertEqual(sortFields(splitEntity(MESSAGES[4]), 7.0).sent, 7.0)
        refs = " ".join(f"<{i}@x>" for i in range(500))
        many = sortFields(splitEntity(message("x", references=refs)), 0.0)
        self.assertEqual(len(many.references), MAX_REFERENCES)
        self.assertEqual(many.references[-1], b"<499@x>")


def sortable(messages: list[bytes]) -> list[SortMessage]:
    return [
        SortMessage(n, sortFields(splitEntity(m), float(-n)), len(m), float(-n))
        for n, m in enumerate(messages, 1)
    ]


class OrderTests(SynchronousTestCase):
    """
    SORT's criteria and orders, THREAD's algorithms and format.
    """

    def test_criteria(self) -> None:
        """REVERSE applies to the key after it; bad lists are BAD."""
        self.assertEqual(
            parseSortCriteria(["reverse", "DATE", "subject"]),
            [("DATE", True), ("SUBJECT", False)],
        )
        for bad in ([], ["REVERSE"], ["BOGUS"], ["REVERSE", "REVERSE", "DATE"], "DATE"):
            self.assertRaises(IMAPSyntaxError, parseSortCriteria, bad)

    def test_sort(self) -> None:
        """Keys in order, ties in mailbox order, REVERSE per key."""
        messages = sortable(MESSAGES)
        self.assertEqual(
            sortMessages(messages, [("SUBJECT", False)]), [5, 7, 1, 2, 6, 8, 3, 4, 9]
        )
        self.assertEqual(
            sortMessages(messages, [("SUBJECT", True), ("DATE", True)]),
            [9, 3, 4, 8, 6, 2, 1, 7, 5],
        )
        self.assertEqual(
            sortMessages(messages, [("ARRIVAL", False)]), [9, 8, 7, 6, 5, 4, 3, 2, 1]
        )

    def test_threads(self) -> None:
        """REFERENCES and ORDEREDSUBJECT threads in RFC 5256's format."""
        messages = sortable(MESSAGES)
        self.assertEqual(
            formatThreads(thread("ORDEREDSUBJECT", messages)),
            b"(5)(4 3)(1 (2)(6)(8))(7)(9)",
        )
        self.assertEqual(
            formatThreads(thread("REFERENCES", messages)),
            b"((4)(3))((1 2 5)(6)(7)(8))(9)",
        )
        self.assertEqual(formatThreads([]), b"")

    def test_loopsAndDepth(self) -> None:
        """Reference loops are not followed; a 5000-deep chain formats flat."""
        looped = [
            message("a", messageId="<a@x>", references="<b@x>"),
            message("b", messageId="<b@x>", references="<a@x>"),
        ]
        self.assertIn(
            formatThreads(thread("REFERENCES", sortable(looped))), [b"(1 2)", b"(2 1)"]
        )
        chain = [
            message(f"s{i}", messageId=f"<{i}@x>", references=f"<{i - 1}@x>")
            for i in range(5000)
        ]
        out = formatThreads(thread("REFERENCES", sortable(chain)))
        self.assertEqual(out.count(b"("), 1)


class SortCommandTests(SynchronousTestCase):
    """
    The commands on a session in memory.
    """

    def setUp(self) -> None:
        self.s = Session(self)
        self.s.login()
        for data, arrival in zip(MESSAGES, ARRIVALS, strict=True):
            reply = self.s.send(
                b'a APPEND INBOX "%s" {%d+}\r\n%s\r\n'
                % (arrival.encode(), len(data), data)
            )
            assert b"a OK" in reply, reply
        self.s.send(b"s SELECT INBOX\r\n")

    def test_capability(self) -> None:
        """CAPABILITY offers SORT and both THREAD algorithms."""
        reply = self.s.send(b"c CAPABILITY\r\n")
        for name in (b" SORT", b" THREAD=ORDEREDSUBJECT", b" THREAD=REFERENCES"):
            self.assertIn(name, reply)

    def test_sort(self) -> None:
        """SORT and UID SORT with search keys answer numbers in order."""
        self.assertEqual(
            self.s.send(b"t SORT (SUBJECT) UTF-8 ALL\r\n"),
            b"* SORT 5 7 1 2 6 8 3 4 9\r\nt OK Sort completed.\r\n",
        )
        self.assertIn(
            b"* SORT 8 6 2 1\r\n",
            self.s.send(b"t SORT (REVERSE DATE) UTF-8 SUBJECT hello\r\n"),
        )
        self.s.send(b"x STORE 2:4 +FLAGS (\\Deleted)\r\n")
        self.s.send(b"x EXPUNGE\r\n")
        self.assertIn(
            b"* SORT 9 8 7 6 5 1\r\n",
            self.s.send(b"t UID SORT (ARRIVAL) UTF-8 ALL\r\n"),
        )

    def test_thread(self) -> None:
        """THREAD REFERENCES and UID THREAD ORDEREDSUBJECT."""
        self.assertEqual(
            self.s.send(b"t THREAD REFERENCES UTF-8 ALL\r\n"),
            b"* THREAD ((4)(3))((1 2 5)(6)(7)(8))(9)\r\nt OK Thread completed.\r\n",
        )
        self.assertIn(
            b"* THREAD (1 2)\r\n",
            self.s.send(b"t UID THREAD ORDEREDSUBJECT US-ASCII UID 1:2\r\n"),
        )
        self.assertIn(
            b"* THREAD\r\n", self.s.send(b"t THREAD REFERENCES UTF-8 DELETED\r\n")
        )

    def test_errors(self) -> None:
        """Bad criteria, algorithms and arguments are BAD; a charset is NO."""
        for line in (
            b"t SORT (BOGUS) UTF-8 ALL",
            b"t SORT SUBJECT UTF-8 ALL",
            b"t SORT (SUBJECT) UTF-8",
            b"t THREAD REFS UTF-8 ALL",
            b"t THREAD REFERENCES UTF-8 BOGUS",
        ):
            self.assertIn(b"t BAD", self.s.send(line + b"\r\n"), line)
        self.assertIn(
            b"t NO [BADCHARSET (UTF-8 US-ASCII)]",
            self.s.send(b"t SORT (SUBJECT) KOI8-R ALL\r\n"),
        )
        self.s.send(b"u UNSELECT\r\n")
        self.assertIn(b"t BAD", self.s.send(b"t SORT (SUBJECT) UTF-8 ALL\r\n"))

    def test_cached(self) -> None:
        """A second SORT reads no message: the fields are kept."""
        self.s.send(b"t SORT (SUBJECT) UTF-8 ALL\r\n")
        reads: list[int] = []
        folder: Any = self.s.protocol.selected.folder
        original = type(folder)._blockingReadMany

        def readMany(f: Any, messages: Any) -> Any:
            reads.append(len(messages))
            return original(f, messages)

        self.patch(type(folder), "_blockingReadMany", readMany)
        self.s.send(b"t SORT (FROM) UTF-8 ALL\r\n")
        self.s.send(b"t THREAD REFERENCES UTF-8 ALL\r\n")
        self.assertEqual(reads, [])
        self.s.send(b"t SORT (FROM) UTF-8 BODY body\r\n")
        self.assertEqual(reads, [len(MESSAGES)])


class SortClientTests(TestCase):
    """
    IMAPClient's sort() and thread() over TCP (STARTTLS).
    """

    caPath: str
    root: str
    store: MaildirStore
    factory: Any
    port: int

    def setUp(self) -> None:
        serveOverTLS(self)

    def test_imapclient(self) -> Deferred[Any]:
        """IMAPClient: sort() and thread() after appending the messages."""
        import ssl

        def session() -> tuple[Any, Any, Any]:
            c = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
            c.starttls(ssl.create_default_context(cafile=self.caPath))
            c.login("alice", "alice-pw")
            try:
                for data in MESSAGES:
                    c.append("INBOX", data)
                c.select_folder("INBOX")
                return (
                    c.capabilities(),
                    c.sort(["SUBJECT"]),
                    c.thread("REFERENCES"),
                )
            finally:
                c.logout()

        def check(out: tuple[Any, Any, Any]) -> None:
            capabilities, order, threads = out
            self.assertIn(b"THREAD=REFERENCES", capabilities)
            self.assertEqual(order, [5, 7, 1, 2, 6, 8, 3, 4, 9])
            self.assertEqual(
                threads,
                (((4,), (3,)), ((1, 2, 5), (6,), (7,), (8,)), (9,)),
            )

        return deferToThread(session).addCallback(check)


#: The differential's session: the messages, then SORT and THREAD.
SCRIPT: list[str | tuple[str, bytes]] = [
    *((f'APPEND INBOX "{a}" ', m) for m, a in zip(MESSAGES, ARRIVALS, strict=True)),
    "SELECT INBOX",
    "STORE 2,4 +FLAGS (\\Seen)",
    "SORT (SUBJECT) UTF-8 ALL",
    "SORT (REVERSE SUBJECT) UTF-8 ALL",
    "SORT (DATE) UTF-8 ALL",
    "SORT (REVERSE DATE) UTF-8 ALL",
    "SORT (ARRIVAL) UTF-8 ALL",
    "SORT (FROM) US-ASCII ALL",
    "SORT (TO SUBJECT) UTF-8 ALL",
    "SORT (CC) UTF-8 ALL",
    "SORT (SIZE) UTF-8 ALL",
    "SORT (REVERSE SIZE DATE) UTF-8 SEEN",
    "SORT (DATE) UTF-8 SUBJECT hello",
    "UID SORT (SUBJECT DATE) UTF-8 2:*",
    "SORT (BOGUS) UTF-8 ALL",
    "THREAD ORDEREDSUBJECT UTF-8 ALL",
    "THREAD REFERENCES UTF-8 ALL",
    "UID THREAD REFERENCES UTF-8 ALL",
    "THREAD REFERENCES UTF-8 FROM bob",
    "THREAD REFERENCES UTF-8 DELETED",
    "THREAD BOGUS UTF-8 ALL",
]


def compareWithDovecot(
    case: TestCase,
    script: list[str | tuple[str, bytes]],
    config: str = "",
    quotaStorage: int | None = None,
) -> Deferred[None]:
    """
    Run C{script} (L{test_imap_dovecot.runScript}) against a private Dovecot
    given C{config} too and against np-imap, and have C{case} compare each
    step's normalised answers.
    """
    from twisted.internet import reactor

    original = dovecot._config
    extra = test_imap_dovecot.SPECIAL_USE_CONFIG + config
    case.patch(dovecot, "_config", lambda *a: original(*a) + extra)
    server = Dovecot({"alice": test_imap_dovecot.PASSWORD})
    case.addCleanup(server.stop)
    server.start()
    root = os.path.abspath(case.mktemp())
    factory = makeFactory(
        root,
        reactor,
        store=MaildirStore(root, reactor=reactor, quotaStorage=quotaStorage),
        allowPlaintextAuth=True,
        autoCreate=tuple(SPECIAL_USE),
    )
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[arg-type]
    case.addCleanup(port.stopListening)
    ours = port.getHost().port  # type: ignore[attr-defined]

    def both() -> tuple[list[list[Any]], list[list[Any]]]:
        return (
            test_imap_dovecot.runScript(server.port, script),
            test_imap_dovecot.runScript(ours, script),
        )

    def compare(results: tuple[list[list[Any]], list[list[Any]]]) -> None:
        theirs, mine = results
        steps = ["LOGIN"] + [s if isinstance(s, str) else s[0] for s in script]
        for step, expected, got in zip(steps, theirs, mine, strict=True):
            case.assertEqual(got, expected, f"after {step!r}")

    return deferToThread(both).addCallback(compare)


class DovecotSortTests(TestCase):
    """
    SORT and THREAD answered as Dovecot answers them.
    """

    timeout = 120
    maxDiff = None

    def test_sameAnswers(self) -> Deferred[None]:
        """Every SORT and THREAD gets Dovecot's normalised answer."""
        return compareWithDovecot(self, SCRIPT)
