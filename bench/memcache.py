"""
np-memcache against memcached C{-t 1} (one worker thread, as np-memcache is one
process): GET and SET of 100-byte values and pipelined C{mg} batches, each a
request-response ping-pong of the C echo generator (bench/loadgen/echo.c) in
its request mode, on 50 connections.
"""

from __future__ import annotations

from bench.services import ECHO_LOAD, LISTEN, TWISTD
from bench.suite import Benchmark, Case, Contender

#: The value size every case reads or writes.
SIZE = 100
VALUE = "x" * SIZE
#: Meta gets per pipelined batch.
BATCH = 16

CONTENDERS = (
    Contender(
        "np-memcache",
        "netplugins np-memcache",
        (*TWISTD, "np-memcache", *LISTEN),
        probe=("{twistd}", "np-memcache", "--help"),
    ),
    Contender(
        "np-memcache-epoll",
        "np-memcache, np-epoll reactor",
        (*TWISTD, "--reactor", "np-epoll", "np-memcache", *LISTEN),
        probe=("{twistd}", "--reactor", "np-epoll", "np-memcache", "--help"),
    ),
    Contender(
        "memcached",
        "memcached -t 1",
        (
            "memcached",
            "-l",
            "127.0.0.1",
            "-p",
            "{port}",
            "-t",
            "1",
            "-U",
            "0",
            "-u",
            "nobody",
        ),
        probe=("memcached", "-V"),
    ),
)

#: Store C{k} first, then run the generator.
PRELOADED = ("{python}", "-m", "bench.clients.memcache", "--port", "{port}")


def _benchmark(
    name: str, what: str, request: str, expect: str, label: str
) -> Benchmark:
    return Benchmark(
        name=name,
        title=f"memcached {what}: np-memcache against memcached -t 1",
        loadgen="echo",
        load=(
            *PRELOADED,
            "--size",
            str(SIZE),
            "--",
            *ECHO_LOAD,
            "--request",
            request,
            "--until",
            "N" if expect.endswith("N\r\n") else "\n",
            "--expect",
            expect,
        ),
        primary="np-memcache",
        contenders=CONTENDERS,
        cases=(Case(SIZE, connections=50, label=label),),
        notes=(
            f"The C load generator (bench/loadgen/echo.c) in its request mode, "
            f"50 connections, each sending `{request.strip()[:40]}` and reading "
            f"the whole answer before the next (bench/clients/memcache.py "
            f"stores the {SIZE}-byte value `k` first). memcached runs with one "
            f"worker thread (`-t 1`), np-memcache in one process under twistd "
            f"(and with `--reactor np-epoll`)."
        ),
    )


GET = _benchmark(
    "memcache-get",
    "GET",
    "get k\r\n",
    f"VALUE k 0 {SIZE}\r\n{VALUE}\r\nEND\r\n",
    "get 100 B",
)
SET = _benchmark(
    "memcache-set",
    "SET",
    f"set k 0 0 {SIZE}\r\n{VALUE}\r\n",
    "STORED\r\n",
    "set 100 B",
)
META = _benchmark(
    "memcache-mg",
    f"pipelined mg (batches of {BATCH})",
    "mg k v\r\n" * BATCH + "mn\r\n",
    f"VA {SIZE}\r\n{VALUE}\r\n" * BATCH + "MN\r\n",
    f"mg x{BATCH}",
)

MEMCACHE: tuple[Benchmark, ...] = (GET, SET, META)
