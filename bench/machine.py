"""
What the machine is and how busy it is: CPU times from C{/proc}, the facts a
benchmark report must state, and the check for other load before a run.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from attrs import frozen

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@frozen
class CpuTimes:
    """
    One C{/proc/stat} line, in clock ticks.

    @ivar busy: user, nice, system, irq, softirq and steal time.
    @ivar softirq: time in the kernel's deferred interrupt work, where most
        loopback packet processing is accounted, to no process.
    @ivar steal: time the hypervisor gave this CPU to someone else.
    @ivar total: C{busy} plus idle and iowait.
    """

    busy: int
    softirq: int
    steal: int
    total: int


def parseProcStat(text: str) -> dict[str, CpuTimes]:
    """
    The C{cpu} (all CPUs) and C{cpuN} lines of a C{/proc/stat} text.
    """
    times = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *fields = line.split()
        user, nice, system, idle, iowait, irq, softirq, steal = (
            [int(f) for f in fields[:8]] + [0] * 8
        )[:8]
        busy = user + nice + system + irq + softirq + steal
        times[name] = CpuTimes(busy, softirq, steal, busy + idle + iowait)
    return times


def readCpuTimes() -> dict[str, CpuTimes]:
    """
    The machine's CPU times now.
    """
    return parseProcStat(Path("/proc/stat").read_text())


def busyFractions(
    before: dict[str, CpuTimes], after: dict[str, CpuTimes]
) -> dict[str, float]:
    """
    How busy each CPU line was between two readings, from 0 to 1.
    """
    fractions = {}
    for name, end in after.items():
        start = before[name]
        total = end.total - start.total
        fractions[name] = (end.busy - start.busy) / total if total > 0 else 0.0
    return fractions


def parseProcessTicks(text: str) -> int:
    """
    User plus system CPU time, in clock ticks, from a C{/proc/PID/stat} text.

    The command name in parentheses may hold spaces and parentheses itself, so
    fields are counted from the last C{)}.
    """
    fields = text[text.rindex(")") + 2 :].split()
    # Fields 14 and 15 of proc(5), counted from the state (field 3).
    return int(fields[11]) + int(fields[12])


def processCpuSeconds(pid: int) -> float:
    """
    The CPU time process C{pid} has used so far (its threads included).
    """
    return parseProcessTicks(Path(f"/proc/{pid}/stat").read_text()) / CLOCK_TICKS


def parseProcessTree(text: str) -> tuple[int, int]:
    """
    The parent pid and the CPU ticks of a process and of its children it
    has reaped (utime, stime, cutime, cstime), from a C{/proc/PID/stat} text.
    """
    fields = text[text.rindex(")") + 2 :].split()
    # Field 4 is the parent; 14 to 17 the four CPU times (proc(5)).
    return int(fields[1]), sum(int(f) for f in fields[11:15])


def _processTree() -> tuple[dict[int, list[int]], dict[int, int]]:
    """
    Every process's children and CPU ticks (L{parseProcessTree}).
    """
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent, used = parseProcessTree((entry / "stat").read_text())
        except (OSError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry.name))
        ticks[int(entry.name)] = used
    return children, ticks


def _descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    """
    C{pid} and every process below it.
    """
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def treeCpuSeconds(pid: int) -> float:
    """
    The CPU time process C{pid} and all its descendants have used so far,
    the children they reaped included: a server that forks workers (gunicorn,
    Dovecot, C{--workers}) is charged for all of them.
    """
    children, ticks = _processTree()
    return sum(ticks.get(p, 0) for p in _descendants(pid, children)) / CLOCK_TICKS


def parsePeakRss(text: str) -> int:
    """
    The peak resident set (C{VmHWM}) in bytes from a C{/proc/PID/status}
    text; 0 when absent (a kernel thread, a zombie).
    """
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def treePeakRss(pid: int) -> int:
    """
    The peak resident sets of process C{pid} and its live descendants, in
    bytes, added up: what a server (and its workers) held at most so far.
    """
    children, _ = _processTree()
    total = 0
    for process in _descendants(pid, children):
        try:
            total += parsePeakRss(Path(f"/proc/{process}/status").read_text())
        except OSError:
            continue  # gone meanwhile
    return total


@frozen
class LoadCheck:
    """
    How busy each CPU was over a short window before a run.

    @ivar busy: CPU name (C{cpu0}, ...) to busy fraction.
    @ivar threshold: the fraction above which a CPU counts as loaded.
    """

    busy: dict[str, float]
    threshold: float
    seconds: float

    @property
    def quiet(self) -> bool:
        """
        Whether no CPU was busier than the threshold.
        """
        return all(
            fraction <= self.threshold
            for name, fraction in self.busy.items()
            if name != "cpu"
        )

    def describe(self) -> str:
        """
        One line for people: each CPU's load over the window.
        """
        loads = ", ".join(
            f"{name} {fraction:.0%}"
            for name, fraction in sorted(self.busy.items())
            if name != "cpu"
        )
        verdict = "quiet" if self.quiet else "LOADED"
        return (
            f"{verdict}: {loads} busy over {self.seconds:g} s "
            f"(threshold {self.threshold:.0%})"
        )


def checkLoad(seconds: float = 2.0, threshold: float = 0.10) -> LoadCheck:
    """
    Watch the CPUs for C{seconds} while this process sleeps.
    """
    before = readCpuTimes()
    time.sleep(seconds)
    return LoadCheck(busyFractions(before, readCpuTimes()), threshold, seconds)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _firstLine(argv: list[str]) -> str:
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return "not found"
    return out.splitlines()[0].strip() if out else "unknown"


def machineInfo() -> dict[str, str]:
    """
    The facts a reader needs to compare these figures with others.
    """
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    virtual = "hypervisor" in Path("/proc/cpuinfo").read_text()
    return {
        "CPU": model + (" (virtual machine)" if virtual else ""),
        "CPUs": str(os.cpu_count()),
        "Kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "Python": sys.version.split()[0] + f" ({platform.python_implementation()})",
        "Twisted": _version("twisted"),
        "uvloop": _version("uvloop"),
        "C compiler": _firstLine(["cc", "--version"]),
        "netplugins commit": _firstLine(
            ["git", "log", "-1", "--format=%h %cd", "--date=short"]
        ),
    }
