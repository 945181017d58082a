"""
Hosting an RPyC service (a subclass of C{rpyc.Service}) on the shared
listeners, TLS, caps and credential checkers.

RPyC's connections are blocking: each session's C{serve_all} loop runs in a
thread of a bounded pool, one thread per session, and a connection that would
need a thread beyond the pool's size is refused and logged.  The thread
serves one end of a socket pair; the reactor relays between the other end
and the client's transport, so TLS, the caps and the deadlines stay Twisted's.
Both directions follow L{netplugins.session}: a client that stops reading
stops the relay from reading the session's output, which blocks the session's
thread in its C{send}, and a session that stops reading stops the relay from
reading the client.  The session starts with the client's first byte (after
its login), so a connection that sends nothing holds no thread.

With credential checkers (C{--auth}), a client logs in before any RPyC byte
is read, with one line carrying RFC 4616's PLAIN message::

    C: AUTH PLAIN <base64 of: authzid NUL user NUL password> CRLF
    S: +OK CRLF                   (RPyC begins)
    S: -ERR <reason> CRLF         (try again, or closed)

The line (LF may end it too) may be at most L{MAX_LOGIN_LINE} bytes, and
anything else closes the connection; logins go through
L{LoginThrottle} (six per connection, delays after failures) and must happen
within the pre-authentication deadline; over a connection without TLS they
are refused unless the operator allows it.  Without checkers there is no
login: RPyC's own clients (C{rpyc.connect}) cannot send one.  L{connect} is
the client side of the login.

Every RPyC frame a client sends is bounded (L{BoundedChannel}), compressed
or not, and the session's configuration sends no server traceback or version
to clients.
"""

from __future__ import annotations

import binascii
import socket
import zlib
from base64 import b64decode, b64encode
from collections.abc import Mapping
from typing import Any

import rpyc
from rpyc.core.channel import Channel
from rpyc.core.service import Slave
from rpyc.core.stream import SocketStream
from rpyc.utils.authenticators import AuthenticationError
from rpyc.utils.factory import connect_channel, connect_stream
from twisted.application.service import MultiService
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from netplugins.addresses import describe
from netplugins.coerce import importNamed
from netplugins.cred.throttle import LoginAttempts, LoginThrottle
from netplugins.session import CLOSE_GRACE, COMMAND, Discipline
from netplugins.starttls import isSecure
from netplugins.web.auth import IRemoteUser

#: The most RPyC sessions served at once (threads) by default.
DEFAULT_THREADS = 10
#: The largest RPyC frame a client may send, in bytes, before and after
#: decompression.
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
#: The longest login line, CRLF included.
MAX_LOGIN_LINE = 1024
#: Seconds to log in when checkers are configured, unless C{--preauth-timeout}.
DEFAULT_PREAUTH_TIMEOUT = 120.0

#: What every session's RPyC connection is configured with, over the
#: service's own: no server tracebacks or versions for clients.
SESSION_CONFIG: Mapping[str, object] = {
    "include_local_traceback": False,
    "include_local_version": False,
}

_LOGIN, _WAITING, _RELAY, _CLOSED = range(4)


class FrameTooLargeError(Exception):
    """
    A client sent an RPyC frame over the limit.
    """


class BoundedChannel(Channel):  # type: ignore[misc]
    """
    RPyC's channel, refusing a frame longer than C{maxFrameSize} before
    reading it, and one that decompresses to more.  A refused frame closes
    the stream first: RPyC's C{close} then says goodbye to the peer and
    waits for its answer (up to C{sync_request_timeout}), which a peer
    sending garbage would never give.
    """

    __slots__ = ("maxFrameSize",)

    def __init__(self, stream: Any, maxFrameSize: int = DEFAULT_MAX_FRAME_SIZE):
        super().__init__(stream)
        self.maxFrameSize = maxFrameSize

    def recv(self) -> bytes:
        header = self.stream.read(self.FRAME_HEADER.size)
        length, compressed = self.FRAME_HEADER.unpack(header)
        if length > self.maxFrameSize:
            self.stream.close()
            raise FrameTooLargeError(f"a frame of {length} bytes")
        data: bytes = self.stream.read(length + len(self.FLUSHER))
        data = data[: -len(self.FLUSHER)]
        if compressed:
            inflater = zlib.decompressobj()
            data = inflater.decompress(data, self.maxFrameSize)
            if inflater.unconsumed_tail:
                self.stream.close()
                raise FrameTooLargeError("a frame inflating past the limit")
        return data


def loadService(spec: str) -> type[rpyc.Service]:
    """
    The C{rpyc.Service} subclass named C{package.module:ServiceClass}.

    @raise ValueError: with a one-line message, if it cannot be loaded or is
        no such class.
    """
    found = importNamed(spec, "--service", "ServiceClass")
    if not (isinstance(found, type) and issubclass(found, rpyc.Service)):
        raise ValueError(f"--service {spec!r} is not an rpyc.Service subclass")
    return found


def isClassic(service: type[rpyc.Service]) -> bool:
    """
    Whether C{service} is a classic (C{SlaveService}) service, which imports,
    executes and evaluates whatever its clients send.
    """
    return issubclass(service, Slave)


def serveSession(
    sock: socket.socket,
    service: type[rpyc.Service],
    config: Mapping[str, object],
    maxFrameSize: int,
) -> None:
    """
    Serve one RPyC session on C{sock} until it ends (in a pool thread).
    """
    try:
        channel = BoundedChannel(SocketStream(sock), maxFrameSize)
        connection = connect_channel(channel, service=service, config=dict(config))
        connection.serve_all()
    finally:
        sock.close()


class _Adopting(Factory):
    """
    Hands one protocol made already to C{adoptStreamConnection}.
    """

    def __init__(self, protocol: Protocol):
        self.end = protocol

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        return self.end


class _SessionEnd(Protocol):
    """
    The reactor's end of a session's socket pair: what the session writes
    goes to the client, and while this end's output to the session backs up
    the client is not read.
    """

    transport: Any

    def __init__(self, client: RPyCProtocol):
        self.client = client

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self.client.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.client.sessionEnded()

    # The producer of this end's output: the client's reading.

    def pauseProducing(self) -> None:
        self.client.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.client.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class RPyCProtocol(Protocol):
    """
    One client: its login, if checkers are configured, then the relay to its
    RPyC session.  See the module docstring.
    """

    log = Logger()
    factory: RPyCFactory
    transport: Any

    def __init__(self) -> None:
        self._state = _LOGIN
        self._buffer = b""
        self._user: str | None = None
        self._session: _SessionEnd | None = None
        self._attempts: LoginAttempts | None = None
        self.discipline: Discipline | None = None

    @property
    def peer(self) -> str:
        return describe(self.transport.getPeer())

    def connectionMade(self) -> None:
        factory = self.factory
        self.discipline = Discipline(
            self.transport,
            factory.reactor,
            pause=self._pause,
            resume=self._resume,
            grace=factory.closeGrace,
        )
        if factory.portal is None:
            self._state = _WAITING
        else:
            self._attempts = factory.throttle.connection()
            self.discipline.callLater(factory.preAuthTimeout, self._loginTimedOut)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._state = _CLOSED
        self._buffer = b""
        if self.discipline is not None:
            self.discipline.lost()
        if self._session is not None:
            self._session.transport.abortConnection()

    def _pause(self) -> None:
        # Output to the client backed up: before the session, stop reading
        # the client; during it, stop reading the session's output.
        if self._session is not None:
            self._session.transport.pauseProducing()
        else:
            self.transport.pauseProducing()

    def _resume(self) -> None:
        if self._session is not None:
            self._session.transport.resumeProducing()
        elif self._state != _CLOSED:
            self.transport.resumeProducing()
            self._process()

    def _close(self, reason: str, **fields: object) -> None:
        self.log.warn(
            "np-rpyc: closing connection from {peer}: " + reason,
            peer=self.peer,
            **fields,
        )
        self._state = _CLOSED
        self._buffer = b""
        if self.discipline is not None:
            self.discipline.close()

    def dataReceived(self, data: bytes) -> None:
        if self._state == _RELAY:
            assert self._session is not None
            self._session.transport.write(data)
            return
        if self._state == _CLOSED:
            return
        self._buffer += data
        self._process()

    def _process(self) -> None:
        assert self.discipline is not None
        if not self.discipline.reading or not self._buffer:
            return
        if self._state == _WAITING:
            self._startSession()
        elif self._state == _LOGIN:
            line, lf, rest = self._buffer.partition(b"\n")
            if len(line) + len(lf) > MAX_LOGIN_LINE:
                self.transport.write(b"-ERR line too long\r\n")
                self._close("login line over {limit} bytes", limit=MAX_LOGIN_LINE)
            elif lf:
                self._buffer = rest
                self._login(line.removesuffix(b"\r"))

    # Login

    def _login(self, line: bytes) -> None:
        factory = self.factory
        if not (factory.allowPlaintextAuth or isSecure(self.transport)):
            self.transport.write(b"-ERR login refused without TLS\r\n")
            self._close("login refused without TLS")
            return
        credentials = parsePlain(line)
        if credentials is None:
            # Not a login: an RPyC client that cannot send one, most likely.
            self.transport.write(b"-ERR expected AUTH PLAIN <base64>\r\n")
            self._close("no login line (RPyC without a login?)")
            return
        user, password = credentials
        assert self.discipline is not None and factory.portal is not None
        self.discipline.hold(COMMAND)
        d = factory.throttle.login(
            factory.portal,
            UsernamePassword(user.encode("utf-8"), password.encode("utf-8")),
            None,
            IRemoteUser,
            peer=self.transport.getPeer(),
            connection=self._attempts,
        )
        d.addCallbacks(self._cbLogin, self._ebLogin)

    def _cbLogin(self, result: tuple[Any, Any, Any]) -> None:
        if self._state == _CLOSED:
            return
        _, avatar, _ = result
        self._user = avatar
        self.log.info(
            "np-rpyc: {user} logged in from {peer}", user=avatar, peer=self.peer
        )
        self.transport.write(b"+OK\r\n")
        self._state = _WAITING
        assert self.discipline is not None
        self.discipline.release(COMMAND)

    def _ebLogin(self, failure: Failure) -> None:
        if self._state == _CLOSED:
            return
        if not failure.check(UnauthorizedLogin):
            self.log.failure("np-rpyc: login failed", failure=failure)
        self._refuse("-ERR login failed")
        assert self.discipline is not None
        self.discipline.release(COMMAND)

    def _refuse(self, reply: str) -> None:
        self.transport.write(reply.encode("ascii") + b"\r\n")
        assert self._attempts is not None
        self.log.info("np-rpyc: login failed from {peer}", peer=self.peer)
        if self._attempts.exhausted:
            self._close("all {limit} login attempts used", limit=self._attempts.limit)

    def _loginTimedOut(self) -> None:
        if self._state == _LOGIN:
            self._close(
                "no login within {seconds} seconds",
                seconds=self.factory.preAuthTimeout,
            )

    # The session

    def _startSession(self) -> None:
        factory = self.factory
        if len(factory.sessions) >= factory.threads:
            self.log.warn(
                "np-rpyc: refusing {peer}: all {threads} sessions are busy",
                peer=self.peer,
                threads=factory.threads,
            )
            self._state = _CLOSED
            self._buffer = b""
            assert self.discipline is not None
            self.discipline.close()
            return
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        session = _SessionEnd(self)
        try:
            factory.reactor.adoptStreamConnection(
                theirs.fileno(), socket.AF_UNIX, _Adopting(session)
            )
        finally:
            theirs.close()
        self._session = session
        self._state = _RELAY
        pending, self._buffer = self._buffer, b""
        session.transport.write(pending)
        factory.startSession(ours, self._config())

    def _config(self) -> dict[str, object]:
        host, peer = self.transport.getHost(), self.transport.getPeer()
        return {
            **self.factory.config,
            "credentials": self._user,
            "endpoints": (
                (getattr(host, "host", ""), getattr(host, "port", 0)),
                (getattr(peer, "host", ""), getattr(peer, "port", 0)),
            ),
        }

    def sessionEnded(self) -> None:
        """
        The session closed its end: close the client's connection after what
        the session wrote.
        """
        self._session = None
        if self._state != _CLOSED:
            self._state = _CLOSED
            assert self.discipline is not None
            self.discipline.close()


def parsePlain(line: bytes) -> tuple[str, str] | None:
    """
    The user name and password of an C{AUTH PLAIN <base64>} line (RFC 4616:
    the authorization identity, if any, must be the user's), or C{None}.
    """
    command, _, encoded = line.partition(b" ")
    mechanism, _, encoded = encoded.partition(b" ")
    if command.upper() != b"AUTH" or mechanism.upper() != b"PLAIN":
        return None
    try:
        message = b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    parts = message.split("\0")
    if len(parts) != 3 or parts[0] not in ("", parts[1]):
        return None
    return parts[1], parts[2]


class RPyCFactory(Factory):
    """
    Builds L{RPyCProtocol}s serving one service class from one pool.

    @ivar sessions: the pool ends of the sessions running now.
    """

    log = Logger()

    def __init__(
        self,
        service: type[rpyc.Service],
        pool: ThreadPool,
        *,
        threads: int = DEFAULT_THREADS,
        portal: Portal | None = None,
        throttle: LoginThrottle | None = None,
        allowPlaintextAuth: bool = False,
        preAuthTimeout: float = DEFAULT_PREAUTH_TIMEOUT,
        maxFrameSize: int = DEFAULT_MAX_FRAME_SIZE,
        config: Mapping[str, object] = {},
        closeGrace: float = CLOSE_GRACE,
        reactor: Any = None,
    ):
        if reactor is None:
            from twisted.internet import reactor
        self.service = service
        self.pool = pool
        self.threads = threads
        self.portal = portal
        self.throttle = throttle or LoginThrottle(reactor)
        self.allowPlaintextAuth = allowPlaintextAuth
        self.preAuthTimeout = preAuthTimeout
        self.maxFrameSize = maxFrameSize
        self.config = {**config, **SESSION_CONFIG}
        self.closeGrace = closeGrace
        self.reactor = reactor
        self.sessions: set[socket.socket] = set()

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        protocol = RPyCProtocol()
        protocol.factory = self
        return protocol

    def startSession(self, sock: socket.socket, config: Mapping[str, object]) -> None:
        """
        Serve C{sock}'s session in the pool.
        """
        self.sessions.add(sock)
        d: Deferred[None] = deferToThreadPool(
            self.reactor,
            self.pool,
            serveSession,
            sock,
            self.service,
            config,
            self.maxFrameSize,
        )
        d.addErrback(self._sessionFailed, config)
        d.addBoth(lambda _: self.sessions.discard(sock))

    def _sessionFailed(self, failure: Failure, config: Mapping[str, object]) -> None:
        endpoints: Any = config.get("endpoints") or ((), ())
        peer = ":".join(str(part) for part in endpoints[1])
        if failure.check(FrameTooLargeError):
            self.log.warn(
                "np-rpyc: closed the session of {peer}: {why}",
                peer=peer,
                why=failure.getErrorMessage(),
            )
        elif failure.check(OSError, EOFError):
            self.log.info(
                "np-rpyc: the session of {peer} ended: {why}",
                peer=peer,
                why=failure.getErrorMessage(),
            )
        else:
            self.log.failure(
                "np-rpyc: the session of {peer} failed", failure, peer=peer
            )

    def shutdown(self) -> None:
        """
        End every session now: their reads and writes fail at once.
        """
        for sock in list(self.sessions):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RPyCService(MultiService):
    """
    The listeners of an RPyC service and its session pool: the pool starts
    before the listeners; on stopping, the listeners stop, the sessions are
    ended and the pool's threads joined.
    """

    def __init__(self, factory: RPyCFactory):
        super().__init__()
        self.factory = factory

    def startService(self) -> None:
        self.factory.pool.start()
        super().startService()

    def stopService(self) -> Deferred[None]:
        d: Deferred[Any] = super().stopService()

        def stopped(_: object) -> None:
            self.factory.shutdown()
            self.factory.pool.stop()

        return d.addCallback(stopped)


def connect(
    host: str,
    port: int,
    username: str,
    password: str,
    *,
    service: type[rpyc.Service] = rpyc.VoidService,
    config: Mapping[str, object] = {},
    sslContext: Any = None,
    serverHostname: str | None = None,
    timeout: float = 30.0,
) -> Any:
    """
    Connect to an np-rpyc server that wants a login (C{--auth}), log in, and
    return the RPyC connection, as C{rpyc.connect} (or C{rpyc.ssl_connect},
    with an C{ssl.SSLContext}) would.

    @raise AuthenticationError: (RPyC's) if the login is refused.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if sslContext is not None:
            sock = sslContext.wrap_socket(sock, server_hostname=serverHostname or host)
        message = b"\0" + username.encode("utf-8") + b"\0" + password.encode("utf-8")
        sock.sendall(b"AUTH PLAIN " + b64encode(message) + b"\r\n")
        # One byte at a time, so that nothing of RPyC's is read here.
        answer = b""
        while not answer.endswith(b"\r\n") and len(answer) < MAX_LOGIN_LINE:
            byte = sock.recv(1)
            if not byte:
                break
            answer += byte
        if answer != b"+OK\r\n":
            raise AuthenticationError(
                answer.decode("utf-8", "replace").strip() or "connection closed"
            )
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return connect_stream(SocketStream(sock), service=service, config=dict(config))
