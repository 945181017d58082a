"""
Hostile clients against C{twistd np-dns} (the abuse suite's machinery,
L{tests.test_abuse.AbuseTestCase}): DNS over TCP, and over TLS (any stream
endpoint of the shared layer), pipelining queries it never reads, idling,
stalling a TLS handshake, sending a frame that never completes; over UDP,
datagrams from ports that answer back, and junk.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path
from typing import ClassVar

import dns.message
import dns.rcode

from tests.abuse import freePort
from tests.dnsfixtures import PLAIN, zoneText
from tests.test_abuse import AbuseTestCase, _listen


def framed(name: str, rdtype: str) -> bytes:
    """
    A DNS query as DNS over TCP frames it: two length bytes, the message.
    """
    wire = dns.message.make_query(name, rdtype).to_wire()
    return struct.pack("!H", len(wire)) + wire


class DNSAbuseTests(AbuseTestCase):
    """
    C{twistd np-dns}.
    """

    tapname: ClassVar[str] = "np-dns"

    def options(self) -> list[str]:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        zone = directory / "z.zone"
        zone.write_text(zoneText(PLAIN))
        return ["--zone", f"{PLAIN}={zone}"]

    def test_neverReads(self) -> None:
        """Pipelined queries for a 1 KiB answer never read, TCP and TLS: bounded."""
        port, tlsPort, server = self.serveBoth()
        self.assertNeverReadsBounded(
            server, port, tlsPort, [framed("big.example.org", "TXT") * 2000]
        )

    def test_stalledTLS(self) -> None:
        """A TLS handshake with no bytes, or half a ClientHello, is cut off."""
        self.checkStalledTLS()

    def test_deadlines(self) -> None:
        """--idle-timeout closes idle, backed-up and half-framed connections."""
        port, tlsPort = self.serveShortDeadlines()
        self.assertDeadlinesClose(
            port,
            tlsPort,
            framed("big.example.org", "TXT") * 500,
            trickled=[("half frame", b"\xff\xff", b"x" * 100)],
        )

    def test_udpIgnoredPortsAndJunk(self) -> None:
        """From port 7: nothing; junk: FORMERR or nothing; queries still answered."""
        port = freePort()
        self.serve(
            "--listen", f"udp:{port}:interface=127.0.0.1",
            "--listen", _listen(port),
            ports=[port],
        )  # fmt: skip
        query = framed("www.example.org", "A")[2:]
        echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(echo.close)
        try:
            echo.bind(("127.0.0.1", 7))
        except PermissionError:
            self.fail("binding port 7 needs root, as the suite runs")
        echo.settimeout(1)
        echo.sendto(query, ("127.0.0.1", port))
        self.assertRaises(TimeoutError, echo.recv, 4096)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.settimeout(5)
        rcodes = []
        for junk in (b"\x00" * 65000, b"\x12\x34" + b"\xff" * 30, b"\x00\x01\x00"):
            client.sendto(junk, ("127.0.0.1", port))
        client.sendto(query, ("127.0.0.1", port))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            reply = client.recv(65535)
            rcodes.append(struct.unpack("!H", reply[2:4])[0] & 0xF)
            if reply[:2] == query[:2]:
                break
        self.assertEqual(rcodes[-1], dns.rcode.NOERROR)
        self.assertTrue(all(r == dns.rcode.FORMERR for r in rcodes[:-1]), rcodes)
