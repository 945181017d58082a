"""
One folder of a user's Maildir (L{netplugins.mail.maildir.store}): scanning it
(UIDs, claiming C{new/}), reading, flagging, deleting, appending and copying
its messages.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from attrs import evolve, frozen
from twisted.internet.defer import Deferred

from netplugins.mail.maildir.errors import (
    KeywordLimitError,
    MaildirError,
    NoSuchFolderError,
)
from netplugins.mail.maildir.files import (
    MAX_KEYWORDS,
    UIDLIST,
    Locked,
    Uidlist,
    UidValidities,
    fsyncDirectory,
    fsyncFile,
    readKeywords,
    storeError,
    unlinkQuietly,
    writeKeywords,
    writeNew,
)
from netplugins.mail.maildir.modseq import MODSEQ, Modseqs, Ranges, loadModseqs
from netplugins.mail.maildir.names import (
    KEYWORD_LETTERS,
    arrivalOrder,
    normaliseFlags,
    sizeFromKey,
    splitName,
    timeFromKey,
    wireSize,
)
from netplugins.mail.maildir.quota import blockingCheckStorage

if TYPE_CHECKING:
    from netplugins.mail.maildir.store import MaildirStore

UIDLIST_LOCK = "netplugins-uidlist.lock"


@frozen
class Message:
    """
    One message as a scan found it.

    @ivar uid: its UID in the folder.
    @ivar key: its unique name (the file name without the info suffix).
    @ivar flags: its Maildir flag letters, sorted.
    @ivar size: its file's size in bytes.
    @ivar internalDate: when it arrived, seconds since the epoch.
    @ivar recent: whether this scan was the first to see it (IMAP C{\\Recent}).
    @ivar path: its file when last seen; the store finds it again by C{key}
        if it was renamed since.
    @ivar wireSize: its size with every line ending CRLF (as IMAP and POP3
        serve it), when its name records it (C{,W=}); C{None} for a message
        another program delivered without it.
    @ivar modseq: its mod-sequence (RFC 7162): raised by each change of
        its flags (L{netplugins.mail.maildir.modseq}).
    """

    uid: int
    key: str
    flags: str
    size: int
    internalDate: float
    recent: bool
    path: str
    wireSize: int | None = None
    modseq: int = 0


@frozen
class FolderState:
    """
    What a scan saw: the folder's UIDVALIDITY and next UID, its messages
    sorted by UID, its keywords by index (letter C{a} is the first) and its
    highest mod-sequence.
    """

    uidValidity: int
    uidNext: int
    messages: tuple[Message, ...]
    keywords: tuple[str, ...] = ()
    highestModseq: int = 0


def keywordNames(flags: str, keywords: Sequence[str]) -> list[str]:
    """
    The keywords the letters of C{flags} name in a folder whose keywords are
    C{keywords}; a letter naming none is left out.
    """
    out = []
    for letter in flags:
        index = KEYWORD_LETTERS.find(letter)
        if 0 <= index < len(keywords):
            out.append(keywords[index])
    return out


def systemLetters(flags: str) -> str:
    """
    C{flags} without its keyword letters.
    """
    return "".join(c for c in flags if c not in KEYWORD_LETTERS)


class Folder:
    """
    One folder of one user's Maildir.  Made by L{MaildirStore.folder}; cheap,
    holds no state beyond its path: every method reads the disk afresh.

    @ivar user: the owner.
    @ivar name: the folder's name (C{INBOX} or a Maildir++ name).
    @ivar path: its directory.
    """

    def __init__(self, store: MaildirStore, user: str, name: str, path: str) -> None:
        self.store = store
        self.user = user
        self.name = name
        self.path = path

    def __repr__(self) -> str:
        return f"<Folder {self.user}:{self.name}>"

    # The blocking parts, run in the store's pool.

    def _lock(self) -> Locked:
        return Locked(os.path.join(self.path, UIDLIST_LOCK))

    def _requireExists(self) -> None:
        if not os.path.isdir(os.path.join(self.path, "cur")):
            raise NoSuchFolderError(f"no folder {self.name!r} for {self.user!r}")

    def _loadUids(self) -> Uidlist:
        uidlist = Uidlist.read(os.path.join(self.path, UIDLIST))
        if uidlist is None:
            validities = UidValidities(self.store.userPath(self.user))
            uidlist = Uidlist(validities.new(self.name), 1, {})
        return uidlist

    def _modseqsLocked(self) -> Modseqs:
        """
        The folder's mod-sequence record, reconciled with the folder (a scan
        first if it is missing or belongs to an older UID list).
        """
        uidlist = Uidlist.read(os.path.join(self.path, UIDLIST))
        record = Modseqs.read(self.path)
        if uidlist is None or record is None or record.validity != uidlist.validity:
            self._scanLocked(claimNew=False)
            record = Modseqs.read(self.path)
            assert record is not None
        return record

    def _scanLocked(self, claimNew: bool) -> FolderState:
        uidlist = self._loadUids()
        changed = not os.path.exists(os.path.join(self.path, UIDLIST))
        numberedBefore = uidlist.nextUid > 1
        newDir = os.path.join(self.path, "new")
        curDir = os.path.join(self.path, "cur")
        found: dict[str, tuple[str, str, bool]] = {}
        for name in sorted(os.listdir(newDir)):
            if name.startswith("."):
                continue
            key, flags = splitName(name)
            path = os.path.join(newDir, name)
            if claimNew:
                target = os.path.join(curDir, f"{key}:2,{flags}")
                try:
                    os.rename(path, target)
                except FileNotFoundError:
                    continue  # another process claimed it first
                path = target
            found[key] = (path, flags, True)
        for name in os.listdir(curDir):
            if name.startswith("."):
                continue
            key, flags = splitName(name)
            if key not in found:
                found[key] = (os.path.join(curDir, name), flags, False)
        gone = set(uidlist.uids) - set(found)
        for key in gone:
            del uidlist.uids[key]
        changed = changed or bool(gone)
        # New arrivals get UIDs in arrival order: their names start with the time.
        for key in sorted(set(found) - set(uidlist.uids), key=arrivalOrder):
            uidlist.uids[key] = uidlist.nextUid
            uidlist.nextUid += 1
            changed = True
        if changed:
            uidlist.write(os.path.join(self.path, UIDLIST))
        modseqs = loadModseqs(self.path, uidlist.validity, numberedBefore)
        present = {uidlist.uids[key]: flags for key, (_, flags, _) in found.items()}
        if modseqs.reconcile(present) or not os.path.exists(
            os.path.join(self.path, MODSEQ)
        ):
            modseqs.write(self.path)
        messages = []
        for key, (path, flags, recent) in found.items():
            size = sizeFromKey(key)
            date = timeFromKey(key)
            if size is None or date is None:
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                size = st.st_size if size is None else size
                date = st.st_mtime if date is None else date
            messages.append(
                Message(
                    uidlist.uids[key],
                    key,
                    flags,
                    size,
                    date,
                    recent and claimNew,
                    path,
                    sizeFromKey(key, "W="),
                    modseqs.records[uidlist.uids[key]][0],
                )
            )
        messages.sort(key=lambda m: m.uid)
        return FolderState(
            uidlist.validity,
            uidlist.nextUid,
            tuple(messages),
            tuple(readKeywords(self.path)),
            modseqs.highest,
        )

    def _keywordLettersLocked(self, names: Sequence[str]) -> str:
        """
        The letters of keywords C{names}, those the folder lacks added to its
        keywords file (under the folder's lock).

        @raise KeywordLimitError: if that would make more than 26.
        """
        keywords = readKeywords(self.path)
        missing = [n for n in dict.fromkeys(names) if n not in keywords]
        if missing:
            if len(keywords) + len(missing) > MAX_KEYWORDS:
                raise KeywordLimitError(
                    f"at most {MAX_KEYWORDS} keywords in {self.name!r}"
                )
            keywords += missing
            writeKeywords(self.path, keywords)
        return "".join(KEYWORD_LETTERS[keywords.index(n)] for n in names)

    def _blockingAddKeywords(self, names: Sequence[str]) -> tuple[str, ...]:
        self._requireExists()
        with self._lock():
            self._keywordLettersLocked(names)
            return tuple(readKeywords(self.path))

    def _blockingScan(self, claimNew: bool) -> FolderState:
        self._requireExists()
        with self._lock():
            return self._scanLocked(claimNew)

    def _locate(self, message: Message) -> str:
        if os.path.exists(message.path):
            return message.path
        for sub in ("cur", "new"):
            directory = os.path.join(self.path, sub)
            for name in os.listdir(directory):
                if name == message.key or name.startswith(message.key + ":"):
                    return os.path.join(directory, name)
        raise MaildirError(f"message {message.uid} of {self.name!r} is gone")

    def _blockingRead(self, message: Message) -> bytes:
        try:
            with open(self._locate(message), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise MaildirError(f"message {message.uid} is gone") from None

    def _blockingReadMany(self, messages: Sequence[Message]) -> list[bytes | None]:
        contents: list[bytes | None] = []
        for message in messages:
            try:
                contents.append(self._blockingRead(message))
            except MaildirError:
                contents.append(None)
        return contents

    def _blockingSetFlags(
        self,
        messages: Sequence[Message],
        flags: str,
        unchangedSince: int | None = None,
    ) -> tuple[list[Message], list[Message]]:
        flags = normaliseFlags(flags)
        updated = []
        refused = []
        with self._lock():
            modseqs = self._modseqsLocked()
            # A keyword letter naming none of the folder's keywords is dropped.
            known = KEYWORD_LETTERS[: len(readKeywords(self.path))]
            flags = "".join(c for c in flags if c not in KEYWORD_LETTERS or c in known)
            for message in messages:
                try:
                    path = self._locate(message)
                except MaildirError:
                    continue
                if unchangedSince is not None:
                    # Flags another program changed since the last scan
                    # count as a change after any mod-sequence.
                    modseq, recorded = modseqs.records.get(message.uid, (0, ""))
                    current = splitName(os.path.basename(path))[1]
                    if modseq > unchangedSince or current != recorded:
                        refused.append(message)
                        continue
                target = os.path.join(self.path, "cur", f"{message.key}:2,{flags}")
                if path != target:
                    os.rename(path, target)
                updated.append(evolve(message, flags=flags, path=target))
            if modseqs.changed({m.uid: flags for m in updated}) is not None:
                modseqs.write(self.path)
        updated = [
            evolve(m, modseq=modseqs.records.get(m.uid, (m.modseq, ""))[0])
            for m in updated
        ]
        return updated, refused

    def _blockingDelete(self, messages: Sequence[Message]) -> None:
        with self._lock():
            modseqs = self._modseqsLocked()
            for message in messages:
                try:
                    os.unlink(self._locate(message))
                except (MaildirError, FileNotFoundError):
                    pass
            uidlist = self._loadUids()
            for message in messages:
                uidlist.uids.pop(message.key, None)
            uidlist.write(os.path.join(self.path, UIDLIST))
            if modseqs.expunged(m.uid for m in messages) is not None:
                modseqs.write(self.path)

    def _blockingVanished(self, since: int) -> tuple[Ranges, int]:
        with self._lock():
            uidlist = self._loadUids()
            modseqs = self._modseqsLocked()
            return modseqs.vanishedSince(since, uidlist.nextUid), modseqs.highest

    def _blockingStore(
        self,
        data: bytes | None,
        source: Message | None,
        flags: str,
        internalDate: float | None,
        keywords: Sequence[str] = (),
    ) -> Message:
        """
        Put a message into C{cur/} with a UID: C{data}, or a link to (else a
        copy of) the file of C{source}, a message of this store; with
        C{flags} (letters) and C{keywords} (names).
        """
        self._requireExists()
        flags = normaliseFlags(flags)
        if data is not None:
            blockingCheckStorage(self.store, self.user, len(data))
        if data is None:
            assert source is not None
            size = os.stat(source.path).st_size
            wire = source.wireSize
            if wire is None:
                with open(source.path, "rb") as f:
                    wire = wireSize(f.read())
        else:
            size, wire = len(data), wireSize(data)
        key = self.store._names.make(size, wire, internalDate)
        tmp = os.path.join(self.path, "tmp", key)
        try:
            if data is None:
                assert source is not None
                try:
                    os.link(source.path, tmp)
                except OSError:
                    shutil.copyfile(source.path, tmp)
                    fsyncFile(tmp)
            else:
                writeNew(tmp, data)
            if internalDate is not None:
                os.utime(tmp, (internalDate, internalDate))
            with self._lock():
                if keywords:
                    flags = normaliseFlags(flags + self._keywordLettersLocked(keywords))
                target = os.path.join(self.path, "cur", f"{key}:2,{flags}")
                os.rename(tmp, target)
                fsyncDirectory(os.path.join(self.path, "cur"))
                # The scan numbers it after every message already there.
                state = self._scanLocked(claimNew=False)
        except OSError as e:
            unlinkQuietly(tmp)
            raise storeError(e, f"storing into {self.name!r}") from e
        except BaseException:
            unlinkQuietly(tmp)
            raise
        for message in state.messages:
            if message.key == key:
                return message
        raise MaildirError(f"message stored into {self.name!r} vanished")

    def _blockingAppendMany(
        self, items: Sequence[tuple[bytes, str, float | None, Sequence[str]]]
    ) -> list[Message]:
        """
        Store every one of C{items} (data, flag letters, date, keywords) or
        none: all are written and fsynced in C{tmp/} before the first is
        renamed into C{cur/}, under one lock, UIDs in order.
        """
        self._requireExists()
        blockingCheckStorage(self.store, self.user, sum(len(i[0]) for i in items))
        staged: list[tuple[str, str, str, Sequence[str]]] = []  # key, tmp, flags
        moved: list[str] = []
        try:
            for data, flags, internalDate, keywords in items:
                key = self.store._names.make(len(data), wireSize(data), internalDate)
                tmp = os.path.join(self.path, "tmp", key)
                writeNew(tmp, data)
                staged.append((key, tmp, normaliseFlags(flags), keywords))
                if internalDate is not None:
                    os.utime(tmp, (internalDate, internalDate))
            with self._lock():
                # Messages already there are numbered first; these then get
                # their UIDs in the order given, whatever their dates.
                self._scanLocked(claimNew=False)
                for key, tmp, flags, keywords in staged:
                    if keywords:
                        flags = normaliseFlags(
                            flags + self._keywordLettersLocked(keywords)
                        )
                    target = os.path.join(self.path, "cur", f"{key}:2,{flags}")
                    os.rename(tmp, target)
                    moved.append(target)
                fsyncDirectory(os.path.join(self.path, "cur"))
                uidlist = self._loadUids()
                for key, _, _, _ in staged:
                    uidlist.uids[key] = uidlist.nextUid
                    uidlist.nextUid += 1
                uidlist.write(os.path.join(self.path, UIDLIST))
                state = self._scanLocked(claimNew=False)
        except BaseException as e:
            for path in moved + [tmp for _, tmp, _, _ in staged]:
                unlinkQuietly(path)
            if isinstance(e, OSError):
                raise storeError(e, f"storing into {self.name!r}") from e
            raise
        byKey = {m.key: m for m in state.messages}
        stored = [byKey.get(key) for key, _, _, _ in staged]
        if any(m is None for m in stored):
            raise MaildirError(f"message stored into {self.name!r} vanished")
        return [m for m in stored if m is not None]

    # The public, Deferred API.

    def scan(self, claimNew: bool = True) -> Deferred[FolderState]:
        """
        Read the folder: assign UIDs to new messages and, if C{claimNew},
        move them from C{new/} to C{cur/} (they are C{recent} in the result;
        POP3 and IMAP claim, a read-only IMAP EXAMINE may not).

        @raise NoSuchFolderError: (in the Deferred) if the folder does not exist.
        """
        return self.store._run(self._blockingScan, claimNew)

    def read(
        self, message: Message, convert: Callable[[bytes], bytes] | None = None
    ) -> Deferred[bytes]:
        """
        The message's bytes, passed through C{convert} (if given) in the
        store's thread pool.

        @raise MaildirError: (in the Deferred) if it was deleted meanwhile.
        """
        if convert is None:
            return self.store._run(self._blockingRead, message)
        return self.store._run(lambda: convert(self._blockingRead(message)))

    def readMany(self, messages: Sequence[Message]) -> Deferred[list[bytes | None]]:
        """
        The bytes of each of C{messages}, in one trip to the store's thread
        pool (C{None} for one deleted meanwhile).  The caller bounds how many
        bytes it asks for at once.
        """
        return self.store._run(self._blockingReadMany, list(messages))

    def setFlags(
        self, messages: Sequence[Message], flags: str
    ) -> Deferred[list[Message]]:
        """
        Replace the flags of C{messages} with C{flags} (Maildir letters; see
        L{IMAP_FLAGS}).  Messages deleted meanwhile are left out of the result.
        Those whose flags change get a new mod-sequence.

        @return: the updated messages.
        """
        d = self.store._run(self._blockingSetFlags, list(messages), flags)
        return d.addCallback(lambda result: result[0])

    def setFlagsIf(
        self, messages: Sequence[Message], flags: str, unchangedSince: int
    ) -> Deferred[tuple[list[Message], list[Message]]]:
        """
        L{setFlags} for those of C{messages} whose mod-sequence is at most
        C{unchangedSince} (RFC 7162's STORE UNCHANGEDSINCE), checked and
        changed under the folder's lock.

        @return: the updated messages, and those left alone because they
            changed after C{unchangedSince}.
        """
        return self.store._run(
            self._blockingSetFlags, list(messages), flags, unchangedSince
        )

    def vanished(self, since: int) -> Deferred[tuple[Ranges, int]]:
        """
        The UIDs expunged after mod-sequence C{since}, as ascending ranges
        (when the bounded history no longer goes back that far: every UID
        below the next one that is not in the folder), and the folder's
        highest mod-sequence.
        """
        return self.store._run(self._blockingVanished, since)

    def delete(self, messages: Sequence[Message]) -> Deferred[None]:
        """
        Remove C{messages} for good (POP3 UPDATE, IMAP EXPUNGE).
        """
        return self.store._run(self._blockingDelete, list(messages))

    def append(
        self,
        data: bytes,
        flags: str = "",
        internalDate: float | None = None,
        keywords: Sequence[str] = (),
    ) -> Deferred[Message]:
        """
        Store C{data} durably (fsync, rename, fsync) straight into C{cur/}
        with C{flags} and C{keywords} (names, added to the folder's keywords
        if new), and give it a UID.

        @return: the stored message (for UIDPLUS's APPENDUID).
        @raise DiskFullError: (in the Deferred) with nothing left behind.
        @raise KeywordLimitError: (in the Deferred) likewise.
        """
        return self.store.runWrite(
            [self.user],
            self._blockingStore,
            data,
            None,
            flags,
            internalDate,
            tuple(keywords),
        )

    def appendMany(
        self, items: Sequence[tuple[bytes, str, float | None, Sequence[str]]]
    ) -> Deferred[list[Message]]:
        """
        Store each of C{items} (data, flag letters, date or C{None}, keyword
        names) as L{append} does, all or nothing (IMAP MULTIAPPEND): on any
        failure none is left in the folder.

        @return: the stored messages, in order, with ascending UIDs.
        """
        return self.store.runWrite([self.user], self._blockingAppendMany, list(items))

    def addKeywords(self, names: Sequence[str]) -> Deferred[tuple[str, ...]]:
        """
        Give the folder keywords C{names} (those it lacks get the next
        letters, durably).

        @return: all the folder's keywords, by index.
        @raise KeywordLimitError: (in the Deferred) beyond 26, adding none.
        """
        return self.store._run(self._blockingAddKeywords, list(names))

    def copy(
        self, messages: Sequence[Message], target: Folder
    ) -> Deferred[list[Message]]:
        """
        Copy C{messages} (with their flags and dates) into C{target}.

        @return: the copies, in order (for UIDPLUS's COPYUID).
        """

        def copyAll() -> list[Message]:
            # Keyword letters are the folder's own: carried over by name.
            keywords = readKeywords(self.path)
            blockingCheckStorage(
                target.store, target.user, sum(m.size for m in messages)
            )
            copies = []
            for message in messages:
                source = evolve(message, path=self._locate(message))
                names = keywordNames(message.flags, keywords)
                letters = systemLetters(message.flags)
                try:
                    copy = target._blockingStore(
                        None, source, letters, message.internalDate, names
                    )
                except KeywordLimitError:
                    # The target's keywords are all taken: those it has go
                    # with the copy, the others are lost.
                    known = readKeywords(target.path)
                    copy = target._blockingStore(
                        None,
                        source,
                        letters,
                        message.internalDate,
                        [n for n in names if n in known],
                    )
                copies.append(copy)
            return copies

        return target.store.runWrite([target.user], copyAll)
