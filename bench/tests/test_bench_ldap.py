"""
The LDAP login benchmark (C{bench/ldap.py}), run for a fraction of a second so
it cannot rot between benchmark runs.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bench import ldap as benchldap


class LDAPBenchTests(TestCase):
    """
    One short run of every contender against a private slapd.
    """

    def test_measureAll(self) -> Deferred[Any]:
        """Every contender logs users in without errors; the report has each row."""
        args = benchldap.parseArguments(
            ["--duration", "0.3", "--warmup", "0.1", "--concurrency", "2"]
        )

        def check(results: list[benchldap.Result]) -> None:
            self.assertEqual(
                [(r.name, r.errors, r.logins > 0) for r in results],
                [(name, 0, True) for name in benchldap.LABELS],
            )
            text = benchldap.markdown(results, args)
            for label in benchldap.LABELS.values():
                self.assertIn(f"| {label} |", text)

        return ensureDeferred(benchldap.measureAll(reactor, args)).addCallback(check)


class SummariseTests(SynchronousTestCase):
    """
    L{benchldap.summarise} turns latencies into the report's figures.
    """

    def test_percentiles(self) -> None:
        """
        Logins per second, median and 99th percentile in milliseconds.
        """
        latencies = [0.001] * 98 + [0.010, 0.100]
        result = benchldap.summarise("x", "X", latencies, 1, 2.0)
        self.assertEqual(
            (
                result.logins,
                result.errors,
                result.perSecond,
                result.p50_ms,
                result.p99_ms,
            ),
            (100, 1, 50.0, 1.0, 100.0),
        )
