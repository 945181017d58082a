# -*- test-case-name: tests.test_ratelimit -*-
"""
Rate limits for events and for the log lines about them.

A peer that can make a server log a line per connection or datagram can fill its
disk: refused connections, dropped datagrams and failed handshakes are logged at
most once per source per interval, and only so many lines per interval in all,
each line counting what it stands for.
"""

from __future__ import annotations

from collections import OrderedDict

#: Seconds between two log lines about one source.
REPORT_INTERVAL = 60.0

#: Log lines allowed per REPORT_INTERVAL in all (per gate), so a flood of
#: spoofed or distinct sources cannot flood the log either.
REPORTS_PER_INTERVAL = 20

#: Sources a gate remembers; the least recently seen is forgotten first.
REPORT_SOURCES = 4096


class TokenBucket:
    """
    Allows C{burst} events at once and C{rate} per second after that.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        """
        Spend one token if there is one.
        """
        # The reactor's clock is wall time and can step back; never refill
        # (or drain) on a negative interval.
        elapsed = max(0.0, now - self.stamp)
        self.stamp = now
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Seen:
    __slots__ = ("reported", "suppressed")

    def __init__(self) -> None:
        self.suppressed = 0
        self.reported: float | None = None


class ReportGate:
    """
    Decides which of many like events get a log line: one per source per
    C{interval}, and at most C{perInterval} lines per C{interval} in all.
    """

    def __init__(
        self,
        now: float,
        interval: float = REPORT_INTERVAL,
        perInterval: int = REPORTS_PER_INTERVAL,
        sources: int = REPORT_SOURCES,
        lines: TokenBucket | None = None,
    ):
        """
        @param now: the clock's time now.
        @param lines: the bucket of the global cap, to share one cap between
            gates; by default the gate has its own.
        """
        self.interval = interval
        self._sources = sources
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self.lines = lines or TokenBucket(perInterval / interval, perInterval, now)

    def report(self, source: str, now: float) -> int | None:
        """
        Account for one event from C{source}.

        @return: C{None} when it gets no log line; else how many earlier events
            from C{source} went unlogged since its last line.
        """
        seen = self._seen.get(source)
        if seen is None:
            seen = self._seen[source] = _Seen()
            if len(self._seen) > self._sources:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(source)
        due = seen.reported is None or now - seen.reported >= self.interval
        if due and self.lines.take(now):
            suppressed, seen.suppressed, seen.reported = seen.suppressed, 0, now
            return suppressed
        seen.suppressed += 1
        return None
