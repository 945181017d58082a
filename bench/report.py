"""
The report: C{docs/benchmarks.md} with a table and a plot per benchmark, the
machine, the method and the load check, plus the raw samples as JSON.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import attrs
from attrs import frozen

from bench import targets
from bench.machine import LoadCheck
from bench.run import FOREIGN_LIMIT, BenchmarkResult, Sample, Settings
from bench.suite import BENCHMARKS, Case

# A load generator this busy may be holding the server back: its rows get a ‡.
LOADGEN_BUSY = 0.9


def _ms(microseconds: float) -> str:
    # 0: the load generator measures no latency (smtp-source).
    return f"{microseconds / 1000:.2f}" if microseconds else "-"


def _ratio(mine: float, theirs: float) -> str:
    # No request in a window makes CPU per request infinite: no ratio then.
    if not theirs or not math.isfinite(mine / theirs):
        return "-"
    return f"{mine / theirs:.2f}x"


def table(result: BenchmarkResult) -> list[str]:
    """
    The Markdown table of one benchmark's medians, with each row's ratio to
    the primary contender.
    """
    labels = {c.name: c.label for c in result.benchmark.contenders}
    summaries = result.summaries()
    primary = {s.case: s for s in summaries if s.contender == result.primary}
    # Runs saved before the server's memory was read have no RSS column.
    rss = any(s.serverRSS for s in summaries)
    lines = [
        "| case | server | req/s | spread | MiB/s | p50 ms | p99 ms "
        "| server CPU µs/req | server CPU | loadgen CPU "
        + ("| server peak RSS MiB " if rss else "")
        + f"| {result.primary} req/s ÷ this | {result.primary} CPU/req ÷ this |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (2 + rss),
    ]
    for s in summaries:
        mine = primary.get(s.case)
        rate = _ratio(mine.requestsPerSecond, s.requestsPerSecond) if mine else "-"
        rps = s.requestsPerSecond
        spread = (s.highest - s.lowest) / rps * 100 if rps else 0.0
        name = labels[s.contender]
        if s.contender == result.primary:
            name = f"**{name}**"
        flags = f" ⚠{s.flagged}" if s.flagged else ""
        if s.loadgenLoad >= LOADGEN_BUSY:
            flags += " ‡"
        lines.append(
            f"| {s.case.title} | {name}{flags} | {s.requestsPerSecond:,.0f} "
            f"| ±{spread / 2:.1f} % | {s.mibPerSecond:,.1f} | {_ms(s.p50)} "
            f"| {_ms(s.p99)} | {s.cpuPerRequest:.1f} | {s.serverLoad:.0%} "
            f"| {s.loadgenLoad:.0%} "
            + (f"| {s.serverRSS / 2**20:,.1f} " if rss else "")
            + f"| {rate} "
            f"| {_ratio(mine.cpuPerRequest, s.cpuPerRequest) if mine else '-'} |"
        )
    return lines


def plot(result: BenchmarkResult, path: Path) -> None:
    """
    A PNG of one benchmark: requests/s (with the spread over repetitions) and
    server CPU per request, one panel per case.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = result.cases()
    names = [
        c.name for c in result.benchmark.contenders if c.name not in result.missing
    ]
    labels = {c.name: c.label for c in result.benchmark.contenders}
    byKey = {(s.case, s.contender): s for s in result.summaries()}
    figure, axes = plt.subplots(
        3, len(cases), figsize=(4.5 * len(cases), 10), squeeze=False
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for column, case in enumerate(cases):
        rows = [byKey[(case, n)] for n in names if (case, n) in byKey]
        xs = range(len(rows))
        tick = [labels[r.contender] for r in rows]
        rates = axes[0][column]
        rates.bar(
            xs,
            [r.requestsPerSecond for r in rows],
            yerr=[
                [r.requestsPerSecond - r.lowest for r in rows],
                [r.highest - r.requestsPerSecond for r in rows],
            ],
            capsize=4,
            color=colours[: len(rows)],
        )
        rates.set_title(f"{case.title}: requests/s (median, min-max)")
        cpu = axes[1][column]
        cpu.bar(xs, [r.cpuPerRequest for r in rows], color=colours[: len(rows)])
        cpu.set_title(f"{case.title}: server CPU µs per request")
        latency = axes[2][column]
        width = 0.4
        latency.bar(
            [x - width / 2 for x in xs],
            [r.p50 / 1000 for r in rows],
            width,
            label="p50",
            color=colours[: len(rows)],
        )
        latency.bar(
            [x + width / 2 for x in xs],
            [r.p99 / 1000 for r in rows],
            width,
            label="p99",
            color=colours[: len(rows)],
            alpha=0.45,
        )
        latency.set_title(f"{case.title}: latency ms (p50 solid, p99 pale)")
        for axis in (rates, cpu, latency):
            axis.set_xticks(list(xs), tick, rotation=15)
            axis.grid(axis="y", alpha=0.3)
    figure.suptitle(result.benchmark.title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def method(settings: Settings, quick: bool) -> list[str]:
    """
    How the figures were taken, for the report.
    """
    if settings.sameCore:
        pinning = (
            f"server and load generator both pinned to CPU {settings.serverCPU} "
            "with `taskset` (`--same-core`): they take turns on one core, so "
            "requests/s includes the load generator's share"
        )
    elif settings.serverCPU is None:
        pinning = "nothing pinned"
    else:
        pinning = (
            f"server pinned to CPU {settings.serverCPU} and load generator to "
            f"CPU {settings.loadgenCPU} with `taskset`: each has a core of its "
            "own, so the server's core is the bottleneck being measured and the "
            "load generator's cost does not come out of it"
        )
    return [
        "- Every figure comes from this one run: the contenders are measured "
        "side by side on the same machine, interleaved (A B C D, A B C D, ...) "
        "so slow drifts in the machine hit each of them alike.",
        f"- {settings.repeat} repetition(s) per contender and case; each starts "
        f"a fresh server process, warms up for {settings.warmup:g} s, then "
        f"measures for {settings.duration:g} s. Tables show the median over "
        "repetitions; *spread* is half the min-max range of requests/s.",
        f"- Pinning: {pinning}.",
        "- Load: `bench/loadgen/echo.c`, compiled at run time with the machine's "
        "C compiler; one epoll loop over all connections (`TCP_NODELAY`), each "
        "sending a message and waiting for its complete echo before the next "
        "(ping-pong). Latency is per message, first byte sent to last byte "
        "received, from a log-linear histogram (under 1.6 % bucket error). "
        "MiB/s counts echoed payload, one direction.",
        "- The other benchmarks say in their own section what loads them: "
        "`wrk`, `smtp-source`, the same C program in its request mode, or "
        "Python clients (bench/clients/), one process per connection, pinned "
        "like the load generator; their CPU is counted the same way.",
        "- Server CPU: utime + stime from `/proc/PID/stat` over the measured "
        "window, divided by the requests in it. *server CPU* is the share of "
        "one core it used: near 100 % means the server is the bottleneck. "
        "*loadgen CPU* is the same for the load generator (from its own "
        "`getrusage`): well under 100 % means it was not the bottleneck; "
        f"rows where it reached {LOADGEN_BUSY:.0%} are marked ‡. For large "
        "messages the load generator does the same kernel copying as the "
        "server, so against the fastest servers it nears a full core itself.",
        "- Other load: before the run every CPU must be under "
        f"{FOREIGN_LIMIT:.0%} busy (from `/proc/stat`); during each measured "
        "window, CPU time used by anything but the server and the load "
        "generator (steal and softirq aside) is computed from `/proc/stat`, and "
        f"a window with more than {FOREIGN_LIMIT:.0%} of a CPU of it, or with "
        f"connection errors, is flagged ⚠ and redone up to {settings.retries} "
        "times; a flag left in the table means every try was disturbed.",
        "- Of the figures, server CPU µs per request suffers least from a busy "
        "machine (a server that waits for its core uses no CPU meanwhile); "
        "requests/s and latency suffer most.",
        "- All traffic on 127.0.0.1; every process is killed at the end.",
    ] + (
        ["- **Quick run** (`--quick`): a smoke test, not figures to quote."]
        if quick
        else []
    )


def write(
    results: Sequence[BenchmarkResult],
    settings: Settings,
    machine: dict[str, str],
    loadCheck: LoadCheck,
    path: Path,
    quick: bool = False,
    generated: str | None = None,
    extra: Sequence[str] = (),
    reruns: Mapping[str, str] | None = None,
) -> None:
    """
    Write the Markdown report to C{path}, its plots to C{path}'s stem
    directory (C{docs/benchmarks/}), and the raw samples beside them.

    @param generated: when the figures were taken, if not now.
    @param extra: Markdown sections appended as they are (benchmarks with a
        runner of their own, such as L{bench.ldap}).
    @param reruns: for benchmarks measured in a later run than the rest, a
        sentence saying when and why, shown under their title.
    """
    reruns = reruns or {}
    assets = path.with_suffix("")
    assets.mkdir(parents=True, exist_ok=True)
    now = generated or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` (`.venv/bin/python -m bench`) on {now}. "
        "Rerun it to refresh every figure and plot below; `--help` lists the "
        "options (`--only NAME`, `--quick`, `--same-core`, ...). Raw samples: "
        f"[`{assets.name}/results.json`]({assets.name}/results.json).",
        "",
        *targets.section(results, extra),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in machine.items()],
        "",
        "## Method",
        "",
        *method(settings, quick),
        "",
        "## Load check",
        "",
        f"- Before the run: {loadCheck.describe()}.",
    ]
    for result in results:
        flagged = sum(s.flagged for s in result.samples)
        retried = sum(s.attempt - 1 for s in result.samples)
        worst = max((s.foreign for s in result.samples), default=0.0)
        steal = max((s.steal for s in result.samples), default=0.0)
        lines.append(
            f"- {result.benchmark.name}: {len(result.samples)} measurements kept, "
            f"{retried} redone for other load, {flagged} still flagged; the most "
            f"other load in a kept window was {worst:.0%} of a CPU, the most "
            f"steal {steal:.1%}."
        )
    for result in results:
        benchmark = result.benchmark
        image = f"{assets.name}/{benchmark.name}.png"
        plot(result, assets / f"{benchmark.name}.png")
        lines += ["", f"## {benchmark.title}", ""]
        if benchmark.name in reruns:
            lines += [f"*{reruns[benchmark.name]}*", ""]
        lines += [benchmark.notes, ""]
        if result.primary != benchmark.primary:
            lines += [
                f"**{benchmark.primary} was not available in this run** "
                f"({result.missing.get(benchmark.primary, 'missing')}); "
                f"the ratio columns compare *{result.primary}* instead.",
                "",
            ]
        for name, why in result.missing.items():
            if name != benchmark.primary:
                lines += [f"*{name}* was not available: {why}.", ""]
        lines += [*table(result), "", f"![{benchmark.title}]({image})"]
    for section in extra:
        lines += ["", section.strip()]
    path.write_text("\n".join(lines) + "\n")
    raw = {
        "generated": now,
        "machine": machine,
        "settings": {
            k: str(v) if isinstance(v, os.PathLike) else v
            for k, v in attrs.asdict(settings).items()
        },
        "loadCheck": attrs.asdict(loadCheck),
        "benchmarks": {
            r.benchmark.name: {
                "primary": r.primary,
                "missing": r.missing,
                "samples": [attrs.asdict(s) for s in r.samples],
                "summaries": [attrs.asdict(s) for s in r.summaries()],
                **(
                    {"rerun": reruns[r.benchmark.name]}
                    if r.benchmark.name in reruns
                    else {}
                ),
            }
            for r in results
        },
        "extra": list(extra),
    }
    (assets / "results.json").write_text(json.dumps(raw, indent=1) + "\n")


@frozen
class Saved:
    """
    A run read back from its C{results.json}.
    """

    results: list[BenchmarkResult]
    settings: Settings
    machine: dict[str, str]
    loadCheck: LoadCheck
    generated: str
    extra: list[str] = attrs.field(factory=list)
    reruns: dict[str, str] = attrs.field(factory=dict)


def load(path: Path) -> Saved:
    """
    Read back what L{write} saved as C{results.json}, to render the report
    again without measuring again.
    """
    raw = json.loads(path.read_text())
    settings = raw["settings"]
    settings["out"] = Path(settings["out"])
    benchmarks = {b.name: b for b in BENCHMARKS}
    results = [
        BenchmarkResult(
            benchmarks[name],
            saved["primary"],
            samples=[
                Sample(**{**sample, "case": Case(**sample["case"])})
                for sample in saved["samples"]
            ],
            missing=saved["missing"],
        )
        for name, saved in raw["benchmarks"].items()
    ]
    return Saved(
        results,
        Settings(**settings),
        raw["machine"],
        LoadCheck(**raw["loadCheck"]),
        raw["generated"],
        raw.get("extra", []),
        {
            name: saved["rerun"]
            for name, saved in raw["benchmarks"].items()
            if "rerun" in saved
        },
    )


def replaced(base: Saved, later: Saved) -> Saved:
    """
    C{base} with the benchmarks C{later} measured taking the place of its
    own, each noted as measured in that later run.
    """
    names = {r.benchmark.name for r in later.results}
    commit = later.machine.get("netplugins commit", "?")
    was, now = attrs.asdict(base.settings), attrs.asdict(later.settings)
    changed = [f"{k} {now[k]} (was {was[k]})" for k in was if was[k] != now[k]]
    same = "the same settings" + (f" except {', '.join(changed)}" if changed else "")
    only = " ".join(f"--only {r.benchmark.name}" for r in later.results)
    reruns = {k: v for k, v in base.reruns.items() if k not in names}
    for name in names:
        reruns[name] = later.reruns.get(name) or (
            f"These figures were measured in a later run of `python -m bench "
            f"{only}` at {later.generated} (netplugins commit {commit}) "
            f"with {same}; its load check before the run: "
            f"{later.loadCheck.describe()}."
        )
    results = [
        next((r for r in later.results if r.benchmark.name == b.benchmark.name), b)
        for b in base.results
    ]
    results += [
        r
        for r in later.results
        if r.benchmark.name not in {b.benchmark.name for b in base.results}
    ]
    return attrs.evolve(base, results=results, reruns=reruns)
