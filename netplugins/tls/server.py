# -*- test-case-name: tests.test_tls -*-
"""
L{ServerTLS}: the server context factory, with SNI, client certificates and
reload of its files on SIGHUP and when they change.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from attrs import frozen
from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from netplugins.pyopensslinternals import setContextNumTickets, setNumTickets
from netplugins.ratelimit import ReportGate
from netplugins.reload import onReload
from netplugins.tls.devcert import ensureDevelopmentCertificate
from netplugins.tls.handshake import _DeadlineTLSFactory
from netplugins.tls.identity import (
    Identity,
    TLSConfigurationError,
    TLSSettings,
    directoryFiles,
    loadCAs,
    loadDirectory,
    loadIdentity,
)

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
        handshakeTimeout: float | None = None,
    ):
        """
        Load every file named by C{settings}.

        @param pollInterval: seconds between checks of the files' mtimes while a
            L{service} runs.
        @param handshakeTimeout: default deadline for L{wrapFactory} and
            STARTTLS (C{settings.handshakeTimeout} by default).
        @raise TLSConfigurationError: (a L{ValueError}) for unusable files.
        """
        self.settings = settings
        self._reactor = reactor
        self.pollInterval = pollInterval
        self.handshakeTimeout = (
            settings.handshakeTimeout if handshakeTimeout is None else handshakeTimeout
        )
        self._watchers = 0
        self._poller: LoopingCall | None = None
        self._unregisterReload: Callable[[], None] | None = None
        self._refusal: SSL.Context | None = None
        self._handshakeReports: ReportGate | None = None
        self._seen = self._filesSignature()
        self._generation = self._load()

    def _getReactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    # Loading

    def _identities(self) -> list[Identity]:
        settings = self.settings
        pairs = list(settings.certificates)
        if not pairs and settings.directory is None:
            pairs = [ensureDevelopmentCertificate(settings.stateDir)]
        identities = [loadIdentity(cert, key) for cert, key in pairs]
        if settings.directory is not None:
            loaded, unused = loadDirectory(settings.directory)
            identities.extend(loaded)
            for problem in unused:
                self.log.warn("TLS directory: skipping {problem}", problem=problem)
        return identities

    def _load(self) -> _Generation:
        identities = self._identities()
        clientCAs = loadCAs(self.settings.clientCA) if self.settings.clientCA else []
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
        self, identity: Identity, clientCAs: list[x509.Certificate]
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
        # Without a cache (and with OP_NO_TICKET) no session can resume, yet
        # OpenSSL would still send two TLS 1.3 tickets after each handshake.
        setContextNumTickets(context, 0)
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
                files.extend(directoryFiles(settings.directory))
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
        self._unregisterReload = onReload(self._reloadOnSignal)

    def _stopWatching(self) -> None:
        self._watchers -= 1
        if self._watchers > 0:
            return
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        self._poller = None
        if self._unregisterReload is not None:
            self._unregisterReload()
            self._unregisterReload = None

    def handshakeReports(self, clock: Any) -> ReportGate:
        """
        The gate of the log lines about failed handshakes, shared by every
        listener wrapped with this object.
        """
        if self._handshakeReports is None:
            self._handshakeReports = ReportGate(clock.seconds())
        return self._handshakeReports

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
        *,
        sessionTickets: int | None = None,
    ) -> IProtocolFactory:
        """
        Wrap C{factory} in server-side TLS with a handshake deadline: a client
        that has not finished its handshake after C{handshakeTimeout} seconds
        (default: this object's) is disconnected.

        @param sessionTickets: how many TLS 1.3 session tickets each
            connection sends, if not the contexts' number (requires
            L{numTicketsSettable}).
        """
        if reactor is None:
            reactor = self._getReactor()
        return _DeadlineTLSFactory(
            self,
            factory,
            reactor,
            self.handshakeTimeout if handshakeTimeout is None else handshakeTimeout,
            None if sessionTickets is None else _Tickets(self, sessionTickets),
        )


@implementer(IOpenSSLServerConnectionCreator)
class _Tickets:
    """
    A L{ServerTLS}'s connections, sending C{count} TLS 1.3 session tickets.
    """

    def __init__(self, serverTLS: ServerTLS, count: int):
        self.serverTLS = serverTLS
        self.count = count

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = self.serverTLS.serverConnectionForTLS(tlsProtocol)
        if not setNumTickets(connection, self.count):
            raise RuntimeError("SSL_set_num_tickets is not available here")
        return connection


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
