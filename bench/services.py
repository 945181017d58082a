"""
The benchmarks of every netplugins service beside echo, each against the
peers its issue names, in the same L{Benchmark} table form as
L{bench.suite.ECHO} (which imports this module's L{SERVICES}).

Peers with dependencies of their own run from virtualenvs under
C{bench/out/venvs/} that their probes make (L{bench.prepare}); files they
share (a certificate, Maildirs, an authkey) are made by probes too.
"""

from __future__ import annotations

from bench.suite import Benchmark, Case, Contender

TWISTD = ("{twistd}", "--nodaemon", "--pidfile=")
LISTEN = ("--listen", "tcp:{port}:interface=127.0.0.1")
PREPARE = ("{python}", "-m", "bench.prepare")
# The C echo load generator's own options, for benchmarks that add some.
ECHO_LOAD = (
    "{program}", "--port", "{port}", "--connections", "{connections}",
    "--size", "{size}", "--warmup", "{warmup}", "--duration", "{duration}",
)


def clients(module: str, *options: str) -> tuple[str, ...]:
    """
    The argv template of a load generator in C{bench/clients/}.
    """
    return (
        "{python}", "-m", f"bench.clients.{module}", "--port", "{port}",
        "--connections", "{connections}", "--size", "{size}",
        "--warmup", "{warmup}", "--duration", "{duration}", *options,
    )


HTTPBIN = Benchmark(
    name="httpbin",
    title="HTTP: np-httpbin /get against httpbin on gunicorn and aiohttp on uvloop",
    loadgen="",
    load=clients("wrk", "--path", "/get"),
    primary="np-httpbin",
    contenders=(
        Contender(
            "np-httpbin",
            "np-httpbin, no access log",
            (*TWISTD, "np-httpbin", *LISTEN, "--access-log", "none"),
            probe=(*PREPARE, "tool", "wrk"),
        ),
        Contender(
            "np-httpbin-log",
            "np-httpbin, default access log",
            (*TWISTD, "np-httpbin", *LISTEN),
        ),
        Contender(
            "gunicorn-httpbin",
            "httpbin on gunicorn (1 sync worker)",
            ("{venvs}/httpbin/bin/gunicorn", "--bind", "127.0.0.1:{port}",
             "--workers", "1", "httpbin:app"),
            probe=(*PREPARE, "venv", "httpbin"),
        ),
        Contender(
            "aiohttp",
            "aiohttp on uvloop",
            ("{venvs}/aiohttp/bin/python", "-m", "bench.peers.aiohttp_get",
             "--port", "{port}"),
            probe=(*PREPARE, "venv", "aiohttp"),
        ),
    ),
    cases=(Case(0, connections=50, label="GET /get"),),
    notes=(
        "`wrk` (Debian's, one thread, keep-alive) sends `GET /get` on 50 "
        "connections for the measured window after a warm-up run "
        "(bench/clients/wrk.py parses its `--latency` output). "
        "*np-httpbin, no access log* is `twistd np-httpbin --access-log none`; "
        "*np-httpbin, default access log* is the same with the combined-format "
        "access log it writes by default (to the twistd log, a file here): the "
        "difference is what logging costs. *httpbin on gunicorn* is the "
        "`httpbin` package (Flask) on one sync gunicorn worker, which closes "
        "the connection after every answer; *aiohttp on uvloop* is a handler "
        "returning httpbin's /get JSON (bench/peers/aiohttp_get.py) without "
        "access log. Each runs in its own virtualenv under bench/out/venvs/. "
        "gunicorn's figures include its worker process (the server CPU is the "
        "whole process tree's)."
    ),
)

WSGI = Benchmark(
    name="wsgi",
    title="WSGI: np-wsgi hosting a Flask app against gunicorn hosting it",
    loadgen="",
    load=clients("wrk", "--path", "/"),
    primary="np-wsgi",
    contenders=(
        Contender(
            "np-wsgi",
            "np-wsgi (10 threads)",
            ("{python}", "-m", "bench.peers.twistd_here", "--nodaemon",
             "--pidfile=", "np-wsgi", "--app", "bench.peers.flask_hello:app",
             *LISTEN, "--access-log", "none"),
            probe=(*PREPARE, "tool", "wrk"),
        ),
        Contender(
            "gunicorn-sync",
            "gunicorn, 1 sync worker",
            ("{venvs}/wsgi/bin/gunicorn", "--bind", "127.0.0.1:{port}",
             "--workers", "1", "bench.peers.flask_hello:app"),
            probe=(*PREPARE, "venv", "wsgi"),
        ),
        Contender(
            "gunicorn-gthread",
            "gunicorn, 1 gthread worker (10 threads)",
            ("{venvs}/wsgi/bin/gunicorn", "--bind", "127.0.0.1:{port}",
             "--workers", "1", "--worker-class", "gthread", "--threads", "10",
             "bench.peers.flask_hello:app"),
            probe=(*PREPARE, "venv", "wsgi"),
        ),
    ),
    cases=(Case(0, connections=50, label="GET / (Flask hello)"),),
    notes=(
        "The same Flask application (bench/peers/flask_hello.py, one route "
        "answering `Hello, World!`) hosted three ways, loaded by `wrk` on 50 "
        "keep-alive connections: `twistd np-wsgi --app "
        "bench.peers.flask_hello:app --access-log none` (its default pool of "
        "10 threads), and gunicorn (no access log by default) with one sync "
        "worker (one request at a time, connection closed after each) and "
        "with one gthread worker of 10 threads (keep-alive). Flask is the "
        "same version on both sides."
    ),
)

SERVICES: tuple[Benchmark, ...] = (HTTPBIN, WSGI)
