"""
Hostile peers against C{twistd np-zmq}, judged from outside as in
L{tests.test_abuse}: the server's resident memory from C{/proc}, whether it
closed a connection from the client's side of it.

ZeroMQ peers are spoken to with pyzmq where they follow the protocol, and
with raw sockets speaking ZMTP 3.0 by hand (RFC 23/ZMTP) where they do not.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import zmq
from twisted.trial.unittest import SynchronousTestCase

from tests.abuse import MiB, RSSWatch, Server, connect, freePort, startServer

#: The most the server may grow while a peer misbehaves: its queues hold
#: at most a few high-water marks of messages (a broken bound lets a flood
#: take hundreds of MiB).
GROWTH = 24 * MiB

#: A ZMTP 3.0 greeting for the NULL mechanism, as a client (RFC 23).
GREETING = (
    b"\xff" + b"\x00" * 8 + b"\x7f"  # signature
    + b"\x03\x00"  # version 3.0
    + b"NULL".ljust(20, b"\x00")  # mechanism
    + b"\x00"  # as-server
    + b"\x00" * 31  # filler
)  # fmt: skip


def ready(socketType: bytes) -> bytes:
    """
    The NULL mechanism's READY command for a peer of C{socketType}.
    """
    body = (
        b"\x05READY"
        + b"\x0bSocket-Type"
        + struct.pack(">I", len(socketType))
        + socketType
    )
    return b"\x04" + bytes([len(body)]) + body


def closedByServer(sock: socket.socket, timeout: float) -> float | None:
    """
    Seconds until the server closed C{sock} (EOF or reset while reading
    what it sends), or C{None} if it had not after C{timeout}.
    """
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionError:
            return time.monotonic() - started
    return None


class ZMQAbuseTests(SynchronousTestCase):
    """
    C{twistd np-zmq} with peers that never read, lie about frame sizes or
    stall their handshake.
    """

    def serve(self, device: str, *args: str) -> tuple[int, int, Server]:
        """
        Run np-zmq's C{device} on two free loopback ports with C{args}.
        """
        front, back = freePort(), freePort()
        server = startServer(
            self,
            "np-zmq",
            "--device", device,
            "--frontend", f"tcp://127.0.0.1:{front}",
            "--backend", f"tcp://127.0.0.1:{back}",
            *args,
            ports=[front, back],
        )  # fmt: skip
        return front, back, server

    def context(self) -> zmq.Context[Any]:
        context: zmq.Context[Any] = zmq.Context()
        self.addCleanup(context.destroy, linger=0)
        return context

    def test_consumerNeverReads(self) -> None:
        """A producer floods 100 kB messages at a consumer that never reads: bounded."""
        front, back, server = self.serve("streamer", "--hwm", "10")
        context = self.context()
        consumer = context.socket(zmq.PULL)
        consumer.setsockopt(zmq.RCVHWM, 1)
        consumer.setsockopt(zmq.RCVBUF, 4096)
        consumer.connect(f"tcp://127.0.0.1:{back}")
        producer = context.socket(zmq.PUSH)
        producer.setsockopt(zmq.SNDHWM, 10)
        producer.connect(f"tcp://127.0.0.1:{front}")
        watch = RSSWatch(server)
        message = b"m" * 100_000
        sent, stalledSince = 0, None
        deadline = time.monotonic() + 20
        # Push until the producer has been blocked for a second: the
        # device stopped reading it.
        while time.monotonic() < deadline and not watch.runaway:
            try:
                producer.send(message, zmq.NOBLOCK)
                sent, stalledSince = sent + 1, None
            except zmq.Again:
                now = time.monotonic()
                stalledSince = stalledSince or now
                if now - stalledSince > 1:
                    break
                time.sleep(0.01)
            if sent % 100 == 0:
                watch.sample()
        watch.sample()
        self.assertIsNotNone(stalledSince, f"{sent} messages taken, never blocked")
        self.assertLess(sent, 2000, "the device kept reading its producer")
        self.assertLess(watch.growth, GROWTH, watch.describe())
        # Once the consumer reads, everything the producer queued arrives.
        consumer.setsockopt(zmq.RCVTIMEO, 10_000)
        for _ in range(sent):
            self.assertEqual(len(consumer.recv()), len(message))
        self.assertTrue(server.running())

    def test_frameLargerThanAllowed(self) -> None:
        """A frame announced at 1 GiB: connection closed at its header, no growth."""
        front, _, server = self.serve("streamer", "--max-message-size", "65536")
        watch = RSSWatch(server)
        closed: list[float | None] = []
        for _ in range(5):
            sock = connect(front, receiveBuffer=None)
            sock.sendall(GREETING + ready(b"PUSH"))
            # A long frame (flag 0x02), no more parts, 2**30 octets.
            sock.sendall(b"\x02" + struct.pack(">Q", 2**30))
            sent = 0
            try:
                while sent < 64 * MiB:
                    sent += sock.send(b"\x00" * 65536)
                    watch.sample()
            except OSError:
                pass  # the server closed the connection under our feet
            closed.append(closedByServer(sock, 5))
            sock.close()
            self.assertLess(sent, 64 * MiB, "the server kept reading the frame")
        watch.sample()
        self.assertNotIn(None, closed)
        self.assertLess(watch.growth, GROWTH, watch.describe())
        self.assertTrue(server.running())

    def test_stalledHandshakes(self) -> None:
        """Peers that send half a greeting are cut off at --preauth-timeout."""
        front, back, server = self.serve("queue", "--preauth-timeout", "1")
        watch = RSSWatch(server)
        socks = []
        for index in range(200):
            sock = connect(front if index % 2 else back)
            sock.sendall(GREETING[:10])
            socks.append(sock)
        watch.sample()
        started = time.monotonic()
        waited = [closedByServer(sock, 5) for sock in socks]
        self.assertNotIn(None, waited)
        self.assertLess(time.monotonic() - started, 5)
        for sock in socks:
            sock.close()
        watch.sample()
        self.assertLess(watch.growth, GROWTH, watch.describe())
        # A peer that follows the protocol is served meanwhile.
        context = self.context()
        client = context.socket(zmq.REQ)
        client.setsockopt(zmq.RCVTIMEO, 10_000)
        client.connect(f"tcp://127.0.0.1:{front}")
        worker = context.socket(zmq.REP)
        worker.setsockopt(zmq.RCVTIMEO, 10_000)
        worker.connect(f"tcp://127.0.0.1:{back}")
        client.send(b"ping")
        worker.send(worker.recv())
        self.assertEqual(client.recv(), b"ping")
