"""
Tests for the DNS benchmark (bench/dns.py): dnsperf's output read into the
suite's figures, the zones and query files, NSD's configuration, short real
measurements of np-dns and NSD through the runner, and its targets.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench import dnszones, targets
from bench.clients import dnsperf
from bench.peers import nsd_server
from bench.run import BenchmarkResult, Sample, Settings, measure
from bench.suite import BENCHMARKS, Case
from tests.dnsfixtures import questions

DNS = next(b for b in BENCHMARKS if b.name == "dns")

# What dnsperf 2.10 -v prints, shortened.
OUTPUT = """\
DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -p 15353 -d q.txt -l 0.5 -v
[Status] Sending queries (to 127.0.0.1:15353)
> NOERROR example.org A 0.000300
> NXDOMAIN nope.example.org A 0.000100
> NOERROR www.example.org A 0.000200
> SERVFAIL x.example.org A 0.004000
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         1005
  Queries completed:    1000 (99.50%)
  Queries lost:         5 (0.50%)

  Response codes:       NOERROR 990 (99.00%), NXDOMAIN 7 (0.70%), SERVFAIL 3 (0.30%)
  Average packet size:  request 36, response 99
  Run time (s):         0.500313
  Queries per second:   1998.748784

  Average Latency (s):  0.000264 (min 0.000008, max 0.005044)
  Latency StdDev (s):   0.000243

"""


class DnsperfOutputTests(SynchronousTestCase):
    """
    dnsperf's report and per-query lines read into the result event.
    """

    def test_split(self) -> None:
        """Per-query lines give sorted latencies; the rest is the report."""
        report, latencies = dnsperf.split(OUTPUT.splitlines(keepends=True))
        self.assertEqual(latencies, [0.0001, 0.0002, 0.0003, 0.004])
        self.assertNotIn("> ", report)
        self.assertIn("Queries completed:    1000", report)

    def test_statistics(self) -> None:
        """Completed answers are requests; lost queries and SERVFAILs are errors."""
        self.assertEqual(
            dnsperf.statistics(OUTPUT),
            {"requests": 1000, "duration": 0.500313, "bytes": 99000, "errors": 8},
        )

    def test_noStatistics(self) -> None:
        """Output without dnsperf's statistics is an error, not zeros."""
        self.assertRaises(ValueError, dnsperf.statistics, "[Status] Sending\n")


class FilesTests(SynchronousTestCase):
    """
    The zones, query files and nsd.conf both servers are given.
    """

    def test_prepare(self) -> None:
        """The tests' zones and corpus, and 60,000 distinct questions."""
        directory = dnszones.prepare()
        corpus = [tuple(line.split()) for line in (directory / "plain.txt").open()]
        self.assertEqual(corpus, questions())
        self.assertEqual(
            (directory / "dnssec.txt").read_text(),
            (directory / "plain.txt").read_text(),
        )
        unique = (directory / "unique.txt").read_text().splitlines()
        self.assertEqual(len(unique), len(set(unique)))
        self.assertEqual(len(unique), 6 * dnszones.UNIQUE_NAMES)
        for path in dnszones.zoneFiles(directory).values():
            self.assertIn("SOA", path.read_text())

    def test_nsdConf(self) -> None:
        """NSD listens on the loopback port given, RRL off, serving every zone."""
        zones = Path(self.mktemp())
        zones.mkdir()
        conf = nsd_server.configure(5399, zones).read_text()
        self.assertIn("ip-address: 127.0.0.1@5399", conf)
        self.assertIn("rrl-ratelimit: 0", conf)
        self.assertIn("server-count: 1", conf)
        for origin, path in dnszones.zoneFiles(zones).items():
            self.assertIn(f'name: {origin}\n  zonefile: "{path.resolve()}"', conf)

    def test_contenders(self) -> None:
        """np-dns runs with RRL off on UDP and TCP; the workers get both CPUs."""
        command = DNS.contender("np-dns").command
        self.assertEqual(command[command.index("--rrl") + 1], "0")
        self.assertIn("udp:{port}:interface=127.0.0.1", command)
        self.assertIn("tcp:{port}:interface=127.0.0.1", command)
        workers = DNS.contender("np-dns-w2")
        self.assertEqual(workers.command[-2:], ("--workers", "2"))
        self.assertEqual(workers.serverCPUs, "0,1")


class MeasureTests(SynchronousTestCase):
    """
    np-dns and NSD under dnsperf through the runner, a fresh server each time.
    """

    def setUp(self) -> None:
        dnszones.prepare()
        self.settings = Settings(
            warmup=0,
            duration=0.5,
            serverCPU=None,
            loadgenCPU=None,
            out=Path(self.mktemp()),
        )

    def measured(self, contender: str, case: Case) -> Sample:
        """
        Measure C{contender} on C{case}: answers without errors, latency and
        server CPU read.
        """
        sample = measure(DNS, DNS.contender(contender), case, self.settings, 1)
        self.assertEqual(sample.errors, 0)
        self.assertGreater(sample.requests, 100)
        self.assertGreater(sample.bytes, sample.requests * 12)
        self.assertGreater(sample.p99, 0)
        self.assertGreaterEqual(sample.p99, sample.p50)
        self.assertGreater(sample.serverCPU, 0)
        return sample

    def test_npDNS(self) -> None:
        """np-dns answers every case's queries, plain, with DO and distinct."""
        sizes = {case.framing: self.measured("np-dns", case) for case in DNS.cases}
        # Answers with DO carry the signed zones' RRSIGs and NSEC(3) records.
        self.assertGreater(
            sizes["dnssec"].bytes / sizes["dnssec"].requests,
            1.5 * sizes["plain"].bytes / sizes["plain"].requests,
        )

    def test_nsd(self) -> None:
        """NSD, configured by bench/peers/nsd_server.py, answers the corpus."""
        self.measured("nsd", DNS.cases[0])


class TargetTests(SynchronousTestCase):
    """
    Issue 16's goal: np-dns ≥ 0.2x NSD in every case.
    """

    def test_targets(self) -> None:
        """One 0.2x target per case, one np-dns process against NSD."""
        mine = [t for t in targets.TARGETS if t.benchmark == "dns"]
        self.assertEqual([t.case for t in mine], [c.title for c in DNS.cases])
        for target in mine:
            self.assertEqual((target.goal, target.peer), (0.2, "nsd"))
            self.assertEqual(target.contenders, ("np-dns",))

    def test_ratio(self) -> None:
        """The target row shows np-dns's queries/s ÷ NSD's and the verdict."""
        case = DNS.cases[2]

        def sample(contender: str, requests: int) -> Sample:
            return Sample(
                contender, case, 1, requests, 0, 1.0, 10.0, 20.0, 0, 0.5, 0.5, 0, 0
            )

        result = BenchmarkResult(
            DNS,
            "np-dns",
            samples=[sample("np-dns", 25_000), sample("nsd", 100_000)],
        )
        [line] = [
            line
            for line in targets.targetRows([result])
            if "distinct names" in line and "0.25x" in line
        ]
        self.assertIn("**met**", line)
