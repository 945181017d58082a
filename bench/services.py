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

TWISTD: tuple[str, ...] = ("{twistd}", "--nodaemon", "--pidfile=")
LISTEN: tuple[str, ...] = ("--listen", "tcp:{port}:interface=127.0.0.1")
PREPARE: tuple[str, ...] = ("{python}", "-m", "bench.prepare")
# The C echo load generator's own options, for benchmarks that add some.
ECHO_LOAD = (
    "{program}",
    "--port",
    "{port}",
    "--connections",
    "{connections}",
    "--size",
    "{size}",
    "--warmup",
    "{warmup}",
    "--duration",
    "{duration}",
)


def clients(module: str, *options: str) -> tuple[str, ...]:
    """
    The argv template of a load generator in C{bench/clients/}.
    """
    return (
        "{python}",
        "-m",
        f"bench.clients.{module}",
        "--port",
        "{port}",
        "--connections",
        "{connections}",
        "--size",
        "{size}",
        "--warmup",
        "{warmup}",
        "--duration",
        "{duration}",
        *options,
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
            (
                "{venvs}/httpbin/bin/gunicorn",
                "--bind",
                "127.0.0.1:{port}",
                "--workers",
                "1",
                "httpbin:app",
            ),
            probe=(*PREPARE, "venv", "httpbin"),
        ),
        Contender(
            "aiohttp",
            "aiohttp on uvloop",
            (
                "{venvs}/aiohttp/bin/python",
                "-m",
                "bench.peers.aiohttp_get",
                "--port",
                "{port}",
            ),
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
            (
                "{python}",
                "-m",
                "bench.peers.twistd_here",
                "--nodaemon",
                "--pidfile=",
                "np-wsgi",
                "--app",
                "bench.peers.flask_hello:app",
                *LISTEN,
                "--access-log",
                "none",
            ),
            probe=(*PREPARE, "tool", "wrk"),
        ),
        Contender(
            "gunicorn-sync",
            "gunicorn, 1 sync worker",
            (
                "{venvs}/wsgi/bin/gunicorn",
                "--bind",
                "127.0.0.1:{port}",
                "--workers",
                "1",
                "bench.peers.flask_hello:app",
            ),
            probe=(*PREPARE, "venv", "wsgi"),
        ),
        Contender(
            "gunicorn-gthread",
            "gunicorn, 1 gthread worker (10 threads)",
            (
                "{venvs}/wsgi/bin/gunicorn",
                "--bind",
                "127.0.0.1:{port}",
                "--workers",
                "1",
                "--worker-class",
                "gthread",
                "--threads",
                "10",
                "bench.peers.flask_hello:app",
            ),
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

CERT = ("--tls-cert", "{out}/tls/cert.pem", "--tls-key", "{out}/tls/key.pem")
NP_ECHO_TLS = Contender(
    "np-echo-tls",
    "np-echo --listen-tls",
    (*TWISTD, "np-echo", "--listen-tls", "tcp:{port}:interface=127.0.0.1", *CERT),
    probe=(*PREPARE, "tls"),
)
ASYNCIO_TLS = Contender(
    "asyncio-ssl",
    "asyncio ssl",
    (
        "{python}",
        "-m",
        "bench.peers.asyncio_tls_echo",
        "--port",
        "{port}",
        "--cert",
        "{out}/tls/cert.pem",
        "--key",
        "{out}/tls/key.pem",
    ),
    probe=(*PREPARE, "tls"),
)
UVLOOP_TLS = Contender(
    "uvloop-ssl",
    "uvloop ssl",
    (
        "{python}",
        "-m",
        "bench.peers.asyncio_tls_echo",
        "--port",
        "{port}",
        "--cert",
        "{out}/tls/cert.pem",
        "--key",
        "{out}/tls/key.pem",
        "--loop",
        "uvloop",
    ),
    probe=(*PREPARE, "tls"),
)
TLS_NOTES = (
    "Every server uses the same self-signed RSA-2048 certificate "
    "(`python -m bench.prepare tls`); OpenSSL negotiates TLS 1.3 everywhere. "
    "The load is Python's `ssl` module, one client process per connection "
    "pinned to the load generator's CPU (bench/clients/tls.py): OpenSSL does "
    "the cryptography on both sides, so a C client would spend the same. "
)

TLS_HANDSHAKES = Benchmark(
    name="tls-handshake",
    title=(
        "TLS handshakes: np-echo --listen-tls against openssl s_server and asyncio ssl"
    ),
    loadgen="",
    load=clients("tls", "--mode", "handshake"),
    primary="np-echo-tls",
    contenders=(
        NP_ECHO_TLS,
        Contender(
            "s_server",
            "openssl s_server",
            (
                "openssl",
                "s_server",
                "-accept",
                "127.0.0.1:{port}",
                "-cert",
                "{out}/tls/cert.pem",
                "-key",
                "{out}/tls/key.pem",
                "-www",
                "-quiet",
            ),
            probe=(*PREPARE, "tls"),
        ),
        ASYNCIO_TLS,
    ),
    cases=(Case(0, connections=4, label="full handshake"),),
    notes=TLS_NOTES
    + (
        "Each client connects, completes a full handshake (no resumption, the "
        "certificate not verified) and closes, back to back; a request is one "
        "handshake, so *server CPU µs/req* is the server's cost per handshake. "
        "`openssl s_server -www` serves one connection at a time."
    ),
)

TLS_BULK = Benchmark(
    name="tls-bulk",
    title="TLS bulk: np-echo --listen-tls against asyncio and uvloop ssl echo",
    loadgen="",
    load=clients("tls", "--mode", "bulk"),
    primary="np-echo-tls",
    contenders=(NP_ECHO_TLS, ASYNCIO_TLS, UVLOOP_TLS),
    cases=(Case(65536, connections=4),),
    notes=TLS_NOTES
    + (
        "Each client keeps one connection and sends 64 KiB, waiting for the "
        "whole echo before the next (bench/peers/asyncio_tls_echo.py is the "
        "`asyncio.Protocol` echo with an `ssl` context); MiB/s counts payload "
        "one way."
    ),
)

ZEN = Benchmark(
    name="zen",
    title="Zen: np-zen against the book's asyncio Zen server",
    loadgen="echo",
    load=(
        *ECHO_LOAD,
        "--request",
        "Beautiful is better than?",
        "--until",
        ".",
        "--expect",
        "Ugly.",
    ),
    primary="np-zen",
    contenders=(
        Contender("np-zen", "netplugins np-zen", (*TWISTD, "np-zen", *LISTEN)),
        Contender(
            "np-zen-epoll",
            "np-zen, np-epoll reactor",
            (*TWISTD, "--reactor", "np-epoll", "np-zen", *LISTEN),
        ),
        Contender(
            "asyncio-zen",
            "asyncio Protocol (Foundations ch. 7)",
            ("{python}", "-m", "bench.peers.asyncio_zen", "--port", "{port}"),
        ),
        Contender(
            "uvloop-zen",
            "the same on uvloop",
            (
                "{python}",
                "-m",
                "bench.peers.asyncio_zen",
                "--port",
                "{port}",
                "--loop",
                "uvloop",
            ),
        ),
    ),
    cases=(Case(25, connections=50, label="question"),),
    notes=(
        "The C load generator (bench/loadgen/echo.c) in its request mode: "
        "each of 50 connections sends `Beautiful is better than?` and reads "
        "up to the `.` of `Ugly.` before asking again (`--request ... --until "
        ". --expect Ugly.`). The peer is the `asyncio.Protocol` server of "
        "Foundations of Python Network Programming ch. 7 (`srv_asyncio1.py`), "
        "written again in bench/peers/asyncio_zen.py, on asyncio and on uvloop. "
        "*np-zen, np-epoll reactor* adds `--reactor np-epoll`."
    ),
)

KV = Benchmark(
    name="kv",
    title="Key-value: np-kv XML-RPC against SimpleXMLRPCServer (Cookbook 11.6)",
    loadgen="",
    load=clients("wrk", "--path", "/RPC2", "--script", "bench/clients/xmlrpc_kv.lua"),
    primary="np-kv",
    contenders=(
        Contender(
            "np-kv",
            "np-kv --store memory",
            (*TWISTD, "np-kv", *LISTEN, "--store", "memory"),
            probe=(*PREPARE, "tool", "wrk"),
        ),
        Contender(
            "xmlrpc-kv",
            "SimpleXMLRPCServer + ThreadingMixIn",
            ("{python}", "-m", "bench.peers.xmlrpc_kv", "--port", "{port}"),
        ),
    ),
    cases=(Case(0, connections=10, label="set/get"),),
    notes=(
        "`wrk` with a Lua script (bench/clients/xmlrpc_kv.lua) posting the "
        "XML-RPC calls `xmlrpc.client` sends, alternately `set(key, value)` "
        "and `get(key)` over 100 keys, on 10 connections; a request is one "
        "call. The peer is the Cookbook's `KeyValueServer` on "
        "`SimpleXMLRPCServer` with `ThreadingMixIn` (bench/peers/xmlrpc_kv.py, "
        "request logging off), which answers HTTP/1.0 and closes every "
        "connection; np-kv keeps them alive and keeps its store in memory."
    ),
)

MPCONN = Benchmark(
    name="mpconn",
    title="multiprocessing.connection: np-mpconn against a stdlib Listener",
    loadgen="",
    load=clients("mpconn", "--authkey-file", "{out}/mpconn.key"),
    primary="np-mpconn",
    contenders=(
        Contender(
            "np-mpconn",
            "np-mpconn --mode echo",
            (*TWISTD, "np-mpconn", *LISTEN, "--authkey-file", "{out}/mpconn.key"),
            probe=(*PREPARE, "mpconn-key"),
        ),
        Contender(
            "listener",
            "stdlib Listener, thread per client (Cookbook 11.7)",
            (
                "{python}",
                "-m",
                "bench.peers.mpconn_echo",
                "--port",
                "{port}",
                "--authkey-file",
                "{out}/mpconn.key",
            ),
            probe=(*PREPARE, "mpconn-key"),
        ),
    ),
    cases=(Case(1024, connections=8),),
    notes=(
        "8 client processes pinned to the load generator's CPU, each with one "
        "`multiprocessing.connection.Client` (authkey handshake once), send a "
        "1 KiB `bytes` object and wait for it to come back "
        "(bench/clients/mpconn.py). The peer is the Cookbook's echo server: a "
        "stdlib `Listener` with a thread per client (bench/peers/mpconn_echo.py; "
        "its backlog raised from the default 1, which drops simultaneous "
        "connects). "
        "The clients are Python: see *loadgen CPU* for how close they came to "
        "their core."
    ),
)

SMTP = Benchmark(
    name="smtp",
    title="SMTP: np-smtp against aiosmtpd delivering to Maildir",
    loadgen="",
    load=clients("smtpsource"),
    primary="np-smtp",
    contenders=(
        Contender(
            "np-smtp",
            "netplugins np-smtp",
            (
                *TWISTD,
                "np-smtp",
                *LISTEN,
                "--auth",
                "htpasswd:{out}/mail/htpasswd",
                "--maildir-root",
                "{out}/mail/smtp",
                "--hostname",
                "localhost",
            ),
            probe=(*PREPARE, "mail"),
        ),
        Contender(
            "aiosmtpd",
            "aiosmtpd + mailbox.Maildir",
            (
                "{venvs}/aiosmtpd/bin/python",
                "-m",
                "bench.peers.aiosmtpd_maildir",
                "--port",
                "{port}",
                "--maildir",
                "{out}/mail/aiosmtpd",
            ),
            probe=(*PREPARE, "venv", "aiosmtpd"),
        ),
    ),
    cases=(Case(1024, connections=10, label="1 KiB message"),),
    notes=(
        "Postfix's `smtp-source` (Debian's `postfix` package; no Postfix "
        "daemon runs) sends 1 KiB messages from `sender@localhost` to "
        "`bench@localhost` over 10 parallel sessions, several messages per "
        "connection (`-d`), in batches of 200 (bench/clients/smtpsource.py); "
        "a request is one message accepted (250 after DATA). smtp-source "
        "reports no latency. np-smtp delivers to the user's Maildir (tmp, "
        "fsync, new, with a `Received:` header); the peer is aiosmtpd with a "
        "handler adding each message with the stdlib's `mailbox.Maildir` and "
        "then fsyncing it (bench/peers/aiosmtpd_maildir.py), in its own "
        "virtualenv."
    ),
)

IMAP = Benchmark(
    name="imap",
    title="IMAP: FETCH of 1,000 messages, np-imap against Dovecot",
    loadgen="",
    load=clients("imapfetch"),
    primary="np-imap",
    contenders=(
        Contender(
            "np-imap",
            "netplugins np-imap",
            (
                *TWISTD,
                "np-imap",
                *LISTEN,
                "--auth",
                "htpasswd:{out}/mail/htpasswd",
                "--maildir-root",
                "{out}/mail/root",
                "--allow-plaintext-auth",
            ),
            probe=(*PREPARE, "mail"),
        ),
        Contender(
            "dovecot",
            "Dovecot imap",
            ("{python}", "-m", "bench.peers.dovecot_imap", "--port", "{port}"),
            probe=(*PREPARE, "mail"),
        ),
    ),
    cases=(Case(0, connections=1, label="FETCH 1:* BODY.PEEK[]"),),
    notes=(
        "One client (bench/clients/imapfetch.py, a raw socket reading up to "
        "the tagged answer) logs in, `EXAMINE`s INBOX and fetches every "
        "message, `FETCH 1:* (BODY.PEEK[])`, again and again: a request is one "
        "whole FETCH of 1,000 messages of about 2 KiB (`python -m "
        "bench.prepare mail`), so req/s is full fetches per second and p50 the "
        "time one takes; MiB/s counts what the server sent. Dovecot runs with "
        "the configuration of the differential test's fixture (tests/"
        "dovecot.py), in the foreground; its figures include its imap and "
        "login processes. Each server has its own copy of the Maildir."
    ),
)

ZMQ = Benchmark(
    name="zmq",
    title="ZeroMQ: np-zmq streamer against pyzmq's zmq.proxy",
    loadgen="",
    load=clients("zmqstream", "--backend-port", "{port2}"),
    primary="np-zmq",
    contenders=(
        Contender(
            "np-zmq",
            "np-zmq --device streamer",
            (
                *TWISTD,
                "np-zmq",
                "--device",
                "streamer",
                "--frontend",
                "tcp://127.0.0.1:{port}",
                "--backend",
                "tcp://127.0.0.1:{port2}",
            ),
            probe=("{twistd}", "np-zmq", "--help"),
        ),
        Contender(
            "zmq-proxy",
            "zmq.proxy(PULL, PUSH), one process",
            (
                "{python}",
                "-m",
                "bench.peers.zmq_proxy",
                "--port",
                "{port}",
                "--backend-port",
                "{port2}",
            ),
        ),
    ),
    cases=(Case(10, connections=1), Case(1000, connections=1)),
    notes=(
        "One producer process PUSHes 10-byte or 1000-byte messages into the "
        "device's PULL frontend as fast as it takes them, and one consumer "
        "process PULLs them from its PUSH backend (bench/clients/zmqstream.py, "
        "pyzmq, both on the load generator's CPU); a request is one message "
        "delivered in the measured window, checked against what was sent. "
        "np-zmq is `twistd np-zmq --device streamer` with its defaults "
        "(high-water mark 1000, 1 MiB frame limit), moving messages on the "
        "reactor thread (netplugins/zmq/bridge.py); the peer is pyzmq's "
        "`zmq.proxy` between a bound PULL and a bound PUSH in one process "
        "(bench/peers/zmq_proxy.py, libzmq's default high-water mark, also "
        "1000), which moves them in C without the GIL. Both bind on "
        "127.0.0.1 and use one libzmq I/O thread. No latency is reported: "
        "under a saturating stream a message's time through is the time it "
        "waits in the queues (the high-water marks and the sockets' kernel "
        "buffers), not the device's speed. The load generator is Python: "
        "see *loadgen CPU* for how close it came to its core."
    ),
)

SERVICES: tuple[Benchmark, ...] = (
    HTTPBIN,
    WSGI,
    TLS_HANDSHAKES,
    TLS_BULK,
    ZEN,
    KV,
    MPCONN,
    SMTP,
    IMAP,
    ZMQ,
)
