"""
Tests for L{netplugins.dns.transfer}: AXFR and IXFR out to listed networks
with TSIG (dnspython, dig), refused otherwise, and NOTIFY bringing NSD, as a
secondary, to a new serial.
"""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path
from typing import Any

import dns.query
import dns.rdatatype
import dns.tsigkeyring
import dns.zone
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.dns.transfer import _serialNewer
from netplugins.tap.dns import DNSSettings, dnsService
from tests import dnsfixtures
from tests.dnsfixtures import PLAIN, need, zoneText
from tests.support import freePort, runTwistd, waitForPort

SECRET = base64.b64encode(b"a shared secret of 32 bytes, ok!").decode("ascii")
KEY = "xfr.key"
KEYRING = dns.tsigkeyring.from_text({KEY: ("hmac-sha256", SECRET)})

#: Enough records for a transfer of several messages, each TSIG-signed.
GENERATED = "$GENERATE 1-2000 host$ IN A 192.0.2.1\n"


class SerialTests(SynchronousTestCase):
    """
    Serial numbers compare in RFC 1982 arithmetic.
    """

    def test_wraps(self) -> None:
        """2 is after 4294967295; 1 is not after 2, nor 1 after itself."""
        self.assertEqual(
            [_serialNewer(2, 2**32 - 1), _serialNewer(1, 2), _serialNewer(1, 1)],
            [True, False, False],
        )


class TransferTests(TestCase):
    """
    twistd np-dns with --allow-transfer 127.0.0.0/8 and a TSIG key.
    """

    def start(self, *extra: str, serial: int = 1) -> int:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        self.zone = self.directory / "z.zone"
        self.zone.write_text(zoneText(PLAIN, serial) + GENERATED)
        secret = self.directory / "xfr.secret"
        secret.write_text(SECRET + "\n")
        port = freePort()
        self.process = runTwistd(
            self, "np-dns", "--zone", f"{PLAIN}={self.zone}",
            "--tsig-key", f"{KEY}:hmac-sha256:{secret}",
            "--listen", f"udp:{port}:interface=127.0.0.1",
            "--listen", f"tcp:{port}:interface=127.0.0.1",
            *extra,
        )  # fmt: skip
        waitForPort(port, self.process)
        return port

    def test_axfrTSIG(self) -> Deferred[None]:
        """dnspython transfers the whole zone, every message's TSIG verified."""
        port = self.start("--allow-transfer", "127.0.0.0/8")

        def transfer() -> tuple[int, int]:
            zone = dns.zone.from_xfr(
                dns.query.xfr(
                    "127.0.0.1", PLAIN, port=port, keyring=KEYRING, keyname=KEY
                )
            )
            return len(list(zone.iterate_rdatas())), zone.get_soa().serial

        def check(result: tuple[int, int]) -> None:
            records, serial = result
            self.assertEqual(serial, 1)
            self.assertGreater(records, 2000)

        return deferToThread(transfer).addCallback(check)

    def test_digAXFRAndIXFR(self) -> Deferred[None]:
        """dig with the key gets the zone; IXFR from the current serial, the SOA."""
        dig = need("dig")
        port = self.start("--allow-transfer", "127.0.0.0/8")
        base = [dig, "-p", str(port), "@127.0.0.1", "-y", f"hmac-sha256:{KEY}:{SECRET}"]

        def run() -> list[str]:
            return [
                subprocess.run(
                    [*base, PLAIN, kind], capture_output=True, text=True, timeout=30
                ).stdout
                for kind in ("AXFR", "IXFR=1")
            ]

        def check(outputs: list[str]) -> None:
            axfr, ixfr = outputs
            self.assertIn("host1999.example.org.", axfr)
            self.assertNotIn("Transfer failed", axfr)
            records = [
                line
                for line in ixfr.splitlines()
                if line and not line.startswith(";") and "TSIG" not in line
            ]
            self.assertEqual(len(records), 1)
            self.assertIn("SOA", records[0])

        return deferToThread(run).addCallback(check)

    def test_refused(self) -> Deferred[None]:
        """Without the key, with a wrong key, or from outside the networks: no zone."""
        dig = need("dig")
        port = self.start("--allow-transfer", "10.0.0.0/8")
        wrong = base64.b64encode(b"x" * 32).decode("ascii")

        def run() -> list[str]:
            return [
                subprocess.run(
                    [dig, "-p", str(port), "@127.0.0.1", *key, PLAIN, "AXFR"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                ).stdout
                for key in (
                    [],
                    ["-y", f"hmac-sha256:{KEY}:{wrong}"],
                    ["-y", f"hmac-sha256:{KEY}:{SECRET}"],
                )
            ]

        def check(outputs: list[str]) -> None:
            for out in outputs:
                self.assertNotIn("host1.example.org.\t", out)
                self.assertIn("failed", out.lower())
            self.assertIn("not in --allow-transfer", self.process.output())

        return deferToThread(run).addCallback(check)

    def test_notifyNSDSecondary(self) -> Deferred[None]:
        """NSD as a secondary transfers serial 1, then serial 2 after a NOTIFY."""
        nsdPort = freePort()
        port = self.start(
            "--allow-transfer", "127.0.0.0/8", "--notify", f"127.0.0.1:{nsdPort}"
        )
        nsdDir = self.directory / "nsd"
        nsdDir.mkdir()
        extra = (
            f'key:\n  name: {KEY}\n  algorithm: hmac-sha256\n  secret: "{SECRET}"\n'
            f"zone:\n  name: {PLAIN}\n"
            f'  zonefile: "{nsdDir}/secondary.zone"\n'
            f"  request-xfr: AXFR 127.0.0.1@{port} {KEY}\n"
            f"  allow-notify: 127.0.0.1 {KEY}\n"
        )
        dnsfixtures.startNSD(self, {}, nsdDir, extra=extra, port=nsdPort)

        def nsdSerial() -> int | None:
            try:
                reply = dns.query.udp(
                    dns.message.make_query(PLAIN, "SOA"),
                    "127.0.0.1",
                    port=nsdPort,
                    timeout=2,
                )
            except dns.exception.Timeout:
                return None
            for rrset in reply.answer:
                if rrset.rdtype == dns.rdatatype.SOA:
                    return rrset[0].serial  # type: ignore[no-any-return]
            return None

        def waitFor(serial: int) -> bool:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if nsdSerial() == serial:
                    return True
                time.sleep(0.2)
            return False

        def scenario() -> list[Any]:
            seen: list[Any] = [waitFor(1)]
            # A new serial in the file: np-dns notices it, reloads, notifies.
            self.zone.write_text(zoneText(PLAIN, 2) + GENERATED)
            seen.append(waitFor(2))
            return seen

        return deferToThread(scenario).addCallback(self.assertEqual, [True, True])

    def test_secondary(self) -> Deferred[None]:
        """np-dns as a secondary transfers serial 1, then serial 2 after a NOTIFY."""
        secondaryPort = freePort()
        port = self.start(
            "--allow-transfer", "127.0.0.0/8", "--notify", f"127.0.0.1:{secondaryPort}"
        )
        secret = self.directory / "xfr.secret"
        service = dnsService(
            DNSSettings(
                secondary=(f"{PLAIN}=127.0.0.1:{port}",),
                tsigKey=(f"{KEY}:hmac-sha256:{secret}",),
                listen=(f"udp:{secondaryPort}:interface=127.0.0.1",),
                rrl=0,
            )
        )
        service.startService()
        self.addCleanup(service.stopService)

        def serial() -> int | None:
            reply = dns.query.udp(
                dns.message.make_query(PLAIN, "SOA"),
                "127.0.0.1",
                port=secondaryPort,
                timeout=2,
            )
            for rrset in reply.answer:
                return rrset[0].serial  # type: ignore[no-any-return]
            return None

        def waitFor(value: int) -> bool:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if serial() == value:
                    return True
                time.sleep(0.2)
            return False

        def scenario() -> list[bool]:
            seen = [waitFor(1)]
            self.zone.write_text(zoneText(PLAIN, 2) + GENERATED)
            seen.append(waitFor(2))
            return seen

        return deferToThread(scenario).addCallback(self.assertEqual, [True, True])
