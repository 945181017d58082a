"""
Syscalls per request: an echo server on the write-through transport runs
under C{strace -f -c} while a client does ping-pongs, so a change that brings
back C{epoll_ctl} churn (or any other per-request syscall) fails here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import Counter

from twisted.trial.unittest import TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVER = """
import sys
sys.path.insert(0, {root!r})
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from netplugins.transport import fastServerFromString

class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)
    def connectionLost(self, reason):
        reactor.stop()

def listening(port):
    print(port.getHost().port, flush=True)

if {fast!r}:
    d = fastServerFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        Factory.forProtocol(Echo))
    d.addCallback(listening)
else:
    listening(reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1"))
reactor.run()
"""


def tracedRun(requests: int, fast: bool = True, size: int = 1024) -> Counter[str]:
    """
    Run the echo server under strace, do C{requests} ping-pongs of C{size}
    bytes from one connection, and return the server's syscall counts.
    """
    report = os.path.abspath(f"strace-{requests}-{fast}.txt")
    program = SERVER.format(root=ROOT, fast=fast)
    server = subprocess.Popen(
        ["strace", "-f", "-c", "-o", report, sys.executable, "-c", program],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        message = b"m" * size
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(requests):
                client.sendall(message)
                received = 0
                while received < size:
                    chunk = client.recv(size - received)
                    assert chunk, "server closed"
                    received += len(chunk)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    counts: Counter[str] = Counter()
    with open(report) as f:
        for line in f:
            parts = line.split()
            # "% time  seconds  usecs/call  calls  [errors]  syscall"
            if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
                counts[parts[-1]] += int(parts[3])
    assert counts, f"no strace summary in {report}"
    return counts


class SyscallTests(TestCase):
    """
    The ping-pong path of the write-through transport, counted by strace.
    """

    def perRequest(self, size: int, few: int, many: int) -> dict[str, float]:
        """
        Syscalls per ping-pong of C{size} bytes: the difference between a run
        of C{many} and one of C{few} requests, so start-up cancels out.
        """
        small = tracedRun(few, size=size)
        large = tracedRun(many, size=size)
        return {
            name: (large[name] - small[name]) / (many - few)
            for name in large
            if large[name] - small[name] > 0
        }

    def test_perRequest(self) -> None:
        """A 1 KiB ping-pong costs no epoll_ctl, no mmap and at most four syscalls."""
        # Per 1 KiB ping-pong the server makes no epoll_ctl call and at most four
        # syscalls (epoll_wait, recv, send, and slack for one more); in particular no
        # mmap/munmap for its read buffer.
        counts = self.perRequest(1024, 100, 2100)
        self.assertLess(counts.get("epoll_ctl", 0), 0.01, counts)
        self.assertLessEqual(sum(counts.values()), 4, counts)

    def test_perLargeRequest(self) -> None:
        """A 64 KiB message is one recv and one send: still at most four syscalls."""
        # A 64 KiB message is read by one recv and answered by one send: still no
        # epoll_ctl and at most four syscalls per ping-pong.
        counts = self.perRequest(65536, 100, 1100)
        self.assertLess(counts.get("epoll_ctl", 0), 0.01, counts)
        self.assertLessEqual(sum(counts.values()), 4, counts)

    def test_twistedChurns(self) -> None:
        """The check can fail: Twisted's own transport calls epoll_ctl per request."""
        requests = 500
        counts = tracedRun(requests, fast=False)
        self.assertGreaterEqual(counts["epoll_ctl"], requests, counts)
