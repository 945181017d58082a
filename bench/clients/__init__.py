"""
Load generators that are not C{bench/loadgen/*.c}: Python clients for
protocols whose client side is itself Python (C{multiprocessing.connection},
an IMAP FETCH loop, TLS with the C{ssl} module) and wrappers around tools
(C{wrk}, Postfix's C{smtp-source}).  All speak L{bench.loadgen.run}'s JSON
lines on stdout: C{{"event": "measuring"}} when the measured window opens,
then one C{{"event": "result", ...}} with C{requests}, C{bytes}, C{duration},
C{p50_us}, C{p99_us}, C{errors} and C{cpu_seconds}.

L{runWorkers} runs one process per connection (no GIL shared between
clients); once every one has connected, each does requests back to back
until a window that every worker and the parent agree on (C{time.monotonic}
is machine-wide) closes.  Every
loop is bounded by that window; only 127.0.0.1 is ever connected to.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

HOST = "127.0.0.1"

# A client that fails waits this long before it connects again, so a server
# that refuses everything is not hammered in a tight loop.
RETRY_PAUSE = 0.05


def emit(**event: object) -> None:
    """
    Print one JSON event line and flush it at once.
    """
    print(json.dumps(event), flush=True)


def arguments(description: str) -> argparse.ArgumentParser:
    """
    The options every load generator takes.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--framing", default="raw", help="ignored")
    return parser


def percentile(ordered: list[float], fraction: float) -> float:
    """
    The C{fraction} percentile of sorted C{ordered} (0 when empty).
    """
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def result(
    requests: int,
    bytes: int,
    duration: float,
    latencies: list[float],
    errors: int,
    cpu: float,
    **more: object,
) -> None:
    """
    Print the result event; C{latencies} in seconds.
    """
    ordered = sorted(latencies)
    emit(
        event="result",
        requests=requests,
        bytes=bytes,
        duration=duration,
        p50_us=statistics.median(ordered) * 1e6 if ordered else 0.0,
        p99_us=percentile(ordered, 0.99) * 1e6,
        errors=errors,
        cpu_seconds=cpu,
        **more,
    )


# A worker: given the options, returns (connect, request, close).  request
# takes what connect made and returns the bytes it moved.
Worker = Callable[
    [argparse.Namespace],
    tuple[Callable[[], Any], Callable[[Any], int], Callable[[Any], None]],
]


# How long every client may take to connect before the run starts: a
# server whose accept loop is starved (the stdlib Listener shakes hands in
# its one accepting thread) may need a while.
CONNECT_TIMEOUT = 30.0
#: Failed requests a worker describes on stderr (the load generator's log).
ERRORS_LOGGED = 3


def _work(make: Worker, options: argparse.Namespace, pipe: Any) -> None:
    connect, request, close = make(options)
    latencies: list[float] = []
    requests = moved = errors = 0
    cpu = 0.0
    counting = False
    # Connect before the window, so the first connection's cost (and a
    # slow accept) is not measured as a request.
    connection = connect()
    pipe.send("ready")
    start, end = pipe.recv()
    while True:
        now = time.monotonic()
        if not counting and now >= start:
            counting, cpu = True, time.process_time()
        if now >= end:
            break
        try:
            if connection is None:
                connection = connect()
            began = time.monotonic()
            n = request(connection)
            finished = time.monotonic()
        except Exception as e:
            errors += counting
            if counting and errors <= ERRORS_LOGGED:
                print(f"request failed: {e!r}", file=sys.stderr, flush=True)
            if connection is not None:
                try:
                    close(connection)
                except Exception:
                    pass
            connection = None
            time.sleep(RETRY_PAUSE)
            continue
        if counting and start <= began and finished <= end:
            requests += 1
            moved += n
            latencies.append(finished - began)
    cpu = time.process_time() - cpu if counting else 0.0
    if connection is not None:
        try:
            close(connection)
        except Exception:
            pass
    pipe.send((requests, moved, errors, cpu, latencies))
    pipe.close()


def runWorkers(make: Worker, options: argparse.Namespace) -> None:
    """
    Run C{options.connections} worker processes against the server and print
    the aggregate result.
    """
    context = multiprocessing.get_context("fork")
    workers = []
    for _ in range(options.connections):
        receiver, sender = context.Pipe()
        process = context.Process(
            target=_work, args=(make, options, sender), daemon=True
        )
        process.start()
        sender.close()
        workers.append((process, receiver))
    deadline = time.monotonic() + CONNECT_TIMEOUT
    for process, receiver in workers:
        if not receiver.poll(max(0.0, deadline - time.monotonic())):
            for process, _ in workers:
                process.kill()
            fail(f"not every client connected within {CONNECT_TIMEOUT:g} s")
        receiver.recv()
    start = time.monotonic() + options.warmup
    end = start + options.duration
    for _, receiver in workers:
        receiver.send((start, end))
    time.sleep(max(0.0, start - time.monotonic()))
    emit(event="measuring")
    requests = moved = errors = 0
    cpu = 0.0
    latencies: list[float] = []
    for process, receiver in workers:
        # A worker ends soon after the window; one that does not is stuck.
        if not receiver.poll(max(1.0, end - time.monotonic() + 10)):
            process.kill()
            errors += 1
            continue
        r, b, e, c, lat = receiver.recv()
        requests, moved, errors, cpu = requests + r, moved + b, errors + e, cpu + c
        latencies.extend(lat)
        process.join(5)
    result(
        requests,
        moved,
        options.duration,
        latencies,
        errors,
        cpu,
        connections=options.connections,
    )


def childrenCpu() -> float:
    """
    CPU seconds used by this process's reaped children so far.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fail(message: str) -> None:
    """
    Say why on stderr and exit non-zero (the runner reports the log).
    """
    print(message, file=sys.stderr, flush=True)
    sys.exit(1)
