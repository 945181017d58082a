"""
Tests for L{netplugins.dns.signing}: zones signed at load with
C{--dnssec-key}, answers validated with dnspython against the DNSKEY, the
transferred zone checked by C{ldns-verify-zone}, signatures renewed on
SIGHUP and by the periodic re-signing.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsigkeyring
import dns.zone
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.dns import signing
from netplugins.dns.signing import makeKey, readKey, stateKeys
from netplugins.dns.zone import loadZone
from netplugins.dns.zonefiles import ZoneFile, ZoneFiles
from netplugins.tap.dns import DNSSettings, dnsService
from tests.dnsfixtures import PLAIN, need, zoneText
from tests.support import freePort, runTwistd, waitForPort
from tests.test_dns_transfer import KEY, KEYRING, SECRET

ORIGIN = dns.name.from_text(PLAIN)
IN = dns.rdataclass.IN
DNSKEY = dns.rdatatype.DNSKEY


def ldnsKey(directory: Path, algorithm: str, *flags: str) -> Path:
    """
    Make a key with C{ldns-keygen} in C{directory}: the C{.private} file.
    """
    out = subprocess.run(
        [need("ldns-keygen"), "-a", algorithm, *flags, PLAIN],
        cwd=directory,
        check=True,
        capture_output=True,
        text=True,
    )
    return directory / (out.stdout.strip() + ".private")


def ask(port: int, name: str, rdtype: str, tcp: bool = False) -> dns.message.Message:
    """
    Ask np-dns with DO set.
    """
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", port=port, timeout=5)


def validated(reply: dns.message.Message, keys: dict[Any, Any]) -> list[str]:
    """
    Validate every RRset of C{reply}'s answer and authority sections with
    its RRSIG against C{keys}; the RRsets' names and types.
    """
    checked = []
    for section in (reply.answer, reply.authority):
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.RRSIG:
                continue
            sig = reply.find_rrset(
                section, rrset.name, rrset.rdclass, dns.rdatatype.RRSIG, rrset.rdtype
            )
            dns.dnssec.validate(rrset, sig, keys)
            checked.append(f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}")
    return checked


class KeyFileTests(SynchronousTestCase):
    """
    Keys in BIND's private-key format.
    """

    def test_ldnsKeys(self) -> None:
        """ldns-keygen's ECDSA KSK and ED25519 ZSK read with their own DNSKEYs."""
        directory = Path(self.mktemp())
        directory.mkdir()
        ksk = readKey(ORIGIN, str(ldnsKey(directory, "ECDSAP256SHA256", "-k")))
        zsk = readKey(ORIGIN, str(ldnsKey(directory, "ED25519")))
        self.assertEqual(
            [(k.dnskey.algorithm, k.dnskey.flags) for k in (ksk, zsk)],
            [(13, 257), (15, 256)],
        )
        for key in (ksk, zsk):
            text = Path(key.path.removesuffix(".private") + ".key").read_text()
            self.assertIn(key.dnskey.to_text().split()[-1], text)

    def test_madeOnce(self) -> None:
        """A missing state key is made (0600) and read back the next time."""
        directory = self.mktemp()
        made = stateKeys(ORIGIN, directory)
        again = stateKeys(ORIGIN, directory)
        self.assertEqual(
            [made[0].dnskey, Path(made[0].path).stat().st_mode & 0o777],
            [again[0].dnskey, 0o600],
        )

    def test_badFiles(self) -> None:
        """Unreadable, malformed and RSA key files are usage errors."""
        directory = Path(self.mktemp())
        directory.mkdir()
        bad = directory / "bad.private"
        bad.write_text("hello\n")
        rsa = ldnsKey(directory, "RSASHA256")
        for path in (directory / "none.private", bad, rsa):
            settings = DNSSettings(
                zone=(f"{PLAIN}=/dev/null",), dnssecKey=(f"{PLAIN}={path}",)
            )
            self.assertRaises(ValueError, dnsService, settings)

    def test_keyWithoutZone(self) -> None:
        """A --dnssec-key for an origin no --zone serves is a usage error."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "z.zone"
        path.write_text(zoneText(PLAIN))
        settings = DNSSettings(
            zone=(f"{PLAIN}={path}",),
            dnssecKey=("other.example",),
            stateDir=str(directory),
        )
        error = self.assertRaises(ValueError, dnsService, settings)
        self.assertIn("no --zone", str(error))

    def test_presignedReplaced(self) -> None:
        """Signing drops the file's RRSIG and NSEC records and makes its own."""
        directory = Path(self.mktemp())
        directory.mkdir()
        key = makeKey(ORIGIN, str(directory))
        first = directory / "first.zone"
        first.write_text(zoneText(PLAIN))
        signed = loadZone(ORIGIN, str(first), [key])
        text = "\n".join(r.to_text() for r in signed.rrsets())
        again = directory / "again.zone"
        again.write_text(text + "\n")
        twice = loadZone(ORIGIN, str(again), [key])
        self.assertEqual(
            [signed.records, signed.signed, len(twice.nsec)],
            [twice.records, True, len(signed.nsec)],
        )


class SignedServerTests(TestCase):
    """
    twistd np-dns signing a zone at load with an ldns-keygen key.
    """

    def start(self) -> int:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        self.zone = self.directory / "z.zone"
        self.zone.write_text(zoneText(PLAIN, 1))
        self.key = ldnsKey(self.directory, "ECDSAP256SHA256", "-k")
        secret = self.directory / "xfr.secret"
        secret.write_text(SECRET + "\n")
        port = freePort()
        self.process = runTwistd(
            self, "np-dns", "--zone", f"{PLAIN}={self.zone}",
            "--dnssec-key", f"{PLAIN}={self.key}",
            "--tsig-key", f"{KEY}:hmac-sha256:{secret}",
            "--allow-transfer", "127.0.0.0/8",
            "--listen", f"udp:{port}:interface=127.0.0.1",
            "--listen", f"tcp:{port}:interface=127.0.0.1",
        )  # fmt: skip
        waitForPort(port, self.process)
        return port

    def test_validates(self) -> Deferred[None]:
        """
        Answers, referrals' DS, NXDOMAIN and NODATA denials validate against
        the DNSKEY (itself signed), over UDP (the fast path) and TCP.
        """
        port = self.start()

        def scenario() -> list[Any]:
            dnskey = ask(port, PLAIN, "DNSKEY")
            keys = {ORIGIN: dnskey.find_rrset(dnskey.answer, ORIGIN, IN, DNSKEY)}
            results: list[Any] = [validated(dnskey, keys)]
            for tcp in (False, True):
                for name, rdtype in [
                    ("HOST1." + PLAIN, "A"),
                    ("x.wild." + PLAIN, "TXT"),
                    ("nothere." + PLAIN, "A"),
                    ("host1." + PLAIN, "MX"),
                ]:
                    reply = ask(port, name, rdtype, tcp)
                    results.append((reply.rcode(), validated(reply, keys)))
            denial = ask(port, "nothere." + PLAIN, "A")
            nsec = [r for r in denial.authority if r.rdtype == dns.rdatatype.NSEC]
            asked = dns.name.from_text("nothere." + PLAIN)
            results.append(
                any(r.name < asked < r[0].next for r in nsec)  # type: ignore[attr-defined]
            )
            return results

        def check(results: list[Any]) -> None:
            self.maxDiff = None
            self.assertEqual(results[0], [f"{PLAIN}. DNSKEY", f"{PLAIN}. NS"])
            answers = results[1:5]
            self.assertEqual(answers, results[5:9])
            self.assertEqual(
                answers,
                [
                    (0, [f"HOST1.{PLAIN}. A", f"{PLAIN}. NS"]),
                    (
                        0,
                        [
                            f"x.wild.{PLAIN}. TXT",
                            f"*.wild.{PLAIN}. NSEC",
                            f"{PLAIN}. NS",
                        ],
                    ),
                    (3, [f"{PLAIN}. SOA", f"mail.{PLAIN}. NSEC", f"{PLAIN}. NSEC"]),
                    (0, [f"{PLAIN}. SOA", f"host1.{PLAIN}. NSEC"]),
                ],
            )
            self.assertTrue(results[9])

        return deferToThread(scenario).addCallback(check)

    def test_digAndLdns(self) -> Deferred[None]:
        """dig +dnssec shows RRSIGs; ldns-verify-zone accepts the AXFR'd zone."""
        port = self.start()
        dig = need("dig")
        verify = need("ldns-verify-zone")

        def scenario() -> tuple[str, subprocess.CompletedProcess[str]]:
            shown = subprocess.run(
                [dig, "@127.0.0.1", "-p", str(port), "+dnssec", "+norec",
                 "host1." + PLAIN, "A"],
                capture_output=True, text=True, timeout=20, check=True,
            ).stdout  # fmt: skip
            zone = dns.zone.from_xfr(
                dns.query.xfr(
                    "127.0.0.1",
                    PLAIN,
                    port=port,
                    keyring=KEYRING,
                    keyname=KEY,
                    relativize=False,
                ),
                relativize=False,
            )
            path = self.directory / "axfr.zone"
            path.write_text(zone.to_text(relativize=False))
            checked = subprocess.run(
                [verify, str(path)], capture_output=True, text=True, timeout=30
            )
            return shown, checked

        def check(result: tuple[str, subprocess.CompletedProcess[str]]) -> None:
            shown, checked = result
            self.assertRegex(shown, r"RRSIG\s+A 13 3 3600 \d{14} \d{14} ")
            self.assertEqual(
                (checked.returncode, checked.stderr), (0, ""), checked.stdout
            )

        return deferToThread(scenario).addCallback(check)

    def test_sighupResigns(self) -> Deferred[None]:
        """After SIGHUP the changed record is served, signed with the new data."""
        port = self.start()

        def scenario() -> list[Any]:
            dnskey = ask(port, PLAIN, "DNSKEY")
            keys = {ORIGIN: dnskey.find_rrset(dnskey.answer, ORIGIN, IN, DNSKEY)}
            before = ask(port, "host1." + PLAIN, "A")
            self.zone.write_text(zoneText(PLAIN, 1).replace("192.0.2.10", "192.0.2.11"))
            self.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                after = ask(port, "host1." + PLAIN, "A")
                if after.answer[0][0].address == "192.0.2.11":  # type: ignore[attr-defined]
                    break
                time.sleep(0.1)
            return [
                before.answer[0][0].address,  # type: ignore[attr-defined]
                after.answer[0][0].address,  # type: ignore[attr-defined]
                validated(after, keys),
            ]

        return deferToThread(scenario).addCallback(
            self.assertEqual,
            ["192.0.2.10", "192.0.2.11", [f"host1.{PLAIN}. A", f"{PLAIN}. NS"]],
        )


class ResignTests(TestCase):
    """
    The periodic re-signing renews the signatures of an unchanged zone.
    """

    def test_resign(self) -> Deferred[None]:
        """A re-signing makes signatures with a later inception and expiration."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "z.zone"
        path.write_text(zoneText(PLAIN))
        key = makeKey(ORIGIN, str(directory))
        served: list[Any] = []
        files = ZoneFiles([ZoneFile(ORIGIN, str(path), (key,))], served.append, reactor)
        files.loadNow()
        clock = [time.time() + signing.RESIGN_INTERVAL]

        class Later:
            @staticmethod
            def time() -> float:
                return clock[0]

        self.patch(signing, "time", Later)

        def windows() -> list[tuple[int, int]]:
            return [
                (sig[0].inception, sig[0].expiration)  # type: ignore[attr-defined]
                for sig in (zone.nodes[zone.originKey].sigs[6] for zone in served)
            ]

        def check(_: object) -> None:
            (firstStart, _), (start, end) = windows()
            self.assertEqual(
                [start, end - start],
                [
                    int(clock[0]) - signing.INCEPTION_SKEW,
                    signing.SIGNATURE_LIFETIME + signing.INCEPTION_SKEW,
                ],
            )
            self.assertGreater(start, firstStart)

        return files.resign().addCallback(check)
