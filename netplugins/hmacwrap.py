"""
The C{hmac:} server endpoint: the Python Cookbook 11.9 handshake in front of any
stream endpoint, the way C{haproxy:} puts the PROXY header in front of one::

    --listen hmac:keyfile=keys.txt:tcp:8000:interface=127.0.0.1
    --listen hmac:keyfile=keys.txt:digest=sha512:mutual=yes:timeout=5:unix:/run/s

Options (everything else is the wrapped endpoint): C{keyfile} (required; see
L{netplugins.cred.hmac} for its format), C{digest} (C{sha256} by default;
C{sha512}, C{sha384}, C{sha3_256}, C{sha3_512}, and the legacy C{sha1} and
C{md5} only when named), C{mutual} (C{yes}/C{no}, default C{no}) and
C{timeout} (seconds for the whole handshake, default 10).

The handshake, all of it before the service's protocol exists:

 1. the server sends 32 random bytes, the challenge;
 2. the client sends C{hmac.new(key, challenge, digest).digest()}, exactly the
    digest's size; the server tries every key in its file and the matching
    key's name is the client's identity (nothing matches: the failure is logged
    with the peer's address and the connection closed);
 3. with C{mutual=yes}, the client then sends 32 random bytes of its own and the
    server answers with
    C{hmac.new(key, b"netplugins-hmac-server\\0" + clientChallenge +
    serverChallenge, digest).digest()}.  A mutual client must read exactly 32
    bytes as the challenge, answer it, send its challenge, read one digest and
    compare it (C{hmac.compare_digest}) with its own computation of that value,
    and close the connection if it differs.  The label keeps the two directions
    apart: a client only ever signs 32-byte messages and the server's proof
    signs a longer, labelled one, so neither side can be used to produce the
    other's answer (a reflection attack); a client challenge equal to the
    server's is refused as well.

Then the service's protocol is built and connected to the real transport: its
writes go straight to the socket and its reads cost no extra call, and any bytes
the client sent right after the handshake are handed to it first.  The service
reads the key name with L{authenticatedName}C{(self.transport)}.  A half-close by
the client closes the connection.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from netplugins.addresses import describe
from netplugins.cred.hmac import (
    CHALLENGE_SIZE,
    DEFAULT_DIGEST,
    LEGACY_DIGESTS,
    HMACKey,
    KeyFile,
    digestFor,
)
from netplugins.endpointargs import unparse
from netplugins.interfaces import IHandshakeEndpoint

DEFAULT_TIMEOUT = 10.0
SERVER_PROOF_LABEL = b"netplugins-hmac-server\x00"

_names: WeakKeyDictionary[Any, str] = WeakKeyDictionary()


def authenticatedName(transport: Any) -> str | None:
    """
    The name of the key a connection authenticated with, or C{None}.

    @param transport: a protocol's C{transport}: the connection's own, or any
        protocol wrapper above it (limits, TLS), which are followed down.
    """
    while transport is not None:
        try:
            return _names[transport]
        except (KeyError, TypeError):
            transport = getattr(transport, "transport", None)
    return None


def serverProof(
    key: bytes, clientChallenge: bytes, serverChallenge: bytes, digestmod: str
) -> bytes:
    """
    The server's answer to a mutual client's challenge (see the module docstring).
    """
    message = SERVER_PROOF_LABEL + clientChallenge + serverChallenge
    return hmac.new(key, message, digestFor(digestmod)).digest()


class HMACHandshake(Protocol):
    """
    Runs the handshake on one connection, then steps aside for the wrapped
    factory's protocol.

    @ivar wrapped: the service's protocol once the handshake succeeded.
    """

    log = Logger()
    # Any transport: TCP, UNIX, TLS, a test's StringTransport.
    transport: Any

    def __init__(self, factory: HMACFactory, addr: IAddress | None) -> None:
        self.factory = factory
        self.addr = addr
        self.wrapped: Protocol | None = None
        self._buffer = b""
        self._challenge = b""
        self._key: HMACKey | None = None
        self._done = False
        self._timeout: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._challenge = os.urandom(CHALLENGE_SIZE)
        self._timeout = self.factory.clock.callLater(
            self.factory.timeout, self._timedOut
        )
        self.transport.write(self._challenge)

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self._buffer += data
        size = self.factory.digestSize
        if self._key is None:
            if len(self._buffer) < size:
                return
            response, self._buffer = self._buffer[:size], self._buffer[size:]
            key = self.factory.keys.find(self._challenge, response, self.factory.digest)
            if key is None:
                self._fail("no key matches the response")
                return
            self._key = key
        if self.factory.mutual:
            if len(self._buffer) < CHALLENGE_SIZE:
                return
            theirs = self._buffer[:CHALLENGE_SIZE]
            self._buffer = self._buffer[CHALLENGE_SIZE:]
            if hmac.compare_digest(theirs, self._challenge):
                self._fail("the client reflected the server's challenge")
                return
            self.transport.write(
                serverProof(self._key.key, theirs, self._challenge, self.factory.digest)
            )
        self._succeed(self._key)

    def _succeed(self, key: HMACKey) -> None:
        self._finish()
        protocol = self.factory.wrappedFactory.buildProtocol(self.addr)
        if protocol is None:
            self.log.info(
                "{peer} authenticated as {name}, but the service refused it",
                peer=describe(self.transport.getPeer()),
                name=key.name,
            )
            self.transport.loseConnection()
            return
        self.log.info(
            "{peer} authenticated as {name}",
            peer=describe(self.transport.getPeer()),
            name=key.name,
        )
        _names[self.transport] = key.name
        self.wrapped = protocol
        # Transports look dataReceived up on every read, so from now on they call
        # the service's protocol directly.
        self.dataReceived = protocol.dataReceived  # type: ignore[method-assign]
        rest, self._buffer = self._buffer, b""
        protocol.makeConnection(self.transport)
        if rest:
            protocol.dataReceived(rest)

    def _fail(self, why: str, abort: bool = False) -> None:
        self._finish()
        self._buffer = b""
        self.log.warn(
            "HMAC handshake with {peer} failed: {why}",
            peer=describe(self.transport.getPeer()),
            why=why,
        )
        # A peer that stopped talking may not read either: do not wait to flush.
        if abort and hasattr(self.transport, "abortConnection"):
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _finish(self) -> None:
        self._done = True
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def _timedOut(self) -> None:
        self._timeout = None
        self._fail(f"no answer within {self.factory.timeout:g} seconds", abort=True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.wrapped is not None:
            self.wrapped.connectionLost(reason)
            return
        if not self._done:
            self._finish()
            self.log.info(
                "{peer} closed the connection during the HMAC handshake",
                peer=describe(self.addr),
            )


class HMACFactory(ServerFactory):
    """
    Builds L{HMACHandshake}s, which build C{wrappedFactory}'s protocols once the
    peer has proved it holds a key.
    """

    protocol = HMACHandshake  # type: ignore[assignment]

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        keys: KeyFile,
        *,
        digest: str = DEFAULT_DIGEST,
        mutual: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Any = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.wrappedFactory = wrappedFactory
        self.keys = keys
        self.digest = digest
        self.digestSize = digestFor(digest)().digest_size
        self.mutual = mutual
        self.timeout = timeout
        self.clock = clock

    def buildProtocol(self, addr: IAddress | None) -> HMACHandshake:
        return HMACHandshake(self, addr)

    def startFactory(self) -> None:
        self.wrappedFactory.doStart()

    def stopFactory(self) -> None:
        self.wrappedFactory.doStop()

    def logPrefix(self) -> str:
        inner = getattr(self.wrappedFactory, "logPrefix", None)
        return f"HMAC ({inner() if inner else type(self.wrappedFactory).__name__})"


@implementer(IHandshakeEndpoint)
class HMACServerEndpoint:
    """
    Listens on C{wrapped}, running the handshake on every connection: the
    keyword twin of C{hmac:keyfile=...:...}.

    @ivar outerWrapper: if set, wraps the handshake's factory, for layers that
        must see connections before they authenticate (connection caps,
        allow/deny lists); the factory given to L{listen} sees only
        authenticated ones.
    """

    outerWrapper: Callable[[IProtocolFactory], IProtocolFactory] | None = None

    def __init__(
        self,
        wrapped: IStreamServerEndpoint,
        keys: KeyFile,
        *,
        digest: str = DEFAULT_DIGEST,
        mutual: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        reactor: Any = None,
    ) -> None:
        """
        @raise ValueError: for an unknown digest or a timeout that is not positive.
        """
        digestFor(digest)
        if not 0 < timeout < float("inf"):
            raise ValueError(f"timeout must be a positive number, not {timeout!r}")
        self.wrapped = wrapped
        self.keys = keys
        self.digest = digest.lower()
        self.mutual = mutual
        self.timeout = timeout
        self.reactor = reactor

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        factory = HMACFactory(
            protocolFactory,
            self.keys,
            digest=self.digest,
            mutual=self.mutual,
            timeout=self.timeout,
            clock=self.reactor,
        )
        if self.outerWrapper is not None:
            return self.wrapped.listen(self.outerWrapper(factory))
        return self.wrapped.listen(factory)


_YES = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


@implementer(IPlugin, IStreamServerEndpointStringParser)
class HMACServerParser:
    """
    Parses C{hmac:keyfile=PATH[:digest=D][:mutual=yes][:timeout=S]:ENDPOINT}.
    """

    prefix = "hmac"
    log = Logger()

    def parseStreamServer(
        self, reactor: Any, *args: object, **kwargs: object
    ) -> HMACServerEndpoint:
        """
        @raise ValueError: for a missing key file or wrapped endpoint, a bad
            option value, or a key file that does not load.
        """
        keyfile = kwargs.pop("keyfile", None)
        digest = str(kwargs.pop("digest", DEFAULT_DIGEST)).lower()
        mutual = str(kwargs.pop("mutual", "no")).lower()
        timeout = str(kwargs.pop("timeout", DEFAULT_TIMEOUT))
        if not keyfile:
            raise ValueError("hmac: needs keyfile=PATH")
        if not args:
            raise ValueError(
                "hmac: needs the endpoint to wrap after its options, "
                "e.g. hmac:keyfile=keys.txt:tcp:8000"
            )
        if mutual not in _YES:
            raise ValueError(f"hmac: mutual must be yes or no, not {mutual!r}")
        try:
            seconds = float(timeout)
        except ValueError:
            raise ValueError(
                f"hmac: timeout must be seconds, not {timeout!r}"
            ) from None
        digestFor(digest)
        if digest in LEGACY_DIGESTS:
            self.log.warn(
                "hmac: endpoint uses the legacy digest {digest}; prefer sha256",
                digest=digest,
            )
        keys = KeyFile(str(keyfile))
        wrapped = serverFromString(reactor, unparse(args, kwargs))
        return HMACServerEndpoint(
            wrapped,
            keys,
            digest=digest,
            mutual=_YES[mutual],
            timeout=seconds,
            reactor=reactor,
        )
