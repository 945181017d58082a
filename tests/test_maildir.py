"""
Tests for L{netplugins.mail.maildir.store}: delivery, UIDs, flags, folders, locks,
a full disk, and two processes sharing a Maildir.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.mail.maildir import files
from netplugins.mail.maildir.errors import (
    BadNameError,
    DiskFullError,
    FolderExistsError,
    MailboxLockedError,
    MaildirError,
    NoSuchFolderError,
)
from netplugins.mail.maildir.files import UIDLIST
from netplugins.mail.maildir.folder import FolderState
from netplugins.mail.maildir.names import INBOX, wireSize
from netplugins.mail.maildir.store import MaildirStore

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def inline(f: Any, *args: Any) -> Deferred[Any]:
    """
    Run a blocking store call at once (the tests' C{runBlocking}).
    """
    return maybeDeferred(f, *args)


def listing(base: str, sub: str) -> list[str]:
    """
    The names in C{base/sub}.
    """
    return os.listdir(os.path.join(base, sub))


class StoreMixin:
    """
    A fresh store in a temporary directory.
    """

    def makeStore(self) -> MaildirStore:
        root = self.mktemp()  # type: ignore[attr-defined]
        os.makedirs(root)
        return MaildirStore(root, runBlocking=inline, hostname="test.host")

    def result(self, d: Deferred[Any]) -> Any:
        return self.successResultOf(d)  # type: ignore[attr-defined]


class DeliveryTests(StoreMixin, SynchronousTestCase):
    """
    L{MaildirStore.deliver} stores durably into C{new/}.
    """

    def test_deliverCreatesMaildir(self) -> None:
        """A delivery creates the user's Maildir and leaves the message in new/."""
        store = self.makeStore()
        key = self.result(store.deliver("alice", b"Subject: hi\r\n\r\nbody\r\n"))
        base = os.path.join(store.root, "alice")
        self.assertEqual(
            (listing(base, "new"), listing(base, "tmp")),
            ([key], []),
        )
        with open(os.path.join(base, "new", key), "rb") as f:
            self.assertEqual(f.read(), b"Subject: hi\r\n\r\nbody\r\n")
        self.assertIn(",S=21", key)

    def test_maildirsPrivate(self) -> None:
        """A user's Maildir, its folders and their subdirectories are mode 0700."""
        store = self.makeStore()
        self.result(store.deliver("alice", b"x\r\n"))
        self.result(store.createFolder("alice", "Sent"))
        base = os.path.join(store.root, "alice")
        paths = [base, *(os.path.join(base, sub) for sub in ("new", "cur", "tmp"))]
        paths += [
            os.path.join(base, name) for name in os.listdir(base) if "Sent" in name
        ]
        self.assertEqual(len(paths), 5)
        self.assertEqual(
            {path: oct(os.stat(path).st_mode & 0o777) for path in paths},
            {path: "0o700" for path in paths},
        )

    def test_uniqueNames(self) -> None:
        """Deliveries in the same second get different names."""
        store = self.makeStore()
        keys = {self.result(store.deliver("alice", b"x")) for _ in range(50)}
        self.assertEqual(len(keys), 50)

    def test_fsyncBeforeRename(self) -> None:
        """The file is fsynced before its rename into new/, and new/ after."""
        store = self.makeStore()
        calls: list[str] = []
        realFsync, realRename = os.fsync, os.rename

        def fsync(fd: int) -> None:
            isDir = os.path.isdir(f"/proc/self/fd/{fd}")
            calls.append("fsync-dir" if isDir else "fsync")
            realFsync(fd)

        def rename(a: str, b: str) -> None:
            calls.append("rename")
            realRename(a, b)

        self.patch(os, "fsync", fsync)
        self.patch(os, "rename", rename)
        self.result(store.deliver("alice", b"x"))
        self.assertEqual(calls, ["fsync", "rename", "fsync-dir"])

    def test_diskFullInjected(self) -> None:
        """ENOSPC while writing: DiskFullError, and tmp/ and new/ are left empty."""
        store = self.makeStore()

        def full(fd: int, data: bytes) -> None:
            os.write(fd, data[:3])
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(files, "writeAll", full)
        failure = self.failureResultOf(store.deliver("alice", b"hello"), DiskFullError)
        self.assertIn("no space", failure.getErrorMessage())
        base = os.path.join(store.root, "alice")
        self.assertEqual(
            (listing(base, "new"), listing(base, "tmp")),
            ([], []),
        )

    def test_deliverManyAllOrNothing(self) -> None:
        """ENOSPC on a later copy: DiskFullError and no copy in tmp/ or new/."""
        store = self.makeStore()
        writes: list[bytes] = []
        writeAll = files.writeAll

        def fullOnThird(fd: int, data: bytes) -> None:
            writes.append(data)
            if len(writes) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            writeAll(fd, data)

        self.patch(files, "writeAll", fullOnThird)
        self.failureResultOf(
            store.deliverMany(["alice", "bob", "carol"], b"hi"), DiskFullError
        )
        for user in ["alice", "bob", "carol"]:
            base = os.path.join(store.root, user)
            self.assertEqual((listing(base, "new"), listing(base, "tmp")), ([], []))
        keys = self.result(store.deliverMany(["alice", "bob"], b"hi"))
        self.assertEqual(
            [listing(os.path.join(store.root, u), "new") for u in ["alice", "bob"]],
            [[keys[0]], [keys[1]]],
        )

    def test_badUserNames(self) -> None:
        """User names that would escape the root or hide are refused."""
        store = self.makeStore()
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a\x00b", "x" * 300]:
            self.failureResultOf(store.deliver(bad, b"x"), BadNameError)
        self.assertEqual(os.listdir(store.root), [])


class DiskFullTmpfsTests(StoreMixin, SynchronousTestCase):
    """
    A real full disk: a 64 KiB tmpfs.
    """

    def test_diskFullTmpfs(self) -> None:
        """A message bigger than the free space: DiskFullError, nothing left."""
        root = tempfile.mkdtemp(prefix="np-maildir-tmpfs-")
        self.addCleanup(os.rmdir, root)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", root], check=True
        )
        self.addCleanup(subprocess.run, ["umount", root], check=True)
        store = MaildirStore(root, runBlocking=inline)
        self.result(store.deliver("alice", b"small\r\n"))
        self.failureResultOf(store.deliver("alice", b"x" * 200_000), DiskFullError)
        base = os.path.join(root, "alice")
        self.assertEqual(
            (
                len(os.listdir(os.path.join(base, "new"))),
                os.listdir(os.path.join(base, "tmp")),
            ),
            (1, []),
        )


class ScanTests(StoreMixin, SynchronousTestCase):
    """
    L{netplugins.mail.maildir.folder.Folder.scan} numbers messages stably and
    claims new/.
    """

    def test_uidsInArrivalOrder(self) -> None:
        """New messages get UIDs 1, 2, 3 in delivery order and move to cur/."""
        store = self.makeStore()
        keys = [self.result(store.deliver("alice", b"m%d" % i)) for i in range(3)]
        state: FolderState = self.result(store.folder("alice").scan())
        self.assertEqual(
            [(m.uid, m.key, m.recent, m.flags) for m in state.messages],
            [(i + 1, k, True, "") for i, k in enumerate(keys)],
        )
        self.assertEqual(state.uidNext, 4)
        self.assertEqual(os.listdir(os.path.join(store.root, "alice", "new")), [])
        self.assertEqual(
            [self.result(store.folder("alice").read(m)) for m in state.messages],
            [b"m0", b"m1", b"m2"],
        )

    def test_stableAcrossRescans(self) -> None:
        """A rescan (by a new store on the same root) keeps UIDs and UIDVALIDITY."""
        store = self.makeStore()
        for i in range(3):
            self.result(store.deliver("alice", b"m%d" % i))
        first = self.result(store.folder("alice").scan())
        self.result(store.deliver("alice", b"later"))
        again = MaildirStore(store.root, runBlocking=inline)
        second = self.result(again.folder("alice").scan())
        self.assertEqual(second.uidValidity, first.uidValidity)
        self.assertEqual(
            [(m.uid, m.key, m.recent) for m in second.messages][:3],
            [(m.uid, m.key, False) for m in first.messages],
        )
        self.assertEqual((second.messages[3].uid, second.messages[3].recent), (4, True))

    def test_deletedUidsNotReused(self) -> None:
        """After a delete, the next message gets a fresh UID."""
        store = self.makeStore()
        inbox = store.folder("alice")
        for i in range(2):
            self.result(store.deliver("alice", b"m%d" % i))
        state = self.result(inbox.scan())
        self.result(inbox.delete([state.messages[1]]))
        self.result(store.deliver("alice", b"m2"))
        after = self.result(inbox.scan())
        self.assertEqual([m.uid for m in after.messages], [1, 3])

    def test_flagsKeepUid(self) -> None:
        """Setting flags renames into cur/ with the info suffix; the UID stays."""
        store = self.makeStore()
        inbox = store.folder("alice")
        self.result(store.deliver("alice", b"m"))
        [message] = self.result(inbox.scan()).messages
        [flagged] = self.result(inbox.setFlags([message], "TSSx"))
        self.assertEqual(flagged.flags, "ST")
        self.assertTrue(flagged.path.endswith(":2,ST"))
        [rescanned] = self.result(inbox.scan()).messages
        self.assertEqual((rescanned.uid, rescanned.flags), (1, "ST"))
        # The stale Message still reads: the store finds it by key.
        self.assertEqual(self.result(inbox.read(message)), b"m")

    def test_corruptUidlist(self) -> None:
        """An unreadable uidlist starts a new UIDVALIDITY instead of failing."""
        store = self.makeStore()
        inbox = store.folder("alice")
        self.result(store.deliver("alice", b"m"))
        self.result(inbox.scan())
        with open(os.path.join(inbox.path, UIDLIST), "wb") as f:
            f.write(b"\xffgarbage")
        state = self.result(inbox.scan())
        self.assertEqual([m.uid for m in state.messages], [1])

    def test_uidValidityNotReusedAfterDelete(self) -> None:
        """A folder deleted and made again in the second gets a higher UIDVALIDITY."""
        self.patch(files, "now", lambda: 1796537977)
        store = self.makeStore()
        demo = store.folder("alice", "Demo")
        self.result(store.createFolder("alice", "Demo"))
        first = self.result(demo.append(b"one")).uid, self.result(demo.scan())
        self.result(store.deleteFolder("alice", "Demo"))
        self.result(store.createFolder("alice", "Demo"))
        second = self.result(demo.append(b"two")).uid, self.result(demo.scan())
        self.assertEqual((first[0], second[0]), (1, 1))
        self.assertEqual(first[1].uidValidity, 1796537977)
        self.assertEqual(second[1].uidValidity, 1796537978)

    def test_uidValidityNotReusedAfterRename(self) -> None:
        """A folder renamed onto a deleted name of higher UIDVALIDITY gets a new one."""
        self.patch(files, "now", lambda: 1796537977)
        store = self.makeStore()
        for name in ["Old", "Demo"]:
            self.result(store.createFolder("alice", name))
            self.result(store.folder("alice", name).append(b"m"))
        demo = self.result(store.folder("alice", "Demo").scan()).uidValidity
        self.result(store.deleteFolder("alice", "Demo"))
        self.result(store.renameFolder("alice", "Old", "Demo"))
        renamed = self.result(store.folder("alice", "Demo").scan())
        self.assertEqual(
            (demo, renamed.uidValidity, [m.uid for m in renamed.messages]),
            (1796537978, 1796537979, [1]),
        )
        # A rename onto a name that never had a higher value keeps its value.
        self.result(store.renameFolder("alice", "Demo", "New"))
        moved = self.result(store.folder("alice", "New").scan())
        self.assertEqual(moved.uidValidity, 1796537979)

    def test_uidValidityRecordedBeforeDelete(self) -> None:
        """DELETE records a UIDVALIDITY given before the record existed."""
        self.patch(files, "now", lambda: 1796537977)
        store = self.makeStore()
        demo = store.folder("alice", "Demo")
        self.result(store.createFolder("alice", "Demo"))
        self.result(demo.scan())
        os.unlink(os.path.join(store.userPath("alice"), files.UIDVALIDITIES))
        self.result(store.deleteFolder("alice", "Demo"))
        self.result(store.createFolder("alice", "Demo"))
        self.assertEqual(self.result(demo.scan()).uidValidity, 1796537978)

    def test_uidValidity32Bits(self) -> None:
        """UIDVALIDITY never goes past 32 bits: the store refuses instead."""
        self.patch(files, "now", lambda: files.MAX_UIDVALIDITY)
        store = self.makeStore()
        demo = store.folder("alice", "Demo")
        self.result(store.createFolder("alice", "Demo"))
        self.assertEqual(self.result(demo.scan()).uidValidity, 2**32 - 1)
        self.result(store.deleteFolder("alice", "Demo"))
        self.result(store.createFolder("alice", "Demo"))
        self.failureResultOf(demo.scan(), MaildirError)

    def test_missingFolder(self) -> None:
        """Scanning a folder that does not exist fails with NoSuchFolderError."""
        store = self.makeStore()
        self.failureResultOf(store.folder("alice", "Nope").scan(), NoSuchFolderError)

    def test_appendAndCopy(self) -> None:
        """APPEND gets the next UID with flags and date; COPY keeps them."""
        store = self.makeStore()
        self.result(store.createFolder("alice", "Sent"))
        sent = store.folder("alice", "Sent")
        appended = self.result(sent.append(b"draft", flags="SD", internalDate=1e9))
        self.assertEqual(
            (appended.uid, appended.flags, appended.internalDate), (1, "DS", 1e9)
        )
        self.result(store.createFolder("alice", "Archive.2024"))
        archive = store.folder("alice", "Archive.2024")
        [copied] = self.result(sent.copy([appended], archive))
        self.assertEqual(
            (copied.uid, copied.flags, copied.internalDate), (1, "DS", 1e9)
        )
        self.assertEqual(self.result(archive.read(copied)), b"draft")
        self.assertEqual([m.uid for m in self.result(sent.scan()).messages], [1])


class SizeTests(StoreMixin, SynchronousTestCase):
    """
    Sizes recorded in names (C{,S=} file, C{,W=} CRLF), and batched reads.
    """

    def test_wireSizeInName(self) -> None:
        """A bare-LF message records its file size and its CRLF size in its name."""
        store = self.makeStore()
        data = b"Subject: x\n\nline\r\nbare\nlast"
        key = self.result(store.deliver("alice", data))
        self.assertTrue(key.endswith(f",S={len(data)},W={len(data) + 3}"), key)
        [message] = self.result(store.folder("alice").scan()).messages
        self.assertEqual((message.size, message.wireSize), (len(data), len(data) + 3))
        self.assertEqual(
            wireSize(data),
            len(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")),
        )

    def test_appendAndCopyRecordWireSize(self) -> None:
        """APPEND records the CRLF size; COPY carries it, reading a foreign one."""
        store = self.makeStore()
        self.result(store.createFolder("alice", "Sent"))
        sent = store.folder("alice", "Sent")
        appended = self.result(sent.append(b"a\nb\n"))
        self.assertEqual((appended.size, appended.wireSize), (4, 6))
        inbox = store.folder("alice")
        self.result(store.ensureUser("alice"))
        with open(os.path.join(inbox.path, "new", "1000.foreign.host"), "wb") as f:
            f.write(b"x\ny\n")
        [foreign] = self.result(inbox.scan()).messages
        self.assertEqual((foreign.size, foreign.wireSize), (4, None))
        copies = self.result(inbox.copy([foreign], sent))
        self.assertEqual([(c.size, c.wireSize) for c in copies], [(4, 6)])

    def test_arrivalOrderNumeric(self) -> None:
        """Two arrivals in one second are numbered by microseconds as numbers."""
        store = self.makeStore()
        self.result(store.ensureUser("alice"))
        new = os.path.join(store.root, "alice", "new")
        for name in ["1000.M100P1Q1.host,S=1", "1000.M99P1Q0.host,S=1"]:
            with open(os.path.join(new, name), "wb") as f:
                f.write(b"x")
        state = self.result(store.folder("alice").scan())
        self.assertEqual(
            [m.key for m in state.messages],
            ["1000.M99P1Q0.host,S=1", "1000.M100P1Q1.host,S=1"],
        )

    def test_readMany(self) -> None:
        """readMany reads several messages in one pool call, None for a gone one."""
        calls: list[Any] = []

        def counting(f: Any, *args: Any) -> Deferred[Any]:
            calls.append(f)
            return maybeDeferred(f, *args)

        store = self.makeStore()
        for body in [b"one", b"two", b"three"]:
            self.result(store.deliver("alice", body))
        inbox = store.folder("alice")
        messages = self.result(inbox.scan()).messages
        self.result(inbox.delete([messages[1]]))
        store._runBlocking = counting
        self.assertEqual(
            self.result(inbox.readMany(messages)), [b"one", None, b"three"]
        )
        self.assertEqual(len(calls), 1)


class SubscriptionTests(StoreMixin, SynchronousTestCase):
    """
    L{MaildirStore.subscriptions} and L{MaildirStore.setSubscribed}.
    """

    def test_subscribeAndUnsubscribe(self) -> None:
        """Names are kept in order, once each, one a line; unsubscribing drops one."""
        store = self.makeStore()
        self.assertEqual(self.result(store.subscriptions("alice")), [])
        for name in ["Sent", "Archive", "Sent", "Not.There"]:
            self.result(store.setSubscribed("alice", name, True))
        self.result(store.setSubscribed("alice", "Archive", False))
        self.result(store.setSubscribed("alice", "Never", False))
        self.assertEqual(
            self.result(store.subscriptions("alice")), ["Sent", "Not.There"]
        )
        with open(os.path.join(store.root, "alice", "subscriptions")) as f:
            self.assertEqual(f.read(), "Sent\nNot.There\n")

    def test_badNames(self) -> None:
        """A name with a line break or NUL, or an empty one, is refused."""
        store = self.makeStore()
        for bad in ["a\nb", "a\rb", "a\x00", ""]:
            self.failureResultOf(store.setSubscribed("alice", bad, True), BadNameError)
        self.assertEqual(self.result(store.subscriptions("alice")), [])


class FolderTests(StoreMixin, SynchronousTestCase):
    """
    Maildir++ folders: create, list, rename, delete.
    """

    def test_lifecycle(self) -> None:
        """Folders are listed with INBOX; rename moves children; delete removes one."""
        store = self.makeStore()
        for name in ["Sent", "Archive", "Archive.2024"]:
            self.result(store.createFolder("alice", name))
        self.assertEqual(
            self.result(store.listFolders("alice")),
            ["Archive", "Archive.2024", "INBOX", "Sent"],
        )
        self.assertTrue(
            os.path.exists(os.path.join(store.root, "alice", ".Sent", "maildirfolder"))
        )
        self.result(store.renameFolder("alice", "Archive", "Old"))
        self.result(store.deleteFolder("alice", "Sent"))
        self.assertEqual(
            self.result(store.listFolders("alice")), ["INBOX", "Old", "Old.2024"]
        )

    def test_refusals(self) -> None:
        """Existing, missing and malformed folder names are refused."""
        store = self.makeStore()
        self.result(store.createFolder("alice", "Sent"))
        self.failureResultOf(store.createFolder("alice", "Sent"), FolderExistsError)
        self.failureResultOf(store.createFolder("alice", "inbox"), FolderExistsError)
        self.failureResultOf(store.deleteFolder("alice", "Nope"), NoSuchFolderError)
        self.failureResultOf(store.deleteFolder("alice", "INBOX"), BadNameError)
        for bad in ["a..b", ".x", "x.", "a/b", "..", "INBOX.x", "a\x00"]:
            self.assertRaises(BadNameError, store.folder, "alice", bad)

    def test_inboxCaseInsensitive(self) -> None:
        """INBOX in any case is the user's top Maildir."""
        store = self.makeStore()
        self.assertEqual(store.folder("alice", "inBox").name, INBOX)


class LockTests(StoreMixin, SynchronousTestCase):
    """
    The per-session mailbox lock POP3 takes.
    """

    def test_exclusive(self) -> None:
        """A second lock fails until the first is released."""
        store = self.makeStore()
        lock = self.result(store.lockMailbox("alice"))
        self.failureResultOf(store.lockMailbox("alice"), MailboxLockedError)
        lock.release()
        self.result(store.lockMailbox("alice")).release()


_WORKER = """
import json, sys
from twisted.internet.defer import maybeDeferred
from netplugins.mail.maildir.store import MaildirStore
root, tag = sys.argv[1], sys.argv[2]
store = MaildirStore(root, runBlocking=maybeDeferred)
seen = {}
for i in range(40):
    store.deliver("alice", b"%s %d" % (tag.encode(), i))
    def got(state):
        for m in state.messages:
            seen[m.key] = m.uid
    store.folder("alice").scan().addCallback(got)
print(json.dumps(seen))
"""


class ConcurrencyTests(StoreMixin, TestCase):
    """
    Two processes delivering and scanning the same Maildir at once.
    """

    def test_twoProcesses(self) -> None:
        """Every message gets one UID, the same in both processes, none shared."""
        store = self.makeStore()
        env = dict(os.environ, PYTHONPATH=HERE)
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, store.root, tag],
                stdout=subprocess.PIPE,
                env=env,
            )
            for tag in ("a", "b")
        ]
        views = [json.loads(w.communicate(timeout=60)[0]) for w in workers]
        final = self.successResultOf(
            MaildirStore(store.root, runBlocking=inline).folder("alice").scan()
        )
        uids = {m.key: m.uid for m in final.messages}
        self.assertEqual(len(uids), 80)
        self.assertEqual(sorted(uids.values()), list(range(1, 81)))
        for view in views:
            self.assertEqual({k: uids[k] for k in view}, view)
