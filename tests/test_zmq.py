"""
Tests for L{netplugins.zmq} and L{netplugins.tap.zmq}: pyzmq clients and
workers (REQ, REP, DEALER, PUB, SUB, PUSH, PULL) through each device.
"""

from __future__ import annotations

import os
import stat
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import zmq
import zmq.auth
from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from netplugins.cred.htpasswd import hashPassword
from netplugins.tap.zmq import Options, ZMQSettings, zmqService
from netplugins.zmq import device as device_module
from netplugins.zmq.device import Device
from netplugins.zmq.security import PUBLIC_KEY_FILE, SECRET_KEY_FILE, serverKeys
from tests.support import runTwistd

ANY_PORT = "tcp://127.0.0.1:*"
#: How long a client waits for a message before the test fails (ms).
PATIENCE = 10000


class OptionsTests(SynchronousTestCase):
    """
    C{twistd np-zmq}'s command line.
    """

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_options(self) -> None:
        """
        The device, endpoints, high-water mark and CURVE reach the settings.
        """
        options = self.parse(
            "--device",
            "streamer",
            "--frontend",
            "tcp://127.0.0.1:7001",
            "--backend",
            "ipc:///tmp/np-zmq-backend",
            "--hwm",
            "50",
            "--curve",
            "--state-dir",
            "st",
        )
        self.assertEqual(
            options.settings,
            ZMQSettings(
                device="streamer",
                frontend="tcp://127.0.0.1:7001",
                backend="ipc:///tmp/np-zmq-backend",
                hwm=50,
                curve=True,
                stateDir="st",
            ),
        )

    def test_refused(self) -> None:
        """
        Options that do not apply to a ZeroMQ device, bad endpoints and
        cleartext passwords are one-line usage errors.
        """
        for argv, message in [
            (["--listen", "tcp:7000"], "--listen does not apply"),
            (["--max-connections", "5"], "--max-connections does not apply"),
            (["--idle-timeout", "5"], "--idle-timeout does not apply"),
            (["--workers", "2"], "np-zmq is one process"),
            (["--frontend", "tcp:7000"], "expected a ZeroMQ endpoint"),
            (["--device", "broker"], "--device must be one of"),
            (["--hwm", "0"], "positive"),
            (["--auth", "memory:a:b"], "sends passwords in the clear"),
            (["--auth", "memory:a:b", "--curve"], "PLAIN passwords cannot"),
            (
                ["--frontend", "tcp://127.0.0.1:1", "--backend", "tcp://127.0.0.1:1"],
                "must differ",
            ),
        ]:
            with self.subTest(argv=argv):
                with self.assertRaises(usage.UsageError) as caught:
                    self.parse(*argv)
                self.assertIn(message, str(caught.exception))

    def test_curveHelp(self) -> None:
        """
        C{--help} names the public key's file.
        """
        self.assertIn(PUBLIC_KEY_FILE, Options().getUsage(width=10000))


class KeyTests(SynchronousTestCase):
    """
    The server's CURVE key pair in the state directory.
    """

    def test_generatedOnce(self) -> None:
        """
        The key pair is made once, the secret file 0600, both readable by
        pyzmq's C{zmq.auth.load_certificate}; later calls reuse it.
        """
        stateDir = self.mktemp()
        public, secret, path = serverKeys(stateDir)
        self.assertEqual(path, os.path.join(stateDir, PUBLIC_KEY_FILE))
        self.assertEqual(zmq.auth.load_certificate(path), (public, None))
        secretPath = os.path.join(stateDir, SECRET_KEY_FILE)
        self.assertEqual(zmq.auth.load_certificate(secretPath), (public, secret))
        self.assertEqual(stat.S_IMODE(os.stat(secretPath).st_mode), 0o600)
        self.assertEqual(zmq.curve_public(secret), public)
        self.assertEqual(serverKeys(stateDir), (public, secret, path))


@implementer(ILogObserver)
class LogCapture:
    """
    Log events, formatted, while a test runs.
    """

    def __init__(self, testCase: TestCase) -> None:
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self)
        testCase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: LogEvent) -> None:
        self.lines.append(formatEvent(event))

    def waitFor(self, text: str, timeout: float = 10.0) -> Deferred[str]:
        """
        The first line containing C{text}, once logged.
        """
        from twisted.internet import reactor, task

        deadline = time.monotonic() + timeout

        def check() -> Any:
            for line in self.lines:
                if text in line:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"never logged {text!r}: {self.lines}")
            return task.deferLater(reactor, 0.05, check)

        return task.deferLater(reactor, 0, check)


class DeviceTestCase(TestCase):
    """
    A device in this process, on the trial reactor; its clients in threads
    with their own pyzmq context.
    """

    def device(self, **kwargs: Any) -> Device:
        settings = ZMQSettings(
            frontend=ANY_PORT, backend=ANY_PORT, stateDir=self.mktemp(), **kwargs
        )
        service = zmqService(settings)
        service.startService()
        self.addCleanup(service.stopService)
        device = service.services[0]
        assert isinstance(device, Device)
        return device

    def inThread(self, f: Callable[[zmq.Context[Any]], Any]) -> Deferred[Any]:
        """
        Run C{f(context)} in a thread with a fresh context, destroyed after.
        """

        def run() -> Any:
            context = zmq.Context()
            try:
                return f(context)
            finally:
                context.destroy(linger=0)

        return deferToThread(run)


def socket(
    context: zmq.Context[Any], kind: int, endpoint: str, **options: Any
) -> zmq.Socket[Any]:
    """
    A connected socket that gives up after L{PATIENCE}.
    """
    s = context.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, options.pop("timeout", PATIENCE))
    for name, value in options.items():
        setattr(s, name, value)
    s.connect(endpoint)
    return s


class QueueTests(DeviceTestCase):
    """
    The queue device: ROUTER frontend, DEALER backend.
    """

    @inlineCallbacks
    def test_reqRep(self) -> Any:
        """
        REQ clients get the answers of REP workers through the device.
        """
        device = self.device(device="queue")

        def run(context: zmq.Context[Any]) -> list[bytes]:
            workers = [
                socket(context, zmq.REP, device.backendEndpoint or "") for _ in range(2)
            ]
            clients = [
                socket(context, zmq.REQ, device.frontendEndpoint or "")
                for _ in range(3)
            ]
            poller = zmq.Poller()
            for worker in workers:
                poller.register(worker, zmq.POLLIN)
            answers = []
            for number, client in enumerate(clients):
                client.send(b"word %d" % number)
                for worker, _ in poller.poll(PATIENCE):
                    worker.send(worker.recv().upper())
                answers.append(client.recv())
            return answers

        answers = yield self.inThread(run)
        self.assertEqual(answers, [b"WORD 0", b"WORD 1", b"WORD 2"])

    @inlineCallbacks
    def test_dealerEnvelopes(self) -> Any:
        """
        A DEALER client's multipart request reaches a DEALER worker behind
        the ROUTER's envelope, and the worker's reply comes back whole.
        """
        device = self.device(device="queue")

        def run(context: zmq.Context[Any]) -> tuple[list[bytes], list[bytes]]:
            worker = socket(context, zmq.DEALER, device.backendEndpoint or "")
            client = socket(context, zmq.DEALER, device.frontendEndpoint or "")
            client.send_multipart([b"", b"part one", b"part two"])
            request = worker.recv_multipart()
            worker.send_multipart([*request[:2], b"reply", b"in two"])
            return request, client.recv_multipart()

        request, reply = yield self.inThread(run)
        self.assertEqual(len(request), 4)
        self.assertEqual(request[1:], [b"", b"part one", b"part two"])
        self.assertEqual(reply, [b"", b"reply", b"in two"])

    @inlineCallbacks
    def test_burstBothWays(self) -> Any:
        """
        20 000 requests from a DEALER client, far over the high-water mark,
        all come back through a DEALER worker, in order.
        """
        device = self.device(device="queue", hwm=10)
        count = 20_000

        def run(context: zmq.Context[Any]) -> int:
            worker = socket(context, zmq.DEALER, device.backendEndpoint or "")
            client = socket(context, zmq.DEALER, device.frontendEndpoint or "")
            poller = zmq.Poller()
            poller.register(worker, zmq.POLLIN)
            poller.register(client, zmq.POLLIN)
            sent = received = 0
            while received < count:
                while sent < count:
                    try:
                        client.send_multipart([b"", b"%d" % sent], zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    sent += 1
                events = dict(poller.poll(PATIENCE))
                if not events:
                    raise AssertionError(f"stalled after {received} replies")
                while True:
                    try:
                        worker.send_multipart(worker.recv_multipart(zmq.NOBLOCK))
                    except zmq.Again:
                        break
                while True:
                    try:
                        reply = client.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if reply != [b"", b"%d" % received]:
                        raise AssertionError(f"reply {received} was {reply}")
                    received += 1
            return received

        self.assertEqual((yield self.inThread(run)), count)

    @inlineCallbacks
    def test_clientNeverReads(self) -> Any:
        """
        A DEALER client that sends requests and never reads its replies
        holds up the other clients' replies for at most HOLD_TIMEOUT; its
        own are then dropped, and that is logged.
        """
        self.patch(device_module, "HOLD_TIMEOUT", 0.5)
        log = LogCapture(self)
        device = self.device(device="queue", hwm=2)
        payload = b"x" * 65536

        def run(context: zmq.Context[Any]) -> bytes:
            worker = socket(context, zmq.DEALER, device.backendEndpoint or "")
            hostile = socket(
                context,
                zmq.DEALER,
                device.frontendEndpoint or "",
                rcvhwm=1,
                rcvbuf=4096,
            )
            for _ in range(300):
                hostile.send_multipart([b"", payload])
            # Every reply to the hostile client is on its way before the
            # polite client asks, so the polite reply queues behind them.
            for _ in range(300):
                worker.send_multipart(worker.recv_multipart())
            polite = socket(context, zmq.REQ, device.frontendEndpoint or "")
            polite.send(b"ping")
            deadline = time.monotonic() + PATIENCE / 1000
            while time.monotonic() < deadline:
                if polite.poll(10):
                    return bytes(polite.recv())
                while worker.poll(0):
                    worker.send_multipart(worker.recv_multipart())
            raise AssertionError("the polite client got no reply")

        reply = yield self.inThread(run)
        self.assertEqual(reply, b"ping")
        yield log.waitFor("has not read its replies for 0.5 s")
        self.assertGreater(device.routes[1].dropped, 0)


class _SignallingSocket:
    """
    A stand-in for a ZeroMQ socket with nothing to receive yet, whose
    descriptor's signal is consumed by each read of C{zmq.EVENTS}; a
    message can be made to arrive just after one of those reads.
    """

    def __init__(self) -> None:
        self.waiting = False
        self.signalled = False
        self.arriveAfterRead: int | None = None
        self.reads = 0

    def recv(self, flags: int, copy: bool) -> Any:
        raise zmq.Again()

    def getsockopt(self, option: int) -> int:
        assert option == zmq.EVENTS
        self.reads += 1
        result = zmq.POLLIN if self.waiting else 0
        self.signalled = False
        if self.reads == self.arriveAfterRead:
            self.waiting = self.signalled = True
        return result


class EdgeTriggerTests(SynchronousTestCase):
    """
    The device's last look at its sockets before it sleeps.
    """

    def test_arrivalDuringTheLastLook(self) -> None:
        """
        A message that reaches a socket while the device reads its sockets'
        events before sleeping leaves that socket's descriptor signalled.
        """
        front, back = _SignallingSocket(), _SignallingSocket()
        front.arriveAfterRead = 1
        device = Device("forwarder", "inproc://front", "inproc://back")
        clock = task.Clock()
        device.routes = [
            device_module._Route("forward", front, back, clock),  # type: ignore[arg-type]
            device_module._Route("back", back, front, clock),  # type: ignore[arg-type]
        ]
        self.assertFalse(device._turn(10))
        # Asleep with a message waiting: the descriptor must still wake it.
        self.assertTrue(front.waiting)
        self.assertTrue(front.signalled)


class ForwarderTests(DeviceTestCase):
    """
    The forwarder device: XSUB frontend, XPUB backend.
    """

    @inlineCallbacks
    def test_pubSub(self) -> Any:
        """
        A SUB subscriber gets what a PUB publisher sends under its
        subscription, and nothing else.
        """
        device = self.device(device="forwarder")

        def run(context: zmq.Context[Any]) -> list[bytes]:
            publisher = socket(context, zmq.PUB, device.frontendEndpoint or "")
            subscriber = socket(
                context, zmq.SUB, device.backendEndpoint or "", timeout=100
            )
            subscriber.setsockopt(zmq.SUBSCRIBE, b"news")
            got: list[bytes] = []
            deadline = time.monotonic() + PATIENCE / 1000
            # PUB/SUB drops until the subscription has travelled: publish
            # until something arrives.
            while len(got) < 3 and time.monotonic() < deadline:
                publisher.send_multipart([b"sports", b"0:0"])
                publisher.send_multipart([b"news", b"%d" % len(got)])
                try:
                    got.append(b" ".join(subscriber.recv_multipart()))
                except zmq.Again:
                    pass
            return got

        got = yield self.inThread(run)
        self.assertEqual(len(got), 3)
        self.assertTrue(all(g.startswith(b"news ") for g in got), got)


class StreamerTests(DeviceTestCase):
    """
    The streamer device: PULL frontend, PUSH backend.
    """

    @inlineCallbacks
    def test_pushPull(self) -> Any:
        """
        Multipart messages from PUSH producers reach a PULL consumer whole.
        """
        device = self.device(device="streamer")

        def run(context: zmq.Context[Any]) -> list[list[bytes]]:
            consumer = socket(context, zmq.PULL, device.backendEndpoint or "")
            producers = [
                socket(context, zmq.PUSH, device.frontendEndpoint or "")
                for _ in range(2)
            ]
            for number, producer in enumerate(producers):
                producer.send_multipart([b"from", b"%d" % number])
            return sorted(consumer.recv_multipart() for _ in producers)

        got = yield self.inThread(run)
        self.assertEqual(got, [[b"from", b"0"], [b"from", b"1"]])

    @inlineCallbacks
    def test_mixedPartsAtHighWaterMark(self) -> Any:
        """
        One-part and three-part messages, far over the high-water mark,
        arrive whole and in order.
        """
        device = self.device(device="streamer", hwm=10)
        count = 20_000

        def message(number: int) -> list[bytes]:
            if number % 3:
                return [b"%d" % number]
            return [b"%d" % number, b"", b"part three"]

        def run(context: zmq.Context[Any]) -> int:
            producer = socket(
                context,
                zmq.PUSH,
                device.frontendEndpoint or "",
                sndhwm=10,
                sndtimeo=PATIENCE,
            )
            consumer = socket(
                context, zmq.PULL, device.backendEndpoint or "", rcvhwm=10
            )
            sent = received = 0
            while received < count:
                if sent == received:
                    # Nothing in flight (not connected yet): wait for room.
                    producer.send_multipart(message(sent))
                    sent += 1
                while sent < count:
                    try:
                        producer.send_multipart(message(sent), zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    sent += 1
                got = consumer.recv_multipart()
                if got != message(received):
                    raise AssertionError(f"message {received} was {got}")
                received += 1
            return received

        self.assertEqual((yield self.inThread(run)), count)
        self.assertEqual(device.routes[0].moved, count)

    @inlineCallbacks
    def test_maxMessageSize(self) -> Any:
        """
        A frame over --max-message-size never reaches the consumer; other
        producers go on being served.
        """
        device = self.device(device="streamer", maxMessageSize=1024)

        def run(context: zmq.Context[Any]) -> list[bytes]:
            consumer = socket(context, zmq.PULL, device.backendEndpoint or "")
            big = socket(context, zmq.PUSH, device.frontendEndpoint or "")
            big.send(b"x" * 1025)
            small = socket(context, zmq.PUSH, device.frontendEndpoint or "")
            small.send(b"y" * 1024)
            got = [consumer.recv()]
            consumer.setsockopt(zmq.RCVTIMEO, 500)
            try:
                got.append(consumer.recv())
            except zmq.Again:
                pass
            return got

        self.assertEqual((yield self.inThread(run)), [b"y" * 1024])

    @inlineCallbacks
    def test_millionAtHighWaterMark(self) -> Any:
        """
        1 000 000 small messages pushed in bursts by a process whose
        consumer pauses between bursts, so the device works at its
        high-water mark, all arrive, in order: no wake-up was lost.
        """
        device = self.device(device="streamer", hwm=100)
        count = 1_000_000
        script = textwrap.dedent(
            """
            import struct, sys, threading, time, zmq
            front, back, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
            context = zmq.Context()
            push = context.socket(zmq.PUSH)
            push.sndhwm = 100
            push.connect(front)
            pull = context.socket(zmq.PULL)
            pull.rcvhwm = 100
            pull.rcvtimeo = 10000
            pull.connect(back)
            def produce():
                for start in range(0, count, 50000):
                    for n in range(start, min(start + 50000, count)):
                        push.send(struct.pack("!I", n))
            threading.Thread(target=produce, daemon=True).start()
            for expected in range(count):
                if expected % 100000 == 0:
                    time.sleep(0.05)
                try:
                    got = struct.unpack("!I", pull.recv())[0]
                except zmq.Again:
                    sys.exit(f"stalled: {expected} of {count} arrived")
                if got != expected:
                    sys.exit(f"message {expected} was {got}")
            print(count)
            """
        )
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            [
                "-c",
                script,
                device.frontendEndpoint or "",
                device.backendEndpoint or "",
                str(count),
            ],
            env=os.environ,
        )
        self.assertEqual((code, out.strip(), err), (0, b"%d" % count, b""))
        self.assertEqual(device.routes[0].moved, count)


def requestReply(
    context: zmq.Context[Any],
    device: Device,
    client: dict[str, Any],
    worker: dict[str, Any],
    timeout: int = PATIENCE,
) -> bytes | None:
    """
    One request from a REQ client with socket options C{client} to a REP
    worker with C{worker}, through C{device}; the reply, or C{None} if none
    came within C{timeout} ms.
    """
    rep = socket(context, zmq.REP, device.backendEndpoint or "", **worker)
    req = socket(
        context, zmq.REQ, device.frontendEndpoint or "", timeout=timeout, **client
    )
    req.send(b"ping")
    if not rep.poll(timeout):
        return None
    rep.send(rep.recv() + b" pong")
    return bytes(req.recv())


class CurveTests(DeviceTestCase):
    """
    CURVE encryption with the server key pair in the state directory.
    """

    def keys(self, serverKey: bytes) -> dict[str, Any]:
        public, secret = zmq.curve_keypair()
        return {
            "curve_serverkey": serverKey,
            "curve_publickey": public,
            "curve_secretkey": secret,
        }

    @inlineCallbacks
    def test_rightKey(self) -> Any:
        """
        Clients and workers that know the server's public key talk
        through the device; the client's key is logged.
        """
        log = LogCapture(self)
        device = self.device(device="queue", curve=True)
        public = device.security.curvePublicKey or b""
        reply = yield self.inThread(
            lambda c: requestReply(c, device, self.keys(public), self.keys(public))
        )
        self.assertEqual(reply, b"ping pong")
        yield log.waitFor("ZAP: CURVE client")

    @inlineCallbacks
    def test_wrongKey(self) -> Any:
        """
        A client with the wrong server key gets nothing through, and the
        refused handshake is logged.
        """
        log = LogCapture(self)
        device = self.device(device="queue", curve=True)
        public = device.security.curvePublicKey or b""
        wrong = zmq.curve_keypair()[0]
        reply = yield self.inThread(
            lambda c: requestReply(
                c, device, self.keys(wrong), self.keys(public), timeout=1000
            )
        )
        self.assertIsNone(reply)
        line = yield log.waitFor("handshake failed")
        self.assertIn(device.frontendEndpoint or "", line)

    @inlineCallbacks
    def test_noCurve(self) -> Any:
        """
        A client without CURVE is refused.
        """
        device = self.device(device="queue", curve=True)
        public = device.security.curvePublicKey or b""
        reply = yield self.inThread(
            lambda c: requestReply(c, device, {}, self.keys(public), timeout=1000)
        )
        self.assertIsNone(reply)


class PlainTests(DeviceTestCase):
    """
    ZAP PLAIN logins checked by the shared checkers (an htpasswd file).
    """

    def plainDevice(self) -> Device:
        htpasswd = self.mktemp()
        with open(htpasswd, "w") as f:
            f.write(f"alice:{hashPassword('alice-pw', cost=4)}\n")
            f.write(f"worker:{hashPassword('worker-pw', cost=4)}\n")
        return self.device(
            device="queue", auth=(f"htpasswd:{htpasswd}",), allowPlaintextAuth=True
        )

    @inlineCallbacks
    def test_rightPassword(self) -> Any:
        """
        A client and a worker with their passwords talk through the device.
        """
        log = LogCapture(self)
        device = self.plainDevice()
        reply = yield self.inThread(
            lambda c: requestReply(
                c,
                device,
                {"plain_username": b"alice", "plain_password": b"alice-pw"},
                {"plain_username": b"worker", "plain_password": b"worker-pw"},
            )
        )
        self.assertEqual(reply, b"ping pong")
        yield log.waitFor("PLAIN login alice from 127.0.0.1")

    @inlineCallbacks
    def test_wrongPassword(self) -> Any:
        """
        A wrong password is refused and logged with the user and address.
        """
        log = LogCapture(self)
        device = self.plainDevice()
        reply = yield self.inThread(
            lambda c: requestReply(
                c,
                device,
                {"plain_username": b"alice", "plain_password": b"guess"},
                {"plain_username": b"worker", "plain_password": b"worker-pw"},
                timeout=1500,
            )
        )
        self.assertIsNone(reply)
        yield log.waitFor("refused PLAIN login alice from 127.0.0.1")


class TwistdTests(TestCase):
    """
    C{twistd np-zmq} as a process.
    """

    @inlineCallbacks
    def test_curveQueue(self) -> Any:
        """
        twistd np-zmq --curve logs the public key's file and serves REQ
        clients and REP workers that use it.
        """
        from tests.support import freePort

        stateDir = os.path.abspath(self.mktemp())
        front, back = (f"tcp://127.0.0.1:{freePort()}" for _ in range(2))
        process = runTwistd(
            self,
            "np-zmq",
            "--curve",
            "--state-dir",
            stateDir,
            "--frontend",
            front,
            "--backend",
            back,
        )
        deadline = time.monotonic() + 30
        while "device: frontend ROUTER bound" not in process.output():
            if process.poll() is not None or time.monotonic() > deadline:
                self.fail(process.output())
            yield deferLater(0.1)
        keyFile = os.path.join(stateDir, PUBLIC_KEY_FILE)
        self.assertIn(f"(file: {keyFile})", process.output())
        public, _ = zmq.auth.load_certificate(keyFile)

        def run(context: zmq.Context[Any]) -> bytes:
            rep = socket(context, zmq.REP, back, **CurveTests.keys(self, public))  # type: ignore[arg-type]
            req = socket(context, zmq.REQ, front, **CurveTests.keys(self, public))  # type: ignore[arg-type]
            req.send(b"ping")
            rep.send(rep.recv() + b" pong")
            return bytes(req.recv())

        reply = yield DeviceTestCase.inThread(self, run)  # type: ignore[arg-type]
        self.assertEqual(reply, b"ping pong")


def deferLater(seconds: float) -> Deferred[None]:
    from twisted.internet import reactor, task

    return task.deferLater(reactor, seconds, lambda: None)
