"""
Tests for L{netplugins.dns} and L{netplugins.tap.dns}: answers in memory,
then np-dns over real sockets against dig, kdig, dnspython (the book's
chapter 4 programs) and NSD.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.dns import server
from netplugins.dns.rrl import DROP, SEND, SLIP, ResponseRateLimiter, sourceNetwork
from netplugins.dns.server import DNSStream, DNSStreamFactory, Engine
from netplugins.dns.zone import ZoneError, loadZone
from netplugins.dns.zonefiles import ZoneFile, ZoneFiles
from netplugins.tap.dns import DNSSettings, Options, dnsService, makeService
from tests import dnsfixtures
from tests.dnsfixtures import PLAIN, need, questions, writeZones, zoneText
from tests.support import WatermarkTransport, freePort, runTwistd, waitForPort


def makeEngine(testCase: Any, **kwargs: Any) -> Engine:
    """
    An engine serving the plain test zone (and more, as C{kwargs} say).
    """
    directory = Path(testCase.mktemp())
    directory.mkdir()
    path = directory / "plain.zone"
    path.write_text(zoneText(PLAIN))
    engine = Engine(**kwargs)
    engine.setZone(loadZone(PLAIN, str(path)))
    return engine


def ask(
    engine: Engine, query: dns.message.Message | bytes, tcp: bool = False
) -> list[bytes]:
    """
    The replies C{engine} sends to C{query}, as bytes.
    """
    replies: list[bytes] = []
    data = query if isinstance(query, bytes) else query.to_wire()
    engine.handle(data, "192.0.2.7", tcp, replies.append)
    return replies


def askMessage(
    engine: Engine, query: dns.message.Message, tcp: bool = False
) -> dns.message.Message:
    """
    The one reply C{engine} sends to C{query}, parsed.
    """
    [reply] = ask(engine, query, tcp)
    return dns.message.from_wire(reply)


def query(name: str, rdtype: str, **kwargs: Any) -> dns.message.Message:
    """
    A non-recursive query.
    """
    message = dns.message.make_query(name, rdtype, **kwargs)
    message.flags &= ~dns.flags.RD
    return message


class AnswerTests(SynchronousTestCase):
    """
    The engine answers from the zone as RFC 1034 section 4.3.2 says.
    """

    def setUp(self) -> None:
        self.engine = makeEngine(self)

    def test_cnameChain(self) -> None:
        """A CNAME chain is followed within the zone, authoritatively."""
        reply = askMessage(self.engine, query("www.example.org", "A"))
        self.assertEqual(
            (
                reply.rcode(),
                bool(reply.flags & dns.flags.AA),
                [r.to_text() for r in reply.answer],
            ),
            (
                dns.rcode.NOERROR,
                True,
                [
                    "www.example.org. 3600 IN CNAME web.example.org.",
                    "web.example.org. 3600 IN CNAME host1.example.org.",
                    "host1.example.org. 3600 IN A 192.0.2.10",
                ],
            ),
        )

    def test_emptyNonTerminal(self) -> None:
        """An empty non-terminal is NODATA with the SOA, not NXDOMAIN."""
        reply = askMessage(self.engine, query("c.ent.example.org", "A"))
        self.assertEqual(
            (reply.rcode(), reply.answer, [r.rdtype for r in reply.authority]),
            (dns.rcode.NOERROR, [], [dns.rdatatype.SOA]),
        )

    def test_nxdomain(self) -> None:
        """A missing name is NXDOMAIN with the SOA at its negative TTL."""
        reply = askMessage(self.engine, query("nope.example.org", "A"))
        self.assertEqual(
            (reply.rcode(), [(r.rdtype, r.ttl) for r in reply.authority]),
            (dns.rcode.NXDOMAIN, [(dns.rdatatype.SOA, 300)]),
        )

    def test_wildcard(self) -> None:
        """A wildcard answers for names below it, owned by the name asked."""
        reply = askMessage(self.engine, query("a.b.wild.example.org", "TXT"))
        self.assertEqual(
            [r.to_text() for r in reply.answer],
            ['a.b.wild.example.org. 3600 IN TXT "wildcard"'],
        )

    def test_referral(self) -> None:
        """Below a delegation: a referral, not authoritative, with glue."""
        reply = askMessage(self.engine, query("x.sub.example.org", "A"))
        self.assertEqual(
            (
                bool(reply.flags & dns.flags.AA),
                [r.name.to_text() for r in reply.authority],
                [r.to_text() for r in reply.additional],
            ),
            (
                False,
                ["sub.example.org."],
                ["ns.sub.example.org. 3600 IN A 192.0.2.200"],
            ),
        )

    def test_dname(self) -> None:
        """A DNAME above the name gives the DNAME and a synthesized CNAME."""
        reply = askMessage(self.engine, query("x.dn.example.org", "A"))
        self.assertEqual(
            [r.to_text() for r in reply.answer],
            [
                "dn.example.org. 3600 IN DNAME example.net.",
                "x.dn.example.org. 3600 IN CNAME x.example.net.",
            ],
        )

    def test_refused(self) -> None:
        """A name outside the zones is REFUSED, without AA."""
        reply = askMessage(self.engine, query("example.com", "A"))
        self.assertEqual(
            (reply.rcode(), bool(reply.flags & dns.flags.AA)),
            (dns.rcode.REFUSED, False),
        )

    def test_unknownOpcode(self) -> None:
        """An unknown opcode is NOTIMP."""
        message = query("example.org", "A")
        message.set_opcode(dns.opcode.Opcode(15))  # type: ignore[attr-defined]
        self.assertEqual(askMessage(self.engine, message).rcode(), dns.rcode.NOTIMP)

    def test_notifyRefused(self) -> None:
        """NOTIFY to a server with no secondary zones is REFUSED."""
        message = query("example.org", "SOA")
        message.set_opcode(dns.opcode.NOTIFY)
        self.assertEqual(askMessage(self.engine, message).rcode(), dns.rcode.REFUSED)

    def test_badVersion(self) -> None:
        """EDNS version 1 gets BADVERS with an OPT of version 0."""
        reply = askMessage(self.engine, query("example.org", "A", use_edns=1))
        self.assertEqual((reply.rcode(), reply.edns), (dns.rcode.BADVERS, 0))

    def test_unknownOptionIgnored(self) -> None:
        """Unknown EDNS options and flags are ignored, not echoed."""
        message = query(
            "example.org",
            "A",
            use_edns=0,
            ednsflags=0x4000,
            options=[dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"x")],
        )
        reply = askMessage(self.engine, message)
        self.assertEqual(
            (reply.rcode(), len(reply.answer), reply.options, reply.ednsflags),
            (dns.rcode.NOERROR, 1, (), 0),
        )

    def test_nsid(self) -> None:
        """NSID is sent to a client that asks, when configured."""
        engine = makeEngine(self, nsid=b"np-dns-1")
        message = query(
            "example.org", "A", use_edns=0, options=[dns.edns.NSIDOption(b"")]
        )
        reply = askMessage(engine, message)
        self.assertEqual(
            [(o.otype, o.nsid) for o in reply.options],  # type: ignore[attr-defined]
            [(dns.edns.NSID, b"np-dns-1")],
        )

    def test_truncationUDP(self) -> None:
        """Over UDP without EDNS, past 512 bytes: whole RRsets dropped, TC set."""
        [wire] = ask(self.engine, query("big.example.org", "TXT"))
        reply = dns.message.from_wire(wire)
        self.assertEqual(
            (len(wire) <= 512, bool(reply.flags & dns.flags.TC), reply.answer),
            (True, True, []),
        )

    def test_payloadHonoured(self) -> None:
        """With EDNS the answer fits the client's payload (or ours, 1232)."""
        for payload in (512, 1000, 1232, 4096):
            [wire] = ask(
                self.engine,
                query("big.example.org", "TXT", use_edns=0, payload=payload),
            )
            self.assertLessEqual(len(wire), min(payload, 1232))

    def test_fullOverTCP(self) -> None:
        """Over TCP the whole answer goes, without TC."""
        reply = askMessage(self.engine, query("big.example.org", "TXT"), tcp=True)
        self.assertEqual(
            (bool(reply.flags & dns.flags.TC), len(reply.answer[0])), (False, 5)
        )

    def test_cacheKeepsID(self) -> None:
        """A repeated question is answered from the cache with its own ID."""
        first = query("www.example.org", "A")
        second = query("www.example.org", "A")
        second.id = (first.id + 1) % 65536
        replies = [askMessage(self.engine, q) for q in (first, second)]
        self.assertEqual(
            [(r.id, r.answer) for r in replies],
            [(first.id, replies[0].answer), (second.id, replies[0].answer)],
        )

    def test_bigRepliesNotCached(self) -> None:
        """Replies over the cache's limit (TCP's) are not kept in it."""
        self.patch(server, "_CACHEABLE_REPLY", 512)
        askMessage(self.engine, query("big.example.org", "TXT"), tcp=True)
        askMessage(self.engine, query("www.example.org", "A"), tcp=True)
        self.assertEqual(
            [len(reply) <= 512 for reply in self.engine._cache.values()], [True]
        )


class MalformedTests(SynchronousTestCase):
    """
    Malformed queries get FORMERR or nothing, never an exception.
    """

    def setUp(self) -> None:
        self.engine = makeEngine(self)

    def rcodeOf(self, data: bytes) -> int | None:
        replies = ask(self.engine, data)
        if not replies:
            return None
        return struct.unpack("!H", replies[0][2:4])[0] & 0xF

    def test_compressionLoop(self) -> None:
        """A name pointing at itself is FORMERR."""
        data = (
            struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01"
        )
        self.assertEqual(self.rcodeOf(data), dns.rcode.FORMERR)

    def test_twoQuestions(self) -> None:
        """QDCOUNT 2 is FORMERR."""
        question = b"\x07example\x03org\x00\x00\x01\x00\x01"
        data = struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0) + question * 2
        self.assertEqual(self.rcodeOf(data), dns.rcode.FORMERR)

    def test_noQuestion(self) -> None:
        """QDCOUNT 0 is FORMERR."""
        self.assertEqual(
            self.rcodeOf(struct.pack("!HHHHHH", 1, 0, 0, 0, 0, 0)), dns.rcode.FORMERR
        )

    def test_longLabel(self) -> None:
        """A label longer than 63 bytes is FORMERR."""
        data = (
            struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0)
            + b"\x50"
            + b"a" * 80
            + b"\x00\x00\x01\x00\x01"
        )
        self.assertEqual(self.rcodeOf(data), dns.rcode.FORMERR)

    def test_truncatedQuestion(self) -> None:
        """A question cut short is FORMERR."""
        data = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x07exam"
        self.assertEqual(self.rcodeOf(data), dns.rcode.FORMERR)

    def test_shortAndResponsesDropped(self) -> None:
        """Under 12 bytes, or a response (QR set): no reply at all."""
        response = query("example.org", "A")
        response.flags |= dns.flags.QR
        self.assertEqual(
            [ask(self.engine, b"\x00\x01\x00"), ask(self.engine, response)], [[], []]
        )

    def test_garbage(self) -> None:
        """Random bytes get FORMERR or nothing."""
        import random

        rng = random.Random(4)
        for _ in range(300):
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
            self.assertIn(
                self.rcodeOf(data),
                (
                    None,
                    dns.rcode.FORMERR,
                    dns.rcode.NOTIMP,
                    dns.rcode.REFUSED,
                    dns.rcode.NOERROR,
                    dns.rcode.NXDOMAIN,
                ),
            )


class RateLimitTests(SynchronousTestCase):
    """
    L{ResponseRateLimiter}: per /24 or /56, every 2nd limited answer slips.
    """

    def test_slip(self) -> None:
        """Over the rate, answers alternate dropped and truncated."""
        clock = Clock()
        rrl = ResponseRateLimiter(2, clock)
        self.assertEqual(
            [rrl.check("192.0.2.1") for _ in range(6)],
            [SEND, SEND, DROP, SLIP, DROP, SLIP],
        )

    def test_otherNetworkAnswered(self) -> None:
        """Another /24 has its own budget; the same /24 shares one."""
        clock = Clock()
        rrl = ResponseRateLimiter(1, clock)
        self.assertEqual(
            [rrl.check(h) for h in ("192.0.2.1", "192.0.2.200", "198.51.100.1")],
            [SEND, DROP, SEND],
        )

    def test_refills(self) -> None:
        """A second later the rate's worth of answers goes again."""
        clock = Clock()
        rrl = ResponseRateLimiter(1, clock)
        rrl.check("192.0.2.1")
        clock.advance(1)
        self.assertEqual(rrl.check("192.0.2.1"), SEND)

    def test_networks(self) -> None:
        """IPv4 counts by /24 (mapped too), IPv6 by /56."""
        self.assertEqual(
            [
                sourceNetwork("192.0.2.9"),
                sourceNetwork("::ffff:192.0.2.9"),
                sourceNetwork("2001:db8:0:ff::1") == sourceNetwork("2001:db8:0:1::2"),
                sourceNetwork("2001:db8:0:100::1") == sourceNetwork("2001:db8::1"),
            ],
            ["192.0.2", "192.0.2", True, False],
        )


class StreamTests(SynchronousTestCase):
    """
    L{DNSStream}: length-prefixed, pipelined, bounded by the output watermark.
    """

    def connect(self) -> tuple[DNSStream, WatermarkTransport]:
        self.clock = Clock()
        factory = DNSStreamFactory(makeEngine(self), self.clock)
        protocol = factory.buildProtocol(None)
        assert isinstance(protocol, DNSStream)
        transport = WatermarkTransport(watermark=4096)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_pipelined(self) -> None:
        """Several queries in one write, split anywhere, get answers in order."""
        protocol, transport = self.connect()
        wires = [
            query(n, "A").to_wire() for n in ("www.example.org", "nope.example.org")
        ]
        data = b"".join(struct.pack("!H", len(w)) + w for w in wires)
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])
        out = transport.value()
        replies = []
        while out:
            (n,) = struct.unpack("!H", out[:2])
            replies.append(dns.message.from_wire(out[2 : 2 + n]))
            out = out[2 + n :]
        self.assertEqual(
            [r.rcode() for r in replies], [dns.rcode.NOERROR, dns.rcode.NXDOMAIN]
        )

    def test_messageDeadline(self) -> None:
        """A message begun but unfinished at its deadline closes the connection."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"\x00\x20abc")
        for _ in range(9):
            self.clock.advance(1)
            protocol.dataReceived(b"x")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_neverReads(self) -> None:
        """A client that never reads stops being read once replies pile up."""
        protocol, transport = self.connect()
        wire = query("big.example.org", "TXT").to_wire()
        protocol.dataReceived((struct.pack("!H", len(wire)) + wire) * 1000)
        self.assertLess(len(transport.value()), 4096 + 2000)


class ZoneFileTests(SynchronousTestCase):
    """
    Loading and reloading zone files.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.path = self.directory / "z.zone"

    def test_directives(self) -> None:
        """$TTL, $INCLUDE and $GENERATE work."""
        (self.directory / "inc.zone").write_text("included IN A 192.0.2.5\n")
        self.path.write_text(
            "$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\n@ IN NS ns\nns IN A 192.0.2.1\n"
            f"$INCLUDE {self.directory / 'inc.zone'}\n"
            "$GENERATE 1-3 h$ IN A 192.0.2.$\n"
        )
        zone = loadZone("t.example", str(self.path))
        self.assertEqual(
            sorted({r.name.to_text() for r in zone.rrsets()}),
            [
                "h1.t.example.",
                "h2.t.example.",
                "h3.t.example.",
                "included.t.example.",
                "ns.t.example.",
                "t.example.",
            ],
        )

    def test_bad(self) -> None:
        """A syntax error or a missing SOA is a one-line ZoneError."""
        self.path.write_text("@ IN NS ns\nns IN A 192.0.2.1\n")
        self.assertRaises(ZoneError, loadZone, "t.example", str(self.path))
        self.path.write_text("@ IN SOA ns hm 1 2 3 4 5\nbroken IN A 999.0.0.1\n")
        self.assertRaises(ZoneError, loadZone, "t.example", str(self.path))


class ReloadTests(TestCase):
    """
    L{ZoneFiles} loads changed files in the blocking pool.
    """

    @inlineCallbacks
    def test_serialChange(self) -> Any:
        """A changed file with a new serial is served; a bad one keeps the old zone."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "z.zone"
        path.write_text(zoneText(PLAIN, serial=1))
        engine = Engine()
        files = ZoneFiles(
            [ZoneFile(dns.name.from_text(PLAIN), str(path))], engine.setZone, reactor
        )
        files.loadNow()
        serials = [engine.zones[dns.name.from_text(PLAIN)].serial]
        path.write_text(zoneText(PLAIN, serial=2))
        os.utime(path, (time.time() + 5, time.time() + 5))
        yield files.check()
        serials.append(engine.zones[dns.name.from_text(PLAIN)].serial)
        path.write_text("this is not a zone\n")
        os.utime(path, (time.time() + 10, time.time() + 10))
        yield files.check()
        serials.append(engine.zones[dns.name.from_text(PLAIN)].serial)
        self.assertEqual(serials, [1, 2, 2])
        self.flushLoggedErrors()


class OptionsTests(SynchronousTestCase):
    """
    The command line.
    """

    def test_options(self) -> None:
        """Every np-dns option reaches the settings."""
        options = Options()
        options.parseOptions(
            [
                "--zone", "example.org=/dev/null",
                "--allow-transfer", "127.0.0.0/8",
                "--tsig-key", "k:hmac-sha256:/nonexistent",
                "--notify", "127.0.0.1:5300",
                "--secondary", "example.net=127.0.0.1:5301",
                "--forward", "127.0.0.1:53",
                "--recursion-allow", "10.0.0.0/8",
                "--rrl", "0",
                "--listen", "udp:5353",
                "--listen", "tcp:5353",
            ]
        )  # fmt: skip
        s = options.settings
        self.assertEqual(
            (s.zone, s.allowTransfer, s.tsigKey, s.notify, s.secondary, s.forward,
             s.recursionAllow, s.rrl, s.listen),
            (("example.org=/dev/null",), ("127.0.0.0/8",),
             ("k:hmac-sha256:/nonexistent",),
             ("127.0.0.1:5300",), ("example.net=127.0.0.1:5301",), ("127.0.0.1:53",),
             ("10.0.0.0/8",), 0, ("udp:5353", "tcp:5353")),
        )  # fmt: skip

    def test_badZoneFile(self) -> None:
        """A zone file that does not load is a one-line usage error at start."""
        path = Path(self.mktemp())
        path.write_text("not a zone\n")
        options = Options()
        options.parseOptions(["--zone", f"example.org={path}"])
        error = self.assertRaises(usage.UsageError, makeService, options)
        self.assertIn(str(path), str(error))

    def test_recursionNeedsUpstream(self) -> None:
        """--recursion-allow without --forward is refused."""
        self.assertRaises(
            ValueError, dnsService, DNSSettings(recursionAllow=("10.0.0.0/8",))
        )

    def test_badValues(self) -> None:
        """Malformed values are one-line usage errors."""
        for argv in (
            ["--zone", "nopath"],
            ["--tsig-key", "k:md5:/x"],
            ["--notify", "host"],
            ["--rrl", "-1"],
            ["--recursion-allow", "10.0.0.0/33"],
        ):
            self.assertRaises(usage.UsageError, Options().parseOptions, argv)


def _key(message: dns.message.Message) -> tuple[Any, ...]:
    """
    What two servers must agree on: RCODE, flags, EDNS and each section's
    records (order within a section does not matter in DNS).
    """

    def section(rrsets: list[dns.rrset.RRset]) -> list[str]:
        return sorted(line for r in rrsets for line in r.to_text().splitlines())

    return (
        dns.rcode.to_text(message.rcode()),
        dns.flags.to_text(message.flags),
        message.edns,
        message.payload,
        section(message.answer),
        section(message.authority),
        section(message.additional),
    )


class LiveTests(TestCase):
    """
    np-dns over real sockets on 127.0.0.1, against real clients and NSD.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        self.zones = writeZones(self.directory)
        self.port = freePort()
        self.service = dnsService(
            DNSSettings(
                zone=tuple(f"{o}={p}" for o, p in self.zones.items()),
                listen=(
                    f"udp:{self.port}:interface=127.0.0.1",
                    f"tcp:{self.port}:interface=127.0.0.1",
                ),
                rrl=0,
                nsid="np-dns-test",
            )
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def test_sameAsNSD(self) -> Deferred[None]:
        """dnspython gets NSD's answers over the corpus, with and without DO."""
        _, nsdPort = dnsfixtures.startNSD(self, self.zones, self.directory)

        def compare() -> list[str]:
            differences = []
            for dnssec in (False, True):
                for name, rdtype in questions():
                    q = query(name, rdtype, use_edns=0, want_dnssec=dnssec)
                    ours = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=5)
                    theirs = dns.query.udp(q, "127.0.0.1", port=nsdPort, timeout=5)
                    if _key(ours) != _key(theirs):
                        differences.append(
                            f"{name} {rdtype} DO={dnssec}:\n{ours}\n--- NSD:\n{theirs}"
                        )
            return differences

        return deferToThread(compare).addCallback(self.assertEqual, [])

    def test_digAndKdigSameAsNSD(self) -> Deferred[None]:
        """dig and kdig print the same answers from np-dns and NSD."""
        _, nsdPort = dnsfixtures.startNSD(self, self.zones, self.directory)
        dig, kdig = need("dig"), need("kdig")
        cases = [
            ("www.example.org", "A", []),
            ("a.b.wild.signed.example", "TXT", ["+dnssec"]),
            ("nope.nsec3.example", "A", ["+dnssec"]),
            ("c.ent.example.org", "A", []),
            ("x.sub.example.org", "A", []),
            ("big.example.org", "TXT", ["+noedns", "+ignore"]),
            ("big.example.org", "TXT", ["+tcp"]),
        ]

        def normal(text: str) -> list[str]:
            skip = (
                "id:",
                "Query time",
                "SERVER",
                "WHEN",
                "MSG SIZE",
                "From ",
                "Received",
                "Time ",
                ";; ->>HEADER",
                "NSID",
                ";; Got",
            )
            return sorted(
                line.replace(str(self.port), "P").replace(str(nsdPort), "P")
                for line in text.splitlines()
                if line.strip()
                and not any(s in line for s in skip)
                and not line.startswith("; <<>>")
            )

        def run() -> list[str]:
            differences = []
            for name, rdtype, flags in cases:
                for program in (dig, kdig):
                    kflags = [
                        f.replace("+ignore", "+ignoretc").replace("+noedns", "+noedns")
                        for f in flags
                    ]
                    outputs = []
                    for port in (self.port, nsdPort):
                        argv = [
                            program,
                            "+norec",
                            "@127.0.0.1",
                            "-p",
                            str(port),
                            name,
                            rdtype,
                        ]
                        argv += kflags if program == kdig else flags
                        outputs.append(
                            normal(
                                subprocess.run(
                                    argv, capture_output=True, text=True, timeout=30
                                ).stdout
                            )
                        )
                    if outputs[0] != outputs[1] or not outputs[0]:
                        differences.append(
                            f"{program} {name} {rdtype} {flags}: {outputs}"
                        )
            return differences

        return deferToThread(run).addCallback(self.assertEqual, [])

    def test_rfc8906Matrix(self) -> Deferred[None]:
        """The RFC 8906 query matrix with dig: each case's status and flags."""
        dig = need("dig")
        base = [dig, "+norec", "@127.0.0.1", "-p", str(self.port)]
        cases = [
            (["example.org", "SOA", "+noedns"], "status: NOERROR", "flags: qr aa;"),
            (["example.org", "SOA", "+edns=0"], "status: NOERROR", "EDNS: version: 0"),
            (
                ["example.org", "SOA", "+edns=1", "+noednsneg"],
                "status: BADVERS",
                "EDNS: version: 0",
            ),
            (["example.org", "SOA", "+ednsopt=100"], "status: NOERROR", "ANSWER: 1,"),
            (
                ["example.org", "SOA", "+ednsflags=0x80"],
                "status: NOERROR",
                "flags:; udp: 1232",
            ),
            (
                [
                    "example.org",
                    "SOA",
                    "+ednsopt=100",
                    "+edns=1",
                    "+noednsneg",
                    "+ednsflags=0x80",
                ],
                "status: BADVERS",
                "EDNS: version: 0",
            ),
            (["example.org", "SOA", "+tcp"], "status: NOERROR", "ANSWER: 1,"),
            (["example.org", "SOA", "+dnssec"], "status: NOERROR", "flags: do;"),
            (["signed.example", "SOA", "+dnssec"], "status: NOERROR", "RRSIG"),
            (["example.org", "TYPE1000"], "status: NOERROR", "ANSWER: 0,"),
            (
                ["example.org", "SOA", "+opcode=15"],
                "status: NOTIMP",
                "opcode: RESERVED15",
            ),
            (
                ["example.org", "SOA", "+nsid"],
                "status: NOERROR",
                'NSID: 6e 70 2d 64 6e 73 2d 74 65 73 74 ("np-dns-test")',
            ),
        ]

        def run() -> list[str]:
            failures = []
            for args, status, extra in cases:
                out = subprocess.run(
                    base + args, capture_output=True, text=True, timeout=30
                ).stdout
                if status not in out or extra not in out:
                    failures.append(f"{args}: {out}")
            return failures

        return deferToThread(run).addCallback(self.assertEqual, [])

    def test_transferRefusedWithoutTSIG(self) -> Deferred[None]:
        """dig AXFR and IXFR without a TSIG key are refused."""
        dig = need("dig")

        def run() -> list[str]:
            return [
                subprocess.run(
                    [dig, "@127.0.0.1", "-p", str(self.port), "example.org", kind],
                    capture_output=True,
                    text=True,
                    timeout=30,
                ).stdout
                for kind in ("AXFR", "IXFR=1")
            ]

        def check(outputs: list[str]) -> None:
            for out in outputs:
                self.assertIn("Transfer failed", out)
                self.assertNotIn("192.0.2.10", out)

        return deferToThread(run).addCallback(check)


#: The book's dns_basic.py (Foundations of Python Network Programming, 3rd
#: ed., py3/chapter04/dns_basic.py), as printed.
DNS_BASIC = """\
#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter04/dns_basic.py
# Basic DNS query

import argparse, dns.resolver

def lookup(name):
    for qtype in 'A', 'AAAA', 'CNAME', 'MX', 'NS':
        answer = dns.resolver.query(name, qtype, raise_on_no_answer=False)
        if answer.rrset is not None:
            print(answer.rrset)

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='Resolve a name using DNS')
    parser.add_argument('name', help='name that you want to look up in DNS')
    lookup(parser.parse_args().name)
"""

#: The book's dns_mx.py, as printed.
DNS_MX = """\
#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter04/dns_mx.py
# Looking up a mail domain - the part of an email address after the `@`

import argparse, dns.resolver

def resolve_hostname(hostname, indent=''):
    "Print an A or AAAA record for `hostname`; follow CNAMEs if necessary."
    indent = indent + '    '
    answer = dns.resolver.query(hostname, 'A')
    if answer.rrset is not None:
        for record in answer:
            print(indent, hostname, 'has A address', record.address)
        return
    answer = dns.resolver.query(hostname, 'AAAA')
    if answer.rrset is not None:
        for record in answer:
            print(indent, hostname, 'has AAAA address', record.address)
        return
    answer = dns.resolver.query(hostname, 'CNAME')
    if answer.rrset is not None:
        record = answer[0]
        cname = record.address
        print(indent, hostname, 'is a CNAME alias for', cname) #?
        resolve_hostname(cname, indent)
        return
    print(indent, 'ERROR: no A, AAAA, or CNAME records for', hostname)

def resolve_email_domain(domain):
    "For an email address `name@domain` find its mail server IP addresses."
    try:
        answer = dns.resolver.query(domain, 'MX', raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        print('Error: No such domain', domain)
        return
    if answer.rrset is not None:
        records = sorted(answer, key=lambda record: record.preference)
        print('This domain has', len(records), 'MX records')
        for record in records:
            name = record.exchange.to_text(omit_final_dot=True)
            print('Priority', record.preference)
            resolve_hostname(name)
    else:
        print('This domain has no explicit MX records')
        print('Attempting to resolve it as an A, AAAA, or CNAME')
        resolve_hostname(domain)

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='Find mailserver IP address')
    parser.add_argument('domain', help='domain that you want to send mail to')
    resolve_email_domain(parser.parse_args().domain)
"""

#: dnspython's default resolver reads /etc/resolv.conf, which names no port.
#: The book's programs use that default resolver; this module, found first on
#: the programs' PYTHONPATH, points it at the server under test instead: the
#: per-process equivalent of a resolv.conf, the programs' text unchanged.
SITECUSTOMIZE = """\
import dns.resolver
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = ["127.0.0.1"]
resolver.port = {port}
dns.resolver.default_resolver = resolver
"""

#: A mail domain for the book's programs: every name they look up is in it.
BOOK_ZONE = """\
$ORIGIN mail.test.
$TTL 300
@       IN SOA ns hostmaster 1 7200 3600 1209600 300
        IN NS ns
        IN MX 20 backup
        IN MX 10 mx1
ns      IN A 192.0.2.53
mx1     IN A 192.0.2.25
backup  IN A 192.0.2.26
www     IN CNAME mx1
nomx    IN A 192.0.2.80
"""


class BookTests(TestCase):
    """
    The book's chapter 4 dnspython programs, as printed, against np-dns.
    Its www_ping.py resolves with getaddrinfo (the C library, port 53 of
    the servers in /etc/resolv.conf), which cannot be pointed at a test
    server without changing the machine's configuration: it is not run.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        zone = self.directory / "mail.test.zone"
        zone.write_text(BOOK_ZONE)
        port = freePort()
        service = dnsService(
            DNSSettings(
                zone=(f"mail.test={zone}",),
                listen=(
                    f"udp:{port}:interface=127.0.0.1",
                    f"tcp:{port}:interface=127.0.0.1",
                ),
            )
        )
        service.startService()
        self.addCleanup(service.stopService)
        (self.directory / "sitecustomize.py").write_text(
            SITECUSTOMIZE.format(port=port)
        )
        (self.directory / "dns_basic.py").write_text(DNS_BASIC)
        (self.directory / "dns_mx.py").write_text(DNS_MX)

    def run_(self, program: str, argument: str) -> Deferred[str]:
        env = {
            **os.environ,
            "PYTHONPATH": str(self.directory),
            "PYTHONWARNINGS": "ignore",
        }
        return deferToThread(
            lambda: (
                subprocess.run(
                    [sys.executable, str(self.directory / program), argument],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=60,
                ).stdout
            )
        )

    def test_dnsBasic(self) -> Deferred[None]:
        """dns_basic.py prints the CNAME and the address it leads to."""
        return self.run_("dns_basic.py", "www.mail.test").addCallback(
            self.assertEqual,
            "mx1.mail.test. 300 IN A 192.0.2.25\n"
            "www.mail.test. 300 IN CNAME mx1.mail.test.\n",
        )

    def test_dnsMX(self) -> Deferred[None]:
        """dns_mx.py lists the MX hosts by priority with their addresses."""
        return self.run_("dns_mx.py", "mail.test").addCallback(
            self.assertEqual,
            "This domain has 2 MX records\n"
            "Priority 10\n"
            "     mx1.mail.test has A address 192.0.2.25\n"
            "Priority 20\n"
            "     backup.mail.test has A address 192.0.2.26\n",
        )

    def test_dnsMXNoSuchDomain(self) -> Deferred[None]:
        """dns_mx.py reports a domain that does not exist."""
        return self.run_("dns_mx.py", "nowhere.mail.test").addCallback(
            self.assertEqual, "Error: No such domain nowhere.mail.test\n"
        )


class TwistdTests(TestCase):
    """
    C{twistd np-dns} from the command line.
    """

    def test_sighupReload(self) -> Deferred[None]:
        """SIGHUP reloads a zone file; a broken file keeps the zone and is logged."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        path = directory / "z.zone"
        path.write_text(zoneText(PLAIN, serial=1))
        port = freePort()
        process = runTwistd(
            self, "np-dns", "--zone", f"{PLAIN}={path}",
            "--listen", f"udp:{port}:interface=127.0.0.1",
            "--listen", f"tcp:{port}:interface=127.0.0.1",
        )  # fmt: skip
        waitForPort(port, process)

        def serial() -> int:
            reply = dns.query.udp(
                query(PLAIN, "SOA"), "127.0.0.1", port=port, timeout=5
            )
            return reply.answer[0][0].serial  # type: ignore[no-any-return]

        def scenario() -> list[Any]:
            seen: list[Any] = [serial()]
            path.write_text(
                zoneText(PLAIN, serial=1).replace("192.0.2.10", "192.0.2.11")
            )
            process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                reply = dns.query.udp(
                    query("host1." + PLAIN, "A"), "127.0.0.1", port=port, timeout=5
                )
                if reply.answer and reply.answer[0][0].address == "192.0.2.11":  # type: ignore[attr-defined]
                    break
                time.sleep(0.1)
            seen.append(reply.answer[0][0].address)  # type: ignore[attr-defined]
            path.write_text("garbage\n")
            process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while (
                "keeps serial" not in process.output() and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            seen.append(serial())
            seen.append("keeps serial 1" in process.output())
            return seen

        return deferToThread(scenario).addCallback(
            self.assertEqual, [1, "192.0.2.11", 1, True]
        )

    def test_rrlFlood(self) -> Deferred[None]:
        """A flood from 127.0.0.1 is dropped and slipped; 127.0.1.1 is answered."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        path = directory / "z.zone"
        path.write_text(zoneText(PLAIN))
        port = freePort()
        process = runTwistd(
            self, "np-dns", "--zone", f"{PLAIN}={path}", "--rrl", "50",
            "--listen", f"udp:{port}:interface=127.0.0.1",
            "--listen", f"tcp:{port}:interface=127.0.0.1",
        )  # fmt: skip
        waitForPort(port, process)

        def flood() -> tuple[int, int, int, bool]:
            wire = query("www.example.org", "A").to_wire()
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.5)
            for _ in range(400):
                s.sendto(wire, ("127.0.0.1", port))
            whole = truncated = 0
            try:
                while True:
                    reply = dns.message.from_wire(s.recv(4096))
                    if reply.flags & dns.flags.TC:
                        truncated += 1
                    else:
                        whole += 1
            except TimeoutError:
                pass
            s.close()
            other = dns.query.udp(
                query("www.example.org", "A"),
                "127.0.0.1",
                port=port,
                source="127.0.1.1",
                timeout=5,
            )
            return whole, truncated, 400 - whole - truncated, bool(other.answer)

        def check(result: tuple[int, int, int, bool]) -> None:
            whole, truncated, dropped, otherAnswered = result
            self.assertTrue(otherAnswered)
            self.assertLess(whole, 120)
            self.assertGreater(truncated, 50)
            self.assertGreater(dropped, 50)

        return deferToThread(flood).addCallback(check)
