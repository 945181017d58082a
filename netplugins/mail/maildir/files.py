"""
The disk work under the Maildir store (L{netplugins.mail.maildir.store}):
durable writes (write, fsync, rename, fsync the directory), C{flock} locks, the
folder's UID list file, and turning C{OSError}s into the store's errors.

Everything here blocks: the store runs it in its thread pool.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets

from netplugins.mail.maildir.errors import DiskFullError, MaildirError

UIDLIST = "netplugins-uidlist"
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
