"""
Tests for np-imap's CONDSTORE and QRESYNC (RFC 7162): mod-sequences kept
with the Maildir (L{netplugins.mail.maildir.modseq}), HIGHESTMODSEQ, FETCH
MODSEQ and CHANGEDSINCE, STORE UNCHANGEDSINCE, SEARCH MODSEQ, ENABLE,
SELECT QRESYNC and VANISHED; in memory, and with IMAPClient over TCP.
"""

from __future__ import annotations

import os
import re
import ssl
from typing import Any

from imapclient import IMAPClient
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.mail.imap.condstore import (
    formatRanges,
    parseFetchModifiers,
    parseSelectParameters,
    vanishedLines,
)
from netplugins.mail.imap.parse import IMAPSyntaxError
from netplugins.mail.maildir import modseq
from netplugins.mail.maildir.modseq import (
    MODSEQ,
    Modseqs,
    complementRanges,
    intersectRanges,
    toRanges,
)
from netplugins.mail.maildir.store import MaildirStore
from tests.test_imap import Session, plainMessage, serveOverTLS


def uidValidity(reply: bytes) -> int:
    """
    The UIDVALIDITY a SELECT reply gives.
    """
    match = re.search(rb"\[UIDVALIDITY (\d+)\]", reply)
    assert match is not None, reply
    return int(match.group(1))


class RangeTests(SynchronousTestCase):
    """
    UID sets are kept and sent as ranges.
    """

    def test_ranges(self) -> None:
        """Ranges merge, intersect and complement; VANISHED lines split."""
        self.assertEqual(toRanges([5, 1, 2, 3, 9]), [(1, 3), (5, 5), (9, 9)])
        self.assertEqual(
            intersectRanges([(1, 10), (20, 30)], [(5, 25)]), [(5, 10), (20, 25)]
        )
        self.assertEqual(
            complementRanges([(2, 3), (6, 6)], 8), [(1, 1), (4, 5), (7, 8)]
        )
        self.assertEqual(formatRanges([(1, 3), (5, 5)]), b"1:3,5")
        lines = vanishedLines([(i * 3, i * 3 + 1) for i in range(1, 451)], True)
        self.assertEqual(len(lines), 3)
        self.assertTrue(lines[0].startswith(b"* VANISHED (EARLIER) 3:4,6:7,"))

    def test_modifiers(self) -> None:
        """FETCH and SELECT modifiers parse; bad ones are syntax errors."""
        parsed = parseFetchModifiers(["CHANGEDSINCE", "12", "VANISHED"])
        self.assertEqual((parsed.changedSince, parsed.vanished), (12, True))
        self.assertRaises(IMAPSyntaxError, parseFetchModifiers, ["VANISHED"])
        self.assertRaises(IMAPSyntaxError, parseFetchModifiers, ["CHANGEDSINCE", "0"])
        self.assertRaises(
            IMAPSyntaxError, parseFetchModifiers, ["CHANGEDSINCE", "9" * 20]
        )
        parameters = parseSelectParameters(
            ["QRESYNC", ["67890007", "90060115194045000", "41:211,214:541"]]
        )
        assert parameters.qresync is not None
        self.assertEqual(parameters.qresync.modseq, 90060115194045000)
        self.assertRaises(IMAPSyntaxError, parseSelectParameters, ["QRESYNC", ["1"]])
        self.assertRaises(IMAPSyntaxError, parseSelectParameters, ["X"])


class StoreTests(SynchronousTestCase):
    """
    The store keeps each message's mod-sequence durably, next to its UIDs.
    """

    def setUp(self) -> None:
        self.store = MaildirStore(self.mktemp(), runBlocking=maybeDeferred)
        for i in range(3):
            self.successResultOf(self.store.deliver("alice", plainMessage(f"m{i}")))
        self.folder = self.store.folder("alice", "INBOX")

    def test_rises(self) -> None:
        """Flag changes, appends and expunges each raise HIGHESTMODSEQ, on disk."""
        state = self.successResultOf(self.folder.scan())
        self.assertEqual(state.highestModseq, 2)
        self.assertEqual([m.modseq for m in state.messages], [2, 2, 2])
        [flagged] = self.successResultOf(self.folder.setFlags([state.messages[0]], "F"))
        self.assertEqual(flagged.modseq, 3)
        # Setting the flags a message has already changes nothing.
        [same] = self.successResultOf(self.folder.setFlags([flagged], "F"))
        self.assertEqual(same.modseq, 3)
        self.successResultOf(self.folder.append(b"Subject: x\r\n\r\nx\r\n"))
        self.successResultOf(self.folder.delete([state.messages[1]]))
        state = self.successResultOf(self.folder.scan())
        self.assertEqual(state.highestModseq, 5)
        self.assertEqual([m.modseq for m in state.messages], [3, 2, 4])
        again = self.successResultOf(
            MaildirStore(self.store.root, runBlocking=maybeDeferred)
            .folder("alice", "INBOX")
            .scan()
        )
        self.assertEqual(again.highestModseq, 5)
        ranges, highest = self.successResultOf(self.folder.vanished(4))
        self.assertEqual((ranges, highest), ([(2, 2)], 5))
        self.assertEqual(self.successResultOf(self.folder.vanished(5))[0], [])

    def test_otherPrograms(self) -> None:
        """A flag changed in the file name by another program gets a new MODSEQ."""
        state = self.successResultOf(self.folder.scan())
        path = state.messages[2].path
        os.rename(path, path.split(":2,")[0] + ":2,S")
        os.unlink(state.messages[0].path)
        state = self.successResultOf(self.folder.scan())
        self.assertEqual([(m.uid, m.modseq) for m in state.messages], [(2, 2), (3, 4)])
        self.assertEqual(self.successResultOf(self.folder.vanished(2))[0], [(1, 1)])

    def test_unchangedSince(self) -> None:
        """setFlagsIf leaves alone what changed after the given MODSEQ."""
        state = self.successResultOf(self.folder.scan())
        self.successResultOf(self.folder.setFlags([state.messages[0]], "S"))
        updated, refused = self.successResultOf(
            self.folder.setFlagsIf(list(state.messages), "F", 2)
        )
        self.assertEqual([m.uid for m in updated], [2, 3])
        self.assertEqual([m.uid for m in refused], [1])
        self.assertEqual({m.modseq for m in updated}, {4})

    def test_boundedHistory(self) -> None:
        """Expunged UIDs are kept as at most MAX_HISTORY ranges; older asks get more."""
        self.patch(modseq, "MAX_HISTORY", 2)
        for i in range(6):
            self.successResultOf(self.store.deliver("alice", plainMessage(f"n{i}")))
        state = self.successResultOf(self.folder.scan())
        start = state.highestModseq
        for uid in (1, 3, 5, 7):
            [message] = [m for m in state.messages if m.uid == uid]
            self.successResultOf(self.folder.delete([message]))
        record = Modseqs.read(self.folder.path)
        assert record is not None
        self.assertEqual(sum(len(r) for _, r in record.history), 2)
        # Within the history: exact; before it: every UID no longer there.
        self.assertEqual(
            self.successResultOf(self.folder.vanished(start + 2))[0], [(5, 5), (7, 7)]
        )
        self.assertEqual(
            self.successResultOf(self.folder.vanished(start))[0],
            [(1, 1), (3, 3), (5, 5), (7, 7)],
        )

    def test_lostRecord(self) -> None:
        """A lost record starts again above every MODSEQ given before."""
        state = self.successResultOf(self.folder.scan())
        os.unlink(os.path.join(self.folder.path, MODSEQ))
        self.patch(modseq, "clockStart", lambda: 1000)
        again = self.successResultOf(self.folder.scan())
        self.assertEqual(again.highestModseq, 1001)
        self.assertGreater(again.highestModseq, state.highestModseq)
        self.assertEqual(
            self.successResultOf(self.folder.vanished(2))[0], [], "nothing gone"
        )


class CondstoreTests(SynchronousTestCase):
    """
    CONDSTORE on a session.
    """

    def setUp(self) -> None:
        self.s = Session(self)
        self.s.login()
        for i in range(3):
            self.successResultOf(self.s.store.deliver("alice", plainMessage(f"m{i}")))
        self.select = self.s.send(b"s SELECT INBOX\r\n")

    def test_capabilityAndSelect(self) -> None:
        """CONDSTORE and QRESYNC are offered; SELECT, EXAMINE give HIGHESTMODSEQ."""
        capability = self.s.send(b"c CAPABILITY\r\n")
        self.assertIn(b" CONDSTORE ", capability)
        self.assertIn(b" QRESYNC ", capability)
        self.assertIn(b"* OK [HIGHESTMODSEQ 2] Highest\r\n", self.select)
        self.assertNotIn(b"NOMODSEQ", self.select)
        self.assertIn(b"* OK [HIGHESTMODSEQ 2]", self.s.send(b"e EXAMINE INBOX\r\n"))

    def test_fetchAndStore(self) -> None:
        """FETCH MODSEQ enables CONDSTORE; STOREs then report the new MODSEQ."""
        self.assertEqual(
            self.s.send(b"f FETCH 1 (MODSEQ)\r\n"),
            b"* OK [HIGHESTMODSEQ 2] Highest\r\n"
            b"* 1 FETCH (MODSEQ (2))\r\nf OK Fetch completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b"t STORE 1 +FLAGS (\\Flagged)\r\n"),
            b"* 1 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (3))\r\n"
            b"t OK Store completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b"f FETCH 1:* (FLAGS) (CHANGEDSINCE 2)\r\n"),
            b"* 1 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (3))\r\n"
            b"f OK Fetch completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b"t STORE 1:3 (UNCHANGEDSINCE 2) +FLAGS (\\Seen)\r\n"),
            b"* 2 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (4))\r\n"
            b"* 3 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (4))\r\n"
            b"t OK [MODIFIED 1] Conditional store failed.\r\n",
        )
        self.assertEqual(
            self.s.send(b"u UID STORE 2:3 (UNCHANGEDSINCE 0) FLAGS ()\r\n"),
            b"u OK [MODIFIED 2:3] Conditional store failed.\r\n",
        )
        self.assertEqual(
            self.s.send(b"t STORE 2 +FLAGS.SILENT (\\Answered)\r\n"),
            b"* 2 FETCH (MODSEQ (5))\r\nt OK Store completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b"k SEARCH MODSEQ 4\r\n"),
            b"* SEARCH 2 3 (MODSEQ 5)\r\nk OK Search completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b'k SEARCH MODSEQ "/flags/\\\\draft" all 6\r\n'),
            b"* SEARCH\r\nk OK Search completed.\r\n",
        )

    def test_statusAndOthers(self) -> None:
        """STATUS HIGHESTMODSEQ; another session's change arrives with its MODSEQ."""
        self.assertEqual(
            self.s.send(b"t STATUS INBOX (HIGHESTMODSEQ MESSAGES)\r\n"),
            b"* OK [HIGHESTMODSEQ 2] Highest\r\n"
            b"* STATUS INBOX (HIGHESTMODSEQ 2 MESSAGES 3)\r\n"
            b"t OK Status completed.\r\n",
        )
        other = Session(self, root=self.s.root)
        other.login()
        other.send(b"s SELECT INBOX\r\n")
        other.send(b"t STORE 2 +FLAGS (\\Deleted)\r\n")
        self.assertEqual(
            self.s.send(b"n NOOP\r\n"),
            b"* 2 FETCH (FLAGS (\\Deleted \\Recent) MODSEQ (3))\r\n"
            b"n OK NOOP completed.\r\n",
        )
        other.send(b"e EXPUNGE\r\n")
        self.assertEqual(
            self.s.send(b"n NOOP\r\n"), b"* 2 EXPUNGE\r\nn OK NOOP completed.\r\n"
        )
        self.assertIn(
            b"(HIGHESTMODSEQ 4)", self.s.send(b"t STATUS INBOX (HIGHESTMODSEQ)\r\n")
        )

    def test_readOnly(self) -> None:
        """STORE UNCHANGEDSINCE in an EXAMINEd mailbox is NO."""
        self.s.send(b"e EXAMINE INBOX\r\n")
        self.assertEqual(
            self.s.send(b"t STORE 1 (UNCHANGEDSINCE 5) +FLAGS (\\Seen)\r\n"),
            b"* OK [HIGHESTMODSEQ 2] Highest\r\nt NO Mailbox is read-only.\r\n",
        )


class QresyncTests(SynchronousTestCase):
    """
    QRESYNC: resynchronising at SELECT, and VANISHED.
    """

    def setUp(self) -> None:
        self.s = Session(self)
        self.s.login()
        for i in range(5):
            self.successResultOf(self.s.store.deliver("alice", plainMessage(f"m{i}")))
        self.validity = uidValidity(self.s.send(b"s SELECT INBOX\r\n"))
        # A change, then an expunge: HIGHESTMODSEQ 2 before them.
        self.s.send(b"t STORE 2 +FLAGS (\\Seen)\r\n")
        self.s.send(b"t STORE 4 +FLAGS (\\Deleted)\r\n")
        self.s.send(b"e EXPUNGE\r\n")
        self.s.send(b"u UNSELECT\r\n")

    def test_enable(self) -> None:
        """ENABLE QRESYNC says so; SELECT (QRESYNC ...) without it is BAD."""
        self.assertIn(
            b"q BAD",
            self.s.send(b"q SELECT INBOX (QRESYNC (%d 2))\r\n" % self.validity),
        )
        self.assertEqual(
            self.s.send(b"e ENABLE QRESYNC CONDSTORE\r\n"),
            b"* ENABLED QRESYNC CONDSTORE\r\ne OK Enabled.\r\n",
        )

    def test_selectQresync(self) -> None:
        """SELECT (QRESYNC ...) sends VANISHED (EARLIER) and the changed flags."""
        self.s.send(b"e ENABLE QRESYNC\r\n")
        reply = self.s.send(b"q SELECT INBOX (QRESYNC (%d 2))\r\n" % self.validity)
        self.assertTrue(
            reply.endswith(
                b"* OK [HIGHESTMODSEQ 5] Highest\r\n"
                b"* VANISHED (EARLIER) 4\r\n"
                b"* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (3))\r\n"
                b"q OK [READ-WRITE] Select completed.\r\n"
            ),
            reply,
        )
        # Known UIDs limit both; another UIDVALIDITY gets a plain SELECT.
        reply = self.s.send(b"q SELECT INBOX (QRESYNC (%d 2 1,3))\r\n" % self.validity)
        self.assertNotIn(b"VANISHED", reply)
        self.assertNotIn(b"FETCH", reply)
        reply = self.s.send(b"q SELECT INBOX (QRESYNC (1 2 1:5 (1:4 1:4)))\r\n")
        self.assertNotIn(b"VANISHED", reply)
        self.assertIn(b"q OK [READ-WRITE]", reply)

    def test_vanished(self) -> None:
        """Expunges are VANISHED by UID; UID FETCH (CHANGEDSINCE n VANISHED) too."""
        self.s.send(b"e ENABLE QRESYNC\r\n")
        self.s.send(b"s SELECT INBOX\r\n")
        other = Session(self, root=self.s.root)
        other.login()
        other.send(b"s SELECT INBOX\r\n")
        self.assertEqual(
            self.s.send(b"t STORE 1,3 +FLAGS (\\Deleted)\r\n"),
            b"* 1 FETCH (UID 1 FLAGS (\\Deleted) MODSEQ (6))\r\n"
            b"* 3 FETCH (UID 3 FLAGS (\\Deleted) MODSEQ (6))\r\n"
            b"t OK Store completed.\r\n",
        )
        self.assertEqual(
            self.s.send(b"x UID EXPUNGE 1\r\n"),
            b"* VANISHED 1\r\nx OK [HIGHESTMODSEQ 7] Expunge completed.\r\n",
        )
        other.send(b"n NOOP\r\n")
        other.send(b"e EXPUNGE\r\n")
        self.assertEqual(
            self.s.send(b"n NOOP\r\n"), b"* VANISHED 3\r\nn OK NOOP completed.\r\n"
        )
        self.assertEqual(
            self.s.send(b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 2 VANISHED)\r\n"),
            b"* VANISHED (EARLIER) 1,3:4\r\n"
            b"* 1 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (3))\r\n"
            b"f OK Fetch completed.\r\n",
        )
        self.assertIn(
            b"f BAD", self.s.send(b"f FETCH 1:* (FLAGS) (CHANGEDSINCE 2 VANISHED)\r\n")
        )
        self.s.send(b"c CREATE Archive\r\n")
        reply = self.s.send(b"m MOVE 2 Archive\r\n")
        self.assertIn(b"* VANISHED 5\r\n", reply)
        self.assertNotIn(b"EXPUNGE", reply)


class CondstoreClientTests(TestCase):
    """
    IMAPClient's CONDSTORE support over TCP (STARTTLS).
    """

    caPath: str
    root: str
    store: MaildirStore
    factory: Any
    port: int

    def setUp(self) -> None:
        serveOverTLS(self)
        d = self.store.deliver("alice", plainMessage("hello"))
        d.addCallback(lambda _: self.store.deliver("alice", plainMessage("again")))
        return d  # type: ignore[return-value]

    def test_imapclient(self) -> Deferred[Any]:
        """IMAPClient: HIGHESTMODSEQ at select, CHANGEDSINCE and UNCHANGEDSINCE."""

        def session() -> list[Any]:
            c = IMAPClient("127.0.0.1", port=self.port, ssl=False)
            c.starttls(ssl.create_default_context(cafile=self.caPath))
            c.login("alice", "alice-pw")
            out: list[Any] = [c.has_capability("CONDSTORE"), c.enable("CONDSTORE")]
            selected = c.select_folder("INBOX", readonly=True)
            highest = selected[b"HIGHESTMODSEQ"]
            c.select_folder("INBOX")
            c.add_flags([2], [b"\\Flagged"])
            changed = c.fetch([1, 2], ["FLAGS"], modifiers=[f"CHANGEDSINCE {highest}"])
            out.append(
                {uid: data[b"MODSEQ"][0] > highest for uid, data in changed.items()}
            )
            out.append(
                c.folder_status("INBOX", ["HIGHESTMODSEQ"])[b"HIGHESTMODSEQ"] > highest
            )
            out.append(sorted(c.search(["MODSEQ", str(highest + 1)])))
            c.logout()
            return out

        return deferToThread(session).addCallback(
            self.assertEqual, [True, [b"CONDSTORE"], {2: True}, True, [2]]
        )
