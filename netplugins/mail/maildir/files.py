"""
The disk work under the Maildir store (L{netplugins.mail.maildir.store}):
durable writes (write, fsync, rename, fsync the directory), C{flock} locks, the
folder's UID list file, the user's record of UIDVALIDITY values given, and
turning C{OSError}s into the store's errors.

Everything here blocks: the store runs it in its thread pool.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import time

from netplugins.mail.maildir.errors import DiskFullError, MaildirError

UIDLIST = "netplugins-uidlist"
UIDVALIDITIES = "netplugins-uidvalidity"
#: A folder's keywords, one C{<index> <name>} a line, as Dovecot keeps them:
#: index I{n} is the flag letter C{a + n} in message names.
KEYWORDS = "dovecot-keywords"
MAX_KEYWORDS = 26
MAX_UIDVALIDITY = 2**32 - 1
_UIDLIST_MAGIC = "netplugins-uidlist 1"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def fsyncDirectory(path: str) -> None:
    """
    Make the entries of directory C{path} durable (a rename into it).
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writeAll(fd: int, data: bytes) -> None:
    """
    Write all of C{data} to C{fd} (the one place message bytes hit the disk;
    tests replace it to simulate a full disk).
    """
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def storeError(e: OSError, what: str) -> MaildirError:
    """
    The store error for C{e}, met while doing C{what}: L{DiskFullError}
    for a full disk or quota, else L{MaildirError}.
    """
    if e.errno in _DISK_FULL:
        return DiskFullError(f"{what}: no space left")
    return MaildirError(f"{what}: {e.strerror or e}")


class Locked:
    """
    An exclusive C{flock} on a lock file, as a context manager.
    """

    def __init__(self, path: str, blocking: bool = True) -> None:
        self.path = path
        self.blocking = blocking
        self.fd = -1

    def __enter__(self) -> Locked:
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
        """
        Drop the lock (a no-op the second time).
        """
        if self.fd >= 0:
            os.close(self.fd)  # closing the last descriptor drops the lock
            self.fd = -1


class MailboxLock:
    """
    A held mailbox lock (POP3 keeps one per session); L{release} it.
    """

    def __init__(self, locked: Locked) -> None:
        self._locked = locked

    def release(self) -> None:
        """
        Drop the lock (a no-op the second time).
        """
        self._locked.release()


class Uidlist:
    """
    A folder's UID records, as read from and written to C{netplugins-uidlist}.
    """

    def __init__(self, validity: int, nextUid: int, uids: dict[str, int]) -> None:
        self.validity = validity
        self.nextUid = nextUid
        self.uids = uids

    @classmethod
    def read(cls, path: str) -> Uidlist | None:
        """
        The records in file C{path}; C{None} if it is missing or unreadable
        (the folder then starts a new UIDVALIDITY).
        """
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
        """
        Replace file C{path} by these records, atomically.
        """
        lines = [_UIDLIST_MAGIC, f"V{self.validity} N{self.nextUid}"]
        lines.extend(
            f"{uid} {key}" for key, uid in sorted(self.uids.items(), key=lambda i: i[1])
        )
        replaceFile(path, ("\n".join(lines) + "\n").encode("utf-8"))


def readKeywords(folder: str) -> list[str]:
    """
    The keywords of the folder at C{folder}, by index (at most
    L{MAX_KEYWORDS}); a missing or unreadable file holds none, and lines
    that do not parse are skipped (their letters then name no keyword).
    """
    try:
        with open(os.path.join(folder, KEYWORDS), "rb") as f:
            data = f.read(64 * 1024)
    except OSError:
        return []
    names: dict[int, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        index, _, name = line.partition(" ")
        if index.isdigit() and int(index) < MAX_KEYWORDS and name:
            names.setdefault(int(index), name)
    keywords: list[str] = []
    for position in range(MAX_KEYWORDS):
        if position not in names:
            break
        keywords.append(names[position])
    return keywords


def writeKeywords(folder: str, keywords: list[str]) -> None:
    """
    Replace the keywords file of the folder at C{folder}, atomically.
    """
    data = "".join(f"{i} {name}\n" for i, name in enumerate(keywords))
    replaceFile(os.path.join(folder, KEYWORDS), data.encode("utf-8"))


def now() -> int:
    """
    The current time in whole seconds (tests replace it to freeze the clock).
    """
    return int(time.time())


class UidValidities:
    """
    The UIDVALIDITY values given to one user's folders, in
    C{netplugins-uidvalidity} in the user's Maildir: the highest one given, and
    the highest one each folder name had.

    RFC 3501 section 2.3.1.1 wants a folder name, its UIDVALIDITY and a UID to
    name one message forever, so a new UID list (a folder created again after
    a delete, or whose uidlist was lost) must get a value above any its name
    ever had, even within the second: the clock alone would give the old
    value again.  Read and rewritten (atomically) under an exclusive C{flock}
    on C{netplugins-uidvalidity.lock}; taken inside a folder's lock, never
    around one.
    """

    def __init__(self, directory: str) -> None:
        """
        @param directory: the user's Maildir.
        """
        self.path = os.path.join(directory, UIDVALIDITIES)

    def _read(self) -> tuple[int, dict[str, int]]:
        # A missing or unreadable record leaves the clock as the only floor,
        # which is what every value was before the record existed.
        try:
            with open(self.path, encoding="utf-8") as f:
                record = json.load(f)
            names = {str(k): int(v) for k, v in record["names"].items()}
            return int(record["highest"]), names
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0, {}

    def _write(self, highest: int, names: dict[str, int]) -> None:
        record = {"highest": highest, "names": names}
        replaceFile(self.path, json.dumps(record, sort_keys=True).encode("utf-8"))

    def _update(self, name: str, validity: int | None) -> int:
        with Locked(self.path + ".lock"):
            highest, names = self._read()
            if validity is None or validity <= names.get(name, 0):
                validity = max(now(), highest + 1)
                if validity > MAX_UIDVALIDITY:
                    raise MaildirError("no 32-bit UIDVALIDITY left")
            names[name] = validity
            self._write(max(highest, validity), names)
            return validity

    def new(self, name: str) -> int:
        """
        A UIDVALIDITY for a new UID list of folder C{name}: above every value
        given to any folder of the user (so above any C{name} ever had), at
        least the current time, non-zero and 32-bit; recorded before it is
        returned.

        @raise MaildirError: if 32 bits are used up.
        """
        return self._update(name, None)

    def keep(self, name: str, validity: int) -> int:
        """
        The UIDVALIDITY of a folder renamed to C{name} that had C{validity}:
        C{validity} itself if C{name} never had as high a value, else a
        L{new} one.
        """
        return self._update(name, validity)

    def remember(self, name: str, validity: int) -> None:
        """
        Record that folder C{name} had C{validity} (it is being deleted: its
        value may predate this record).
        """
        with Locked(self.path + ".lock"):
            highest, names = self._read()
            if validity > names.get(name, 0):
                names[name] = validity
                self._write(max(highest, validity), names)


def replaceFile(path: str, data: bytes) -> None:
    """
    Replace C{path} by C{data} atomically: a temporary file, fsync, rename,
    fsync of the directory.
    """
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    writeNew(tmp, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        unlinkQuietly(tmp)
        raise
    fsyncDirectory(os.path.dirname(path))


def unlinkQuietly(path: str) -> None:
    """
    Remove C{path}, if it is there.
    """
    try:
        os.unlink(path)
    except OSError:
        pass


def fsyncFile(path: str) -> None:
    """
    Make the contents of file C{path} durable.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writeNew(path: str, data: bytes) -> None:
    """
    Create C{path} with C{data} and fsync it; on error remove it and re-raise.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            writeAll(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        unlinkQuietly(path)
        raise


def makeMaildir(path: str, isFolder: bool) -> None:
    """
    Create the Maildir C{path} (C{tmp}, C{new}, C{cur}) if missing; a
    Maildir++ subfolder (C{isFolder}) also gets its C{maildirfolder} file.
    """
    # makedirs gives its mode to the last directory only: the Maildir itself
    # is made first, so that it is not listable by other local users either.
    os.makedirs(path, mode=0o700, exist_ok=True)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
    if isFolder:
        open(os.path.join(path, "maildirfolder"), "ab").close()
