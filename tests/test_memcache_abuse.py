"""
Hostile clients against C{twistd np-memcache}, judged from outside as in
L{tests.test_abuse}: resident memory from C{/proc}, the server's side of each
connection from C{/proc/net/tcp}.
"""

from __future__ import annotations

import socket
import time

from tests.abuse import MiB, RSSWatch, connect, expect, flood, freePort
from tests.test_abuse import (
    DEADLINE,
    GRACE,
    OVERSIZE_GROWTH,
    SLACK,
    AbuseTestCase,
    _listen,
)

#: The value the never-reading clients fetch again and again.
BIG = b"v" * 100_000


def _setBig(sock: socket.socket) -> None:
    sock.sendall(b"set big 0 0 %d\r\n%s\r\n" % (len(BIG), BIG))
    expect(sock, rb"STORED\r\n")


class MemcacheAbuseTests(AbuseTestCase):
    """
    C{twistd np-memcache}.
    """

    tapname = "np-memcache"

    def test_neverReads(self) -> None:
        """Pipelined sets and gets never read, over TCP and TLS: bounded
        memory."""
        port, tlsPort, server = self.serveBoth()
        self.assertNeverReadsBounded(
            server, port, tlsPort, [b"set a 0 0 5\r\nhello\r\nget a a a\r\n"]
        )

    def test_neverReadsLargeValues(self) -> None:
        """Multi-gets and pipelined mg of a 100 kB value never read: the
        replies wait, memory stays bounded."""
        port, tlsPort, server = self.serveBoth()
        self.assertNeverReadsBounded(
            server,
            port,
            tlsPort,
            [b"get big big big big big big big big big big\r\n", b"mg big v\r\n" * 10],
            setup=_setBig,
        )

    def test_stalledTLS(self) -> None:
        """A TLS handshake with no bytes, or half a ClientHello, is cut off."""
        self.checkStalledTLS()

    def test_lineOverLimit(self) -> None:
        """64 MiB without a newline closes the connection, memory bounded."""
        port, server = self.servePlain()
        result, _ = self.assertOversizeBounded(
            port, server, b"", b"x" * 65536, 64 * MiB, warm=b"version\r\n"
        )
        self.assertClosedByServer(result)

    def test_valueOverLimit(self) -> None:
        """A value over --max-item-size is dropped as it streams in, then
        refused."""
        port, server = self.servePlain()
        length = 32 * MiB
        result, sock = self.assertOversizeBounded(
            port,
            server,
            b"set a 0 0 %d\r\n" % length,
            b"x" * 65536,
            length,
            warm=b"version\r\n",
        )
        sock.setblocking(True)
        sock.sendall(b"\r\nget a\r\n")
        self.assertEqual(
            expect(sock, rb"END\r\n"),
            b"SERVER_ERROR object too large for cache\r\nEND\r\n",
            result.describe(),
        )

    def test_hostileLengths(self) -> None:
        """Negative, 2**31 and 2**32-1 lengths are refused before anything is
        allocated; the connection goes on."""
        port, server = self.servePlain()
        watch = RSSWatch(server)
        sock = self.connect(port, receiveBuffer=None)
        sock.sendall(
            b"set a 0 0 -1\r\nset a 0 0 2147483647\r\nset a 0 0 4294967295\r\n"
            b"set a 0 0 18446744073709551616\r\nmn\r\n"
        )
        self.assertEqual(
            expect(sock, rb"MN\r\n"),
            b"CLIENT_ERROR bad command line format\r\n" * 4 + b"MN\r\n",
        )
        self.assertGrowth(watch, MiB, "hostile lengths")

    def test_memoryLimit(self) -> None:
        """96 MiB of sets into --memory-limit 8 MiB: once the cache is full
        memory stops growing, evictions are counted and what is kept stays
        under the limit."""
        limit = 8 * MiB
        port, server = self.servePlain("--memory-limit", str(limit))
        sock = self.connect(port, receiveBuffer=None)
        value = b"x" * 1000
        batch = b"".join(
            b"set k%d 0 0 1000 noreply\r\n%s\r\n" % (i, value) for i in range(1000)
        )
        start = RSSWatch(server)
        full = None
        for round in range(96):
            sock.sendall(batch.replace(b"set k", b"set r%d:" % round) + b"mn\r\n")
            expect(sock, rb"MN\r\n", timeout=30)
            if round == 16:
                full = RSSWatch(server)
        assert full is not None
        sock.sendall(b"stats\r\n")
        stats = dict(
            line.split(b" ")[1:3]
            for line in expect(sock, rb"END\r\n").splitlines()
            if line.startswith(b"STAT ")
        )
        self.assertGreater(int(stats[b"evictions"]), 80_000)
        self.assertLessEqual(int(stats[b"bytes"]), limit)
        self.assertGrowth(start, limit + OVERSIZE_GROWTH, "96 MiB of sets")
        self.assertGrowth(full, 4 * MiB, "80 MiB of sets into a full cache")

    def test_deadlines(self) -> None:
        """--idle-timeout closes idle and backed-up connections, socket and
        all."""
        port, tlsPort = self.serveShortDeadlines()
        self.assertDeadlinesClose(port, tlsPort, b"set a 0 0 1\r\nx\r\nget a\r\n")

    def test_preAuth(self) -> None:
        """With --auth, a client that never logs in loses the connection at
        --preauth-timeout; a huge authentication payload closes at once."""
        port = freePort()
        self.serve(
            "--listen",
            _listen(port),
            "--auth",
            "memory:alice:s3cret",
            "--allow-plaintext-auth",
            "--preauth-timeout",
            f"{DEADLINE:g}",
            "--close-grace",
            f"{GRACE:g}",
            ports=[port],
        )
        since = time.monotonic()
        idle = connect(port, receiveBuffer=None)
        self.addCleanup(idle.close)
        idle.sendall(b"get a\r\n")
        self.assertEqual(expect(idle, rb"\r\n"), b"CLIENT_ERROR unauthenticated\r\n")
        idle.settimeout(DEADLINE + GRACE + SLACK)
        self.assertEqual(idle.recv(100), b"")
        self.assertLess(time.monotonic() - since, DEADLINE + GRACE + SLACK)
        huge = connect(port, receiveBuffer=None)
        self.addCleanup(huge.close)
        huge.sendall(b"set a 0 0 1000000000\r\n")
        result = flood([huge], [b"x" * 65536], maxBytes=64 * MiB, stall=2.0)
        self.assertIn(result.ended[0], ("reset", "broken pipe"), result.describe())
