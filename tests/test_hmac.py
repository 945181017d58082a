"""
Tests for L{netplugins.cred.hmac} (key files, the C{hmac:} checker) and
L{netplugins.hmacwrap} (the C{hmac:} endpoint running the Python Cookbook 11.9
handshake in front of a service).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import types
from collections.abc import Callable
from typing import Any

from twisted.cred import strcred
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor, threads
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

import netplugins.cred.hmac as credhmac
from netplugins.cred.hmac import (
    HMACChecker,
    HMACKey,
    HMACResponse,
    KeyFile,
    KeyFileError,
    findKey,
    parseKeys,
    responseFor,
)
from netplugins.hmacwrap import (
    HMACFactory,
    HMACHandshake,
    HMACServerEndpoint,
    authenticatedName,
    serverProof,
)
from netplugins.options import ServiceSettings

ALICE = b"alice's secret"
BOB = bytes(range(32))
KEYS = b"# test keys\nalice:alice's secret\n\nbob:hex:" + BOB.hex().encode() + b"\n"
PEER = IPv4Address("TCP", "192.0.2.7", 40000)


def client_authenticate(connection: socket.socket, secret_key: bytes) -> None:
    """
    Python Cookbook 11.9's client, with the digest set as Python 3 requires.
    """
    message = connection.recv(32)
    hash = hmac.new(secret_key, message, digestmod=hashlib.sha256)
    digest = hash.digest()
    connection.send(digest)


def recvExactly(connection: socket.socket, size: int) -> bytes:
    """
    Read exactly C{size} bytes, or fewer if the peer closed (or reset, as it
    does when closing with our unread bytes in its buffer).
    """
    data = b""
    while len(data) < size:
        try:
            chunk = connection.recv(size - len(data))
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


class Recorder(Protocol):
    """
    Records what the service's protocol sees.
    """

    def __init__(self) -> None:
        self.events: list[Any] = []

    def connectionMade(self) -> None:
        self.events.append(("made", self.transport))

    def dataReceived(self, data: bytes) -> None:
        self.events.append(("data", data))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.events.append(("lost",))


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class CountingFactory(Factory):
    """
    A service factory that remembers every protocol it built.
    """

    def __init__(self, protocol: type[Protocol] = Recorder) -> None:
        self.protocol = protocol
        self.built: list[Any] = []

    def buildProtocol(self, addr: IAddress | None) -> Any:
        p = super().buildProtocol(addr)
        self.built.append(p)
        return p


def deferredRunner() -> tuple[list[Deferred[Any]], Callable[..., Deferred[Any]]]:
    """
    A C{runBlocking} that runs nothing until the test fires the L{Deferred} it
    handed out (in C{runs}, in order).
    """
    runs: list[Deferred[Any]] = []

    def later(f: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        runs.append(d)
        d.addCallback(lambda _: f(*args))
        return d

    return runs, later


def writeKeys(case: SynchronousTestCase, data: bytes = KEYS, mode: int = 0o600) -> str:
    path = case.mktemp()
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


class KeyParsingTests(SynchronousTestCase):
    """
    L{parseKeys} reads C{name:key} lines and refuses ambiguous or empty ones.
    """

    def test_forms(self) -> None:
        """Raw, hex, base64 and raw:-escaped keys, comments, blanks and CRLF."""
        data = (
            b"# comment\r\n\r\n  # indented comment\n"
            b"alice:alice's secret:with colon \r\n"
            b"bob:hex:0a0B\n"
            b"carol:base64:AAEC\n"
            b"dave:raw:hex:zz\n"
            b"\xc3\xa9mile:\xff\xfe\n"
        )
        self.assertEqual(
            parseKeys(data),
            (
                HMACKey("alice", b"alice's secret:with colon "),
                HMACKey("bob", b"\n\x0b"),
                HMACKey("carol", b"\x00\x01\x02"),
                HMACKey("dave", b"hex:zz"),
                HMACKey("\xe9mile", b"\xff\xfe"),
            ),
        )

    def test_errors(self) -> None:
        """Each refused line is a KeyFileError naming the source and line."""
        cases = {
            b"# x\nalice\n": "keys.txt, line 2: expected name:key",
            b"alice:\n": "line 1: the key for 'alice' is empty",
            b"alice:hex:\n": "line 1: the key for 'alice' is empty",
            b"alice:hex:zz\n": "line 1: the key for 'alice' does not decode",
            b"alice:base64:!!\n": "line 1: the key for 'alice' does not decode",
            b":k\n": "line 1: the name must be non-empty",
            b"al ice:k\n": "line 1: the name must be non-empty",
            b"\xff:k\n": "line 1: the name is not UTF-8",
            b"a:1\nb:2\na:3\n": "line 3: 'a' is already defined on line 1",
            b"a:1\n\nb:1\n": "line 3: the key for 'b' is the same as line 1's",
            b"# only a comment\n\n": "keys.txt: no keys",
        }
        for data, message in cases.items():
            with self.assertRaises(KeyFileError) as e:
                parseKeys(data, "keys.txt")
            self.assertIn(message, str(e.exception), data)

    def test_keyHiddenFromRepr(self) -> None:
        """A key's repr names it but does not show the secret."""
        self.assertNotIn("secret", repr(HMACKey("alice", b"secret")))


class KeyFileTests(SynchronousTestCase):
    """
    L{KeyFile} loads a file, warns when others can read it, and reloads it when
    it changes.
    """

    def test_worldReadableWarns(self) -> None:
        """A file readable by every user loads with a warning naming it."""
        path = writeKeys(self, mode=0o644)
        with capturedLogs() as events:
            keys = KeyFile(path)
        self.assertEqual([k.name for k in keys.keys()], ["alice", "bob"])
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["path"], path)

    def test_privateFileQuiet(self) -> None:
        """A 0600 file loads without a warning."""
        path = writeKeys(self)
        with capturedLogs() as events:
            KeyFile(path)
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.warn], [])

    def test_missingFile(self) -> None:
        """A missing file is a KeyFileError naming it."""
        with self.assertRaises(KeyFileError) as e:
            KeyFile("/nonexistent/keys")
        self.assertIn("/nonexistent/keys", str(e.exception))

    def test_reloadOnChange(self) -> None:
        """After the file changes, the next use sees the new keys."""
        path = writeKeys(self)
        keys = KeyFile(path, runBlocking=maybeDeferred)
        with open(path, "wb") as f:
            f.write(b"carol:carol's secret, a longer one\n")
        self.assertEqual(
            keys.keys(), (HMACKey("carol", b"carol's secret, a longer one"),)
        )

    def test_brokenReloadKeepsKeys(self) -> None:
        """A file that stops loading keeps the old keys and is logged once."""
        path = writeKeys(self)
        keys = KeyFile(path, runBlocking=maybeDeferred)
        with open(path, "wb") as f:
            f.write(b"alice:1\nalice:2 and more\n")
        with capturedLogs() as events:
            first = keys.keys()
            second = keys.keys()
        self.assertEqual([k.name for k in first], ["alice", "bob"])
        self.assertEqual(first, second)
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("line 2", errors[0]["why"])

    def test_deletedFileKeepsKeys(self) -> None:
        """A deleted file keeps the old keys and is logged once."""
        path = writeKeys(self)
        keys = KeyFile(path, runBlocking=maybeDeferred)
        os.remove(path)
        with capturedLogs() as events:
            self.assertEqual(len(keys.keys()), 2)
            self.assertEqual(len(keys.keys()), 2)
        self.assertEqual(
            len([e for e in events if e["log_level"] == LogLevel.error]), 1
        )

    def test_rereadOffThread(self) -> None:
        """A changed file is read by the runner; until then the old keys serve."""
        path = writeKeys(self)
        runs, later = deferredRunner()
        keys = KeyFile(path, runBlocking=later)
        with open(path, "wb") as f:
            f.write(b"carol:carol's secret, a longer one\n")
        self.assertEqual([k.name for k in keys.keys()], ["alice", "bob"])
        self.assertEqual([k.name for k in keys.keys()], ["alice", "bob"])
        self.assertEqual(len(runs), 1)
        with capturedLogs():
            runs[0].callback(None)
        self.assertEqual([k.name for k in keys.keys()], ["carol"])
        self.assertEqual(len(runs), 1)

    def test_sighupDuringReadRereads(self) -> None:
        """A reload asked for while a read runs starts another read after it."""
        path = writeKeys(self)
        runs, later = deferredRunner()
        keys = KeyFile(path, runBlocking=later)
        done = keys.reload()
        keys.reload()
        with capturedLogs():
            runs[0].callback(None)
            self.assertNoResult(done)
            runs[1].callback(None)
        self.successResultOf(done)
        self.assertEqual(len(runs), 2)


class FindKeyTests(SynchronousTestCase):
    """
    L{findKey} finds the key behind a response, trying every key every time.
    """

    keys = (HMACKey("alice", ALICE), HMACKey("bob", BOB), HMACKey("carol", b"c"))

    def test_finds(self) -> None:
        """The key that made the response is found; a wrong one finds nothing."""
        challenge = os.urandom(32)
        self.assertEqual(
            findKey(self.keys, challenge, responseFor(BOB, challenge), "sha256"),
            self.keys[1],
        )
        self.assertIsNone(
            findKey(self.keys, challenge, responseFor(b"x", challenge), "sha256")
        )

    def test_triesEveryKey(self) -> None:
        """A match on the first key still compares against all of them."""
        compared: list[bytes] = []

        def compare(a: bytes, b: bytes) -> bool:
            compared.append(a)
            return hmac.compare_digest(a, b)

        self.patch(
            credhmac,
            "hmac",
            types.SimpleNamespace(new=hmac.new, compare_digest=compare),
        )
        challenge = os.urandom(32)
        found = findKey(self.keys, challenge, responseFor(ALICE, challenge), "sha256")
        self.assertEqual((found, len(compared)), (self.keys[0], 3))


class CheckerTests(SynchronousTestCase):
    """
    L{HMACChecker} answers with the key name or L{UnauthorizedLogin}, always
    through a Deferred.
    """

    def setUp(self) -> None:
        self.checker = HMACChecker(KeyFile(writeKeys(self)))
        self.challenge = os.urandom(32)

    def test_right(self) -> None:
        """The right response gives the key's name."""
        creds = HMACResponse(self.challenge, responseFor(BOB, self.challenge))
        self.assertEqual(
            self.successResultOf(self.checker.requestAvatarId(creds)), "bob"
        )

    def test_otherDigest(self) -> None:
        """The digest named in the credentials is used (sha512, md5)."""
        for digest in ("sha512", "md5"):
            creds = HMACResponse(
                self.challenge, responseFor(ALICE, self.challenge, digest), digest
            )
            d = self.checker.requestAvatarId(creds)
            self.assertEqual(self.successResultOf(d), "alice")

    def test_refused(self) -> None:
        """Wrong key or digest, short challenge, unknown digest, non-bytes fail."""
        c = self.challenge
        for creds in [
            HMACResponse(c, responseFor(b"wrong", c)),
            HMACResponse(c, responseFor(ALICE, c, "sha512")),
            HMACResponse(c, responseFor(ALICE, c)[:16]),
            HMACResponse(c, b""),
            HMACResponse(c[:8], responseFor(ALICE, c[:8])),
            HMACResponse(c, responseFor(ALICE, c), "whirlpool"),
            HMACResponse(c.hex(), responseFor(ALICE, c)),  # type: ignore[arg-type]
        ]:
            self.failureResultOf(self.checker.requestAvatarId(creds), UnauthorizedLogin)

    def test_strcred(self) -> None:
        """strcred's hmac:PATH makes a working checker."""
        checker = strcred.makeChecker("hmac:" + writeKeys(self))
        self.assertTrue(ICredentialsChecker.providedBy(checker))
        creds = HMACResponse(self.challenge, responseFor(ALICE, self.challenge))
        self.assertEqual(self.successResultOf(checker.requestAvatarId(creds)), "alice")

    def test_strcredErrors(self) -> None:
        """A missing path or a bad file is a ValueError from strcred."""
        self.assertRaises(ValueError, strcred.makeChecker, "hmac:")
        bad = writeKeys(self, b"alice:\n")
        with self.assertRaises(ValueError) as e:
            strcred.makeChecker("hmac:" + bad)
        self.assertIn("line 1", str(e.exception))

    def test_listedByStrcred(self) -> None:
        """The dropin is found by strcred's plugin scan."""
        self.assertIn("hmac", [f.authType for f in strcred.findCheckerFactories()])


class HandshakeTests(SynchronousTestCase):
    """
    L{HMACHandshake} over a L{StringTransport}: nothing reaches the service's
    protocol before the peer proved it has a key.
    """

    def connect(self, **options: Any) -> tuple[HMACHandshake, StringTransport, bytes]:
        self.clock = Clock()
        self.service = CountingFactory()
        self.factory = HMACFactory(
            self.service, KeyFile(writeKeys(self)), clock=self.clock, **options
        )
        proto = self.factory.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        proto.makeConnection(transport)
        challenge = transport.value()
        transport.clear()
        return proto, transport, challenge

    def test_success(self) -> None:
        """The right answer connects the service's protocol to the real transport."""
        proto, transport, challenge = self.connect()
        self.assertEqual((len(challenge), self.service.built), (32, []))
        proto.dataReceived(responseFor(ALICE, challenge))
        [service] = self.service.built
        self.assertEqual(service.events, [("made", transport)])
        self.assertIs(service.transport, transport)
        self.assertEqual(authenticatedName(transport), "alice")
        self.assertFalse(transport.disconnecting)

    def test_byteByByte(self) -> None:
        """An answer in 1-byte pieces works; the service starts with the last."""
        proto, transport, challenge = self.connect()
        answer = responseFor(BOB, challenge)
        for i in range(len(answer) - 1):
            proto.dataReceived(answer[i : i + 1])
        self.assertEqual(self.service.built, [])
        proto.dataReceived(answer[-1:])
        self.assertEqual(authenticatedName(transport), "bob")

    def test_pipelined(self) -> None:
        """Bytes after the answer in the same read reach the service intact."""
        proto, transport, challenge = self.connect()
        proto.dataReceived(responseFor(ALICE, challenge) + b"hello\x00")
        proto.dataReceived(b"world")
        [service] = self.service.built
        self.assertEqual(
            service.events,
            [("made", transport), ("data", b"hello\x00"), ("data", b"world")],
        )

    def test_afterwardsDirect(self) -> None:
        """After success the transport's reads call the service's protocol."""
        proto, _, challenge = self.connect()
        proto.dataReceived(responseFor(ALICE, challenge))
        [service] = self.service.built
        self.assertEqual(proto.dataReceived, service.dataReceived)
        proto.connectionLost(Failure(Exception("gone")))
        self.assertEqual(service.events[-1], ("lost",))

    def test_wrongKey(self) -> None:
        """A wrong key closes the connection, logs the peer, builds nothing."""
        proto, transport, challenge = self.connect()
        with capturedLogs() as events:
            proto.dataReceived(responseFor(b"guess", challenge) + b"more")
            proto.dataReceived(b"and more")
        self.assertEqual(self.service.built, [])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        [event] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(event["peer"], "192.0.2.7:40000")
        self.assertIsNone(authenticatedName(transport))

    def test_longDigest(self) -> None:
        """A SHA-512 answer to a SHA-256 server is refused."""
        proto, transport, challenge = self.connect()
        proto.dataReceived(responseFor(ALICE, challenge, "sha512"))
        self.assertEqual((self.service.built, transport.disconnecting), ([], True))

    def test_shortDigestTimesOut(self) -> None:
        """A short answer waits for the rest, then the deadline aborts it."""
        proto, transport, challenge = self.connect(timeout=5)
        proto.dataReceived(responseFor(ALICE, challenge)[:16])
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertEqual((self.service.built, transport.disconnecting), ([], True))

    def test_silentTimesOut(self) -> None:
        """A peer that never answers is aborted after the default 10 seconds."""
        _, transport, _ = self.connect()
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noTimeoutAfterSuccess(self) -> None:
        """The deadline is cancelled once the handshake succeeds."""
        proto, _, challenge = self.connect()
        proto.dataReceived(responseFor(ALICE, challenge))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closedDuringHandshake(self) -> None:
        """A peer leaving mid-handshake cancels the deadline, builds nothing."""
        proto, _, _ = self.connect()
        proto.connectionLost(Failure(Exception("gone")))
        self.assertEqual((self.service.built, self.clock.getDelayedCalls()), ([], []))

    def test_replayedChallengeDiffers(self) -> None:
        """Each connection gets a fresh challenge, so an old answer fails."""
        _, _, challenge = self.connect()
        other, otherTransport, otherChallenge = self.connect()
        self.assertNotEqual(challenge, otherChallenge)
        other.dataReceived(responseFor(ALICE, challenge))
        self.assertTrue(otherTransport.disconnecting)

    def test_md5WhenChosen(self) -> None:
        """digest=md5 expects a 16-byte HMAC-MD5 answer."""
        proto, transport, challenge = self.connect(digest="md5")
        proto.dataReceived(responseFor(ALICE, challenge, "md5"))
        self.assertEqual(authenticatedName(transport), "alice")

    def test_serviceRefuses(self) -> None:
        """A service factory returning None closes the connection."""
        proto, transport, challenge = self.connect()
        self.service.buildProtocol = lambda addr: None  # type: ignore[method-assign]
        proto.dataReceived(responseFor(ALICE, challenge))
        self.assertTrue(transport.disconnecting)

    def test_mutual(self) -> None:
        """In mutual mode the server proves itself before the service starts."""
        proto, transport, challenge = self.connect(mutual=True)
        mine = os.urandom(32)
        proto.dataReceived(responseFor(BOB, challenge))
        self.assertEqual((self.service.built, transport.value()), ([], b""))
        proto.dataReceived(mine + b"payload")
        proof = transport.value()
        self.assertEqual(proof, serverProof(BOB, mine, challenge, "sha256"))
        self.assertEqual(
            proof,
            hmac.new(
                BOB, b"netplugins-hmac-server\x00" + mine + challenge, "sha256"
            ).digest(),
        )
        # The proof is not what a client would answer to the same bytes.
        self.assertNotEqual(proof, responseFor(BOB, mine))
        [service] = self.service.built
        self.assertEqual(service.events, [("made", transport), ("data", b"payload")])

    def test_mutualReflected(self) -> None:
        """A client sending the server's own challenge back is refused."""
        proto, transport, challenge = self.connect(mutual=True)
        proto.dataReceived(responseFor(BOB, challenge) + challenge)
        self.assertEqual(
            (self.service.built, transport.value(), transport.disconnecting),
            ([], b"", True),
        )

    def test_authenticatedNameThroughWrappers(self) -> None:
        """authenticatedName follows protocol wrappers down to the connection."""
        proto, transport, challenge = self.connect()
        proto.dataReceived(responseFor(ALICE, challenge))
        wrapper = types.SimpleNamespace(
            transport=types.SimpleNamespace(transport=transport)
        )
        self.assertEqual(authenticatedName(wrapper), "alice")
        self.assertIsNone(authenticatedName(StringTransport()))


class ParserTests(SynchronousTestCase):
    """
    C{hmac:} endpoint strings: our options, then the wrapped endpoint.
    """

    def test_defaults(self) -> None:
        """keyfile alone: SHA-256, not mutual, 10 s; the rest is the endpoint."""
        path = writeKeys(self)
        endpoint = serverFromString(
            Clock(), f"hmac:keyfile={path}:tcp:0:interface=127.0.0.1:backlog=7"
        )
        assert isinstance(endpoint, HMACServerEndpoint)
        inner: Any = endpoint.wrapped
        self.assertEqual(
            (endpoint.digest, endpoint.mutual, endpoint.timeout, endpoint.keys.path),
            ("sha256", False, 10.0, path),
        )
        self.assertEqual(
            (inner._port, inner._interface, inner._backlog), (0, "127.0.0.1", 7)
        )

    def test_options(self) -> None:
        """digest, mutual and timeout are read, wherever they appear."""
        path = writeKeys(self)
        endpoint: Any = serverFromString(
            Clock(),
            f"hmac:digest=SHA512:keyfile={path}:mutual=yes:tcp:8123:timeout=2.5",
        )
        self.assertEqual(
            (
                endpoint.digest,
                endpoint.mutual,
                endpoint.timeout,
                endpoint.wrapped._port,
            ),
            ("sha512", True, 2.5, 8123),
        )

    def test_errors(self) -> None:
        """Missing key file or endpoint and bad values are ValueErrors."""
        path = writeKeys(self)
        bad = writeKeys(self, b"nokey\n")
        for description, message in [
            ("hmac:tcp:0", "keyfile=PATH"),
            (f"hmac:keyfile={path}", "endpoint to wrap"),
            (f"hmac:keyfile={path}:mutual=maybe:tcp:0", "yes or no"),
            (f"hmac:keyfile={path}:timeout=soon:tcp:0", "seconds"),
            (f"hmac:keyfile={path}:timeout=-1:tcp:0", "positive"),
            (f"hmac:keyfile={path}:digest=crc32:tcp:0", "unknown digest"),
            (f"hmac:keyfile={bad}:tcp:0", "line 1"),
            (f"hmac:keyfile={path}:bogus:0", "bogus"),
        ]:
            with self.assertRaises(ValueError) as e:
                serverFromString(Clock(), description)
            self.assertIn(message, str(e.exception), description)

    def test_outerWrapper(self) -> None:
        """outerWrapper wraps the handshake's factory, not the service's."""
        endpoint: Any = serverFromString(
            MemoryReactor(), f"hmac:keyfile={writeKeys(self)}:tcp:0"
        )
        endpoint.outerWrapper = lambda f: WrappingFactory(f)
        service = CountingFactory()
        endpoint.listen(service)
        [(_, factory, _, _)] = endpoint.wrapped._reactor.tcpServers
        self.assertIsInstance(factory, WrappingFactory)
        self.assertIsInstance(factory.wrappedFactory, HMACFactory)
        self.assertIs(factory.wrappedFactory.wrappedFactory, service)

    def test_legacyDigestWarns(self) -> None:
        """Choosing md5 works but logs a warning."""
        with capturedLogs() as events:
            endpoint: Any = serverFromString(
                Clock(), f"hmac:keyfile={writeKeys(self)}:digest=md5:tcp:0"
            )
        self.assertEqual(endpoint.digest, "md5")
        self.assertEqual(
            [e["digest"] for e in events if e["log_level"] == LogLevel.warn], ["md5"]
        )


class RealSocketTests(TestCase):
    """
    The C{hmac:} endpoint on a real loopback socket, with the Cookbook's client.
    """

    def listen(self, *options: str, protocol: type[Protocol] = Echo) -> Any:
        self.service = CountingFactory(protocol)
        path = writeKeys(self)
        description = ":".join(
            ["hmac", f"keyfile={path}", *options, "tcp:0:interface=127.0.0.1"]
        )
        d = serverFromString(reactor, description).listen(self.service)

        def listening(port: Any) -> int:
            self.addCleanup(port.stopListening)
            return port.getHost().port

        return d.addCallback(listening)

    def connect(self, port: int) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(s.close)
        return s

    async def test_cookbookClient(self) -> None:
        """The Cookbook client authenticates, then talks to the echo service."""
        port = await self.listen()

        def client() -> bytes:
            s = self.connect(port)
            client_authenticate(s, ALICE)
            s.sendall(b"hello")
            return recvExactly(s, 5)

        self.assertEqual(await threads.deferToThread(client), b"hello")
        self.assertEqual(len(self.service.built), 1)

    async def test_wrongKey(self) -> None:
        """A wrong key gets the connection closed; no service protocol is built."""
        port = await self.listen()

        def client() -> bytes:
            s = self.connect(port)
            client_authenticate(s, b"not the key")
            return recvExactly(s, 5)

        self.assertEqual(await threads.deferToThread(client), b"")
        self.assertEqual(self.service.built, [])

    async def test_replay(self) -> None:
        """An answer recorded on one connection fails on the next."""
        port = await self.listen()

        def client() -> tuple[bytes, bytes]:
            first = self.connect(port)
            answer = responseFor(ALICE, recvExactly(first, 32))
            first.sendall(answer + b"one")
            echoed = recvExactly(first, 3)
            second = self.connect(port)
            recvExactly(second, 32)
            second.sendall(answer)
            return echoed, recvExactly(second, 3)

        self.assertEqual(await threads.deferToThread(client), (b"one", b""))
        self.assertEqual(len(self.service.built), 1)

    async def test_mutualClient(self) -> None:
        """A mutual client following the documented recipe verifies the server."""
        port = await self.listen("digest=sha512", "mutual=yes")

        def client() -> tuple[bool, bytes]:
            s = self.connect(port)
            challenge = recvExactly(s, 32)
            mine = os.urandom(32)
            s.sendall(hmac.new(BOB, challenge, hashlib.sha512).digest() + mine)
            proof = recvExactly(s, 64)
            expected = hmac.new(
                BOB, b"netplugins-hmac-server\x00" + mine + challenge, hashlib.sha512
            ).digest()
            s.sendall(b"ping")
            return hmac.compare_digest(proof, expected), recvExactly(s, 4)

        self.assertEqual(await threads.deferToThread(client), (True, b"ping"))


class ServiceLimitsTests(TestCase):
    """
    Through listeningService, the limits act before the hmac: handshake.
    """

    def listen(self, **settings: Any) -> int:
        from netplugins.service import listeningPorts, listeningService

        path = writeKeys(self)
        common = ServiceSettings(
            listen=(f"hmac:keyfile={path}:tcp:0:interface=127.0.0.1",), **settings
        ).common()
        self.service = CountingFactory(Echo)
        parent = listeningService(common, self.service, reactor=reactor)
        parent.startService()
        self.addCleanup(parent.stopService)
        [(_, address, _)] = listeningPorts(parent)
        return int(address.port)

    def connect(self, port: int) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(s.close)
        return s

    async def test_deniedGetsNoChallenge(self) -> None:
        """A denied address is closed before the server sends a challenge."""
        port = self.listen(deny=["127.0.0.0/8"])

        def client() -> bytes:
            return recvExactly(self.connect(port), 32)

        self.assertEqual(await threads.deferToThread(client), b"")
        self.assertEqual(self.service.built, [])

    async def test_perIPCapCountsHandshakes(self) -> None:
        """With one connection per address, a second gets no challenge mid-handshake."""
        port = self.listen(maxConnectionsPerIP=1)

        def client() -> tuple[int, bytes, bytes]:
            first = self.connect(port)
            challenge = recvExactly(first, 32)
            # The first client is mid-handshake: it has not answered yet.
            refused = recvExactly(self.connect(port), 32)
            first.sendall(responseFor(ALICE, challenge) + b"ping")
            return len(challenge), refused, recvExactly(first, 4)

        with capturedLogs() as events:
            result = await threads.deferToThread(client)
        self.assertEqual(result, (32, b"", b"ping"))
        self.assertEqual(len(self.service.built), 1)
        self.assertTrue(
            any("max-connections-per-ip" in str(e.get("reason")) for e in events)
        )
