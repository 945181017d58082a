"""
Tests for np-imap's IDLE seeing new mail at once (L{netplugins.mail.imap.notify}):
the watcher on a real reactor, its bounds, the polling fallback, and IMAPClient
in IDLE told of an SMTP delivery.
"""

from __future__ import annotations

import os
import smtplib
import time
from typing import Any

from imapclient import IMAPClient
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.cred.htpasswd import HtpasswdChecker
from netplugins.mail.imap.notify import FolderWatcher, IdleWatch, watcherFor
from netplugins.mail.maildir.store import MaildirStore
from netplugins.mail.smtp.server import SMTPConfig, SMTPFactory
from netplugins.mail.users import LocalUsers, MailRealm
from tests.mailfixtures import DOMAIN, inline, writeHtpasswd
from tests.test_imap import Session, plainMessage, serveOverTLS


def makeFolder(root: str) -> str:
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(root, sub))
    return root


class FolderWatcherTests(TestCase):
    """
    L{FolderWatcher} on the real reactor.
    """

    def test_eventCalls(self) -> Deferred[None]:
        """A file arriving in new/ calls the folder's callback; unwatch closes it."""
        folder = makeFolder(os.path.abspath(self.mktemp()))
        watcher = FolderWatcher(reactor)
        called: Deferred[None] = Deferred()

        def changed() -> None:
            if not called.called:
                called.callback(None)

        self.assertTrue(watcher.watch(folder, changed))
        with open(os.path.join(folder, "new", "1"), "w") as f:
            f.write("x")

        def check(_: object) -> None:
            watcher.unwatch(folder, next(iter(watcher.folders[folder])))
            self.assertEqual(watcher.folders, {})
            self.assertIsNone(watcher._notifier)

        return called.addCallback(check)

    def test_bounded(self) -> None:
        """Past its folder bound a watcher refuses, and shares a watched one."""
        watcher = FolderWatcher(reactor, maxFolders=1)
        one = makeFolder(os.path.abspath(self.mktemp()))
        two = makeFolder(os.path.abspath(self.mktemp()))
        a, b = (lambda: None), (lambda: None)
        self.assertTrue(watcher.watch(one, a))
        self.assertTrue(watcher.watch(one, b))
        self.assertFalse(watcher.watch(two, a))
        watcher.unwatch(one, a)
        watcher.unwatch(one, b)
        self.assertIsNone(watcher._notifier)

    def test_missingFolder(self) -> None:
        """A folder that cannot be watched is refused (the session polls)."""
        watcher = FolderWatcher(reactor)
        self.assertFalse(watcher.watch(os.path.abspath(self.mktemp()), lambda: None))
        self.assertIsNone(watcher._notifier)


class PollingFallbackTests(SynchronousTestCase):
    """
    Without file descriptors (a test's clock) IDLE polls as before.
    """

    def test_clockPolls(self) -> None:
        """On a Clock the watch polls each pollInterval, and stops with DONE."""
        s = Session(self)
        s.login()
        s.send(b"s SELECT INBOX\r\n")
        self.assertEqual(s.send(b"i IDLE\r\n"), b"+ idling\r\n")
        watch = s.protocol._idlePoll
        self.assertIsInstance(watch, IdleWatch)
        self.assertFalse(watch.watching)
        self.successResultOf(s.store.deliver("alice", plainMessage("new")))
        s.clock.advance(s.factory.config.pollInterval)
        self.assertEqual(s.read(), b"* 1 EXISTS\r\n* 1 RECENT\r\n")
        self.assertEqual(s.send(b"DONE\r\n"), b"i OK Idle completed.\r\n")
        self.assertFalse(watch.running)

    def test_coalesced(self) -> None:
        """A burst of events makes one refresh, and one more if it came mid-way."""
        clock = Clock()
        factory: Any = type(
            "F", (), {"reactor": clock, "config": type("C", (), {"pollInterval": 2})}
        )()
        watcherFor(factory).watch = lambda path, callback: True  # type: ignore[method-assign]
        pending: list[Deferred[None]] = []

        def refresh() -> Deferred[None]:
            pending.append(Deferred())
            return pending[-1]

        watch = IdleWatch(factory, "/nowhere", refresh)
        for _ in range(5):
            watch._changed()
        clock.advance(1)
        self.assertEqual(len(pending), 1)
        watch._changed()
        watch._changed()
        pending[0].callback(None)
        clock.advance(1)
        self.assertEqual(len(pending), 2)
        watcherFor(factory).unwatch = lambda path, callback: None  # type: ignore[method-assign]
        watch.stop()


def serveSMTP(case: TestCase, store: MaildirStore) -> int:
    """
    Serve np-smtp delivering to C{store} (users of L{writeHtpasswd}, domain
    L{DOMAIN}) on a loopback port for C{case}, and return the port.
    """
    directory = os.path.abspath(case.mktemp())
    os.makedirs(directory)
    checker = HtpasswdChecker(writeHtpasswd(directory), runBlocking=inline)
    users = LocalUsers([DOMAIN], [checker])
    smtp = SMTPFactory(
        store,
        Portal(MailRealm(users), [checker]),
        users=users,
        config=SMTPConfig(hostname="mx.test"),
        reactor=reactor,
    )
    port = reactor.listenTCP(0, smtp, interface="127.0.0.1")  # type: ignore[arg-type]
    case.addCleanup(port.stopListening)
    return port.getHost().port  # type: ignore[attr-defined,no-any-return]


class IdleDeliveryTests(TestCase):
    """
    IMAPClient in IDLE hears of a message delivered over SMTP at once.
    """

    caPath: str
    root: str
    store: MaildirStore
    factory: Any
    port: int

    def setUp(self) -> None:
        serveOverTLS(self)
        self.smtpPort = serveSMTP(self, self.store)
        return self.store.ensureUser("alice")  # type: ignore[return-value]

    def test_existsWithinHalfASecond(self) -> Deferred[Any]:
        """EXISTS reaches the idling client within 0.5 s of the SMTP 250."""
        import ssl

        def idle() -> float:
            c = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
            c.starttls(ssl.create_default_context(cafile=self.caPath))
            c.login("alice", "alice-pw")
            c.select_folder("INBOX")
            try:
                c.idle()
                with smtplib.SMTP("127.0.0.1", self.smtpPort) as smtp:
                    smtp.sendmail(
                        "carol@example.net",
                        ["alice@example.org"],
                        plainMessage("instant").replace(b"\n", b"\r\n"),
                    )
                sent = time.monotonic()
                responses = c.idle_check(timeout=5)
                took = time.monotonic() - sent
                c.idle_done()
            finally:
                c.shutdown()
            self.assertIn((1, b"EXISTS"), responses)
            return took

        def check(took: float) -> Deferred[None]:
            self.assertLess(took, 0.5)
            # The watch went with the session.
            return deferLater(reactor, 0.1, lambda: None)

        return deferToThread(idle).addCallback(check)
