"""
np-smtp's relay to MX hosts (C{--relay-by-mx}): NSD answers the MX lookups,
aiosmtpd on port 25 of a loopback address is the domains' mail server.
"""

from __future__ import annotations

import os
import random
import smtplib
import socket
import ssl
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from netplugins.mail.smtp.relay import mxRelay
from netplugins.mail.smtp.server import SMTPServer
from netplugins.tap.smtp import SMTPSettings
from tests import dnsfixtures
from tests.mailfixtures import waitForSessions, writeHtpasswd
from tests.pki import PKI
from tests.test_smtp import eventually, maildirMessages
from tests.test_smtp_queue import MESSAGE, RelayingMixin, Sink, deliveryStatus

ZONE = """\
$ORIGIN remote.test.
$TTL 300
@         IN SOA ns hostmaster ( 1 7200 3600 1209600 300 )
          IN NS  ns
ns        IN A   127.0.0.1
@         IN MX  10 mx1
@         IN MX  20 mx2
mx1       IN A   {dead}
mx2       IN A   {live}
implicit  IN A   {live}
null      IN MX  0 .
v6        IN MX  10 mx6
mx6       IN A   {dead}
          IN AAAA ::1
"""


def loopbackAddress() -> str:
    """
    A random 127.x.y.z address, so that port 25 is free on it.
    """
    return "127." + ".".join(str(random.randint(2, 254)) for _ in range(3))


class MXRelayTests(RelayingMixin, TestCase):
    """
    smtplib submits to np-smtp with C{--relay-by-mx}; NSD and aiosmtpd are
    the world.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.pki = PKI(os.path.join(self.directory, "pki"))
        self.cert, self.key = self.pki.serverCertificate("localhost", "127.0.0.1")
        self.htpasswd = writeHtpasswd(self.directory)
        self.sink = Sink()
        waitForSessions(self, SMTPServer)
        # Port 25 of mx2's address: the mail server (STARTTLS offered, with
        # a certificate np-smtp does not check); mx1's refuses connections.
        self.live, dead = loopbackAddress(), loopbackAddress()
        from aiosmtpd.controller import Controller

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        controller = Controller(
            self.sink, hostname=self.live, port=25, tls_context=context
        )
        controller.start()
        self.addCleanup(controller.stop)
        zones = Path(self.directory) / "dns"
        zones.mkdir()
        zone = zones / "remote.zone"
        zone.write_text(ZONE.format(dead=dead, live=self.live))
        _, self.nameserverPort = dnsfixtures.startNSD(
            self, {"remote.test": zone}, zones
        )

    def start(self) -> int:
        """
        Start np-smtp relaying by MX, NSD as its name server; its port.
        """
        return self.startRelaying(
            relayByMX=True,
            mxNameserver=(f"127.0.0.1:{self.nameserverPort}",),
        )

    def test_mxHosts(self) -> Deferred[None]:
        """
        The first MX refuses, the second takes; a domain without MX gets it
        at its address; null MX and a missing domain bounce to the sender.
        """

        async def run() -> None:
            self.sink.refuse["nobody@remote.test"] = "550 5.1.1 No such user here"
            port = self.start()
            refused = await self.submit(
                port,
                [
                    "bob@remote.test",
                    "nobody@remote.test",
                    "carol@implicit.remote.test",
                    "dan@null.remote.test",
                    "eve@nx.remote.test",
                ],
            )
            self.assertEqual(refused, {})
            await eventually(lambda: len(self.sink.envelopes) == 2 or None)
            self.assertEqual(
                sorted(e.rcpt_tos[0] for e in self.sink.envelopes),
                ["bob@remote.test", "carol@implicit.remote.test"],
            )
            for envelope in self.sink.envelopes:
                self.assertEqual(envelope.mail_from, "alice@example.org")
                self.assertTrue(envelope.content.endswith(MESSAGE))
            [report] = await eventually(
                lambda: (
                    maildirMessages(os.path.join(self.directory, "mail"), "alice")
                    or None
                )
            )
            _, blocks = deliveryStatus(report)
            self.assertEqual(
                sorted((b["Final-Recipient"], b["Status"]) for b in blocks[1:]),
                [
                    ("rfc822; dan@null.remote.test", "5.1.10"),
                    ("rfc822; eve@nx.remote.test", "5.1.2"),
                    ("rfc822; nobody@remote.test", "5.1.1"),
                ],
            )
            # The MX host's own refusal, without naming a smarthost.
            [remote] = [b for b in blocks[1:] if "nobody" in b["Final-Recipient"]]
            self.assertEqual(
                (remote["Diagnostic-Code"], remote["Remote-MTA"]),
                ("smtp; 550 5.1.1 No such user here", None),
            )
            await eventually(lambda: self.queueFiles() == [] or None)

        return ensureDeferred(run())

    def test_ipv6(self) -> Deferred[None]:
        """An MX host's IPv6 address is tried once its IPv4 one refuses."""
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
        from aiosmtpd.controller import Controller

        controller = Controller(self.sink, hostname="::1", port=port)
        controller.start()
        self.addCleanup(controller.stop)
        relay = mxRelay(
            "mx.test",
            reactor,
            nameservers=[("127.0.0.1", self.nameserverPort)],
            port=port,
        )

        async def run() -> None:
            numOk, entries = await relay(
                "alice@example.org", ["frank@v6.remote.test"], MESSAGE
            )
            self.assertEqual(
                (numOk, [e[:2] for e in entries]), (1, [(b"frank@v6.remote.test", 250)])
            )
            [envelope] = self.sink.envelopes
            self.assertEqual(envelope.rcpt_tos, ["frank@v6.remote.test"])

        return ensureDeferred(run())

    def test_noOpenRelay(self) -> Deferred[None]:
        """A client that did not log in cannot relay by MX: 550 at RCPT."""

        def send(port: int) -> Any:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo()
                client.mail("stranger@elsewhere.test")
                return client.rcpt("bob@remote.test")

        async def run() -> None:
            code, _ = await deferToThread(send, self.start())
            self.assertEqual(code, 550)
            self.assertEqual(self.queueFiles(), [])

        return ensureDeferred(run())

    def test_optionsRefused(self) -> None:
        """--relay-by-mx with --smarthost is refused; a bad name server too."""
        with self.assertRaises(ValueError):
            SMTPSettings(relayByMX=True, smarthost="relay.example:25")
        with self.assertRaises(ValueError):
            SMTPSettings(relayByMX=True, mxNameserver=("nonsense",))
