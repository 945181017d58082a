"""
What the suite measures: each benchmark, its cases, and the servers compared
in it.  A new contender is one L{Contender} line in L{BENCHMARKS}; a new
benchmark is one L{Benchmark} (and a load generator in C{bench/loadgen/}).

Server commands are argv templates; the runner fills in C{{python}} (this
interpreter), C{{twistd}} (the twistd beside it), C{{port}} and C{{framing}}
(and C{{port2}}, a second free port, for servers that listen on two).
Every server listens on 127.0.0.1 only.
"""

from __future__ import annotations

from attrs import frozen


@frozen
class Contender:
    """
    One server in a benchmark.

    @ivar name: short column name (C{--only-contenders} and file names use it).
    @ivar label: what the report calls it.
    @ivar command: the argv template that starts it in the foreground.
    @ivar probe: an argv template that exits 0 when the contender can run
        (a service still being written is reported as missing, not failed).
    @ivar serverCPUs: a C{taskset} CPU list overriding the run's server CPU,
        for contenders that are several processes (C{--workers}); C{None}
        keeps the run's setting.
    """

    name: str
    label: str
    command: tuple[str, ...]
    probe: tuple[str, ...] = ()
    serverCPUs: str | None = None


@frozen
class Case:
    """
    One load: C{connections} clients each sending C{size}-byte messages.
    """

    size: int
    connections: int = 50
    framing: str = "raw"
    label: str = ""

    @property
    def title(self) -> str:
        """
        A short name for tables and plots: C{1 KiB x 50}, or the C{label}
        given (C{/get x 50}).
        """
        if self.label:
            return f"{self.label} x {self.connections}"
        size = f"{self.size // 1024} KiB" if self.size % 1024 == 0 else f"{self.size} B"
        extra = "" if self.framing == "raw" else f", {self.framing}"
        return f"{size} x {self.connections}{extra}"


@frozen
class Benchmark:
    """
    One benchmark: netplugins' contender (C{primary}) against its peers.

    @ivar loadgen: the load generator, C{bench/loadgen/NAME.c}, or C{""}
        when C{load} runs a program of its own.
    @ivar load: the load generator's argv template; empty for C{loadgen}'s
        echo options.  Besides the contenders' fields it may use
        C{{program}} (the built C{loadgen}), C{{connections}}, C{{size}},
        C{{warmup}} and C{{duration}}.  It must speak C{loadgen.run}'s JSON
        lines (L{bench.clients} wraps tools and Python clients in them).
    @ivar standIn: the contender measured as primary while C{primary} is
        missing.
    @ivar notes: Markdown paragraphs for the report, on what is compared.
    """

    name: str
    title: str
    loadgen: str
    primary: str
    contenders: tuple[Contender, ...]
    cases: tuple[Case, ...]
    standIn: str | None = None
    notes: str = ""
    load: tuple[str, ...] = ()

    def contender(self, name: str) -> Contender:
        """
        The contender called C{name}.
        """
        for contender in self.contenders:
            if contender.name == name:
                return contender
        raise KeyError(name)


ECHO = Benchmark(
    name="echo",
    title="Echo: np-echo against bare Twisted, asyncio and uvloop",
    loadgen="echo",
    primary="np-echo",
    standIn="twisted",
    contenders=(
        Contender(
            "np-echo",
            "netplugins np-echo",
            (
                "{twistd}",
                "--nodaemon",
                "--pidfile=",
                "np-echo",
                "--listen",
                "tcp:{port}:interface=127.0.0.1",
                "--framing",
                "{framing}",
            ),
            probe=("{twistd}", "np-echo", "--help"),
        ),
        Contender(
            "np-epoll",
            "np-echo, np-epoll reactor",
            (
                "{twistd}",
                "--nodaemon",
                "--pidfile=",
                "--reactor",
                "np-epoll",
                "np-echo",
                "--listen",
                "tcp:{port}:interface=127.0.0.1",
                "--framing",
                "{framing}",
            ),
            probe=("{twistd}", "--reactor", "np-epoll", "np-echo", "--help"),
        ),
        Contender(
            "np-echo-w2",
            "np-echo --workers 2",
            (
                "{twistd}",
                "--nodaemon",
                "--pidfile=",
                "--reactor",
                "np-epoll",
                "np-echo",
                "--workers",
                "2",
                "--listen",
                "tcp:{port}:interface=127.0.0.1",
                "--framing",
                "{framing}",
            ),
            probe=("{twistd}", "np-echo", "--workers", "2", "--help"),
            # Two workers on one CPU measure nothing: give them both, sharing
            # the load generator's.
            serverCPUs="0,1",
        ),
        Contender(
            "twisted",
            "bare Twisted",
            (
                "{python}",
                "-m",
                "bench.peers.twisted_echo",
                "--port",
                "{port}",
                "--framing",
                "{framing}",
            ),
        ),
        Contender(
            "asyncio",
            "asyncio",
            (
                "{python}",
                "-m",
                "bench.peers.asyncio_echo",
                "--port",
                "{port}",
                "--framing",
                "{framing}",
                "--loop",
                "asyncio",
            ),
        ),
        Contender(
            "uvloop",
            "uvloop",
            (
                "{python}",
                "-m",
                "bench.peers.asyncio_echo",
                "--port",
                "{port}",
                "--framing",
                "{framing}",
                "--loop",
                "uvloop",
            ),
        ),
    ),
    cases=(Case(1024), Case(65536)),
    notes=(
        "Each client sends one message and waits for all of it to come back "
        "before sending the next (ping-pong), so requests/s measures the "
        "server's per-message cost and p50/p99 its latency under that load. "
        "np-echo runs under `twistd` exactly as a user starts it; *bare Twisted* "
        "is the plainest Twisted `Protocol` echo (bench/peers/twisted_echo.py), "
        "so the gap between the two is what netplugins' own layers cost; "
        "*asyncio* and *uvloop* are `asyncio.Protocol` echo servers "
        "(bench/peers/asyncio_echo.py). asyncio and uvloop set `TCP_NODELAY` "
        "on accepted sockets; Twisted leaves Nagle's algorithm on, netplugins' "
        "write-through transport (netplugins/transport.py) sets it. *np-echo, "
        "np-epoll reactor* adds `--reactor np-epoll` (netplugins/reactor.py). "
        "*np-echo --workers 2* is two processes on SO_REUSEPORT sockets, "
        "pinned to both CPUs (so they share the load generator's), and its "
        "server CPU is the worker processes' (children of the supervisor)."
    ),
)

# Every other service against its peers (HTTP, TLS, zen, kv, mpconn, mail)
# lives in bench/services.py; imported here, once the classes above exist.
from bench.dns import DNS_BENCHMARKS  # noqa: E402
from bench.ftp import FTP_BENCHMARKS  # noqa: E402
from bench.memcache import MEMCACHE  # noqa: E402
from bench.services import SERVICES  # noqa: E402
from bench.ssh import SSH_BENCHMARKS  # noqa: E402

BENCHMARKS: tuple[Benchmark, ...] = (
    ECHO,
    *SERVICES,
    *MEMCACHE,
    *FTP_BENCHMARKS,
    *DNS_BENCHMARKS,
    *SSH_BENCHMARKS,
)
