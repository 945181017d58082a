"""
The memcached text protocol, as memcached 1.6 speaks it: the same replies to
the same bytes, errors included (C{ERROR}, C{CLIENT_ERROR bad command line
format}, C{CLIENT_ERROR bad data chunk}, C{SERVER_ERROR object too large for
cache}, ...), with the meta commands from L{netplugins.memcache.meta}.

Where it parts from memcached, on purpose:
  - a key holding a control character (or DEL) is refused with C{CLIENT_ERROR
    bad command line format}, and a storage command refused for it has its
    data block read and dropped rather than taken for commands;
  - a C{get} line is bounded (L{MAX_GET_LINE}) where memcached buffers any
    length;
  - C{VERSION} says C{1.6.18-np}.

Replies to the commands of one read go out in one write.  With the factory's
C{cork} (as the service runs it), that write waits for the end of the reactor
iteration: under load one C{epoll_wait} reports many connections, and their
replies then leave back to back after all were read, so a client woken by the
first finds the others already there, rather than being woken once a reply
(a connection alone writes at once).
The session follows
L{netplugins.session}: while the transport's unsent output is over its
watermark the protocol reads no further command, and a command line without
its newline after L{MAX_LINE} bytes closes the connection, as memcached does.
"""

from __future__ import annotations

import re
import resource
import time
from collections.abc import Callable
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netplugins.addresses import describe
from netplugins.memcache.meta import _VA, MetaCommands, Pending
from netplugins.memcache.store import (
    ADD,
    APPEND,
    CAS,
    KEY_MAX_LENGTH,
    NOT_FOUND,
    PREPEND,
    REPLACE,
    SET,
    STAT_NAMES,
    Item,
    Store,
    itemTotal,
    strtol32,
    strtoul32,
    strtoull,
)
from netplugins.session import CLOSE_GRACE, COMMAND, Discipline

VERSION = b"1.6.18-np"

#: A command line with no newline after this many bytes closes the
#: connection (memcached's rule), unless it is a C{get}/C{gets}.
MAX_LINE = 2048

#: The longest C{get}/C{gets} line (about a thousand 250-byte keys).
MAX_GET_LINE = 256 * 1024

#: Once this much output is queued within one read, it is written and the
#: next command waits if the transport is over its watermark.
WRITE_BATCH = 64 * 1024

#: The largest payload of an authentication C{set} (user, space, password).
MAX_AUTH_PAYLOAD = 1024

_CRLF = b"\r\n"
_END = b"END\r\n"
_ERROR = b"ERROR\r\n"
_STORED = b"STORED\r\n"
_NOT_STORED = b"NOT_STORED\r\n"
_BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
_BAD_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
_TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
_NO_MEMORY = b"SERVER_ERROR out of memory storing object\r\n"
_BAD_EXPTIME = b"CLIENT_ERROR invalid exptime argument\r\n"
_NOREPLY = b"noreply"
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]").search
_INT_MAX = (1 << 31) - 1

_RESULTS = {
    "STORED": _STORED,
    "EXISTS": b"EXISTS\r\n",
    "NOT_FOUND": b"NOT_FOUND\r\n",
    "NOT_STORED": _NOT_STORED,
}


def badKey(key: bytes) -> bool:
    """
    Whether C{key} is refused: longer than 250 bytes or holding a control
    character.
    """
    return len(key) > KEY_MAX_LENGTH or _CONTROL(key) is not None


class MemcacheProtocol(MetaCommands, Protocol):
    """
    One memcached text protocol connection.

    @ivar authenticated: whether commands are taken (at once without checkers).
    """

    log = Logger()
    factory: MemcacheFactory
    transport: Any

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 0
        self._swallow = 0
        self._pending: Pending | None = None
        self._paused = False
        self._closing = False
        self._authPending = 0
        self.authenticated = True

    # Connection

    def connectionMade(self) -> None:
        factory = self.factory
        self.store = factory.store
        self.discipline = Discipline(
            self.transport,
            factory.clock,
            pause=self._pauseReading,
            resume=self._resumeReading,
            grace=factory.closeGrace,
        )
        factory.connectionOpened()
        if factory.checkers:
            self.authenticated = False
            self._attempts = factory.throttle.connection()
            if factory.preAuthTimeout:
                self.discipline.callLater(factory.preAuthTimeout, self._preAuthTimeout)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._held = None
        self.discipline.lost()
        self.factory.connectionClosed()

    def _pauseReading(self) -> None:
        self._paused = True
        self.transport.pauseProducing()

    def _resumeReading(self) -> None:
        self._paused = False
        self.transport.resumeProducing()
        if (self._chunks or self._continue is not None) and not self._closing:
            data = b"".join(self._chunks)
            self._chunks = []
            self._have = 0
            self._process(data)

    def _close(self, why: str) -> None:
        self._closing = True
        self._chunks = []
        self._release()
        self.log.info(
            "np-memcache: closing connection from {peer}: {why}",
            peer=describe(self.transport.getPeer()),
            why=why,
        )
        self.discipline.close(why)

    # Reading

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.factory.bytesRead += len(data)
        if self._swallow and not self._chunks:
            if len(data) <= self._swallow:
                self._swallow -= len(data)
                return
            data = data[self._swallow :]
            self._swallow = 0
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._paused:
                return
            if self._need:
                if self._have < self._need:
                    return
            elif b"\n" not in data:
                self._lineTooLong(self._chunks[0], self._have)
                return
            data = b"".join(self._chunks)
            self._chunks = []
            self._have = 0
        self._process(data)

    def _lineTooLong(self, start: bytes, length: int) -> None:
        """
        Close the connection if an unterminated line of C{length} bytes
        beginning with C{start} is over its limit.
        """
        if length <= MAX_LINE:
            return
        head = start.lstrip(b" ")
        if (
            len(start) - len(head) <= 100
            and (head.startswith(b"get ") or head.startswith(b"gets "))
            and length <= MAX_GET_LINE
        ):
            return
        self._close(f"command line of {length} bytes without a newline")

    def _process(self, buf: bytes) -> None:
        """
        Run the commands in C{buf} until it runs out or the output backs up;
        keep the rest for later.
        """
        now = int(self.factory.clock.seconds())
        if now != self.store.now:
            # Within a second, a tick changes nothing: a delayed flush that
            # is due was done by the tick that made it due.
            self.store.tick(now)
        out: list[bytes] = []
        self._out = out
        pos = 0
        end = len(buf)
        dispatch = _DISPATCH
        while not self._paused:
            if self._continue is not None:
                tokens, start, withCas, touch = self._continue
                self._continue = None
                self._values(tokens, start, out, withCas, touch)
                continue
            if pos >= end:
                break
            pending = self._pending
            if pending is not None:
                need = pending.length
                if end - pos < need:
                    break
                self._pending = None
                pos += need
                self._complete(pending, buf[pos - need : pos], out)
                continue
            if self._swallow:
                skip = min(self._swallow, end - pos)
                self._swallow -= skip
                pos += skip
                continue
            if self.authenticated:
                after = self._fast(buf, pos, out)
                if after != pos:
                    pos = after
                    if self._queued >= WRITE_BATCH or len(out) >= 512:
                        self._batch(out)
                    continue
            nl = buf.find(b"\n", pos)
            if nl == -1:
                break
            stop = nl - 1 if nl - pos > 1 and buf[nl - 1] == 13 else nl
            line = buf[pos:stop]
            pos = nl + 1
            if not self.authenticated:
                self._authLine(line, out)
                continue
            if b"\0" in line:
                line = line[: line.index(b"\0")]
            tokens = line.split(b" ")
            if b"" in tokens:
                tokens = [t for t in tokens if t]
            if tokens:
                handler = dispatch.get(tokens[0])
                if handler is not None:
                    handler(self, tokens, out)
                else:
                    self._other(tokens, out)
            else:
                out.append(_ERROR)
            if self._closing:
                break
            if self._queued >= WRITE_BATCH or len(out) >= 512:
                self._batch(out)
        self._out = None
        if out:
            # Alone, a connection has nobody to share an iteration with.
            if self.factory.cork and self.factory.currentConnections > 1:
                self._hold(b"".join(out))
            else:
                self._write(b"".join(out))
        if pos < end and not self._closing:
            rest = buf[pos:]
            self._chunks = [rest]
            self._have = len(rest)
            pending = self._pending
            self._need = pending.length if pending is not None else 0
            if pending is None and not self._paused:
                if b"\n" not in rest:
                    self._lineTooLong(rest, len(rest))
        else:
            self._need = 0
        if self._quitting:
            self._quitting = False
            self._release()
            self.discipline.close("quit")

    _quitting = False
    _out: list[bytes] | None = None
    #: Bytes of values queued in the current batch's output.
    _queued = 0
    #: A multi-key retrieval stopped while the output was backed up: its
    #: tokens, the next key's index, whether with CAS, the touch time.
    _continue: tuple[list[bytes], int, bool, int | None] | None = None

    def _batch(self, out: list[bytes]) -> None:
        """
        Join the output queued so far; write it once it is a whole batch.
        """
        batch = b"".join(out)
        out.clear()
        if len(batch) >= WRITE_BATCH:
            self._write(batch)
        else:
            out.append(batch)
            self._queued = len(batch)

    def _fast(self, buf: bytes, pos: int, out: list[bytes]) -> int:
        """
        Answer the run of the commonest commands at C{pos} in C{buf} in one
        loop: C{get} of one key, C{mg <key> v}, C{mn}, and C{set <key>
        <flags> <exptime> <bytes>} whose data block is in C{buf}.  Stop
        before the first line that is anything else or incomplete, or that
        the general path must answer (a bad key, an expired, flushed or
        stale item, an item over the limits, a bad data chunk), and once a
        batch of output is due.

        @return: the position after the last command answered.
        """
        store = self.store
        items = store.items
        now = store.now
        oldest = store.oldestLive
        moveToEnd = items.move_to_end
        find = buf.find
        end = len(buf)
        append = out.append
        queued = self._queued
        gets = hits = sets = 0
        while True:
            nl = find(b"\n", pos)
            if nl == -1:
                break
            tokens = buf[
                pos : nl - 1 if buf[nl - 1] == 13 and nl > pos + 1 else nl
            ].split(b" ")
            n = len(tokens)
            if n == 3:
                if tokens[0] != b"mg" or tokens[2] != b"v":
                    break
                key = tokens[1]
                if not 0 < len(key) <= KEY_MAX_LENGTH or (
                    not key.isalnum() and _CONTROL(key) is not None
                ):
                    break
                it = items.get(key)
                if it is None:
                    append(b"EN\r\n")
                else:
                    if (
                        (it.exptime and it.exptime <= now)
                        or it.time <= oldest
                        or it.stale
                        or it.tokenSent
                    ):
                        break
                    hits += 1
                    data = it.data
                    length = len(data) - 2
                    append(_VA[length] if length < 4096 else b"VA %d\r\n" % length)
                    append(data)
                    queued += length
                    it.fetched = True
                    # memcached moves an item's access time once a minute.
                    if it.time < now - 60:
                        it.time = now
                    moveToEnd(key)
                gets += 1
            elif n == 2:
                key = tokens[1]
                if tokens[0] != b"get" or not 0 < len(key) <= KEY_MAX_LENGTH:
                    break
                if not key.isalnum() and _CONTROL(key) is not None:
                    break
                it = items.get(key)
                if it is None:
                    append(_END)
                else:
                    if (it.exptime and it.exptime <= now) or it.time <= oldest:
                        break
                    hits += 1
                    it.fetched = True
                    data = it.data
                    out += (it.header or it.valueHeader(), _CRLF, data, _END)
                    queued += len(data)
                    moveToEnd(key)
                gets += 1
            elif n == 5:
                key, flagsToken, exptimeToken, lengthToken = (
                    tokens[1],
                    tokens[2],
                    tokens[3],
                    tokens[4],
                )
                if not (
                    tokens[0] == b"set"
                    and 0 < len(key) <= KEY_MAX_LENGTH
                    and len(flagsToken) < 10
                    and len(exptimeToken) < 10
                    and len(lengthToken) < 10
                    and flagsToken.isdigit()
                    and exptimeToken.isdigit()
                    and lengthToken.isdigit()
                    and (key.isalnum() or _CONTROL(key) is None)
                ):
                    break
                flags = int(flagsToken)
                exptime = int(exptimeToken)
                # The data block, its CRLF counted, must be here whole.
                after = nl + int(lengthToken) + 3
                if after > end or buf[after - 2 : after] != _CRLF:
                    break
                total = itemTotal(len(key), flags, after - nl - 1)
                if total > store.maxItemSize or total > store.memoryLimit:
                    break
                it = Item(
                    key,
                    buf[nl + 1 : after],
                    flags,
                    store.absolute(exptime) if exptime else 0,
                )
                append(_STORED if store.link(it) else _NOT_STORED)
                sets += 1
                nl = after - 1
            elif n == 1 and tokens[0] == b"mn":
                append(b"MN\r\n")
            else:
                break
            pos = nl + 1
            if queued >= WRITE_BATCH or len(out) >= 512:
                break
        if gets:
            stats = store.stats
            stats["cmd_get"] += gets
            if hits:
                stats["get_hits"] += hits
            if hits != gets:
                stats["get_misses"] += gets - hits
        if sets:
            store.stats["cmd_set"] += sets
        self._queued = queued
        return pos

    #: The end of a read's replies, held for the end of the reactor iteration.
    _held: bytes | None = None

    def _write(self, batch: bytes) -> None:
        self._queued = 0
        self.factory.bytesWritten += len(batch)
        if self._held is not None:
            self._release()
        self.transport.write(batch)

    def _hold(self, batch: bytes) -> None:
        """
        Write C{batch} at the end of the reactor iteration (L{_release}),
        after what is held already.
        """
        self._queued = 0
        self.factory.bytesWritten += len(batch)
        if self._held is None:
            self._held = batch
            self.factory.corked(self)
        else:
            self._held += batch

    def _release(self) -> None:
        """
        Write the held replies now.
        """
        held = self._held
        if held is not None:
            self._held = None
            self.transport.write(held)

    # Storage commands

    def _storage(self, tokens: list[bytes], out: list[bytes], mode: str) -> None:
        n = len(tokens)
        if mode == CAS:
            if n != 6 and n != 7:
                out.append(_ERROR)
                return
        elif n != 5 and n != 6:
            out.append(_ERROR)
            return
        noreply = tokens[-1] == _NOREPLY
        key = tokens[1]
        if len(key) > KEY_MAX_LENGTH:
            if not noreply:
                out.append(_BAD_FORMAT)
            return
        flagsToken, exptimeToken, lengthToken = tokens[2], tokens[3], tokens[4]
        flags: int | None
        exptime: int | None
        length: int | None
        if (
            len(flagsToken) < 10
            and len(exptimeToken) < 10
            and len(lengthToken) < 10
            and flagsToken.isdigit()
            and exptimeToken.isdigit()
            and lengthToken.isdigit()
        ):
            # Nine digits at most: no 32-bit truncation to apply.
            flags, exptime, length = (
                int(flagsToken),
                int(exptimeToken),
                int(lengthToken),
            )
        else:
            flags = strtoul32(flagsToken)
            exptime = strtol32(exptimeToken)
            length = strtol32(lengthToken)
        cas = 0
        if flags is None or exptime is None or length is None:
            if not noreply:
                out.append(_BAD_FORMAT)
            return
        if mode == CAS:
            given = strtoull(tokens[5])
            if given is None:
                if not noreply:
                    out.append(_BAD_FORMAT)
                return
            cas = given
        if length < 0 or length > _INT_MAX - 2:
            if not noreply:
                out.append(_BAD_FORMAT)
            return
        length += 2
        if _CONTROL(key) is not None:
            self._swallow = length
            if not noreply:
                out.append(_BAD_FORMAT)
            return
        store = self.store
        total = itemTotal(len(key), flags, length)
        if (total > store.maxItemSize or total > store.memoryLimit) and not self._fits(
            key, flags, length, out, noreply
        ):
            if mode == SET:
                store.unlink(key)
            return
        self._pending = Pending(
            mode,
            key,
            flags,
            store.absolute(exptime) if exptime else 0,
            length,
            cas,
            noreply,
        )

    def _fits(
        self, key: bytes, flags: int, length: int, out: list[bytes], noreply: bool
    ) -> bool:
        """
        Whether an item fits the item and memory limits; if not, answer and
        drop its data block.
        """
        store = self.store
        if store.tooLarge(len(key), flags, length):
            store.stats["store_too_large"] += 1
            reply = _TOO_LARGE
        elif itemTotal(len(key), flags, length) > store.memoryLimit:
            store.stats["store_no_memory"] += 1
            reply = _NO_MEMORY
        else:
            return True
        self._swallow = length
        if not noreply:
            out.append(reply)
        return False

    def _complete(self, pending: Pending, data: bytes, out: list[bytes]) -> None:
        """
        The data block of C{pending} arrived.
        """
        if pending.meta is not None:
            if pending.meta is _AUTH:
                self._authBlock(data, out)
            else:
                self.metaComplete(pending, data, out)
            return
        store = self.store
        store.stats["cmd_set"] += 1
        if data[-2:] != _CRLF:
            if not pending.noreply:
                out.append(_BAD_CHUNK)
            return
        it = Item(pending.key, data, pending.flags, pending.exptime)
        it.cas = pending.cas
        result = store.store(it, pending.mode)
        if not pending.noreply:
            out.append(_RESULTS[result])

    # Retrieval

    def do_get(self, tokens: list[bytes], out: list[bytes]) -> None:
        if len(tokens) != 2:
            self._retrieve(tokens, out, 1, False, None)
            return
        # The common case, one key, inline.
        key = tokens[1]
        if len(key) > KEY_MAX_LENGTH or _CONTROL(key) is not None:
            out.append(_BAD_FORMAT)
            return
        store = self.store
        stats = store.stats
        stats["cmd_get"] += 1
        it = store.fetch(key)
        if it is None:
            stats["get_misses"] += 1
            out.append(_END)
            return
        it.fetched = True
        stats["get_hits"] += 1
        data = it.data
        out += (it.header or it.valueHeader(), _CRLF, data, _END)
        self._queued += len(data)

    def do_gets(self, tokens: list[bytes], out: list[bytes]) -> None:
        self._retrieve(tokens, out, 1, True, None)

    def do_gat(self, tokens: list[bytes], out: list[bytes]) -> None:
        self._touchRetrieve(tokens, out, False)

    def do_gats(self, tokens: list[bytes], out: list[bytes]) -> None:
        self._touchRetrieve(tokens, out, True)

    def _touchRetrieve(self, tokens: list[bytes], out: list[bytes], cas: bool) -> None:
        if len(tokens) < 2:
            out.append(_ERROR)
            return
        exptime = strtol32(tokens[1])
        if exptime is None:
            out.append(_BAD_EXPTIME)
            return
        self._retrieve(tokens, out, 2, cas, self.store.absolute(exptime))

    def _retrieve(
        self,
        tokens: list[bytes],
        out: list[bytes],
        first: int,
        withCas: bool,
        touch: int | None,
    ) -> None:
        """
        Answer a retrieval command on C{tokens[first:]}, refusing it whole
        if a key is bad.
        """
        if len(tokens) < 2:
            out.append(_ERROR)
            return
        for i in range(first, len(tokens)):
            key = tokens[i]
            if len(key) > KEY_MAX_LENGTH or _CONTROL(key) is not None:
                out.append(_BAD_FORMAT)
                return
        self._values(tokens, first, out, withCas, touch)

    def _values(
        self,
        tokens: list[bytes],
        start: int,
        out: list[bytes],
        withCas: bool,
        touch: int | None,
    ) -> None:
        """
        The values of C{tokens[start:]} and C{END}; once a batch of output
        is queued it is written, and if that backs the transport up the
        rest waits (L{_continue}).
        """
        store = self.store
        stats = store.stats
        for i in range(start, len(tokens)):
            if self._queued >= WRITE_BATCH:
                self._write(b"".join(out))
                out.clear()
                if self._paused:
                    self._continue = (tokens, i, withCas, touch)
                    return
            it = store.fetch(tokens[i])
            if touch is None:
                stats["cmd_get"] += 1
            else:
                stats["cmd_touch"] += 1
            if it is None:
                stats["get_misses" if touch is None else "touch_misses"] += 1
                continue
            it.fetched = True
            if touch is None:
                stats["get_hits"] += 1
            else:
                it.exptime = touch
                stats["touch_hits"] += 1
            header = it.header or it.valueHeader()
            if withCas:
                out.append(b"%s %d\r\n" % (header, it.cas))
            else:
                out.append(header)
                out.append(_CRLF)
            out.append(it.data)
            self._queued += len(it.data)
        out.append(_END)

    # Other keyed commands

    def _incr(self, tokens: list[bytes], out: list[bytes], incr: bool) -> None:
        n = len(tokens)
        if n != 3 and n != 4:
            out.append(_ERROR)
            return
        noreply = tokens[-1] == _NOREPLY
        key = tokens[1]
        reply: bytes
        if badKey(key):
            reply = _BAD_FORMAT
        else:
            delta = strtoull(tokens[2])
            if delta is None:
                reply = b"CLIENT_ERROR invalid numeric delta argument\r\n"
            else:
                store = self.store
                result, _, value = store.delta(key, incr, delta)
                if result == "OK":
                    reply = b"%d\r\n" % value
                elif result == NOT_FOUND:
                    store.stats["incr_misses" if incr else "decr_misses"] += 1
                    reply = b"NOT_FOUND\r\n"
                elif result == "EOM":
                    reply = b"SERVER_ERROR out of memory\r\n"
                else:
                    reply = (
                        b"CLIENT_ERROR cannot increment or decrement "
                        b"non-numeric value\r\n"
                    )
        if not noreply:
            out.append(reply)

    def do_incr(self, tokens: list[bytes], out: list[bytes]) -> None:
        self._incr(tokens, out, True)

    def do_decr(self, tokens: list[bytes], out: list[bytes]) -> None:
        self._incr(tokens, out, False)

    def do_delete(self, tokens: list[bytes], out: list[bytes]) -> None:
        n = len(tokens)
        if n < 2 or n > 4:
            out.append(_ERROR)
            return
        noreply = False
        if n > 2:
            holdIsZero = tokens[2] == b"0"
            noreply = tokens[-1] == _NOREPLY
            if not (
                (n == 3 and (holdIsZero or noreply))
                or (n == 4 and holdIsZero and noreply)
            ):
                if not noreply:
                    out.append(
                        b"CLIENT_ERROR bad command line format.  "
                        b"Usage: delete <key> [noreply]\r\n"
                    )
                return
        key = tokens[1]
        if badKey(key):
            reply = _BAD_FORMAT
        else:
            store = self.store
            if store.peek(key) is not None:
                store.unlink(key)
                store.stats["delete_hits"] += 1
                reply = b"DELETED\r\n"
            else:
                store.stats["delete_misses"] += 1
                reply = b"NOT_FOUND\r\n"
        if not noreply:
            out.append(reply)

    def do_touch(self, tokens: list[bytes], out: list[bytes]) -> None:
        n = len(tokens)
        if n != 3 and n != 4:
            out.append(_ERROR)
            return
        noreply = tokens[-1] == _NOREPLY
        key = tokens[1]
        exptime = strtol32(tokens[2])
        if badKey(key):
            reply = _BAD_FORMAT
        elif exptime is None:
            reply = _BAD_EXPTIME
        else:
            store = self.store
            store.stats["cmd_touch"] += 1
            it = store.fetch(key)
            if it is None:
                store.stats["touch_misses"] += 1
                reply = b"NOT_FOUND\r\n"
            else:
                it.exptime = store.absolute(exptime)
                store.stats["touch_hits"] += 1
                reply = b"TOUCHED\r\n"
        if not noreply:
            out.append(reply)

    # Whole-server commands

    def do_flush_all(self, tokens: list[bytes], out: list[bytes]) -> None:
        n = len(tokens)
        if n > 3:
            out.append(_ERROR)
            return
        noreply = tokens[-1] == _NOREPLY
        store = self.store
        store.stats["cmd_flush"] += 1
        delay = 0
        if n != (2 if noreply else 1):
            parsed = strtol32(tokens[1])
            if parsed is None:
                if not noreply:
                    out.append(_BAD_EXPTIME)
                return
            delay = parsed
        store.flush(delay)
        if not noreply:
            out.append(b"OK\r\n")

    def do_version(self, tokens: list[bytes], out: list[bytes]) -> None:
        out.append(b"VERSION " + VERSION + _CRLF)

    def do_verbosity(self, tokens: list[bytes], out: list[bytes]) -> None:
        n = len(tokens)
        if n != 2 and n != 3:
            out.append(_ERROR)
            return
        noreply = tokens[-1] == _NOREPLY
        if noreply:
            return
        if strtoul32(tokens[1]) is None:
            out.append(_BAD_FORMAT)
        else:
            out.append(b"OK\r\n")

    def do_quit(self, tokens: list[bytes], out: list[bytes]) -> None:
        self._quitting = True
        self._closing = True

    def do_shutdown(self, tokens: list[bytes], out: list[bytes]) -> None:
        out.append(b"ERROR: shutdown not enabled\r\n")

    def do_cache_memlimit(self, tokens: list[bytes], out: list[bytes]) -> None:
        n = len(tokens)
        if n != 2 and n != 3:
            out.append(_ERROR)
            return
        noreply = tokens[-1] == _NOREPLY
        megabytes = strtoul32(tokens[1])
        if megabytes is None:
            reply = _BAD_FORMAT
        elif megabytes < 8:
            reply = b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"
        else:
            store = self.store
            store.memoryLimit = megabytes * 1024 * 1024
            if store.used > store.memoryLimit:
                store._evict(store.memoryLimit)
            reply = b"OK\r\n"
        if not noreply:
            out.append(reply)

    def do_stats(self, tokens: list[bytes], out: list[bytes]) -> None:
        if len(tokens) == 1:
            out.append(_statLines(self.factory.generalStats()))
            return
        sub = tokens[1]
        store = self.store
        if sub == b"reset":
            for name in store.stats:
                if name not in ("total_items",):
                    store.stats[name] = 0
            self.factory.bytesRead = self.factory.bytesWritten = 0
            out.append(b"RESET\r\n")
        elif sub == b"detail":
            if len(tokens) < 3:
                out.append(b"CLIENT_ERROR usage: stats detail on|off|dump\r\n")
            elif tokens[2] in (b"on", b"off"):
                out.append(b"OK\r\n")
            elif tokens[2] == b"dump":
                out.append(_END)
            else:
                out.append(b"CLIENT_ERROR usage: stats detail on|off|dump\r\n")
        elif sub == b"settings":
            out.append(_statLines(self.factory.settingsStats()))
        elif sub == b"items":
            out.append(_statLines(self.factory.itemStats()))
        elif sub == b"slabs":
            out.append(_statLines(self.factory.slabStats()))
        elif sub == b"sizes":
            out.append(b"STAT sizes_status disabled\r\nEND\r\n")
        elif sub == b"cachedump":
            out.append(b"CLIENT_ERROR stats cachedump not allowed\r\n")
        else:
            out.append(_ERROR)

    def _other(self, tokens: list[bytes], out: list[bytes]) -> None:
        """
        A command not in the dispatch table: memcached's refusals.
        """
        if len(tokens[0]) < 2:
            out.append(_ERROR)
        elif tokens[-1].startswith(b"HTTP/"):
            self._close("an HTTP request")
        else:
            out.append(_ERROR)

    # Authentication (memcached's ASCII "set" with "user password")

    def _authLine(self, line: bytes, out: list[bytes]) -> None:
        """
        The first line of an authentication C{set}; the payload is read as
        its data block.
        """
        tokens = [t for t in line.split(b" ") if t]
        size = strtoul32(tokens[4]) if len(tokens) >= 5 else None
        if len(tokens) < 5 or tokens[0] != b"set" or size is None:
            out.append(b"CLIENT_ERROR unauthenticated\r\n")
            return
        if size > MAX_AUTH_PAYLOAD:
            self._close(f"authentication payload of {size} bytes")
            return
        self._pending = Pending(SET, b"", 0, 0, size + 2, 0, False, meta=_AUTH)

    def _authBlock(self, data: bytes, out: list[bytes]) -> None:
        if data[-2:] != _CRLF:
            out.append(b"CLIENT_ERROR bad command line termination\r\n")
            return
        words = [w for w in data[:-2].split(b" ") if w]
        if len(words) < 2:
            out.append(b"CLIENT_ERROR bad authentication token format\r\n")
            return
        factory = self.factory
        store = self.store
        store.stats["auth_cmds"] += 1
        self._authPending += 1
        self.discipline.hold(COMMAND)
        d = factory.throttle.login(
            factory.portal,
            UsernamePassword(words[0], words[1]),
            None,
            IMemcacheUser,
            peer=self.transport.getPeer(),
            connection=self._attempts,
        )
        d.addCallbacks(self._cbLogin, self._ebLogin)

    def _cbLogin(self, result: Any) -> None:
        self._authPending -= 1
        _, avatar, logout = result
        self.authenticated = True
        logout()
        self.log.info(
            "np-memcache: {user} logged in from {peer}",
            user=avatar,
            peer=describe(self.transport.getPeer()),
        )
        self._afterLogin(_STORED)

    def _ebLogin(self, failure: Failure) -> None:
        self._authPending -= 1
        self.store.stats["auth_errors"] += 1
        if failure.check(UnauthorizedLogin):
            self.log.info(
                "np-memcache: failed login from {peer}",
                peer=describe(self.transport.getPeer()),
            )
        else:
            self.log.failure(
                "np-memcache: login from {peer} failed",
                failure,
                peer=describe(self.transport.getPeer()),
            )
        self._afterLogin(b"CLIENT_ERROR authentication failure\r\n")
        if self._attempts.exhausted and not self._closing:
            self._close("too many failed logins")

    def _afterLogin(self, reply: bytes) -> None:
        if self._out is not None:
            self._out.append(reply)
        else:
            self._release()
            self.transport.write(reply)
        self.discipline.release(COMMAND)

    def _preAuthTimeout(self) -> None:
        if not self.authenticated and not self._closing:
            self._close("not logged in within the pre-authentication deadline")


_AUTH = object()


def _statLines(rows: list[tuple[str, object]]) -> bytes:
    return "".join(f"STAT {name} {value}\r\n" for name, value in rows).encode() + _END


class IMemcacheUser:
    """
    The avatar interface of a memcached login: only the user's name.
    """


@implementer(IRealm)
class _Realm:
    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        return IMemcacheUser, avatarId, lambda: None


_DISPATCH: dict[bytes, Callable[[MemcacheProtocol, list[bytes], list[bytes]], None]] = {
    b"get": MemcacheProtocol.do_get,
    b"bget": MemcacheProtocol.do_get,
    b"gets": MemcacheProtocol.do_gets,
    b"gat": MemcacheProtocol.do_gat,
    b"gats": MemcacheProtocol.do_gats,
    b"set": lambda p, tokens, out: p._storage(tokens, out, SET),
    b"add": lambda p, tokens, out: p._storage(tokens, out, ADD),
    b"replace": lambda p, tokens, out: p._storage(tokens, out, REPLACE),
    b"append": lambda p, tokens, out: p._storage(tokens, out, APPEND),
    b"prepend": lambda p, tokens, out: p._storage(tokens, out, PREPEND),
    b"cas": lambda p, tokens, out: p._storage(tokens, out, CAS),
    b"incr": MemcacheProtocol.do_incr,
    b"decr": MemcacheProtocol.do_decr,
    b"delete": MemcacheProtocol.do_delete,
    b"touch": MemcacheProtocol.do_touch,
    b"flush_all": MemcacheProtocol.do_flush_all,
    b"version": MemcacheProtocol.do_version,
    b"verbosity": MemcacheProtocol.do_verbosity,
    b"quit": MemcacheProtocol.do_quit,
    b"shutdown": MemcacheProtocol.do_shutdown,
    b"cache_memlimit": MemcacheProtocol.do_cache_memlimit,
    b"stats": MemcacheProtocol.do_stats,
    b"mg": MemcacheProtocol.meta_mg,
    b"ms": MemcacheProtocol.meta_ms,
    b"md": MemcacheProtocol.meta_md,
    b"ma": MemcacheProtocol.meta_ma,
    b"mn": MemcacheProtocol.meta_mn,
    b"me": MemcacheProtocol.meta_me,
}


class MemcacheFactory(Factory):
    """
    Builds L{MemcacheProtocol}s sharing one L{Store}, and keeps the counters
    C{stats} reports that are not the store's.

    @ivar checkers: when not empty, each connection must log in first with
        memcached's ASCII authentication.
    """

    closeGrace = CLOSE_GRACE
    preAuthTimeout: float | None = 120.0
    #: Whether replies wait for the end of the reactor iteration (see the
    #: module docstring); the service sets it.
    cork = False

    def __init__(
        self,
        store: Store,
        *,
        clock: Any = None,
        checkers: tuple[Any, ...] = (),
        throttle: Any = None,
        maxConnections: int | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.store = store
        self.clock = clock
        self.checkers = checkers
        self.throttle = throttle
        self.maxConnections = maxConnections
        if checkers:
            from twisted.cred.portal import Portal

            from netplugins.cred.throttle import LoginThrottle

            self.portal = Portal(_Realm(), list(checkers))
            if self.throttle is None:
                self.throttle = LoginThrottle(clock)
        self.started = time.time()
        self.currentConnections = 0
        self.totalConnections = 0
        self.bytesRead = 0
        self.bytesWritten = 0
        self._corked: list[MemcacheProtocol] = []

    def corked(self, protocol: MemcacheProtocol) -> None:
        """
        Write C{protocol}'s held replies when the reactor iteration ends:
        once every connection it reported was read.
        """
        if not self._corked:
            self.clock.callLater(0, self._uncork)
        self._corked.append(protocol)

    def _uncork(self) -> None:
        corked, self._corked = self._corked, []
        for protocol in corked:
            protocol._release()

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        protocol = MemcacheProtocol()
        protocol.factory = self
        return protocol

    def connectionOpened(self) -> None:
        self.currentConnections += 1
        self.totalConnections += 1

    def connectionClosed(self) -> None:
        self.currentConnections -= 1

    def generalStats(self) -> list[tuple[str, object]]:
        """
        C{stats}: memcached's general statistics that mean something here.
        """
        import os

        now = time.time()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        store = self.store
        stats = store.stats
        rows: list[tuple[str, object]] = [
            ("pid", os.getpid()),
            ("uptime", int(now - self.started)),
            ("time", int(now)),
            ("version", VERSION.decode()),
            ("pointer_size", 64),
            ("rusage_user", f"{usage.ru_utime:.6f}"),
            ("rusage_system", f"{usage.ru_stime:.6f}"),
            ("max_connections", self.maxConnections or 0),
            ("curr_connections", self.currentConnections),
            ("total_connections", self.totalConnections),
        ]
        for name in STAT_NAMES[:24]:
            rows.append((name, stats[name]))
        rows += [
            ("bytes_read", self.bytesRead),
            ("bytes_written", self.bytesWritten),
            ("limit_maxbytes", store.memoryLimit),
            ("accepting_conns", 1),
            ("threads", 1),
            ("bytes", store.used),
            ("curr_items", len(store.items)),
        ]
        for name in STAT_NAMES[24:]:
            rows.append((name, stats[name]))
        return rows

    def settingsStats(self) -> list[tuple[str, object]]:
        """
        C{stats settings}: the settings memcached reports that apply here.
        """
        store = self.store
        return [
            ("maxbytes", store.memoryLimit),
            ("maxconns", self.maxConnections or 0),
            ("udpport", 0),
            ("evictions", "on"),
            ("num_threads", 1),
            ("cas_enabled", "yes"),
            ("auth_enabled_sasl", "no"),
            ("auth_enabled_ascii", "yes" if self.checkers else "no"),
            ("item_size_max", store.maxItemSize),
            ("flush_enabled", "yes"),
            ("temp_lru", "no"),
        ]

    def itemStats(self) -> list[tuple[str, object]]:
        """
        C{stats items}: one class, as there are no slabs here.
        """
        store = self.store
        if not store.items:
            return []
        oldest = next(iter(store.items.values()))
        stats = store.stats
        return [
            ("items:1:number", len(store.items)),
            ("items:1:age", max(0, store.now - oldest.time)),
            ("items:1:mem_requested", store.used),
            ("items:1:evicted", stats["evictions"]),
            ("items:1:reclaimed", stats["reclaimed"]),
            ("items:1:expired_unfetched", stats["expired_unfetched"]),
            ("items:1:evicted_unfetched", stats["evicted_unfetched"]),
        ]

    def slabStats(self) -> list[tuple[str, object]]:
        """
        C{stats slabs}: the memory in use and its limit; no slab classes.
        """
        return [
            ("active_slabs", 1 if self.store.items else 0),
            ("total_malloced", self.store.used),
        ]
