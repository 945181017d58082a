"""
The relay queue's directory (L{netplugins.mail.smtp.queue}): one file per
message, named by its queue ID, holding its envelope (one line of JSON) and
then the message.

A message is staged in C{tmp/} (written and fsynced) while the local copies
of the same mail are delivered, then renamed into the directory (and the
directory fsynced) before the client is told 250; a staged file left by a
crash was never acknowledged, so it is removed at the next start.

A delivery attempt claims the file with a non-blocking C{flock}: with
C{--workers N} every process runs a queue over the same directory, and the
lock (with an inode check, since updates replace the file) keeps two of
them from sending one message at once.

Everything here blocks: the queue runs it in its thread pool.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from typing import Any

from attrs import define, field

from netplugins.mail.maildir.files import (
    fsyncDirectory,
    replaceFile,
    storeError,
    unlinkQuietly,
    writeNew,
)

#: Queue IDs are what the SMTP server makes (L{secrets.token_hex}, upper case).
QUEUE_ID = re.compile(r"[0-9A-F]{12}")
#: Staged files older than this at start were left by a crash.
STALE_STAGED = 3600.0
#: The envelope line is bounded: the recipients of one message (C{maxRecipients}).
MAX_ENVELOPE = 1024 * 1024

PENDING, SENT, FAILED = "pending", "sent", "failed"


@define
class Recipient:
    """
    One recipient of a queued message and where its delivery stands.

    @ivar status: L{PENDING}, L{SENT} or L{FAILED}.
    @ivar reply: the last reply about it (C{550 5.1.1 ...}), or why it was
        deferred.
    @ivar remote: whether C{reply} came from the smarthost.
    @ivar notify: the DSN events (RFC 3461 C{NOTIFY=}) the sender asked to
        hear of: C{SUCCESS}, C{FAILURE}, C{DELAY}; empty for C{NEVER};
        C{None} when not given (failures only).
    @ivar orcpt: the original recipient (C{ORCPT=}, decoded: C{rfc822;addr}).
    @ivar delayed: whether the sender was told of a delay already.
    """

    address: str
    status: str = PENDING
    reply: str = ""
    remote: bool = False
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    delayed: bool = False

    def notifies(self, event: str) -> bool:
        """
        Whether the sender wants a DSN for C{event} (C{SUCCESS}, C{FAILURE}
        or C{DELAY}) about this recipient.
        """
        return event in (self.notify if self.notify is not None else ("FAILURE",))


@define
class Envelope:
    """
    A queued message's envelope and delivery state.

    @ivar arrival: when it was accepted (POSIX time).
    @ivar nextAttempt: when to try again (POSIX time).
    @ivar ret: what a failure DSN returns (RFC 3461 C{RET=}): C{FULL} the
        message, else (C{HDRS}, or C{None}: not given) its headers.
    @ivar envid: the sender's envelope identifier (C{ENVID=}, decoded).
    """

    sender: str
    recipients: list[Recipient]
    arrival: float
    attempts: int = 0
    nextAttempt: float = 0.0
    ret: str | None = None
    envid: str | None = None

    def pending(self) -> list[str]:
        """
        The addresses still to deliver.
        """
        return [r.address for r in self.recipients if r.status == PENDING]

    def encode(self) -> bytes:
        """
        The envelope line of the queue file.
        """
        return (
            json.dumps(
                {
                    "sender": self.sender,
                    "recipients": [
                        [
                            r.address,
                            r.status,
                            r.reply,
                            r.remote,
                            None if r.notify is None else list(r.notify),
                            r.orcpt,
                            r.delayed,
                        ]
                        for r in self.recipients
                    ],
                    "arrival": self.arrival,
                    "attempts": self.attempts,
                    "nextAttempt": self.nextAttempt,
                    "ret": self.ret,
                    "envid": self.envid,
                },
                ensure_ascii=True,
            ).encode("ascii")
            + b"\n"
        )

    @classmethod
    def decode(cls, line: bytes) -> Envelope:
        """
        Read an envelope line.

        @raise ValueError: if it is not one.
        """
        try:
            data: Any = json.loads(line)
            return cls(
                sender=str(data["sender"]),
                recipients=[_recipient(*fields) for fields in data["recipients"]],
                arrival=float(data["arrival"]),
                attempts=int(data["attempts"]),
                nextAttempt=float(data["nextAttempt"]),
                ret=_optional(data.get("ret")),
                envid=_optional(data.get("envid")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"bad queue envelope: {e}") from None


def _optional(value: object) -> str | None:
    return None if value is None else str(value)


def _recipient(
    address: object,
    status: object,
    reply: object,
    remote: object,
    notify: object = None,
    orcpt: object = None,
    delayed: object = False,
) -> Recipient:
    """
    A recipient from its envelope fields (the DSN ones are absent from
    files queued before DSN was offered).
    """
    if notify is not None and not isinstance(notify, list):
        raise ValueError(f"bad NOTIFY {notify!r}")
    return Recipient(
        str(address),
        str(status),
        str(reply),
        bool(remote),
        None if notify is None else tuple(str(n) for n in notify),
        _optional(orcpt),
        bool(delayed),
    )


@define
class Claim:
    """
    A queued message locked for one delivery attempt (its file descriptor
    holds the lock until L{QueueDirectory.update} or L{QueueDirectory.remove}).
    """

    queueId: str
    envelope: Envelope
    message: bytes
    fd: int = field(repr=False)


class LockedError(Exception):
    """
    Another process is delivering this message now.
    """


class QueueDirectory:
    """
    The queue files under C{path}.  See the module docstring.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.staging = os.path.join(path, "tmp")

    def prepare(self) -> list[tuple[str, float, int]]:
        """
        Make the directory if needed, remove stale staged files, and list
        the queue: (queue ID, next attempt, size) of each message.
        """
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        os.makedirs(self.staging, mode=0o700, exist_ok=True)
        now = time.time()
        for name in os.listdir(self.staging):
            self._removeStale(os.path.join(self.staging, name), now)
        found = []
        for name in os.listdir(self.path):
            if name.endswith(".tmp"):
                # An update's temporary file (replaceFile), left by a crash.
                self._removeStale(os.path.join(self.path, name), now)
            if not QUEUE_ID.fullmatch(name):
                continue
            try:
                with open(os.path.join(self.path, name), "rb") as f:
                    envelope = Envelope.decode(f.readline(MAX_ENVELOPE))
                    size = os.fstat(f.fileno()).st_size
            except (OSError, ValueError):
                continue
            found.append((name, envelope.nextAttempt, size))
        return found

    def _removeStale(self, path: str, now: float) -> None:
        try:
            if os.stat(path).st_mtime < now - STALE_STAGED:
                os.unlink(path)
        except OSError:
            pass

    def _file(self, queueId: str) -> str:
        if not QUEUE_ID.fullmatch(queueId):
            raise ValueError(f"bad queue ID {queueId!r}")
        return os.path.join(self.path, queueId)

    def stage(self, queueId: str, envelope: Envelope, message: bytes) -> None:
        """
        Write the message durably in C{tmp/}.

        @raise DiskFullError: when the disk is full (nothing is left).
        """
        self._file(queueId)
        try:
            writeNew(os.path.join(self.staging, queueId), envelope.encode() + message)
        except OSError as e:
            raise storeError(e, f"queueing {queueId}") from e

    def commit(self, queueId: str) -> None:
        """
        Move a staged message into the queue, durably.
        """
        staged = os.path.join(self.staging, queueId)
        try:
            os.rename(staged, self._file(queueId))
            fsyncDirectory(self.path)
        except OSError as e:
            unlinkQuietly(staged)
            raise storeError(e, f"queueing {queueId}") from e

    def discard(self, queueId: str) -> None:
        """
        Remove a staged message.
        """
        self._file(queueId)
        unlinkQuietly(os.path.join(self.staging, queueId))

    def claim(self, queueId: str) -> Claim | None:
        """
        Lock and read a queued message; C{None} if it is gone.

        @raise LockedError: if another process holds it.
        """
        path = self._file(queueId)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(queueId) from None
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(fd).st_ino:
                # Replaced or removed while we waited: the caller tries again.
                raise LockedError(queueId)
            with os.fdopen(os.dup(fd), "rb") as f:
                envelope = Envelope.decode(f.readline(MAX_ENVELOPE))
                message = f.read()
        except BaseException:
            os.close(fd)
            raise
        return Claim(queueId, envelope, message, fd)

    def update(self, claim: Claim) -> None:
        """
        Write the claimed message's new envelope (atomically) and unlock it.
        """
        try:
            replaceFile(
                self._file(claim.queueId), claim.envelope.encode() + claim.message
            )
        finally:
            os.close(claim.fd)

    def remove(self, claim: Claim) -> None:
        """
        Remove the claimed message from the queue, durably.
        """
        try:
            unlinkQuietly(self._file(claim.queueId))
            fsyncDirectory(self.path)
        finally:
            os.close(claim.fd)

    def release(self, claim: Claim) -> None:
        """
        Unlock the claimed message unchanged.
        """
        os.close(claim.fd)
