"""
Tests for L{netplugins.tls}: the TLS profile, SNI, client certificates, reload,
the development certificate, the handshake deadline, the C{nptls:} endpoint and
STARTTLS, in memory first and then against real peers (C{openssl s_client},
the stdlib C{ssl} module) on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.protocols.basic import LineReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from netplugins import reload
from netplugins.ratelimit import REPORT_INTERVAL
from netplugins.tls.client import clientCreator, clientSSLContext
from netplugins.tls.devcert import ensureDevelopmentCertificate
from netplugins.tls.identity import TLSSettings
from netplugins.tls.peer import peerIdentity
from netplugins.tls.server import ServerTLS
from tests.pki import PKI

ADDRESS = IPv4Address("TCP", "127.0.0.1", 4321)


@implementer(IHandshakeListener)
class Recorder(Protocol):
    """
    Records what happens to it; on the server side echoes and, once the
    handshake is done, remembers the peer's identity.
    """

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.data = b""
        self.handshook = False
        self.identity: str | None = None
        self.lost: Failure | None = None

    def handshakeCompleted(self) -> None:
        self.handshook = True
        self.identity = peerIdentity(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.echo:
            assert self.transport is not None
            self.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


class OneProtocolFactory(Factory):
    """
    Builds the one protocol it was given.
    """

    def __init__(self, protocol: Protocol) -> None:
        self.protocol_ = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_


@implementer(IOpenSSLClientConnectionCreator)
class RawClient:
    """
    A bare pyOpenSSL client that verifies nothing, so tests can offer exactly
    the versions and ciphers they want and look at what the server sends.
    """

    def __init__(self, serverName: bytes | None = None) -> None:
        self.context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        self.serverName = serverName

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        connection.set_connect_state()
        if self.serverName is not None:
            connection.set_tlsext_host_name(self.serverName)
        return connection


class Pair:
    """
    A TLS client and server connected in memory.
    """

    def __init__(self, serverTLS: ServerTLS, creator: Any, clock: Clock) -> None:
        self.serverApp = Recorder(echo=True)
        self.clientApp = Recorder()
        self.server = serverTLS.wrapFactory(
            OneProtocolFactory(self.serverApp), reactor=clock
        ).buildProtocol(ADDRESS)
        self.client = TLSMemoryBIOFactory(
            creator, True, OneProtocolFactory(self.clientApp), clock=clock
        ).buildProtocol(ADDRESS)
        _, _, self.pump = iosim.connectedServerAndClient(
            lambda: self.server,
            lambda: self.client,
            serverTransportFactory=lambda protocol: iosim.FakeTransport(
                protocol, isServer=True, peerAddress=ADDRESS
            ),
            clock=clock,
        )

    def peerCertificate(self) -> x509.Certificate:
        certificate = self.client.getPeerCertificate()
        assert certificate is not None, f"no certificate; lost: {self.clientApp.lost}"
        return certificate.to_cryptography()

    def peerNames(self) -> list[str]:
        return (
            self.peerCertificate()
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value.get_values_for_type(x509.DNSName)
        )

    def version(self) -> str:
        return self.client.getHandle().get_protocol_version_name()

    def failure(self) -> str:
        assert self.clientApp.lost is not None, "the connection is still up"
        assert not self.clientApp.handshook, "the handshake succeeded"
        return str(self.clientApp.lost.value)

    def roundTrip(self, data: bytes) -> bytes:
        self.clientApp.data = b""
        self.client.write(data)
        self.pump.flush()
        return self.clientApp.data


def sha256(path: str) -> bytes:
    with open(path, "rb") as f:
        certificate = x509.load_pem_x509_certificate(f.read())
    return certificate.fingerprint(hashes.SHA256())


def isolateReload(case: SynchronousTestCase) -> list[Any]:
    """
    Give C{case} a fresh L{netplugins.reload} (no callbacks, no handler yet)
    whose SIGHUP work is collected in the returned list instead of going to
    the reactor; the SIGHUP handler and module state are restored afterwards.
    """
    case.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))
    case.patch(reload, "_installed", {})
    case.patch(reload, "_callbacks", [])
    scheduled: list[Any] = []
    case.patch(reload, "_schedule", scheduled.append)
    return scheduled


class TLSTestMixin:
    """
    A CA and helpers for building servers and connecting to them in memory.
    """

    mktemp: Any

    def setUp(self) -> None:
        self.pki = PKI(self.mktemp())
        self.clock = Clock()
        self.a = self.pki.serverCertificate("a.example", "localhost", "127.0.0.1")
        self.b = self.pki.serverCertificate("b.example")

    def serverTLS(self, **settings: Any) -> ServerTLS:
        settings.setdefault("certificates", (self.a, self.b))
        return ServerTLS(TLSSettings(**settings), reactor=self.clock)

    def connect(self, serverTLS: ServerTLS, creator: Any) -> Pair:
        return Pair(serverTLS, creator, self.clock)


class ProfileTests(TLSTestMixin, SynchronousTestCase):
    """
    Versions and ciphers the server accepts.
    """

    def test_tls13ByDefault(self) -> None:
        """
        A modern client gets TLS 1.3 and data flows both ways.
        """
        pair = self.connect(self.serverTLS(), RawClient())
        self.assertEqual(pair.version(), "TLSv1.3")
        self.assertEqual(pair.roundTrip(b"ping"), b"ping")

    def test_tls12Accepted(self) -> None:
        """
        A TLS 1.2-only client offering an ECDHE+AEAD suite is served.
        """
        client = RawClient()
        client.context.set_max_proto_version(SSL.TLS1_2_VERSION)
        pair = self.connect(self.serverTLS(), client)
        self.assertEqual(pair.version(), "TLSv1.2")
        cipher = pair.client.getHandle().get_cipher_name()
        self.assertTrue(cipher.startswith("ECDHE-"), cipher)
        self.assertTrue(cipher.endswith(("GCM-SHA256", "GCM-SHA384", "POLY1305")))

    def test_tls11Refused(self) -> None:
        """A client offering at most TLS 1.1 gets a protocol_version alert."""
        client = RawClient()
        client.context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        client.context.set_min_proto_version(SSL.TLS1_1_VERSION)
        client.context.set_max_proto_version(SSL.TLS1_1_VERSION)
        pair = self.connect(self.serverTLS(), client)
        self.assertIn("alert protocol version", pair.failure())

    def test_nonAEADCipherRefused(self) -> None:
        """TLS 1.2 with a CBC suite gets handshake_failure; a GCM suite is served."""
        # TLS 1.2 with ECDHE but a CBC (non-AEAD) suite gets a handshake_failure alert,
        # while the same client with a GCM suite is served.
        weak = RawClient()
        weak.context.set_max_proto_version(SSL.TLS1_2_VERSION)
        weak.context.set_cipher_list(
            b"ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA"
        )
        self.assertIn(
            "alert handshake failure",
            self.connect(self.serverTLS(), weak).failure(),
        )
        strong = RawClient()
        strong.context.set_max_proto_version(SSL.TLS1_2_VERSION)
        strong.context.set_cipher_list(b"ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertEqual(self.connect(self.serverTLS(), strong).version(), "TLSv1.2")

    def test_minVersion13(self) -> None:
        """
        With minVersion 1.3 a TLS 1.2 client is refused and a 1.3 one served.
        """
        client = RawClient()
        client.context.set_max_proto_version(SSL.TLS1_2_VERSION)
        serverTLS = self.serverTLS(minVersion="1.3")
        self.assertIn(
            "alert protocol version", self.connect(serverTLS, client).failure()
        )
        self.assertEqual(self.connect(serverTLS, RawClient()).version(), "TLSv1.3")

    def test_noCompressionNoRenegotiation(self) -> None:
        """No compression or renegotiation; the client's cipher order wins."""
        # Server connections refuse compression and renegotiation and let the client's
        # cipher order win.
        connection = self.serverTLS().serverConnectionForTLS(None)
        options = connection.set_options(0)
        self.assertTrue(options & SSL.OP_NO_COMPRESSION)
        self.assertTrue(options & SSL.OP_NO_RENEGOTIATION)
        self.assertFalse(options & SSL.OP_CIPHER_SERVER_PREFERENCE)

    def test_noSessionTickets(self) -> None:
        """A TLS 1.3 client gets no session tickets: no session could resume."""
        states: list[str] = []
        client = RawClient()
        client.context.set_info_callback(
            lambda connection, where, ret: states.append(
                connection.get_state_string().decode()
            )
        )
        pair = self.connect(self.serverTLS(), client)
        self.assertEqual(pair.roundTrip(b"ping"), b"ping")
        self.assertEqual(pair.version(), "TLSv1.3")
        self.assertIn("SSL negotiation finished successfully", states)
        self.assertFalse([s for s in states if "ticket" in s], states)


class SNITests(TLSTestMixin, SynchronousTestCase):
    """
    Certificates chosen by server name.
    """

    def test_namedCertificate(self) -> None:
        """
        Each SNI name gets the certificate whose SANs hold it.
        """
        serverTLS = self.serverTLS()
        self.assertIn(
            "b.example", self.connect(serverTLS, RawClient(b"b.example")).peerNames()
        )
        self.assertIn(
            "a.example", self.connect(serverTLS, RawClient(b"a.example")).peerNames()
        )

    def test_unknownAndMissingNameGetDefault(self) -> None:
        """
        An unknown name and no name at all both get the first certificate.
        """
        serverTLS = self.serverTLS()
        for name in (b"unknown.example", None):
            self.assertIn(
                "a.example", self.connect(serverTLS, RawClient(name)).peerNames()
            )

    def test_directory(self) -> None:
        """A directory of PEM files serves each file's names; first is the default."""
        # A directory of key+cert PEM files serves each file's names; the first file (by
        # name) is the default; a wildcard covers one label.
        directory = self.mktemp()
        self.pki.serverPEM(directory, "1-first.pem", "first.example")
        self.pki.serverPEM(directory, "2-wild.pem", "*.wild.example")
        serverTLS = self.serverTLS(certificates=(), directory=directory)
        self.assertIn(
            "*.wild.example",
            self.connect(serverTLS, RawClient(b"x.wild.example")).peerNames(),
        )
        self.assertIn(
            "first.example", self.connect(serverTLS, RawClient(b"other")).peerNames()
        )

    def test_callbackErrorAbortsOnlyThatHandshake(self) -> None:
        """An error choosing the certificate fails only that handshake, logged."""
        # An exception while choosing the certificate fails that handshake and is
        # logged; the next handshake works.
        serverTLS = self.serverTLS()

        def broken(*args: object) -> None:
            raise RuntimeError("lookup exploded")

        patched = self.patch(serverTLS, "_contextForName", broken)
        pair = self.connect(serverTLS, RawClient(b"b.example"))
        self.assertIn("alert", pair.failure())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        patched.restore()
        self.assertIn(
            "b.example", self.connect(serverTLS, RawClient(b"b.example")).peerNames()
        )


class DirectoryTests(TLSTestMixin, SynchronousTestCase):
    """
    C{--tls-dir} reads what Twisted's C{tls:} endpoint reads.
    """

    def write(self, directory: str, name: str, *blobs: bytes) -> None:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, name), "wb") as f:
            f.write(b"".join(blobs))

    def test_anyOrderWithIntermediate(self) -> None:
        """A file ordered intermediate, key, leaf serves the leaf with its chain."""
        intermediate = self.pki.ca.create_child_ca()
        leaf = intermediate.issue_cert("mixed.example")
        directory = self.mktemp()
        self.write(
            directory,
            "mixed.pem",
            intermediate.cert_pem.bytes(),
            leaf.private_key_pem.bytes(),
            leaf.cert_chain_pems[0].bytes(),
        )
        serverTLS = self.serverTLS(certificates=(), directory=directory)
        pair = self.connect(serverTLS, clientCreator("mixed.example", self.pki.caPath))
        self.assertEqual(pair.roundTrip(b"verified"), b"verified")
        chain = pair.client.getHandle().get_peer_cert_chain(as_cryptography=True)
        expected = [leaf.cert_chain_pems[0], intermediate.cert_pem]
        self.assertEqual(
            [c.subject for c in chain],
            [x509.load_pem_x509_certificate(p.bytes()).subject for p in expected],
        )

    def test_keysAndCertificatesInSeparateFiles(self) -> None:
        """Keys and certificates may sit in different files; a lone key is skipped."""
        leaf = self.pki.ca.issue_cert("split.example")
        stray = self.pki.ca.issue_cert("stray.example")
        directory = self.mktemp()
        self.write(directory, "a-key.pem", leaf.private_key_pem.bytes())
        self.write(directory, "b-cert.pem", leaf.cert_chain_pems[0].bytes())
        self.write(directory, "c-stray.pem", stray.private_key_pem.bytes())
        with capturedLogs() as events:
            serverTLS = self.serverTLS(certificates=(), directory=directory)
        [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertIn("c-stray.pem", warning["problem"])
        self.assertIn("split.example", serverTLS.names)
        self.assertIn(
            "split.example",
            self.connect(serverTLS, RawClient(b"split.example")).peerNames(),
        )

    def test_noUsableKey(self) -> None:
        """A directory without a key and its certificate is a one-line error."""
        directory = self.mktemp()
        leaf = self.pki.ca.issue_cert("nokey.example")
        self.write(directory, "cert.pem", leaf.cert_chain_pems[0].bytes())
        with self.assertRaises(ValueError) as e:
            self.serverTLS(certificates=(), directory=directory)
        self.assertIn("no private key with its certificate", str(e.exception))


class VerificationTests(TLSTestMixin, SynchronousTestCase):
    """
    Client-side verification and client certificates.
    """

    def test_clientVerifiesHostname(self) -> None:
        """clientCreator accepts the right name and refuses wrong names and CAs."""
        # L{clientCreator} accepts the right name under the given CA and refuses a wrong
        # name and an unknown CA.
        serverTLS = self.serverTLS()
        good = self.connect(serverTLS, clientCreator("b.example", self.pki.caPath))
        self.assertTrue(good.clientApp.handshook)
        wrong = self.connect(serverTLS, clientCreator("c.example", self.pki.caPath))
        self.assertIn("c.example", wrong.failure())
        otherCA = PKI(self.mktemp()).caPath
        self.assertIn(
            "certificate verify failed",
            self.connect(serverTLS, clientCreator("b.example", otherCA)).failure(),
        )

    def test_clientCertificateRequired(self) -> None:
        """A required client certificate: none or a foreign one fails; CN identifies."""
        # With a required client certificate, none fails the handshake, one from another
        # CA fails, and a valid one's CN is the peer identity.
        serverTLS = self.serverTLS(clientCA=self.pki.caPath, clientCert="required")
        alice = self.pki.clientCertificate("alice")
        pair = self.connect(serverTLS, clientCreator("a.example", self.pki.caPath))
        self.assertIsNotNone(pair.serverApp.lost)
        self.assertIsNone(pair.serverApp.identity)
        self.assertEqual(pair.roundTrip(b"x"), b"")
        mallory = PKI(self.mktemp()).clientCertificate("mallory")
        pair = self.connect(
            serverTLS, clientCreator("a.example", self.pki.caPath, mallory)
        )
        self.assertEqual(pair.roundTrip(b"x"), b"")
        self.assertIsNone(pair.serverApp.identity)
        pair = self.connect(
            serverTLS, clientCreator("a.example", self.pki.caPath, alice)
        )
        self.assertEqual(pair.roundTrip(b"x"), b"x")
        self.assertEqual(pair.serverApp.identity, "alice")

    def test_clientCertificateOptional(self) -> None:
        """An optional client certificate: anonymous served, a valid one identified."""
        # With an optional client certificate, a client without one is served
        # anonymously and one with a valid certificate is identified.
        serverTLS = self.serverTLS(clientCA=self.pki.caPath, clientCert="optional")
        pair = self.connect(serverTLS, clientCreator("a.example", self.pki.caPath))
        self.assertEqual(pair.roundTrip(b"x"), b"x")
        self.assertIsNone(pair.serverApp.identity)
        bob = self.pki.clientCertificate("bob")
        pair = self.connect(serverTLS, clientCreator("a.example", self.pki.caPath, bob))
        self.assertEqual(pair.roundTrip(b"x"), b"x")
        self.assertEqual(pair.serverApp.identity, "bob")

    def test_noIdentityWithoutVerification(self) -> None:
        """Without TLS or client verification there is no peer identity."""
        # Without TLS, or when the server does not verify clients, there is no peer
        # identity.
        self.assertIsNone(peerIdentity(StringTransport()))
        pair = self.connect(
            self.serverTLS(), clientCreator("a.example", self.pki.caPath)
        )
        self.assertTrue(pair.serverApp.handshook)
        self.assertIsNone(pair.serverApp.identity)

    def test_clientSSLContext(self) -> None:
        """
        The stdlib context verifies certificates and hostnames, TLS 1.2+.
        """
        context = clientSSLContext(self.pki.caPath)
        self.assertEqual(context.verify_mode, ssl.CERT_REQUIRED)
        self.assertTrue(context.check_hostname)
        self.assertEqual(context.minimum_version, ssl.TLSVersion.TLSv1_2)
        self.assertEqual(
            clientSSLContext(minVersion="1.3").minimum_version, ssl.TLSVersion.TLSv1_3
        )


class ReloadTests(TLSTestMixin, SynchronousTestCase):
    """
    Reloading certificates without dropping connections.
    """

    def replaceWithNew(self, target: tuple[str, str], *names: str) -> None:
        cert, key = self.pki.serverCertificate(*names)
        shutil.copyfile(cert, target[0])
        shutil.copyfile(key, target[1])

    def test_reloadKeepsLiveConnections(self) -> None:
        """After a reload a live connection works and a new handshake sees the new."""
        # After a reload a live connection keeps working and the next handshake shows
        # the new certificate.
        serverTLS = self.serverTLS()
        before = sha256(self.b[0])
        live = self.connect(serverTLS, RawClient(b"b.example"))
        self.assertEqual(live.peerCertificate().fingerprint(hashes.SHA256()), before)
        self.replaceWithNew(self.b, "b.example", "b2.example")
        self.assertTrue(serverTLS.reload())
        self.assertEqual(live.roundTrip(b"still here"), b"still here")
        fresh = self.connect(serverTLS, RawClient(b"b2.example"))
        self.assertEqual(
            fresh.peerCertificate().fingerprint(hashes.SHA256()), sha256(self.b[0])
        )
        self.assertNotEqual(sha256(self.b[0]), before)

    def test_mismatchedKeyRejected(self) -> None:
        """A certificate with a mismatched key is rejected, logged; the old serves."""
        # A new certificate whose key does not match is rejected with an error logged,
        # and the old certificate keeps serving.
        serverTLS = self.serverTLS()
        before = sha256(self.b[0])
        other = self.pki.serverCertificate("b.example")
        shutil.copyfile(other[0], self.b[0])
        with capturedLogs() as events:
            self.assertFalse(serverTLS.reload())
        errors = [e for e in events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn("does not match", errors[0]["error"])
        pair = self.connect(serverTLS, RawClient(b"b.example"))
        self.assertEqual(pair.peerCertificate().fingerprint(hashes.SHA256()), before)

    def test_unreadableFileRejected(self) -> None:
        """A vanished certificate file is rejected on reload, a ValueError at start."""
        # A certificate file that disappeared is rejected on reload; at start it is a
        # one-line ValueError.
        serverTLS = self.serverTLS()
        os.remove(self.b[1])
        with capturedLogs():
            self.assertFalse(serverTLS.reload())
        self.assertIn(
            "b.example", self.connect(serverTLS, RawClient(b"b.example")).peerNames()
        )
        with self.assertRaises(ValueError) as raised:
            self.serverTLS()
        self.assertIn("cannot read", str(raised.exception))

    def test_pollReloadsChangedFiles(self) -> None:
        """While running, a changed file is reloaded at the next poll, unchanged not."""
        # While a service runs, a changed file is picked up at the next poll; an
        # unchanged one causes no reload.
        serverTLS = self.serverTLS()
        service = serverTLS.service()
        service.startService()
        self.addCleanup(service.stopService)
        with capturedLogs() as events:
            self.clock.advance(5)
        self.assertEqual(events, [])
        self.replaceWithNew(self.b, "b.example", "polled.example")
        self.clock.advance(5)
        self.assertIn("polled.example", serverTLS.names)

    def test_oneWatcherForSeveralServices(self) -> None:
        """
        Several services share one poller, which runs until the last stops.
        """
        serverTLS = self.serverTLS()
        first, second = serverTLS.service(), serverTLS.service()
        self.assertIsNot(first, second)
        first.startService()
        second.startService()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        first.stopService()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        second.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sighupReloadsWhileWatching(self) -> None:
        """SIGHUP reloads through netplugins.reload while watching, not after."""
        scheduled = isolateReload(self)
        serverTLS = self.serverTLS()
        service = serverTLS.service()
        service.startService()
        self.replaceWithNew(self.b, "b.example", "hup.example")
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertNotIn("hup.example", serverTLS.names)
        for f in scheduled:
            f()
        self.assertIn("hup.example", serverTLS.names)
        service.stopService()
        self.replaceWithNew(self.b, "b.example", "later.example")
        reload.reloadAll()
        self.assertNotIn("later.example", serverTLS.names)


class DevelopmentCertificateTests(SynchronousTestCase):
    """
    The certificate made when none is configured.
    """

    def test_generatedOnceAndLogged(self) -> None:
        """A self-signed certificate is made once, reused, its fingerprint logged."""
        # The first use writes a self-signed certificate and a 0600 key; later uses
        # reuse them; each use logs a warning with the SHA-256 fingerprint.
        stateDir = self.mktemp()
        with capturedLogs() as events:
            ServerTLS(TLSSettings(stateDir=stateDir), reactor=Clock())
            certPath, keyPath = ensureDevelopmentCertificate(stateDir)
        self.assertEqual(os.stat(keyPath).st_mode & 0o777, 0o600)
        with open(certPath, "rb") as f:
            first = f.read()
        certificate = x509.load_pem_x509_certificate(first)
        self.assertEqual(certificate.issuer, certificate.subject)
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual(
            [str(ip) for ip in names.get_values_for_type(x509.IPAddress)],
            ["127.0.0.1", "::1"],
        )
        fingerprint = certificate.fingerprint(hashes.SHA256()).hex(":").upper()
        warnings = [e for e in events if e.get("fingerprint") == fingerprint]
        self.assertEqual(len(warnings), 2)
        self.assertEqual(warnings[0]["log_level"].name, "warn")
        with open(certPath, "rb") as f:
            self.assertEqual(f.read(), first)


class DeadlineTests(TLSTestMixin, SynchronousTestCase):
    """
    The handshake deadline.
    """

    def test_silentClientAborted(self) -> None:
        """A client that never finishes its handshake is cut off at the deadline."""
        # A client that never finishes its handshake is disconnected after the deadline,
        # and this is logged.
        factory = self.serverTLS().wrapFactory(
            Factory.forProtocol(Protocol), reactor=self.clock, handshakeTimeout=10
        )
        protocol = factory.buildProtocol(ADDRESS)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"\x16\x03\x01")  # the start of a ClientHello
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        with capturedLogs() as events:
            self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual([e["timeout"] for e in events if "timeout" in e], [10])

    def test_defaultDeadlineTenSeconds(self) -> None:
        """Without handshakeTimeout a silent client is dropped after 10 seconds."""
        factory = self.serverTLS().wrapFactory(
            Factory.forProtocol(Protocol), reactor=self.clock
        )
        protocol = factory.buildProtocol(ADDRESS)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        with capturedLogs():
            self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)

    def test_finishedHandshakeCancelsDeadline(self) -> None:
        """
        A completed handshake leaves no deadline pending.
        """
        pair = self.connect(self.serverTLS(), RawClient())
        self.assertTrue(pair.serverApp.handshook)
        self.clock.advance(60)
        self.assertIsNone(pair.serverApp.lost)
        self.assertEqual(pair.roundTrip(b"late"), b"late")


class HandshakeFailureLogTests(TLSTestMixin, SynchronousTestCase):
    """
    Failed handshakes are logged with the peer and OpenSSL's reason, rate-limited.
    """

    def failures(self, serverTLS: ServerTLS) -> list[dict[str, Any]]:
        with capturedLogs() as events:
            pair = self.connect(serverTLS, clientCreator("a.example", self.pki.caPath))
            self.assertEqual(pair.roundTrip(b"x"), b"")
        return [e for e in events if "TLS handshake" in e.get("log_format", "")]

    def test_missingClientCertificateLogged(self) -> None:
        """A client without the required certificate is logged with peer and reason."""
        serverTLS = self.serverTLS(clientCA=self.pki.caPath, clientCert="required")
        [event] = self.failures(serverTLS)
        self.assertEqual(
            (event["log_level"], event["peer"], event["suppressed"]),
            (LogLevel.warn, "127.0.0.1:4321", 0),
        )
        self.assertIn("peer did not return a certificate", event["reason"])
        self.assertEqual(
            formatEvent(event),
            f"TLS handshake with 127.0.0.1:4321 failed: {event['reason']}",
        )

    def test_failuresRateLimitedPerPeer(self) -> None:
        """A peer's failures log one line a minute, counting the unlogged ones."""
        serverTLS = self.serverTLS(clientCA=self.pki.caPath, clientCert="required")
        self.assertEqual(len(self.failures(serverTLS)), 1)
        self.assertEqual(self.failures(serverTLS) + self.failures(serverTLS), [])
        self.clock.advance(REPORT_INTERVAL)
        [event] = self.failures(serverTLS)
        self.assertEqual(event["suppressed"], 2)
        self.assertIn(
            "(2 more from this address since the last line)", formatEvent(event)
        )

    def test_closedBeforeHandshakeLogged(self) -> None:
        """A connection closed mid-handshake is logged; a finished one is not."""
        factory = self.serverTLS().wrapFactory(
            Factory.forProtocol(Protocol), reactor=self.clock
        )
        protocol = factory.buildProtocol(ADDRESS)
        assert protocol is not None
        protocol.makeConnection(StringTransport())
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionDone("bye")))
        [event] = events
        self.assertIn("closed before its handshake finished", formatEvent(event))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        pair = self.connect(self.serverTLS(), RawClient())
        with capturedLogs() as events:
            pair.client.loseConnection()
            pair.pump.flush()
        self.assertIsNotNone(pair.serverApp.lost)
        self.assertEqual(events, [])


class NPTLSParserTests(TLSTestMixin, SynchronousTestCase):
    """
    Parsing C{nptls:} strings.
    """

    def test_badStrings(self) -> None:
        """Missing or unpaired pieces and bad values are ValueErrors naming them."""
        cert, key = self.a
        for description, message in [
            (f"nptls:cert={cert}", "wrapped endpoint"),
            (f"nptls:cert={cert}:tcp:0", "key= must be given"),
            (f"nptls:cert={cert}:key={key}:cert2={cert}:tcp:0", "key2="),
            (f"nptls:cert={cert}:key={key}:minversion=1.1:tcp:0", "1.2 or 1.3"),
            (f"nptls:cert={cert}:key={key}:clientcert=required:tcp:0", "clientca"),
            (f"nptls:cert={cert}:key={self.b[1]}:tcp:0", "does not match"),
            (f"nptls:cert={cert}:key={key}:nonsense:0", "nonsense"),
        ]:
            with self.assertRaises(ValueError) as raised:
                serverFromString(self.clock, description)
            self.assertIn(message, str(raised.exception), description)


@implementer(IHandshakeListener)
class LineServer(LineReceiver):
    """
    Plain-text until C{STARTTLS}; once a handshake completes (either way)
    greets with the peer identity and closes.
    """

    delimiter = b"\n"

    def __init__(self, serverTLS: ServerTLS | None, lost: Deferred[None]) -> None:
        self.serverTLS = serverTLS
        self.lostDeferred = lost

    def connectionMade(self) -> None:
        if self.serverTLS is not None:
            self.sendLine(b"ready")

    def lineReceived(self, line: bytes) -> None:
        if line.strip() == b"STARTTLS" and self.serverTLS is not None:
            self.sendLine(b"go ahead")
            assert self.transport is not None
            self.transport.startTLS(self.serverTLS)  # type: ignore[attr-defined]

    def handshakeCompleted(self) -> None:
        identity = peerIdentity(self.transport)
        self.sendLine(f"hello {identity}".encode())
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lostDeferred.callback(None)


class LineServerFactory(Factory):
    """
    Makes L{LineServer}s and remembers when each connection is gone.
    """

    def __init__(self, serverTLS: ServerTLS | None = None) -> None:
        self.serverTLS = serverTLS
        self.lost: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> LineServer:
        self.lost.append(Deferred())
        return LineServer(self.serverTLS, self.lost[-1])

    def allGone(self) -> Deferred[Any]:
        return gatherResults(self.lost)


def tlsClient(
    port: int,
    context: ssl.SSLContext,
    hostname: str,
    startTLS: bool = False,
) -> str:
    """
    A blocking stdlib client (run in a thread): connect, optionally upgrade
    with STARTTLS, read until the server closes; the text read or the error.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            if startTLS:
                reader = raw.makefile("rb")
                assert reader.readline() == b"ready\n"
                raw.sendall(b"STARTTLS\n")
                assert reader.readline() == b"go ahead\n"
            with context.wrap_socket(raw, server_hostname=hostname) as tls:
                received = b""
                while chunk := tls.recv(4096):
                    received += chunk
                return received.decode()
        except (ssl.SSLError, OSError) as e:
            return f"error: {e}"


class RealPeerTests(TLSTestMixin, TestCase):
    """
    Real sockets on 127.0.0.1 with peers nobody here wrote.
    """

    def setUp(self) -> None:
        from twisted.internet import reactor

        super().setUp()
        self.reactor: Any = reactor
        self.clock = reactor  # type: ignore[assignment]

    def listen(self, serverTLS: ServerTLS | None, wrap: bool = True) -> Any:
        factory = LineServerFactory(None if wrap else serverTLS)
        wrapped = serverTLS.wrapFactory(factory) if wrap and serverTLS else factory
        port = self.reactor.listenTCP(0, wrapped, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port, factory

    @inlineCallbacks
    def openssl(self, port: int, *args: str) -> Any:
        out, err, code = yield getProcessOutputAndValue(
            shutil.which("openssl") or "openssl",
            ["s_client", "-connect", f"127.0.0.1:{port}", "-ign_eof", *args],
            env=os.environ,
        )
        return out.decode(errors="replace") + err.decode(errors="replace"), code

    @inlineCallbacks
    def test_opensslClient(self) -> Any:
        """openssl s_client verifies the SNI certificate over TLS 1.3 and reads."""
        # openssl s_client verifies the SNI-chosen certificate against the CA,
        # negotiates TLS 1.3 and reads the greeting.
        port, factory = self.listen(self.serverTLS())
        output, code = yield self.openssl(
            port,
            "-servername",
            "b.example",
            "-verify_hostname",
            "b.example",
            "-CAfile",
            self.pki.caPath,
            "-verify_return_error",
            "-brief",
        )
        yield factory.allGone()
        self.assertEqual(code, 0, output)
        self.assertIn("Verification: OK", output)
        self.assertIn("TLSv1.3", output)
        self.assertIn("CN = b.example", output)
        self.assertIn("hello None", output)

    @inlineCallbacks
    def test_opensslWithoutCertificateLogged(self) -> Any:
        """openssl s_client without the required client certificate is logged."""
        serverTLS = self.serverTLS(clientCA=self.pki.caPath, clientCert="required")
        port, factory = self.listen(serverTLS)
        with capturedLogs() as events:
            output, _ = yield self.openssl(port, "-CAfile", self.pki.caPath)
            yield factory.allGone()
        self.assertIn("certificate required", output)
        [event] = [e for e in events if "TLS handshake" in e.get("log_format", "")]
        self.assertTrue(event["peer"].startswith("127.0.0.1:"), event["peer"])
        self.assertIn("peer did not return a certificate", event["reason"])

    @inlineCallbacks
    def test_opensslTLS11Refused(self) -> Any:
        """openssl s_client with -tls1_1, or -tls1_2 and a CBC suite, is refused."""
        port, factory = self.listen(self.serverTLS())
        output, code = yield self.openssl(
            port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"
        )
        self.assertNotEqual(code, 0)
        self.assertIn("alert protocol version", output)
        output, code = yield self.openssl(
            port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384"
        )
        yield factory.allGone()
        self.assertNotEqual(code, 0)
        self.assertIn("alert handshake failure", output)

    @inlineCallbacks
    def test_nptlsEndpointWithClientCertificates(self) -> Any:
        """nptls: with clientca= requires and identifies client certificates."""
        # An nptls: endpoint string with clientca= requires a client certificate: a
        # stdlib client with one is identified by its CN, one without is refused, and a
        # wrong hostname fails on the client side.
        cert, key = self.a
        endpoint = serverFromString(
            self.reactor,
            f"nptls:cert={cert}:key={key}:clientca={self.pki.caPath}"
            ":tcp:0:interface=127.0.0.1",
        )
        factory = LineServerFactory()
        port = yield endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        alice = self.pki.clientCertificate("alice")
        withCert = clientSSLContext(self.pki.caPath)
        withCert.load_cert_chain(*alice)
        result = yield deferToThread(tlsClient, number, withCert, "a.example")
        self.assertEqual(result, "hello alice\n")
        anonymous = clientSSLContext(self.pki.caPath)
        result = yield deferToThread(tlsClient, number, anonymous, "a.example")
        self.assertIn("error", result)
        self.assertIn("CERTIFICATE_REQUIRED", result.upper())
        result = yield deferToThread(tlsClient, number, withCert, "wrong.example")
        self.assertIn("CERTIFICATE_VERIFY_FAILED", result.upper())
        yield factory.allGone()

    @inlineCallbacks
    def test_startTLS(self) -> Any:
        """A connection upgraded with startTLS verifies and identifies the client."""
        # A plain connection upgraded with transport.startTLS(serverTLS) verifies for
        # the stdlib client and identifies the client certificate.
        serverTLS = self.serverTLS(clientCA=self.pki.caPath, clientCert="optional")
        port, factory = self.listen(serverTLS, wrap=False)
        context = clientSSLContext(self.pki.caPath)
        context.load_cert_chain(*self.pki.clientCertificate("carol"))
        result = yield deferToThread(tlsClient, port, context, "localhost", True)
        self.assertEqual(result, "hello carol\n")
        result = yield deferToThread(
            tlsClient, port, clientSSLContext(self.pki.caPath), "127.0.0.1", True
        )
        self.assertEqual(result, "hello None\n")
        yield factory.allGone()
