"""
Tests for L{netplugins.mpconn}, L{netplugins.safepickle} and
L{netplugins.tap.mpconn}.
"""

from __future__ import annotations

import glob
import hmac
import json
import os
import pickle
import shutil
import socket
import ssl
import stat
import struct
import tempfile
import textwrap
import threading
import time
from multiprocessing import AuthenticationError, connection
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.mpconn import (
    CHALLENGE,
    FAILURE,
    WELCOME,
    EchoMode,
    MPConnFactory,
    MPConnProtocol,
    RPCMode,
    answerChallenge,
    blocking,
    exampleFunctions,
    frameHeader,
    generatedAuthkey,
    loadFunctions,
    readAuthkey,
    verifyAnswer,
)
from netplugins.safepickle import RefusedPickleError, checkNesting, safeLoads
from netplugins.service import ListeningService
from netplugins.tap.mpconn import (
    MPConnSettings,
    Options,
    makeService,
    mpconnService,
)
from tests.pki import PKI
from tests.support import ROOT, runTwistd, waitForPort

KEY = b"peekaboo"


def _python(version: str) -> str:
    """
    An interpreter of C{version} (the {sha256} handshake is 3.12's): under
    pyenv, as this project's machines have them, or on PATH as C{pythonX.Y}.  None
    found is the tests' failure, not a skip.
    """
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for candidate in sorted(glob.glob(f"{root}/versions/{version}.*/bin/python")):
        return candidate
    found = shutil.which(f"python{version}")
    # pyenv's shims answer for versions that are not selected: not those.
    if found and "/shims/" not in found:
        return found
    return f"python{version}-not-found (install Python {version} or pyenv's)"


PYTHON311 = _python("3.11")
PYTHON312 = _python("3.12")
PYTHON313 = _python("3.13")


class System:
    """
    Pickles as a call to C{os.system(command)}: what an attacker sends.
    """

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self) -> Any:
        return (os.system, (self.command,))


def whereAmI() -> str:
    """
    The name of the thread running this call.
    """
    return threading.current_thread().name


async def asyncAdd(x: int, y: int) -> int:
    """
    A coroutine function, run on the reactor thread.
    """
    return x + y


class SecretError(Exception):
    """
    An exception type the client may not know, carrying server details.
    """


def leak() -> None:
    """
    Raise an exception that must not reach the client as it is.
    """
    raise SecretError("/etc/secret-path")


def unpicklable() -> Any:
    """
    Return something that cannot be pickled.
    """
    return lambda: None


#: The registry the real-socket tests load with C{--functions}.
testFunctions: dict[str, Any] = {
    **exampleFunctions,
    "whereAmI": blocking(whereAmI),
    "asyncAdd": asyncAdd,
    "leak": leak,
}


class Wire:
    """
    The client end of a L{StringTransport}, with the C{send_bytes} and
    C{recv_bytes} of a C{multiprocessing.connection.Connection}, so the
    standard library's own handshake functions can drive a protocol in memory.
    """

    def __init__(self, protocol: MPConnProtocol, transport: StringTransport):
        self.protocol = protocol
        self.transport = transport
        self.read = 0

    def send_bytes(self, data: bytes) -> None:
        self.protocol.dataReceived(frameHeader(len(data)) + data)

    def frames(self) -> list[bytes]:
        """
        Every complete frame written since the last read.
        """
        frames = []
        while (frame := self.recv()) is not None:
            frames.append(frame)
        return frames

    def recv(self) -> bytes | None:
        data = self.transport.value()[self.read :]
        if len(data) < 4:
            return None
        (size,) = struct.unpack("!i", data[:4])
        start = 4
        if size == -1:
            (size,) = struct.unpack("!Q", data[4:12])
            start = 12
        if len(data) < start + size:
            return None
        self.read += start + size
        return data[start : start + size]

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        frame = self.recv()
        if frame is None:
            raise EOFError
        return frame


def connect(
    mode: EchoMode | RPCMode | None = None, **kwargs: Any
) -> tuple[MPConnProtocol, StringTransport, Wire, Clock]:
    """
    A protocol connected to a fresh L{StringTransport}, its L{Wire} and the
    clock of its handshake deadline.
    """
    clock = Clock()
    factory = MPConnFactory(KEY, mode or EchoMode(), reactor=clock, **kwargs)
    protocol = factory.buildProtocol(None)
    assert isinstance(protocol, MPConnProtocol)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, Wire(protocol, transport), clock


def authenticated(
    mode: EchoMode | RPCMode | None = None, **kwargs: Any
) -> tuple[MPConnProtocol, StringTransport, Wire]:
    """
    A connected protocol past both halves of the handshake, as Python 3.11's
    own C{Client} does them.
    """
    protocol, transport, wire, _ = connect(mode, **kwargs)
    connection.answer_challenge(wire, KEY)  # type: ignore[attr-defined, arg-type]
    connection.deliver_challenge(wire, KEY)  # type: ignore[attr-defined, arg-type]
    return protocol, transport, wire


def modernAnswer(challenge: bytes, key: bytes = KEY) -> bytes:
    """
    The answer Python 3.12 gives to a C{#CHALLENGE#} frame.
    """
    message = challenge[len(CHALLENGE) :]
    return b"{sha256}" + hmac.new(key, message, "sha256").digest()


class SafePickleTests(SynchronousTestCase):
    """
    Peer pickles are read as plain data only.
    """

    def test_plainData(self) -> None:
        """Plain values round-trip in every protocol from 3 to 5."""
        values = [
            "hello",
            42,
            2**100,
            1.5,
            None,
            True,
            b"\x00\xff",
            [1, [2]],
            {"a": (1, 2)},
            {1, 2},
            frozenset([3]),
            bytearray(b"ab"),
            1 + 2j,
        ]
        for protocol in (3, 4, 5):
            for value in values:
                loaded = safeLoads(pickle.dumps(value, protocol))
                self.assertEqual((loaded, type(loaded)), (value, type(value)))

    def test_allowedTypes(self) -> None:
        """Dates, times, durations, time zones and decimals are allowed."""
        import datetime
        import decimal

        value = [
            datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
            datetime.date(2024, 1, 2),
            datetime.time(1, 2),
            datetime.timedelta(seconds=3),
            decimal.Decimal("1.10"),
        ]
        self.assertEqual(safeLoads(pickle.dumps(value)), value)

    def test_refusedGlobals(self) -> None:
        """Code-running globals are refused by name, builtins included."""
        for module, name in [
            ("posix", "system"),
            ("os", "system"),
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("builtins", "getattr"),
            ("builtins", "__import__"),
            ("subprocess", "Popen"),
            ("copyreg", "_reconstructor"),
            ("_codecs", "encode"),
        ]:
            data = b"\x80\x04\x8c%c%s\x8c%c%s\x93." % (
                len(module),
                module.encode(),
                len(name),
                name.encode(),
            )
            with self.assertRaises(RefusedPickleError) as caught:
                safeLoads(data)
            self.assertEqual(str(caught.exception), f"refused global {module}.{name}")

    def test_systemHasNoEffect(self) -> None:
        """A pickle calling os.system is refused and the command never runs."""
        marker = os.path.abspath(self.mktemp())
        with self.assertRaises(RefusedPickleError):
            safeLoads(pickle.dumps(System(f"touch {marker}")))
        self.assertFalse(os.path.exists(marker))

    def test_bytearrayFromSize(self) -> None:
        """bytearray may be rebuilt from its data, never from a size."""
        data = b"\x80\x04\x8c\x08builtins\x8c\tbytearray\x93J\x00\x00\x00\x40\x85R."
        self.assertRaises(RefusedPickleError, safeLoads, data)

    def test_bytearray8Length(self) -> None:
        """A BYTEARRAY8 claiming 2**62 bytes is refused without allocating them."""
        data = b"\x80\x05\x96" + (2**62).to_bytes(8, "little") + b"."
        self.assertRaises(RefusedPickleError, safeLoads, data)

    def test_hugeMemoIndex(self) -> None:
        """A memo index of 2**31 - 1 allocates nothing (C's unpickler: 32 GiB)."""
        self.assertIsNone(safeLoads(b"\x80\x04Nr\xff\xff\xff\x7f."))

    def test_persistentAndExtensions(self) -> None:
        """Persistent ids and the extension registry are refused."""
        for data in [b"\x80\x04K\x01Q.", b"Pfoo\n.", b"\x80\x02\x82\x01."]:
            self.assertRaises(RefusedPickleError, safeLoads, data)

    def test_deepTupleKey(self) -> None:
        """A dict key 10**5 tuples deep is refused before hashing it can crash."""
        data = b"\x80\x04}" + b")" + b"\x85" * 10**5 + b"K\x01s."
        with self.assertRaises(RefusedPickleError) as caught:
            safeLoads(data)
        self.assertEqual(str(caught.exception), "tuples nested more than 100 deep")

    def test_deepLists(self) -> None:
        """Lists nested past the limit are refused; at the limit, accepted."""
        data = b"\x80\x04" + b"]" * 100 + b"a" * 99 + b"."
        self.assertEqual(len(safeLoads(data)), 1)
        data = b"\x80\x04" + b"]" * 101 + b"a" * 100 + b"."
        self.assertRaises(RefusedPickleError, safeLoads, data)

    def test_deepThroughMemo(self) -> None:
        """Nesting built through the memo, with a short stack, is measured."""
        # list i = [list i - 1], each popped off the stack once built.
        ops = [b"\x80\x04]\x94"]
        for i in range(1, 150):
            ops.append(b"]\x94h%ca0" % (i - 1))
        data = b"".join(ops) + b"h\x95."
        self.assertRaises(RefusedPickleError, safeLoads, data)

    def test_cycle(self) -> None:
        """A list containing itself counts as too deep."""
        cyclic: list[Any] = []
        cyclic.append(cyclic)
        self.assertRaises(RefusedPickleError, safeLoads, pickle.dumps(cyclic))

    def test_sharedIsLinear(self) -> None:
        """A structure of 2**60 paths through shared parts is checked quickly."""
        value: list[Any] = []
        for _ in range(60):
            value = [value, value]
        started = time.monotonic()
        checkNesting(value, 100)
        self.assertLess(time.monotonic() - started, 1)

    def test_malformed(self) -> None:
        """Truncated or nonsensical pickles are one error type, not many."""
        for data in [b"", b"\x80\x04", b"\x80\x04h\x05.", b"0.", b"\x80\x04\x8c\x05ab"]:
            self.assertRaises(RefusedPickleError, safeLoads, data)


class HandshakeTests(SynchronousTestCase):
    """
    Both directions of the authkey handshake, before any message.
    """

    def test_legacyClient(self) -> None:
        """Python 3.11's own handshake functions complete in both directions."""
        _protocol, transport, _wire = authenticated()
        self.assertFalse(transport.disconnecting)

    def test_serverChallenge(self) -> None:
        """The server's challenge is {sha256} and 40 random bytes, as 3.12's."""
        _, _transport, wire, _ = connect()
        (frame,) = wire.frames()
        self.assertEqual((frame[:19], len(frame)), (CHALLENGE + b"{sha256}", 59))
        _, _, wire2, _ = connect()
        self.assertNotEqual(wire2.frames(), [frame])

    def test_modernAnswer(self) -> None:
        """A {sha256} answer and a {sha256} challenge, as 3.12 sends them."""
        _, _transport, wire, _ = connect()
        (challenge,) = wire.frames()
        wire.send_bytes(modernAnswer(challenge))
        self.assertEqual(wire.frames(), [WELCOME])
        mine = b"{sha256}" + b"n" * 40
        wire.send_bytes(CHALLENGE + mine)
        self.assertEqual(
            wire.frames(), [b"{sha256}" + hmac.new(KEY, mine, "sha256").digest()]
        )
        wire.send_bytes(WELCOME)
        wire.send_bytes(pickle.dumps("ready"))
        self.assertEqual(wire.frames(), [pickle.dumps("ready")])

    def test_otherDigests(self) -> None:
        """Answers and challenges in every digest 3.12 allows are accepted."""
        for name in ["md5", "sha256", "sha384", "sha3_256", "sha3_384"]:
            _, _transport, wire, _ = connect()
            (challenge,) = wire.frames()
            message = challenge[len(CHALLENGE) :]
            answer = hmac.new(KEY, message, name).digest()
            wire.send_bytes(b"{%s}%s" % (name.encode(), answer))
            self.assertEqual(wire.frames(), [WELCOME], name)
            mine = b"{%s}%s" % (name.encode(), b"x" * 40)
            self.assertEqual(
                answerChallenge(KEY, mine),
                b"{%s}%s" % (name.encode(), hmac.new(KEY, mine, name).digest()),
            )

    def test_legacyChallenge(self) -> None:
        """A bare 20-byte challenge (Python 3.11) is answered with raw HMAC-MD5."""
        message = b"c" * 20
        self.assertEqual(
            answerChallenge(KEY, message), hmac.new(KEY, message, "md5").digest()
        )

    def test_badChallenges(self) -> None:
        """Short, unprefixed or unknown-digest challenges get no answer."""
        for message in [
            b"short",
            b"x" * 30,
            b"{sha1}" + b"x" * 40,
            b"{nope}" + b"x" * 40,
        ]:
            self.assertIsNone(answerChallenge(KEY, message))

    def test_wrongKey(self) -> None:
        """A wrong key gets #FAILURE# and the connection closed, with a log line."""
        _, transport, wire, _ = connect()
        (challenge,) = wire.frames()
        with capturedLogs() as events:
            wire.send_bytes(modernAnswer(challenge, b"wrong"))
        self.assertEqual(wire.frames(), [FAILURE])
        self.assertTrue(transport.disconnecting)
        self.assertIn("wrong authkey", formatEvent(events[-1]))

    def test_wrongKeyLegacy(self) -> None:
        """Python 3.11's client with a wrong key is refused as the stdlib does."""
        _, transport, wire, _ = connect()
        with self.assertRaises(AuthenticationError):
            connection.answer_challenge(wire, b"wrong")  # type: ignore[attr-defined, arg-type]
        self.assertTrue(transport.disconnecting)

    def test_badAnswers(self) -> None:
        """Truncated, extended, unprefixed or wrong-digest answers all fail."""
        for mutate in [
            lambda a: a[:-1],
            lambda a: a + b"\x00",
            lambda a: a[len(b"{sha256}") :],
            lambda a: b"{sha384}" + a[len(b"{sha256}") :],
            lambda a: b"{sha1}" + a[len(b"{sha256}") :],
        ]:
            _, transport, wire, _ = connect()
            (challenge,) = wire.frames()
            wire.send_bytes(mutate(modernAnswer(challenge)))
            self.assertEqual(
                (wire.frames(), transport.disconnecting), ([FAILURE], True)
            )

    def test_constantTimeCompare(self) -> None:
        """Answers are compared with hmac.compare_digest."""
        calls = []
        original = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return original(a, b)

        self.patch(hmac, "compare_digest", spy)
        message = b"{sha256}" + b"m" * 40
        answer = modernAnswer(CHALLENGE + message)
        self.assertTrue(verifyAnswer(KEY, message, answer))
        self.assertEqual(len(calls), 1)

    def test_clientMustWelcome(self) -> None:
        """Anything but #WELCOME# after our answer closes the connection."""
        _, transport, wire, _ = connect()
        (challenge,) = wire.frames()
        wire.send_bytes(modernAnswer(challenge))
        wire.send_bytes(CHALLENGE + b"c" * 20)
        wire.send_bytes(FAILURE)
        self.assertTrue(transport.disconnecting)

    def test_payloadBeforeHandshake(self) -> None:
        """A pickle sent instead of the answer is never unpickled."""
        marker = os.path.abspath(self.mktemp())
        _, transport, wire, _ = connect()
        wire.send_bytes(pickle.dumps(System(f"touch {marker}")))
        self.assertTrue(transport.disconnecting)
        self.assertFalse(os.path.exists(marker))

    def test_oversizedHandshakeFrame(self) -> None:
        """A handshake frame over 256 bytes is refused from its length alone."""
        _, transport, wire, _ = connect()
        transport.clear()
        wire.protocol.dataReceived(frameHeader(257))
        self.assertTrue(transport.disconnecting)

    def test_deadline(self) -> None:
        """A client that never answers is dropped after the handshake timeout."""
        _, transport, _wire, clock = connect(handshakeTimeout=10)
        clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.disconnected)

    def test_deadlineCancelled(self) -> None:
        """Once authenticated, the deadline no longer applies."""
        _protocol, _transport, wire, clock = connect(handshakeTimeout=10)
        connection.answer_challenge(wire, KEY)  # type: ignore[attr-defined, arg-type]
        connection.deliver_challenge(wire, KEY)  # type: ignore[attr-defined, arg-type]
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_connectionLostCancelsDeadline(self) -> None:
        """A connection lost mid-handshake leaves no timer behind."""
        protocol, _, _, clock = connect()
        protocol.connectionLost()
        self.assertEqual(clock.getDelayedCalls(), [])


class FramingTests(SynchronousTestCase):
    """
    The length framing: 4-byte signed, or -1 then 8 bytes.
    """

    def test_header(self) -> None:
        """Up to 2**31 - 1 bytes take 4 bytes of length; more take -1 and 8."""
        self.assertEqual(
            [frameHeader(5), frameHeader(0x7FFFFFFF), frameHeader(0x80000000)],
            [
                b"\x00\x00\x00\x05",
                b"\x7f\xff\xff\xff",
                b"\xff\xff\xff\xff\x00\x00\x00\x00\x80\x00\x00\x00",
            ],
        )

    def test_longForm(self) -> None:
        """A message sent with the 8-byte length form is read."""
        protocol, _transport, wire = authenticated()
        payload = pickle.dumps("long form")
        protocol.dataReceived(struct.pack("!iQ", -1, len(payload)) + payload)
        self.assertEqual(wire.frames(), [payload])

    def test_refusedLengths(self) -> None:
        """-1 then 2**63, 0x80000000, 0x7FFFFFFF and max+1 close, unallocated."""
        for prefix in [
            b"\xff\xff\xff\xff" + struct.pack("!Q", 2**63),
            b"\x80\x00\x00\x00",
            b"\x7f\xff\xff\xff",
            struct.pack("!i", 1025),
        ]:
            protocol, transport, _wire = authenticated(maxMessageSize=1024)
            with capturedLogs() as events:
                protocol.dataReceived(prefix)
            self.assertTrue(transport.disconnecting, prefix)
            self.assertEqual(len(protocol._buffer), 0)
            self.assertIn("message length", formatEvent(events[-1]))

    def test_atLimit(self) -> None:
        """A message of exactly the maximum size is accepted."""
        payload = pickle.dumps(b"x" * 1000)
        _protocol, _transport, wire = authenticated(maxMessageSize=len(payload))
        wire.send_bytes(payload)
        self.assertEqual(wire.frames(), [payload])

    def test_truncated(self) -> None:
        """A truncated frame waits, and a lost connection discards it quietly."""
        protocol, _transport, wire = authenticated()
        payload = pickle.dumps("hello")
        protocol.dataReceived((frameHeader(len(payload)) + payload)[:-1])
        self.assertEqual(wire.frames(), [])
        protocol.connectionLost()
        self.assertEqual(len(protocol._buffer), 0)


class EchoTests(SynchronousTestCase):
    """
    Recipe 11.7: messages come back as they went.
    """

    def test_cookbookSession(self) -> None:
        """The recipe's three messages come back equal."""
        _protocol, _transport, wire = authenticated()
        for message in ["hello", 42, [1, 2, 3, 4, 5]]:
            wire.send_bytes(pickle.dumps(message))
            self.assertEqual(pickle.loads(wire.recv_bytes()), message)

    def test_pipelinedBytewise(self) -> None:
        """Pipelined messages sent one byte at a time come back in order."""
        protocol, _transport, wire = authenticated()
        messages = [pickle.dumps(i) for i in range(20)]
        data = b"".join(frameHeader(len(m)) + m for m in messages)
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])
        self.assertEqual(wire.frames(), messages)

    def test_refused(self) -> None:
        """An os.system pickle closes the connection, logged, with no effect."""
        marker = os.path.abspath(self.mktemp())
        _protocol, transport, wire = authenticated()
        with capturedLogs() as events:
            wire.send_bytes(pickle.dumps(System(f"touch {marker}")))
            wire.send_bytes(pickle.dumps("after"))
        self.assertEqual(wire.frames(), [])
        self.assertTrue(transport.disconnecting)
        self.assertFalse(os.path.exists(marker))
        self.assertIn("refused global posix.system", formatEvent(events[-1]))

    def test_deepNesting(self) -> None:
        """A message nested past --max-nesting closes the connection."""
        _protocol, transport, wire = authenticated(EchoMode(maxNesting=5))
        wire.send_bytes(pickle.dumps([[[[[["deep"]]]]]]))
        self.assertTrue(transport.disconnecting)


class FakePool:
    """
    Stands in for the thread pool: records calls, fires when told.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((f, args, d))
        return d


def call(wire: Wire, name: str, *args: Any, **kwargs: Any) -> None:
    """
    Send what the Cookbook's C{RPCProxy} sends for C{proxy.name(*args, **kwargs)}.
    """
    wire.send_bytes(pickle.dumps((name, args, kwargs)))


class RPCTests(SynchronousTestCase):
    """
    Recipe 11.8: pickled (name, args, kwargs) in, pickled result or exception out.
    """

    def rpc(self) -> tuple[MPConnProtocol, StringTransport, Wire, FakePool]:
        pool = FakePool()
        return (*authenticated(RPCMode(testFunctions, pool)), pool)

    def replies(self, wire: Wire) -> list[Any]:
        return [pickle.loads(frame) for frame in wire.frames()]

    def test_call(self) -> None:
        """A registered function's result comes back pickled."""
        _, _, wire, _ = self.rpc()
        call(wire, "add", 2, 3)
        call(wire, "sub", x=2, y=3)
        self.assertEqual(self.replies(wire), [5, -1])

    def test_pickledTwice(self) -> None:
        """A request pickled twice, as the printed recipe sends, is answered so."""
        _, transport, wire, _ = self.rpc()
        requests: list[Any] = [("add", (2, 3), {}), ("nope", (), {})]
        for request in requests:
            wire.send_bytes(pickle.dumps(pickle.dumps(request)))
        call(wire, "sub", 2, 3)
        added, unknown, subtracted = wire.frames()
        error = pickle.loads(pickle.loads(unknown))
        self.assertEqual(
            (
                pickle.loads(pickle.loads(added)),
                (type(error), error.args),
                pickle.loads(subtracted),
                transport.disconnecting,
            ),
            (5, (KeyError, ("nope",)), -1, False),
        )

    def test_pickledTwiceLater(self) -> None:
        """A blocking call pickled twice gets its later reply pickled twice."""
        _, _, wire, pool = self.rpc()
        wire.send_bytes(pickle.dumps(pickle.dumps(("whereAmI", (), {}))))
        [(_, _, d)] = pool.calls
        d.callback("pool")
        [reply] = wire.frames()
        self.assertEqual(pickle.loads(pickle.loads(reply)), "pool")

    def test_pickledTwiceRefused(self) -> None:
        """An os.system pickle inside the bytes is refused too: closed, never run."""
        marker = os.path.abspath(self.mktemp())
        _, transport, wire, _ = self.rpc()
        request: Any = ("add", (System(f"touch {marker}"), 1), {})
        wire.send_bytes(pickle.dumps(pickle.dumps(request)))
        self.assertEqual(
            (wire.frames(), transport.disconnecting, os.path.exists(marker)),
            ([], True, False),
        )

    def test_unknown(self) -> None:
        """An unknown name gets KeyError(name), as the recipe's handler sends."""
        _, transport, wire, _ = self.rpc()
        call(wire, "nope")
        (error,) = self.replies(wire)
        self.assertEqual((type(error), error.args), (KeyError, ("nope",)))
        self.assertFalse(transport.disconnecting)

    def test_exception(self) -> None:
        """A built-in exception comes back with its message, and no traceback."""
        _, _, wire, _ = self.rpc()
        call(wire, "sub", [1, 2], 4)
        (error,) = self.replies(wire)
        self.assertEqual(
            (type(error), str(error), error.__traceback__, error.__cause__),
            (
                TypeError,
                "unsupported operand type(s) for -: 'list' and 'int'",
                None,
                None,
            ),
        )

    def test_hiddenException(self) -> None:
        """Other exceptions become a RuntimeError without details, logged here."""
        _, _, wire, _ = self.rpc()
        call(wire, "leak")
        (error,) = self.replies(wire)
        self.assertEqual(
            (type(error), str(error)), (RuntimeError, "leak failed on the server")
        )
        self.assertEqual(len(self.flushLoggedErrors(SecretError)), 1)

    def test_unpicklableResult(self) -> None:
        """A result that cannot be pickled becomes a TypeError reply."""
        _protocol, _, wire = authenticated(RPCMode({"f": unpicklable}, FakePool()))
        call(wire, "f")
        (error,) = self.replies(wire)
        self.assertEqual(
            (type(error), error.args),
            (TypeError, ("the result of f cannot be pickled",)),
        )

    def test_exceptionArgumentsArePlain(self) -> None:
        """An allowed exception carrying an object is sent with its message only."""

        def raiser() -> None:
            raise ValueError(SecretError("x"))

        _, _, wire = authenticated(RPCMode({"f": raiser}, FakePool()))
        call(wire, "f")
        (error,) = self.replies(wire)
        self.assertEqual((type(error), error.args), (ValueError, ("x",)))

    def test_coroutine(self) -> None:
        """A coroutine function's result is awaited and sent."""
        _, _, wire, _ = self.rpc()
        call(wire, "asyncAdd", 2, 3)
        self.assertEqual(self.replies(wire), [5])

    def test_deferred(self) -> None:
        """A function returning a Deferred is answered when it fires."""
        _, _, wire = authenticated(RPCMode({"f": lambda: succeed("done")}, FakePool()))
        call(wire, "f")
        self.assertEqual(self.replies(wire), ["done"])

    def test_blockingInPool(self) -> None:
        """A blocking call goes to the pool, pausing reads; replies stay in order."""
        _protocol, transport, wire, pool = self.rpc()
        call(wire, "whereAmI")
        call(wire, "add", 1, 1)
        self.assertEqual(
            (
                [(f, args) for f, args, _ in pool.calls],
                wire.frames(),
                transport.producerState,
            ),
            ([(whereAmI, ())], [], "paused"),
        )
        pool.calls[0][2].callback("worker")
        self.assertEqual(
            (self.replies(wire), transport.producerState), (["worker", 2], "producing")
        )

    def test_blockingFails(self) -> None:
        """A blocking function's exception comes back like an inline one's."""
        _protocol, _, wire, pool = self.rpc()
        call(wire, "whereAmI")
        pool.calls[0][2].errback(ValueError("bad"))
        (error,) = self.replies(wire)
        self.assertEqual((type(error), error.args), (ValueError, ("bad",)))

    def test_lostWhileBusy(self) -> None:
        """A reply arriving after the connection is gone is dropped."""
        protocol, _transport, wire, pool = self.rpc()
        call(wire, "whereAmI")
        protocol.connectionLost()
        pool.calls[0][2].callback("late")
        self.assertEqual(wire.frames(), [])

    def test_malformedRequests(self) -> None:
        """Anything but (str, tuple, dict of str) closes the connection."""
        request: Any
        for request in [
            "add",
            ("add", (1, 2)),
            (1, (), {}),
            ("add", (1, 2), {1: 2}),
            ("add", (1, 2), [], 4),
        ]:
            _, transport, wire, _ = self.rpc()
            wire.send_bytes(pickle.dumps(request))
            self.assertEqual(
                (wire.frames(), transport.disconnecting), ([], True), request
            )

    def test_refused(self) -> None:
        """An os.system pickle as arguments closes the connection, no effect."""
        marker = os.path.abspath(self.mktemp())
        _, transport, wire, _ = self.rpc()
        call(wire, "add", System(f"touch {marker}"), 1)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(os.path.exists(marker))


class FlowTests(SynchronousTestCase):
    """
    A client that does not read its replies stops being read.
    """

    def test_pausedByTransport(self) -> None:
        """While the transport is full nothing is answered; on resume all is."""
        protocol, transport, wire = authenticated()
        producer = protocol.discipline
        assert producer is not None
        self.assertIs(transport.producer, producer)
        producer.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        message = pickle.dumps("x")
        protocol.dataReceived((frameHeader(len(message)) + message) * 3)
        self.assertEqual(wire.frames(), [])
        producer.resumeProducing()
        self.assertEqual(
            (wire.frames(), transport.producerState), ([message] * 3, "producing")
        )

    def test_closeAbortedAfterGrace(self) -> None:
        """A refused connection still open CLOSE_GRACE later is aborted."""
        protocol, transport, wire, clock = connect(closeGrace=2)
        connection.answer_challenge(wire, KEY)  # type: ignore[attr-defined, arg-type]
        connection.deliver_challenge(wire, KEY)  # type: ignore[attr-defined, arg-type]
        protocol.dataReceived(frameHeader(5) + b"\x80\x05junk")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        clock.advance(2)
        self.assertTrue(transport.disconnected)

    def test_closeWhileBackedUpAborts(self) -> None:
        """A connection closed while its replies are unread is aborted at once."""
        protocol, transport, _ = authenticated()
        assert transport.producer is not None
        transport.producer.pauseProducing()
        protocol._close("test")
        self.assertTrue(transport.disconnected)

    def test_manySynchronousReplies(self) -> None:
        """Thousands of pipelined requests with ready Deferreds do not recurse."""
        protocol, _, wire = authenticated(
            RPCMode({"f": lambda: succeed(1)}, FakePool())
        )
        request = pickle.dumps(("f", (), {}))
        protocol.dataReceived((frameHeader(len(request)) + request) * 5000)
        self.assertEqual(len(wire.frames()), 5000)


class FunctionLoadingTests(SynchronousTestCase):
    """
    C{--functions package.module:registry}.
    """

    def test_mapping(self) -> None:
        """A module-level mapping is loaded as it is."""
        self.assertEqual(
            loadFunctions("tests.test_mpconn:testFunctions"), testFunctions
        )

    def test_handlerObject(self) -> None:
        """The Cookbook's RPCHandler (functions in _functions) is accepted."""
        self.assertEqual(
            loadFunctions("tests.test_mpconn:cookbookHandler"),
            {"add": exampleFunctions["add"]},
        )

    def test_errors(self) -> None:
        """Bad specs are one-line ValueErrors."""
        for spec, message in [
            ("nocolon", "--functions wants package.module:registry, not 'nocolon'"),
            (
                "no.such.module:x",
                "cannot load --functions 'no.such.module:x': No module named 'no'",
            ),
            (
                "tests.test_mpconn:KEY",
                "--functions 'tests.test_mpconn:KEY' "
                "is not a mapping of names to callables",
            ),
            (
                "tests.test_mpconn:badRegistry",
                "--functions 'tests.test_mpconn:badRegistry': "
                "'x' is not a named callable",
            ),
        ]:
            with self.assertRaises(ValueError) as caught:
                loadFunctions(spec)
            self.assertEqual(str(caught.exception), message)


class RPCHandler:
    """
    Recipe 11.8's handler, as a user would already have it.
    """

    def __init__(self) -> None:
        self._functions: dict[str, Any] = {}

    def register_function(self, func: Any) -> None:
        self._functions[func.__name__] = func


cookbookHandler = RPCHandler()
cookbookHandler.register_function(exampleFunctions["add"])
badRegistry = {"x": 1}


class AuthkeyTests(SynchronousTestCase):
    """
    Reading and generating authkeys.
    """

    def test_oneNewline(self) -> None:
        """One trailing newline is ignored; other whitespace is key."""
        path = self.mktemp()
        for content, key in [
            (b"peekaboo\n", b"peekaboo"),
            (b" k\n\n", b" k\n"),
            (b"k", b"k"),
        ]:
            with open(path, "wb") as f:
                f.write(content)
            self.assertEqual(readAuthkey(path), key)

    def test_empty(self) -> None:
        """An empty key (or a lone newline) is refused."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\n")
        self.assertRaises(ValueError, readAuthkey, path)

    def test_generated(self) -> None:
        """Without a key file, one is made private in the state dir and kept."""
        stateDir = self.mktemp()
        path, key = generatedAuthkey(stateDir)
        self.assertEqual(
            (path, len(key), stat.S_IMODE(os.stat(path).st_mode)),
            (os.path.join(stateDir, "np-mpconn.authkey"), 64, 0o600),
        )
        self.assertEqual(generatedAuthkey(stateDir), (path, key))


class OptionsTests(SynchronousTestCase):
    """
    C{twistd np-mpconn}'s command line.
    """

    def test_options(self) -> None:
        """Every service option is parsed and validated."""
        keyFile = self.mktemp()
        with open(keyFile, "wb") as f:
            f.write(b"peekaboo\n")
        config = Options()
        config.parseOptions(
            [
                "--authkey-file",
                keyFile,
                "--mode",
                "rpc",
                "--functions",
                "tests.test_mpconn:testFunctions",
                "--max-message-size",
                "4096",
                "--max-nesting",
                "10",
                "--handshake-timeout",
                "5",
                "--threads",
                "2",
            ]
        )
        self.assertEqual(
            config.settings,
            MPConnSettings(
                authkeyFile=keyFile,
                authkey=b"peekaboo",
                mode="rpc",
                functions=testFunctions,
                maxMessageSize=4096,
                maxNesting=10,
                handshakeTimeout=5.0,
                threads=2,
            ),
        )

    def test_defaults(self) -> None:
        """Echo, a 1 MiB message limit, nesting 100, no key file."""
        config = Options()
        config.parseOptions([])
        self.assertEqual(
            config.settings,
            MPConnSettings(
                authkeyFile=None,
                authkey=None,
                mode="echo",
                functions=None,
                maxMessageSize=1024 * 1024,
                maxNesting=100,
            ),
        )

    def test_errors(self) -> None:
        """Bad values are one-line usage errors."""
        for argv, message in [
            (["--mode", "chat"], "--mode must be one of echo, rpc, not 'chat'"),
            (
                ["--functions", "tests.test_mpconn:testFunctions"],
                "--functions needs --mode rpc",
            ),
            (
                ["--authkey-file", "/nonexistent/key"],
                "cannot read authkey file '/nonexistent/key': "
                "No such file or directory",
            ),
            (["--listen", "udp:25000"], "np-mpconn does not speak UDP: 'udp:25000'"),
            (
                ["--auth", "anonymous"],
                "np-mpconn authenticates peers with --authkey-file, not --auth",
            ),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                Options().parseOptions(argv)
            self.assertIn(message, str(caught.exception))

    def test_makeService(self) -> None:
        """makeService listens on 127.0.0.1:25000 by default, with a generated key."""
        stateDir = self.mktemp()
        config = Options()
        config.parseOptions(["--state-dir", stateDir])
        reactor = MemoryReactorClock()
        makeService(config, reactor=reactor).startService()
        (port,) = reactor.tcpServers
        self.assertEqual((port[0], port[3]), (25000, "127.0.0.1"))
        self.assertTrue(os.path.exists(os.path.join(stateDir, "np-mpconn.authkey")))

    def test_keywordTwin(self) -> None:
        """mpconnService refuses functions in echo mode and bad modes."""
        self.assertRaises(ValueError, MPConnSettings, authkey=KEY, mode="chat")
        self.assertRaises(
            ValueError, mpconnService, MPConnSettings(authkey=KEY, functions={})
        )


#: Python Cookbook recipe 11.8's client, rpcclient.py as printed: its
#: example connects to localhost:17000 with the key b"peekaboo".
COOKBOOK_RPCCLIENT = """import pickle

class RPCProxy:
    def __init__(self, connection):
        self._connection = connection
    def __getattr__(self, name):
        def do_rpc(*args, **kwargs):
            self._connection.send(pickle.dumps((name, args, kwargs)))
            result = pickle.loads(self._connection.recv())
            if isinstance(result, Exception):
                raise result
            return result
        return do_rpc

# Example use
from multiprocessing.connection import Client
c = Client(('localhost', 17000), authkey=b'peekaboo')
proxy = RPCProxy(c)
print(proxy.add(2, 3))
print(proxy.sub(2, 3))
try:
    proxy.sub([1, 2], 4)
except Exception as e:
    print(e)
"""

#: The recipe's RPCProxy class as printed (rpcclient.py up to its example).
COOKBOOK_RPCPROXY = COOKBOOK_RPCCLIENT[: COOKBOOK_RPCCLIENT.index("# Example use")]

#: Recipe 11.8's server, rpcserver.py as printed; it serves at import.
COOKBOOK_RPCSERVER = """# rpcserver.py

import pickle
class RPCHandler:
    def __init__(self):
        self._functions = { }

    def register_function(self, func):
        self._functions[func.__name__] = func

    def handle_connection(self, connection):
        try:
            while True:
                # Receive a message
                func_name, args, kwargs = pickle.loads(connection.recv())
                # Run the RPC and send a response
                try:
                    r = self._functions[func_name](*args,**kwargs)
                    connection.send(pickle.dumps(r))
                except Exception as e:
                    connection.send(pickle.dumps(e))
        except EOFError:
             pass

# Example use
from multiprocessing.connection import Listener
from threading import Thread

def rpc_server(handler, address, authkey):
    sock = Listener(address, authkey=authkey)
    while True:
        client = sock.accept()
        t = Thread(target=handler.handle_connection, args=(client,))
        t.daemon = True
        t.start()

# Some remote functions
def add(x, y):
    return x + y

def sub(x, y):
    return x - y

# Register with a handler
handler = RPCHandler()
handler.register_function(add)
handler.register_function(sub)

# Run the server
rpc_server(handler, ('localhost', 17000), authkey=b'peekaboo')
"""

#: Its RPCHandler with the example's functions registered, as a module that
#: C{--functions cookbookrpc:handler} loads: the server without its last
#: statement, which would serve at import.
COOKBOOK_RPCHANDLER = COOKBOOK_RPCSERVER[: COOKBOOK_RPCSERVER.index("# Run the server")]

CLIENT = (
    COOKBOOK_RPCPROXY
    + """
import json, sys
from multiprocessing.connection import Client

mode, address, key = sys.argv[1], sys.argv[2], sys.argv[3].encode()
if ":" in address:
    host, port = address.split(":")
    address = (host, int(port))
out = []
if mode == "wrongkey":
    try:
        Client(address, authkey=key + b"x")
    except Exception as e:
        out.append(type(e).__name__)
elif mode == "echo":
    # Recipe 11.7's session.
    c = Client(address, authkey=key)
    for message in ["hello", 42, [1, 2, 3, 4, 5]]:
        c.send(message)
        out.append(c.recv())
else:
    c = Client(address, authkey=key)
    proxy = RPCProxy(c)
    out.append(proxy.add(2, 3))
    out.append(proxy.sub(2, 3))
    try:
        proxy.sub([1, 2], 4)
    except TypeError as e:
        out.append(str(e))
    try:
        proxy.nope()
    except KeyError as e:
        out.append(repr(e))
json.dump(out, sys.stdout)
"""
)

RPC_EXPECTED = [
    5,
    -1,
    "unsupported operand type(s) for -: 'list' and 'int'",
    "KeyError('nope')",
]


class RealSocketTests(TestCase):
    """
    The standard library's own client, over real TCP and UNIX sockets, from
    Python 3.11 (in a thread and in subprocesses) and 3.12 and 3.13 (in
    subprocesses).
    """

    def listen(self, mode: str = "echo", unix: bool = False, **kwargs: Any) -> Any:
        """
        Start the service; return the address a client connects to.
        """
        if unix:
            # trial's temporary paths can outgrow the 108 bytes of sun_path.
            directory = tempfile.mkdtemp()
            self.addCleanup(os.rmdir, directory)
            path = os.path.join(directory, "mpconn.sock")
            description = f"unix:{path}"
        else:
            description = "tcp:0:interface=127.0.0.1"
        service = mpconnService(
            MPConnSettings(authkey=KEY, mode=mode, listen=(description,), **kwargs)
        )
        service.startService()
        self.addCleanup(service.stopService)
        (child,) = service.services
        if unix:
            return path
        return ("127.0.0.1", child.port.getHost().port)  # type: ignore[attr-defined, arg-type]

    def runClient(self, python: str, mode: str, address: Any) -> Deferred[Any]:
        """
        Run L{CLIENT} under C{python}; fire with what it printed, decoded.
        """
        script = os.path.abspath(self.mktemp()) + ".py"
        with open(script, "w") as f:
            f.write(textwrap.dedent(CLIENT))
        if isinstance(address, tuple):
            address = f"{address[0]}:{address[1]}"
        d = getProcessOutputAndValue(
            python, [script, mode, address, KEY.decode()], env={}
        )

        def decode(result: tuple[bytes, bytes, int]) -> Any:
            out, err, code = result
            self.assertEqual((err, code), (b"", 0))
            return json.loads(out)

        return d.addCallback(decode)

    def test_cookbookEcho(self) -> Deferred[Any]:
        """Recipe 11.7's session from this Python (3.11, HMAC-MD5) over TCP."""
        address = self.listen()

        def session() -> list[Any]:
            c = connection.Client(address, authkey=KEY)
            try:
                out = []
                for message in ["hello", 42, [1, 2, 3, 4, 5]]:
                    c.send(message)
                    out.append(c.recv())
                return out
            finally:
                c.close()

        d = deferToThread(session)
        d.addCallback(self.assertEqual, ["hello", 42, [1, 2, 3, 4, 5]])
        return d

    def test_cookbookRPC311(self) -> Deferred[None]:
        """The recipe's RPCProxy as printed from Python 3.11 (HMAC-MD5) over TCP."""
        d = self.runClient(PYTHON311, "rpc", self.listen("rpc"))
        return d.addCallback(self.assertEqual, RPC_EXPECTED)

    def test_cookbookRPC312(self) -> Deferred[None]:
        """The recipe's RPCProxy as printed from Python 3.12 ({sha256}) over TCP."""
        d = self.runClient(PYTHON312, "rpc", self.listen("rpc"))
        return d.addCallback(self.assertEqual, RPC_EXPECTED)

    def test_cookbookRPC313UNIX(self) -> Deferred[None]:
        """The recipe's RPCProxy as printed from Python 3.13 over a UNIX socket."""
        d = self.runClient(PYTHON313, "rpc", self.listen("rpc", unix=True))
        return d.addCallback(self.assertEqual, RPC_EXPECTED)

    def test_echo312UNIX(self) -> Deferred[None]:
        """Recipe 11.7's session from Python 3.12 over a UNIX socket."""
        d = self.runClient(PYTHON312, "echo", self.listen(unix=True))
        return d.addCallback(self.assertEqual, ["hello", 42, [1, 2, 3, 4, 5]])

    def test_rpcUNIX311(self) -> Deferred[Any]:
        """Over a UNIX socket, a blocking function runs in the np-mpconn pool."""
        address = self.listen("rpc", unix=True, functions=testFunctions)

        def session() -> list[Any]:
            with connection.Client(address, authkey=KEY) as c:
                out = []
                requests: list[Any] = [("whereAmI", (), {}), ("asyncAdd", (1, 2), {})]
                for request in requests:
                    c.send_bytes(pickle.dumps(request))
                    out.append(pickle.loads(c.recv_bytes()))
                return out

        def check(out: list[Any]) -> None:
            self.assertEqual(out[1], 3)
            self.assertIn("np-mpconn", out[0])

        return deferToThread(session).addCallback(check)

    def test_wrongKey311(self) -> Deferred[Any]:
        """A wrong key from Python 3.11 raises AuthenticationError in the client."""
        address = self.listen()

        def attempt() -> str:
            try:
                connection.Client(address, authkey=b"wrong")
            except AuthenticationError as e:
                return str(e)
            return "connected"

        d = deferToThread(attempt)
        d.addCallback(self.assertEqual, "digest sent was rejected")
        return d

    def test_wrongKey313(self) -> Deferred[None]:
        """A wrong key from Python 3.13 is refused too."""
        d = self.runClient(PYTHON313, "wrongkey", self.listen())
        return d.addCallback(self.assertEqual, ["AuthenticationError"])

    def test_systemPayload(self) -> Deferred[Any]:
        """An os.system pickle over a real socket: disconnected, never run."""
        marker = os.path.abspath(self.mktemp())
        address = self.listen("rpc")

        def attack() -> str:
            with connection.Client(address, authkey=KEY) as c:
                c.send_bytes(pickle.dumps(("add", (System(f"touch {marker}"), 1), {})))
                try:
                    c.recv_bytes()
                except EOFError:
                    return "closed"
            return "answered"

        def check(result: str) -> None:
            self.assertEqual((result, os.path.exists(marker)), ("closed", False))

        return deferToThread(attack).addCallback(check)

    def test_largeMessage(self) -> Deferred[Any]:
        """A message just under the limit makes the round trip."""
        address = self.listen(maxMessageSize=4 * 1024 * 1024)
        payload = os.urandom(3 * 1024 * 1024)

        def session() -> bytes:
            with connection.Client(address, authkey=KEY) as c:
                c.send(payload)
                return c.recv()  # type: ignore[no-any-return]

        return deferToThread(session).addCallback(self.assertEqual, payload)


class CookbookAsPrintedTests(TestCase):
    """
    Recipe 11.8's two files as printed: C{twistd np-mpconn --mode rpc} serves
    the printed C{RPCHandler}'s functions where the printed client connects,
    127.0.0.1:17000 (that port must be free), with the key C{b"peekaboo"}.
    """

    @inlineCallbacks
    def test_printedClient(self) -> Any:
        """rpcclient.py as printed prints the book's lines on 3.11, 3.12, 3.13."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        files = {
            "cookbookrpc.py": COOKBOOK_RPCHANDLER,
            "rpcclient.py": COOKBOOK_RPCCLIENT,
            "authkey": "peekaboo\n",
        }
        for name, text in files.items():
            with open(os.path.join(directory, name), "w") as f:
                f.write(text)
        port = 17000
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as e:
                self.fail(f"the printed client needs 127.0.0.1:{port}, taken: {e}")
        process = runTwistd(
            self,
            "np-mpconn",
            "--mode=rpc",
            "--functions=cookbookrpc:handler",
            f"--authkey-file={os.path.join(directory, 'authkey')}",
            f"--listen=tcp:{port}:interface=127.0.0.1",
            env={"PYTHONPATH": os.pathsep.join([str(ROOT), directory])},
        )
        yield deferToThread(waitForPort, port, process)
        printed = []
        for python in [PYTHON311, PYTHON312, PYTHON313]:
            out, err, code = yield getProcessOutputAndValue(
                python, [os.path.join(directory, "rpcclient.py")], env={}
            )
            printed.append((python, out.decode(), err, code))
        expected = "5\n-1\nunsupported operand type(s) for -: 'list' and 'int'\n"
        self.assertEqual(
            printed,
            [(python, expected, b"", 0) for python, _, _, _ in printed],
        )


class _TLSConnection:
    """
    C{multiprocessing.connection}'s framing over a stdlib C{ssl} socket.

    C{connection.Client} speaks only plain sockets, and a detached descriptor
    would leave TLS behind, so this offers the C{send_bytes}/C{recv_bytes} the
    stdlib's own C{answer_challenge} and C{deliver_challenge} use.
    """

    def __init__(self, sock: ssl.SSLSocket):
        self.sock = sock

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(struct.pack("!i", len(data)) + data)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        (size,) = struct.unpack("!i", self._exactly(4))
        if maxlength is not None and size > maxlength:
            raise OSError("bad message length")
        return self._exactly(size)

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data


class TLSTests(TestCase):
    """
    np-mpconn on C{listenTLS}: the stdlib handshake functions over stdlib TLS.
    """

    def connect(self, authkey: bytes, mode: str = "echo") -> Deferred[Any]:
        """
        Start np-mpconn on TLS; fire with a client connected and authenticated
        with C{authkey} (in a thread), or with its failure.
        """
        pki = PKI(os.path.abspath(self.mktemp()))
        cert, key = pki.serverCertificate("localhost", "127.0.0.1")
        service = mpconnService(
            MPConnSettings(
                authkey=KEY,
                mode=mode,
                listenTLS=("tcp:0:interface=127.0.0.1",),
                tlsCert=(cert,),
                tlsKey=(key,),
            )
        )
        service.startService()
        self.addCleanup(service.stopService)
        listening: Any = next(s for s in service if isinstance(s, ListeningService))
        port = listening.port.getHost().port
        context = ssl.create_default_context(cafile=pki.caPath)

        def handshake() -> _TLSConnection:
            raw = socket.create_connection(("127.0.0.1", port))
            c = _TLSConnection(context.wrap_socket(raw, server_hostname="localhost"))
            self.addCleanup(c.sock.close)
            connection.answer_challenge(c, authkey)  # type: ignore[attr-defined,arg-type]
            connection.deliver_challenge(c, authkey)  # type: ignore[attr-defined,arg-type]
            return c

        return deferToThread(handshake)

    def test_echo(self) -> Deferred[Any]:
        """Recipe 11.7's messages round-trip over a verified TLS connection."""

        def session(c: _TLSConnection) -> list[Any]:
            out = []
            for message in ["hello", 42, [1, 2, 3, 4, 5]]:
                c.send_bytes(pickle.dumps(message))
                out.append(pickle.loads(c.recv_bytes()))
            return out

        d = self.connect(KEY)
        d.addCallback(lambda c: deferToThread(session, c))
        return d.addCallback(self.assertEqual, ["hello", 42, [1, 2, 3, 4, 5]])

    def test_rpc(self) -> Deferred[Any]:
        """An RPC call over TLS gets its pickled result."""

        def call(c: _TLSConnection) -> Any:
            c.send_bytes(pickle.dumps(("add", (2, 3), {})))
            return pickle.loads(c.recv_bytes())

        d = self.connect(KEY, mode="rpc")
        d.addCallback(lambda c: deferToThread(call, c))
        return d.addCallback(self.assertEqual, 5)

    def test_wrongKey(self) -> Deferred[Any]:
        """A wrong authkey over TLS is rejected as over plain TCP."""
        d = self.connect(b"wrong")
        d.addCallbacks(
            lambda c: "connected",
            lambda f: (f.trap(AuthenticationError), str(f.value))[1],
        )
        return d.addCallback(self.assertEqual, "digest sent was rejected")
