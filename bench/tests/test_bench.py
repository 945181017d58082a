"""
Tests for the benchmark suite (bench/): the C load generator against real
echo servers on 127.0.0.1, one whole measurement with its report, and the
/proc parsing the CPU figures rest on.  They keep the suite from rotting
unnoticed between benchmark runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bench import loadgen, machine, report
from bench.peers.twisted_echo import echoFactory
from bench.run import BenchmarkResult, Sample, Settings, measure, summarise
from bench.suite import ECHO, Case


class Corrupting(Protocol):
    """
    Echoes every byte but the first of each chunk, which it changes.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"!" + data[1:])  # type: ignore[union-attr]


class LoadgenTests(TestCase):
    """
    The C load generator against Twisted echo servers on 127.0.0.1.
    """

    def setUp(self) -> None:
        self.program = loadgen.build("echo", Path(self.mktemp()))

    @defer.inlineCallbacks
    def runAgainst(
        self, factory: ServerFactory, *options: str
    ) -> defer.Generator[Any, Any, tuple[list[dict[str, Any]], int]]:
        from twisted.internet import reactor

        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0, factory, interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        out, _err, code = yield getProcessOutputAndValue(
            str(self.program),
            [
                "--port",
                str(address.port),
                "--connections",
                "4",
                "--warmup",
                "0.2",
                "--duration",
                "1",
                *options,
            ],
            env=dict(os.environ),
        )
        return [json.loads(line) for line in out.splitlines()], code

    def assertSane(self, result: dict[str, Any], size: int, framing: str) -> None:
        self.assertEqual(
            (
                result["event"],
                result["size"],
                result["framing"],
                result["connections"],
                result["errors"],
                result["mismatches"],
            ),
            ("result", size, framing, 4, 0, 0),
        )
        self.assertGreater(result["requests"], 0)
        self.assertEqual(result["bytes"], result["requests"] * size)
        self.assertAlmostEqual(result["duration"], 1.0, delta=0.05)
        self.assertTrue(
            0
            < result["p50_us"]
            <= result["p90_us"]
            <= result["p99_us"]
            <= result["max_us"]
        )
        self.assertGreater(result["cpu_seconds"], 0)

    @defer.inlineCallbacks
    def test_raw(self) -> defer.Generator[Any, Any, None]:
        """Against a raw echo it counts only the measured window, then prints JSON."""
        # Against a raw echo it counts requests for the measured window only and prints
        # the measuring marker, then sane JSON.
        events, code = yield self.runAgainst(echoFactory("raw"), "--size", "1024")
        self.assertEqual((code, len(events), events[0]), (0, 2, {"event": "measuring"}))
        self.assertSane(events[1], 1024, "raw")

    @defer.inlineCallbacks
    def test_blocks(self) -> defer.Generator[Any, Any, None]:
        """With --framing blocks it speaks 4-byte length-prefixed messages."""
        # With C{--framing blocks} it speaks 4-byte length-prefixed messages that a
        # framing-aware echo (Twisted's Int32StringReceiver) understands.
        events, code = yield self.runAgainst(
            echoFactory("blocks"), "--size", "70000", "--framing", "blocks"
        )
        self.assertEqual(code, 0)
        self.assertSane(events[-1], 70000, "blocks")

    @defer.inlineCallbacks
    def test_corruptEcho(self) -> defer.Generator[Any, Any, None]:
        """An echo that changes the data is caught: counted, and the exit says so."""
        # An echo that changes the data is caught: mismatches and errors are counted, no
        # request is, and the exit status says so.
        factory = ServerFactory()
        factory.protocol = Corrupting
        events, code = yield self.runAgainst(factory, "--size", "100")
        result = events[-1]
        self.assertEqual(
            (code, result["requests"], result["mismatches"], result["errors"]),
            (3, 0, 4, 4),
        )


class MeasureTests(SynchronousTestCase):
    """
    One real measurement through the runner, and the report made from it.
    """

    def test_measureAndReport(self) -> None:
        """The runner measures the bare Twisted peer's CPU, reports it with a plot."""
        # The runner starts the bare Twisted peer as a process, reads its CPU time over
        # the window, stops it, and the report shows the figures in a table beside a PNG
        # plot.
        out = Path(self.mktemp())
        settings = Settings(
            warmup=0.2, duration=0.5, serverCPU=None, loadgenCPU=None, out=out
        )
        sample = measure(
            ECHO, ECHO.contender("twisted"), Case(1024, connections=4), settings, 1
        )
        self.assertEqual((sample.contender, sample.errors), ("twisted", 0))
        self.assertGreater(sample.requests, 0)
        self.assertGreater(sample.serverCPU, 0)
        result = BenchmarkResult(ECHO, "twisted", samples=[sample])
        path = out / "benchmarks.md"
        check = machine.LoadCheck({"cpu0": 0.01}, 0.1, 1.0)
        report.write([result], settings, {"CPU": "test"}, check, path)
        text = path.read_text()
        self.assertIn("| 1 KiB x 4 | **bare Twisted**", text)
        self.assertIn(f"![{ECHO.title}](benchmarks/echo.png)", text.splitlines())
        self.assertEqual((out / "benchmarks" / "echo.png").read_bytes()[:4], b"\x89PNG")


class ReportTests(SynchronousTestCase):
    """
    The report's saved results.
    """

    def test_roundTrip(self) -> None:
        """results.json reads back as the same samples, settings and load check."""
        # What a report saves in results.json reads back as the same samples, settings
        # and load check, so a report can be rendered again unmeasured.
        out = Path(self.mktemp())
        sample = Sample(
            "asyncio",
            Case(65536),
            2,
            10,
            655360,
            1.0,
            5.0,
            9.0,
            0,
            0.1,
            0.2,
            0.01,
            0.0,
            attempt=2,
        )
        settings = Settings(repeat=1, out=out)
        check = machine.LoadCheck({"cpu0": 0.5}, 0.1, 2.0)
        result = BenchmarkResult(
            ECHO, "twisted", samples=[sample], missing={"np-echo": "not yet"}
        )
        path = out / "benchmarks.md"
        report.write([result], settings, {"CPU": "x"}, check, path, generated="then")
        saved = report.load(out / "benchmarks" / "results.json")
        self.assertEqual(
            (
                saved.results[0].samples,
                saved.results[0].missing,
                saved.results[0].primary,
                saved.settings,
                saved.loadCheck,
                saved.generated,
            ),
            ([sample], {"np-echo": "not yet"}, "twisted", settings, check, "then"),
        )


class ParsingTests(SynchronousTestCase):
    """
    The /proc parsing and the medians the figures rest on.
    """

    def test_procStat(self) -> None:
        """Busy time is everything but idle and iowait; steal and softirq kept apart."""
        text = "cpu  10 1 5 100 4 2 3 7 0 0\ncpu0 4 0 2 50 2 1 1 3 0 0\nintr 12345\n"
        self.assertEqual(
            machine.parseProcStat(text),
            {
                "cpu": machine.CpuTimes(busy=28, softirq=3, steal=7, total=132),
                "cpu0": machine.CpuTimes(busy=11, softirq=1, steal=3, total=63),
            },
        )

    def test_processTicks(self) -> None:
        """utime + stime are read past the last parenthesis, whatever the command."""
        fields = ["S"] + ["0"] * 10 + ["120", "30"] + ["0"] * 30
        text = "42 (odd) (name) " + " ".join(fields)
        self.assertEqual(machine.parseProcessTicks(text), 150)

    def test_summarise(self) -> None:
        """
        Summaries are medians over repetitions, with the extremes kept.
        """
        case = Case(1024)

        def sample(requests: int, cpu: float) -> Sample:
            return Sample(
                "np-echo",
                case,
                1,
                requests,
                requests * 1024,
                2.0,
                100.0,
                200.0,
                0,
                cpu,
                0.5,
                0.0,
                0.0,
            )

        summary = summarise([sample(100, 1.0), sample(300, 1.0), sample(200, 0.2)])
        self.assertEqual(
            (
                summary.requestsPerSecond,
                summary.lowest,
                summary.highest,
                summary.cpuPerRequest,
                summary.samples,
                summary.flagged,
            ),
            (100.0, 50.0, 150.0, 1e6 / 300, 3, 0),
        )
