"""
Run the benchmark suite and write its report:

    .venv/bin/python -m bench [--only echo] [--quick] [--same-core] ...

Run it from the repository root with the development virtualenv (C{make bench}).
Exit status: 0 done, 1 a benchmark failed, 3 refused because the machine was
busy (C{--allow-load} runs anyway and says so in the report).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from bench import loadgen, machine, processes, report
from bench.run import BenchmarkResult, Settings, runBenchmark
from bench.suite import BENCHMARKS

# bench.ldap measures in process with a runner of its own; the suite runs it
# as a program and appends the section it writes.
LDAP = "ldap"


def runLDAP(args: argparse.Namespace) -> str | None:
    """
    Run C{python -m bench.ldap} with this run's durations; return its
    Markdown section, or C{None} if it failed.
    """
    out = loadgen.OUT / "ldap"
    argv = [
        sys.executable,
        "-m",
        "bench.ldap",
        "--output",
        str(out),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
    ]
    print(f"{LDAP}: {' '.join(argv[1:])}", flush=True)
    done = subprocess.run(
        argv, cwd=processes.ROOT, check=False, timeout=600, stdout=subprocess.DEVNULL
    )
    if done.returncode != 0:
        print(f"{LDAP} failed: exit status {done.returncode}", flush=True)
        return None
    return (out / "ldap.md").read_text()


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """
    The command line, with C{--quick} defaults filled in.
    """
    names = [b.name for b in BENCHMARKS] + [LDAP]
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run the netplugins benchmarks."
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=names,
        help="run only this benchmark (repeatable)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run: 1 repetition of 1 s, report "
        "under bench/out/ unless --output is given",
    )
    parser.add_argument("--repeat", type=int, help="repetitions (default 3)")
    parser.add_argument(
        "--duration", type=float, help="measured seconds per run (default 5)"
    )
    parser.add_argument(
        "--warmup", type=float, help="warm-up seconds per run (default 1)"
    )
    parser.add_argument(
        "--same-core",
        action="store_true",
        help="pin server and load generator to the same CPU",
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--loadgen-cpu", type=int, default=1)
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="redo a measurement disturbed by other load up to "
        "this many times (default 2)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        help="seconds to wait for other load to stop before "
        "refusing to run (default 120; 0 with --quick)",
    )
    parser.add_argument(
        "--allow-load",
        action="store_true",
        help="run even if the machine is busy, flagging it",
    )
    parser.add_argument(
        "--output", type=Path, help="the report (default docs/benchmarks.md)"
    )
    parser.add_argument(
        "--from-results",
        type=Path,
        metavar="JSON",
        help="measure nothing: render the report again from a "
        "results.json an earlier run saved",
    )
    parser.add_argument(
        "--replace",
        type=Path,
        action="append",
        default=[],
        metavar="JSON",
        help="with --from-results: the benchmarks of this "
        "later run's results.json replace the earlier run's, "
        "each noted as measured later (repeatable)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, short in [
        ("repeat", 3, 1),
        ("duration", 5.0, 1.0),
        ("warmup", 1.0, 0.5),
        ("wait_quiet", 120.0, 0.0),
    ]:
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    if args.output is None:
        args.output = (
            loadgen.OUT / "quick" / "benchmarks.md"
            if quick
            else Path("docs/benchmarks.md")
        )
    if quick:
        args.allow_load = True
    if args.repeat < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--repeat must be ≥ 1, --duration > 0 and --warmup ≥ 0")
    return args


def settingsFrom(args: argparse.Namespace) -> Settings:
    """
    Run settings from the command line; same-core when asked or when the
    machine has a single CPU.
    """
    serverCPU, loadgenCPU = args.server_cpu, args.loadgen_cpu
    if args.same_core or (os.cpu_count() or 1) < 2:
        loadgenCPU = serverCPU
    return Settings(
        warmup=args.warmup,
        duration=args.duration,
        repeat=args.repeat,
        serverCPU=serverCPU,
        loadgenCPU=loadgenCPU,
        retries=args.retries,
    )


def waitForQuiet(seconds: float) -> machine.LoadCheck:
    """
    Check the machine's load until it is quiet or C{seconds} have passed.
    """
    deadline = time.monotonic() + seconds
    while True:
        check = machine.checkLoad()
        print(f"load check: {check.describe()}", flush=True)
        if check.quiet or time.monotonic() >= deadline:
            return check


def _interrupted(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so the finally below stops every server.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """
    Run the suite; return the exit status.
    """
    args = parseArguments(sys.argv[1:] if argv is None else argv)
    if args.from_results is not None:
        saved = report.load(args.from_results)
        for later in args.replace:
            saved = report.replaced(saved, report.load(later))
        report.write(
            saved.results,
            saved.settings,
            saved.machine,
            saved.loadCheck,
            args.output,
            quick=args.quick,
            generated=saved.generated,
            extra=saved.extra,
            reruns=saved.reruns,
        )
        print(f"wrote {args.output}", flush=True)
        return 0
    settings = settingsFrom(args)
    signal.signal(signal.SIGTERM, _interrupted)
    check = waitForQuiet(args.wait_quiet)
    if not check.quiet:
        if not args.allow_load:
            print(
                "refusing to run: other load on the machine would skew the "
                "figures (--allow-load runs anyway and flags it)",
                flush=True,
            )
            return 3
        print("WARNING: running on a loaded machine; the report says so", flush=True)
    info = machine.machineInfo()
    results: list[BenchmarkResult] = []
    extra: list[str] = []
    status = 0
    try:
        for benchmark in BENCHMARKS:
            if args.only and benchmark.name not in args.only:
                continue
            if benchmark.loadgen:
                loadgen.build(benchmark.loadgen, settings.out)
            try:
                results.append(
                    runBenchmark(
                        benchmark, settings, lambda line: print(line, flush=True)
                    )
                )
            except processes.ProcessError as e:
                print(f"{benchmark.name} failed: {e}", flush=True)
                status = 1
        if not args.only or LDAP in args.only:
            section = runLDAP(args)
            if section is None:
                status = 1
            else:
                extra.append(section)
    finally:
        processes.stopAll()
    if results or extra:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        report.write(
            results, settings, info, check, args.output, quick=args.quick, extra=extra
        )
        print(f"wrote {args.output}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
