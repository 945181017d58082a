"""
Tests for L{netplugins.addresses}: addresses as text, so that log events keep
them through C{twistd --logger}'s JSON output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.address import (
    HostnameAddress,
    IPv4Address,
    IPv6Address,
    UNIXAddress,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, eventAsJSON, eventFromJSON
from twisted.trial.unittest import SynchronousTestCase

from netplugins.addresses import describe
from netplugins.cred.hmac import KeyFile
from netplugins.hmacwrap import HMACFactory
from netplugins.limits.settings import Limits, parseNetwork
from netplugins.limits.tracker import ConnectionTracker
from netplugins.tls.identity import TLSSettings
from netplugins.tls.server import ServerTLS
from tests.pki import PKI

PEER4 = IPv4Address("TCP", "192.0.2.7", 40000)
PEER6 = IPv6Address("TCP", "2001:db8::7", 40001)


def roundTrip(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """
    The C{peer} fields of C{events} after JSON serialisation and back.
    """
    return [eventFromJSON(eventAsJSON(dict(e)))["peer"] for e in events if "peer" in e]


class DescribeTests(SynchronousTestCase):
    def test_ip(self) -> None:
        """IPv4 is host:port, IPv6 is [host]:port."""
        self.assertEqual(
            (describe(PEER4), describe(PEER6)),
            ("192.0.2.7:40000", "[2001:db8::7]:40001"),
        )

    def test_unix(self) -> None:
        """A UNIX socket is its path, as text; an unnamed one says so."""
        self.assertEqual(
            [
                describe(UNIXAddress("/run/np.sock")),
                describe(UNIXAddress(b"/run/np.sock")),
                describe(UNIXAddress(None)),
            ],
            ["/run/np.sock", "/run/np.sock", "unix socket"],
        )

    def test_other(self) -> None:
        """A host name address is name:port; anything else is its str()."""
        self.assertEqual(
            (describe(HostnameAddress(b"example.com", 25)), describe("x")),
            ("example.com:25", "x"),
        )


class JSONLogTests(SynchronousTestCase):
    def test_limitsRefusal(self) -> None:
        """A refused connection's peer survives the JSON log."""
        tracker = ConnectionTracker(
            Limits(deny=(parseNetwork("192.0.2.0/24"),)), reactor=Clock()
        )
        wrapped = tracker.wrapFactory(Factory.forProtocol(Protocol))
        with capturedLogs() as events:
            protocol = wrapped.buildProtocol(PEER4)
            assert protocol is not None
            protocol.makeConnection(StringTransport(peerAddress=PEER4))
        self.assertEqual(roundTrip(events), ["192.0.2.7:40000"])

    def test_hmacFailure(self) -> None:
        """A failed HMAC handshake's peer survives the JSON log."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"alice:secret\n")
        factory = HMACFactory(
            Factory.forProtocol(Protocol), KeyFile(path), clock=Clock()
        )
        protocol = factory.buildProtocol(PEER6)
        transport = StringTransport(peerAddress=PEER6)
        protocol.makeConnection(transport)
        with capturedLogs() as events:
            protocol.dataReceived(b"\x00" * 64)
        self.assertEqual(roundTrip(events), ["[2001:db8::7]:40001"])

    def test_tlsHandshake(self) -> None:
        """A TLS handshake timeout's peer survives the JSON log."""
        pki = PKI(self.mktemp())
        clock = Clock()
        serverTLS = ServerTLS(
            TLSSettings(certificates=(pki.serverCertificate("a.example"),)), clock
        )
        factory = serverTLS.wrapFactory(Factory.forProtocol(Protocol), clock)
        protocol = factory.buildProtocol(PEER4)
        assert protocol is not None
        protocol.makeConnection(StringTransport(peerAddress=PEER4))
        with capturedLogs() as events:
            clock.advance(serverTLS.handshakeTimeout)
        self.assertEqual(roundTrip(events), ["192.0.2.7:40000"])
