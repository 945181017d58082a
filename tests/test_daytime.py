"""
Tests for L{netplugins.daytime} and L{netplugins.tap.daytime}.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import (
    FakeDatagramTransport,
    MemoryReactorClock,
    StringTransport,
)
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.daytime import (
    RFC868_OFFSET,
    DaytimeDatagram,
    DaytimeFactory,
    timeString,
)
from netplugins.service import DatagramService, ListeningService
from netplugins.tap.daytime import DaytimeSettings, Options, daytimeService, makeService

# 2024-02-29 13:05:09 UTC, a Thursday.
WHEN = 1709211909.75


class TimeStringTests(SynchronousTestCase):
    """
    L{timeString} renders the three formats.
    """

    def test_formats(self) -> None:
        """ctime and rfc3339 are UTC text plus CRLF; rfc868 is 4 bytes since 1900."""
        self.assertEqual(
            [timeString(f, WHEN) for f in ["ctime", "rfc3339", "rfc868"]],
            [
                b"Thu Feb 29 13:05:09 2024\r\n",
                b"2024-02-29T13:05:09Z\r\n",
                struct.pack("!I", 1709211909 + 2208988800),
            ],
        )

    def test_ctimeLayout(self) -> None:
        """ctime has time.ctime()'s layout (space-padded day) in UTC."""
        self.assertEqual(timeString("ctime", 0), b"Thu Jan  1 00:00:00 1970\r\n")

    def test_rfc868Wraps(self) -> None:
        """After 2036-02-07 06:28:16 UTC the 32-bit field wraps to 0, not fails."""
        self.assertEqual(
            timeString("rfc868", 2**32 - RFC868_OFFSET + 5), struct.pack("!I", 5)
        )

    def test_unknown(self) -> None:
        """An unknown format is a ValueError naming it."""
        with self.assertRaises(ValueError) as e:
            timeString("iso", 0)
        self.assertIn("'iso'", str(e.exception))


class ProtocolTests(SynchronousTestCase):
    """
    TCP: send the time and close; UDP: one datagram back per datagram.
    """

    def test_tcp(self) -> None:
        """A connection gets the time and is closed by the server."""
        factory = DaytimeFactory("rfc3339", lambda: WHEN)
        factory.reactor = Clock()
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(
            (transport.value(), transport.disconnecting, transport.disconnected),
            (b"2024-02-29T13:05:09Z\r\n", True, False),
        )

    def test_lingeringCloseAborted(self) -> None:
        """A connection still open closeGrace seconds after the time is aborted."""
        factory = DaytimeFactory("rfc3339", lambda: WHEN)
        factory.reactor = clock = Clock()
        factory.closeGrace = 2
        transport = StringTransport()
        factory.buildProtocol(None).makeConnection(transport)
        clock.advance(2)
        self.assertTrue(transport.disconnected)

    def test_clockReadPerConnection(self) -> None:
        """Each connection reads the clock when it is made."""
        now = [WHEN]
        factory = DaytimeFactory("rfc868", lambda: now[0])
        factory.reactor = Clock()
        replies = []
        for _ in range(2):
            transport = StringTransport()
            factory.buildProtocol(None).makeConnection(transport)
            replies.append(struct.unpack("!I", transport.value())[0])
            now[0] += 60
        self.assertEqual(replies[1] - replies[0], 60)

    def test_datagrams(self) -> None:
        """Empty and non-empty datagrams each get one reply, to their sender."""
        protocol = DaytimeDatagram("ctime", lambda: WHEN)
        transport = FakeDatagramTransport()
        protocol.transport = transport
        protocol.datagramReceived(b"", ("10.0.0.1", 5000))
        protocol.datagramReceived(b"x" * 1000, ("10.0.0.2", 6000))
        reply = b"Thu Feb 29 13:05:09 2024\r\n"
        self.assertEqual(
            transport.written,
            [(reply, ("10.0.0.1", 5000)), (reply, ("10.0.0.2", 6000))],
        )

    def test_badFormat(self) -> None:
        """Factories refuse an unknown format when made, not when serving."""
        self.assertRaises(ValueError, DaytimeFactory, "iso")
        self.assertRaises(ValueError, DaytimeDatagram, "iso")


class OptionsTests(SynchronousTestCase):
    """
    C{twistd np-daytime}'s options.
    """

    def test_format(self) -> None:
        """--format picks the format."""
        config = Options()
        config.parseOptions(["--format", "rfc868"])
        self.assertEqual(config["format"], "rfc868")

    def test_default(self) -> None:
        """The default is ctime, on TCP and UDP port 1313 of 127.0.0.1."""
        config = Options()
        config.parseOptions([])
        self.assertEqual(
            (config["format"], config.defaultListen),
            ("ctime", ("tcp:1313:interface=127.0.0.1", "udp:1313:interface=127.0.0.1")),
        )

    def test_badFormat(self) -> None:
        """An unknown format is a one-line usage error listing the choices."""
        with self.assertRaises(usage.UsageError) as e:
            Options().parseOptions(["--format", "iso"])
        self.assertEqual(
            str(e.exception),
            "Parameter type enforcement failed: "
            "--format must be one of ctime, rfc3339, rfc868, not 'iso'",
        )

    def test_helpSaysUTC(self) -> None:
        """--help says the ctime format is in UTC and lists the default listeners."""
        text = " ".join(str(Options()).split())
        self.assertEqual(
            ["like time.ctime() but in UTC" in text, "udp:1313:interface" in text],
            [True, True],
        )


class UDPMemoryReactor(MemoryReactorClock):
    """
    A memory reactor that also records C{listenUDP} calls (Twisted's has none).
    """

    def __init__(self) -> None:
        super().__init__()
        self.udpServers: list[tuple[int, Any, str, int]] = []

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> Any:
        self.udpServers.append((port, protocol, interface, maxPacketSize))
        return _UDPPort(IPv4Address("UDP", interface, port))


class _UDPPort:
    def __init__(self, address: IPv4Address):
        self.address = address

    def getHost(self) -> IPv4Address:
        return self.address

    def stopListening(self) -> None:
        pass


class ServiceTests(SynchronousTestCase):
    """
    L{makeService} listens on TCP and UDP, with the reactor as its clock.
    """

    def test_default(self) -> None:
        """By default: TCP and UDP port 1313 on 127.0.0.1."""
        config = Options()
        config.parseOptions([])
        reactor = UDPMemoryReactor()
        makeService(config, reactor=reactor).startService()
        self.assertEqual(
            (
                [(port, interface) for port, _, _, interface in reactor.tcpServers],
                [(port, interface) for port, _, interface, _ in reactor.udpServers],
            ),
            ([(1313, "127.0.0.1")], [(1313, "127.0.0.1")]),
        )

    def test_severalUDPPorts(self) -> None:
        """Each udp: listener gets its own datagram protocol."""
        reactor = UDPMemoryReactor()
        daytimeService(
            DaytimeSettings(listen=("udp:13", "udp:1313:interface=0.0.0.0")),
            reactor=reactor,
        ).startService()
        self.assertEqual(
            [(port, interface) for port, _, interface, _ in reactor.udpServers],
            [(13, ""), (1313, "0.0.0.0")],
        )

    def test_reactorIsTheClock(self) -> None:
        """The time served is the given reactor's."""
        reactor = MemoryReactorClock()
        reactor.advance(WHEN)
        daytimeService(
            DaytimeSettings(format="rfc3339", listen=("tcp:13",)), reactor=reactor
        ).startService()
        factory = reactor.tcpServers[0][1]
        transport = StringTransport()
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        assert protocol is not None
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), b"2024-02-29T13:05:09Z\r\n")


def cookbookClient(port: int) -> bytes:
    """
    The Python Cookbook's UDP time client (3rd ed., recipe 11.2), as printed
    but for a timeout.
    """
    from socket import AF_INET, SOCK_DGRAM, socket

    s = socket(AF_INET, SOCK_DGRAM)
    s.settimeout(5)
    try:
        s.sendto(b"", ("localhost", port))
        return s.recvfrom(8192)[0]
    finally:
        s.close()


def tcpClient(port: int) -> bytes:
    """
    Connect and read until the server closes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


class RealSocketTests(TestCase):
    """
    Stdlib clients over real TCP and UDP sockets on 127.0.0.1.
    """

    def listen(self, format: str) -> tuple[int, int]:
        """
        Start the service on ephemeral TCP and UDP ports; return them.
        """
        service = daytimeService(
            DaytimeSettings(
                format=format,
                listen=("tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"),
            )
        )
        service.startService()
        self.addCleanup(service.stopService)
        ports = {type(s): s.port.getHost().port for s in service}  # type: ignore[attr-defined]
        return ports[ListeningService], ports[DatagramService]

    def test_cookbookUDP(self) -> Deferred[None]:
        """The Cookbook's sendto(b'') gets today's time string in UTC."""
        _, udp = self.listen("ctime")

        def check(reply: bytes) -> None:
            served = time.mktime(
                time.strptime(reply.decode(), "%a %b %d %H:%M:%S %Y\r\n")
            )
            self.assertAlmostEqual(served - time.mktime(time.gmtime()), 0, delta=5)

        return deferToThread(cookbookClient, udp).addCallback(check)

    def test_tcpCtime(self) -> Deferred[None]:
        """A TCP client reads one CRLF-terminated time string, then EOF."""
        tcp, _ = self.listen("ctime")

        def check(reply: bytes) -> None:
            self.assertEqual(
                (len(reply), reply.endswith(b"\r\n"), reply.count(b"\r\n")),
                (26, True, 1),
            )

        return deferToThread(tcpClient, tcp).addCallback(check)

    def test_rfc868(self) -> Deferred[None]:
        """RFC 868 over TCP and UDP: 4 bytes, seconds since 1900, now."""
        tcp, udp = self.listen("rfc868")
        d = deferToThread(lambda: [tcpClient(tcp), cookbookClient(udp)])

        def check(replies: list[bytes]) -> None:
            now = time.time() + RFC868_OFFSET
            self.assertEqual(
                [abs(struct.unpack("!I", r)[0] - now) < 5 for r in replies],
                [True, True],
            )

        return d.addCallback(check)
