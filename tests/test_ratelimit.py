"""
Tests for L{netplugins.ratelimit}: the token bucket and the gate that decides
which events get a log line.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from netplugins.ratelimit import (
    REPORT_INTERVAL,
    REPORT_SOURCES,
    REPORTS_PER_INTERVAL,
    ReportGate,
    TokenBucket,
)


class TokenBucketTests(SynchronousTestCase):
    """
    L{TokenBucket} allows a burst, then a steady rate.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.bucket = TokenBucket(rate=2.0, burst=3, now=self.clock.seconds())

    def takes(self, count: int) -> list[bool]:
        """
        Try to take C{count} tokens now.
        """
        return [self.bucket.take(self.clock.seconds()) for _ in range(count)]

    def test_burst(self) -> None:
        """A full bucket allows C{burst} events at once and refuses the next."""
        self.assertEqual(self.takes(4), [True, True, True, False])

    def test_refill(self) -> None:
        """Tokens come back at C{rate} per second, a whole one at a time."""
        self.takes(3)
        self.clock.advance(0.25)
        self.assertEqual(self.takes(1), [False])
        self.clock.advance(0.25)
        self.assertEqual(self.takes(2), [True, False])
        self.clock.advance(1)
        self.assertEqual(self.takes(3), [True, True, False])

    def test_cappedAtBurst(self) -> None:
        """A long quiet spell refills the bucket to C{burst}, no further."""
        self.takes(3)
        self.clock.advance(3600)
        self.assertEqual(self.takes(4), [True, True, True, False])

    def test_clockStepsBack(self) -> None:
        """A clock that steps back neither refills nor drains the bucket."""
        self.takes(2)
        self.assertEqual(self.bucket.take(self.clock.seconds() - 500), True)
        self.assertEqual(self.bucket.take(self.clock.seconds() - 500), False)
        # Time counts again from the stepped-back reading.
        self.assertEqual(self.bucket.take(self.clock.seconds() - 499.5), True)
        self.assertEqual(self.bucket.tokens, 0.0)


class ReportGateTests(SynchronousTestCase):
    """
    L{ReportGate}: one line per source per interval, a cap on lines in all,
    and a count of what each line stands for.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def gate(self, **kwargs: Any) -> ReportGate:
        """
        A gate on L{clock}, 60 s interval, with C{kwargs} overriding.
        """
        return ReportGate(self.clock.seconds(), interval=60.0, **kwargs)

    def report(self, gate: ReportGate, *sources: str) -> list[int | None]:
        """
        One event from each of C{sources} now.
        """
        return [gate.report(source, self.clock.seconds()) for source in sources]

    def test_defaults(self) -> None:
        """By default a gate reports once a minute per source, 20 lines a minute."""
        gate = ReportGate(self.clock.seconds())
        self.assertEqual(
            (REPORT_INTERVAL, REPORTS_PER_INTERVAL, REPORT_SOURCES), (60.0, 20, 4096)
        )
        self.assertEqual(
            (gate.interval, gate.lines.burst, gate.lines.rate), (60.0, 20, 20 / 60.0)
        )

    def test_oncePerInterval(self) -> None:
        """A source's first event gets a line; its next ones wait an interval."""
        gate = self.gate()
        self.assertEqual(self.report(gate, "a", "a", "a"), [0, None, None])
        self.clock.advance(59)
        self.assertEqual(self.report(gate, "a"), [None])
        self.clock.advance(1)
        self.assertEqual(self.report(gate, "a", "a"), [3, None])

    def test_sourcesApart(self) -> None:
        """Each source has its own interval and its own count."""
        gate = self.gate()
        self.assertEqual(
            self.report(gate, "a", "b", "a", "b", "b"), [0, 0, None, None, None]
        )
        self.clock.advance(60)
        self.assertEqual(self.report(gate, "b", "a"), [2, 1])

    def test_globalCap(self) -> None:
        """Distinct sources get at most C{perInterval} lines, refilled over time."""
        gate = self.gate(perInterval=2)
        self.assertEqual(self.report(gate, "a", "b", "c"), [0, 0, None])
        # 2 lines per 60 s: one more line after 30 s.
        self.clock.advance(30)
        self.assertEqual(self.report(gate, "d", "c"), [0, None])
        self.clock.advance(30)
        # c was due but capped twice: its line counts both events.
        self.assertEqual(self.report(gate, "c"), [2])

    def test_forgetsLeastRecent(self) -> None:
        """Past C{sources} sources, the least recently seen is forgotten."""
        gate = self.gate(sources=2)
        self.assertEqual(self.report(gate, "a", "b", "a", "c"), [0, 0, None, 0])
        # a was seen after b, so b went: a still waits, b is new again.
        self.assertEqual(self.report(gate, "a", "b"), [None, 0])

    def test_sharedCap(self) -> None:
        """Gates given one bucket share one cap on lines."""
        lines = TokenBucket(1 / 60.0, 2, self.clock.seconds())
        first, second = self.gate(lines=lines), self.gate(lines=lines)
        self.assertIs(first.lines, lines)
        self.assertEqual(
            self.report(first, "a") + self.report(second, "a", "b"), [0, 0, None]
        )
