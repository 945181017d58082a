"""
Postfix's C{smtp-source} in the suite's JSON lines: messages accepted per
second.  It runs in batches (C{-m} messages over C{-s} parallel sessions,
C{-d}: several messages per connection), one warm-up batch first, then
batches back to back until the measured window is over; the rate is the
messages of the batches that finished over the time they took.

    python -m bench.clients.smtpsource --port P --connections 10 --size 1024

smtp-source reports no latencies: p50 and p99 are left at 0.
"""

from __future__ import annotations

import subprocess
import time

from bench.clients import HOST, arguments, childrenCpu, emit, fail

# Messages per batch: enough that starting smtp-source is a small share of a
# batch, few enough that the last batch overruns the window by little.
BATCH = 200


def main() -> None:
    parser = arguments("smtp-source, in the suite's JSON lines")
    parser.add_argument("--to", default="bench@localhost")
    options = parser.parse_args()

    def batch(messages: int) -> None:
        argv = [
            "smtp-source",
            "-d",
            "-s",
            str(options.connections),
            "-m",
            str(messages),
            "-l",
            str(options.size),
            "-f",
            "sender@localhost",
            "-t",
            options.to,
            f"{HOST}:{options.port}",
        ]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0 or done.stderr.strip():
            fail(f"smtp-source failed ({done.returncode}): {done.stderr}")

    began = time.monotonic()
    while time.monotonic() - began < options.warmup:
        batch(options.connections * 5)
    emit(event="measuring")
    cpu = childrenCpu()
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < options.duration:
        batch(BATCH)
        sent += BATCH
    elapsed = time.monotonic() - start
    emit(
        event="result",
        connections=options.connections,
        requests=sent,
        bytes=sent * options.size,
        duration=elapsed,
        p50_us=0.0,
        p99_us=0.0,
        errors=0,
        cpu_seconds=childrenCpu() - cpu,
    )


if __name__ == "__main__":
    main()
