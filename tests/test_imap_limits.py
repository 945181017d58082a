"""
Tests for np-imap's bounds on per-command work: header parsing, FETCH items,
MIME parts, LIST patterns and mailbox names, SEARCH charsets and NUL in
APPEND (L{netplugins.mail.imap.fetch}, L{netplugins.mail.imap.search},
L{netplugins.mail.imap.mailboxes}, L{netplugins.mail.imap.parse}).

Timed assertions allow one second on a two-core machine for work that took
seconds to hours before these bounds.
"""

from __future__ import annotations

import os
import random
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from netplugins.mail.imap import fetch, mailboxes
from netplugins.mail.imap.fetch import (
    MAX_FETCH_ITEMS,
    MAX_MIME_PARTS,
    parseEntity,
    parseFields,
    parseSection,
    partSpans,
    sectionContent,
)
from netplugins.mail.imap.mailboxes import MAX_MAILBOX_LEVELS
from netplugins.mail.imap.parse import ListPattern, matchPattern
from netplugins.mail.imap.search import decodeText
from tests.test_imap import Session

#: CPU seconds a bounded parse may take: about four times what the largest
#: input here needs on the development machine (what these tests catch,
#: quadratic work, takes minutes).
SECOND = 2.0


@contextmanager
def within(case: SynchronousTestCase, seconds: float = SECOND) -> Iterator[None]:
    """
    Fail C{case} unless the block takes less than C{seconds}.
    """
    # CPU time, not wall time: the bound is about the work the code does
    # (a quadratic scan takes minutes), not about how busy the machine is.
    start = time.process_time()
    yield
    elapsed = time.process_time() - start
    case.assertLess(elapsed, seconds, f"took {elapsed:.2f} s of CPU")


def peakMemory(f: Callable[[], Any]) -> int:
    """
    The most memory C{f} held at once beyond what was held before, in octets.
    """
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        f()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def message(header: bytes, body: bytes = b"body\r\n") -> bytes:
    """
    A message with C{header} (its fields, CRLF-ended) and C{body}.
    """
    return b"From: a@example.org\r\nTo: b@example.org\r\n" + header + b"\r\n" + body


def multipart(parts: list[bytes], boundary: bytes = b"B") -> bytes:
    """
    A multipart/mixed entity, header and body, holding C{parts} (each a
    header, blank line and body).
    """
    return (
        b"Content-Type: multipart/mixed; boundary="
        + boundary
        + b"\r\n\r\n"
        + b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
        + b"--"
        + boundary
        + b"--\r\n"
    )


class SelectedSession(SynchronousTestCase):
    """
    A logged-in session with C{messages} delivered and INBOX selected.
    """

    messages: list[bytes] = []

    def setUp(self) -> None:
        self.s = Session(self)
        self.s.login()
        for data in self.messages:
            self.successResultOf(self.s.store.deliver("alice", data))
        self.s.send(b"s SELECT INBOX\r\n")


FOLDED = message(b"Subject: start\r\n" + b" folded\r\n" * 120_000 + b"X-Last: end\r\n")


class HeaderTests(SelectedSession):
    """
    Header fields are read once per message per command, in linear time.
    """

    messages = [FOLDED]

    def test_envelopeOfFoldedField(self) -> None:
        """ENVELOPE of a field folded over 120 000 lines (480 kB) comes back in time."""
        with within(self):
            reply = self.s.send(b"f FETCH 1 ENVELOPE\r\n")
        self.assertIn(b"start folded folded", reply)
        self.assertTrue(reply.endswith(b"f OK Fetch completed.\r\n"))

    def test_searchFoldedField(self) -> None:
        """SEARCH SUBJECT, HEADER and TEXT on that header come back in time."""
        with within(self):
            reply = self.s.send(
                b"a SEARCH SUBJECT nothere\r\nb SEARCH HEADER X-Last end\r\n"
                b"c SEARCH TEXT nothere\r\n"
            )
        self.assertEqual(
            reply,
            b"* SEARCH\r\na OK Search completed.\r\n"
            b"* SEARCH 1\r\nb OK Search completed.\r\n"
            b"* SEARCH\r\nc OK Search completed.\r\n",
        )

    def test_headerFieldsOfFoldedField(self) -> None:
        """BODY[HEADER.FIELDS] returns the folded field as sent, in time."""
        with within(self):
            reply = self.s.send(b"f FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]\r\n")
        field = b"Subject: start\r\n" + b" folded\r\n" * 120_000 + b"\r\n"
        self.assertIn(b"{%d}\r\n" % len(field) + field + b")", reply)

    def test_fieldsParsedOnce(self) -> None:
        """One FETCH reads a message's header fields once for all its items."""
        calls: list[int] = []
        parse = fetch.parseFields

        def counting(header: bytes) -> list[tuple[bytes, bytes]]:
            calls.append(len(header))
            return parse(header)

        self.patch(fetch, "parseFields", counting)
        self.s.send(
            b"f FETCH 1 (ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (TO)] "
            b"BODY.PEEK[HEADER.FIELDS.NOT (TO)])\r\n"
        )
        self.assertEqual(len(calls), 1)

    def test_parseFields(self) -> None:
        """Folds stay in values; lines under a non-field join the field before."""
        self.assertEqual(
            parseFields(b"A: 1\r\n 2\r\n\t3\r\njunk\r\n 4\r\nB:5\r\nC :  6\r\n\r\n"),
            [(b"A", b"1\r\n 2\r\n\t3\r\n 4"), (b"B", b"5"), (b"C", b"6")],
        )

    def test_longAddressField(self) -> None:
        """ENVELOPE reads a bounded part of a 1 MB address field, in time."""
        s = Session(self)
        s.login()
        to = b"To: " + b", ".join([b"x@example.org"] * 70_000) + b"\r\n"
        self.successResultOf(s.store.deliver("alice", to + b"Cc: " + b"@" * 10**6))
        s.send(b"s SELECT INBOX\r\n")
        with within(self):
            reply = s.send(b"f FETCH 1 ENVELOPE\r\n")
        self.assertTrue(reply.endswith(b"f OK Fetch completed.\r\n"))
        # 64 KiB of "x@example.org, " holds 4369 whole addresses.
        self.assertEqual(reply.count(b'(NIL NIL "x" "example.org")'), 4369)


BIG = message(b"Subject: big\r\n", (b"x" * 78 + b"\r\n") * 64 * 1024)


class FetchItemTests(SelectedSession):
    """
    The attributes of one FETCH are bounded, deduplicated and bounded in what
    they return.
    """

    messages = [BIG]

    def test_duplicatesAnsweredOnce(self) -> None:
        """60 copies of BODY.PEEK[] of a 5 MB message: one answer, little memory."""
        replies: list[bytes] = []
        command = b"f FETCH 1 (" + b" ".join([b"BODY.PEEK[]"] * 60) + b")\r\n"
        peak = peakMemory(lambda: replies.append(self.s.send(command)))
        self.assertEqual(replies[0].count(b"BODY[] {%d}" % len(BIG)), 1)
        self.assertTrue(replies[0].endswith(b"f OK Fetch completed.\r\n"))
        self.assertLess(peak, 12 * len(BIG))

    def test_peekMergesWithNonPeek(self) -> None:
        """BODY.PEEK[TEXT] and BODY[TEXT] together: one answer, and \\Seen."""
        reply = self.s.send(b"f FETCH 1 (BODY.PEEK[TEXT] BODY[TEXT])\r\n")
        self.assertEqual(reply.count(b"BODY[TEXT] {"), 1)
        self.assertIn(b"FLAGS (\\Seen \\Recent))", reply)

    def test_tooManyItems(self) -> None:
        """More attributes than MAX_FETCH_ITEMS get BAD before any work."""
        items = b" ".join(b"BODY.PEEK[]<%d.1>" % n for n in range(MAX_FETCH_ITEMS))
        self.assertTrue(
            self.s.send(b"f FETCH 1 (" + items + b")\r\n").endswith(
                b"f OK Fetch completed.\r\n"
            )
        )
        self.assertEqual(
            self.s.send(b"g FETCH 1 (" + items + b" FLAGS)\r\n"),
            b"g BAD at most %d FETCH attributes\r\n" % MAX_FETCH_ITEMS,
        )
        self.assertEqual(
            self.s.send(b"h FETCH 1 (" + b" ".join([b"BODY.PEEK[]"] * 80) + b")\r\n"),
            b"h BAD at most %d FETCH attributes\r\n" % MAX_FETCH_ITEMS,
        )

    def test_contentBudget(self) -> None:
        """Sections returning a message more than twice over end in NO [LIMIT]."""
        self.assertTrue(
            self.s.send(b"f FETCH 1 (BODY.PEEK[] BODY.PEEK[TEXT])\r\n").endswith(
                b"f OK Fetch completed.\r\n"
            )
        )
        reply = self.s.send(
            b"g FETCH 1 (BODY.PEEK[]<0.9999999> BODY.PEEK[]<1.9999999> "
            b"BODY.PEEK[]<2.9999999>)\r\n"
        )
        self.assertRegex(reply, rb"^g NO \[LIMIT\] ")


def emptyParts(count: int) -> bytes:
    """
    A multipart/mixed message of C{count} empty parts.
    """
    return (
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
        + b"--B\r\n\r\n" * count
        + b"--B--\r\n"
    )


class PartTests(SelectedSession):
    """
    MIME parts are counted and found in linear time.
    """

    messages = [emptyParts(214_000)]

    def test_manyEmptyParts(self) -> None:
        """BODYSTRUCTURE of 214 000 empty parts (1.5 MB): bounded time and memory."""
        with within(self):
            reply = self.s.send(b"f FETCH 1 BODYSTRUCTURE\r\n")
        self.assertTrue(reply.endswith(b"f OK Fetch completed.\r\n"))
        # The message counts as one: MAX_MIME_PARTS - 1 parts.
        self.assertEqual(reply.count(b'("text" "plain"'), MAX_MIME_PARTS - 1)
        peak = peakMemory(lambda: self.s.send(b"g FETCH 1 BODYSTRUCTURE\r\n"))
        self.assertLess(peak, 40 * 1024 * 1024)

    def test_searchManyParts(self) -> None:
        """SEARCH BODY over those parts comes back in time."""
        with within(self):
            reply = self.s.send(b"f SEARCH BODY nothere\r\n")
        self.assertEqual(reply, b"* SEARCH\r\nf OK Search completed.\r\n")

    def test_overflowPartHoldsRest(self) -> None:
        """The part at which the count runs out holds the rest of the body."""
        self.patch(fetch, "MAX_MIME_PARTS", 4)
        raw = multipart([b"\r\n1", b"\r\n2", b"\r\n3", b"\r\n4", b"\r\n5"])
        root = parseEntity(raw)
        self.assertEqual(len(root.parts), 3)
        self.assertEqual(
            sectionContent(root, parseSection("3", "")),
            b"3\r\n--B\r\n\r\n4\r\n--B\r\n\r\n5\r\n--B--\r\n",
        )

    def test_nestedOverflow(self) -> None:
        """A count run out inside a nested multipart takes its siblings too."""
        self.patch(fetch, "MAX_MIME_PARTS", 4)
        inner = multipart([b"\r\na", b"\r\nb", b"\r\nc"], b"I")
        raw = multipart([inner, b"\r\nafter"])
        root = parseEntity(raw)
        [only] = root.parts
        self.assertEqual((only.mainType, only.parts), ("multipart", []))
        self.assertTrue(only.body.endswith(b"after\r\n--B--\r\n"))
        self.assertIn(b'("multipart" "mixed" ', fetch.bodyStructure(root))

    def test_falseDelimitersLinear(self) -> None:
        """A million lines that almost match the boundary are read in time."""
        body = b"--BX\r\n" * 1_000_000 + b"--B\r\n\r\nthe part\r\n--B--\r\n"
        with within(self):
            spans = list(partSpans(body, b"B"))
        self.assertEqual([body[a:b] for a, b in spans], [b"\r\nthe part"])

    def test_nestedScansBounded(self) -> None:
        """Multiparts nested 20 deep around 10 MB are looked through 4 times."""
        inner = (b"--" + b"B" * 21 + b"X\r\n") * 400_000
        for level in range(20, 0, -1):
            inner = multipart([inner], b"B" * level)
        with within(self):
            root = parseEntity(inner)
            fetch.bodyStructure(root)
        containers = 0
        while root.parts:
            containers += 1
            [root] = root.parts
        self.assertEqual(
            (containers, root.mainType), (fetch.MAX_MIME_SCANS, "multipart")
        )

    def test_manyParameters(self) -> None:
        """A Content-Type of 400 000 semicolons is read in time."""
        raw = b"Content-Type: text/plain; charset=utf-8" + b";" * 400_000
        with within(self):
            entity = parseEntity(raw + b"\r\n\r\nbody")
            structure = fetch.bodyStructure(entity)
        self.assertTrue(structure.startswith(b'("text" "plain" ("charset" "utf-8") '))


def reference(pattern: str, name: str) -> bool:
    """
    LIST matching by plain recursion over the pattern (slow, obviously right).
    """
    if not pattern:
        return not name
    p = pattern[0]
    if p in "*%":
        for i in range(len(name) + 1):
            if p == "%" and "." in name[:i]:
                break
            if reference(pattern[1:], name[i:]):
                return True
        return False
    return bool(name) and name[0] == p and reference(pattern[1:], name[1:])


class ListTests(SynchronousTestCase):
    """
    LIST matching is linear and mailbox names and counts are bounded.
    """

    def setUp(self) -> None:
        self.s = Session(self)
        self.s.login()

    def test_matcherAgreesWithReference(self) -> None:
        """The bit-parallel matcher agrees with plain recursion on random cases."""
        rng = random.Random(3)
        for _ in range(20_000):
            pattern = "".join(rng.choice("ab.*%") for _ in range(rng.randint(0, 7)))
            name = "".join(rng.choice("ab.") for _ in range(rng.randint(0, 8)))
            self.assertEqual(
                matchPattern(pattern, name), reference(pattern, name), (pattern, name)
            )
            prefixes = [
                i
                for i in range(len(name) + 1)
                if (i == len(name) or name[i] == ".") and reference(pattern, name[:i])
            ]
            self.assertEqual(ListPattern(pattern).prefixes(name), prefixes)

    def test_matcherLinear(self) -> None:
        """A 1024-character wildcard pattern over 2000 names of 250 characters."""
        names = ["a." * 124 + f"{i:02d}" for i in range(2000)]
        for pattern in ["%*" * 511 + "x", "*a" * 512]:
            matcher = ListPattern(pattern)
            with within(self):
                for name in names:
                    matcher.prefixes(name)

    def test_listDeepNames(self) -> None:
        """LIST "%*%*...x" against 125-level folder names comes back in time."""
        for i in range(4):
            deep = ".".join(["a"] * 124 + [str(i)])
            self.successResultOf(self.s.store.createFolder("alice", deep))
        pattern = b"%*" * 511 + b"x"
        with within(self):
            reply = self.s.send(b'l LIST "" "' + pattern + b'"\r\n')
        # Only INBOX, whose letters match in any case ("*x" matches it).
        self.assertEqual(
            reply, b'* LIST (\\HasNoChildren) "." INBOX\r\nl OK List completed.\r\n'
        )
        with within(self):
            reply = self.s.send(b'm LIST "" "*"\r\n')
        self.assertEqual(reply.count(b"* LIST "), 1 + 124 + 4)

    def test_createDepth(self) -> None:
        """CREATE takes MAX_MAILBOX_LEVELS levels and refuses one more."""
        deepest = b".".join([b"d"] * MAX_MAILBOX_LEVELS)
        self.assertEqual(
            self.s.send(b"c CREATE " + deepest + b"\r\n"),
            b"c OK Create completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b"d CREATE " + deepest + b".e\r\n"),
            b"d NO [LIMIT] Mailbox name deeper than %d levels\r\n" % MAX_MAILBOX_LEVELS,
        )

    def test_createLength(self) -> None:
        """CREATE refuses a name over MAX_MAILBOX_NAME octets with [LIMIT]."""
        self.assertEqual(
            self.s.send(b"c CREATE " + b"n" * 251 + b"\r\n"),
            b"c NO [LIMIT] Mailbox name longer than 250 octets\r\n",
        )

    def test_renameDepth(self) -> None:
        """RENAME refuses when a child would end up too deep; nothing moves."""
        self.s.send(b"b CREATE a\r\nc CREATE a.b.c\r\n")
        target = b".".join([b"t"] * (MAX_MAILBOX_LEVELS - 1))
        self.assertRegex(
            self.s.send(b"r RENAME a " + target + b"\r\n"),
            rb"^r NO \[LIMIT\] Mailbox name deeper than",
        )
        self.assertIn(b'"." a.b.c\r\n', self.s.send(b'l LIST "" *\r\n'))
        self.assertEqual(
            self.s.send(b"r RENAME a.b.c " + target + b"\r\n"),
            b"r OK Rename completed.\r\n",
        )

    def test_subscribeBounds(self) -> None:
        """SUBSCRIBE takes the same names as CREATE, and at most so many."""
        self.patch(mailboxes, "MAX_MAILBOXES", 2)
        deep = b".".join([b"s"] * (MAX_MAILBOX_LEVELS + 1))
        self.assertRegex(
            self.s.send(b"s SUBSCRIBE " + deep + b"\r\n"), rb"^s NO \[LIMIT\] "
        )
        self.assertEqual(
            self.s.send(b"a SUBSCRIBE x\r\nb SUBSCRIBE y\r\nc SUBSCRIBE y\r\n"),
            b"a OK Subscribe completed.\r\nb OK Subscribe completed.\r\n"
            b"c OK Subscribe completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b"d SUBSCRIBE z\r\n"),
            b"d NO [LIMIT] At most 2 subscriptions\r\n",
        )

    def test_mailboxCount(self) -> None:
        """CREATE stops at MAX_MAILBOXES; LIST refuses to go through more."""
        self.patch(mailboxes, "MAX_MAILBOXES", 3)
        self.assertEqual(
            self.s.send(b"a CREATE x\r\nb CREATE y\r\nc CREATE z\r\n"),
            b"a OK Create completed.\r\nb OK Create completed.\r\n"
            b"c NO [LIMIT] At most 3 mailboxes\r\n",
        )
        self.successResultOf(self.s.store.createFolder("alice", "z"))
        self.assertEqual(
            self.s.send(b'l LIST "" *\r\n'),
            b"l NO [LIMIT] More than 3 mailboxes to list\r\n",
        )


class CharsetTests(SelectedSession):
    """
    A part's odd charset falls back to UTF-8 for that part only.
    """

    messages = [
        message(
            b"Content-Type: text/plain; charset=" + charset + b"\r\n",
            b"hello from " + charset + b"\r\n",
        )
        for charset in [
            b"utf-8",
            b"undefined",
            b"idna",
            b"punycode",
            b"base64",
            b"x-unknown",
            b'"nul\\\x00"',
        ]
    ] + [
        message(b"Subject: =?undefined?q?a?= =?idna?q?b?= =?punycode?q?c?= hello\r\n"),
        message(
            b"Content-Type: text/plain; charset=punycode\r\n",
            b"aaaaaaaa-"
            + bytes(random.Random(1).choices(b"abcdefghijk0123", k=300_000)),
        ),
    ]

    def test_searchBody(self) -> None:
        """SEARCH BODY finds every message whatever its charset says."""
        self.assertEqual(
            self.s.send(b"f SEARCH BODY hello\r\n"),
            b"* SEARCH 1 2 3 4 5 6 7\r\nf OK Search completed.\r\n",
        )

    def test_searchEncodedWords(self) -> None:
        """Encoded words in odd charsets decode as UTF-8 or stay as they are."""
        self.assertEqual(
            self.s.send(b"f SEARCH SUBJECT hello\r\ng SEARCH SUBJECT abc\r\n"),
            b"* SEARCH 8\r\nf OK Search completed.\r\n"
            b"* SEARCH 8\r\ng OK Search completed.\r\n",
        )

    def test_punycodeNotDecoded(self) -> None:
        """A 300 kB body labelled punycode (a quadratic decoder) is read in time."""
        with within(self):
            reply = self.s.send(b"f SEARCH TEXT nothere\r\n")
        self.assertEqual(reply, b"* SEARCH\r\nf OK Search completed.\r\n")

    def test_decodeText(self) -> None:
        """Known charsets decode; the rest read as UTF-8."""
        self.assertEqual(
            [
                decodeText(b"caf\xe9", "iso-8859-1"),
                decodeText(b"caf\xc3\xa9", "undefined"),
                decodeText(b"xn--caf-dma", "idna"),
                decodeText(b"caf\xff", "rot13"),
            ],
            ["café", "café", "xn--caf-dma", "caf\ufffd"],
        )

    def test_encodedWordsLinear(self) -> None:
        """Headers of many encoded-word fragments are decoded in time."""
        s = Session(self)
        s.login()
        for subject in [b"=?a?q?x " * 20_000, b"=?utf-8?q?a?= " * 40_000]:
            self.successResultOf(
                s.store.deliver("alice", message(b"Subject: " + subject + b"\r\n"))
            )
        s.send(b"s SELECT INBOX\r\n")
        with within(self):
            reply = s.send(b"f SEARCH SUBJECT nothere\r\ng SEARCH TEXT aaaa\r\n")
        self.assertEqual(
            reply,
            b"* SEARCH\r\nf OK Search completed.\r\n"
            b"* SEARCH 2\r\ng OK Search completed.\r\n",
        )


class AppendTests(SynchronousTestCase):
    """
    APPEND refuses what RFC 3501's literals cannot hold.
    """

    def test_nul(self) -> None:
        """A message with a NUL octet gets BAD and is not stored."""
        s = Session(self)
        s.login()
        data = b"Subject: nul\r\n\r\nbo\x00dy\r\n"
        self.assertEqual(
            s.send(b"a APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n"),
            b"a BAD NUL octets are not allowed in a message\r\n",
        )
        self.assertEqual(
            s.send(b"b STATUS INBOX (MESSAGES)\r\n"),
            b"* STATUS INBOX (MESSAGES 0)\r\nb OK Status completed.\r\n",
        )
        inbox = os.path.join(s.root, "alice")
        self.assertEqual(
            [n for d in ("new", "cur") for n in os.listdir(os.path.join(inbox, d))],
            [],
        )
