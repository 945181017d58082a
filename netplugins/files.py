# -*- test-case-name: tests.test_files -*-
"""
Files that running servers read: written whole or not at all, and noticed
when they change.
"""

from __future__ import annotations

import os
import stat
import tempfile

#: What identifies a file's contents without reading them: device, inode, size
#: and modification time (a rewrite in place or a rename over it changes one).
Signature = tuple[int, int, int, int]


def signatureOf(st: os.stat_result) -> Signature:
    """
    The L{Signature} of a file from its C{stat} (or C{fstat}) result.
    """
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def fileSignature(path: str) -> Signature | None:
    """
    The L{Signature} of C{path} now, or C{None} if it cannot be read.
    Blocking (one C{stat}).
    """
    try:
        return signatureOf(os.stat(path))
    except OSError:
        return None


#: The mode of a new file when the caller gives none: secrets are never
#: readable by others, not even for a moment under a lax umask.
NEW_FILE_MODE = 0o600


def writeAtomically(path: str, data: bytes, mode: int | None = None) -> None:
    """
    Replace C{path} with C{data}: readers see the old contents or the new,
    never a mixture (temporary file in the same directory, fsync, rename,
    fsync of the directory).

    @param mode: the new file's mode; by default an existing file keeps its
        mode and, where permitted, its owner, and a new one is made 0600.
    """
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    existing: os.stat_result | None = None
    if mode is None:
        try:
            existing = os.stat(target)
        except FileNotFoundError:
            pass
    fd, temporary = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(target) + "."
    )
    try:
        with os.fdopen(fd, "wb") as f:
            if existing is None:
                os.fchmod(f.fileno(), NEW_FILE_MODE if mode is None else mode)
            else:
                os.fchmod(f.fileno(), stat.S_IMODE(existing.st_mode))
                try:
                    os.fchown(f.fileno(), existing.st_uid, existing.st_gid)
                except PermissionError:
                    pass  # not root: the file becomes ours, as with htpasswd
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    dirfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
