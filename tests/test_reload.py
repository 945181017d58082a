"""
Tests for L{netplugins.reload}: one SIGHUP handler for the whole process, and
the password and key files that reload through it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from weakref import WeakSet

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from netplugins import reload
from netplugins.cred import htpasswd
from netplugins.cred.hmac import KeyFile
from netplugins.cred.htpasswd import HtpasswdChecker
from tests.test_htpasswd import ALICE, BOB, runNow, writeFile
from tests.test_tls import isolateReload


class ReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.scheduled = isolateReload(self)

    def test_reloadAllRunsEveryCallback(self) -> None:
        """reloadAll runs every registered callable, in order."""
        calls: list[str] = []
        reload.onReload(lambda: calls.append("a"))
        reload.onReload(lambda: calls.append("b"))
        reload.reloadAll()
        self.assertEqual(calls, ["a", "b"])

    def test_errorIsolated(self) -> None:
        """A callable that raises is logged and the others still run."""
        calls: list[str] = []

        def broken() -> None:
            raise RuntimeError("boom")

        reload.onReload(broken)
        reload.onReload(lambda: calls.append("after"))
        with capturedLogs() as events:
            reload.reloadAll()
        self.assertEqual(calls, ["after"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(any("log_failure" in e for e in events))

    def test_unregister(self) -> None:
        """An unregistered callable no longer runs; unregistering twice is harmless."""
        calls: list[str] = []
        remove = reload.onReload(lambda: calls.append("x"))
        remove()
        remove()
        reload.reloadAll()
        self.assertEqual(calls, [])

    def test_sighupHopsToReactorAndChains(self) -> None:
        """SIGHUP schedules the reloads on the reactor and chains to the old handler."""
        previous: list[int] = []
        signal.signal(signal.SIGHUP, lambda signum, frame: previous.append(signum))
        calls: list[str] = []
        reload.onReload(lambda: calls.append("reloaded"))
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual((previous, calls), ([signal.SIGHUP], []))
        for f in self.scheduled:
            f()
        self.assertEqual(calls, ["reloaded"])

    def test_htpasswdReloadsOnSIGHUP(self) -> None:
        """A live HtpasswdChecker re-reads its file on SIGHUP."""
        self.patch(htpasswd, "_sighup", [])
        path = Path(self.mktemp())
        path.write_text(f"alice:{ALICE}\n")
        checker = HtpasswdChecker(str(path), runBlocking=runNow)
        self.patch(htpasswd, "_live", WeakSet([checker]))
        writeFile(path, f"bob:{BOB}\n")
        os.kill(os.getpid(), signal.SIGHUP)
        for f in self.scheduled:
            f()
        self.assertEqual(list(checker.users.entries), ["bob"])

    def test_hmacKeyFileReloadsOnSIGHUP(self) -> None:
        """An HMAC key file is re-read on SIGHUP even when it looks unchanged."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"alice:first\n")
        keys = KeyFile(path)
        stat = os.stat(path)
        with open(path, "r+b") as g:
            g.write(b"alice:secnd\n")
        # Same size and mtime: only a forced re-read notices.
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        self.assertEqual(keys.keys()[0].key, b"first")
        with capturedLogs():
            os.kill(os.getpid(), signal.SIGHUP)
            for f in self.scheduled:
                f()
        self.assertEqual(keys.keys()[0].key, b"secnd")

    def test_deadKeyFileUnregisters(self) -> None:
        """A key file nobody holds drops out of the reload list at the next reload."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"alice:first\n")
        KeyFile(path)
        reload.reloadAll()
        self.assertEqual(reload._callbacks, [])
