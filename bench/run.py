"""
Running the suite: fresh server per measurement, pinned processes, interleaved
repetitions, readings over the load generator's measured window, and medians.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
from attrs import define, field, frozen

from bench import loadgen, machine, processes
from bench.suite import Benchmark, Case, Contender

# Above this much of one CPU used by anything but the server and the load
# generator during a measured window, the measurement is flagged and redone.
FOREIGN_LIMIT = 0.10


@frozen
class Settings:
    """
    How to run: durations, repetitions and where each side is pinned.

    @ivar serverCPU: the CPU the server runs on (C{None}: unpinned).
    @ivar loadgenCPU: the CPU the load generator runs on; the same as
        C{serverCPU} for same-core runs.
    @ivar retries: how many times a flagged measurement is redone.
    """

    warmup: float = 1.0
    duration: float = 5.0
    repeat: int = 3
    serverCPU: int | None = 0
    loadgenCPU: int | None = 1
    retries: int = 2
    out: Path = loadgen.OUT

    @property
    def sameCore(self) -> bool:
        """
        Whether server and load generator share one CPU.
        """
        return self.serverCPU is not None and self.serverCPU == self.loadgenCPU


@frozen
class Sample:
    """
    One measurement of one contender on one case.

    @ivar serverCPU: seconds of CPU the server used in the measured window.
    @ivar loadgenCPU: the same for the load generator.
    @ivar foreign: CPUs' worth of other load seen in the window (0.1 = a
        tenth of one CPU).
    @ivar steal: the fraction of CPU time the hypervisor took in the window.
    @ivar attempt: how many tries this measurement took (the kept one is the
        last unless every try was flagged).
    @ivar serverRSS: the server's peak resident set in bytes when the
        window closed (its process tree's, startup included; 0: not read).
    """

    contender: str
    case: Case
    repetition: int
    requests: int
    bytes: int
    duration: float
    p50: float
    p99: float
    errors: int
    serverCPU: float
    loadgenCPU: float
    foreign: float
    steal: float
    attempt: int = 1
    serverRSS: int = 0

    @property
    def flagged(self) -> bool:
        """
        Whether other load or errors make this measurement suspect.
        """
        return self.foreign > FOREIGN_LIMIT or self.errors > 0

    @property
    def requestsPerSecond(self) -> float:
        return self.requests / self.duration if self.duration else 0.0


@frozen
class Summary:
    """
    The medians of one contender's samples on one case.
    """

    contender: str
    case: Case
    requestsPerSecond: float
    mibPerSecond: float
    p50: float
    p99: float
    cpuPerRequest: float
    serverLoad: float
    loadgenLoad: float
    lowest: float
    highest: float
    samples: int
    flagged: int
    retried: int
    serverRSS: float = 0.0


def summarise(samples: Sequence[Sample]) -> Summary:
    """
    Median figures over the samples of one contender and case.
    """
    median = statistics.median
    rates = [s.requestsPerSecond for s in samples]
    return Summary(
        contender=samples[0].contender,
        case=samples[0].case,
        requestsPerSecond=median(rates),
        mibPerSecond=median(s.bytes / s.duration / 2**20 for s in samples),
        p50=median(s.p50 for s in samples),
        p99=median(s.p99 for s in samples),
        cpuPerRequest=median(
            s.serverCPU / s.requests * 1e6 if s.requests else float("inf")
            for s in samples
        ),
        serverLoad=median(s.serverCPU / s.duration for s in samples),
        loadgenLoad=median(s.loadgenCPU / s.duration for s in samples),
        lowest=min(rates),
        highest=max(rates),
        samples=len(samples),
        flagged=sum(s.flagged for s in samples),
        retried=sum(s.attempt - 1 for s in samples),
        serverRSS=median(s.serverRSS for s in samples),
    )


@define
class BenchmarkResult:
    """
    Everything one benchmark measured.

    @ivar primary: the contender standing for netplugins (the stand-in while
        the real one is missing).
    @ivar missing: contenders that could not run, with why.
    """

    benchmark: Benchmark
    primary: str
    samples: list[Sample] = field(factory=list)
    missing: dict[str, str] = field(factory=dict)

    def cases(self) -> list[Case]:
        """
        The cases measured, in the order they were.
        """
        return list(dict.fromkeys(s.case for s in self.samples))

    def summaries(self) -> list[Summary]:
        """
        One summary per case and contender, contenders in the benchmark's
        order.
        """
        rows = []
        for case in self.cases():
            for contender in self.benchmark.contenders:
                mine = [
                    s
                    for s in self.samples
                    if s.case == case and s.contender == contender.name
                ]
                if mine:
                    rows.append(summarise(mine))
        return rows


def expand(
    template: Sequence[str], port: int, framing: str, **extra: object
) -> list[str]:
    """
    Fill a contender's argv template: C{{python}}, C{{twistd}}, C{{port}},
    C{{framing}}, C{{out}} (C{bench/out}, where prepared files and peer
    virtualenvs live), C{{venvs}} (C{bench/out/venvs}), and C{extra}
    (L{measure} gives C{{port2}}, a second free port, for servers that
    listen on two).
    """
    bin = Path(sys.executable).parent
    out = loadgen.OUT.resolve()
    values = {
        "python": sys.executable,
        "twistd": str(bin / "twistd"),
        "port": str(port),
        "framing": framing,
        "out": str(out),
        "venvs": str(out / "venvs"),
        **{key: str(value) for key, value in extra.items()},
    }
    return [part.format(**values) for part in template]


def unavailable(contender: Contender) -> str | None:
    """
    Why C{contender} cannot run here, or C{None} if it can.
    """
    if not contender.probe:
        return None
    try:
        probe = subprocess.run(
            expand(contender.probe, 0, "raw"),
            capture_output=True,
            # A probe may prepare what its contender needs (a virtualenv of
            # a peer, a certificate, a mailbox), once per machine.
            timeout=900,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if probe.returncode != 0:
        lines = (probe.stderr or probe.stdout).decode(errors="replace").splitlines()
        return lines[-1].strip() if lines else f"exit status {probe.returncode}"
    return None


def measure(
    benchmark: Benchmark,
    contender: Contender,
    case: Case,
    settings: Settings,
    repetition: int,
    attempt: int = 1,
) -> Sample:
    """
    Start a fresh server, load it, and stop it.
    """
    program = (
        loadgen.build(benchmark.loadgen, settings.out) if benchmark.loadgen else ""
    )
    logs = settings.out / "logs"
    port, port2 = processes.freePorts(2)
    # By the case's title, not its size: cases of one size (DNS's, FTP's)
    # would write over each other's logs.
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", case.title).strip("-")
    tag = f"{benchmark.name}-{contender.name}-{slug}-{repetition}-{attempt}"
    server = processes.start(
        processes.pinned(
            expand(contender.command, port, case.framing, port2=port2),
            settings.serverCPU
            if contender.serverCPUs is None
            else contender.serverCPUs,
        ),
        logs / f"{tag}.server.log",
    )
    try:
        processes.waitForPort(server, port)
        start: dict[str, object] = {}

        def onMeasuring() -> None:
            start["server"] = machine.treeCpuSeconds(server.pid)
            start["cpus"] = machine.readCpuTimes()

        argv = [
            str(program),
            "--port",
            str(port),
            "--connections",
            str(case.connections),
            "--size",
            str(case.size),
            "--framing",
            case.framing,
            "--warmup",
            str(settings.warmup),
            "--duration",
            str(settings.duration),
        ]
        if benchmark.load:
            argv = expand(
                benchmark.load,
                port,
                case.framing,
                program=program,
                port2=port2,
                connections=case.connections,
                size=case.size,
                warmup=settings.warmup,
                duration=settings.duration,
            )
        result = loadgen.run(
            processes.pinned(argv, settings.loadgenCPU),
            logs / f"{tag}.loadgen.log",
            timeout=settings.warmup + settings.duration + 30,
            onMeasuring=onMeasuring,
        )
        serverCPU = machine.treeCpuSeconds(server.pid) - float(start["server"])  # type: ignore[arg-type]
        serverRSS = machine.treePeakRss(server.pid)
        after = machine.readCpuTimes()
    finally:
        processes.stop(server)
    before: dict[str, machine.CpuTimes] = start["cpus"]  # type: ignore[assignment]
    window = (after["cpu"].total - before["cpu"].total) or 1
    # Steal and softirq time belong to no process: the first is the
    # hypervisor's, the second mostly the kernel carrying this run's packets.
    busy = (
        (after["cpu"].busy - before["cpu"].busy)
        - (after["cpu"].steal - before["cpu"].steal)
        - (after["cpu"].softirq - before["cpu"].softirq)
    ) / machine.CLOCK_TICKS
    ours = serverCPU + float(result["cpu_seconds"])
    duration = float(result["duration"])
    return Sample(
        contender=contender.name,
        case=case,
        repetition=repetition,
        requests=int(result["requests"]),
        bytes=int(result["bytes"]),
        duration=duration,
        p50=float(result["p50_us"]),
        p99=float(result["p99_us"]),
        errors=int(result["errors"]),
        serverCPU=serverCPU,
        loadgenCPU=float(result["cpu_seconds"]),
        foreign=max(0.0, busy - ours) / duration if duration else 0.0,
        steal=(after["cpu"].steal - before["cpu"].steal) / window,
        attempt=attempt,
        serverRSS=serverRSS,
    )


def runBenchmark(
    benchmark: Benchmark,
    settings: Settings,
    report: Callable[[str], None] = print,
) -> BenchmarkResult:
    """
    Every case of C{benchmark}, every available contender, C{settings.repeat}
    interleaved repetitions (A B C, A B C, ...), flagged samples redone.
    """
    missing = {}
    contenders = []
    for contender in benchmark.contenders:
        why = unavailable(contender)
        if why is None:
            contenders.append(contender)
        else:
            missing[contender.name] = why
            report(f"{benchmark.name}: {contender.name} missing: {why}")
    primary = benchmark.primary
    if primary in missing and benchmark.standIn is not None:
        primary = benchmark.standIn
    result = BenchmarkResult(benchmark, primary, missing=missing)
    for case in benchmark.cases:
        for repetition in range(1, settings.repeat + 1):
            for contender in contenders:
                attempts = []
                for attempt in range(1, settings.retries + 2):
                    began = time.monotonic()
                    sample = measure(
                        benchmark, contender, case, settings, repetition, attempt
                    )
                    report(describe(benchmark, sample, time.monotonic() - began))
                    attempts.append(sample)
                    if not sample.flagged:
                        break
                # Every try disturbed: keep the least disturbed, still flagged.
                best = min(attempts, key=lambda s: (s.errors, s.foreign))
                result.samples.append(attrs.evolve(best, attempt=len(attempts)))
    return result


def describe(benchmark: Benchmark, sample: Sample, seconds: float) -> str:
    """
    One progress line for a sample.
    """
    flag = f"  other load {sample.foreign:.0%}"
    if sample.flagged:
        flag += f"  FLAGGED ({sample.errors} errors)"
    return (
        f"{benchmark.name} {sample.case.title} #{sample.repetition} "
        f"{sample.contender:>8}: {sample.requestsPerSecond:9.0f} req/s  "
        f"p50 {sample.p50 / 1000:6.2f} ms  p99 {sample.p99 / 1000:6.2f} ms  "
        f"server CPU {sample.serverCPU / sample.duration:4.0%}  "
        f"loadgen CPU {sample.loadgenCPU / sample.duration:4.0%}  "
        f"({seconds:.1f} s){flag}"
    )
