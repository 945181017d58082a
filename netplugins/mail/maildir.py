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
  - I{Flags} live in the name's info suffix (C{<key>:2,FS}), letters sorted.
  - I{Sizes} live in the name too, as Dovecot writes them: C{,S=} the file's
    size, C{,W=} its size with CRLF line ends (what IMAP's RFC822.SIZE and
    POP3's octet counts report), so listing a folder reads no message.
  - I{UIDs} are stable: a message keeps its UID across scans, processes and
    flag changes; new ones get C{uidNext} in the order they are found.  The
    uidlist is rewritten atomically (temporary file, fsync, rename) under an
    exclusive C{flock} on C{netplugins-uidlist.lock}, so several processes (and
    several threads: C{flock} locks belong to open files) can share a folder.
    An unreadable uidlist starts a new UIDVALIDITY.
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
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import count
from typing import Any, TypeVar

from attrs import evolve, frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger

_T = TypeVar("_T")

POOL_NAME = "netplugins-maildir"
POOL_THREADS = 8
UIDLIST = "netplugins-uidlist"
UIDLIST_LOCK = "netplugins-uidlist.lock"
MAILBOX_LOCK = "netplugins-mailbox.lock"
SUBSCRIPTIONS = "subscriptions"
_UIDLIST_MAGIC = "netplugins-uidlist 1"
INBOX = "INBOX"

#: Maildir's standard flag letters.
FLAG_LETTERS = "DFPRST"

#: IMAP system flags and their Maildir letters (P, "passed", has no IMAP flag).
IMAP_FLAGS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class MaildirError(Exception):
    """
    The store could not do what was asked.
    """


class DiskFullError(MaildirError):
    """
    No space (or quota) left: nothing was stored.
    """


class BadNameError(MaildirError, ValueError):
    """
    A user or folder name the store refuses.
    """


class NoSuchFolderError(MaildirError):
    """
    The folder does not exist.
    """


class FolderExistsError(MaildirError):
    """
    The folder to create (or rename to) exists already.
    """


class MailboxLockedError(MaildirError):
    """
    Another session holds the mailbox's lock.
    """


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
    """

    uid: int
    key: str
    flags: str
    size: int
    internalDate: float
    recent: bool
    path: str
    wireSize: int | None = None


@frozen
class FolderState:
    """
    What a scan saw: the folder's UIDVALIDITY and next UID, and its messages
    sorted by UID.
    """

    uidValidity: int
    uidNext: int
    messages: tuple[Message, ...]


def normaliseFlags(flags: Iterable[str]) -> str:
    """
    Maildir flag letters, deduplicated and sorted; unknown letters dropped.
    """
    return "".join(sorted(set(flags) & set(FLAG_LETTERS)))


def checkUserName(user: str) -> str:
    """
    @return: C{user}, if it can name a Maildir.
    @raise BadNameError: otherwise.
    """
    if (
        not isinstance(user, str)
        or not user
        or len(user.encode("utf-8", "surrogateescape")) > 255
        or "/" in user
        or "\x00" in user
        or user.startswith(".")
    ):
        raise BadNameError(f"bad user name {user!r}")
    return user


def folderDirectoryName(name: str) -> str | None:
    """
    The directory (relative to the user's Maildir) of folder C{name}: C{None}
    for C{INBOX}, else C{.name}.

    @raise BadNameError: for a name the store refuses.
    """
    if not isinstance(name, str) or "\x00" in name or "/" in name:
        raise BadNameError(f"bad folder name {name!r}")
    if name.upper() == INBOX:
        return None
    parts = name.split(".")
    if parts[0].upper() == INBOX:
        raise BadNameError(f"INBOX cannot have subfolders: {name!r}")
    if any(p in ("", "..") for p in parts) or len(name.encode("utf-8")) > 250:
        raise BadNameError(f"bad folder name {name!r}")
    return "." + name


def _splitName(name: str) -> tuple[str, str]:
    """
    A Maildir file name's key and flags.
    """
    key, sep, info = name.partition(":")
    if sep and info.startswith("2,"):
        return key, normaliseFlags(info[2:])
    return key, ""


def wireSize(data: bytes) -> int:
    """
    The size of C{data} once every bare LF is made CRLF (what
    L{netplugins.mail.imapfetch.canonical} serves).
    """
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def _sizeFromKey(key: str, field: str = "S=") -> int | None:
    for part in key.split(",")[1:]:
        if part.startswith(field):
            try:
                return int(part[2:])
            except ValueError:
                return None
    return None


def _timeFromKey(key: str) -> float | None:
    head = key.split(".", 1)[0]
    return float(head) if head.isdigit() else None


def _fsyncDirectory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _writeAll(fd: int, data: bytes) -> None:
    """
    Write all of C{data} to C{fd} (the one place message bytes hit the disk;
    tests replace it to simulate a full disk).
    """
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _storeError(e: OSError, what: str) -> MaildirError:
    if e.errno in _DISK_FULL:
        return DiskFullError(f"{what}: no space left")
    return MaildirError(f"{what}: {e.strerror or e}")


class _Locked:
    """
    An exclusive C{flock} on a lock file, as a context manager.
    """

    def __init__(self, path: str, blocking: bool = True) -> None:
        self.path = path
        self.blocking = blocking
        self.fd = -1

    def __enter__(self) -> _Locked:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            mode = fcntl.LOCK_EX if self.blocking else fcntl.LOCK_EX | fcntl.LOCK_NB
            fcntl.flock(self.fd, mode)
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the last descriptor drops the lock
            self.fd = -1


class MailboxLock:
    """
    A held mailbox lock (POP3 keeps one per session); L{release} it.
    """

    def __init__(self, locked: _Locked) -> None:
        self._locked = locked

    def release(self) -> None:
        """
        Drop the lock (a no-op the second time).
        """
        self._locked.release()


class _Uidlist:
    """
    A folder's UID records, as read from and written to C{netplugins-uidlist}.
    """

    def __init__(self, validity: int, nextUid: int, uids: dict[str, int]) -> None:
        self.validity = validity
        self.nextUid = nextUid
        self.uids = uids

    @classmethod
    def read(cls, path: str) -> _Uidlist | None:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            if not lines or lines[0] != _UIDLIST_MAGIC:
                return None
            v, n = lines[1].split()
            if not (v.startswith("V") and n.startswith("N")):
                return None
            uids = {}
            for line in lines[2:]:
                uid, key = line.split(" ", 1)
                uids[key] = int(uid)
            return cls(int(v[1:]), int(n[1:]), uids)
        except FileNotFoundError:
            return None
        except (ValueError, IndexError, UnicodeDecodeError):
            return None

    def write(self, path: str) -> None:
        lines = [_UIDLIST_MAGIC, f"V{self.validity} N{self.nextUid}"]
        lines.extend(
            f"{uid} {key}" for key, uid in sorted(self.uids.items(), key=lambda i: i[1])
        )
        _replaceFile(path, ("\n".join(lines) + "\n").encode("utf-8"))


def _replaceFile(path: str, data: bytes) -> None:
    """
    Replace C{path} by C{data} atomically: a temporary file, fsync, rename,
    fsync of the directory.
    """
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    _writeNew(tmp, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlinkQuietly(tmp)
        raise
    _fsyncDirectory(os.path.dirname(path))


def _unlinkQuietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _Names:
    """
    Unique Maildir names: time, microseconds, pid, a counter and randomness,
    then the host (the classic scheme, with randomness against pid reuse
    across containers).
    """

    def __init__(self, hostname: str | None = None) -> None:
        host = hostname or socket.gethostname() or "localhost"
        self.host = host.replace("/", "\\057").replace(":", "\\072")
        self._counter = count()

    def make(self, size: int, wire: int, when: float | None = None) -> str:
        now = time.time()
        stamp = int(when if when is not None else now)
        micro = int((now % 1) * 1_000_000)
        return (
            f"{stamp}.M{micro}P{os.getpid()}Q{next(self._counter)}"
            f"R{secrets.token_hex(8)}.{self.host},S={size},W={wire}"
        )


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

    def _lock(self) -> _Locked:
        return _Locked(os.path.join(self.path, UIDLIST_LOCK))

    def _requireExists(self) -> None:
        if not os.path.isdir(os.path.join(self.path, "cur")):
            raise NoSuchFolderError(f"no folder {self.name!r} for {self.user!r}")

    def _loadUids(self) -> _Uidlist:
        uidlist = _Uidlist.read(os.path.join(self.path, UIDLIST))
        if uidlist is None:
            uidlist = _Uidlist(int(time.time()), 1, {})
        return uidlist

    def _scanLocked(self, claimNew: bool) -> FolderState:
        uidlist = self._loadUids()
        changed = not os.path.exists(os.path.join(self.path, UIDLIST))
        newDir = os.path.join(self.path, "new")
        curDir = os.path.join(self.path, "cur")
        found: dict[str, tuple[str, str, bool]] = {}
        for name in sorted(os.listdir(newDir)):
            if name.startswith("."):
                continue
            key, flags = _splitName(name)
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
            key, flags = _splitName(name)
            if key not in found:
                found[key] = (os.path.join(curDir, name), flags, False)
        gone = set(uidlist.uids) - set(found)
        for key in gone:
            del uidlist.uids[key]
        changed = changed or bool(gone)
        # New arrivals get UIDs in arrival order: their names start with the time.
        for key in sorted(set(found) - set(uidlist.uids), key=_arrivalOrder):
            uidlist.uids[key] = uidlist.nextUid
            uidlist.nextUid += 1
            changed = True
        if changed:
            uidlist.write(os.path.join(self.path, UIDLIST))
        messages = []
        for key, (path, flags, recent) in found.items():
            size = _sizeFromKey(key)
            date = _timeFromKey(key)
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
                    _sizeFromKey(key, "W="),
                )
            )
        messages.sort(key=lambda m: m.uid)
        return FolderState(uidlist.validity, uidlist.nextUid, tuple(messages))

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
        self, messages: Sequence[Message], flags: str
    ) -> list[Message]:
        flags = normaliseFlags(flags)
        updated = []
        with self._lock():
            for message in messages:
                try:
                    path = self._locate(message)
                except MaildirError:
                    continue
                target = os.path.join(self.path, "cur", f"{message.key}:2,{flags}")
                if path != target:
                    os.rename(path, target)
                updated.append(evolve(message, flags=flags, path=target))
        return updated

    def _blockingDelete(self, messages: Sequence[Message]) -> None:
        with self._lock():
            for message in messages:
                try:
                    os.unlink(self._locate(message))
                except (MaildirError, FileNotFoundError):
                    pass
            uidlist = self._loadUids()
            for message in messages:
                uidlist.uids.pop(message.key, None)
            uidlist.write(os.path.join(self.path, UIDLIST))

    def _blockingStore(
        self,
        data: bytes | None,
        source: Message | None,
        flags: str,
        internalDate: float | None,
    ) -> Message:
        """
        Put a message into C{cur/} with a UID: C{data}, or a link to (else a
        copy of) the file of C{source}, a message of this store.
        """
        self._requireExists()
        flags = normaliseFlags(flags)
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
                    _fsyncFile(tmp)
            else:
                _writeNew(tmp, data)
            if internalDate is not None:
                os.utime(tmp, (internalDate, internalDate))
            target = os.path.join(self.path, "cur", f"{key}:2,{flags}")
            with self._lock():
                os.rename(tmp, target)
                _fsyncDirectory(os.path.join(self.path, "cur"))
                # The scan numbers it after every message already there.
                state = self._scanLocked(claimNew=False)
        except OSError as e:
            _unlinkQuietly(tmp)
            raise _storeError(e, f"storing into {self.name!r}") from e
        for message in state.messages:
            if message.key == key:
                return message
        raise MaildirError(f"message stored into {self.name!r} vanished")

    # The public, Deferred API.

    def scan(self, claimNew: bool = True) -> Deferred[FolderState]:
        """
        Read the folder: assign UIDs to new messages and, if C{claimNew},
        move them from C{new/} to C{cur/} (they are C{recent} in the result;
        POP3 and IMAP claim, a read-only IMAP EXAMINE may not).

        @raise NoSuchFolderError: (in the Deferred) if the folder does not exist.
        """
        return self.store._run(self._blockingScan, claimNew)

    def read(self, message: Message) -> Deferred[bytes]:
        """
        The message's bytes.

        @raise MaildirError: (in the Deferred) if it was deleted meanwhile.
        """
        return self.store._run(self._blockingRead, message)

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

        @return: the updated messages.
        """
        return self.store._run(self._blockingSetFlags, list(messages), flags)

    def delete(self, messages: Sequence[Message]) -> Deferred[None]:
        """
        Remove C{messages} for good (POP3 UPDATE, IMAP EXPUNGE).
        """
        return self.store._run(self._blockingDelete, list(messages))

    def append(
        self, data: bytes, flags: str = "", internalDate: float | None = None
    ) -> Deferred[Message]:
        """
        Store C{data} durably (fsync, rename, fsync) straight into C{cur/}
        with C{flags}, and give it a UID.

        @return: the stored message (for UIDPLUS's APPENDUID).
        @raise DiskFullError: (in the Deferred) with nothing left behind.
        """
        return self.store._run(self._blockingStore, data, None, flags, internalDate)

    def copy(
        self, messages: Sequence[Message], target: Folder
    ) -> Deferred[list[Message]]:
        """
        Copy C{messages} (with their flags and dates) into C{target}.

        @return: the copies, in order (for UIDPLUS's COPYUID).
        """

        def copyAll() -> list[Message]:
            copies = []
            for message in messages:
                source = evolve(message, path=self._locate(message))
                copies.append(
                    target._blockingStore(
                        None, source, message.flags, message.internalDate
                    )
                )
            return copies

        return self.store._run(copyAll)


_MICROSECONDS = re.compile(r"\d+\.M(\d+)")


def _arrivalOrder(key: str) -> tuple[float, int, str]:
    # Seconds, then microseconds compared as numbers: as strings, M99 would
    # sort after M100 and two deliveries in one second could swap UIDs.
    micro = _MICROSECONDS.match(key)
    return (_timeFromKey(key) or 0.0, int(micro.group(1)) if micro else 0, key)


def _fsyncFile(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _writeNew(path: str, data: bytes) -> None:
    """
    Create C{path} with C{data} and fsync it; on error remove it and re-raise.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            _writeAll(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _unlinkQuietly(path)
        raise


def _makeMaildir(path: str, isFolder: bool) -> None:
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
    if isFolder:
        open(os.path.join(path, "maildirfolder"), "ab").close()


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
    ) -> None:
        """
        @param reactor: delivers the pool's results; the global one by default.
        @param runBlocking: how blocking calls run, C{f(*args) -> Deferred};
            by default in the C{netplugins-maildir} pool (tests pass
            C{maybeDeferred} to run them inline).
        @param hostname: the host part of new message names.
        """
        self.root = root
        self._reactor = reactor
        self._runBlocking = runBlocking
        self._names = _Names(hostname)

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

    def _blockingDeliverMany(self, users: Sequence[str], data: bytes) -> list[str]:
        # All or nothing: every copy is written and fsynced in tmp/ before the
        # first one is renamed into new/, so a full disk on the last copy
        # leaves no earlier one delivered (a client told 452 will resend).
        size, wire = len(data), wireSize(data)
        staged: list[tuple[str, str, str]] = []  # (user's Maildir, key, tmp path)
        delivered: list[str] = []
        try:
            for user in users:
                base = self.userPath(user)
                key = self._names.make(size, wire)
                tmp = os.path.join(base, "tmp", key)
                _makeMaildir(base, isFolder=False)
                _writeNew(tmp, data)
                staged.append((base, key, tmp))
            for base, key, tmp in staged:
                target = os.path.join(base, "new", key)
                os.rename(tmp, target)
                delivered.append(target)
            for base, _, _ in staged:
                _fsyncDirectory(os.path.join(base, "new"))
        except BaseException as e:
            for path in delivered + [tmp for _, _, tmp in staged]:
                _unlinkQuietly(path)
            if isinstance(e, OSError):
                what = ", ".join(repr(u) for u in users)
                raise _storeError(e, f"delivering to {what}") from e
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
        return self._run(self._blockingDeliver, user, data)

    def deliverMany(self, users: Sequence[str], data: bytes) -> Deferred[list[str]]:
        """
        Deliver C{data} to the INBOX of each of C{users}, all or nothing: the
        Deferred fires once every copy is durable in C{new/}; on any failure
        no copy is left in C{tmp/} or C{new/}.

        @return: the copies' keys, in the order of C{users}.
        @raise DiskFullError: (in the Deferred) when the disk is full.
        @raise MaildirError: for any other failure, likewise.
        """
        return self._run(self._blockingDeliverMany, list(users), data)

    def _blockingEnsure(self, user: str) -> None:
        _makeMaildir(self.userPath(user), isFolder=False)

    def ensureUser(self, user: str) -> Deferred[None]:
        """
        Create C{user}'s Maildir if it does not exist.
        """
        return self._run(self._blockingEnsure, user)

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
        _makeMaildir(self.userPath(user), isFolder=False)
        tmp = os.path.join(self.userPath(user), "tmp", "folder-" + secrets.token_hex(8))
        _makeMaildir(tmp, isFolder=True)
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

    def _blockingDeleteFolder(self, user: str, name: str) -> None:
        folder = self.folder(user, name)
        if folder.name == INBOX:
            raise BadNameError("INBOX cannot be deleted")
        # Renamed away first so that no reader sees a half-removed folder.
        trash = os.path.join(
            self.userPath(user), "tmp", "deleted-" + secrets.token_hex(8)
        )
        try:
            os.rename(folder.path, trash)
        except FileNotFoundError:
            raise NoSuchFolderError(f"no folder {name!r}") from None
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
        children = [e for e in os.listdir(base) if e.startswith(prefix)]
        os.rename(source.path, target.path)
        for child in children:
            os.rename(
                os.path.join(base, child),
                os.path.join(base, "." + new + "." + child[len(prefix) :]),
            )

    def renameFolder(self, user: str, old: str, new: str) -> Deferred[None]:
        """
        Rename folder C{old} and its subfolders to C{new}; UIDs and
        UIDVALIDITY move with them.

        @raise NoSuchFolderError: or L{FolderExistsError} (in the Deferred).
        """
        return self._run(self._blockingRename, user, old, new)

    def _blockingLock(self, user: str, name: str) -> MailboxLock:
        folder = self.folder(user, name)
        _makeMaildir(self.userPath(user), isFolder=False)
        locked = _Locked(os.path.join(folder.path, MAILBOX_LOCK), blocking=False)
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
        _makeMaildir(base, isFolder=False)
        # Read, change and write under one lock: two sessions subscribing at
        # once must not lose either name.
        with _Locked(os.path.join(base, SUBSCRIPTIONS + ".lock")):
            names = self._blockingSubscriptions(user)
            if subscribed and name not in names:
                names.append(name)
            elif not subscribed and name in names:
                names = [n for n in names if n != name]
            else:
                return
            data = "".join(n + "\n" for n in names).encode("utf-8")
            _replaceFile(os.path.join(base, SUBSCRIPTIONS), data)

    def setSubscribed(self, user: str, name: str, subscribed: bool) -> Deferred[None]:
        """
        Subscribe C{user} to folder C{name} (IMAP SUBSCRIBE), or unsubscribe
        (C{subscribed} false); a no-op if nothing changes.

        @raise BadNameError: (in the Deferred) for an empty name or one with
            a line break or NUL.
        """
        return self._run(self._blockingSetSubscribed, user, name, subscribed)
