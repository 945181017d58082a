"""
Debian's C{dnsperf} in the suite's JSON lines: one warm-up run (discarded),
then the measured run with C{-v}, whose per-query lines give the latency
percentiles and whose statistics give the counts.

    python -m bench.clients.dnsperf --port P --connections 100 --queries FILE
    python -m bench.clients.dnsperf --port P --queries FILE --mode dnssec

UDP only.  C{--connections} is how many queries dnsperf keeps outstanding
(C{-q}), C{--clients} how many sockets it sends them from (C{-c}; several,
so C{SO_REUSEPORT} workers each get some).  The C{-v} lines go to a
temporary file, read after the run, so printing them costs dnsperf little.
Queries lost and answers other than NOERROR and NXDOMAIN (the suite's query
corpus has no other) count as errors.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable

from bench.clients import HOST, arguments, childrenCpu, emit, fail, percentile

#: The RCODEs the corpus is answered with; any other is an error.
EXPECTED = frozenset({"NOERROR", "NXDOMAIN"})


def statistics(output: str) -> dict[str, float]:
    """
    The figures of dnsperf's C{Statistics:} block: queries completed and
    lost, run time, bytes answered (completed times the average response
    size) and the responses whose RCODE is not in L{EXPECTED}.
    """

    def number(label: str) -> str:
        match = re.search(rf"^\s*{label}:\s+([\d.]+)", output, re.MULTILINE)
        if match is None:
            raise ValueError(f"no {label!r} in dnsperf output:\n{output}")
        return match.group(1)

    completed = int(number("Queries completed"))
    size = re.search(r"Average packet size:\s+request \d+, response (\d+)", output)
    codes = re.search(r"^\s*Response codes:\s+(.*)$", output, re.MULTILINE)
    unexpected = sum(
        int(count)
        for code, count in re.findall(
            r"(\w+) (\d+) \([\d.]+%\)", codes.group(1) if codes else ""
        )
        if code not in EXPECTED
    )
    return {
        "requests": completed,
        "duration": float(number("Run time \\(s\\)")),
        "bytes": completed * int(size.group(1)) if size else 0,
        "errors": int(number("Queries lost")) + unexpected,
    }


def split(lines: Iterable[str]) -> tuple[str, list[float]]:
    """
    C{dnsperf -v}'s output parted into its report (every line but the
    per-query ones) and the latencies in seconds of the per-query lines
    (C{> NOERROR www.example.org A 0.000134}), sorted.
    """
    report, found = [], []
    for line in lines:
        if not line.startswith("> "):
            report.append(line)
            continue
        try:
            found.append(float(line.rsplit(None, 1)[1]))
        except (IndexError, ValueError):
            continue
    found.sort()
    return "".join(report), found


def main() -> None:
    parser = arguments("dnsperf over UDP, in the suite's JSON lines")
    parser.add_argument("--queries", required=True, help="dnsperf's data file")
    parser.add_argument("--clients", type=int, default=8, help="dnsperf -c")
    parser.add_argument(
        "--mode",
        default="plain",
        help="the case: dnssec sets DO (dnsperf -D), any other asks without EDNS",
    )
    options = parser.parse_args()

    def dnsperf(seconds: float, verbose: bool) -> tuple[str, list[float]]:
        argv = [
            "dnsperf",
            "-m",
            "udp",
            "-s",
            HOST,
            "-p",
            str(options.port),
            "-d",
            options.queries,
            "-l",
            f"{seconds:g}",
            "-q",
            str(options.connections),
            "-c",
            str(options.clients),
            "-t",
            "2",
        ]
        if options.mode == "dnssec":
            argv.append("-D")
        if verbose:
            argv.append("-v")
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                timeout=seconds + 60,
                check=False,
            )
            out.seek(0)
            report, found = split(out)
        if done.returncode != 0:
            fail(f"dnsperf failed ({done.returncode}): {done.stderr}{report}")
        return report, found

    if options.warmup > 0:
        dnsperf(options.warmup, False)
    emit(event="measuring")
    cpu = childrenCpu()
    report, ordered = dnsperf(options.duration, True)
    cpu = childrenCpu() - cpu
    print(report, end="", file=sys.stderr)
    emit(
        event="result",
        connections=options.connections,
        cpu_seconds=cpu,
        p50_us=percentile(ordered, 0.5) * 1e6,
        p99_us=percentile(ordered, 0.99) * 1e6,
        **statistics(report),
    )


if __name__ == "__main__":
    main()
