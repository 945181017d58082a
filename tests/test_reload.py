"""
Tests for L{netplugins.reload}: one SIGHUP handler for the whole process, and
the password and key files that reload through it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
from pathlib import Path
from typing import Any
from weakref import WeakSet

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins import reload
from netplugins.cred import htpasswd
from netplugins.cred.hmac import KeyFile
from netplugins.cred.htpasswd import HtpasswdChecker
from netplugins.echo import RawEcho
from netplugins.options import ServiceSettings
from netplugins.service import listeningPorts, listeningService
from netplugins.tls.client import clientSSLContext
from netplugins.tls.identity import TLSSettings
from netplugins.tls.server import ServerTLS
from tests.pki import PKI
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
        keys = KeyFile(path, runBlocking=runNow)
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


def _openTLS(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    """
    Connect with the stdlib client (in a thread) and finish the handshake.
    """
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def _commonName(tls: ssl.SSLSocket) -> str:
    certificate: Any = tls.getpeercert()
    return str(dict(pair[0] for pair in certificate["subject"])["commonName"])


def _echo(tls: ssl.SSLSocket, data: bytes) -> bytes:
    tls.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = tls.recv(4096)
        if not chunk:
            break
        received += chunk
    return received


class ServiceCertificateReloadTests(TestCase):
    """
    A running listeningService with --listen-tls takes a rewritten certificate
    for new handshakes, on SIGHUP and by polling the files, over real sockets.
    """

    def setUp(self) -> None:
        self.patch(reload, "_callbacks", [])
        self.patch(reload, "_installed", {})
        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))
        # No handler left by an earlier test to chain to: one SIGHUP, one reload.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.pki = PKI(self.mktemp())
        directory = Path(self.mktemp())
        directory.mkdir()
        self.cert = str(directory / "cert.pem")
        self.key = str(directory / "key.pem")
        self.install(*self.pki.serverCertificate("old.example", "127.0.0.1"))
        self.context = clientSSLContext(self.pki.caPath)

    def install(self, cert: str, key: str) -> None:
        """
        Put C{cert} and C{key} in place by rename, as certbot and editors do.
        """
        for source, target in [(key, self.key), (cert, self.cert)]:
            shutil.copyfile(source, target + ".new")
            os.replace(target + ".new", target)

    def start(self, **tlsSettings: Any) -> int:
        from twisted.internet import reactor

        common = ServiceSettings(
            listenTLS=("tcp:0:interface=127.0.0.1",),
            maxConnectionsPerIP=None,
            **tlsSettings,
        ).common()
        service = listeningService(
            common, Factory.forProtocol(RawEcho), reactor=reactor
        )
        service.startService()
        self.addCleanup(service.stopService)
        [(_, address, _)] = listeningPorts(service)
        return int(address.port)

    @inlineCallbacks
    def checkReload(self, port: int, reloaded: Deferred[None], kick: Any) -> Any:
        before = yield deferToThread(_openTLS, port, self.context)
        self.addCleanup(before.close)
        self.assertEqual(_commonName(before), "old.example")
        self.install(*self.pki.serverCertificate("new.example", "127.0.0.1"))
        kick()
        yield reloaded
        after = yield deferToThread(_openTLS, port, self.context)
        self.addCleanup(after.close)
        self.assertEqual(_commonName(after), "new.example")
        echoed = yield deferToThread(_echo, before, b"still here\n")
        self.assertEqual(echoed, b"still here\n")
        self.assertEqual(_commonName(before), "old.example")

    @inlineCallbacks
    def test_sighup(self) -> Any:
        """SIGHUP reloads: new handshakes get the new certificate, old ones echo."""
        port = self.start(tlsCert=[self.cert], tlsKey=[self.key])
        reloaded: Deferred[None] = Deferred()
        # Registered after the service's ServerTLS, so it runs after its reload.
        reload.onReload(lambda: reloaded.callback(None))
        yield self.checkReload(
            port, reloaded, lambda: os.kill(os.getpid(), signal.SIGHUP)
        )

    @inlineCallbacks
    def test_poll(self) -> Any:
        """Changed files are noticed by the poll without any signal."""
        serverTLS = ServerTLS(
            TLSSettings(certificates=((self.cert, self.key),)), pollInterval=0.1
        )
        port = self.start(tls=serverTLS)
        reloaded: Deferred[None] = Deferred()

        def observe(event: Any) -> None:
            if event.get("log_format", "").startswith("TLS certificates reloaded"):
                if not reloaded.called:
                    reloaded.callback(None)

        observer: Any = observe
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        yield self.checkReload(port, reloaded, lambda: None)
