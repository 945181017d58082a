"""
Tests for the suite's benchmarks beyond echo (bench/services.py): one short
real measurement of each kind through the runner, netplugins' side and the
peers that need nothing beyond what scripts/test installs (stdlib servers,
Dovecot, openssl, wrk, smtp-source), so no benchmark rots between runs; and
the parsing of wrk's output.  The peers in their own virtualenvs (httpbin,
gunicorn, aiohttp, aiosmtpd) are exercised by `make bench` only.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench import prepare
from bench.clients.wrk import microseconds, parse
from bench.run import Sample, Settings, expand, measure
from bench.suite import BENCHMARKS, Benchmark

WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:8080/get
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.10ms    1.02ms  20.00ms   90.00%
    Req/Sec     9.80k   500.00     10.20k    70.00%
  Latency Distribution
     50%  635.91us
     75%  712.00us
     90%    1.03ms
     99%    2.28ms
  9805 requests in 1.00s, 3.50MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   9801.23
Transfer/sec:      3.50MB
"""


class WrkTests(SynchronousTestCase):
    """
    Reading wrk's text output.
    """

    def test_parse(self) -> None:
        """Requests, duration, bytes, p50/p99 and errors come out of wrk --latency."""
        # Requests, duration, bytes, p50/p99 and errors (socket errors plus non-2xx
        # answers) come out of a C{wrk --latency} report.
        self.assertEqual(
            parse(WRK_OUTPUT),
            {
                "requests": 9805,
                "duration": 1.0,
                "bytes": 3.5 * 2**20,
                "p50_us": 635.91,
                "p99_us": 2280.0,
                "errors": 7,
            },
        )

    def test_units(self) -> None:
        """Every latency unit wrk prints converts to microseconds; others refused."""
        self.assertEqual(
            [microseconds(t) for t in ("12us", "1.5ms", "2.00s", "1m")],
            [12.0, 1500.0, 2e6, 60e6],
        )
        error = self.assertRaises(ValueError, microseconds, "12 parsecs")
        self.assertEqual(str(error), "not a wrk latency: '12 parsecs'")

    def test_noRequests(self) -> None:
        """
        Output without a request count (wrk failed) is an error, not zeros.
        """
        error = self.assertRaises(ValueError, parse, "unable to connect\n")
        self.assertEqual(
            str(error), "no request count in wrk output:\nunable to connect\n"
        )


class SuiteTableTests(SynchronousTestCase):
    """
    The table of benchmarks itself.
    """

    def test_templatesExpand(self) -> None:
        """Contender names are unique and every template fills in completely."""
        # Every benchmark has unique contender names including its primary, and every
        # server, probe and load template fills in completely.
        fields = dict(
            program="p", port2=1235, connections=1, size=1, warmup=0, duration=1
        )
        for benchmark in BENCHMARKS:
            names = [c.name for c in benchmark.contenders]
            self.assertEqual(len(names), len(set(names)), benchmark.name)
            self.assertIn(benchmark.primary, names)
            templates = [benchmark.load] + [
                t for c in benchmark.contenders for t in (c.command, c.probe)
            ]
            for template in templates:
                filled = " ".join(expand(template, 1234, "raw", **fields))
                self.assertIsNone(re.search(r"\{\w+\}", filled), filled)


def byName(name: str) -> Benchmark:
    """
    The benchmark called C{name}.
    """
    return next(b for b in BENCHMARKS if b.name == name)


class SmokeTests(SynchronousTestCase):
    """
    One short real measurement per benchmark kind: fresh server process,
    its load generator, readings, server stopped.
    """

    def setUp(self) -> None:
        self.settings = Settings(
            warmup=0,
            duration=0.5,
            serverCPU=None,
            loadgenCPU=None,
            out=Path(self.mktemp()),
        )

    def measured(self, benchmark: str, contender: str) -> Sample:
        """
        Measure C{contender} of C{benchmark} on its first case and check it
        served requests without errors and used CPU.
        """
        chosen = byName(benchmark)
        sample = measure(
            chosen, chosen.contender(contender), chosen.cases[0], self.settings, 1
        )
        self.assertEqual((sample.contender, sample.errors), (contender, 0))
        self.assertGreater(sample.requests, 0)
        self.assertGreater(sample.serverCPU, 0)
        return sample

    def test_zen(self) -> None:
        """The C load generator's request mode gets Ugly. from both zen servers."""
        # The C load generator's request mode gets C{Ugly.} from np-zen and from the
        # book's asyncio server.
        self.measured("zen", "np-zen")
        self.measured("zen", "asyncio-zen")

    def test_http(self) -> None:
        """
        wrk loads np-httpbin's /get and a Flask app on np-wsgi.
        """
        self.measured("httpbin", "np-httpbin")
        self.measured("wsgi", "np-wsgi")

    def test_kv(self) -> None:
        """wrk's XML-RPC set/get calls are answered by np-kv and SimpleXMLRPCServer."""
        self.measured("kv", "np-kv")
        self.measured("kv", "xmlrpc-kv")

    def test_mpconn(self) -> None:
        """multiprocessing.connection clients echo through np-mpconn and Listener."""
        prepare.mpconnKey()
        self.measured("mpconn", "np-mpconn")
        self.measured("mpconn", "listener")

    def test_tls(self) -> None:
        """TLS handshakes and 64 KiB echoes through np-echo --listen-tls move bytes."""
        # Full handshakes against np-echo --listen-tls, and 64 KiB echoes through it,
        # move the bytes they should.
        prepare.tls()
        self.measured("tls-handshake", "np-echo-tls")
        bulk = self.measured("tls-bulk", "np-echo-tls")
        self.assertEqual(bulk.bytes, bulk.requests * 65536)

    def test_mail(self) -> None:
        """smtp-source mail is accepted; a full FETCH completes on np-imap, Dovecot."""
        # smtp-source's messages are accepted by np-smtp, and a full FETCH of the
        # 1,000-message mailbox completes on np-imap and on Dovecot.
        prepare.mail()
        self.measured("smtp", "np-smtp")
        fetch = self.measured("imap", "np-imap")
        self.assertGreater(fetch.bytes / fetch.requests, 1000 * 2000)
        self.measured("imap", "dovecot")
