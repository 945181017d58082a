"""
Where a contender's server spends its time under its benchmark's load: the
server is started and loaded exactly as the suite does it (pinned, warmed
up), and C{py-spy} samples it over the measured window:

    .venv/bin/python -m bench.profile zen [--contender np-zen] [--top 5]

It prints the functions with the most own time (samples where the function
itself was running, not something it called), the way the notes of
L{bench.targets} were written.  py-spy is in the C{dev} extra; sampling
costs the server a little, so the load is not a measurement to quote.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bench import loadgen, processes
from bench.run import expand
from bench.suite import BENCHMARKS, Benchmark, Case

# py-spy's collapsed stacks end each frame with "(file:line)" unless asked
# for functions only; a sample line ends with its count.
SAMPLE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")


def ownTime(raw: str) -> tuple[collections.Counter[str], int]:
    """
    Own-time samples per function from py-spy's raw (collapsed) output, and
    the total number of samples.
    """
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        match = SAMPLE.match(line.strip())
        if match is None:
            continue
        count = int(match["count"])
        leaf = match["stack"].split(";")[-1]
        own[leaf] += count
        total += count
    return own, total


def loadArgv(
    benchmark: Benchmark, case: Case, port: int, seconds: float, port2: int = 0
) -> list[str]:
    """
    The load generator's argv for one case, as L{bench.run.measure} builds it.
    """
    program = loadgen.build(benchmark.loadgen) if benchmark.loadgen else ""
    if benchmark.load:
        return expand(
            benchmark.load,
            port,
            case.framing,
            program=program,
            port2=port2,
            connections=case.connections,
            size=case.size,
            warmup=1,
            duration=seconds,
        )
    return [
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
        "1",
        "--duration",
        str(seconds),
    ]


def profile(
    benchmark: Benchmark,
    contender: str,
    case: Case,
    seconds: float,
    out: Path,
    tool: str = "py-spy",
) -> Path:
    """
    Load C{contender} with C{case} and watch it with C{tool} (C{py-spy},
    C{perf} or C{strace}) for C{seconds}; return the file C{tool} wrote.
    """
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        raise SystemExit("py-spy is missing: pip install -e '.[dev]'")
    port, port2 = processes.freePorts(2)
    out.mkdir(parents=True, exist_ok=True)
    server = processes.start(
        processes.pinned(
            expand(
                benchmark.contender(contender).command,
                port,
                case.framing,
                port2=port2,
            ),
            0,
        ),
        out / f"{benchmark.name}-{contender}.server.log",
    )
    raw = out / f"{benchmark.name}-{contender}.raw"
    sampler: list[subprocess.Popen[bytes]] = []

    def onMeasuring() -> None:
        pid, duration = str(server.pid), str(int(seconds))
        argv = {
            # --subprocesses: --workers children and Dovecot-like trees too.
            "py-spy": [
                spy,
                "record",
                "--pid",
                pid,
                "--format",
                "raw",
                "--function",
                "--subprocesses",
                "--rate",
                "250",
                "--duration",
                duration,
                "--output",
                str(raw),
            ],
            # Which binary the CPU time is in: the kernel, libpython, libssl.
            "perf": [
                "perf",
                "record",
                "-o",
                str(raw.with_suffix(".perf")),
                "--pid",
                pid,
                "--",
                "sleep",
                duration,
            ],
            # System calls by count: what one request costs the kernel.
            "strace": [
                "timeout",
                "-s",
                "INT",
                duration,
                "strace",
                "-c",
                "-f",
                "-o",
                str(raw.with_suffix(".strace")),
                "-p",
                pid,
            ],
        }[tool]
        sampler.append(processes.start(argv, out / f"{tool}.log"))

    try:
        processes.waitForPort(server, port)
        loadgen.run(
            processes.pinned(loadArgv(benchmark, case, port, seconds + 1, port2), 1),
            out / f"{benchmark.name}-{contender}.loadgen.log",
            timeout=seconds + 40,
            onMeasuring=onMeasuring,
        )
        for process in sampler:
            process.wait(30)
    finally:
        processes.stopAll()
    return raw if tool == "py-spy" else raw.with_suffix("." + tool)


def main(argv: list[str] | None = None) -> int:
    """
    Profile one contender of one benchmark; print its top functions.
    """
    benchmarks = {b.name: b for b in BENCHMARKS}
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("benchmark", choices=sorted(benchmarks))
    parser.add_argument("--contender", help="default: the benchmark's primary")
    parser.add_argument(
        "--case",
        type=int,
        default=0,
        help="which of the benchmark's cases (index, default 0)",
    )
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument(
        "--tool", choices=("py-spy", "perf", "strace"), default="py-spy"
    )
    parser.add_argument("--output", type=Path, default=loadgen.OUT / "profiles")
    args = parser.parse_args(argv)
    benchmark = benchmarks[args.benchmark]
    contender = args.contender or benchmark.primary
    case = benchmark.cases[args.case]
    path = profile(benchmark, contender, case, args.duration, args.output, args.tool)
    if args.tool == "strace":
        print(path.read_text())
        return 0
    if args.tool == "perf":
        report = ["perf", "report", "-i", str(path), "--stdio", "--sort", "dso"]
        print(subprocess.run(report, capture_output=True, text=True).stdout)
        return 0
    own, total = ownTime(path.read_text())
    print(f"{benchmark.name} {case.title} {contender}: {total} samples")
    for function, count in own.most_common(args.top):
        print(f"{count / total:6.1%}  {function}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
