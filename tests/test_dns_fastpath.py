"""
Tests for L{netplugins.dns.fastpath}: the same bytes as the general path; and
L{netplugins.dns.server.DNSDatagram}'s writing.
"""

from __future__ import annotations

import errno
import functools
import random
import socket
import string
import struct
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rdatatype
from twisted.internet import udp
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from netplugins.dns import fastpath
from netplugins.dns.fastpath import MAX_TEMPLATES, parse
from netplugins.dns.server import DNSDatagram, Engine
from netplugins.dns.zone import Zone, loadZone
from tests.dnsfixtures import ORIGINS, PLAIN, questions, writeZones, zoneText

#: Names beyond the corpus's: several labels under wildcards and under a
#: delegation, names below glue and below a DNAME, an empty non-terminal's
#: children, names spelling the zone's own targets one label down, long
#: and short.
EXTRA = (
    "w1.wild.{o}",
    "a-much-longer-label-than-the-others.wild.{o}",
    "a.b.c.wild.{o}",
    "ns1.wild.{o}",
    "z.y.wc.{o}",
    "ns.sub.{o}",
    "x.ns.sub.{o}",
    "a.b.sub.{o}",
    "ns.secure.{o}",
    "a.ns.secure.{o}",
    "q.dn.{o}",
    "x.b.c.ent.{o}",
    "b.c.ent.{o}",
    "zz.{o}",
    "host1.nope.{o}",
    "mail.mail.{o}",
    "n0.nope.{o}",
    "n12345.nope.{o}",
    "x.host1.{o}",
    "web.elsewhere.{o}",
    "outside.test",
    "{o}.outside.test",
)


@functools.cache
def testZones() -> dict[str, Zone]:
    """
    The three test zones, signed once for all the tests.
    """
    directory = Path("fastpath-zones").resolve()
    directory.mkdir(exist_ok=True)
    return {o: loadZone(o, str(p)) for o, p in writeZones(directory).items()}


#: How the queries ask (three of these for each name and type).
EDNS: list[dict[str, Any]] = [
    {},
    {"use_edns": 0},
    {"use_edns": 0, "want_dnssec": True},
    {"use_edns": 0, "payload": 512},
    {"use_edns": 0, "payload": 700, "want_dnssec": True},
    {"use_edns": 0, "payload": 4096},
]


def mixCase(name: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


class SameBytesTests(SynchronousTestCase):
    """
    The fast path against the general one, over the three test zones.
    """

    def setUp(self) -> None:
        self.zones = testZones()

    def engines(self, **kwargs: object) -> tuple[Engine, Engine]:
        fast = Engine(nsid=b"np-dns-test", **kwargs)  # type: ignore[arg-type]
        general = Engine(nsid=b"np-dns-test", fast=False, **kwargs)  # type: ignore[arg-type]
        for zone in self.zones.values():
            fast.setZone(zone)
            general.setZone(zone)
        return fast, general

    def queries(self, rng: random.Random) -> list[bytes]:
        names = list(dict.fromkeys(n for n, _ in questions()))
        names += [e.format(o=o) for e in EXTRA for o in ORIGINS]
        types = sorted({t for _, t in questions()} | {"PTR", "HINFO", "TYPE0"})
        out = []
        for name in names:
            for rdtype in types:
                if rng.random() < 0.3:
                    name = mixCase(name, rng)
                for edns in rng.sample(EDNS, 3):
                    message = dns.message.make_query(name, rdtype, **edns)
                    message.id = rng.randrange(65536)
                    if rng.random() < 0.5:
                        message.flags &= ~dns.flags.RD
                    if rng.random() < 0.2:
                        message.flags |= dns.flags.CD | dns.flags.AD
                    out.append(message.to_wire())
        rng.shuffle(out)
        return out

    def compare(self, fast: Engine, general: Engine, data: bytes, tcp: bool) -> None:
        ours: list[bytes] = []
        theirs: list[bytes] = []
        fast.handle(data, "192.0.2.7", tcp, ours.append)
        general.handle(data, "192.0.2.7", tcp, theirs.append)
        if ours != theirs:
            self.fail(
                f"{dns.message.from_wire(data).question} tcp={tcp}:\n"
                f"{ours!r}\n!=\n{theirs!r}"
            )

    def test_sameBytes(self) -> None:
        """Over UDP and TCP, in any order and case, the replies are the same bytes."""
        rng = random.Random(1234)
        fast, general = self.engines()
        queries = self.queries(rng)
        for data in queries:
            self.compare(fast, general, data, rng.random() < 0.2)
        # Answered from templates, not from the reply cache.
        for data in queries[:1000]:
            fast._cache.clear()
            self.compare(fast, general, data, False)
        assert fast._fast is not None
        made = [t for t in fast._fast.templates.values() if t is not None]
        self.assertGreater(len(made), 1000)

    def test_manyNamesFewTemplates(self) -> None:
        """Distinct names under a wildcard or that do not exist share templates."""
        fast, general = self.engines()
        for i in range(300):
            for name in (f"w{i}.wild.{PLAIN}", f"n{i}.nope.{PLAIN}"):
                data = dns.message.make_query(name, "A").to_wire()
                self.compare(fast, general, data, False)
        assert fast._fast is not None
        self.assertEqual(len(fast._fast.templates), 2)

    def test_denials(self) -> None:
        """With DO, absent names share templates by their NSEC or NSEC3 record."""
        fast, general = self.engines()
        rng = random.Random(99)
        for origin in ORIGINS:
            for _ in range(150):
                label = "".join(rng.choices(string.ascii_lowercase + "-", k=6))
                for name in (f"{label}.wild.{origin}", f"{label}.{origin}"):
                    message = dns.message.make_query(
                        name, rng.choice(["A", "TXT", "MX"]), want_dnssec=True
                    )
                    self.compare(fast, general, message.to_wire(), False)
        assert fast._fast is not None
        templates = fast._fast.templates
        self.assertEqual(None in templates.values(), False)
        self.assertLess(len(templates), 300)

    def test_truncated(self) -> None:
        """A reply over the client's payload takes the general path and is truncated."""
        fast, general = self.engines()
        data = dns.message.make_query(f"big.{PLAIN}", "TXT").to_wire()
        for tcp in (True, False, True):
            self.compare(fast, general, data, tcp)
        replies: list[bytes] = []
        fast.handle(data, "192.0.2.7", False, replies.append)
        self.assertTrue(dns.message.from_wire(replies[0]).flags & dns.flags.TC)

    def test_reload(self) -> None:
        """A zone served anew drops the templates made from the old one."""
        fast, general = self.engines()
        data = dns.message.make_query(f"host1.{PLAIN}", "A").to_wire()
        self.compare(fast, general, data, False)
        zone = self.zones[PLAIN]
        fast.setZone(zone)
        assert fast._fast is not None
        self.assertEqual(fast._fast.templates, {})

    def test_bytesBounded(self) -> None:
        """Past MAX_TEMPLATE_BYTES of replies held the templates are dropped."""
        fast, _ = self.engines()
        assert fast._fast is not None
        self.patch(fastpath, "MAX_TEMPLATE_BYTES", 250)
        for name in ("host1", "mail", "ns1", "ns2", "www", "web", "txt"):
            query = dns.message.make_query(f"{name}.{PLAIN}", "A")
            fast.handle(query.to_wire(), "192.0.2.7", False, lambda reply: None)
            held = sum(
                len(body)
                for template in fast._fast.templates.values()
                if template is not None
                for body in template.bodies.values()
            )
            self.assertEqual(held, fast._fast.size)
            self.assertLess(held, 250 + 1232)
        self.assertLess(len(fast._fast.templates), 7)

    def test_bounded(self) -> None:
        """Past MAX_TEMPLATES the templates are dropped."""
        fast, _ = self.engines()
        assert fast._fast is not None
        fast._fast.templates.update(
            {(b"%d" % i, True, 1, False, 0, 0): None for i in range(MAX_TEMPLATES)}
        )
        data = dns.message.make_query(f"host1.{PLAIN}", "A").to_wire()
        fast.handle(data, "192.0.2.7", False, lambda reply: None)
        self.assertEqual(len(fast._fast.templates), 1)


class ParseTests(SynchronousTestCase):
    """
    Which messages the fast path reads, and which it leaves to dnspython.
    """

    def test_plain(self) -> None:
        """A plain query: its name lower-cased, its labels, type, no EDNS."""
        data = dns.message.make_query("WwW.Example.ORG", "MX").to_wire()
        self.assertEqual(
            parse(data),
            (
                0x0100,
                b"\3www\7example\3org\0",
                [0, 4, 12],
                dns.rdatatype.MX,
                33,
                False,
                0,
                0,
            ),
        )

    def test_edns(self) -> None:
        """EDNS version 0 without options: its payload and DO."""
        data = dns.message.make_query(
            "example.org", "A", use_edns=0, payload=1400, want_dnssec=True
        ).to_wire()
        query = parse(data)
        assert query is not None
        self.assertEqual(query[5:], (True, 1400, 0x8000))

    def test_general(self) -> None:
        """Anything else is left to the general path."""
        base = dns.message.make_query("example.org", "A").to_wire()
        header = struct.Struct("!HHHHHH")
        ident, flags, _, _, _, _ = header.unpack_from(base)
        question = base[12:]
        cases = {
            "short": base[:16],
            "response": header.pack(ident, flags | 0x8000, 1, 0, 0, 0) + question,
            "notify": header.pack(ident, 4 << 11, 1, 0, 0, 0) + question,
            "two questions": header.pack(ident, flags, 2, 0, 0, 0) + question * 2,
            "an answer": header.pack(ident, flags, 1, 1, 0, 0) + question,
            "trailing": base + b"\0",
            "pointer": base[:12] + b"\xc0\x0c\0\1\0\1",
            "long label": base[:12] + b"\x40" + b"a" * 64 + b"\0\0\1\0\1",
            "chaos": base[:-2] + b"\0\3",
            "options": dns.message.make_query(
                "example.org", "A", use_edns=0, options=[dns.edns.NSIDOption(b"")]
            ).to_wire(),
            "version 1": dns.message.make_query(
                "example.org", "A", use_edns=1
            ).to_wire(),
        }
        self.assertEqual({k: parse(v) for k, v in cases.items()}, dict.fromkeys(cases))


class DatagramTests(SynchronousTestCase):
    """
    L{DNSDatagram} writes replies with the UDP port's socket.
    """

    def listen(self) -> tuple[udp.Port, socket.socket]:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "plain.zone"
        path.write_text(zoneText(PLAIN))
        engine = Engine()
        engine.setZone(loadZone(PLAIN, str(path)))
        port = udp.Port(
            0,
            DNSDatagram(engine),
            interface="127.0.0.1",
            reactor=MemoryReactorClock(),
        )
        port.startListening()
        self.addCleanup(port.connectionLost)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.bind(("127.0.0.1", 0))
        client.settimeout(5)
        return port, client

    def test_reply(self) -> None:
        """The reply reaches the client from the port."""
        port, client = self.listen()
        query = dns.message.make_query(f"host1.{PLAIN}", "A")
        port.protocol.datagramReceived(query.to_wire(), client.getsockname())
        data, source = client.recvfrom(512)
        self.assertEqual(source, ("127.0.0.1", port.getHost().port))
        self.assertEqual(
            dns.message.from_wire(data).answer[0].to_text(),
            f"host1.{PLAIN}. 3600 IN A 192.0.2.10",
        )

    def test_bufferFull(self) -> None:
        """A reply the socket has no room for is lost, not raised."""
        port, client = self.listen()

        def full(data: bytes, addr: Any) -> int:
            raise BlockingIOError(errno.EAGAIN, "full")

        port.protocol._sendto = full
        query = dns.message.make_query(f"host1.{PLAIN}", "A")
        port.protocol.datagramReceived(query.to_wire(), client.getsockname())
        self.assertEqual(self.flushLoggedErrors(), [])
