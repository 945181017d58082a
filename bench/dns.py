"""
np-dns against NSD (issue 16 item 9): Debian's C{dnsperf} over UDP asking
the np-dns tests' differential corpus (C{tests/dnsfixtures.py}: every name
of the test zone in its plain, NSEC-signed and NSEC3-signed copies, with
every type), without EDNS and with DO, and distinct names that np-dns's
answer cache cannot hold; both servers serve the same zone files with
response rate limiting off.

The zones and the query files are made by the contenders' probe,
C{python -m bench.dnszones prepare} (L{bench.dnszones}).
"""

from __future__ import annotations

from bench.dnszones import UNIQUE_NAMES, ZONES
from bench.services import TWISTD
from bench.suite import Benchmark, Case, Contender

PREPARE_DNS = ("{python}", "-m", "bench.dnszones", "prepare")
NP_DNS = (
    *TWISTD,
    "np-dns",
    *(f"--zone={origin}={{out}}/dns/{name}" for origin, name in ZONES.items()),
    "--listen",
    "udp:{port}:interface=127.0.0.1",
    "--listen",
    "tcp:{port}:interface=127.0.0.1",
    "--rrl",
    "0",
)

CONTENDERS = (
    Contender("np-dns", "netplugins np-dns", NP_DNS, probe=PREPARE_DNS),
    Contender(
        "np-dns-w2",
        "np-dns --workers 2",
        (*NP_DNS, "--workers", "2"),
        probe=PREPARE_DNS,
        # Two workers on one CPU measure nothing: give them both, sharing
        # the load generator's (as np-echo --workers 2).
        serverCPUs="0,1",
    ),
    Contender(
        "nsd",
        "NSD (one server process)",
        (
            "{python}",
            "-m",
            "bench.peers.nsd_server",
            "--port",
            "{port}",
            "--zones",
            "{out}/dns",
        ),
        probe=PREPARE_DNS,
    ),
)

#: Queries dnsperf keeps outstanding (its default).
OUTSTANDING = 100

DNS_BENCHMARK = Benchmark(
    name="dns",
    title="DNS: np-dns against NSD, dnsperf over UDP",
    loadgen="",
    load=(
        "{python}",
        "-m",
        "bench.clients.dnsperf",
        "--port",
        "{port}",
        "--connections",
        "{connections}",
        "--warmup",
        "{warmup}",
        "--duration",
        "{duration}",
        "--queries",
        "{out}/dns/{framing}.txt",
        "--mode",
        "{framing}",
    ),
    primary="np-dns",
    contenders=CONTENDERS,
    cases=(
        Case(0, connections=OUTSTANDING, framing="plain", label="corpus, no EDNS"),
        Case(0, connections=OUTSTANDING, framing="dnssec", label="corpus, DO"),
        Case(0, connections=OUTSTANDING, framing="unique", label="distinct names"),
    ),
    notes=(
        "Debian's `dnsperf` (bench/clients/dnsperf.py) sends the np-dns tests' "
        "differential corpus over UDP, again and again: 1,008 questions, every "
        "name of the test zone (CNAME chains, wildcards, empty non-terminals, "
        "delegations, DNAME, NXDOMAIN) in its plain, NSEC-signed and "
        "NSEC3-signed copies with 14 types each (tests/dnsfixtures.py), from "
        "8 sockets with 100 queries outstanding, so p50 and p99 are latencies "
        "under that load (from dnsperf's per-query `-v` lines) and a request "
        "is one answer. *corpus, no EDNS* sends plain queries; *corpus, DO* "
        "sets the DNSSEC OK bit (`-D`), so the signed zones' answers carry "
        "their RRSIGs and NSEC/NSEC3 denials. np-dns keeps the reply bytes "
        "of up to 10,000 distinct queries (netplugins/dns/server.py), so "
        "after the first pass both corpus cases measure answers from that "
        "cache; *distinct names* measures its answering itself: "
        f"{UNIQUE_NAMES:,} names under each zone's wildcard and as many that "
        "do not exist, in the three zones (60,000 questions, no EDNS), each "
        "asked once a pass, six times what the cache holds, so each is "
        "answered by np-dns's fast path (netplugins/dns/fastpath.py: the "
        "query read from its bytes, the reply from a template made once per "
        "closest encloser and type). Both servers "
        "serve the same zone "
        "files with response rate limiting off (`np-dns --rrl 0`; NSD's "
        "`rrl-ratelimit: 0`): np-dns under `twistd` in one process, and with "
        "`--workers 2` (two processes on SO_REUSEPORT sockets pinned to both "
        "CPUs, sharing the load generator's); NSD 4 with `server-count: 1` "
        "(bench/peers/nsd_server.py writes its nsd.conf with the tests' "
        "settings and runs `nsd -d`). A lost query or an RCODE other than "
        "NOERROR or NXDOMAIN is an error."
    ),
)

DNS_BENCHMARKS: tuple[Benchmark, ...] = (DNS_BENCHMARK,)
