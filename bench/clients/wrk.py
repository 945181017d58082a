"""
Debian's C{wrk} in the suite's JSON lines: one warm-up run (discarded), then
the measured run with C{--latency}, whose text output is parsed.

    python -m bench.clients.wrk --port P --connections 50 --path /get
    python -m bench.clients.wrk --port P --script bench/clients/xmlrpc_kv.lua

One wrk thread (the load generator has one CPU of its own). wrk takes whole
seconds, so warm-up and duration are rounded up; the duration reported is
the one wrk measured.  Socket errors and non-2xx/3xx answers count as errors.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

from bench.clients import HOST, arguments, childrenCpu, emit, fail

UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
SIZES = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}


def microseconds(text: str) -> float:
    """
    A wrk latency (C{635.91us}, C{1.03ms}, C{2.00s}) in microseconds.
    """
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"not a wrk latency: {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def parse(output: str) -> dict[str, float]:
    """
    The figures of one C{wrk --latency} run's output.
    """
    done = re.search(
        r"(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+)([KMGT]?B) read", output
    )
    if done is None:
        raise ValueError(f"no request count in wrk output:\n{output}")
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", output, re.MULTILINE))
    socket = re.search(r"Socket errors:.*", output)
    errors = sum(
        int(n)
        for n in re.findall(
            r"(?:connect|read|write|timeout) (\d+)", socket.group(0) if socket else ""
        )
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests": int(done.group(1)),
        "duration": microseconds(done.group(2) + done.group(3)) / 1e6,
        "bytes": float(done.group(4)) * SIZES[done.group(5)],
        "p50_us": microseconds(percentiles["50"]) if "50" in percentiles else 0.0,
        "p99_us": microseconds(percentiles["99"]) if "99" in percentiles else 0.0,
        "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
    }


def main() -> None:
    parser = arguments("wrk, in the suite's JSON lines")
    parser.add_argument("--path", default="/")
    parser.add_argument("--script", help="a wrk Lua script (method, body)")
    options = parser.parse_args()

    def wrk(seconds: float, latency: bool) -> str:
        argv = [
            "wrk",
            "-t1",
            f"-c{options.connections}",
            f"-d{max(1, math.ceil(seconds))}s",
            "--timeout",
            "5s",
        ]
        if latency:
            argv.append("--latency")
        if options.script:
            argv += ["-s", options.script]
        argv.append(f"http://{HOST}:{options.port}{options.path}")
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        if done.returncode != 0:
            fail(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
        return done.stdout

    if options.warmup > 0:
        wrk(options.warmup, False)
    emit(event="measuring")
    cpu = childrenCpu()
    output = wrk(options.duration, True)
    cpu = childrenCpu() - cpu
    print(output, end="", file=sys.stderr)
    emit(
        event="result",
        connections=options.connections,
        cpu_seconds=cpu,
        **parse(output),
    )


if __name__ == "__main__":
    main()
