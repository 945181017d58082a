"""
The Maildir store shared by SMTP, POP3 and IMAP.

Layout: one Maildir per user under the root (C{<root>/<user>/{tmp,new,cur}}),
its IMAP folders as Maildir++ subfolders (C{<root>/<user>/.Sent/},
C{.Archive.2024/} for C{Archive.2024}, each with a C{maildirfolder} file), and
in every folder C{netplugins-uidlist}: the folder's UIDVALIDITY, next UID and
the UID of each message, keyed by the message's unique name.

Guarantees:
  - I{Acknowledged means durable.}  L{MaildirStore.deliver} writes to C{tmp/}
    under a unique name, fsyncs the file, renames it into C{new/} and fsyncs
    C{new/}; only then does its Deferred fire.  Any error (a full disk:
    L{DiskFullError}) removes the C{tmp/} file and leaves nothing in C{new/}.
  - I{Flags} live in the name's info suffix (C{<key>:2,FS}), letters sorted;
    keywords (IMAP's custom flags) as lower-case letters there, C{a} for the
    first line of the folder's C{dovecot-keywords}, as Dovecot has them (26
    at most).
  - I{Sizes} live in the name too, as Dovecot writes them: C{,S=} the file's
    size, C{,W=} its size with CRLF line ends (what IMAP's RFC822.SIZE and
    POP3's octet counts report), so listing a folder reads no message.  A
    message whose C{,W=} equals its C{,S=} is served as it is (a BINARYMIME
    message keeps its bare CR and LF octets).
  - I{UIDs} are stable: a message keeps its UID across scans, processes and
    flag changes; new ones get C{uidNext} in the order they are found.  The
    uidlist is rewritten atomically (temporary file, fsync, rename) under an
    exclusive C{flock} on C{netplugins-uidlist.lock}, so several processes (and
    several threads: C{flock} locks belong to open files) can share a folder.
    An unreadable uidlist starts a new UIDVALIDITY.
  - I{Mod-sequences} (IMAP CONDSTORE/QRESYNC) live in each folder's
    C{netplugins-modseq}, rewritten the same way under the same lock and
    reconciled with the folder at every scan, so a change by any program
    raises the folder's highest mod-sequence
    (L{netplugins.mail.maildir.modseq}).
  - I{UIDVALIDITY is never given twice to a name}: a new uidlist's value is
    above every value the user's folders had (C{netplugins-uidvalidity} in the
    user's Maildir records them), so a folder deleted and created again
    within the second, or renamed onto a deleted folder's name, cannot
    serve an old UID for a new message (RFC 3501 section 2.3.1.1).
  - I{Nothing blocks the reactor}: every method that touches the disk runs in
    a thread pool (C{netplugins-maildir}) and returns a Deferred.

Use::

    store = MaildirStore("/var/mail")
    await store.deliver("alice", messageBytes)           # INBOX, new/
    await store.deliverMany(["alice", "bob"], data)      # all copies or none
    inbox = store.folder("alice")                        # or ("alice", "Sent")
    state = await inbox.scan()                           # FolderState
    for message in state.messages:                       # sorted by UID
        data = await inbox.read(message)
    [seen] = await inbox.setFlags([message], "S")        # replaces flags
    await inbox.delete([seen])
    appended = await inbox.append(data, flags="S")       # IMAP APPEND
    uids = await inbox.copy([appended], store.folder("alice", "Archive"))
    await store.createFolder("alice", "Archive.2024")
    names = await store.listFolders("alice")             # ["Archive", ..., "INBOX"]
    lock = await store.lockMailbox("alice")              # POP3's session lock
    lock.release()
    await store.setSubscribed("alice", "Archive", True)  # IMAP SUBSCRIBE
    names = await store.subscriptions("alice")           # IMAP LSUB

Folder names are Maildir++ names: components joined by C{.} (so an IMAP server
offering C{/} as hierarchy delimiter maps C{a/b} to C{a.b}), each component
non-empty, without C{/} or NUL and not C{.}/C{..}; C{INBOX} (any case) is the
user's top Maildir and cannot have children.  User names are used as directory
names: non-empty, at most 255 bytes, no C{/} or NUL, not starting with C{.}.

This module holds the store; a folder is L{netplugins.mail.maildir.folder},
names and flags L{netplugins.mail.maildir.names}, the errors
L{netplugins.mail.maildir.errors}, the disk work (durable writes, locks, the
UID list) L{netplugins.mail.maildir.files}.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from netplugins.mail.maildir.errors import (
    BadNameError,
    FolderExistsError,
    MailboxLockedError,
    NoSuchFolderError,
)
from netplugins.mail.maildir.files import (
    KEYWORDS,
    UIDLIST,
    Locked,
    MailboxLock,
    Uidlist,
    UidValidities,
    fsyncDirectory,
    makeMaildir,
    replaceFile,
    storeError,
    unlinkQuietly,
    writeNew,
)
from netplugins.mail.maildir.folder import Folder
from netplugins.mail.maildir.names import (
    INBOX,
    UniqueNames,
    checkUserName,
    folderDirectoryName,
    wireSize,
)
from netplugins.mail.maildir.quota import blockingCheckStorage, blockingUsage

_T = TypeVar("_T")

POOL_NAME = "netplugins-maildir"
POOL_THREADS = 8
MAILBOX_LOCK = "netplugins-mailbox.lock"
SUBSCRIPTIONS = "subscriptions"


class MaildirStore:
    """
    Every user's Maildir under C{root}.  See the module docstring.

    @ivar root: the directory holding one Maildir per user.
    """

    log = Logger()

    def __init__(
        self,
        root: str,
        *,
        reactor: Any = None,
        runBlocking: Callable[..., Deferred[Any]] | None = None,
        hostname: str | None = None,
        quotaStorage: int | None = None,
        quotaLookup: Callable[[str], Deferred[int | None]] | None = None,
    ) -> None:
        """
        @param reactor: delivers the pool's results; the global one by default.
        @param runBlocking: how blocking calls run, C{f(*args) -> Deferred};
            by default in the C{netplugins-maildir} pool (tests pass
            C{maybeDeferred} to run them inline).
        @param hostname: the host part of new message names.
        @param quotaStorage: the most bytes each user's messages may take
            (L{netplugins.mail.maildir.quota}), or C{None} for no quota.
        @param quotaLookup: a user's own limit, asked before each write
            (L{netplugins.mail.users.LocalUsers.storageQuota}): bytes, C{0}
            for none, C{None} to leave C{quotaStorage} in force.
        """
        self.root = root
        self._reactor = reactor
        self._runBlocking = runBlocking
        self._names = UniqueNames(hostname)
        self.quotaStorage = quotaStorage
        self.quotaLookup = quotaLookup
        # Maildir name -> its own limit (0: none), as last looked up; read
        # by the pool's threads, written by the reactor's before each write.
        self._userQuotas: dict[str, int] = {}

    @property
    def hasQuotas(self) -> bool:
        """
        Whether some user may have a storage quota.
        """
        return self.quotaStorage is not None or self.quotaLookup is not None

    def limitFor(self, user: str) -> int | None:
        """
        C{user}'s storage limit as last looked up: its own, else
        C{quotaStorage}; C{None} for none.
        """
        own = self._userQuotas.get(user)
        if own is None:
            return self.quotaStorage
        return own or None

    def _learnQuota(self, user: str) -> Deferred[None]:
        if self.quotaLookup is None:
            return succeed(None)

        def learned(limit: int | None) -> None:
            if limit is None:
                self._userQuotas.pop(user, None)
            else:
                self._userQuotas[user] = limit

        return self.quotaLookup(user).addCallback(learned)

    def storageLimit(self, user: str) -> Deferred[int | None]:
        """
        C{user}'s storage limit, looked up afresh (L{limitFor}).
        """
        return self._learnQuota(user).addCallback(lambda _: self.limitFor(user))

    def runWrite(
        self, users: Sequence[str], f: Callable[..., _T], *args: Any
    ) -> Deferred[_T]:
        """
        Run C{f(*args)} as L{_run} does, once the limits of C{users}, whose
        Maildirs it writes to, are looked up.
        """
        if self.quotaLookup is None:
            return self._run(f, *args)
        d = gatherResults([self._learnQuota(user) for user in users])
        return d.addCallback(lambda _: self._run(f, *args))

    def _run(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        if self._runBlocking is not None:
            return self._runBlocking(f, *args)
        from netplugins.threads import blockingPool, deferToPool

        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        pool = blockingPool(POOL_NAME, POOL_THREADS, reactor=reactor)
        return deferToPool(reactor, pool, f, *args)

    def userPath(self, user: str) -> str:
        """
        The directory of C{user}'s Maildir.

        @raise BadNameError: for a user name the store refuses.
        """
        return os.path.join(self.root, checkUserName(user))

    def folder(self, user: str, name: str = INBOX) -> Folder:
        """
        C{user}'s folder C{name} (it may not exist yet: L{Folder.scan} says).

        @raise BadNameError: for a bad user or folder name.
        """
        base = self.userPath(user)
        directory = folderDirectoryName(name)
        if directory is None:
            return Folder(self, user, INBOX, base)
        return Folder(self, user, name, os.path.join(base, directory))

    def _blockingDeliver(self, user: str, data: bytes) -> str:
        [key] = self._blockingDeliverMany([user], data)
        return key

    def _blockingDeliverMany(
        self, users: Sequence[str], data: bytes, binary: bool = False
    ) -> list[str]:
        # All or nothing: every copy is written and fsynced in tmp/ before the
        # first one is renamed into new/, so a full disk on the last copy
        # leaves no earlier one delivered (a client told 452 will resend).
        size = len(data)
        wire = size if binary else wireSize(data)
        for user in users:
            blockingCheckStorage(self, user, size)
        staged: list[tuple[str, str, str]] = []  # (user's Maildir, key, tmp path)
        delivered: list[str] = []
        try:
            for user in users:
                base = self.userPath(user)
                key = self._names.make(size, wire)
                tmp = os.path.join(base, "tmp", key)
                makeMaildir(base, isFolder=False)
                writeNew(tmp, data)
                staged.append((base, key, tmp))
            for base, key, tmp in staged:
                target = os.path.join(base, "new", key)
                os.rename(tmp, target)
                delivered.append(target)
            for base, _, _ in staged:
                fsyncDirectory(os.path.join(base, "new"))
        except BaseException as e:
            for path in delivered + [tmp for _, _, tmp in staged]:
                unlinkQuietly(path)
            if isinstance(e, OSError):
                what = ", ".join(repr(u) for u in users)
                raise storeError(e, f"delivering to {what}") from e
            raise
        return [key for _, key, _ in staged]

    def deliver(self, user: str, data: bytes) -> Deferred[str]:
        """
        Deliver C{data} to C{user}'s INBOX (creating the Maildir if needed).
        Fires once the message is durable in C{new/}.

        @return: the message's key.
        @raise DiskFullError: (in the Deferred) when the disk is full; nothing
            is left in C{tmp/} or C{new/}.
        @raise MaildirError: for any other failure, likewise.
        """
        return self.runWrite([user], self._blockingDeliver, user, data)

    def deliverMany(
        self, users: Sequence[str], data: bytes, binary: bool = False
    ) -> Deferred[list[str]]:
        """
        Deliver C{data} to the INBOX of each of C{users}, all or nothing: the
        Deferred fires once every copy is durable in C{new/}; on any failure
        no copy is left in C{tmp/} or C{new/}.  A C{binary} message (RFC
        3030 BINARYMIME) is served as it is, bare CR and LF included: its
        C{,W=} is its file's size.

        @return: the copies' keys, in the order of C{users}.
        @raise DiskFullError: (in the Deferred) when the disk is full.
        @raise MaildirError: for any other failure, likewise.
        """
        users = list(users)
        return self.runWrite(users, self._blockingDeliverMany, users, data, binary)

    def storageUsed(self, user: str) -> Deferred[int]:
        """
        The bytes C{user}'s messages take, in every folder.
        """
        return self._run(blockingUsage, self.userPath(user))

    def _blockingEnsure(self, user: str, folders: Sequence[str]) -> None:
        makeMaildir(self.userPath(user), isFolder=False)
        for name in folders:
            if not os.path.isdir(self.folder(user, name).path):
                try:
                    self._blockingCreate(user, name)
                except FolderExistsError:
                    # Another session made it meanwhile.
                    pass

    def ensureUser(self, user: str, folders: Sequence[str] = ()) -> Deferred[None]:
        """
        Create C{user}'s Maildir if it does not exist, and each of
        C{folders} that does not, in one trip to the pool.
        """
        return self._run(self._blockingEnsure, user, folders)

    def _blockingList(self, user: str) -> list[str]:
        base = self.userPath(user)
        try:
            entries = os.listdir(base)
        except FileNotFoundError:
            return [INBOX]
        names = [INBOX]
        for entry in entries:
            if (
                entry.startswith(".")
                and entry not in (".", "..")
                and os.path.isdir(os.path.join(base, entry, "cur"))
            ):
                names.append(entry[1:])
        return sorted(names)

    def listFolders(self, user: str) -> Deferred[list[str]]:
        """
        The names of C{user}'s folders, sorted, C{INBOX} included.
        """
        return self._run(self._blockingList, user)

    def _blockingCreate(self, user: str, name: str) -> None:
        folder = self.folder(user, name)
        if folder.name == INBOX or os.path.exists(folder.path):
            raise FolderExistsError(f"folder {name!r} exists")
        makeMaildir(self.userPath(user), isFolder=False)
        tmp = os.path.join(self.userPath(user), "tmp", "folder-" + secrets.token_hex(8))
        makeMaildir(tmp, isFolder=True)
        try:
            os.rename(tmp, folder.path)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FolderExistsError(f"folder {name!r} exists") from None
            raise

    def createFolder(self, user: str, name: str) -> Deferred[None]:
        """
        Create folder C{name} (its parents need not exist, as in Maildir++).

        @raise FolderExistsError: (in the Deferred) if it exists.
        """
        return self._run(self._blockingCreate, user, name)

    def _blockingRenameInbox(self, user: str, new: str) -> None:
        inbox = self.folder(user)
        self._blockingCreate(user, new)
        target = self.folder(user, new)
        # Under INBOX's lock, so no scan numbers a message half moved; the
        # new folder is not known to anyone yet.
        with inbox._lock():
            keywords = os.path.join(inbox.path, KEYWORDS)
            if os.path.exists(keywords):
                shutil.copyfile(keywords, os.path.join(target.path, KEYWORDS))
            for sub in ("cur", "new"):
                source = os.path.join(inbox.path, sub)
                for entry in os.listdir(source):
                    if entry.startswith("."):
                        continue
                    try:
                        os.rename(
                            os.path.join(source, entry),
                            os.path.join(target.path, sub, entry),
                        )
                    except FileNotFoundError:
                        continue  # expunged meanwhile
                fsyncDirectory(os.path.join(target.path, sub))
                fsyncDirectory(source)
            inbox._scanLocked(claimNew=False)

    def renameInbox(self, user: str, new: str) -> Deferred[None]:
        """
        IMAP's RENAME of INBOX (RFC 3501 section 6.3.5): create folder
        C{new} and move every message of INBOX into it (flags, keywords and
        dates kept, new UIDs); INBOX stays, empty.

        @raise FolderExistsError: (in the Deferred) if C{new} exists.
        """
        return self._run(self._blockingRenameInbox, user, new)

    def _blockingDeleteFolder(self, user: str, name: str) -> None:
        folder = self.folder(user, name)
        if folder.name == INBOX:
            raise BadNameError("INBOX cannot be deleted")
        # Renamed away first so that no reader sees a half-removed folder.
        trash = os.path.join(
            self.userPath(user), "tmp", "deleted-" + secrets.token_hex(8)
        )
        # Every value given is recorded when given; this records one given
        # before the record existed.
        uidlist = Uidlist.read(os.path.join(folder.path, UIDLIST))
        try:
            os.rename(folder.path, trash)
        except FileNotFoundError:
            raise NoSuchFolderError(f"no folder {name!r}") from None
        if uidlist is not None:
            UidValidities(self.userPath(user)).remember(folder.name, uidlist.validity)
        shutil.rmtree(trash, ignore_errors=True)

    def deleteFolder(self, user: str, name: str) -> Deferred[None]:
        """
        Delete folder C{name} and its messages (not its subfolders).

        @raise NoSuchFolderError: (in the Deferred) if it does not exist.
        """
        return self._run(self._blockingDeleteFolder, user, name)

    def _blockingRename(self, user: str, old: str, new: str) -> None:
        source, target = self.folder(user, old), self.folder(user, new)
        if INBOX in (source.name, target.name):
            raise BadNameError("INBOX cannot be renamed here")
        if not os.path.isdir(source.path):
            raise NoSuchFolderError(f"no folder {old!r}")
        if os.path.exists(target.path):
            raise FolderExistsError(f"folder {new!r} exists")
        base = self.userPath(user)
        prefix = "." + old + "."
        children = [e[len(prefix) :] for e in os.listdir(base) if e.startswith(prefix)]
        os.rename(source.path, target.path)
        for child in children:
            os.rename(
                os.path.join(base, prefix + child),
                os.path.join(base, "." + new + "." + child),
            )
        validities = UidValidities(base)
        for moved in [target.name] + [f"{new}.{child}" for child in children]:
            folder = self.folder(user, moved)
            if not os.path.isdir(folder.path):
                continue
            with folder._lock():
                path = os.path.join(folder.path, UIDLIST)
                uidlist = Uidlist.read(path)
                if uidlist is None:
                    continue  # its first scan takes a new value
                validity = validities.keep(folder.name, uidlist.validity)
                if validity != uidlist.validity:
                    uidlist.validity = validity
                    uidlist.write(path)

    def renameFolder(self, user: str, old: str, new: str) -> Deferred[None]:
        """
        Rename folder C{old} and its subfolders to C{new}; UIDs and
        UIDVALIDITY move with them, but a folder arriving on a name that once
        had as high a UIDVALIDITY takes a new one.

        @raise NoSuchFolderError: or L{FolderExistsError} (in the Deferred).
        """
        return self._run(self._blockingRename, user, old, new)

    def _blockingLock(self, user: str, name: str) -> MailboxLock:
        folder = self.folder(user, name)
        makeMaildir(self.userPath(user), isFolder=False)
        locked = Locked(os.path.join(folder.path, MAILBOX_LOCK), blocking=False)
        try:
            locked.__enter__()
        except BlockingIOError:
            raise MailboxLockedError(f"{user!r}'s {folder.name} is in use") from None
        return MailboxLock(locked)

    def lockMailbox(self, user: str, name: str = INBOX) -> Deferred[MailboxLock]:
        """
        Take C{user}'s exclusive session lock on folder C{name} without
        waiting (POP3 holds it for a session; other sessions get
        L{MailboxLockedError}).  Deliveries and IMAP are not blocked by it.
        """
        return self._run(self._blockingLock, user, name)

    def _blockingSubscriptions(self, user: str) -> list[str]:
        path = os.path.join(self.userPath(user), SUBSCRIPTIONS)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return [line.rstrip("\n") for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def subscriptions(self, user: str) -> Deferred[list[str]]:
        """
        The folder names C{user} subscribed to (IMAP LSUB), in the order
        subscribed; they need not exist.  Kept one a line in C{subscriptions}
        in the user's Maildir, as Courier does.
        """
        return self._run(self._blockingSubscriptions, user)

    def _blockingSetSubscribed(self, user: str, name: str, subscribed: bool) -> None:
        if not name or any(c in name for c in "\r\n\x00"):
            raise BadNameError(f"bad folder name {name!r}")
        base = self.userPath(user)
        makeMaildir(base, isFolder=False)
        # Read, change and write under one lock: two sessions subscribing at
        # once must not lose either name.
        with Locked(os.path.join(base, SUBSCRIPTIONS + ".lock")):
            names = self._blockingSubscriptions(user)
            if subscribed and name not in names:
                names.append(name)
            elif not subscribed and name in names:
                names = [n for n in names if n != name]
            else:
                return
            data = "".join(n + "\n" for n in names).encode("utf-8")
            replaceFile(os.path.join(base, SUBSCRIPTIONS), data)

    def setSubscribed(self, user: str, name: str, subscribed: bool) -> Deferred[None]:
        """
        Subscribe C{user} to folder C{name} (IMAP SUBSCRIBE), or unsubscribe
        (C{subscribed} false); a no-op if nothing changes.

        @raise BadNameError: (in the Deferred) for an empty name or one with
            a line break or NUL.
        """
        return self._run(self._blockingSetSubscribed, user, name, subscribed)
