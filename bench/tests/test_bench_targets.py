"""
Tests for the report's Targets section (bench/targets.py) and for rendering
a report again with a later run's benchmarks in place (bench/report.py).
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench import machine, report, targets
from bench.run import BenchmarkResult, Sample, Settings
from bench.services import KV, TLS_HANDSHAKES
from bench.suite import ECHO, Case


def sample(contender: str, case: Case, requests: int, cpu: float) -> Sample:
    """
    One clean one-second measurement of C{requests} using C{cpu} seconds.
    """
    return Sample(
        contender,
        case,
        1,
        requests,
        requests * 1024,
        1.0,
        10.0,
        20.0,
        0,
        cpu,
        0.5,
        0.0,
        0.0,
    )


ONE_KIB = Case(1024)


def echoResult(**rates: int) -> BenchmarkResult:
    """
    An echo result at 1 KiB with the given requests/s per contender.
    """
    return BenchmarkResult(
        ECHO,
        "np-echo",
        samples=[sample(name, ONE_KIB, rate, 0.9) for name, rate in rates.items()],
    )


def row(lines: list[str], title: str) -> str:
    """
    The table line starting with C{title}.
    """
    [line] = [line for line in lines if line.startswith(f"| {title}")]
    return line


def noted(target: targets.Target) -> str:
    """
    C{target}'s profile note as its table cell shows it.
    """
    assert target.note is not None
    return f"{target.note.text} *(measured {target.note.measured})*"


class TargetTests(SynchronousTestCase):
    """
    Each target judged from a run's medians.
    """

    def test_bestConfigurationMissed(self) -> None:
        """The best np configuration's ratio is shown; a miss says by how much."""
        result = echoResult(**{"np-echo": 600, "np-epoll": 800, "asyncio": 1000})
        target = targets.TARGETS[0]
        self.assertEqual(
            row(targets.targetRows([result]), target.title),
            f"| {target.title} | req/s ≥ 1.0x of asyncio | np-echo, np-epoll reactor "
            "| 0.80x | netplugins np-echo 0.60x; np-echo, np-epoll reactor 0.80x "
            f"| **missed**, 20% short | {noted(target)} |",
        )

    def test_met(self) -> None:
        """A ratio at the goal is met, and a met target shows no profile note."""
        result = echoResult(**{"np-echo": 1000, "asyncio": 1000})
        title = targets.TARGETS[0].title
        self.assertEqual(
            row(targets.targetRows([result]), title),
            f"| {title} | req/s ≥ 1.0x of asyncio | netplugins np-echo | 1.00x "
            "| netplugins np-echo 1.00x | **met** |  |",
        )

    def test_cpuTarget(self) -> None:
        """The handshake target compares CPU per request, within 5 %."""
        case = TLS_HANDSHAKES.cases[0]
        target = targets.TARGETS[5]
        title = target.title

        def verdict(mine: float) -> str:
            result = BenchmarkResult(
                TLS_HANDSHAKES,
                "np-echo-tls",
                samples=[
                    sample("np-echo-tls", case, 1000, mine),
                    sample("s_server", case, 1000, 1.0),
                ],
            )
            return row(targets.targetRows([result]), title)

        goal = "CPU/req ≤ 1.05x of openssl s_server | np-echo --listen-tls"
        self.assertEqual(
            (verdict(1.04), verdict(1.10)),
            (
                f"| {title} | {goal} | CPU/req 1.04x "
                "| np-echo --listen-tls CPU/req 1.04x | **met** |  |",
                f"| {title} | {goal} | CPU/req 1.10x "
                "| np-echo --listen-tls CPU/req 1.10x "
                "| **missed**, 5% more CPU per request than allowed "
                f"| {noted(target)} |",
            ),
        )

    def test_notMeasured(self) -> None:
        """A target whose benchmark is not in the run says so."""
        [target] = [t for t in targets.TARGETS if t.benchmark == "zen"]
        self.assertEqual(
            row(targets.targetRows([]), target.title),
            f"| {target.title} | req/s ≥ 1.0x | not measured in this run "
            f"| - | - | - | {noted(target)} |",
        )

    def test_others(self) -> None:
        """Benchmarks without a target get one line: np ÷ each peer."""
        case = KV.cases[0]
        result = BenchmarkResult(
            KV,
            "np-kv",
            samples=[
                sample("np-kv", case, 300, 0.9),
                sample("xmlrpc-kv", case, 200, 0.9),
            ],
        )
        note = targets.NOTES["kv"]
        self.assertEqual(
            row(targets.otherRows([result], []), "kv"),
            "| kv | np-kv --store memory 1.50x "
            "SimpleXMLRPCServer + ThreadingMixIn "
            f"| {note.text} *(measured {note.measured})* |",
        )

    def test_ldap(self) -> None:
        """The LDAP line is read from bench.ldap's table."""
        section = (
            "| contender | logins/s | vs ldapwhoami | p50 ms |\n"
            "|---|---:|---:|---:|\n"
            "| ldapwhoami loop (a process per login) | 242 | 1.00x | 16.69 |\n"
            "| ldap: direct bind (bind_dn_template) | 479 | 1.98x | 8.04 |\n"
        )
        self.assertEqual(
            targets.ldapLine(section),
            "| ldap | ldap: direct bind (bind_dn_template) 1.98x "
            "(÷ ldapwhoami loop, logins/s) | |",
        )


class ReplacedTests(SynchronousTestCase):
    """
    A report rendered from one run with a later run's benchmarks in place.
    """

    def test_replaced(self) -> None:
        """The later run's echo replaces the earlier's, noted under its title."""
        out = Path(self.mktemp())
        settings = Settings(repeat=1, out=out)
        check = machine.LoadCheck({"cpu0": 0.01}, 0.1, 2.0)
        first, later = out / "first.md", out / "later.md"
        report.write(
            [echoResult(**{"np-echo": 500, "asyncio": 1000})],
            settings,
            {"netplugins commit": "aaa"},
            check,
            first,
            generated="then",
        )
        report.write(
            [echoResult(**{"np-echo": 900, "asyncio": 1000})],
            settings,
            {"netplugins commit": "bbb"},
            check,
            later,
            generated="now",
        )
        saved = report.replaced(
            report.load(out / "first" / "results.json"),
            report.load(out / "later" / "results.json"),
        )
        again = out / "again.md"
        report.write(
            saved.results,
            saved.settings,
            saved.machine,
            saved.loadCheck,
            again,
            generated=saved.generated,
            reruns=saved.reruns,
        )
        lines = again.read_text().splitlines()
        self.assertIn(
            "| 1 KiB x 50 | **netplugins np-echo** | 900 | ±0.0 % | 0.9 | 0.01 "
            "| 0.02 | 1000.0 | 90% | 50% | 1.00x | 1.00x |",
            lines,
        )
        self.assertIn(
            "*These figures were measured in a later run of `python -m bench "
            "--only echo` at now (netplugins commit bbb) with the same settings; "
            "its load check before the run: quiet: cpu0 1% busy over 2 s "
            "(threshold 10%).*",
            lines,
        )
        # The note survives a further round trip through results.json.
        self.assertEqual(
            report.load(out / "again" / "results.json").reruns, saved.reruns
        )
