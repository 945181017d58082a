"""
np-memcache against memcached clients nobody here wrote: pymemcache (over TCP
and TLS), Twisted's own L{MemCacheProtocol}, libmemcached's C{memccapable -a},
a stdlib TLS socket logging in with memcached's ASCII authentication, and the
book's chapter 8 C{squares.py} as printed.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
from typing import Any

from pymemcache.client.base import Client
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ClientCreator
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.protocols.memcache import MemCacheProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.service import ListeningService
from netplugins.tap.memcache import MemcacheSettings, memcacheService
from tests.pki import PKI
from tests.support import ROOT, TWISTD, startProcess

#: Foundations of Python Network Programming, 3rd ed., chapter 8,
#: C{py3/chapter08/squares.py}, as printed.
SQUARES = textwrap.dedent(
    """\
    #!/usr/bin/env python3
    # Foundations of Python Network Programming, Third Edition
    # https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter08/squares.py
    # Using memcached to cache expensive results.

    import memcache, random, time, timeit
    mc = memcache.Client(['127.0.0.1:11211'])

    def compute_square(n):
        value = mc.get('sq:%d' % n)
        if value is None:
            time.sleep(0.001)  # pretend that computing a square is expensive
            value = n * n
            mc.set('sq:%d' % n, value)
        return value

    def make_request():
        compute_square(random.randint(0, 5000))

    print('Ten successive runs:', end=' ')
    for i in range(1, 11):
        print('%.2fs' % timeit.timeit(make_request, number=2000), end=' ')
    print()
    """
)


class _Served:
    """
    Start np-memcache in this process for a test.
    """

    def start(self: Any, **kwargs: Any) -> int:
        """
        Start C{memcacheService(MemcacheSettings(**kwargs))}; return its
        first port.
        """
        kwargs.setdefault("listen", ["tcp:0:interface=127.0.0.1"])
        kwargs.setdefault("stateDir", os.path.abspath(self.mktemp()))
        service = memcacheService(MemcacheSettings(**kwargs))
        service.startService()
        self.addCleanup(service.stopService)
        port: Any = next(s for s in service if isinstance(s, ListeningService)).port
        return int(port.getHost().port)


def _pymemcacheSession(client: Client) -> list[Any]:
    """
    The pymemcache calls the tests check, and their results.
    """
    results: list[Any] = []
    client.flush_all()
    results.append(client.set(b"k", b"value", noreply=False))
    results.append(client.get(b"k"))
    results.append(client.get_many([b"k", b"missing"]))
    results.append(client.add(b"k", b"other", noreply=False))
    results.append(client.replace(b"k", b"v2", noreply=False))
    results.append(client.append(b"k", b"+", noreply=False))
    results.append(client.prepend(b"k", b"-", noreply=False))
    value, cas = client.gets(b"k")
    results.append(value)
    results.append(client.cas(b"k", b"new", cas, noreply=False))
    results.append(client.cas(b"k", b"old", cas, noreply=False))
    client.set(b"n", b"41")
    results.append(client.incr(b"n", 1))
    results.append(client.decr(b"n", 50))
    results.append(client.touch(b"k", 100, noreply=False))
    results.append(client.delete(b"k", noreply=False))
    results.append(client.get(b"k"))
    results.append(client.set(b"big", b"x" * 500_000, noreply=False))
    results.append(len(client.get(b"big")))
    results.append(int(client.stats()[b"curr_items"]))
    client.close()
    return results


_EXPECTED = [
    True,
    b"value",
    {b"k": b"value"},
    False,
    True,
    True,
    True,
    b"-v2+",
    True,
    False,
    42,
    0,
    True,
    True,
    None,
    True,
    500_000,
    2,
]


class RealClientTests(_Served, TestCase):
    """
    Third-party clients over real sockets.
    """

    def test_pymemcache(self) -> Deferred[None]:
        """pymemcache's commands all work as against memcached."""
        port = self.start()
        client = Client(("127.0.0.1", port), timeout=10)
        d = deferToThread(_pymemcacheSession, client)
        return d.addCallback(self.assertEqual, _EXPECTED)

    def test_pymemcacheTLS(self) -> Deferred[None]:
        """pymemcache's TLS support against --listen-tls, verifying the
        certificate."""
        pki = PKI(os.path.abspath(self.mktemp()))
        cert, key = pki.serverCertificate("localhost", "127.0.0.1")
        port = self.start(
            listen=[],
            listenTLS=["tcp:0:interface=127.0.0.1"],
            tlsCert=[cert],
            tlsKey=[key],
        )
        context = ssl.create_default_context(cafile=pki.caPath)
        client = Client(("127.0.0.1", port), timeout=10, tls_context=context)
        d = deferToThread(_pymemcacheSession, client)
        return d.addCallback(self.assertEqual, _EXPECTED)

    def test_asciiAuthOverTLS(self) -> Deferred[None]:
        """Over TLS, memcached's ASCII authentication set logs in through
        --auth checkers; a wrong password gets memcached's error."""
        pki = PKI(os.path.abspath(self.mktemp()))
        cert, key = pki.serverCertificate("localhost", "127.0.0.1")
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"s3cret")
        port = self.start(
            listen=[],
            listenTLS=["tcp:0:interface=127.0.0.1"],
            tlsCert=[cert],
            tlsKey=[key],
            checkers=[checker],
        )
        context = ssl.create_default_context(cafile=pki.caPath)

        def session() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"get a\r\nset x 0 0 12\r\nalice s3cret\r\n")
                    return _readUntil(tls, b"STORED\r\n")

        return deferToThread(session).addCallback(
            self.assertEqual, b"CLIENT_ERROR unauthenticated\r\nSTORED\r\n"
        )

    @inlineCallbacks
    def test_twistedMemCacheProtocol(self) -> Any:
        """Twisted's own memcache client: set, get, gets/checkAndSet,
        increment, getMultiple, delete, stats and version."""
        port = self.start()
        client = yield ClientCreator(reactor, MemCacheProtocol).connectTCP(
            "127.0.0.1", port
        )
        self.addCleanup(client.transport.loseConnection)
        self.assertTrue((yield client.set(b"a", b"1", flags=3)))
        self.assertEqual((yield client.get(b"a")), (3, b"1"))
        _, cas, _ = yield client.get(b"a", withIdentifier=True)
        self.assertTrue((yield client.checkAndSet(b"a", b"10", cas)))
        self.assertFalse((yield client.checkAndSet(b"a", b"11", cas)))
        self.assertEqual((yield client.increment(b"a", 5)), 15)
        self.assertEqual((yield client.decrement(b"a", 20)), 0)
        self.assertEqual(
            (yield client.getMultiple([b"a", b"b"])),
            {b"a": (0, b"0 "), b"b": (0, None)},
        )
        self.assertTrue((yield client.delete(b"a")))
        self.assertFalse((yield client.delete(b"a")))
        stats = yield client.stats()
        self.assertIn(b"curr_items", stats)
        version = yield client.version()
        self.assertTrue(version.startswith(b"1.6"))

    def test_memccapable(self) -> Deferred[None]:
        """libmemcached's memccapable -a passes every ASCII protocol test."""
        port = self.start()
        program = shutil.which("memccapable")
        self.assertIsNotNone(program, "memccapable (libmemcached-tools) not found")
        assert program is not None
        d = getProcessOutputAndValue(
            program, ["-h", "127.0.0.1", "-p", str(port), "-a", "-t", "10"]
        )

        def check(result: tuple[bytes, bytes, int]) -> None:
            out, err, code = result
            self.assertEqual(code, 0, out + err)
            self.assertIn(b"All tests passed", out)
            self.assertNotIn(b"[fail]", out)

        return d.addCallback(check)


def _readUntil(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class BookTests(SynchronousTestCase):
    """
    The book's chapter 8 client, unmodified.
    """

    def test_squares(self) -> None:
        """squares.py as printed caches through np-memcache on 127.0.0.1:11211:
        later runs are faster than the first."""
        # The program's address is fixed.  It runs with np-memcache in a
        # network namespace of its own, where 127.0.0.1:11211 is free whatever
        # this machine runs; without unshare, on this machine's port 11211 if
        # nothing else listens there.
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        program = os.path.join(directory, "squares.py")
        with open(program, "w") as f:
            f.write(SQUARES)
        twistd = (
            f"{sys.executable} {TWISTD} -n --pidfile= --logfile=twistd.log "
            "np-memcache --listen tcp:11211:interface=127.0.0.1 "
            f"--state-dir {directory}"
        )
        script = (
            f"{twistd} & server=$!; "
            f"{sys.executable} -c 'from tests.support import waitForPort; "
            "waitForPort(11211)' && "
            f"{sys.executable} squares.py; status=$?; kill $server; wait; exit $status"
        )
        unshare = shutil.which("unshare")
        if unshare is not None and _namespacesWork(unshare):
            argv = [unshare, "-rn", "sh", "-c", "ip link set lo up && " + script]
        else:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", 11211)) == 0:
                    self.fail(
                        "squares.py needs 127.0.0.1:11211, which is taken, and "
                        "unshare -rn (a network namespace) does not work here"
                    )
            argv = ["sh", "-c", script]
        process = startProcess(
            self, argv, cwd=directory, env={"PYTHONPATH": str(ROOT)}, name="squares"
        )
        process.wait(120)
        output = process.output()
        self.assertEqual(process.returncode, 0, output)
        line = next(
            line for line in output.splitlines() if line.startswith("Ten successive")
        )
        times = [float(t.rstrip("s")) for t in line.split(":")[1].split()]
        self.assertEqual(len(times), 10)
        # The first run computes most squares; by the last most are cached.
        self.assertLess(times[-1], times[0])


def _namespacesWork(unshare: str) -> bool:
    return (
        subprocess.run(
            [unshare, "-rn", "sh", "-c", "ip link set lo up"],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
