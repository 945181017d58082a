"""
The user store of the file services (np-ftp, np-ssh's SFTP): where a logged-in
user's files are, what they may do there, and a view of the filesystem that
cannot leave that place.

L{HomeStore} answers, for an avatar ID a checker gave, the user's L{Home}: a
directory from a template (C{--root /srv/ftp/{user}}; C{{homeDirectory}}
takes the C{homeDirectory} attribute of an C{ldap:} checker's entry), whether
the user may write, and an optional quota in bytes.  L{HomeStore.jailFor}
gives the L{Jail} a session works through.

A L{Jail} takes client paths (C{str} or C{bytes}, absolute or relative to the
session's working directory) and resolves them inside the home as if the home
were the root of the filesystem, the way C{openat2(RESOLVE_IN_ROOT)} does:
  - C{..} at the top stays at the top; absolute paths start at the home;
  - a NUL byte is refused (C{EINVAL});
  - a symbolic link is read and resolved in the same way, never followed by
    the kernel: an absolute target starts at the home again, so a link to
    C{/etc} names C{HOME/etc};
  - the walk goes one directory at a time through file descriptors opened
    with C{O_NOFOLLOW}, and every operation uses the last directory's
    descriptor (C{dir_fd}) and C{O_NOFOLLOW}, so a link swapped in after it
    was checked makes the operation fail rather than follow it (no
    time-of-check to time-of-use window).
Listings are bounded (L{MAX_LIST_ENTRIES} unless asked otherwise); only
regular files are opened (no FIFOs or devices, opened without blocking).

Errors are C{OSError}s with the errno a local filesystem would give
(C{ENOENT}, C{EACCES} for a read-only user, C{EDQUOT} over quota, C{ELOOP},
C{EINVAL}), so that each protocol maps them to its own replies.

A user's entry may also require TLS (L{HomeStore.tlsRequiredFor}, known
before the password): C{control} (the password and commands only over TLS)
or C{all} (data too), from the store's own list or an C{ldap:} checker's
C{tlsRequired} attribute.

Every L{Jail} method blocks: run it in the pool with L{Jail.inPool}.
Names come back as C{str} (undecodable bytes as surrogate escapes, as
C{os.fsdecode} does); C{os.fsencode} gives the exact bytes back.
"""

from __future__ import annotations

import errno
import os
import stat
import string
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, BinaryIO, ParamSpec, TypeVar

from attrs import frozen
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import Interface, implementer

from netplugins.threads import blockingPool, deferToPool

_P = ParamSpec("_P")
_T = TypeVar("_T")

POOL_NAME = "netplugins-homes"
#: Entries a listing returns unless the caller asks for fewer.
MAX_LIST_ENTRIES = 10_000
#: Symbolic links followed while resolving one path (Linux's own limit).
MAX_SYMLINKS = 40
#: The longest client path accepted, in bytes.
MAX_PATH = 4096
#: Placeholders a root template may use.
PLACEHOLDERS = ("user", "homeDirectory")
#: The homes of np-ftp and np-ssh without --root, under the state
#: directory: one store, so what one service stores the other serves.
DEFAULT_ROOT = os.path.join("homes", "{user}")
#: What a user's entry may require of TLS, weakest first (np-ftp's
#: C{--tls-required} words; C{none} requires nothing).
TLS_POLICIES = ("none", "control", "all")
#: The attribute of an C{ldap:} checker's entry holding a user's policy.
TLS_ATTRIBUTE = "tlsRequired"

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class NoHomeError(Exception):
    """
    The store has no home for a user: a bad name, no C{homeDirectory}, or a
    home that does not exist.
    """


def checkRootTemplate(value: str) -> str:
    """
    Check a home template: an absolute path whose placeholders are
    C{{user}} and C{{homeDirectory}} only.

    @raise ValueError: with one line.
    """
    if "\x00" in value:
        raise ValueError("a home template cannot hold NUL")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as e:
        raise ValueError(f"bad home template {value!r}: {e}") from None
    unknown = [f for f in fields if f not in PLACEHOLDERS]
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{unknown[0]}}} in {value!r}; "
            "use {user} or {homeDirectory}"
        )
    if not value.startswith("/") and not value.startswith("{homeDirectory}"):
        raise ValueError(f"home template {value!r} is not an absolute path")
    return value


def userSegment(name: str | bytes) -> str:
    """
    C{name} as one path segment of a home template.

    @raise NoHomeError: for a name that could name another directory
        (C{/}, C{.}, C{..}, NUL, control characters, empty, over 255 bytes).
    """
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            raise NoHomeError("user name is not UTF-8") from None
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or not name.isprintable()
        or len(name.encode("utf-8")) > 255
    ):
        raise NoHomeError(f"user name {name!r} cannot name a home")
    return name


def virtualPath(path: str | bytes, cwd: str = "/") -> str:
    """
    The absolute path a client means by C{path} in C{cwd}, normalised
    lexically (C{.} and C{..} removed, C{..} stopping at C{/}); symbolic links
    are resolved later, by the L{Jail}.

    @raise OSError: C{EINVAL} for a NUL byte, C{ENAMETOOLONG} past
        L{MAX_PATH}.
    """
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if "\x00" in path:
        raise _error(errno.EINVAL)
    if len(path) + len(cwd) > MAX_PATH:
        raise _error(errno.ENAMETOOLONG)
    if not path.startswith("/"):
        path = cwd.rstrip("/") + "/" + path
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


@frozen
class Home:
    """
    A user's place in the store.

    @ivar user: the avatar ID, as text.
    @ivar path: the home directory (absolute).
    @ivar writable: whether the user may change anything there.
    @ivar quota: the most bytes the home may hold, or C{None}.
    """

    user: str
    path: str
    writable: bool = True
    quota: int | None = None


class Usage:
    """
    The bytes in one home, counted once (in the pool) and kept up to date by
    the writes and removals of every session of that home.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.used: int | None = None

    def count(self, openRoot: Callable[[], int]) -> None:
        """
        Count the bytes under the directory C{openRoot} opens, unless counted
        already (blocking).
        """
        with self._lock:
            if self.used is not None:
                return
        total = _treeSize(openRoot())
        with self._lock:
            if self.used is None:
                self.used = total

    def reserve(self, quota: int, size: int) -> None:
        """
        Account for C{size} more bytes, or raise C{EDQUOT}.
        """
        with self._lock:
            used = self.used or 0
            if size > 0 and used + size > quota:
                raise _error(errno.EDQUOT)
            self.used = max(0, used + size)


def _treeSize(directoryFD: int) -> int:
    """
    The bytes in the regular files under C{directoryFD} (closed), links not
    followed.
    """
    total = 0
    pending = [directoryFD]
    while pending:
        fd = pending.pop()
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                        if stat.S_ISDIR(st.st_mode):
                            pending.append(os.open(entry.name, _DIRECTORY, dir_fd=fd))
                        elif stat.S_ISREG(st.st_mode):
                            total += st.st_size
                    except OSError:
                        continue
        finally:
            os.close(fd)
    return total


class HomeFile:
    """
    A regular file opened through a L{Jail}: C{read}, C{write} (counted against
    the quota), C{seek}, C{close}; a context manager.
    """

    def __init__(self, fd: int, usage: Usage | None, quota: int | None) -> None:
        self.raw: BinaryIO = os.fdopen(
            fd, "r+b" if _writable(fd) else "rb", buffering=0
        )
        self._usage = usage
        self._quota = quota

    def fileno(self) -> int:
        return self.raw.fileno()

    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)

    def write(self, data: bytes) -> int:
        if self._usage is not None and self._quota is not None:
            end = self.raw.tell() + len(data)
            grow = end - os.fstat(self.raw.fileno()).st_size
            if grow > 0:
                self._usage.reserve(self._quota, grow)
        written = 0
        view = memoryview(data)
        while written < len(data):
            n = self.raw.write(view[written:])
            written += n or 0
        return written

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def stat(self) -> os.stat_result:
        return os.fstat(self.raw.fileno())

    def close(self) -> None:
        self.raw.close()

    @property
    def closed(self) -> bool:
        return self.raw.closed

    def __enter__(self) -> HomeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _writable(fd: int) -> bool:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY


class _Located:
    """
    Where a path leads: the descriptor of its parent directory (owned: close
    it) and its last name (C{"."} for the home itself).
    """

    def __init__(self, dirFD: int, name: str, path: str) -> None:
        self.dirFD = dirFD
        self.name = name
        self.path = path

    def close(self) -> None:
        os.close(self.dirFD)

    def __enter__(self) -> _Located:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class IJail(Interface):
    """
    A logged-in user of the file services, as their L{Jail}: the avatar
    interface L{JailRealm} serves (np-ftp's; SFTP adapts it).
    """


@implementer(IJail)
class Jail:
    """
    A user's filesystem view: every path resolved inside L{home}.  See the
    module docstring.  Paths are C{str} or C{bytes}; C{cwd} is a virtual path
    (C{/} is the home).  Every method but L{inPool} blocks.
    """

    def __init__(
        self,
        home: Home,
        *,
        usage: Usage | None = None,
        reactor: Any = None,
    ) -> None:
        self.home = home
        self._usage = usage if home.quota is not None else None
        self._reactor = reactor

    @property
    def writable(self) -> bool:
        """
        Whether this user may change files.
        """
        return self.home.writable

    def inPool(
        self, f: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> Deferred[_T]:
        """
        Run C{f(*args, **kwargs)} (one of this jail's methods) in the
        C{netplugins-homes} pool.
        """
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        return deferToPool(
            reactor, blockingPool(POOL_NAME, reactor=reactor), f, *args, **kwargs
        )

    # Resolution

    def _openRoot(self) -> int:
        try:
            return os.open(self.home.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise _error(e.errno or errno.EIO) from None

    def _locate(self, path: str | bytes, cwd: str, follow: bool) -> _Located:
        """
        Walk to C{path}'s parent directory through descriptors, resolving
        symbolic links inside the home; the last name is resolved too if
        C{follow}.  The last name need not exist.
        """
        pending = virtualPath(path, cwd).split("/")[1:]
        pending.reverse()  # a stack: the next name is pending[-1]
        stack = [self._openRoot()]
        names: list[str] = []
        links = 0
        try:
            while pending:
                name = pending.pop()
                if name in ("", "."):
                    continue
                if name == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                        names.pop()
                    continue
                last = not any(p not in ("", ".") for p in pending)
                if last and not follow:
                    return self._found(stack, names, name)
                try:
                    st = os.stat(name, dir_fd=stack[-1], follow_symlinks=False)
                except FileNotFoundError:
                    if last:
                        return self._found(stack, names, name)
                    raise _error(errno.ENOENT) from None
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise _error(errno.ELOOP)
                    target = os.readlink(name, dir_fd=stack[-1])
                    if target.startswith("/"):
                        for fd in stack[1:]:
                            os.close(fd)
                        del stack[1:]
                        names.clear()
                    pending.extend(reversed(target.split("/")))
                    continue
                if last:
                    return self._found(stack, names, name)
                if not stat.S_ISDIR(st.st_mode):
                    raise _error(errno.ENOTDIR)
                # O_NOFOLLOW: a link swapped in since the stat is refused.
                stack.append(os.open(name, _DIRECTORY, dir_fd=stack[-1]))
                names.append(name)
            return self._found(stack, names, ".")
        except BaseException:
            for fd in stack:
                os.close(fd)
            raise

    def _found(self, stack: list[int], names: list[str], name: str) -> _Located:
        for fd in stack[:-1]:
            os.close(fd)
        parts = names if name == "." else [*names, name]
        located = _Located(stack[-1], name, "/" + "/".join(parts))
        del stack[:]
        return located

    def _stat(self, where: _Located) -> os.stat_result:
        if where.name == ".":
            return os.fstat(where.dirFD)
        return os.stat(where.name, dir_fd=where.dirFD, follow_symlinks=False)

    def _checkWritable(self) -> None:
        if not self.home.writable:
            raise _error(errno.EACCES)

    # Queries

    def realPath(self, path: str | bytes, cwd: str = "/") -> str:
        """
        The virtual path C{path} leads to, symbolic links resolved (SFTP
        C{REALPATH}); the last name need not exist.
        """
        with self._locate(path, cwd, True) as where:
            return where.path

    def stat(self, path: str | bytes, cwd: str = "/") -> os.stat_result:
        """
        C{stat} of what C{path} leads to (links resolved inside the home).
        """
        with self._locate(path, cwd, True) as where:
            return self._stat(where)

    def lstat(self, path: str | bytes, cwd: str = "/") -> os.stat_result:
        """
        C{lstat} of C{path}: a symbolic link itself.
        """
        with self._locate(path, cwd, False) as where:
            return self._stat(where)

    def isDirectory(self, path: str | bytes, cwd: str = "/") -> bool:
        """
        Whether C{path} leads to a directory (C{False} if it leads nowhere).
        """
        try:
            return stat.S_ISDIR(self.stat(path, cwd).st_mode)
        except OSError:
            return False

    def listDirectory(
        self, path: str | bytes, cwd: str = "/", limit: int = MAX_LIST_ENTRIES
    ) -> tuple[list[tuple[str, os.stat_result]], bool]:
        """
        The entries of the directory C{path} leads to, with their C{stat}
        (a link's target's, when it resolves inside the home; else its own),
        at most C{limit} of them, in name order.

        @return: the entries and whether some were left out.
        """
        with self._locate(path, cwd, True) as where:
            fd = os.open(where.name, _DIRECTORY, dir_fd=where.dirFD)
            base = where.path
        entries: list[tuple[str, os.stat_result]] = []
        truncated = False
        try:
            with os.scandir(fd) as scan:
                for entry in scan:
                    if len(entries) >= limit:
                        truncated = True
                        break
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISLNK(st.st_mode):
                        try:
                            st = self.stat(entry.name, base)
                        except OSError:
                            pass
                    entries.append((entry.name, st))
        finally:
            os.close(fd)
        entries.sort(key=lambda e: e[0])
        return entries, truncated

    # Files

    def openRead(self, path: str | bytes, cwd: str = "/") -> HomeFile:
        """
        Open the regular file C{path} leads to for reading.
        """
        with self._locate(path, cwd, True) as where:
            fd = os.open(where.name, os.O_RDONLY | _NOFOLLOW, dir_fd=where.dirFD)
        return self._regular(fd)

    def openWrite(
        self,
        path: str | bytes,
        cwd: str = "/",
        *,
        append: bool = False,
        offset: int | None = None,
        exclusive: bool = False,
    ) -> HomeFile:
        """
        Open C{path} for writing, creating it if needed: truncated, or kept
        and positioned at C{offset} (a restarted upload) or at its end
        (C{append}); C{exclusive} refuses an existing name (C{EEXIST}).
        """
        self._checkWritable()
        flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW
        if exclusive:
            flags |= os.O_EXCL
        with self._locate(path, cwd, not exclusive) as where:
            if where.name == ".":
                raise _error(errno.EISDIR)
            fd = os.open(where.name, flags, 0o666, dir_fd=where.dirFD)
        file = self._regular(fd)
        try:
            if self._usage is not None:
                self._usage.count(self._openRoot)
            if append:
                file.seek(0, os.SEEK_END)
            elif offset is not None:
                file.seek(offset)
            else:
                size = file.stat().st_size
                os.ftruncate(file.fileno(), 0)
                self._release(size)
        except BaseException:
            file.close()
            raise
        return file

    def _regular(self, fd: int) -> HomeFile:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _error(
                    errno.EISDIR if stat.S_ISDIR(os.fstat(fd).st_mode) else errno.EACCES
                )
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return HomeFile(fd, self._usage, self.home.quota)

    def _release(self, size: int) -> None:
        if self._usage is not None and self.home.quota is not None and size:
            self._usage.reserve(self.home.quota, -size)

    # Changes

    def makeDirectory(self, path: str | bytes, cwd: str = "/") -> str:
        """
        Make a directory; its virtual path.
        """
        self._checkWritable()
        with self._locate(path, cwd, False) as where:
            if where.name == ".":
                raise _error(errno.EEXIST)
            os.mkdir(where.name, 0o777, dir_fd=where.dirFD)
            return where.path

    def removeDirectory(self, path: str | bytes, cwd: str = "/") -> None:
        """
        Remove an empty directory (never the home).
        """
        self._checkWritable()
        with self._locate(path, cwd, False) as where:
            if where.name == ".":
                raise _error(errno.EBUSY)
            os.rmdir(where.name, dir_fd=where.dirFD)

    def removeFile(self, path: str | bytes, cwd: str = "/") -> None:
        """
        Remove a file or a symbolic link (not what it points to).
        """
        self._checkWritable()
        with self._locate(path, cwd, False) as where:
            if where.name == ".":
                raise _error(errno.EISDIR)
            st = os.stat(where.name, dir_fd=where.dirFD, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise _error(errno.EISDIR)
            os.unlink(where.name, dir_fd=where.dirFD)
        if stat.S_ISREG(st.st_mode) and st.st_nlink <= 1:
            self._release(st.st_size)

    def rename(self, old: str | bytes, new: str | bytes, cwd: str = "/") -> None:
        """
        Rename C{old} to C{new} (links themselves, not their targets).
        """
        self._checkWritable()
        with self._locate(old, cwd, False) as source:
            with self._locate(new, cwd, False) as target:
                if "." in (source.name, target.name):
                    raise _error(errno.EBUSY)
                os.rename(
                    source.name,
                    target.name,
                    src_dir_fd=source.dirFD,
                    dst_dir_fd=target.dirFD,
                )

    def setTimes(
        self, path: str | bytes, atime: float, mtime: float, cwd: str = "/"
    ) -> None:
        """
        Set the access and modification times of what C{path} leads to.
        """
        self._checkWritable()
        with self._locate(path, cwd, True) as where:
            os.utime(
                where.name,
                (atime, mtime),
                dir_fd=where.dirFD,
                follow_symlinks=False,
            )

    def link(self, old: str | bytes, new: str | bytes, cwd: str = "/") -> None:
        """
        Make C{new} a hard link to the regular file C{old} leads to (links
        resolved inside the home, so the file is always one of the home's).

        @raise OSError: C{EPERM} for a directory, C{EACCES} for anything
            else that is not a regular file, C{EEXIST} if C{new} exists.
        """
        self._checkWritable()
        with self._locate(old, cwd, True) as source:
            st = self._stat(source)
            if stat.S_ISDIR(st.st_mode):
                raise _error(errno.EPERM)
            if not stat.S_ISREG(st.st_mode):
                raise _error(errno.EACCES)
            with self._locate(new, cwd, False) as target:
                if target.name == ".":
                    raise _error(errno.EEXIST)
                # Not following: a link swapped in for the file since the
                # stat is linked itself, and still resolves in the home.
                os.link(
                    source.name,
                    target.name,
                    src_dir_fd=source.dirFD,
                    dst_dir_fd=target.dirFD,
                    follow_symlinks=False,
                )

    def setMode(
        self, path: str | bytes, mode: int, cwd: str = "/", follow: bool = True
    ) -> None:
        """
        Set the permission bits (C{0o777}; setuid, setgid, sticky and file
        type bits are ignored) of what C{path} leads to, or of C{path}
        itself unless C{follow}.

        @raise OSError: C{EBUSY} for the home itself, C{EOPNOTSUPP} for a
            symbolic link (Linux has no link modes).
        """
        self._checkWritable()
        with self._locate(path, cwd, follow) as where:
            if where.name == ".":
                raise _error(errno.EBUSY)
            try:
                os.chmod(
                    where.name,
                    mode & 0o777,
                    dir_fd=where.dirFD,
                    follow_symlinks=False,
                )
            except (ValueError, NotImplementedError):
                # fchmodat(AT_SYMLINK_NOFOLLOW) refuses a link; Python says
                # so with ValueError.
                raise _error(errno.EOPNOTSUPP) from None

    def statvfs(self, path: str | bytes, cwd: str = "/") -> os.statvfs_result:
        """
        C{fstatvfs} of the directory C{path} leads to (of its directory
        for a file).
        """
        with self._locate(path, cwd, True) as where:
            st = self._stat(where)
            if where.name == "." or not stat.S_ISDIR(st.st_mode):
                return os.fstatvfs(where.dirFD)
            fd = os.open(where.name, _DIRECTORY, dir_fd=where.dirFD)
        try:
            return os.fstatvfs(fd)
        finally:
            os.close(fd)

    def usage(self) -> int | None:
        """
        The bytes in the home as counted for the quota (C{None} without one).
        """
        if self._usage is None:
            return None
        self._usage.count(self._openRoot)
        return self._usage.used


class HomeStore:
    """
    The homes of the users a service's checkers log in.  See the module
    docstring.

    @ivar template: the home template (C{{user}}, C{{homeDirectory}}).
    """

    log = Logger()

    def __init__(
        self,
        template: str,
        *,
        checkers: Sequence[Any] = (),
        writable: bool = True,
        readOnlyUsers: Collection[str] = (),
        quota: int | None = None,
        anonymousRoot: str | None = None,
        createHomes: bool = False,
        reactor: Any = None,
        tlsRequiredUsers: Mapping[str, str] | None = None,
    ) -> None:
        """
        @param checkers: the service's checkers; an C{ldap:} one answers
            C{{homeDirectory}}.
        @param writable: whether users may write (by default).
        @param readOnlyUsers: users who may only read, whatever C{writable}.
        @param quota: the most bytes in each home, or C{None}.
        @param anonymousRoot: the read-only directory of C{anonymous}, or
            C{None} for no anonymous access.
        @param createHomes: make a missing template home (mode 0700) at login.
        @param tlsRequiredUsers: user to the TLS that user requires
            (C{control} or C{all}); see L{tlsRequiredFor}.
        """
        self.template = checkRootTemplate(template)
        self.checkers = tuple(checkers)
        self.writable = writable
        self.readOnlyUsers = frozenset(readOnlyUsers)
        self.quota = quota
        self.anonymousRoot = anonymousRoot
        self.createHomes = createHomes
        self._reactor = reactor
        self._usages: dict[str, Usage] = {}
        self.tlsRequiredUsers = dict(tlsRequiredUsers or {})
        for name, policy in self.tlsRequiredUsers.items():
            if policy not in TLS_POLICIES:
                raise ValueError(
                    f"{name!r}: TLS policy {policy!r} is not one of {TLS_POLICIES}"
                )

    def anonymousHome(self) -> Home | None:
        """
        The home of anonymous users, read-only, or C{None} if none is allowed.
        """
        if self.anonymousRoot is None:
            return None
        return Home("anonymous", os.path.abspath(self.anonymousRoot), writable=False)

    def homeFor(self, avatarId: str | bytes) -> Deferred[Home]:
        """
        The home of the user C{avatarId} (a checker's answer); fails with
        L{NoHomeError} when there is none.
        """
        try:
            user = userSegment(avatarId)
        except NoHomeError as e:
            return fail(e)
        if "{homeDirectory}" not in self.template:
            return self._checked(user, self.template.format(user=user))
        d: Deferred[Any] = self._homeDirectory(user)
        d.addCallback(
            lambda directory: self.template.format(user=user, homeDirectory=directory)
        )
        d.addCallback(lambda path: self._checked(user, path))
        return d

    def tlsRequiredFor(self, user: str) -> Deferred[str]:
        """
        The TLS user C{user} requires, before any password: C{none},
        C{control} or C{all} (L{TLS_POLICIES}), from L{tlsRequiredUsers},
        else from the C{tlsRequired} attribute of an C{ldap:} checker's entry
        when its URL fetches that attribute (the lookup goes through the
        search account; a user the directory does not know, or cannot be
        asked about, requires nothing here, so an unknown name gets the
        same answer as a known one without the attribute).  Values other
        than the three words are ignored.
        """
        policy = self.tlsRequiredUsers.get(user)
        if policy is not None:
            return succeed(policy)
        for checker in self.checkers:
            while hasattr(checker, "checker"):
                checker = checker.checker
            lookup = getattr(checker, "lookupAttributes", None)
            wanted = getattr(getattr(checker, "config", None), "attributes", ())
            if lookup is not None and TLS_ATTRIBUTE.lower() in (
                name.lower() for name in wanted
            ):
                d: Deferred[Any] = lookup(user)
                d.addCallback(_tlsPolicyOf)
                return d
        return succeed("none")

    def _homeDirectory(self, user: str) -> Deferred[str]:
        for checker in self.checkers:
            while hasattr(checker, "checker"):
                checker = checker.checker
            lookup = getattr(checker, "lookupAttributes", None)
            if lookup is not None:
                d: Deferred[Any] = lookup(user)
                d.addCallback(_directoryOf, user)
                return d
        return fail(NoHomeError(f"no checker gives {user!r} a homeDirectory"))

    def _checked(self, user: str, path: str) -> Deferred[Home]:
        path = os.path.normpath(path)
        home = Home(
            user,
            path,
            writable=self.writable and user not in self.readOnlyUsers,
            quota=self.quota,
        )
        if not self.createHomes:
            return succeed(home)
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        d: Deferred[Any] = deferToPool(
            reactor, blockingPool(POOL_NAME, reactor=reactor), _makeHome, path
        )
        return d.addCallback(lambda _: home)

    def jail(self, home: Home) -> Jail:
        """
        The L{Jail} of C{home}, sharing its quota count with the home's other
        sessions.
        """
        usage = self._usages.setdefault(home.path, Usage()) if home.quota else None
        return Jail(home, usage=usage, reactor=self._reactor)

    def jailFor(self, avatarId: str | bytes) -> Deferred[Jail]:
        """
        The L{Jail} of the user C{avatarId}; fails with L{NoHomeError}.
        """
        return self.homeFor(avatarId).addCallback(self.jail)


def _directoryOf(user: Any, name: str) -> str:
    values: Iterable[str] = ()
    if user is not None:
        values = user.attributes.get("homedirectory", ())
    for value in values:
        if value.startswith("/") and "\x00" not in value:
            parts = value.split("/")
            if ".." not in parts:
                return value
    raise NoHomeError(f"{name!r} has no usable homeDirectory")


def _tlsPolicyOf(user: Any) -> str:
    values: Iterable[str] = ()
    if user is not None:
        values = user.attributes.get(TLS_ATTRIBUTE.lower(), ())
    policies = [v.strip().lower() for v in values]
    known = [p for p in policies if p in TLS_POLICIES]
    return max(known, key=TLS_POLICIES.index, default="none")


def _makeHome(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)


@implementer(IRealm)
class JailRealm:
    """
    Hands out the L{Jail} of each user a checker logged in, for L{IJail}.
    """

    def __init__(self, store: HomeStore) -> None:
        self.store = store

    def requestAvatar(self, avatarId: Any, mind: object, *interfaces: Any) -> Any:
        """
        C{(IJail, jail, logout)}; fails with L{NoHomeError} when the user
        has no home.
        """
        if IJail not in interfaces:
            raise NotImplementedError("only IJail avatars")
        return self.store.jailFor(avatarId).addCallback(
            lambda jail: (IJail, jail, lambda: None)
        )
