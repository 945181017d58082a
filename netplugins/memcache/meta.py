"""
memcached's meta commands (C{mg ms md ma mn me}) with their flags, as
memcached 1.6 answers them: base64 keys (C{b}), opaque tokens (C{O}), quiet
mode (C{q}), returned fields (C{k v s t c f l h}), TTL updates (C{T}),
vivify-on-miss (C{N}), recache (C{R}), and stale-while-revalidate: C{md I}
and C{ms I} mark an item stale, C{mg} then hands one client the win flag
C{W} to refresh it, shows C{X} while stale and C{Z} once a win was handed.
"""

from __future__ import annotations

import binascii
import re
from typing import Any

from netplugins.memcache.store import (
    ADD,
    APPEND,
    CAS,
    EXISTS,
    KEY_MAX_LENGTH,
    NOT_FOUND,
    NOT_STORED,
    PREPEND,
    REPLACE,
    SET,
    STORED,
    Item,
    Store,
    itemTotal,
    strtol32,
    strtoul32,
    strtoull,
)

#: The most tokens a meta command may have, its terminator counted
#: (memcached's C{MFLAG_MAX_OPT_LENGTH}).
MAX_META_TOKENS = 20

#: The longest opaque token, its C{O} included.
MAX_OPAQUE = 32

_BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
_BAD_TOKEN = "CLIENT_ERROR bad token in command line format"  # noqa: S105
_OPAQUE_TOO_LONG = b"CLIENT_ERROR opaque token too long\r\n"
_CODES = {STORED: b"HD", EXISTS: b"EX", NOT_FOUND: b"NF", NOT_STORED: b"NS"}
_MS_MODES = {
    0: SET,
    ord("E"): ADD,
    ord("A"): APPEND,
    ord("P"): PREPEND,
    ord("R"): REPLACE,
    ord("S"): SET,
}


class Pending:
    """
    A storage command (C{set} ... or C{ms}) waiting for its data block.

    @ivar meta: for C{ms}, its L{MetaFlags}.
    """

    __slots__ = ("cas", "exptime", "flags", "key", "length", "meta", "mode", "noreply")

    def __init__(
        self,
        mode: str,
        key: bytes,
        flags: int,
        exptime: int,
        length: int,
        cas: int,
        noreply: bool,
        meta: Any = None,
    ) -> None:
        self.mode = mode
        self.key = key
        self.flags = flags
        self.exptime = exptime
        self.length = length
        self.cas = cas
        self.noreply = noreply
        self.meta = meta


class MetaFlags:
    """
    A meta command's flags, read as memcached's C{_meta_flag_preparse}
    reads them.
    """

    __slots__ = (
        "binary",
        "cas",
        "clientFlags",
        "delta",
        "exptime",
        "hasCas",
        "initial",
        "key",
        "locked",
        "mode",
        "newTTL",
        "noUpdate",
        "noreply",
        "recache",
        "stale",
        "tokens",
        "value",
        "vivify",
        "vivifyExptime",
    )

    def __init__(self, key: bytes, tokens: list[bytes]) -> None:
        self.key = key
        self.tokens = tokens
        self.binary = False
        self.locked = False
        self.vivify = False
        self.noUpdate = False
        self.value = False
        self.noreply = False
        self.stale = False
        self.hasCas = False
        self.cas = 0
        self.newTTL = False
        self.exptime = 0
        self.vivifyExptime = 0
        self.recache = 0
        self.clientFlags = 0
        self.mode = 0
        self.delta = 1
        self.initial = 0


def parseFlags(
    store: Store, key: bytes, tokens: list[bytes]
) -> tuple[MetaFlags, str | None]:
    """
    Read the flag C{tokens} of a meta command on C{key}.

    @return: the flags and memcached's error message (C{None}: no error).
    """
    flags = MetaFlags(key, tokens)
    error: str | None = None
    failed = False
    seen: set[int] = set()
    for token in tokens:
        o = token[0]
        if o >= 127 or o in seen:
            return flags, "CLIENT_ERROR duplicate flag"
        seen.add(o)
        rest = token[1:]
        if o == 98:  # b
            try:
                decoded = binascii.a2b_base64(flags.key, strict_mode=True)
            except binascii.Error:
                decoded = b""
            if not decoded:
                error = "CLIENT_ERROR error decoding key"
                failed = True
            flags.key = decoded
            flags.binary = True
        elif o in (78, 84, 82):  # N T R
            flags.locked = True
            value = strtol32(rest)
            if value is None:
                error = _BAD_TOKEN
                failed = True
            elif o == 78:
                flags.vivify = True
                flags.vivifyExptime = store.absolute(value)
            elif o == 84:
                flags.exptime = store.absolute(value)
                flags.newTTL = True
            else:
                flags.recache = store.absolute(value)
            if o == 78:
                flags.vivify = True
        elif o in (108, 104):  # l h
            flags.locked = True
        elif o in (79, 80, 76, 107, 115, 116, 99, 102):  # O P L k s t c f
            pass
        elif o == 118:  # v
            flags.value = True
        elif o == 117:  # u
            flags.noUpdate = True
        elif o == 113:  # q
            flags.noreply = True
        elif o == 70:  # F
            value = strtoul32(rest)
            if value is None:
                failed = True
            else:
                flags.clientFlags = value
        elif o == 67:  # C
            value = strtoull(rest)
            if value is None:
                error = _BAD_TOKEN
                failed = True
            else:
                flags.cas = value
                flags.hasCas = True
        elif o == 77:  # M
            if len(token) != 2:
                error = "CLIENT_ERROR incorrect length for M token"
                failed = True
            else:
                flags.mode = token[1]
        elif o == 74:  # J
            value = strtoull(rest)
            if value is None:
                error = "CLIENT_ERROR invalid numeric initial value"
                failed = True
            else:
                flags.initial = value
        elif o == 68:  # D
            value = strtoull(rest)
            if value is None:
                error = "CLIENT_ERROR invalid numeric delta value"
                failed = True
            else:
                flags.delta = value
        elif o == 73:  # I
            flags.stale = True
        else:
            return flags, "CLIENT_ERROR invalid flag"
    if failed:
        return flags, error or "CLIENT_ERROR bad command line format"
    return flags, None


#: The C{mg} flags L{MetaCommands._plainMg} answers, as bits.
_PLAIN_MG = {ord(flag): 1 << i for i, flag in enumerate("vkstcfhlquO")}
_VALUE_BIT = _PLAIN_MG[ord("v")]
_QUIET_BIT = _PLAIN_MG[ord("q")]
_NO_UPDATE_BIT = _PLAIN_MG[ord("u")]
_OPAQUE_BIT = _PLAIN_MG[ord("O")]


def _key(key: bytes, binary: bool) -> bytes:
    """
    A key as the C{k} flag returns it.
    """
    if binary:
        return b" k" + binascii.b2a_base64(key, newline=False) + b" b"
    return b" k" + key


def _opaqueAndKey(flags: MetaFlags, parts: list[bytes]) -> bool:
    """
    Append the O and k flags' fields; C{False} if an opaque is too long.
    """
    for token in flags.tokens:
        o = token[0]
        if o == 79:
            if len(token) > MAX_OPAQUE:
                return False
            parts.append(b" " + token)
        elif o == 107:
            parts.append(_key(flags.key, flags.binary))
    return True


_badKey = re.compile(rb"[\x00-\x1f\x7f]").search

#: C{VA <n>\r\n} for the value lengths most seen, made once.
_VA = [b"VA %d\r\n" % n for n in range(4096)]


class MetaCommands:
    """
    The meta commands, mixed into the text protocol.
    """

    store: Store

    def _fits(
        self, key: bytes, flags: int, length: int, out: list[bytes], noreply: bool
    ) -> bool:
        raise NotImplementedError()

    def _metaStart(
        self, tokens: list[bytes], out: list[bytes], tooMany: bytes
    ) -> MetaFlags | None:
        """
        The checks every meta command but C{ms} starts with; the flags, or
        C{None} once the error is answered.
        """
        if len(tokens) < 2:
            out.append(b"ERROR\r\n")
            return None
        if len(tokens[1]) > KEY_MAX_LENGTH:
            out.append(_BAD_FORMAT)
            return None
        if len(tokens) + 1 > MAX_META_TOKENS:
            out.append(tooMany)
            return None
        flags, error = parseFlags(self.store, tokens[1], tokens[2:])
        if error is not None:
            if tokens[0] != b"mg":
                error = "CLIENT_ERROR invalid or duplicate flag"
            out.append(error.encode() + b"\r\n")
            return None
        if not flags.binary and _badKey(flags.key):
            out.append(_BAD_FORMAT)
            return None
        return flags

    def meta_mn(self, tokens: list[bytes], out: list[bytes]) -> None:
        out.append(b"MN\r\n")

    def meta_me(self, tokens: list[bytes], out: list[bytes]) -> None:
        if len(tokens) < 2 or len(tokens[1]) > KEY_MAX_LENGTH:
            out.append(_BAD_FORMAT)
            return
        key = tokens[1]
        binary = len(tokens) >= 3 and tokens[2] == b"b"
        if binary:
            try:
                key = binascii.a2b_base64(key, strict_mode=True)
            except binascii.Error:
                key = b""
            if not key:
                out.append(_BAD_FORMAT)
                return
        elif _badKey(key):
            out.append(_BAD_FORMAT)
            return
        store = self.store
        store.stats["cmd_meta"] += 1
        it = store.peek(key)
        if it is None:
            out.append(b"EN\r\n")
            return
        shown = binascii.b2a_base64(key, newline=False) if it.binaryKey else key
        out.append(
            b"ME %s exp=%d la=%d cas=%d fetch=%s cls=1 size=%d\r\n"
            % (
                shown,
                -1 if it.exptime == 0 else store.now - it.exptime,
                store.now - it.time,
                it.cas,
                b"yes" if it.fetched else b"no",
                itemTotal(len(it.key), it.flags, len(it.data)),
            )
        )

    def meta_mg(self, tokens: list[bytes], out: list[bytes]) -> None:
        if not self._plainMg(tokens, out):
            self._mg(tokens, out)

    def _plainMg(self, tokens: list[bytes], out: list[bytes]) -> bool:
        """
        The common C{mg}: a printable key and only flags that return fields
        (C{v k s t c f h l}), C{q}, C{u} and opaques, answered without the
        general flag parsing; C{False} for any other, left to L{_mg}.
        """
        if len(tokens) < 2 or len(tokens) + 1 > MAX_META_TOKENS:
            return False
        key = tokens[1]
        if len(key) > KEY_MAX_LENGTH or _badKey(key):
            return False
        seen = 0
        for i in range(2, len(tokens)):
            token = tokens[i]
            bit = _PLAIN_MG.get(token[0])
            if (
                bit is None
                or seen & bit
                or (len(token) > 1 and bit != _OPAQUE_BIT)
                or len(token) > MAX_OPAQUE
            ):
                return False
            seen |= bit
        store = self.store
        stats = store.stats
        stats["cmd_get"] += 1
        it = store.peek(key)
        if it is None:
            stats["get_misses"] += 1
            if not seen & _QUIET_BIT:
                parts = [b"EN"]
                _opaqueAndKey(MetaFlags(key, tokens[2:]), parts)
                parts.append(b"\r\n")
                out.append(b"".join(parts))
            return True
        stats["get_hits"] += 1
        data = it.data
        if seen == _VALUE_BIT and not it.stale and not it.tokenSent:
            length = len(data) - 2
            out.append(_VA[length] if length < 4096 else b"VA %d\r\n" % length)
            out.append(data)
            self._queued += length
            store.bump(it)
            return True
        parts = [b"VA %d" % (len(data) - 2) if seen & _VALUE_BIT else b"HD"]
        now = store.now
        for i in range(2, len(tokens)):
            o = tokens[i][0]
            if o == 115:  # s
                parts.append(b" s%d" % (len(data) - 2))
            elif o == 116:  # t
                parts.append(
                    b" t-1" if it.exptime == 0 else b" t%d" % (it.exptime - now)
                )
            elif o == 99:  # c
                parts.append(b" c%d" % it.cas)
            elif o == 102:  # f
                parts.append(b" f%d" % it.flags)
            elif o == 108:  # l
                parts.append(b" l%d" % (now - it.time))
            elif o == 104:  # h
                parts.append(b" h1" if it.fetched else b" h0")
            elif o == 79:  # O
                parts.append(b" " + tokens[i])
            elif o == 107:  # k
                parts.append(_key(it.key, it.binaryKey))
        if it.tokenSent:
            parts.append(b" Z")
        if it.stale:
            parts.append(b" X")
            if not it.tokenSent:
                parts.append(b" W")
                it.tokenSent = True
        parts.append(b"\r\n")
        out.append(b"".join(parts))
        if seen & _VALUE_BIT:
            out.append(data)
            self._queued += len(data)
        if not seen & _NO_UPDATE_BIT:
            store.bump(it)
        return True

    def _mg(self, tokens: list[bytes], out: list[bytes]) -> None:
        flags = self._metaStart(
            tokens, out, b"CLIENT_ERROR options flags are too long\r\n"
        )
        if flags is None:
            return
        store = self.store
        stats = store.stats
        key = flags.key
        it = store.peek(key)
        created = False
        if it is None and flags.vivify:
            it = Item(key, b"\r\n", 0, 0)
            it.binaryKey = flags.binary
            created = store.link(it)
            if not created:
                it = None
        if it is None:
            stats["cmd_get"] += 1
            stats["get_misses"] += 1
            parts = [b"EN"]
            if not _opaqueAndKey(flags, parts):
                out.append(_OPAQUE_TOO_LONG)
            elif not flags.noreply:
                parts.append(b"\r\n")
                out.append(b"".join(parts))
            return
        parts = [b"VA %d" % (len(it.data) - 2) if flags.value else b"HD"]
        won = False
        ttlSet = False
        now = store.now
        for token in flags.tokens:
            o = token[0]
            if o == 84:  # T
                ttlSet = True
                it.exptime = flags.exptime
            elif o == 78:  # N
                if created:
                    it.exptime = flags.vivifyExptime
                    won = True
            elif o == 82:  # R
                if (
                    not it.tokenSent
                    and not created
                    and it.exptime != 0
                    and it.exptime < flags.recache
                ):
                    won = True
            elif o == 115:  # s
                parts.append(b" s%d" % (len(it.data) - 2))
            elif o == 116:  # t
                parts.append(
                    b" t-1" if it.exptime == 0 else b" t%d" % (it.exptime - now)
                )
            elif o == 99:  # c
                parts.append(b" c%d" % it.cas)
            elif o == 102:  # f
                parts.append(b" f%d" % it.flags)
            elif o == 108:  # l
                parts.append(b" l%d" % (now - it.time))
            elif o == 104:  # h
                parts.append(b" h1" if it.fetched else b" h0")
            elif o == 79:  # O
                if len(token) > MAX_OPAQUE:
                    out.append(_OPAQUE_TOO_LONG)
                    return
                parts.append(b" " + token)
            elif o == 107:  # k
                parts.append(_key(it.key, it.binaryKey))
        if it.tokenSent:
            parts.append(b" Z")
        if it.stale:
            parts.append(b" X")
            if not it.tokenSent:
                won = True
        if won:
            parts.append(b" W")
            it.tokenSent = True
        parts.append(b"\r\n")
        if flags.value:
            parts.append(it.data)
            self._queued += len(it.data)
        out.append(b"".join(parts))
        if not flags.noUpdate:
            store.bump(it)
        if ttlSet:
            stats["cmd_touch"] += 1
            stats["touch_hits"] += 1
        else:
            stats["cmd_get"] += 1
            stats["get_hits"] += 1

    def meta_ms(self, tokens: list[bytes], out: list[bytes]) -> None:
        n = len(tokens)
        if n < 2:
            out.append(b"ERROR\r\n")
            return
        if len(tokens[1]) > KEY_MAX_LENGTH or n == 2:
            out.append(_BAD_FORMAT)
            return
        if n + 1 > MAX_META_TOKENS:
            out.append(b"CLIENT_ERROR options flags too long\r\n")
            return
        length = strtol32(tokens[2])
        if length is None or length < 0 or length > (1 << 31) - 3:
            out.append(_BAD_FORMAT)
            return
        length += 2
        store = self.store
        flags, error = parseFlags(store, tokens[1], tokens[3:])
        if error is None:
            for token in flags.tokens:
                if token[0] == 79 and len(token) > MAX_OPAQUE:
                    error = "CLIENT_ERROR opaque token too long"
        mode = _MS_MODES.get(flags.mode)
        if error is None and mode is None:
            error = "CLIENT_ERROR invalid mode for ms M token"
        if error is None and not flags.binary and _badKey(flags.key):
            error = "CLIENT_ERROR bad command line format"
        if error is not None or mode is None:
            self._swallow = length
            out.append((error or "").encode() + b"\r\n")
            return
        if flags.hasCas and (mode == SET or mode == REPLACE):
            mode = CAS
        key = flags.key
        if not self._fits(key, flags.clientFlags, length, out, False):
            store.unlink(key)
            return
        self._pending = Pending(
            mode,
            key,
            flags.clientFlags,
            flags.exptime,
            length,
            flags.cas,
            flags.noreply,
            meta=flags,
        )

    _swallow: int
    _pending: Pending | None
    #: Bytes of values queued in the current batch's output.
    _queued: int

    def metaComplete(self, pending: Pending, data: bytes, out: list[bytes]) -> None:
        """
        The data block of an C{ms} arrived: store it and answer.
        """
        flags: MetaFlags = pending.meta
        store = self.store
        store.stats["cmd_set"] += 1
        if data[-2:] != b"\r\n":
            out.append(b"CLIENT_ERROR bad data chunk\r\n")
            return
        it = Item(pending.key, data, pending.flags, pending.exptime)
        it.cas = pending.cas
        it.binaryKey = flags.binary
        result = store.store(it, pending.mode, flags.stale and pending.mode == CAS)
        if result == STORED and pending.noreply:
            return
        stored = store.items.get(pending.key) if result == STORED else None
        parts = [_CODES[result]]
        for token in flags.tokens:
            o = token[0]
            if o == 79:
                parts.append(b" " + token)
            elif o == 107:
                parts.append(_key(pending.key, flags.binary))
            elif o == 99:
                parts.append(b" c%d" % (stored.cas if stored is not None else 0))
        parts.append(b"\r\n")
        out.append(b"".join(parts))

    def meta_md(self, tokens: list[bytes], out: list[bytes]) -> None:
        flags = self._metaStart(tokens, out, b"CLIENT_ERROR options flags too long\r\n")
        if flags is None:
            return
        parts: list[bytes] = []
        if not _opaqueAndKey(flags, parts):
            out.append(_OPAQUE_TOO_LONG)
            return
        store = self.store
        it = store.peek(flags.key)
        if it is None:
            store.stats["delete_misses"] += 1
            code = b"NF"
        elif flags.hasCas and it.cas != flags.cas:
            store.stats["delete_misses"] += 1
            code = b"EX"
        else:
            if flags.stale:
                if flags.newTTL:
                    it.exptime = flags.exptime
                it.stale = True
                it.tokenSent = False
                it.cas = store.nextCas()
            else:
                store.stats["delete_hits"] += 1
                store.unlink(flags.key)
            if flags.noreply:
                return
            code = b"HD"
        out.append(code + b"".join(parts) + b"\r\n")

    def meta_ma(self, tokens: list[bytes], out: list[bytes]) -> None:
        flags = self._metaStart(tokens, out, b"CLIENT_ERROR options flags too long\r\n")
        if flags is None:
            return
        mode = flags.mode
        if mode in (0, 73, 43):  # I +
            incr = True
        elif mode in (68, 45):  # D -
            incr = False
        else:
            out.append(b"CLIENT_ERROR invalid mode for ma M token\r\n")
            return
        store = self.store
        key = flags.key
        result, it, value = store.delta(key, incr, flags.delta, flags.cas)
        created = False
        skip = False
        parts: list[bytes] = []
        if result == "OK":
            skip = flags.noreply
        elif result == "NON_NUMERIC":
            out.append(
                b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
            )
            return
        elif result == "EOM":
            out.append(b"SERVER_ERROR out of memory\r\n")
            return
        elif result == NOT_FOUND:
            if flags.vivify:
                value = flags.initial
                it = Item(key, b"%d\r\n" % value, 0, 0)
                it.binaryKey = flags.binary
                if store.store(it, ADD) == STORED:
                    created = True
                else:
                    it = None
                    parts.append(b"NS")
            else:
                store.stats["incr_misses" if incr else "decr_misses"] += 1
                parts.append(b"NF")
        else:
            parts.append(b"EX")
        if it is not None:
            digits = b"%d" % value
            parts.append(b"VA %d" % len(digits) if flags.value else b"HD")
            for token in flags.tokens:
                o = token[0]
                if o == 99:
                    parts.append(b" c%d" % it.cas)
                elif o == 116:
                    parts.append(
                        b" t-1"
                        if it.exptime == 0
                        else b" t%d" % (it.exptime - store.now)
                    )
                elif o == 84:
                    it.exptime = flags.exptime
                elif o == 78:
                    if created:
                        it.exptime = flags.vivifyExptime
                elif o == 79:
                    if len(token) > MAX_OPAQUE:
                        out.append(_OPAQUE_TOO_LONG)
                        return
                    parts.append(b" " + token)
                elif o == 107:
                    parts.append(_key(key, flags.binary))
            if flags.value:
                parts.append(b"\r\n" + digits)
        elif not _opaqueAndKey(flags, parts):
            out.append(_OPAQUE_TOO_LONG)
            return
        if not skip:
            parts.append(b"\r\n")
            out.append(b"".join(parts))
