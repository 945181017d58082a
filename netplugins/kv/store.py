"""
Where C{np-kv} keeps its data: in memory, in SQLite, or in Redis.

Every store has the same Deferred-returning methods (L{KVStore}); none blocks
the reactor.  Values are anything XML-RPC or JSON-RPC carries (strings,
numbers, booleans, C{None}, bytes, dates, lists, dicts).  The durable stores
keep them pickled and read them back through L{netplugins.safepickle}, so a
value planted in a shared Redis by someone else cannot run code here.

  - L{MemoryStore}: a dict; gone when the process ends.
  - L{SQLiteStore}: one file, write-ahead log with C{synchronous=FULL}, so a
    C{set} is on disk when it is acknowledged; every call runs in a pool of
    one thread, which serialises them and keeps the reactor free.
  - L{RedisStore}: several C{np-kv} processes on several hosts share one
    Redis.  redis-py (the client Redis maintains itself) runs in a bounded
    thread pool; keys live under the C{np-kv:} prefix, so one Redis database
    can hold other data too.

A TTL (seconds) makes a key vanish once it has passed.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
from collections.abc import Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, fail, succeed

from netplugins.safepickle import DEFAULT_MAX_NESTING, safeLoads
from netplugins.threads import blockingPool, deferToPool

_T = TypeVar("_T")

#: Values are pickled in protocol 4: every supported Python reads it.
VALUE_PROTOCOL = 4
REDIS_PREFIX = "np-kv:"


class KeyMissingError(KeyError):
    """
    The key is not in the store (or its TTL has passed).
    """


class KVStore(Protocol):
    """
    What C{np-kv} needs of a store.
    """

    def get(self, key: str) -> Deferred[Any]:
        """
        The value; fails with L{KeyMissingError}.
        """

    def set(self, key: str, value: Any, ttl: float | None = None) -> Deferred[None]:
        """
        Store C{value}, for C{ttl} seconds if given.
        """

    def delete(self, key: str) -> Deferred[None]:
        """
        Remove C{key}; fails with L{KeyMissingError}.
        """

    def exists(self, key: str) -> Deferred[bool]:
        """
        Whether C{key} is present.
        """

    def keys(self) -> Deferred[list[str]]:
        """
        Every present key, sorted.
        """

    def close(self) -> Deferred[None]:
        """
        Release files and connections.
        """


def encodeValue(value: Any) -> bytes:
    """
    A value as the durable stores keep it.
    """
    return pickle.dumps(value, VALUE_PROTOCOL)


def decodeValue(data: bytes, maxNesting: int = DEFAULT_MAX_NESTING) -> Any:
    """
    A value the durable stores kept, read as plain data only, nested at most
    C{maxNesting} deep (the limit it was accepted under).
    """
    return safeLoads(data, maxNesting=maxNesting)


class MemoryStore:
    """
    A dict, with TTLs measured on C{reactor.seconds()}.
    """

    def __init__(self, reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._data: dict[str, tuple[Any, float | None]] = {}

    def _live(self, key: str) -> tuple[Any, float | None] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None:
            if entry[1] <= self._reactor.seconds():
                del self._data[key]
                return None
        return entry

    def get(self, key: str) -> Deferred[Any]:
        entry = self._live(key)
        if entry is None:
            return fail(KeyMissingError(key))
        return succeed(entry[0])

    def set(self, key: str, value: Any, ttl: float | None = None) -> Deferred[None]:
        expires = None if ttl is None else self._reactor.seconds() + ttl
        self._data[key] = (value, expires)
        return succeed(None)

    def delete(self, key: str) -> Deferred[None]:
        if self._live(key) is None:
            return fail(KeyMissingError(key))
        del self._data[key]
        return succeed(None)

    def exists(self, key: str) -> Deferred[bool]:
        return succeed(self._live(key) is not None)

    def keys(self) -> Deferred[list[str]]:
        return succeed(sorted(k for k in list(self._data) if self._live(k)))

    def close(self) -> Deferred[None]:
        return succeed(None)


class SQLiteStore:
    """
    One SQLite file, durable on acknowledgement, used from one thread.

    @ivar path: the database file.
    @ivar maxNesting: how deeply the values read back may nest.
    """

    def __init__(
        self,
        path: str,
        reactor: Any = None,
        now: Callable[[], float] | None = None,
        *,
        maxNesting: int = DEFAULT_MAX_NESTING,
    ):
        if reactor is None:
            from twisted.internet import reactor
        self.path = path
        self.maxNesting = maxNesting
        self._reactor = reactor
        self._now = now or reactor.seconds
        self._db: sqlite3.Connection | None = None

    def _run(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        pool = blockingPool(
            f"np-kv-sqlite:{self.path}", maxThreads=1, reactor=self._reactor
        )
        return deferToPool(self._reactor, pool, f, *args)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            # Used from the pool's one thread at a time, whichever thread it is.
            db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None
            )
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is synced on every commit, so an acknowledged set
            # survives a crash of the process or the machine.
            db.execute("PRAGMA synchronous=FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS kv"
                " (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL)"
            )
            self._db = db
        return self._db

    def _get(self, key: str, now: float) -> Any:
        row = (
            self._connection()
            .execute(
                "SELECT value FROM kv"
                " WHERE key = ? AND (expires IS NULL OR expires > ?)",
                (key, now),
            )
            .fetchone()
        )
        if row is None:
            raise KeyMissingError(key)
        return decodeValue(row[0], self.maxNesting)

    def _set(self, key: str, data: bytes, expires: float | None) -> None:
        self._connection().execute(
            "INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)",
            (key, data, expires),
        )

    def _delete(self, key: str, now: float) -> None:
        db = self._connection()
        cursor = db.execute(
            "DELETE FROM kv WHERE key = ? AND (expires IS NULL OR expires > ?)",
            (key, now),
        )
        db.execute("DELETE FROM kv WHERE expires <= ?", (now,))
        if cursor.rowcount == 0:
            raise KeyMissingError(key)

    def _exists(self, key: str, now: float) -> bool:
        row = (
            self._connection()
            .execute(
                "SELECT 1 FROM kv WHERE key = ? AND (expires IS NULL OR expires > ?)",
                (key, now),
            )
            .fetchone()
        )
        return row is not None

    def _keys(self, now: float) -> list[str]:
        rows = self._connection().execute(
            "SELECT key FROM kv WHERE expires IS NULL OR expires > ? ORDER BY key",
            (now,),
        )
        return [row[0] for row in rows]

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def get(self, key: str) -> Deferred[Any]:
        return self._run(self._get, key, self._now())

    def set(self, key: str, value: Any, ttl: float | None = None) -> Deferred[None]:
        expires = None if ttl is None else self._now() + ttl
        return self._run(self._set, key, encodeValue(value), expires)

    def delete(self, key: str) -> Deferred[None]:
        return self._run(self._delete, key, self._now())

    def exists(self, key: str) -> Deferred[bool]:
        return self._run(self._exists, key, self._now())

    def keys(self) -> Deferred[list[str]]:
        return self._run(self._keys, self._now())

    def close(self) -> Deferred[None]:
        return self._run(self._close)


class RedisStore:
    """
    A Redis database shared by any number of C{np-kv} processes.

    @ivar url: C{redis://HOST:PORT/DB}.
    @ivar maxNesting: how deeply the values read back may nest.
    """

    def __init__(
        self,
        url: str,
        reactor: Any = None,
        maxThreads: int = 8,
        *,
        maxNesting: int = DEFAULT_MAX_NESTING,
    ):
        import redis

        if reactor is None:
            from twisted.internet import reactor
        self.url = url
        self.maxNesting = maxNesting
        self._reactor = reactor
        self._maxThreads = maxThreads
        self._client = redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=10
        )

    def _run(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        pool = blockingPool(
            "np-kv-redis", maxThreads=self._maxThreads, reactor=self._reactor
        )
        return deferToPool(self._reactor, pool, f, *args)

    def _get(self, key: str) -> Any:
        data = self._client.get(REDIS_PREFIX + key)
        if data is None:
            raise KeyMissingError(key)
        return decodeValue(data, self.maxNesting)  # type: ignore[arg-type]

    def _set(self, key: str, data: bytes, ttl: float | None) -> None:
        px = None if ttl is None else max(1, round(ttl * 1000))
        self._client.set(REDIS_PREFIX + key, data, px=px)

    def _delete(self, key: str) -> None:
        if not self._client.delete(REDIS_PREFIX + key):
            raise KeyMissingError(key)

    def _exists(self, key: str) -> bool:
        return bool(self._client.exists(REDIS_PREFIX + key))

    def _keys(self) -> list[str]:
        # SCAN, not KEYS: KEYS blocks Redis for every other client meanwhile.
        found = self._client.scan_iter(match=REDIS_PREFIX + "*", count=1000)
        return sorted(k.decode("utf-8")[len(REDIS_PREFIX) :] for k in found)

    def get(self, key: str) -> Deferred[Any]:
        return self._run(self._get, key)

    def set(self, key: str, value: Any, ttl: float | None = None) -> Deferred[None]:
        return self._run(self._set, key, encodeValue(value), ttl)

    def delete(self, key: str) -> Deferred[None]:
        return self._run(self._delete, key)

    def exists(self, key: str) -> Deferred[bool]:
        return self._run(self._exists, key)

    def keys(self) -> Deferred[list[str]]:
        return self._run(self._keys)

    def close(self) -> Deferred[None]:
        return self._run(self._client.close)


def parseStore(description: str, stateDir: str) -> tuple[str, str]:
    """
    Check a C{--store} description without opening anything.

    @return: (kind, where): C{("memory", "")}, C{("sqlite", path)} or
        C{("redis", url)}; an empty description means SQLite in C{stateDir}.
    @raise ValueError: with a one-line message.
    """
    if not description:
        return "sqlite", os.path.join(stateDir, "np-kv.sqlite3")
    if description == "memory":
        return "memory", ""
    if description.startswith("sqlite:"):
        path = description[len("sqlite:") :]
        if not path:
            raise ValueError("--store sqlite: needs a path, as sqlite:PATH")
        return "sqlite", path
    if description.startswith("redis://"):
        parts = urlsplit(description)
        try:
            parts.port  # noqa: B018 -- raises for a bad port
        except ValueError:
            raise ValueError(f"bad port in --store {description!r}") from None
        database = parts.path.lstrip("/")
        if not parts.hostname or (database and not database.isdigit()):
            raise ValueError(f"--store wants redis://HOST:PORT/DB, not {description!r}")
        return "redis", description
    raise ValueError(
        f"--store must be memory, sqlite:PATH or redis://HOST:PORT/DB, "
        f"not {description!r}"
    )


def openStore(
    description: str,
    stateDir: str,
    reactor: Any = None,
    *,
    maxNesting: int = DEFAULT_MAX_NESTING,
) -> KVStore:
    """
    The store a C{--store} description names (see L{parseStore}), reading
    back values nested up to C{maxNesting} deep.
    """
    kind, where = parseStore(description, stateDir)
    if kind == "memory":
        return MemoryStore(reactor)
    if kind == "sqlite":
        return SQLiteStore(where, reactor, maxNesting=maxNesting)
    return RedisStore(where, reactor, maxNesting=maxNesting)
