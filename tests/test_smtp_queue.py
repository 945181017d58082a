"""
Tests for L{netplugins.mail.smtp.queue} (np-smtp's durable relay queue),
L{netplugins.mail.smtp.queuedir} and L{netplugins.mail.smtp.dsn}: the queue in
memory on a L{Clock} with a scripted relay, then smtplib submitting to
np-smtp and aiosmtpd as the smarthost over real sockets (down, then up; 5xx;
a restart before delivery; expiry).
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import smtplib
import ssl
import subprocess
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import (
    Deferred,
    ensureDeferred,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs
from twisted.mail.smtp import SMTPConnectError, SMTPDeliveryError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.mail.maildir import files
from netplugins.mail.smtp.dsn import deliveryReport, statusOf
from netplugins.mail.smtp.queue import RelayQueue, replies
from netplugins.mail.smtp.queuedir import (
    QUEUE_ID,
    Envelope,
    LockedError,
    QueueDirectory,
    Recipient,
)
from netplugins.mail.smtp.server import SMTPServer
from netplugins.service import listeningPorts
from netplugins.tap.smtp import SMTPSettings, smtpService
from tests.mailfixtures import DOMAIN, waitForSessions, writeHtpasswd
from tests.pki import PKI
from tests.support import freePort
from tests.test_smtp import SMTPTestMixin, eventually, maildirMessages, plain

_T = TypeVar("_T")

MESSAGE = b"Subject: queued\r\nMessage-ID: <m1@example.org>\r\n\r\nhello\r\n"


def refusal(code: int, text: bytes, addresses: list[Any]) -> Failure:
    """
    What Twisted's sender fails with when the smarthost refused.
    """
    return Failure(SMTPDeliveryError(code, text, b"", addresses))


def refused(code: int, text: bytes, addresses: list[Any]) -> Deferred[Any]:
    """
    L{refusal}, in a Deferred.
    """
    return fail(refusal(code, text, addresses))


def deliveryStatus(report: bytes) -> tuple[Any, list[Any]]:
    """
    The parsed DSN and the blocks of its C{message/delivery-status} part.
    """
    parsed = email.message_from_bytes(report, policy=email.policy.default)
    [status] = [
        part
        for part in parsed.walk()
        if part.get_content_type() == "message/delivery-status"
    ]
    return parsed, list(status.get_payload())


class QueueMemoryTests(SMTPTestMixin, SynchronousTestCase):
    """
    The queue on a L{Clock}, its disk work inline, a scripted relay.
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = os.path.join(self.world.root, "..", "queue")
        self.sent: list[tuple[str, list[str], bytes]] = []
        self.answers: list[Callable[[list[str]], Deferred[Any]]] = []

    def relay(self, sender: str, recipients: list[str], message: bytes) -> Any:
        self.sent.append((sender, recipients, message))
        answer = self.answers.pop(0) if self.answers else None
        if answer is None:
            return super().relay(sender, recipients, message)
        return answer(recipients)

    def queue(self, **kwargs: Any) -> RelayQueue:
        return self.relayQueue(**kwargs)

    def files(self) -> list[str]:
        return sorted(n for n in os.listdir(self.path) if n != "tmp")

    def test_deliveredAndRemoved(self) -> None:
        """A committed message is sent at once and its file removed on 250."""
        queue = self.queue()
        queue.enqueue("AAAAAAAAAAAA", "alice@example.org", ["x@remote.test"], MESSAGE)
        self.assertEqual(self.sent, [("alice@example.org", ["x@remote.test"], MESSAGE)])
        self.assertEqual((self.files(), queue.queued()), ([], []))

    def test_stagedNotSent(self) -> None:
        """A staged message is on disk but not sent until committed."""
        queue = self.queue()
        queue.stage("AAAAAAAAAAAB", "alice@example.org", ["x@remote.test"], MESSAGE)
        self.assertEqual(os.listdir(os.path.join(self.path, "tmp")), ["AAAAAAAAAAAB"])
        self.assertEqual(self.sent, [])
        queue.discard("AAAAAAAAAAAB")
        self.assertEqual(os.listdir(os.path.join(self.path, "tmp")), [])
        self.assertEqual(self.sent, [])

    def test_backoff(self) -> None:
        """Temporary failures are retried after 300, 600, 1200 s, capped at 3600."""
        queue = self.queue()
        down = lambda recipients: fail(SMTPConnectError(-1, b"refused"))  # noqa: E731
        self.answers = [down] * 7
        queue.enqueue("AAAAAAAAAAAC", "alice@example.org", ["x@remote.test"], MESSAGE)
        waits = []
        for _ in range(6):
            before = len(self.sent)
            waited = 0
            while len(self.sent) == before:
                self.world.clock.advance(100)
                waited += 100
            waits.append(waited)
        self.assertEqual(waits, [300, 600, 1200, 2400, 3600, 3600])
        self.assertEqual(self.files(), ["AAAAAAAAAAAC"])
        with open(os.path.join(self.path, "AAAAAAAAAAAC"), "rb") as f:
            envelope = Envelope.decode(f.readline())
        self.assertEqual(envelope.attempts, 7)
        self.assertEqual(envelope.recipients[0].status, "pending")

    def test_partialFailure(self) -> None:
        """Each recipient keeps its status: sent, bounced, or retried alone."""
        queue = self.queue()
        self.answers = [
            lambda recipients: succeed(
                (
                    1,
                    [
                        (b"a@remote.test", 250, b"Ok"),
                        (b"b@remote.test", 550, b"5.1.1 no such user"),
                        (b"c@remote.test", 451, b"4.3.0 try later"),
                    ],
                )
            )
        ]
        queue.enqueue(
            "AAAAAAAAAAAD",
            "alice@example.org",
            ["a@remote.test", "b@remote.test", "c@remote.test"],
            MESSAGE,
        )
        self.assertEqual(self.world.newMessages("alice"), [])
        self.world.clock.advance(300)
        self.assertEqual(self.sent[-1][1], ["c@remote.test"])
        [report] = self.world.newMessages("alice")
        self.assertTrue(report.startswith(b"Return-Path: <>\r\n"))
        parsed, blocks = deliveryStatus(report)
        self.assertEqual(parsed["To"], "alice@example.org")
        self.assertEqual(
            [(b["Final-Recipient"], b["Status"], b["Action"]) for b in blocks[1:]],
            [("rfc822; b@remote.test", "5.1.1", "failed")],
        )
        self.assertEqual(self.files(), [])

    def test_dataRefused(self) -> None:
        """A 554 after DATA fails the recipients accepted at RCPT."""
        queue = self.queue()
        self.answers = [
            lambda recipients: refused(
                554, b"5.6.0 content rejected", [(b"a@remote.test", 250, b"Ok")]
            )
        ]
        queue.enqueue("AAAAAAAAAAAE", "alice@example.org", ["a@remote.test"], MESSAGE)
        [report] = self.world.newMessages("alice")
        _, blocks = deliveryStatus(report)
        self.assertEqual(blocks[1]["Status"], "5.6.0")
        self.assertEqual(
            blocks[1]["Diagnostic-Code"], "smtp; 554 5.6.0 content rejected"
        )
        self.assertEqual(blocks[1]["Remote-MTA"], "dns; relay.test:25")

    def test_expiry(self) -> None:
        """Past the lifetime a deferred recipient bounces with status 4.4.7."""
        queue = self.queue(lifetime=1000.0)
        self.answers = [lambda recipients: refused(451, b"4.3.0 busy", [])] * 10
        queue.enqueue("AAAAAAAAAAAF", "alice@example.org", ["a@remote.test"], MESSAGE)
        self.world.clock.advance(300)
        self.assertEqual(self.world.newMessages("alice"), [])
        self.world.clock.advance(900)
        [report] = self.world.newMessages("alice")
        _, blocks = deliveryStatus(report)
        self.assertEqual(blocks[1]["Status"], "4.4.7")
        self.assertEqual(self.files(), [])

    def test_remoteSenderBounceQueued(self) -> None:
        """A DSN for a remote sender is queued from <> to the smarthost."""
        queue = self.queue()
        self.answers = [lambda recipients: refused(550, b"5.7.1 no", [])]
        queue.enqueue("AAAAAAAAAAB0", "carol@remote.test", ["a@remote.test"], MESSAGE)
        [_, (sender, recipients, report)] = self.sent
        self.assertEqual((sender, recipients), ("", ["carol@remote.test"]))
        self.assertIn(b"Content-Type: message/delivery-status", report)
        self.assertEqual(self.files(), [])

    def test_neverBounceABounce(self) -> None:
        """A failed bounce (null sender) is logged and dropped, not bounced."""
        queue = self.queue()
        self.answers = [lambda recipients: refused(550, b"5.1.1 gone", [])]
        with capturedLogs() as events:
            queue.enqueue("AAAAAAAAAAB1", "", ["carol@remote.test"], MESSAGE)
        self.assertEqual(len(self.sent), 1)
        self.assertEqual(self.files(), [])
        self.assertTrue(
            any("a bounce was not delivered" in e["log_format"] for e in events)
        )

    def test_notifyNever(self) -> None:
        """NOTIFY=NEVER: a refused recipient is not reported; others are."""
        queue = self.queue()
        self.answers = [lambda recipients: refused(550, b"5.1.1 gone", [])]
        recipients = [Recipient("a@remote.test", notify=()), Recipient("b@remote.test")]
        queue.enqueue("AAAAAAAAAAC0", "alice@example.org", recipients, MESSAGE)
        [report] = self.world.newMessages("alice")
        _, blocks = deliveryStatus(report)
        self.assertEqual(
            [b["Final-Recipient"] for b in blocks[1:]], ["rfc822; b@remote.test"]
        )
        self.answers = [lambda recipients: refused(550, b"5.1.1 gone", [])]
        queue.enqueue("AAAAAAAAAAC1", "alice@example.org", recipients[:1], MESSAGE)
        self.assertEqual(len(self.world.newMessages("alice")), 1)
        self.assertEqual(self.files(), [])

    def test_notifySuccessRelayed(self) -> None:
        """NOTIFY=SUCCESS: the smarthost took it: relayed, ENVID and ORCPT echoed."""
        queue = self.queue()
        recipients = [
            Recipient(
                "a@remote.test", notify=("SUCCESS",), orcpt="rfc822;A@remote.test"
            ),
            Recipient("b@remote.test"),
        ]
        queue.enqueue(
            "AAAAAAAAAAC2", "alice@example.org", recipients, MESSAGE, envid="e-1"
        )
        [report] = self.world.newMessages("alice")
        parsed, blocks = deliveryStatus(report)
        self.assertEqual(parsed["Subject"], "Successful Mail Delivery Report")
        self.assertEqual(blocks[0]["Original-Envelope-Id"], "e-1")
        self.assertEqual(
            [
                (
                    b["Original-Recipient"],
                    b["Final-Recipient"],
                    b["Action"],
                    b["Status"],
                )
                for b in blocks[1:]
            ],
            [("rfc822;A@remote.test", "rfc822; a@remote.test", "relayed", "2.0.0")],
        )
        self.assertEqual(blocks[1]["Remote-MTA"], "dns; relay.test:25")
        self.assertEqual(self.files(), [])

    def test_notifyDelay(self) -> None:
        """NOTIFY=DELAY: one delayed DSN after the first deferral, none after."""
        queue = self.queue()
        busy = lambda recipients: refused(451, b"4.3.0 busy", [])  # noqa: E731
        self.answers = [busy, busy]
        recipients = [Recipient("a@remote.test", notify=("DELAY",))]
        queue.enqueue("AAAAAAAAAAC3", "alice@example.org", recipients, MESSAGE)
        [report] = self.world.newMessages("alice")
        parsed, blocks = deliveryStatus(report)
        self.assertEqual(parsed["Subject"], "Delayed Mail (still being retried)")
        self.assertEqual(
            (blocks[1]["Action"], blocks[1]["Status"]), ("delayed", "4.3.0")
        )
        self.assertIn("Will-Retry-Until", blocks[1])
        self.world.clock.advance(300)
        self.world.clock.advance(600)
        self.assertEqual(len(self.sent), 3)
        self.assertEqual(len(self.world.newMessages("alice")), 1)
        self.assertEqual(self.files(), [])

    def test_returnFull(self) -> None:
        """RET=FULL returns the whole message in a failure DSN; HDRS the headers."""
        queue = self.queue()
        for queueId, ret in [("AAAAAAAAAAC4", "FULL"), ("AAAAAAAAAAC5", "HDRS")]:
            self.answers = [lambda recipients: refused(550, b"5.1.1 gone", [])]
            queue.enqueue(
                queueId, "alice@example.org", ["a@remote.test"], MESSAGE, ret=ret
            )
        full, headers = self.world.newMessages("alice")
        parsed = email.message_from_bytes(full, policy=email.policy.default)
        types = [part.get_content_type() for part in parsed.walk()]
        self.assertIn("message/rfc822", types)
        self.assertIn(MESSAGE, full)
        self.assertIn(b"Content-Type: text/rfc822-headers", headers)
        self.assertNotIn(b"hello", headers)

    def test_full(self) -> None:
        """Past its size the queue refuses new mail; the space frees on delivery."""
        queue = self.queue(maxSize=len(MESSAGE) + 10)
        self.answers = [lambda recipients: Deferred()]
        queue.enqueue("AAAAAAAAAAB2", "alice@example.org", ["a@remote.test"], MESSAGE)
        failure = self.failureResultOf(
            queue.stage("AAAAAAAAAAB3", "alice@example.org", ["a@r.test"], MESSAGE)
        )
        self.assertEqual(str(failure.value), "the relay queue is full")

    def test_restart(self) -> None:
        """A new queue on the same directory sends what the old one held."""
        queue = self.queue()
        self.answers = [lambda recipients: fail(SMTPConnectError(-1, b"down"))]
        queue.enqueue("AAAAAAAAAAB4", "alice@example.org", ["a@remote.test"], MESSAGE)
        queue.stopService()
        self.assertEqual(self.files(), ["AAAAAAAAAAB4"])
        again = self.queue()
        self.assertEqual(again.queued(), ["AAAAAAAAAAB4"])
        self.world.clock.advance(300)
        self.assertEqual(len(self.sent), 2)
        self.assertEqual(self.files(), [])

    def test_stopCancelsSending(self) -> None:
        """Stopping cancels a send in progress and keeps the message queued."""
        queue = self.queue()
        sending: Deferred[Any] = Deferred()
        self.answers = [lambda recipients: sending]
        queue.enqueue("AAAAAAAAAAB5", "alice@example.org", ["a@remote.test"], MESSAGE)
        self.successResultOf(queue.stopService())
        self.assertTrue(sending.called)
        self.assertEqual(self.files(), ["AAAAAAAAAAB5"])


class QueueDirectoryTests(SynchronousTestCase):
    """
    The queue files: format, locks, stale staged files.
    """

    def test_claimedElsewhere(self) -> None:
        """A claimed message cannot be claimed again until it is released."""
        directory = QueueDirectory(self.mktemp())
        directory.prepare()
        envelope = Envelope("a@x.test", [Recipient("b@y.test")], arrival=1.0)
        directory.stage("0123456789AB", envelope, MESSAGE)
        directory.commit("0123456789AB")
        claim = directory.claim("0123456789AB")
        assert claim is not None
        self.assertEqual((claim.envelope, claim.message), (envelope, MESSAGE))
        self.assertRaises(LockedError, directory.claim, "0123456789AB")
        claim.envelope.attempts = 1
        directory.update(claim)
        again = directory.claim("0123456789AB")
        assert again is not None
        self.assertEqual(again.envelope.attempts, 1)
        directory.remove(again)
        self.assertIsNone(directory.claim("0123456789AB"))

    def test_staleStagedRemoved(self) -> None:
        """Staged files left by a crash are removed at start; the queue is listed."""
        path = self.mktemp()
        directory = QueueDirectory(path)
        directory.prepare()
        envelope = Envelope("a@x.test", [Recipient("b@y.test")], 1.0, 0, 42.0)
        directory.stage("0123456789AC", envelope, MESSAGE)
        os.utime(os.path.join(path, "tmp", "0123456789AC"), (0, 0))
        directory.stage("0123456789AD", envelope, MESSAGE)
        directory.commit("0123456789AD")
        found = directory.prepare()
        self.assertEqual(os.listdir(os.path.join(path, "tmp")), [])
        self.assertEqual([(i, n) for i, n, _ in found], [("0123456789AD", 42.0)])

    def test_envelopeBeforeDSN(self) -> None:
        """An envelope written before DSN (four recipient fields) still reads."""
        envelope = Envelope.decode(
            b'{"sender": "a@x.test", "arrival": 1.0, "attempts": 0,'
            b' "recipients": [["b@y.test", "pending", "", false]], "nextAttempt": 2}\n'
        )
        self.assertEqual(envelope.recipients, [Recipient("b@y.test")])
        self.assertEqual((envelope.ret, envelope.envid), (None, None))

    def test_badQueueId(self) -> None:
        """A queue ID is 12 upper-case hex digits: no path can be named."""
        directory = QueueDirectory(self.mktemp())
        self.assertRaises(ValueError, directory.claim, "../../etc/pw")

    def test_diskFull(self) -> None:
        """A full disk while staging leaves nothing in tmp/."""
        directory = QueueDirectory(self.mktemp())
        directory.prepare()

        def full(fd: int, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        self.patch(files, "writeAll", full)
        envelope = Envelope("a@x.test", [Recipient("b@y.test")], 1.0)
        self.assertRaises(
            files.DiskFullError, directory.stage, "0123456789AE", envelope, MESSAGE
        )
        self.assertEqual(os.listdir(directory.staging), [])


class RepliesTests(SynchronousTestCase):
    """
    What the relay's result says about each recipient.
    """

    def test_mailRefused(self) -> None:
        """MAIL refused: every recipient gets that reply."""
        out = replies(refusal(553, b"5.7.1 sender", []), ["a@x", "b@x"])
        self.assertEqual(out["b@x"], (553, "553 5.7.1 sender", True))

    def test_noneAccepted(self) -> None:
        """Every RCPT refused: each recipient its own reply."""
        result = refusal(
            -1,
            b"No recipients accepted",
            [(b"a@x", 450, b"busy"), (b"b@x", 550, b"no")],
        )
        out = replies(result, ["a@x", "b@x"])
        self.assertEqual(
            out, {"a@x": (450, "450 busy", True), "b@x": (550, "550 no", True)}
        )

    def test_connectionFailed(self) -> None:
        """No reply at all: code 0, deferred."""
        out = replies(Failure(ConnectionRefusedError("refused")), ["a@x"])
        self.assertEqual(out["a@x"][0], 0)


class DSNTests(SynchronousTestCase):
    """
    The RFC 3464 report.
    """

    def test_report(self) -> None:
        """A multipart/report with a delivery-status part and the headers."""
        report = deliveryReport(
            hostname="mx.test",
            smarthost="relay.test",
            sender="alice@example.org",
            queueId="0123456789AB",
            arrival=0.0,
            failed=[Recipient("b@y.test", "failed", "550 5.1.1 no such user", True)],
            message=MESSAGE,
        )
        parsed, blocks = deliveryStatus(report)
        self.assertEqual(parsed.get_content_type(), "multipart/report")
        self.assertEqual(parsed.get_param("report-type"), "delivery-status")
        self.assertEqual(parsed["From"], "Mail Delivery System <MAILER-DAEMON@mx.test>")
        self.assertEqual(blocks[0]["Reporting-MTA"], "dns; mx.test")
        self.assertEqual(blocks[1]["Status"], "5.1.1")
        self.assertIn(b"\r\nMessage-ID: <m1@example.org>\r\n", report)
        self.assertNotIn(b"hello", report)
        self.assertNotIn(b"\n", report.replace(b"\r\n", b""))

    def test_status(self) -> None:
        """The status comes from the enhanced code, else from the reply's class."""
        self.assertEqual(
            [statusOf(r) for r in ["550 5.7.1 x", "550 no", "expired: 451 4.3.0 x"]],
            ["5.7.1", "5.0.0", "4.4.7"],
        )


class ServerQueueTests(SMTPTestMixin, SynchronousTestCase):
    """
    The SMTP server with a relay queue: local copies once, all or nothing.
    """

    def submit(self, queue: RelayQueue, recipients: list[bytes]) -> list[str]:
        server, transport = self.secured(queue=queue)
        self.talk(
            server,
            transport,
            f"AUTH PLAIN {plain('alice', 'alice-password')}\r\n".encode(),
        )
        rcpts = b"".join(b"RCPT TO:<" + r + b">\r\n" for r in recipients)
        return self.talk(
            server,
            transport,
            b"MAIL FROM:<alice@example.org>\r\n" + rcpts + b"DATA\r\nhello\r\n.\r\n",
        )

    def test_localOnceWhenRelayFails(self) -> None:
        """Local+remote with the smarthost down: 250, one local copy, one queued."""
        queue = self.relayQueue()
        queue.relay = lambda *a: fail(SMTPConnectError(-1, b"down"))
        lines = self.submit(queue, [b"bob@example.org", b"x@remote.test"])
        self.assertTrue(lines[-1].startswith("250 2.0.0 Ok: queued as "))
        queueId = lines[-1].rsplit(" ", 1)[1]
        self.assertEqual(queue.queued(), [queueId])
        self.assertEqual(len(self.world.newMessages("bob")), 1)

    def test_localFailureDiscardsQueued(self) -> None:
        """A full disk for the local copy: 452, and nothing stays queued."""
        queue = self.relayQueue()

        def full(fd: int, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        original = files.writeAll
        calls = []

        def secondFails(fd: int, data: bytes) -> None:
            calls.append(fd)
            if len(calls) == 2:
                full(fd, data)
            original(fd, data)

        self.patch(files, "writeAll", secondFails)
        lines = self.submit(queue, [b"bob@example.org", b"x@remote.test"])
        self.assertEqual(lines[-1], "452 4.3.1 Error: insufficient system storage")
        self.assertEqual(queue.queued(), [])
        self.assertEqual(os.listdir(os.path.join(queue.directory.staging)), [])
        self.assertEqual(self.world.newMessages("bob"), [])
        self.assertEqual(self.relayed, [])

    def test_queueFull(self) -> None:
        """A full queue answers 452 4.3.1 before any local copy is made."""
        queue = self.relayQueue()
        queue.maxSize = 10
        lines = self.submit(queue, [b"bob@example.org", b"x@remote.test"])
        self.assertEqual(lines[-1], "452 4.3.1 Error: insufficient system storage")
        self.assertEqual(self.world.newMessages("bob"), [])


class Sink:
    """
    aiosmtpd's handler for a smarthost: keeps what it takes, refuses the
    recipients named in C{refuse} with their reply.
    """

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.refuse: dict[str, str] = {}

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK queued"


class RelayingMixin:
    """
    np-smtp relaying for alice (its directory, PKI, certificate and users
    made by the test's C{setUp}), and smtplib submitting to it.
    """

    directory: str
    pki: PKI
    cert: str
    key: str
    htpasswd: str
    addCleanup: Any

    def startRelaying(self, **kwargs: Any) -> int:
        """
        Start np-smtp with C{kwargs} on top of the common settings; its port.
        """
        kwargs.setdefault("queueMinBackoff", 0.2)
        service = smtpService(
            SMTPSettings(
                domains=(DOMAIN,),
                hostname="mx.test",
                tlsCert=(self.cert,),
                tlsKey=(self.key,),
                auth=(f"htpasswd:{self.htpasswd}",),
                stateDir=self.directory,
                listen=("tcp:0:interface=127.0.0.1",),
                **kwargs,
            )
        )
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        self.service = service
        [(_, address, _)] = listeningPorts(service)
        return int(address.port)

    def submit(self, port: int, recipients: list[str]) -> Deferred[Any]:
        """
        smtplib: STARTTLS, AUTH as alice, one message to C{recipients}.
        """

        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.starttls(
                    context=ssl.create_default_context(cafile=self.pki.caPath)
                )
                client.login("alice", "alice-password")
                return client.sendmail("alice@example.org", recipients, MESSAGE)

        return deferToThread(send)

    def queueFiles(self) -> list[str]:
        path = os.path.join(self.directory, "queue")
        return sorted(n for n in os.listdir(path) if QUEUE_ID.fullmatch(n))

    def aliceMail(self) -> list[bytes]:
        return maildirMessages(os.path.join(self.directory, "mail"), "alice")


class AiosmtpdSmarthostTests(RelayingMixin, TestCase):
    """
    smtplib submits to np-smtp; aiosmtpd (STARTTLS) is the smarthost.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.pki = PKI(os.path.join(self.directory, "pki"))
        self.cert, self.key = self.pki.serverCertificate("localhost", "127.0.0.1")
        self.htpasswd = writeHtpasswd(self.directory)
        self.smarthostPort = freePort()
        self.sink = Sink()
        waitForSessions(self, SMTPServer)

    def startSmarthost(self) -> None:
        """
        Start aiosmtpd on C{smarthostPort}, offering STARTTLS.
        """
        from aiosmtpd.controller import Controller

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        controller = Controller(
            self.sink,
            hostname="127.0.0.1",
            port=self.smarthostPort,
            tls_context=context,
        )
        controller.start()
        self.addCleanup(controller.stop)

    def start(self, **kwargs: Any) -> int:
        """
        Start np-smtp relaying to C{smarthostPort}; return its port.
        """
        return self.startRelaying(
            smarthost=f"127.0.0.1:{self.smarthostPort}",
            smarthostCA=self.pki.caPath,
            **kwargs,
        )

    def test_downThenUp(self) -> Deferred[None]:
        """The smarthost is down at 250; once it is up the queue delivers there."""

        async def run() -> None:
            port = self.start()
            self.assertEqual(await self.submit(port, ["x@remote.test"]), {})
            self.assertEqual(len(self.queueFiles()), 1)
            await deferLater(reactor, 0.5, lambda: None)
            self.assertEqual(len(self.queueFiles()), 1)
            self.startSmarthost()
            [envelope] = await eventually(lambda: self.sink.envelopes or None)
            self.assertEqual(envelope.mail_from, "alice@example.org")
            self.assertEqual(envelope.rcpt_tos, ["x@remote.test"])
            self.assertTrue(envelope.content.endswith(MESSAGE))
            self.assertIn(b"by mx.test (netplugins)", envelope.content)
            await eventually(lambda: self.queueFiles() == [] or None)

        return ensureDeferred(run())

    def test_refusedMakesDSN(self) -> Deferred[None]:
        """A 550 from the smarthost: the sender's Maildir gets an RFC 3464 DSN."""

        async def run() -> None:
            self.sink.refuse["nobody@remote.test"] = "550 5.1.1 No such user here"
            self.startSmarthost()
            port = self.start()
            await self.submit(port, ["x@remote.test", "nobody@remote.test"])
            [report] = await eventually(lambda: self.aliceMail() or None)
            [envelope] = self.sink.envelopes
            self.assertEqual(envelope.rcpt_tos, ["x@remote.test"])
            self.assertTrue(report.startswith(b"Return-Path: <>\r\n"))
            parsed, blocks = deliveryStatus(report)
            self.assertEqual(
                parsed["From"], "Mail Delivery System <MAILER-DAEMON@mx.test>"
            )
            self.assertEqual(
                [(b["Final-Recipient"], b["Status"]) for b in blocks[1:]],
                [("rfc822; nobody@remote.test", "5.1.1")],
            )
            self.assertEqual(
                blocks[1]["Diagnostic-Code"], "smtp; 550 5.1.1 No such user here"
            )
            await eventually(lambda: self.queueFiles() == [] or None)

        return ensureDeferred(run())

    def test_restartBeforeDelivery(self) -> Deferred[None]:
        """Accepted, the service stopped before delivery, started again: delivered."""

        async def run() -> None:
            port = self.start(queueMinBackoff=60.0)
            await self.submit(port, ["x@remote.test"])
            await maybeDeferred(self.service.stopService)
            self.assertEqual(len(self.queueFiles()), 1)
            self.assertEqual(self.sink.envelopes, [])
            self.startSmarthost()
            # The next try was a minute away: the restart's backoff is short.
            self.start()
            [delivered] = await eventually(lambda: self.sink.envelopes or None)
            self.assertEqual(delivered.rcpt_tos, ["x@remote.test"])
            await eventually(lambda: self.queueFiles() == [] or None)

        return ensureDeferred(run())

    def test_expiredBounces(self) -> Deferred[None]:
        """A smarthost down past --queue-lifetime: the sender gets a 4.4.7 DSN."""

        async def run() -> None:
            port = self.start(queueLifetime=0.5)
            await self.submit(port, ["x@remote.test"])
            [report] = await eventually(lambda: self.aliceMail() or None)
            _, blocks = deliveryStatus(report)
            self.assertEqual(blocks[1]["Status"], "4.4.7")
            await eventually(lambda: self.queueFiles() == [] or None)

        return ensureDeferred(run())

    def test_smtplibDSN(self) -> Deferred[None]:
        """smtplib's RET/ENVID/NOTIFY/ORCPT: aiosmtpd takes it, alice gets "relayed"."""

        def send(port: int) -> Any:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.starttls(
                    context=ssl.create_default_context(cafile=self.pki.caPath)
                )
                client.login("alice", "alice-password")
                self.assertTrue(client.has_extn("dsn"))
                return client.sendmail(
                    "alice@example.org",
                    ["x@remote.test"],
                    MESSAGE,
                    mail_options=["RET=HDRS", "ENVID=msg+2B1"],
                    rcpt_options=[
                        "NOTIFY=SUCCESS,FAILURE",
                        "ORCPT=rfc822;X@remote.test",
                    ],
                )

        async def run() -> None:
            self.startSmarthost()
            port = self.start()
            self.assertEqual(await deferToThread(send, port), {})
            [report] = await eventually(lambda: self.aliceMail() or None)
            # aiosmtpd offers no DSN: the report says where the trail ends.
            self.assertEqual(self.sink.envelopes[0].rcpt_options, [])
            _, blocks = deliveryStatus(report)
            self.assertEqual(blocks[0]["Original-Envelope-Id"], "msg+1")
            self.assertEqual(
                [(b["Original-Recipient"], b["Action"]) for b in blocks[1:]],
                [("rfc822;X@remote.test", "relayed")],
            )
            await eventually(lambda: self.queueFiles() == [] or None)

        return ensureDeferred(run())

    def test_msmtpDSN(self) -> Deferred[None]:
        """msmtp --dsn-notify=success,failure --dsn-return=full: relayed, bounced."""
        if shutil.which("msmtp") is None:
            self.fail("msmtp is not installed (scripts/debian-packages.txt names it)")
        rc = os.path.join(self.directory, "msmtprc")

        def send(port: int) -> subprocess.CompletedProcess[str]:
            with open(rc, "w") as f:
                f.write(
                    f"account np\nhost localhost\nport {port}\ntls on\n"
                    f"tls_starttls on\ntls_trust_file {self.pki.caPath}\n"
                    "auth on\nuser alice\npassword alice-password\n"
                    "from alice@example.org\naccount default : np\n"
                )
            os.chmod(rc, 0o600)
            return subprocess.run(
                [
                    "msmtp",
                    "-C",
                    rc,
                    "-v",
                    "--dsn-notify=success,failure",
                    "--dsn-return=full",
                    "x@remote.test",
                    "nobody@remote.test",
                ],
                input=MESSAGE.decode(),
                capture_output=True,
                text=True,
                timeout=30,
            )

        async def run() -> None:
            self.sink.refuse["nobody@remote.test"] = "550 5.1.1 No such user here"
            self.startSmarthost()
            port = self.start()
            result = await deferToThread(send, port)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn("NOTIFY=SUCCESS,FAILURE", result.stdout)
            reports = await eventually(
                lambda: mail if len(mail := self.aliceMail()) == 2 else None
            )
            parsed = [deliveryStatus(report) for report in reports]
            self.assertEqual(
                sorted(
                    (p["Subject"], b[1]["Final-Recipient"], b[1]["Action"])
                    for p, b in parsed
                ),
                [
                    (
                        "Successful Mail Delivery Report",
                        "rfc822; x@remote.test",
                        "relayed",
                    ),
                    (
                        "Undelivered Mail Returned to Sender",
                        "rfc822; nobody@remote.test",
                        "failed",
                    ),
                ],
            )
            [bounce] = [r for r in reports if b"Undelivered" in r]
            self.assertIn(b"Content-Type: message/rfc822", bounce)
            self.assertIn(b"\r\n\r\nhello\r\n", bounce)
            await eventually(lambda: self.queueFiles() == [] or None)

        return ensureDeferred(run())
