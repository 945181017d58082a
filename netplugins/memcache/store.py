"""
The cache behind np-memcache: items in least-recently-used order, accounted
in bytes against a memory limit, with memcached 1.6's rules for expiry times,
CAS values, flushes and arithmetic.

Times are whole seconds of the Unix clock, as memcached's are: the protocol
calls L{Store.tick} once per batch of commands, and every operation in the
batch sees that second.
"""

from __future__ import annotations

from collections import OrderedDict

#: Expiry times up to this many seconds are relative; larger ones are Unix
#: times (memcached's C{REALTIME_MAXDELTA}, 30 days).
RELATIVE_MAX = 60 * 60 * 24 * 30

#: An expiry time already past: what negative TTLs and Unix times before the
#: server started become.
EXPIRED = 1

#: The longest key, in bytes.
KEY_MAX_LENGTH = 250

#: The default largest item, in bytes (memcached's C{-I} default, 1 MiB),
#: counted as memcached counts it (L{itemTotal}).
DEFAULT_MAX_ITEM_SIZE = 1024 * 1024

#: The default memory limit, in bytes (memcached's C{-m 64}).
DEFAULT_MEMORY_LIMIT = 64 * 1024 * 1024

#: Bytes an item costs this process beyond its key (counted twice: it is in
#: the cached reply header too) and its value: the item object, the bytes
#: objects' headers and the LRU table's entry (measured with tracemalloc on
#: CPython 3.11).
ITEM_OVERHEAD = 380

#: memcached's item header with its CAS value (48 + 8 bytes on 64-bit
#: platforms): part of the size L{itemTotal} compares to the item limit.
_MEMCACHED_HEADER = 56

#: The largest unsigned 64-bit value: incr wraps past it.
_U64 = (1 << 64) - 1

STORED = "STORED"
EXISTS = "EXISTS"
NOT_FOUND = "NOT_FOUND"
NOT_STORED = "NOT_STORED"

#: Store modes: the storage commands.
SET = "set"
ADD = "add"
REPLACE = "replace"
APPEND = "append"
PREPEND = "prepend"
CAS = "cas"


def itemTotal(keyLength: int, flags: int, dataLength: int) -> int:
    """
    The size memcached gives an item (header, key, flags, value and its
    CRLF), which the item size limit bounds; C{dataLength} counts the CRLF.
    """
    return _MEMCACHED_HEADER + keyLength + 1 + (4 if flags else 0) + dataLength


class Item:
    """
    One cached value.

    @ivar data: the value followed by CRLF, as it goes on the wire.
    @ivar exptime: the Unix time it expires (0: never).
    @ivar time: when it was last stored or fetched.
    @ivar header: C{VALUE <key> <flags> <bytes>}, made on the first get.
    @ivar size: what it is charged against the memory limit.
    """

    __slots__ = (
        "binaryKey",
        "cas",
        "data",
        "exptime",
        "fetched",
        "flags",
        "header",
        "key",
        "size",
        "stale",
        "time",
        "tokenSent",
    )

    def __init__(self, key: bytes, data: bytes, flags: int, exptime: int) -> None:
        self.key = key
        self.data = data
        self.flags = flags
        self.exptime = exptime
        self.cas = 0
        self.time = 0
        self.fetched = False
        self.stale = False
        self.tokenSent = False
        self.binaryKey = False
        self.header: bytes | None = None
        self.size = 2 * len(key) + len(data) + ITEM_OVERHEAD

    def valueHeader(self) -> bytes:
        """
        C{VALUE <key> <flags> <bytes>}: the start of its get reply.
        """
        header = self.header
        if header is None:
            header = self.header = b"VALUE %s %d %d" % (
                self.key,
                self.flags,
                len(self.data) - 2,
            )
        return header


class Store:
    """
    Items by key, least recently used first, bounded by C{memoryLimit} bytes.

    The counters are memcached's C{stats} of the same names.

    @ivar now: the current second, set by L{tick}.
    @ivar started: when the store was made (memcached's C{process_started}).
    """

    def __init__(
        self,
        memoryLimit: int = DEFAULT_MEMORY_LIMIT,
        maxItemSize: int = DEFAULT_MAX_ITEM_SIZE,
        now: int = 0,
    ) -> None:
        self.items: OrderedDict[bytes, Item] = OrderedDict()
        self.memoryLimit = memoryLimit
        self.maxItemSize = maxItemSize
        self.now = now
        # memcached starts its clock an update interval and two seconds back.
        self.started = now - 62
        self.used = 0
        self._cas = 0
        self._flushAt = 0
        #: Items stored at or before this second are flushed.
        self.oldestLive = -1
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)

    # Time

    def tick(self, now: int) -> None:
        """
        Set the current second; a delayed flush that has come due starts
        now.
        """
        self.now = now
        if self._flushAt and self._flushAt <= now:
            self.oldestLive, self._flushAt = self._flushAt, 0
            for key in [
                k for k, it in self.items.items() if it.time <= self.oldestLive
            ]:
                self.unlink(key)

    def absolute(self, exptime: int) -> int:
        """
        The Unix time an expiry time given by a client means: 0 for never,
        seconds from now up to 30 days, a Unix time beyond; negative or
        before the server started: already expired.
        """
        if exptime == 0:
            return 0
        if exptime < 0:
            return EXPIRED
        if exptime > RELATIVE_MAX:
            return exptime if exptime > self.started else EXPIRED
        return self.now + exptime

    def nextCas(self) -> int:
        """
        A new CAS value.
        """
        self._cas += 1
        return self._cas

    # Finding

    def peek(self, key: bytes) -> Item | None:
        """
        The live item under C{key}, dropping it if expired; the LRU order is
        left alone.
        """
        it = self.items.get(key)
        if it is None:
            return None
        if it.exptime and it.exptime <= self.now:
            self.unlink(key)
            if not it.fetched:
                self.stats["expired_unfetched"] += 1
            return None
        if it.time <= self.oldestLive:
            self.unlink(key)
            return None
        return it

    def fetch(self, key: bytes) -> Item | None:
        """
        The live item under C{key}, made the most recently used.
        """
        it = self.items.get(key)
        if it is None:
            return None
        if it.exptime and it.exptime <= self.now:
            self.unlink(key)
            self.stats["get_expired"] += 1
            if not it.fetched:
                self.stats["expired_unfetched"] += 1
            return None
        if it.time <= self.oldestLive:
            self.unlink(key)
            self.stats["get_flushed"] += 1
            return None
        self.items.move_to_end(key)
        return it

    def bump(self, it: Item) -> None:
        """
        Mark C{it} fetched and most recently used.
        """
        it.fetched = True
        # memcached moves an item's access time only once a minute.
        if it.time < self.now - 60:
            it.time = self.now
        self.items.move_to_end(it.key)

    # Changing

    def tooLarge(self, keyLength: int, flags: int, dataLength: int) -> bool:
        """
        Whether an item of this shape is over the item size limit.
        """
        return itemTotal(keyLength, flags, dataLength) > self.maxItemSize

    def link(self, it: Item) -> bool:
        """
        Put C{it} in, replacing its key's item, with a new CAS value,
        evicting least recently used items while over the memory limit.

        @return: C{False} if C{it} alone is over the limit (nothing stored).
        """
        old = self.items.pop(it.key, None)
        if old is not None:
            self.used -= old.size
        if it.size > self.memoryLimit:
            return False
        limit = self.memoryLimit - it.size
        if self.used > limit:
            self._evict(limit)
        it.cas = self.nextCas()
        it.time = self.now
        self.items[it.key] = it
        self.used += it.size
        self.stats["total_items"] += 1
        return True

    def _evict(self, limit: int) -> None:
        items, stats, now = self.items, self.stats, self.now
        while self.used > limit and items:
            _, it = items.popitem(last=False)
            self.used -= it.size
            if it.exptime and it.exptime <= now:
                stats["reclaimed"] += 1
            else:
                stats["evictions"] += 1
                if not it.fetched:
                    stats["evicted_unfetched"] += 1

    def unlink(self, key: bytes) -> None:
        """
        Remove C{key}'s item, if any.
        """
        it = self.items.pop(key, None)
        if it is not None:
            self.used -= it.size

    def store(self, it: Item, mode: str, setStale: bool = False) -> str:
        """
        Store C{it} as storage command C{mode} would (C{it.cas} holds the
        CAS value the client gave, 0 for none), as memcached's
        C{do_store_item} does.

        @return: L{STORED}, L{EXISTS}, L{NOT_FOUND} or L{NOT_STORED}.
        """
        if mode == SET:
            return STORED if self.link(it) else NOT_STORED
        old = self.peek(it.key)
        given = it.cas
        if old is None:
            if mode == ADD:
                return STORED if self.link(it) else NOT_STORED
            if mode == CAS:
                self.stats["cas_misses"] += 1
                return NOT_FOUND
            return NOT_STORED
        if mode == REPLACE:
            return STORED if self.link(it) else NOT_STORED
        if mode == ADD:
            self.items.move_to_end(old.key)
            return NOT_STORED
        if mode == CAS:
            if given == old.cas:
                self.stats["cas_hits"] += 1
            elif setStale and given < old.cas:
                # An invalidating set of an older value: kept, marked stale.
                it.exptime = old.exptime
                it.stale = True
                it.tokenSent = old.tokenSent
                self.stats["cas_hits"] += 1
            else:
                self.stats["cas_badval"] += 1
                return EXISTS
            return STORED if self.link(it) else NOT_STORED
        # append, prepend
        if given and given != old.cas:
            return EXISTS
        if mode == APPEND:
            data = old.data[:-2] + it.data
        else:
            data = it.data[:-2] + old.data
        if self.tooLarge(len(old.key), old.flags, len(data)):
            return NOT_STORED
        new = Item(old.key, data, old.flags, old.exptime)
        new.binaryKey = old.binaryKey
        return STORED if self.link(new) else NOT_STORED

    def delta(
        self, key: bytes, incr: bool, amount: int, cas: int = 0
    ) -> tuple[str, Item | None, int]:
        """
        Add C{amount} to (or subtract it from) the decimal number C{key}
        holds: incr wraps at 2**64, decr stops at 0.  A shorter result is
        padded with spaces to the old length, as memcached rewrites in place.

        @return: (C{"OK"}, the item, the new value), or (C{"NON_NUMERIC"},
            C{NOT_FOUND} or C{EXISTS} for a CAS mismatch, None, 0).
        """
        it = self.peek(key)
        if it is None:
            return NOT_FOUND, None, 0
        data = it.data
        if len(data) <= 2:
            return "NON_NUMERIC", None, 0
        if cas and it.cas != cas:
            return EXISTS, None, 0
        value = strtoull(data[:-2])
        if value is None:
            return "NON_NUMERIC", None, 0
        if incr:
            value = (value + amount) & _U64
            self.stats["incr_hits"] += 1
        else:
            value = value - amount if amount <= value else 0
            self.stats["decr_hits"] += 1
        digits = b"%d" % value
        if len(digits) + 2 <= len(data):
            it.data = digits.ljust(len(data) - 2) + b"\r\n"
            it.header = None
            it.cas = self.nextCas()
            self.items.move_to_end(key)
            return "OK", it, value
        new = Item(key, digits + b"\r\n", it.flags, it.exptime)
        new.binaryKey = it.binaryKey
        if not self.link(new):
            return "EOM", None, 0
        return "OK", new, value

    def flush(self, delay: int) -> None:
        """
        Invalidate every item now, or with a C{delay} every item not stored
        again after the second before C{delay} seconds from now, as
        memcached's C{flush_all} does.
        """
        if delay > 0:
            self._flushAt = self.absolute(delay) - 1
            self.tick(self.now)
            return
        self._flushAt = 0
        self.oldestLive = self.now - 1
        self.nextCas()
        self.items.clear()
        self.used = 0


#: The counters a L{Store} keeps, in memcached's C{stats} order.
STAT_NAMES = (
    "cmd_get",
    "cmd_set",
    "cmd_flush",
    "cmd_touch",
    "cmd_meta",
    "get_hits",
    "get_misses",
    "get_expired",
    "get_flushed",
    "delete_misses",
    "delete_hits",
    "incr_misses",
    "incr_hits",
    "decr_misses",
    "decr_hits",
    "cas_misses",
    "cas_hits",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "store_too_large",
    "store_no_memory",
    "auth_cmds",
    "auth_errors",
    "total_items",
    "expired_unfetched",
    "evicted_unfetched",
    "evictions",
    "reclaimed",
)


# Numbers as memcached reads them (its safe_strto* on a 64-bit platform):
# leading whitespace, a sign, digits, then the end or whitespace.

_SPACE = b" \t\n\v\f\r"


def _cNumber(token: bytes) -> tuple[bool, int] | None:
    rest = token.lstrip(_SPACE)
    negative = False
    if rest[:1] in (b"+", b"-"):
        negative = rest[:1] == b"-"
        rest = rest[1:]
    end = 0
    while end < len(rest) and 48 <= rest[end] <= 57:
        end += 1
    if end == 0 or (end < len(rest) and rest[end] not in _SPACE):
        return None
    return negative, int(rest[:end])


def strtoull(token: bytes) -> int | None:
    """
    An unsigned 64-bit number, or C{None} if memcached would refuse it.
    """
    if token.isdigit():
        value = int(token)
        return value if value <= _U64 else None
    parsed = _cNumber(token)
    if parsed is None:
        return None
    negative, value = parsed
    if value > _U64:
        return None
    if negative:
        value = (-value) & _U64
        # memcached refuses a '-' only when the result looks negative.
        if value >= 1 << 63:
            return None
    return value


def strtoul32(token: bytes) -> int | None:
    """
    An unsigned number kept to 32 bits (memcached's flags), or C{None}.
    """
    value = strtoull(token)
    return None if value is None else value & 0xFFFFFFFF


def strtol32(token: bytes) -> int | None:
    """
    A signed number truncated to 32 bits as memcached's C{safe_strtol} does
    on a 64-bit platform, or C{None}.
    """
    if token.isdigit():
        value = int(token)
        if value >= 1 << 63:
            return None
    else:
        parsed = _cNumber(token)
        if parsed is None:
            return None
        negative, value = parsed
        if negative:
            value = -value
        if not -(1 << 63) <= value < 1 << 63:
            return None
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value
