# -*- test-case-name: tests.test_tls -*-
"""
The shared TLS layer: one server context factory (L{ServerTLS}) used for
implicit TLS listeners, STARTTLS and the C{nptls:} endpoint, plus client-side
helpers that always verify the peer.

Profile (SECURITY.md, "TLS profile"): TLS 1.2 and 1.3 (1.3 only with
C{minVersion="1.3"}); TLS 1.2 suites are ECDHE with AEAD only, as Mozilla's
"intermediate" configuration; no compression, renegotiation or session tickets;
the client's cipher preference wins, as Mozilla intermediate recommends.

Certificates are chosen by SNI from the names in their subject alternative names;
unknown or missing names get the first (default) certificate.  A pyOpenSSL
C{Context} cannot change once used, so L{ServerTLS.reload} builds a whole new set
of contexts and swaps one reference: live connections keep the contexts they
started with, the next handshake uses the new ones.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import signal
import ssl
from collections.abc import Mapping
from functools import partial
from typing import Any

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.components import proxyForInterface
from twisted.python.failure import Failure
from zope.interface import implementer

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_POLL_INTERVAL = 5.0

# Mozilla server-side TLS, "intermediate" 6.0: ECDHE key exchange, AEAD only.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
TLS13_CIPHERSUITES = (
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
)

_log = Logger(namespace="netplugins.tls")


@frozen
class TLSSettings:
    """
    What a server's TLS is made from (the C{--tls-*} options).

    @ivar certificates: (certificate with chain, private key) PEM path pairs;
        the first is the default for unknown or missing SNI names.
    @ivar directory: a directory of C{*.pem} files, each holding a key, its
        certificate and chain, as Twisted's C{tls:} endpoint reads; a file
        serves the names in its certificate and its own basename.
    @ivar clientCA: verify client certificates against the CAs in this PEM.
    @ivar clientCert: C{"optional"} or C{"required"}, with C{clientCA}.
    @ivar minVersion: C{"1.2"} or C{"1.3"}.
    @ivar stateDir: where a development certificate is made when no
        certificate and no directory is given.
    """

    certificates: tuple[tuple[str, str], ...] = ()
    directory: str | None = None
    clientCA: str | None = None
    clientCert: str | None = None
    minVersion: str = "1.2"
    stateDir: str = "var"


class TLSConfigurationError(ValueError):
    """
    A certificate, key or CA file cannot be used; the message is one line.
    """


@frozen
class _Identity:
    """
    One certificate chain and its key, loaded and checked.
    """

    source: str
    names: tuple[str, ...]
    chain: tuple[x509.Certificate, ...]
    key: Any


_PRIVATE_KEY = re.compile(
    rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.+?-----END \1-----",
    re.DOTALL,
)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigurationError(f"cannot read {path}: {e.strerror}") from None


def _certificateNames(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower().rstrip(".") for name in san.get_values_for_type(x509.DNSName)]


def _loadIdentity(
    certPath: str, keyPath: str, extraNames: tuple[str, ...] = ()
) -> _Identity:
    """
    Load a certificate chain and its key, refusing a key that does not match.

    @raise TLSConfigurationError: for anything unusable.
    """
    certData = _read(certPath)
    keyData = certData if keyPath == certPath else _read(keyPath)
    try:
        chain = tuple(x509.load_pem_x509_certificates(certData))
    except ValueError:
        raise TLSConfigurationError(f"no PEM certificate in {certPath}") from None
    match = _PRIVATE_KEY.search(keyData)
    if match is None:
        raise TLSConfigurationError(f"no PEM private key in {keyPath}")
    try:
        key = serialization.load_pem_private_key(match.group(0), password=None)
    except (ValueError, TypeError) as e:
        raise TLSConfigurationError(f"unusable private key in {keyPath}: {e}") from None
    if key.public_key() != chain[0].public_key():
        raise TLSConfigurationError(
            f"the key in {keyPath} does not match the certificate in {certPath}"
        )
    names = tuple(dict.fromkeys(_certificateNames(chain[0]) + list(extraNames)))
    return _Identity(certPath, names, chain, key)


def _directoryFiles(directory: str) -> list[str]:
    try:
        entries = sorted(os.listdir(directory))
    except OSError as e:
        raise TLSConfigurationError(f"cannot read {directory}: {e.strerror}") from None
    return [
        os.path.join(directory, name)
        for name in entries
        if name.endswith(".pem") and os.path.isfile(os.path.join(directory, name))
    ]


def _loadCAs(path: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_read(path))
    except ValueError:
        raise TLSConfigurationError(f"no PEM CA certificate in {path}") from None


def _lookup(
    byName: Mapping[str, SSL.Context], name: bytes | None
) -> SSL.Context | None:
    """
    The context for SNI C{name}: exact, then a wildcard for its first label.
    """
    if not name:
        return None
    text = name.decode("ascii", "replace").lower().rstrip(".")
    found = byName.get(text)
    if found is None and "." in text:
        found = byName.get("*." + text.split(".", 1)[1])
    return found


@frozen
class _Generation:
    """
    One loaded set of contexts; replaced as a whole on reload.
    """

    default: SSL.Context
    byName: Mapping[str, SSL.Context]
    names: tuple[str, ...]


def _fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def ensureDevelopmentCertificate(stateDir: str) -> tuple[str, str]:
    """
    Make (once) and return a self-signed certificate for C{localhost},
    C{127.0.0.1} and C{::1} under C{stateDir/tls/}, logging a warning with its
    SHA-256 fingerprint every time it is used.  An existing certificate is
    reused while it has more than a day left and matches its key.

    @return: (certificate, key) paths; the key file is mode 0600.
    """
    directory = os.path.join(stateDir, "tls")
    certPath = os.path.join(directory, "development-cert.pem")
    keyPath = os.path.join(directory, "development-key.pem")
    certificate = None
    try:
        identity = _loadIdentity(certPath, keyPath)
    except TLSConfigurationError:
        pass
    else:
        left = identity.chain[0].not_valid_after_utc - datetime.datetime.now(
            datetime.UTC
        )
        if left > datetime.timedelta(days=1):
            certificate = identity.chain[0]
    if certificate is None:
        certificate = _writeDevelopmentCertificate(directory, certPath, keyPath)
    _log.warn(
        "Using the self-signed DEVELOPMENT certificate {path} (SHA-256 "
        "{fingerprint}); clients cannot verify it, give --tls-cert/--tls-key "
        "for real use",
        path=certPath,
        fingerprint=_fingerprint(certificate),
    )
    return certPath, keyPath


def _writeDevelopmentCertificate(
    directory: str, certPath: str, keyPath: str
) -> x509.Certificate:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "netplugins development")]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first, created 0600 from the start: it is never readable by others,
    # not even for a moment under a lax umask.
    _writeAtomically(keyPath, keyPEM, 0o600)
    _writeAtomically(
        certPath, certificate.public_bytes(serialization.Encoding.PEM), 0o644
    )
    return certificate


def _writeAtomically(path: str, data: bytes, mode: int) -> None:
    temporary = path + ".new"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    The server TLS context factory: give it to C{TLSMemoryBIOFactory(serverTLS,
    False, factory)} (or use L{wrapFactory}) or to C{transport.startTLS}.

    @ivar settings: the L{TLSSettings} it loads.
    """

    log = Logger()

    def __init__(
        self,
        settings: TLSSettings,
        reactor: Any = None,
        *,
        pollInterval: float = DEFAULT_POLL_INTERVAL,
        handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ):
        """
        Load every file named by C{settings}.

        @param pollInterval: seconds between checks of the files' mtimes while a
            L{service} runs.
        @param handshakeTimeout: default deadline for L{wrapFactory}.
        @raise TLSConfigurationError: (a L{ValueError}) for unusable files.
        """
        self.settings = settings
        self._reactor = reactor
        self.pollInterval = pollInterval
        self.handshakeTimeout = handshakeTimeout
        self._watchers = 0
        self._poller: LoopingCall | None = None
        self._previousHandler: Any = None
        self._handlerInstalled = False
        self._refusal: SSL.Context | None = None
        self._seen = self._filesSignature()
        self._generation = self._load()

    def _getReactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    # Loading

    def _identities(self) -> list[_Identity]:
        settings = self.settings
        pairs = list(settings.certificates)
        if not pairs and settings.directory is None:
            pairs = [ensureDevelopmentCertificate(settings.stateDir)]
        identities = [_loadIdentity(cert, key) for cert, key in pairs]
        if settings.directory is not None:
            for path in _directoryFiles(settings.directory):
                stem = os.path.basename(path)[: -len(".pem")].lower()
                identities.append(_loadIdentity(path, path, (stem,)))
            if not identities:
                raise TLSConfigurationError(
                    f"no *.pem certificate files in {settings.directory}"
                )
        return identities

    def _load(self) -> _Generation:
        identities = self._identities()
        clientCAs = _loadCAs(self.settings.clientCA) if self.settings.clientCA else []
        byName: dict[str, SSL.Context] = {}
        contexts = []
        for identity in identities:
            context = self._makeContext(identity, clientCAs)
            contexts.append(context)
            for name in identity.names:
                # The first file naming a host serves it, as in the CLI order.
                byName.setdefault(name, context)
        for context in contexts:
            context.set_tlsext_servername_callback(
                partial(self._serverNameReceived, byName)
            )
        names = tuple(n for i in identities for n in i.names)
        return _Generation(contexts[0], byName, names)

    def _makeContext(
        self, identity: _Identity, clientCAs: list[x509.Certificate]
    ) -> SSL.Context:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(
            SSL.TLS1_3_VERSION
            if self.settings.minVersion == "1.3"
            else SSL.TLS1_2_VERSION
        )
        context.set_options(
            SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_TICKET
        )
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        context.set_cipher_list(TLS12_CIPHERS.encode("ascii"))
        context.set_tls13_ciphersuites(TLS13_CIPHERSUITES.encode("ascii"))
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        context.set_session_id(b"netplugins")
        try:
            context.use_certificate(identity.chain[0])
            for intermediate in identity.chain[1:]:
                context.add_extra_chain_cert(intermediate)
            context.use_privatekey(identity.key)
            context.check_privatekey()
        except SSL.Error as e:
            raise TLSConfigurationError(f"{identity.source}: {e}") from None
        if clientCAs:
            # Every context of a generation verifies identically: OpenSSL keeps
            # the verify mode of the context a connection started with, even
            # after SNI switches the certificate.
            mode = SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE
            if self.settings.clientCert != "optional":
                mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            context.set_verify(mode)
            store = context.get_cert_store()
            assert store is not None
            for ca in clientCAs:
                store.add_cert(X509.from_cryptography(ca))
                context.add_client_ca(ca)
        else:
            context.set_verify(SSL.VERIFY_NONE)
        return context

    def _serverNameReceived(
        self, byName: Mapping[str, SSL.Context], connection: SSL.Connection
    ) -> None:
        try:
            chosen = self._contextForName(byName, connection.get_servername())
            if chosen is not None:
                connection.set_context(chosen)
        except Exception:
            self.log.failure("TLS server name lookup failed; refusing the handshake")
            # Raising here would make pyOpenSSL print a traceback to stderr; a
            # context without any certificate fails this one handshake with a
            # proper alert instead.
            connection.set_context(self._refusalContext())

    def _contextForName(
        self, byName: Mapping[str, SSL.Context], name: bytes | None
    ) -> SSL.Context | None:
        return _lookup(byName, name)

    def _refusalContext(self) -> SSL.Context:
        if self._refusal is None:
            self._refusal = SSL.Context(SSL.TLS_SERVER_METHOD)
        return self._refusal

    # IOpenSSLServerConnectionCreator

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """
        A new server connection on the current contexts.
        """
        connection = SSL.Connection(self._generation.default, None)
        connection.set_app_data(tlsProtocol)
        return connection

    # Reloading

    @property
    def names(self) -> tuple[str, ...]:
        """
        The SNI names served now, default certificate's first.
        """
        return self._generation.names

    def reload(self) -> bool:
        """
        Re-read every file and switch new handshakes to the result; on any
        error keep serving the current certificates and log why.

        @return: whether the new files were taken.
        """
        try:
            generation = self._load()
        except TLSConfigurationError as e:
            self.log.error(
                "TLS reload rejected, still serving the previous certificates: {error}",
                error=str(e),
            )
            return False
        except Exception:
            self.log.failure(
                "TLS reload failed, still serving the previous certificates"
            )
            return False
        self._generation = generation
        self.log.info(
            "TLS certificates reloaded for {names}", names=", ".join(generation.names)
        )
        return True

    def _watchedFiles(self) -> list[str]:
        settings = self.settings
        files = [path for pair in settings.certificates for path in pair]
        if settings.clientCA is not None:
            files.append(settings.clientCA)
        if settings.directory is not None:
            files.append(settings.directory)
            try:
                files.extend(_directoryFiles(settings.directory))
            except TLSConfigurationError:
                pass
        return files

    def _filesSignature(self) -> tuple[tuple[str, int, int, int], ...]:
        signature = []
        for path in self._watchedFiles():
            try:
                st = os.stat(path)
            except OSError:
                signature.append((path, -1, -1, -1))
            else:
                signature.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(signature)

    def _poll(self) -> None:
        signature = self._filesSignature()
        if signature != self._seen:
            # Remember even a rejected change, so a broken file is reported
            # once rather than every poll.
            self._seen = signature
            self.reload()

    def _signalled(self, signum: int, frame: Any) -> None:
        # Signal handlers interrupt whatever the main thread is doing; do the
        # reload from the reactor loop instead.
        if self._handlerInstalled:
            self._getReactor().callFromThread(self._reloadOnSignal)
        previous = self._previousHandler
        if callable(previous):
            previous(signum, frame)

    def _reloadOnSignal(self) -> None:
        self.log.info("SIGHUP: reloading TLS certificates")
        self._seen = self._filesSignature()
        self.reload()

    def _startWatching(self) -> None:
        self._watchers += 1
        if self._watchers > 1:
            return
        self._poller = LoopingCall(self._poll)
        self._poller.clock = self._getReactor()
        self._poller.start(self.pollInterval, now=False)
        if hasattr(signal, "SIGHUP"):
            try:
                self._previousHandler = signal.signal(signal.SIGHUP, self._signalled)
            except ValueError:
                # Not the main thread: the mtime poll still works.
                self.log.warn("cannot handle SIGHUP outside the main thread")
            else:
                self._handlerInstalled = True

    def _stopWatching(self) -> None:
        self._watchers -= 1
        if self._watchers > 0:
            return
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        self._poller = None
        if self._handlerInstalled:
            self._handlerInstalled = False
            # Only restore when nobody chained after us; otherwise our handler
            # stays in their chain and just passes signals on.
            if signal.getsignal(signal.SIGHUP) == self._signalled:
                signal.signal(signal.SIGHUP, self._previousHandler)

    def service(self) -> IService:
        """
        A new service that, while running, reloads on SIGHUP and when the
        files change.  Several services may share this object; one watcher runs
        while any of them does.
        """
        return _WatchService(self)

    # Wrapping

    def wrapFactory(
        self,
        factory: IProtocolFactory,
        reactor: Any = None,
        handshakeTimeout: float | None = None,
    ) -> IProtocolFactory:
        """
        Wrap C{factory} in server-side TLS with a handshake deadline: a client
        that has not finished its handshake after C{handshakeTimeout} seconds
        (default: this object's) is disconnected.
        """
        if reactor is None:
            reactor = self._getReactor()
        return _DeadlineTLSFactory(
            self,
            factory,
            reactor,
            self.handshakeTimeout if handshakeTimeout is None else handshakeTimeout,
        )


class _WatchService(Service):
    """
    Keeps a L{ServerTLS} watching its files while running.
    """

    def __init__(self, serverTLS: ServerTLS):
        self.serverTLS = serverTLS
        self.setName("tls-reload")

    def startService(self) -> None:
        super().startService()
        self.serverTLS._startWatching()

    def stopService(self) -> Deferred[None] | None:
        if self.running:
            self.serverTLS._stopWatching()
        super().stopService()
        return None


class _DeadlineTLSProtocol(BufferingTLSTransport):
    """
    Server-side TLS that aborts a connection whose handshake is not done in
    time (SECURITY.md, "Deadlines and caps").
    """

    factory: _DeadlineTLSFactory
    log = Logger()
    _deadline: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        self._deadline = self.factory.reactor.callLater(
            self.factory.handshakeTimeout, self._handshakeTimedOut
        )
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        # TLSMemoryBIOProtocol tells only the wrapped protocol (and only if it
        # is an IHandshakeListener) that the handshake finished; check here.
        if self._handshakeDone:
            self._cancelDeadline()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelDeadline()
        super().connectionLost(reason)

    def _cancelDeadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _handshakeTimedOut(self) -> None:
        self._deadline = None
        self.log.warn(
            "TLS handshake from {peer} not finished within {timeout} seconds; "
            "disconnecting",
            peer=self.getPeer(),
            timeout=self.factory.handshakeTimeout,
        )
        self.abortConnection()


class _DeadlineTLSFactory(TLSMemoryBIOFactory):
    protocol = _DeadlineTLSProtocol

    def __init__(
        self,
        serverTLS: ServerTLS,
        wrappedFactory: IProtocolFactory,
        reactor: Any,
        handshakeTimeout: float,
    ):
        super().__init__(serverTLS, False, wrappedFactory, clock=reactor)
        self.reactor = reactor
        self.handshakeTimeout = handshakeTimeout


def peerIdentity(transport: Any) -> str | None:
    """
    The identity in the certificate the peer presented and that verified: its
    subject common name, else its first subject alternative name.

    @param transport: a protocol's transport (TLS-wrapped, or after
        C{startTLS}).
    @return: C{None} without TLS, without a peer certificate, or when this side
        did not verify peer certificates.
    """
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    try:
        handle = getHandle()
    except Exception:
        return None
    if not isinstance(handle, SSL.Connection):
        return None
    # With VERIFY_PEER a certificate that fails verification fails the
    # handshake, so any certificate present here has been verified.
    if not handle.get_verify_mode() & SSL.VERIFY_PEER:
        return None
    certificate = handle.get_peer_certificate(as_cryptography=True)
    if certificate is None:
        return None
    return certificateIdentity(certificate)


def certificateIdentity(certificate: x509.Certificate) -> str | None:
    """
    A certificate's subject common name, else its first subject alternative
    name (DNS name, e-mail address, URI or IP address).
    """
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")
    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        return None
    for general in san:
        if isinstance(
            general,
            (
                x509.DNSName,
                x509.RFC822Name,
                x509.UniformResourceIdentifier,
                x509.IPAddress,
            ),
        ):
            return str(general.value)
    return None


# Client side


def clientCreator(
    hostname: str,
    caFile: str | None = None,
    clientCertificate: tuple[str, str] | None = None,
    minVersion: str = "1.2",
) -> Any:
    """
    Client TLS options that verify the server's certificate chain and that it
    is valid for C{hostname}.

    @param caFile: trust only the CAs in this PEM; the platform's when C{None}.
    @param clientCertificate: (certificate, key) PEM paths to present.
    @return: an C{IOpenSSLClientConnectionCreator}.
    """
    from twisted.internet.ssl import (
        Certificate,
        PrivateCertificate,
        TLSVersion,
        optionsForClientTLS,
        trustRootFromCertificates,
    )

    trustRoot = None
    if caFile is not None:
        trustRoot = trustRootFromCertificates(
            [
                Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM))
                for c in _loadCAs(caFile)
            ]
        )
    private = None
    if clientCertificate is not None:
        certPath, keyPath = clientCertificate
        identity = _loadIdentity(certPath, keyPath)
        private = PrivateCertificate.loadPEM(
            identity.chain[0].public_bytes(serialization.Encoding.PEM)
            + identity.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    extra = {"raiseMinimumTo": TLSVersion.TLSv1_3} if minVersion == "1.3" else {}
    return optionsForClientTLS(
        hostname,
        trustRoot=trustRoot,
        clientCertificate=private,
        extraCertificateOptions=extra,
    )


def clientSSLContext(
    caFile: str | None = None, minVersion: str = "1.2"
) -> ssl.SSLContext:
    """
    A stdlib C{ssl.SSLContext} for clients (ldap3, smtplib, ...): certificate
    and hostname verification on, TLS 1.2 or newer.

    @param caFile: trust only the CAs in this PEM; the platform's when C{None}.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=caFile)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if minVersion == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    return context


# The nptls: endpoint


_OPTIONS = ("dir", "clientca", "clientcert", "minversion", "statedir")
_PAIR = re.compile(r"^(cert|key)(\d*)$")


def _unparse(args: tuple[object, ...], kwargs: Mapping[str, object]) -> str:
    from twisted.internet.endpoints import quoteStringArgument

    return ":".join(
        [quoteStringArgument(str(a)) for a in args]
        + [
            f"{quoteStringArgument(str(k))}={quoteStringArgument(str(v))}"
            for k, v in kwargs.items()
        ]
    )


def settingsFromEndpointOptions(options: Mapping[str, str]) -> TLSSettings:
    """
    L{TLSSettings} from the C{nptls:} keywords: C{cert}/C{key} (further pairs as
    C{cert2}/C{key2}, ...: an endpoint string keeps only the last value of a
    repeated keyword), C{dir}, C{clientca}, C{clientcert}, C{minversion},
    C{statedir}.

    @raise ValueError: for an unpaired certificate or key or a bad value.
    """
    pairs: dict[int, dict[str, str]] = {}
    for key, value in options.items():
        match = _PAIR.match(key)
        if match:
            pairs.setdefault(int(match.group(2) or 1), {})[match.group(1)] = value
    certificates = []
    for index in sorted(pairs):
        pair = pairs[index]
        suffix = "" if index == 1 else str(index)
        if "cert" not in pair or "key" not in pair:
            raise ValueError(
                f"nptls: cert{suffix}= and key{suffix}= must be given together"
            )
        certificates.append((pair["cert"], pair["key"]))
    minVersion = options.get("minversion", "1.2")
    if minVersion not in ("1.2", "1.3"):
        raise ValueError(f"nptls: minversion must be 1.2 or 1.3, not {minVersion!r}")
    clientCA = options.get("clientca")
    clientCert = options.get("clientcert")
    if clientCert not in (None, "optional", "required"):
        raise ValueError("nptls: clientcert must be 'optional' or 'required'")
    if clientCert is not None and clientCA is None:
        raise ValueError("nptls: clientcert= needs clientca=")
    return TLSSettings(
        certificates=tuple(certificates),
        directory=options.get("dir"),
        clientCA=clientCA,
        clientCert=clientCert or ("required" if clientCA else None),
        minVersion=minVersion,
        stateDir=options.get("statedir", "var"),
    )


def parseServerEndpoint(
    reactor: Any, *args: object, **kwargs: object
) -> IStreamServerEndpoint:
    """
    Parse C{nptls:[OPTION=VALUE:]...WRAPPED}: the keywords of
    L{settingsFromEndpointOptions} configure TLS, everything else is the
    wrapped endpoint (C{tcp:8443}, C{unix:...}, C{haproxy:...}).

    @raise ValueError: with a one-line message.
    """
    ours = {k: str(v) for k, v in kwargs.items() if k in _OPTIONS or _PAIR.match(k)}
    rest = {k: v for k, v in kwargs.items() if k not in ours}
    if not args:
        raise ValueError(
            "nptls: needs a wrapped endpoint after its options, "
            "e.g. nptls:cert=c.pem:key=k.pem:tcp:8443"
        )
    settings = settingsFromEndpointOptions(ours)
    from twisted.internet.endpoints import serverFromString

    description = _unparse(args, rest)
    try:
        wrapped = serverFromString(reactor, description)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"nptls: bad wrapped endpoint {description!r}: {e}") from None
    return TLSServerEndpoint(ServerTLS(settings, reactor), wrapped, reactor)


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """
    Listens on C{wrapped} with L{ServerTLS.wrapFactory}; while listening, the
    certificates reload on SIGHUP and when their files change.
    """

    def __init__(
        self, serverTLS: ServerTLS, wrapped: IStreamServerEndpoint, reactor: Any
    ):
        self.serverTLS = serverTLS
        self.wrapped = wrapped
        self.reactor = reactor

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        listening = self.wrapped.listen(
            self.serverTLS.wrapFactory(protocolFactory, self.reactor)
        )

        def watch(port: IListeningPort) -> IListeningPort:
            watcher = self.serverTLS.service()
            watcher.startService()
            return _WatchedPort(port, watcher)

        return listening.addCallback(watch)


class _WatchedPort(proxyForInterface(IListeningPort, "_port")):  # type: ignore[misc]
    """
    A listening port that stops its certificate watcher when it stops.
    """

    def __init__(self, port: IListeningPort, watcher: IService):
        self._port = port
        self._watcher = watcher

    def stopListening(self) -> Any:
        if self._watcher.running:
            self._watcher.stopService()
        return self._port.stopListening()
