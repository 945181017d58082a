"""
A server that C{multiprocessing.connection.Client(address, authkey=...)} talks
to, over any stream endpoint (TCP, UNIX sockets, TLS).

The wire protocol is the standard library's: each message is a frame, a 4-byte
big-endian signed length then that many bytes, or for messages over 2 GiB the
length C{-1} then an 8-byte unsigned length.  Before any message, both sides
prove they know the authkey (C{deliver_challenge}/C{answer_challenge} in
C{multiprocessing/connection.py}):

  1. the server sends C{#CHALLENGE#{sha256}} and random bytes; the client
     answers with the HMAC of everything after C{#CHALLENGE#}: raw HMAC-MD5
     from Python 3.11 and older, C{{sha256}} and HMAC-SHA256 from 3.12 on
     (any digest 3.12 allows is accepted); the server says C{#WELCOME#} or
     C{#FAILURE#} and closes;
  2. then the client challenges the server the same way (a bare 20-byte
     challenge from old clients, answered with raw HMAC-MD5; a
     C{{digest}}-prefixed one from new clients), and says C{#WELCOME#}.

Only then are messages read, and each is unpickled through
L{netplugins.safepickle} (plain data only), never C{pickle.loads}.

Two modes, after the Python Cookbook:

  - C{echo} (recipe 11.7): each message is sent back as it came;
  - C{rpc} (recipe 11.8): a message is C{pickle.dumps((name, args, kwargs))};
    the reply is the pickled result, or the pickled exception, so the recipe's
    C{RPCProxy} works unmodified.  An unknown name gets C{KeyError(name)} back,
    as the recipe's handler sends.  Exceptions outside
    L{SAFE_EXCEPTIONS} become a C{RuntimeError} without details (logged here
    with the traceback).  Functions marked with L{blocking} run in a bounded
    thread pool; others run on the reactor thread and may return a Deferred
    or be coroutines.

A message that is not plain data, too big, or too deeply nested closes the
connection with a log line naming the peer.  Requests on one connection are
answered in order, one at a time: while one waits for a thread, the
connection is not read.
"""

from __future__ import annotations

import hmac
import inspect
import os
import pickle
import secrets
import struct
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from netplugins.coerce import importNamed
from netplugins.safepickle import DEFAULT_MAX_NESTING, RefusedPickleError, safeLoads
from netplugins.session import CLOSE_GRACE, COMMAND, Discipline

MODES = ("echo", "rpc")
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_HANDSHAKE_TIMEOUT = 30.0
#: The standard library refuses handshake messages over 256 bytes too.
HANDSHAKE_MESSAGE_LIMIT = 256
#: What the server's challenge names; clients of 3.12 and later answer in kind.
CHALLENGE_DIGEST = "sha256"
#: Digests a C{{digest}}-prefixed answer or challenge may name (3.12's set).
DIGESTS = frozenset({"md5", "sha256", "sha384", "sha3_256", "sha3_384"})
#: Results and exceptions go back in protocol 4, which every Python 3 since
#: 3.4 reads, whichever Python this server runs on.
REPLY_PROTOCOL = 4

CHALLENGE = b"#CHALLENGE#"
WELCOME = b"#WELCOME#"
FAILURE = b"#FAILURE#"
_CHALLENGE_BYTES = 40
_LEGACY_CHALLENGE_LENGTH = 20
_MD5_LENGTH = 16

_INT32 = struct.Struct("!i")
_UINT64 = struct.Struct("!Q")

#: Exceptions sent back to RPC clients as they were raised: built-in types a
#: stock client unpickles, carrying only the function's own message.
SAFE_EXCEPTIONS: frozenset[type[BaseException]] = frozenset(
    {
        ArithmeticError,
        AssertionError,
        AttributeError,
        EOFError,
        Exception,
        IndexError,
        KeyError,
        LookupError,
        NotImplementedError,
        OverflowError,
        RecursionError,
        RuntimeError,
        TimeoutError,
        TypeError,
        ValueError,
        ZeroDivisionError,
    }
)

_F = TypeVar("_F", bound=Callable[..., Any])
_BLOCKING = "_netpluginsBlocking"


def blocking(function: _F) -> _F:
    """
    Mark an RPC function as blocking: C{np-mpconn} runs it in its bounded
    thread pool instead of on the reactor thread.
    """
    setattr(function, _BLOCKING, True)
    return function


def isBlocking(function: Callable[..., Any]) -> bool:
    """
    Whether C{function} was marked with L{blocking}.
    """
    return bool(getattr(function, _BLOCKING, False))


def add(x: Any, y: Any) -> Any:
    """
    The Cookbook's first example function.
    """
    return x + y


def sub(x: Any, y: Any) -> Any:
    """
    The Cookbook's second example function.
    """
    return x - y


#: The functions C{--mode rpc} serves without C{--functions}: recipe 11.8's.
exampleFunctions: dict[str, Callable[..., Any]] = {"add": add, "sub": sub}


def loadFunctions(spec: str) -> dict[str, Callable[..., Any]]:
    """
    Load RPC functions named by C{package.module:registry}.

    The registry is a mapping of names to callables, or an object with one as
    C{functions} (or as C{_functions}, like the Cookbook's C{RPCHandler}).

    @raise ValueError: with a one-line message, if it cannot be loaded.
    """
    registry = importNamed(spec, "--functions", "registry")
    if not isinstance(registry, Mapping):
        registry = getattr(registry, "functions", getattr(registry, "_functions", None))
    if not isinstance(registry, Mapping):
        raise ValueError(f"--functions {spec!r} is not a mapping of names to callables")
    functions = dict(registry)
    for name, function in functions.items():
        if not isinstance(name, str) or not callable(function):
            raise ValueError(f"--functions {spec!r}: {name!r} is not a named callable")
    return functions


def readAuthkey(path: str) -> bytes:
    """
    Read an authkey file: its bytes, with one trailing newline ignored.

    @raise ValueError: if unreadable or empty.
    """
    try:
        with open(path, "rb") as f:
            key = f.read()
    except OSError as e:
        raise ValueError(f"cannot read authkey file {path!r}: {e.strerror}") from None
    if key.endswith(b"\n"):
        key = key[:-1]
    if not key:
        raise ValueError(f"authkey file {path!r} is empty")
    return key


def frameHeader(size: int) -> bytes:
    """
    The length prefix the standard library writes before C{size} bytes.
    """
    if size > 0x7FFFFFFF:
        return _INT32.pack(-1) + _UINT64.pack(size)
    return _INT32.pack(size)


def _digestAndPayload(message: bytes) -> tuple[str, bytes] | None:
    # A 16- or 20-byte message is the legacy MD5 form; anything else must say
    # its digest in braces, as Python 3.12 writes it.
    if len(message) in (_MD5_LENGTH, _LEGACY_CHALLENGE_LENGTH):
        return "", message
    if message.startswith(b"{"):
        end = message.find(b"}", 1, 12)
        if end > 0:
            name = message[1:end].decode("ascii", "replace")
            if name in DIGESTS:
                return name, message[end + 1 :]
    return None


def answerChallenge(authkey: bytes, message: bytes) -> bytes | None:
    """
    The answer to a client's challenge C{message} (after C{#CHALLENGE#}), as
    the standard library's C{answer_challenge} computes it; C{None} if the
    challenge is malformed or names an unknown digest.
    """
    if len(message) < _LEGACY_CHALLENGE_LENGTH:
        return None
    parsed = _digestAndPayload(message)
    if parsed is None:
        return None
    digest = parsed[0]
    if not digest:
        return hmac.new(authkey, message, "md5").digest()
    return b"{%s}%s" % (digest.encode(), hmac.new(authkey, message, digest).digest())


def verifyAnswer(authkey: bytes, message: bytes, answer: bytes) -> bool:
    """
    Whether C{answer} proves knowledge of C{authkey} for our challenge
    C{message}: raw HMAC-MD5 (Python 3.11 and older) or C{{digest}}HMAC.
    Compared in constant time.
    """
    parsed = _digestAndPayload(answer)
    if parsed is None:
        return False
    digest, mac = parsed
    expected = hmac.new(authkey, message, digest or "md5").digest()
    return hmac.compare_digest(expected, mac)


class BadRequestError(Exception):
    """
    A well-formed pickle that is not a request of the mode's shape.
    """


class EchoMode:
    """
    Recipe 11.7's echo server: each message back as it came, once it has been
    checked to be plain data.
    """

    def __init__(self, maxNesting: int = DEFAULT_MAX_NESTING):
        self.maxNesting = maxNesting

    def respond(self, payload: bytes) -> bytes:
        """
        The reply to one message.

        @raise RefusedPickleError: if the message is not plain data.
        """
        safeLoads(payload, maxNesting=self.maxNesting)
        return payload


class RPCMode:
    """
    Recipe 11.8's RPC handler: C{(name, args, kwargs)} in, the pickled result
    or exception out.

    @ivar runBlocking: runs a function marked L{blocking} off the reactor
        thread, returning a Deferred: C{runBlocking(f, *args, **kwargs)}.
    """

    log = Logger()

    def __init__(
        self,
        functions: Mapping[str, Callable[..., Any]],
        runBlocking: Callable[..., Deferred[Any]],
        maxNesting: int = DEFAULT_MAX_NESTING,
    ):
        self.functions = dict(functions)
        self.runBlocking = runBlocking
        self.maxNesting = maxNesting

    def respond(self, payload: bytes) -> bytes | Deferred[bytes]:
        """
        The reply to one request, now or later, in the form it came in.

        Recipe 11.8 as printed sends C{pickle.dumps((name, args, kwargs))}
        with C{Connection.send}, which pickles those bytes once more, and
        reads its reply with C{pickle.loads(connection.recv())}: a request
        that unpickles to C{bytes} is unpickled again (through the same
        allowlist) and its reply is pickled twice.  A request sent with
        C{send_bytes} is pickled once, and so is its reply.

        @raise RefusedPickleError: if the request is not plain data.
        @raise BadRequestError: if it is not C{(str, tuple, dict)}.
        """
        request = safeLoads(payload, maxNesting=self.maxNesting)
        if type(request) is not bytes:
            return self.answer(request)
        reply = self.answer(safeLoads(request, maxNesting=self.maxNesting))
        if isinstance(reply, Deferred):
            return reply.addCallback(pickle.dumps, REPLY_PROTOCOL)
        return pickle.dumps(reply, REPLY_PROTOCOL)

    def answer(self, request: object) -> bytes | Deferred[bytes]:
        """
        The pickled reply to one unpickled request, now or later.

        @raise BadRequestError: if it is not C{(str, tuple, dict)}.
        """
        if not (
            type(request) is tuple
            and len(request) == 3
            and type(request[0]) is str
            and type(request[1]) in (tuple, list)
            and type(request[2]) is dict
            and all(type(k) is str for k in request[2])
        ):
            raise BadRequestError("not a (name, args, kwargs) request")
        name, args, kwargs = request
        function = self.functions.get(name)
        if function is None:
            return self.pickleException(KeyError(name), name)
        if isBlocking(function):
            d = self.runBlocking(function, *args, **kwargs)
        else:
            try:
                result = function(*args, **kwargs)
            except Exception as e:
                return self.pickleException(e, name)
            if not isinstance(result, Deferred) and not inspect.iscoroutine(result):
                return self.pickleResult(result, name)
            d = maybeDeferred(_awaited, result)
        return d.addCallbacks(
            self.pickleResult,
            lambda f: self.pickleException(f.value, name, f),
            callbackArgs=(name,),
        )

    def pickleResult(self, result: Any, name: str) -> bytes:
        """
        Pickle a function's result; one that cannot be pickled is sent as a
        C{TypeError} saying so.
        """
        try:
            return pickle.dumps(result, REPLY_PROTOCOL)
        except Exception:
            return self.pickleException(
                TypeError(f"the result of {name} cannot be pickled"), name
            )

    def pickleException(
        self, error: BaseException, name: str, failure: Failure | None = None
    ) -> bytes:
        """
        Pickle an exception for the client, as recipe 11.8 does, but only as
        one of L{SAFE_EXCEPTIONS} with plain-data arguments and no traceback.
        """
        kind = type(error)
        if kind in SAFE_EXCEPTIONS:
            # A fresh instance: no traceback, notes or attributes, and only
            # arguments that are plain data (else the message alone).
            args = error.args
            try:
                safeLoads(pickle.dumps(args, REPLY_PROTOCOL))
            except Exception:
                args = (str(error),)
            return pickle.dumps(kind(*args), REPLY_PROTOCOL)
        self.log.failure(
            "np-mpconn: {function} raised; the client gets a RuntimeError",
            failure=failure or Failure(error),
            function=name,
        )
        return pickle.dumps(
            RuntimeError(f"{name} failed on the server"), REPLY_PROTOCOL
        )


def _awaited(result: Any) -> Any:
    if isinstance(result, Deferred):
        return result
    return Deferred.fromCoroutine(result)


_CHALLENGED, _CHALLENGING, _VERDICT, _READY, _CLOSED = range(5)


class MPConnProtocol(Protocol):
    """
    One connection: the two-way handshake, then messages answered in order.

    It follows L{netplugins.session}: while replies pile up unread, or while
    a reply is being computed, the transport stops reading, so a client cannot
    grow the server's buffers beyond one read and one message; every close
    that does not finish is aborted.
    """

    log = Logger()
    factory: MPConnFactory
    transport: Any

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._state = _CHALLENGED
        self._challenge = b""
        self._processing = False
        self._deadline: Any = None
        self.discipline: Discipline | None = None

    def connectionMade(self) -> None:
        self.discipline = Discipline(
            self.transport,
            self.factory.reactor,
            pause=self.transport.pauseProducing,
            resume=self._resumeReading,
            grace=self.factory.closeGrace,
        )
        message = b"{%s}%s" % (
            CHALLENGE_DIGEST.encode(),
            secrets.token_bytes(_CHALLENGE_BYTES),
        )
        self._challenge = message
        self._send(CHALLENGE + message)
        self._deadline = self.factory.reactor.callLater(
            self.factory.handshakeTimeout, self._handshakeTimedOut
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._state = _CLOSED
        self._buffer = bytearray()
        if self.discipline is not None:
            self.discipline.lost()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def dataReceived(self, data: bytes) -> None:
        if self._state == _CLOSED:
            return
        self._buffer += data
        self._process()

    def _resumeReading(self) -> None:
        if self._state != _CLOSED:
            self.transport.resumeProducing()
            self._process()

    def _send(self, payload: bytes) -> None:
        if len(payload) < 65536:
            self.transport.write(frameHeader(len(payload)) + payload)
        else:
            self.transport.writeSequence([frameHeader(len(payload)), payload])

    def _close(self, reason: str, *, abort: bool = False, **fields: object) -> None:
        """
        Log C{reason} (a format using C{fields}) naming the peer, then close
        (dropping unsent data if C{abort}).
        """
        self.log.warn(
            "np-mpconn: closing connection from {peer}: " + reason,
            peer=str(self.transport.getPeer()),
            **fields,
        )
        self._state = _CLOSED
        self._buffer = bytearray()
        discipline = self.discipline
        if discipline is None:
            self.transport.abortConnection()
        elif abort:
            discipline.abort("closed")
        else:
            discipline.close()

    def _handshakeTimedOut(self) -> None:
        self._deadline = None
        self._close(
            "no authentication within {seconds} seconds",
            abort=True,
            seconds=self.factory.handshakeTimeout,
        )

    def _nextFrame(self) -> bytes | None:
        """
        Take one complete frame off the buffer, or C{None} if there is none
        yet; a length over the limit closes the connection before anything is
        allocated for it.
        """
        buffered = len(self._buffer)
        if buffered < 4:
            return None
        (size,) = _INT32.unpack_from(self._buffer)
        start = 4
        if size == -1:
            if buffered < 12:
                return None
            (size,) = _UINT64.unpack_from(self._buffer, 4)
            start = 12
        limit = (
            self.factory.maxMessageSize
            if self._state == _READY
            else HANDSHAKE_MESSAGE_LIMIT
        )
        if size < 0 or size > limit:
            self._close(
                "message length {size} outside 0..{limit}", size=size, limit=limit
            )
            return None
        if buffered < start + size:
            return None
        frame = bytes(self._buffer[start : start + size])
        del self._buffer[: start + size]
        return frame

    def _reading(self) -> bool:
        return (
            self._state != _CLOSED
            and self.discipline is not None
            and self.discipline.reading
        )

    def _process(self) -> None:
        # A reply that is ready at once resumes from inside this loop; the
        # loop then carries on rather than recursing once per request.
        if self._processing:
            return
        self._processing = True
        try:
            while self._reading():
                frame = self._nextFrame()
                if frame is None:
                    return
                if self._state == _READY:
                    self._message(frame)
                else:
                    self._handshake(frame)
        finally:
            self._processing = False

    def _handshake(self, frame: bytes) -> None:
        key = self.factory.authkey
        if self._state == _CHALLENGED:
            if not verifyAnswer(key, self._challenge, frame):
                self._send(FAILURE)
                self._close("wrong authkey (client's answer refused)")
                return
            self._send(WELCOME)
            self._state = _CHALLENGING
        elif self._state == _CHALLENGING:
            answer = None
            if frame.startswith(CHALLENGE):
                answer = answerChallenge(key, frame[len(CHALLENGE) :])
            if answer is None:
                self._close("malformed challenge from the client")
                return
            self._send(answer)
            self._state = _VERDICT
        elif self._state == _VERDICT:
            if frame != WELCOME:
                self._close("the client refused our answer to its challenge")
                return
            self._state = _READY
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

    def _message(self, payload: bytes) -> None:
        try:
            reply = self.factory.mode.respond(payload)
        except RefusedPickleError as e:
            self._close("refused message: {why}", why=str(e))
            return
        except BadRequestError as e:
            self._close("{why}", why=str(e))
            return
        if isinstance(reply, Deferred):
            assert self.discipline is not None
            self.discipline.hold(COMMAND)
            reply.addCallbacks(self._replied, self._replyFailed)
        else:
            self._send(reply)

    def _replied(self, reply: bytes) -> None:
        if self._state == _CLOSED:
            return
        self._send(reply)
        assert self.discipline is not None
        self.discipline.release(COMMAND)

    def _replyFailed(self, failure: Failure) -> None:
        self.log.failure("np-mpconn: no reply could be made", failure=failure)
        if self._state != _CLOSED:
            self._close("internal error")


class MPConnFactory(Factory):
    """
    Builds L{MPConnProtocol}s sharing one authkey and mode.

    @ivar mode: an L{EchoMode} or L{RPCMode}.
    @ivar reactor: schedules the handshake deadline.
    @ivar closeGrace: seconds a closed connection gets before it is aborted.
    """

    def __init__(
        self,
        authkey: bytes,
        mode: EchoMode | RPCMode,
        *,
        maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
        handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        closeGrace: float = CLOSE_GRACE,
        reactor: Any = None,
    ):
        if not authkey:
            raise ValueError("the authkey must not be empty")
        if maxMessageSize <= 0:
            raise ValueError(
                f"maximum message size must be positive, not {maxMessageSize}"
            )
        if reactor is None:
            reactor = _globalReactor()
        self.authkey = authkey
        self.mode = mode
        self.maxMessageSize = maxMessageSize
        self.handshakeTimeout = handshakeTimeout
        self.closeGrace = closeGrace
        self.reactor = reactor

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        protocol = MPConnProtocol()
        protocol.factory = self
        return protocol


def _globalReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def generatedAuthkey(stateDir: str) -> tuple[str, bytes]:
    """
    The authkey kept in C{stateDir}, made (random, mode 0600) if missing; for
    running without C{--authkey-file}.

    @return: the file's path and the key.
    """
    path = os.path.join(stateDir, "np-mpconn.authkey")
    os.makedirs(stateDir, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return path, readAuthkey(path)
