"""
Tests for the FTP benchmarks (bench/ftp.py): one short real measurement of
each case's kind against C{twistd np-ftp} through the runner, in the clear
and over TLS, and the server memory reading the login case reports.
pyftpdlib runs from its own virtualenv and is exercised by C{make bench}.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench import machine, prepare
from bench.report import table
from bench.run import BenchmarkResult, Sample, Settings, measure
from bench.suite import BENCHMARKS, Benchmark, Case

# By name from the suite's table: bench.ftp is imported by bench.suite.
FTP, FTPS = (next(b for b in BENCHMARKS if b.name == n) for n in ("ftp", "ftps"))
SMALL = 256 * 1024


class FTPBenchmarkTests(SynchronousTestCase):
    """
    np-ftp under the FTP load client, a fresh server each time.
    """

    def setUp(self) -> None:
        prepare.ftp()
        self.settings = Settings(
            warmup=0,
            duration=0.5,
            serverCPU=None,
            loadgenCPU=None,
            out=Path(self.mktemp()),
        )

    def measured(self, benchmark: Benchmark, case: Case) -> Sample:
        """
        Measure C{benchmark}'s primary on C{case}: requests served without
        errors, CPU and memory read.
        """
        sample = measure(
            benchmark,
            benchmark.contender(benchmark.primary),
            case,
            self.settings,
            1,
        )
        self.assertEqual(sample.errors, 0)
        self.assertGreater(sample.requests, 0)
        self.assertGreater(sample.serverCPU, 0)
        self.assertGreater(sample.serverRSS, 10 * 2**20)
        return sample

    def test_plain(self) -> None:
        """Logins, RETR and STOR in the clear are counted, transfers byte by byte."""
        self.measured(FTP, Case(0, connections=4, framing="login", label="login"))
        for mode in ("retr", "stor"):
            sample = self.measured(FTP, Case(SMALL, connections=1, framing=mode))
            self.assertEqual(sample.bytes, sample.requests * SMALL)

    def test_tls(self) -> None:
        """AUTH TLS logins and PROT P transfers resuming the session are counted."""
        # np-ftp's contender keeps its default --tls-session-reuse required: the
        # client's data connections resume the control connection's session.
        self.assertNotIn("--tls-session-reuse", FTPS.contender(FTPS.primary).command)
        self.measured(FTPS, Case(0, connections=2, framing="login", label="login"))
        for mode in ("retr", "stor"):
            sample = self.measured(FTPS, Case(SMALL, connections=1, framing=mode))
            self.assertEqual(sample.bytes, sample.requests * SMALL)

    def test_cases(self) -> None:
        """Both benchmarks have issue 14's cases: 300 logins, RETR and STOR."""
        for benchmark in (FTP, FTPS):
            self.assertEqual(
                [(c.framing, c.connections) for c in benchmark.cases],
                [("login", 300), ("retr", 1), ("stor", 1)],
            )


class MemoryTests(SynchronousTestCase):
    """
    The server's peak RSS: read from /proc and shown in the report's table.
    """

    def test_parsePeakRss(self) -> None:
        """VmHWM is read in bytes; a status without it is 0."""
        text = (
            "Name:\ttwistd\nVmPeak:\t  90000 kB\nVmHWM:\t   58816 kB\nVmRSS:\t 1 kB\n"
        )
        self.assertEqual(machine.parsePeakRss(text), 58816 * 1024)
        self.assertEqual(machine.parsePeakRss("Name:\tkthreadd\n"), 0)

    def test_tableColumn(self) -> None:
        """The table has a peak RSS column in MiB once a sample carries one."""
        case = FTP.cases[0]

        def sample(contender: str, rss: int) -> Sample:
            return Sample(
                contender,
                case,
                1,
                100,
                0,
                1.0,
                10.0,
                20.0,
                0,
                0.5,
                0.5,
                0.0,
                0.0,
                serverRSS=rss,
            )

        lines = table(
            BenchmarkResult(
                FTP,
                "np-ftp",
                samples=[sample("np-ftp", 60 * 2**20), sample("pyftpdlib", 0)],
            )
        )
        self.assertIn("| server peak RSS MiB |", lines[0])
        self.assertIn("| 60.0 | 1.00x | 1.00x |", lines[2])
        self.assertEqual(lines[1].count("|"), lines[0].count("|"))
