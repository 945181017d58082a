"""
Tests for L{netplugins.dns.forward}: np-dns forwarding for C{--recursion-allow}
clients to NSD and to a fake upstream that forges answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rrset
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from netplugins.tap.dns import DNSSettings, dnsService
from tests import dnsfixtures
from tests.dnsfixtures import FILLER, PLAIN, zoneText
from tests.support import freePort


def untimed(rrset: dns.rrset.RRset) -> str:
    """
    An RRset's text without its TTL, which a cache counts down.
    """
    name, _, rest = rrset.to_text().split(" ", 2)
    return f"{name} {rest}"


class ForgingUpstream(DatagramProtocol):
    """
    An upstream that answers each query with forgeries first (a wrong ID,
    the question in other case, a record nobody asked for), then the real
    answer with an extra record outside the question's chain.

    @ivar seen: (ID, source port) of each query.
    """

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        query = dns.message.from_wire(datagram)
        self.seen.append((query.id, addr[1]))
        assert self.transport is not None
        question = query.question[0]
        name = question.name.to_text()

        def answer(ident: int, qname: str, address: str) -> bytes:
            q = dns.message.make_query(qname, question.rdtype)
            reply = dns.message.make_response(q)
            reply.id = ident
            reply.answer = [dns.rrset.from_text(qname, 60, "IN", "A", address)]
            return reply.to_wire()

        self.transport.write(answer(query.id ^ 1, name, "6.6.6.1"), addr)
        self.transport.write(answer(query.id, name.upper(), "6.6.6.2"), addr)
        real = dns.message.make_response(query)
        real.answer = [
            dns.rrset.from_text(question.name, 60, "IN", "A", "192.0.2.1"),
            dns.rrset.from_text("evil.example.", 60, "IN", "A", "6.6.6.3"),
        ]
        real.additional = [
            dns.rrset.from_text("ns.evil.example.", 60, "IN", "A", "6.6.6.4")
        ]
        self.transport.write(real.to_wire(), addr)


class ForwardTests(TestCase):
    """
    np-dns in this process, forwarding over real sockets.
    """

    def serve(self, upstream: int, allow: str = "127.0.0.0/8") -> int:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        zone = directory / "own.zone"
        zone.write_text(zoneText("own.test"))
        port = freePort()
        service = dnsService(
            DNSSettings(
                zone=(f"own.test={zone}",),
                forward=(f"127.0.0.1:{upstream}",),
                recursionAllow=(allow,),
                listen=(
                    f"udp:{port}:interface=127.0.0.1",
                    f"tcp:{port}:interface=127.0.0.1",
                ),
                rrl=0,
            )
        )
        service.startService()
        self.addCleanup(service.stopService)
        return port

    def ask(self, port: int, name: str, rdtype: str = "A") -> Deferred[Any]:
        return deferToThread(
            dns.query.udp,
            dns.message.make_query(name, rdtype),
            "127.0.0.1",
            port=port,
            timeout=10,
        )

    @inlineCallbacks
    def test_forwardsAndCaches(self) -> Any:
        """NSD's answers come with RA, not AA, and from the cache once NSD is gone."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        zone = directory / "plain.zone"
        zone.write_text(zoneText(PLAIN))
        nsd, nsdPort = dnsfixtures.startNSD(self, {PLAIN: zone}, directory)
        port = self.serve(nsdPort)
        first = yield self.ask(port, "www.example.org")
        missing = yield self.ask(port, "nope.example.org")
        nsd.stop()
        again = yield self.ask(port, "www.example.org")
        negative = yield self.ask(port, "nope.example.org")
        own = yield self.ask(port, "www.own.test")
        self.assertEqual(
            [
                (r.rcode(), dns.flags.to_text(r.flags), [untimed(x) for x in r.answer])
                for r in (first, again)
            ],
            [
                (
                    dns.rcode.NOERROR,
                    "QR RD RA",
                    [
                        "www.example.org. IN CNAME web.example.org.",
                        "web.example.org. IN CNAME host1.example.org.",
                        "host1.example.org. IN A 192.0.2.10",
                    ],
                )
            ]
            * 2,
        )
        self.assertTrue(all(0 < x.ttl <= 3600 for x in again.answer))
        self.assertEqual(
            [missing.rcode(), negative.rcode(), own.rcode(), own.flags & dns.flags.AA],
            [dns.rcode.NXDOMAIN, dns.rcode.NXDOMAIN, dns.rcode.NOERROR, dns.flags.AA],
        )

    @inlineCallbacks
    def test_truncatedRetriedOverTCP(self) -> Any:
        """A reply NSD truncates over UDP is fetched over TCP, whole."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        zone = directory / "plain.zone"
        huge = "".join(f'huge IN TXT "{i:02d}{FILLER}"\n' for i in range(20))
        zone.write_text(zoneText(PLAIN) + huge)
        _, nsdPort = dnsfixtures.startNSD(self, {PLAIN: zone}, directory)
        port = self.serve(nsdPort)
        query = dns.message.make_query("huge.example.org", "TXT")
        reply = yield deferToThread(
            dns.query.tcp, query, "127.0.0.1", port=port, timeout=10
        )
        self.assertEqual(reply.rcode(), dns.rcode.NOERROR)
        [rrset] = reply.answer
        self.assertEqual(
            sorted(r.strings[0][:2] for r in rrset),  # type: ignore[attr-defined]
            [b"%02d" % i for i in range(20)],
        )
        # Over UDP without EDNS the client gets TC from the cache's answer.
        small = yield self.ask(port, "huge.example.org", "TXT")
        self.assertTrue(small.flags & dns.flags.TC)

    @inlineCallbacks
    def test_forgeriesIgnored(self) -> Any:
        """Forged IDs, case and off-chain records are ignored; IDs and ports vary."""
        upstream = ForgingUpstream()
        listening = reactor.listenUDP(  # type: ignore[attr-defined]
            0, upstream, interface="127.0.0.1"
        )
        self.addCleanup(listening.stopListening)
        port = self.serve(listening.getHost().port)
        replies = []
        for i in range(12):
            replies.append((yield self.ask(port, f"h{i}.forged.test")))
        self.assertEqual(
            [[x.to_text() for x in r.answer] for r in replies],
            [[f"h{i}.forged.test. 60 IN A 192.0.2.1"] for i in range(12)],
        )
        self.assertEqual([r.additional for r in replies], [[]] * 12)
        self.assertGreater(len({ident for ident, _ in upstream.seen}), 9)
        self.assertGreater(len({source for _, source in upstream.seen}), 9)

    @inlineCallbacks
    def test_refusedOutside(self) -> Any:
        """A client outside --recursion-allow gets REFUSED for other names."""
        upstream = ForgingUpstream()
        listening = reactor.listenUDP(  # type: ignore[attr-defined]
            0, upstream, interface="127.0.0.1"
        )
        self.addCleanup(listening.stopListening)
        port = self.serve(listening.getHost().port, allow="10.0.0.0/8")
        reply = yield self.ask(port, "h.forged.test")
        self.assertEqual((reply.rcode(), upstream.seen), (dns.rcode.REFUSED, []))
