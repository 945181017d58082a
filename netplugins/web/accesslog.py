"""
A cheap access log in the combined log format.

twisted.web's own access log formats and writes a line for every request as
it finishes, through a line-buffered file or the legacy log system; that costs
a busy server about 40% of its requests per second (issue 7).  Here finishing
a request only appends a tuple of the fields the line needs to a list; the
lines are formatted and written in one batch per second (or every
C{maxPending} requests), so the formatting runs once per batch's worth of
timestamps and the write is one system call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

_MONTHS = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)

#: (time, host, user, method, uri, protocol, code, length, referrer, agent)
Record = tuple[float, str, str, bytes, bytes, bytes, int, int, bytes, bytes]


def _quoted(value: bytes) -> str:
    """
    A request value for inside the log's double quotes: non-printable bytes,
    backslash and the quote escaped so a client cannot forge log lines.
    """
    text = value.decode("latin-1")
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


def _timestamp(seconds: float) -> str:
    t = time.gmtime(seconds)
    return (
        f"[{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year:04d}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000]"
    )


def formatRecords(records: list[Record]) -> str:
    """
    The combined-log-format lines for C{records}, each ending in a newline.
    """
    lines = []
    lastSecond = -1
    stamp = ""
    for when, host, user, method, uri, proto, code, length, referrer, agent in records:
        second = int(when)
        if second != lastSecond:
            lastSecond, stamp = second, _timestamp(second)
        lines.append(
            f'{host} - {user} {stamp} "{_quoted(method)} {_quoted(uri)} '
            f'{_quoted(proto)}" {code} {length or "-"} "{_quoted(referrer)}" '
            f'"{_quoted(agent)}"\n'
        )
    return "".join(lines)


class AccessLog:
    """
    Collects finished requests and writes their combined-log-format lines in
    batches.

    @ivar write: called with a batch of lines (one C{str}).
    """

    log = Logger()

    def __init__(
        self,
        write: Callable[[str], object],
        *,
        flushInterval: float = 1.0,
        maxPending: int = 1000,
        reactor: Any = None,
        close: Callable[[], object] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.write = write
        self._close = close
        self._reactor = reactor
        self._pending: list[Record] = []
        self._flushInterval = flushInterval
        self._maxPending = maxPending
        self._loop: LoopingCall | None = None
        self._users = 0

    @classmethod
    def toPath(cls, path: str, **kwargs: Any) -> AccessLog:
        """
        An access log appending to the file at C{path} (opened when the first
        site using it starts).
        """
        holder: list[IO[str]] = []

        def write(lines: str) -> None:
            if not holder:
                holder.append(open(path, "a", encoding="utf-8", newline="\n"))
            holder[0].write(lines)
            holder[0].flush()

        def close() -> None:
            if holder:
                holder.pop().close()

        return cls(write, close=close, **kwargs)

    @classmethod
    def toLogger(cls, logger: Logger | None = None, **kwargs: Any) -> AccessLog:
        """
        An access log emitting one twisted.logger event per request, at flush
        time, with the line in the C{line} field.
        """
        target = logger if logger is not None else Logger(namespace="netplugins.access")

        def write(lines: str) -> None:
            for line in lines.splitlines():
                target.info("{line}", line=line)

        return cls(write, **kwargs)

    def record(self, request: Any) -> None:
        """
        Remember a finished request for the next batch.
        """
        address = request.getClientAddress()
        host = getattr(address, "host", None) or "-"
        headers = request.requestHeaders
        referrer = headers.getRawHeaders(b"referer")
        agent = headers.getRawHeaders(b"user-agent")
        user = getattr(request, "remoteUser", None) or "-"
        self._pending.append(
            (
                self._reactor.seconds(),
                host,
                _quoted(user.encode("utf-8")) if user != "-" else "-",
                request.method,
                request.uri,
                request.clientproto,
                request.code,
                request.sentLength,
                referrer[0] if referrer else b"-",
                agent[0] if agent else b"-",
            )
        )
        if len(self._pending) >= self._maxPending:
            self.flush()

    def flush(self) -> None:
        """
        Format and write everything pending.
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            self.write(formatRecords(pending))
        except Exception:
            self.log.failure(
                "could not write {count} access log lines", count=len(pending)
            )

    def start(self) -> None:
        """
        Start flushing periodically; each site using this log calls it once.
        """
        self._users += 1
        if self._loop is None:
            self._loop = LoopingCall(self.flush)
            self._loop.clock = self._reactor
            self._loop.start(self._flushInterval, now=False)

    def stop(self) -> None:
        """
        Undo one L{start}: the last one flushes and closes.
        """
        self._users = max(0, self._users - 1)
        if self._users:
            return
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self.flush()
        if self._close is not None:
            self._close()
