"""
np-ssh's SFTP subsystem (version 3 with OpenSSH's extensions), jailed in
the user's home through the shared user store (L{netplugins.homes}): every
path is resolved inside the home, C{/} is the home, and no reply shows a
host path.  File work runs in the store's blocking pool; reads use
C{pread} and writes a per-handle lock, so pipelined requests on one
handle do not race.

Bounds: a request packet over L{MAX_PACKET} closes the channel; a read
returns at most L{MAX_READ} bytes; at most L{MAX_HANDLES} handles are open.
Requests are taken one after another while fewer than L{MAX_IN_FLIGHT} are
being answered and less than L{MAX_QUEUED_OUTPUT} of replies wait for the
client's window; past that they wait, and once L{MAX_QUEUED_INPUT} bytes
of them wait the channel's window is not reopened, so the client stops
sending (L{netplugins.ssh.session.SessionConnection}).

Extensions: posix-rename@openssh.com, statvfs@openssh.com,
fstatvfs@openssh.com, fsync@openssh.com, limits@openssh.com,
lsetstat@openssh.com, home-directory and expand-path@openssh.com, and
hardlink@openssh.com when the operator allows it (C{--allow-hardlinks}).
SETSTAT, FSETSTAT and lsetstat change times and permission bits (no
setuid, setgid or sticky bit; not the home itself); owners, growing sizes
and new symbolic links are refused.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.conch.interfaces import ISFTPFile, ISFTPServer
from twisted.conch.ls import lsLine
from twisted.conch.ssh import filetransfer
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.filetransfer import (
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_TRUNC,
    FXF_WRITE,
    SFTPError,
)
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netplugins.homes import HomeFile, Jail
from netplugins.twistedinternals.conch import HookedFileTransferServer

_T = TypeVar("_T")

MAX_PACKET = 256 * 1024 + 1024
MAX_READ = 256 * 1024 - 1024
MAX_WRITE = 256 * 1024 - 1024
MAX_HANDLES = 256
MAX_QUEUED_OUTPUT = 4 * 1024 * 1024
#: Requests being answered at once, at most (OpenSSH's sftp client keeps 64
#: reads going).
MAX_IN_FLIGHT = 64
#: Unparsed requests past which the channel's window stops reopening.
MAX_QUEUED_INPUT = 2 * MAX_PACKET
#: The mode bits a client may set: no setuid, setgid or sticky bit.
PERMISSION_BITS = 0o777

EXTENSIONS = {
    b"posix-rename@openssh.com": b"1",
    b"statvfs@openssh.com": b"2",
    b"fstatvfs@openssh.com": b"2",
    b"fsync@openssh.com": b"1",
    b"limits@openssh.com": b"1",
    b"lsetstat@openssh.com": b"1",
    b"home-directory": b"1",
    b"expand-path@openssh.com": b"1",
}
#: Offered only with C{--allow-hardlinks}.
HARDLINK = b"hardlink@openssh.com"


class Serial:
    """
    Runs a session's file work in the jail's pool one call at a time, in
    the order the requests came, so replies go out in request order as
    OpenSSH's sftp-server sends them (clients such as scp rely on it).
    """

    def __init__(self, jail: Jail) -> None:
        self.jail = jail
        self._tail: Deferred[None] = succeed(None)

    def __call__(self, f: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        result: Deferred[_T] = Deferred()

        def run(_: object) -> Deferred[Any]:
            d: Deferred[Any] = self.jail.inPool(f, *args, **kwargs)
            d.addCallbacks(result.callback, result.errback)
            return d

        self._tail.addCallback(run)
        return result


def attributes(st: os.stat_result) -> dict[str, int]:
    """
    SFTP attributes of a stat result.
    """
    return {
        "size": st.st_size,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "permissions": st.st_mode,
        "atime": int(st.st_atime),
        "mtime": int(st.st_mtime),
    }


def _statvfs(st: os.statvfs_result) -> bytes:
    return struct.pack(
        ">11Q",
        st.f_bsize,
        st.f_frsize,
        st.f_blocks,
        st.f_bfree,
        st.f_bavail,
        st.f_files,
        st.f_ffree,
        st.f_favail,
        st.f_fsid & 0xFFFFFFFFFFFFFFFF,
        st.f_flag,
        st.f_namemax,
    )


@implementer(ISFTPFile)
class JailFile:
    """
    An open file of the jail.
    """

    def __init__(self, jail: Jail, file: HomeFile, run: Serial) -> None:
        self.jail = jail
        self.file = file
        self.run = run
        self._lock = threading.Lock()

    def _read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.file.fileno(), min(length, MAX_READ), offset)
        if not data:
            raise EOFError()
        return data

    def readChunk(self, offset: int, length: int) -> Deferred[bytes]:
        return self.run(self._read, offset, length)

    def _write(self, offset: int, data: bytes) -> None:
        with self._lock:
            self.file.seek(offset)
            self.file.write(data)

    def writeChunk(self, offset: int, data: bytes) -> Deferred[None]:
        return self.run(self._write, offset, data)

    def getAttrs(self) -> Deferred[dict[str, int]]:
        return self.run(lambda: attributes(self.file.stat()))

    def _setAttrs(self, attrs: dict[str, Any]) -> None:
        fd = self.file.fileno()
        if set(attrs) - {"size", "permissions", "atime", "mtime"}:
            raise NotImplementedError("only sizes, modes and times can be set")
        if not self.jail.writable:
            raise OSError(errno.EACCES, "read-only")
        if "size" in attrs:
            # Shrinking only (scp truncates what it overwrote): growing a
            # file would take space past the quota's count.
            if attrs["size"] > os.fstat(fd).st_size:
                raise NotImplementedError("files cannot be extended this way")
            os.ftruncate(fd, attrs["size"])
        if "permissions" in attrs:
            os.fchmod(fd, attrs["permissions"] & PERMISSION_BITS)
        if "atime" in attrs:
            os.utime(fd, (attrs["atime"], attrs["mtime"]))

    def setAttrs(self, attrs: dict[str, Any]) -> Deferred[None]:
        """
        Shrink the open file, or change its mode (permission bits only) or
        times: the descriptor is the jail's already.
        """
        return self.run(self._setAttrs, attrs)

    def close(self) -> Deferred[None]:
        return self.run(self.file.close)

    def fsync(self) -> Deferred[None]:
        return self.run(os.fsync, self.file.fileno())

    def statvfs(self) -> Deferred[bytes]:
        return self.run(lambda: _statvfs(os.fstatvfs(self.file.fileno())))


class JailDirectoryListing:
    """
    An open directory: its entries, listed when it was opened.
    """

    def __init__(self, entries: list[tuple[str, os.stat_result]]) -> None:
        self._entries = iter(entries)

    def __iter__(self) -> JailDirectoryListing:
        return self

    def __next__(self) -> tuple[bytes, bytes, dict[str, int]]:
        name, st = next(self._entries)
        return (
            os.fsencode(name),
            lsLine(name, st).encode("utf-8", "replace"),
            attributes(st),
        )

    def close(self) -> None:
        self._entries = iter(())


def _path(raw: bytes) -> bytes:
    return raw or b"."


@implementer(ISFTPServer)
class JailSFTP:
    """
    The SFTP operations on a jail.
    """

    def __init__(self, jail: Jail, user: str, *, hardlinks: bool = False) -> None:
        self.avatar = None
        self.jail = jail
        self.user = user
        self.hardlinks = hardlinks
        self.run = Serial(jail)

    def gotVersion(
        self, otherVersion: int, extData: dict[bytes, bytes]
    ) -> dict[bytes, bytes]:
        extensions = dict(EXTENSIONS)
        if self.hardlinks:
            extensions[HARDLINK] = b"1"
        return extensions

    def openFile(
        self, filename: bytes, flags: int, attrs: dict[str, Any]
    ) -> Deferred[JailFile]:
        jail = self.jail
        if flags & (FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC):
            d = self.run(
                jail.openWrite,
                _path(filename),
                "/",
                append=bool(flags & FXF_APPEND),
                offset=None if flags & FXF_TRUNC else 0,
                exclusive=bool(flags & FXF_EXCL),
            )
        else:
            d = self.run(jail.openRead, _path(filename), "/")
        return d.addCallback(lambda file: JailFile(jail, file, self.run))

    def removeFile(self, filename: bytes) -> Deferred[None]:
        return self.run(self.jail.removeFile, filename, "/")

    def _renameNoReplace(self, old: bytes, new: bytes) -> None:
        try:
            self.jail.lstat(new, "/")
        except FileNotFoundError:
            self.jail.rename(old, new, "/")
            return
        raise OSError(errno.EEXIST, "target exists")

    def renameFile(self, oldpath: bytes, newpath: bytes) -> Deferred[None]:
        # SFTP version 3 RENAME does not replace; posix-rename does.
        return self.run(self._renameNoReplace, oldpath, newpath)

    def posixRename(self, oldpath: bytes, newpath: bytes) -> Deferred[None]:
        return self.run(self.jail.rename, oldpath, newpath, "/")

    def makeDirectory(self, path: bytes, attrs: dict[str, Any]) -> Deferred[Any]:
        return self.run(self.jail.makeDirectory, path, "/")

    def removeDirectory(self, path: bytes) -> Deferred[None]:
        return self.run(self.jail.removeDirectory, path, "/")

    def openDirectory(self, path: bytes) -> Deferred[JailDirectoryListing]:
        d = self.run(self.jail.listDirectory, _path(path), "/")
        return d.addCallback(lambda result: JailDirectoryListing(result[0]))

    def getAttrs(self, path: bytes, followLinks: bool) -> Deferred[dict[str, int]]:
        method = self.jail.stat if followLinks else self.jail.lstat
        return self.run(method, _path(path), "/").addCallback(attributes)

    def _setAttrs(
        self, path: bytes, attrs: dict[str, Any], follow: bool = True
    ) -> None:
        if set(attrs) - {"permissions", "atime", "mtime"}:
            raise NotImplementedError("only modes and times can be set")
        if "permissions" in attrs:
            self.jail.setMode(path, attrs["permissions"], "/", follow=follow)
        if "atime" in attrs:
            self.jail.setTimes(path, attrs["atime"], attrs["mtime"], "/")

    def setAttrs(self, path: bytes, attrs: dict[str, Any]) -> Deferred[None]:
        return self.run(self._setAttrs, _path(path), attrs)

    def lsetAttrs(self, path: bytes, attrs: dict[str, Any]) -> Deferred[None]:
        """
        lsetstat: as SETSTAT, but a mode is set on a link itself (which
        Linux refuses); times are set on what it leads to.
        """
        return self.run(self._setAttrs, _path(path), attrs, False)

    def hardLink(self, oldpath: bytes, newpath: bytes) -> Deferred[None]:
        """
        hardlink@openssh.com: C{newpath} a new name of the regular file
        C{oldpath} leads to, both in the home.
        """
        if not self.hardlinks:
            raise SFTPError(filetransfer.FX_OP_UNSUPPORTED, "hard links are off")
        return self.run(self.jail.link, oldpath, newpath, "/")

    def readLink(self, path: bytes) -> Deferred[bytes]:
        raise NotImplementedError("readlink is not supported")

    def makeLink(self, linkPath: bytes, targetPath: bytes) -> Deferred[None]:
        raise SFTPError(filetransfer.FX_PERMISSION_DENIED, "links cannot be made")

    def realPath(self, path: bytes) -> Deferred[str]:
        return self.run(self.jail.realPath, _path(path), "/")

    def statvfs(self, path: bytes) -> Deferred[bytes]:
        return self.run(self.jail.statvfs, _path(path), "/").addCallback(_statvfs)

    def extendedRequest(self, extendedName: bytes, extendedData: bytes) -> Any:
        raise NotImplementedError("unsupported extension")


class SFTPServer(HookedFileTransferServer):
    """
    Conch's SFTP server protocol with bounded packets, OpenSSH's extensions
    and errors mapped to SFTP status codes.
    """

    log = Logger()

    def __init__(self, jail: Jail, user: str, *, hardlinks: bool = False) -> None:
        filetransfer.FileTransferBase.__init__(self)
        self.sftp = JailSFTP(jail, user, hardlinks=hardlinks)
        self.client = self.sftp
        self.openFiles: dict[bytes, Any] = {}
        self.openDirs: dict[bytes, Any] = {}

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    inFlight = 0
    _processing = False

    def _outputQueued(self) -> int:
        channel = getattr(self.transport, "channel", None)
        return len(channel.buf) if channel is not None else 0

    @property
    def holding(self) -> bool:
        """
        Whether requests wait: too many are being answered, or the replies
        wait for the client's window.
        """
        return (
            self.inFlight >= MAX_IN_FLIGHT or self._outputQueued() > MAX_QUEUED_OUTPUT
        )

    def sendPacket(self, kind: int, data: bytes) -> None:
        # Every request gets one reply.
        self.inFlight = max(0, self.inFlight - 1)
        super().sendPacket(kind, data)
        self.resumeRequests()

    def resumeRequests(self) -> None:
        """
        Take the requests waiting, as far as the limits allow.
        """
        if self._processing:
            return
        self._processing = True
        try:
            self._process()
        finally:
            self._processing = False
        channel = getattr(self.transport, "channel", None)
        if channel is not None:
            channel.releaseWindow()

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        self.resumeRequests()

    def _process(self) -> None:
        while len(self.buf) >= 4 and not self.holding:
            (length,) = struct.unpack("!L", self.buf[:4])
            if length > MAX_PACKET or length < 5:
                self.log.info(
                    "closing SFTP channel: packet of {length} bytes", length=length
                )
                self.buf = b""
                self._close()
                return
            if len(self.buf) < 4 + length:
                return
            kind = self.buf[4]
            packet, self.buf = self.buf[5 : 4 + length], self.buf[4 + length :]
            self.inFlight += 1
            name = self.packetTypes.get(kind)
            handler = getattr(self, f"packet_{name}", None) if name else None
            if handler is None:
                self.sendStatus(
                    packet[:4], filetransfer.FX_OP_UNSUPPORTED, b"unsupported request"
                )
                continue
            try:
                handler(packet)
            except Exception:
                self.sendStatus(packet[:4], filetransfer.FX_BAD_MESSAGE, b"bad request")

    def requestFailed(self, reason: Failure, requestId: bytes, msg: bytes) -> None:
        error = reason.value
        if isinstance(error, OSError) and error.errno not in (
            errno.ENOENT,
            errno.EACCES,
            errno.EEXIST,
        ):
            code = {
                errno.ENOTDIR: filetransfer.FX_NO_SUCH_FILE,
                errno.ELOOP: filetransfer.FX_NO_SUCH_FILE,
                errno.EDQUOT: filetransfer.FX_FAILURE,
                errno.EOPNOTSUPP: filetransfer.FX_OP_UNSUPPORTED,
            }.get(error.errno or 0, filetransfer.FX_FAILURE)
            reason = Failure(SFTPError(code, os.strerror(error.errno or errno.EIO)))
        super().requestFailed(reason, requestId, msg)

    def _handlesFull(self, data: bytes) -> bool:
        if len(self.openFiles) + len(self.openDirs) < MAX_HANDLES:
            return False
        self.sendStatus(data[:4], filetransfer.FX_FAILURE, b"too many open handles")
        return True

    def packet_OPEN(self, data: bytes) -> None:
        if not self._handlesFull(data):
            super().packet_OPEN(data)

    def packet_OPENDIR(self, data: bytes) -> None:
        if not self._handlesFull(data):
            super().packet_OPENDIR(data)

    def packet_READ(self, data: bytes) -> None:
        requestId = data[:4]
        handle, rest = getNS(data[4:])
        offset, length = struct.unpack("!QL", rest[:12])
        fixed = (
            requestId + NS(handle) + struct.pack("!QL", offset, min(length, MAX_READ))
        )
        super().packet_READ(fixed)

    def packet_EXTENDED(self, data: bytes) -> None:
        requestId = data[:4]
        name, rest = getNS(data[4:])
        handler = {
            b"posix-rename@openssh.com": self._posixRename,
            b"statvfs@openssh.com": self._statvfs,
            b"fstatvfs@openssh.com": self._fstatvfs,
            b"fsync@openssh.com": self._fsync,
            b"limits@openssh.com": self._limits,
            b"lsetstat@openssh.com": self._lsetstat,
            b"home-directory": self._homeDirectory,
            b"expand-path@openssh.com": self._expandPath,
            HARDLINK: self._hardlink if self.sftp.hardlinks else None,
        }.get(name)
        if handler is None:
            self.sendStatus(
                requestId, filetransfer.FX_OP_UNSUPPORTED, b"unsupported extension"
            )
            return
        d = maybeDeferred(handler, rest)
        d.addCallback(self._cbExtendedReply, requestId)
        d.addErrback(self.requestFailed, requestId, b"request failed")

    def _cbExtendedReply(self, reply: tuple[str, Any], requestId: bytes) -> None:
        kind, value = reply
        if kind == "status":
            self.sendStatus(requestId, filetransfer.FX_OK, b"OK")
        elif kind == "name":
            path = (
                value.encode("utf-8", "surrogateescape")
                if isinstance(value, str)
                else value
            )
            self.sendPacket(
                filetransfer.FXP_NAME,
                requestId
                + struct.pack("!L", 1)
                + NS(path)
                + NS(path)
                + self.packAttributes({}),
            )
        else:
            self.sendPacket(filetransfer.FXP_EXTENDED_REPLY, requestId + value)

    def _posixRename(self, data: bytes) -> Deferred[tuple[str, Any]]:
        old, rest = getNS(data)
        new, _ = getNS(rest)
        return self.sftp.posixRename(old, new).addCallback(lambda _: ("status", None))

    def _file(self, data: bytes) -> JailFile:
        handle, _ = getNS(data)
        file = self.openFiles.get(handle)
        if not isinstance(file, JailFile):
            raise SFTPError(filetransfer.FX_FAILURE, "bad handle")
        return file

    def _statvfs(self, data: bytes) -> Deferred[tuple[str, Any]]:
        path, _ = getNS(data)
        return self.sftp.statvfs(path).addCallback(lambda st: ("extended", st))

    def _fstatvfs(self, data: bytes) -> Deferred[tuple[str, Any]]:
        return self._file(data).statvfs().addCallback(lambda st: ("extended", st))

    def _fsync(self, data: bytes) -> Deferred[tuple[str, Any]]:
        return self._file(data).fsync().addCallback(lambda _: ("status", None))

    def _limits(self, data: bytes) -> Deferred[tuple[str, Any]]:
        return succeed(
            (
                "extended",
                struct.pack(">4Q", MAX_PACKET, MAX_READ, MAX_WRITE, MAX_HANDLES),
            )
        )

    def _lsetstat(self, data: bytes) -> Deferred[tuple[str, Any]]:
        path, rest = getNS(data)
        attrs, _ = self.parseAttributes(rest)
        return self.sftp.lsetAttrs(path, attrs).addCallback(lambda _: ("status", None))

    def _hardlink(self, data: bytes) -> Deferred[tuple[str, Any]]:
        old, rest = getNS(data)
        new, _ = getNS(rest)
        return self.sftp.hardLink(old, new).addCallback(lambda _: ("status", None))

    def _homeDirectory(self, data: bytes) -> Deferred[tuple[str, Any]]:
        user, _ = getNS(data)
        if user and user.decode("utf-8", "replace") != self.sftp.user:
            raise SFTPError(filetransfer.FX_PERMISSION_DENIED, "not your home")
        return succeed(("name", "/"))

    def _expandPath(self, data: bytes) -> Deferred[tuple[str, Any]]:
        path, _ = getNS(data)
        if path == b"~" or path.startswith(b"~/"):
            path = b"/" + path[2:]
        elif path.startswith(b"~"):
            raise SFTPError(filetransfer.FX_NO_SUCH_FILE, "no such user")
        return self.sftp.realPath(path).addCallback(lambda p: ("name", p))
