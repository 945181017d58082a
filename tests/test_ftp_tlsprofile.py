"""
np-ftp's TLS profile seen by sslscan (Debian's C{sslscan}): explicit
C{AUTH TLS} and implicit FTPS offer what the other services offer
(protocols, cipher suites, groups, no renegotiation), and TLS 1.3 alone with
C{--tls-min-version 1.3}; and, in memory, the TLS 1.2 cap np-ftp falls back
to where OpenSSL's ticket count cannot be set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from typing import Any

from attrs import evolve
from twisted.trial.unittest import SynchronousTestCase

from netplugins.ftp.tls import FTPServerTLS
from netplugins.tls.identity import TLSSettings
from tests.support import freePort, runTwistd, waitForPort
from tests.test_tls import Pair, RawClient, TLSTestMixin


def sslscan(port: int, *options: str) -> dict[str, Any]:
    """
    Scan 127.0.0.1:C{port} with sslscan; the enabled protocols, the cipher
    suites and key exchange groups by protocol, and renegotiation.
    """
    done = subprocess.run(
        ["sslscan", "--no-colour", "--xml=-", *options, f"127.0.0.1:{port}"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    text = done.stdout.decode()
    document = ElementTree.fromstring(text[text.index("<?xml") :])
    test = document.find("ssltest")
    assert test is not None, text
    ciphers: dict[str, list[str]] = {}
    for cipher in test.iter("cipher"):
        ciphers.setdefault(cipher.get("sslversion", ""), []).append(
            cipher.get("cipher", "")
        )
    groups: dict[str, set[str]] = {}
    for group in test.iter("group"):
        groups.setdefault(group.get("sslversion", ""), set()).add(group.get("name", ""))
    renegotiation = test.find("renegotiation")
    return {
        "protocols": {
            f"{p.get('type')}{p.get('version')}"
            for p in test.iter("protocol")
            if p.get("enabled") == "1"
        },
        "ciphers": ciphers,
        "groups": groups,
        "renegotiation": None
        if renegotiation is None
        else renegotiation.get("supported"),
    }


class ProfileTests(SynchronousTestCase):
    """
    sslscan against twistd np-ftp and twistd np-echo on one state directory
    (one development certificate).
    """

    def setUp(self) -> None:
        if shutil.which("sslscan") is None:
            raise AssertionError("sslscan is missing (scripts/debian-packages.txt)")
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.state = os.path.join(self.base, "state")

    def serve(self, name: str, *args: str) -> None:
        """
        Run C{twistd NAME ARGS} on the shared state directory until cleanup.
        """
        server = runTwistd(self, name, "--state-dir", self.state, *args, cwd=self.base)
        for arg in args:
            if arg.startswith("tcp:"):
                waitForPort(int(arg.split(":")[1]), server)

    def ftp(self, *options: str) -> tuple[int, int]:
        """
        Start np-ftp with C{options}: its explicit and implicit ports.
        """
        port, tlsPort = freePort(), freePort()
        self.serve(
            "np-ftp",
            "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--listen-tls", f"tcp:{tlsPort}:interface=127.0.0.1",
            "--auth", "file:" + os.devnull,
            "--root", os.path.join(self.base, "homes", "{user}"),
            *options,
        )  # fmt: skip
        return port, tlsPort

    def echo(self) -> dict[str, Any]:
        """
        np-echo's profile (implicit TLS, the shared defaults).
        """
        port = freePort()
        self.serve("np-echo", "--listen-tls", f"tcp:{port}:interface=127.0.0.1")
        return sslscan(port)

    def test_sameProfile(self) -> None:
        """AUTH TLS and implicit FTPS: np-echo's protocols, suites, groups."""
        port, tlsPort = self.ftp()
        explicit = sslscan(port, "--starttls-ftp")
        implicit = sslscan(tlsPort)
        echo = self.echo()
        self.assertEqual(echo["protocols"], {"tls1.2", "tls1.3"})
        self.assertEqual(explicit, implicit)
        self.assertEqual(explicit, echo)
        self.assertTrue(explicit["ciphers"]["TLSv1.2"])
        self.assertTrue(explicit["ciphers"]["TLSv1.3"])
        self.assertEqual(explicit["renegotiation"], "0")

    def test_tls13Only(self) -> None:
        """--tls-min-version 1.3: TLS 1.3 alone, np-echo's 1.3 suites and groups."""
        port, tlsPort = self.ftp("--tls-min-version", "1.3")
        explicit = sslscan(port, "--starttls-ftp")
        echo = self.echo()
        self.assertEqual(explicit["protocols"], {"tls1.3"})
        self.assertEqual(sslscan(tlsPort), explicit)
        self.assertEqual(explicit["ciphers"], {"TLSv1.3": echo["ciphers"]["TLSv1.3"]})
        self.assertEqual(explicit["groups"], {"TLSv1.3": echo["groups"]["TLSv1.3"]})


class FallbackTests(TLSTestMixin, SynchronousTestCase):
    """
    np-ftp's TLS where OpenSSL's ticket count cannot be set: TLS 1.2 at most.
    """

    def test_capped(self) -> None:
        """Without ticket control FTPS stops at TLS 1.2, unless the minimum is 1.3."""
        self.patch(FTPServerTLS, "dataTicketsOff", False)
        settings = TLSSettings(certificates=(self.a,))
        capped = FTPServerTLS(settings, reactor=self.clock)
        modern = FTPServerTLS(evolve(settings, minVersion="1.3"), reactor=self.clock)
        self.assertEqual(
            [
                Pair(capped, RawClient(), self.clock).version(),
                Pair(modern, RawClient(), self.clock).version(),
            ],
            ["TLSv1.2", "TLSv1.3"],
        )

    def test_notCapped(self) -> None:
        """With ticket control (here) FTPS offers TLS 1.3."""
        self.assertTrue(FTPServerTLS.dataTicketsOff)
        capped = FTPServerTLS(TLSSettings(certificates=(self.a,)), reactor=self.clock)
        self.assertEqual(Pair(capped, RawClient(), self.clock).version(), "TLSv1.3")
