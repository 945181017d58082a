"""
Tests for L{netplugins.zen} and L{netplugins.tap.zen}.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.session import CLOSE_GRACE
from netplugins.tap.zen import Options, ZenSettings, makeService, zenService
from netplugins.zen import APHORISMS, UNKNOWN, Zen, ZenFactory
from tests.test_echo import Flood, _Recording, bufferedBytes, floodClient, listenSmall


def connect(maxQuestionSize: int = 1024) -> tuple[Zen, StringTransport]:
    """
    A zen protocol connected to a fresh L{StringTransport}.
    """
    factory = ZenFactory(maxQuestionSize)
    factory.reactor = Clock()
    protocol = factory.buildProtocol(None)
    assert isinstance(protocol, Zen)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class ProtocolTests(SynchronousTestCase):
    """
    The chapter 7 protocol: C{?}-terminated questions, C{.}-terminated answers.
    """

    def test_refusedConnectionAbortedAfterGrace(self) -> None:
        """A refused connection still open closeGrace seconds later is aborted."""
        protocol, transport = connect(maxQuestionSize=8)
        protocol.dataReceived(b"x" * 9)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        protocol.factory.reactor.advance(CLOSE_GRACE)
        self.assertTrue(transport.disconnected)

    def test_booksPairs(self) -> None:
        """The book's three questions get the book's three answers, in order."""
        protocol, transport = connect()
        for question in [
            b"Beautiful is better than?",
            b"Explicit is better than?",
            b"Simple is better than?",
        ]:
            protocol.dataReceived(question)
        self.assertEqual(transport.value(), b"Ugly.Implicit.Complex.")

    def test_unknown(self) -> None:
        """An unknown question gets the book's error answer."""
        protocol, transport = connect()
        protocol.dataReceived(b"Ugly is better than?")
        self.assertEqual(transport.value(), b"Error: unknown aphorism.")

    def test_allAnswersEndInDot(self) -> None:
        """Every answer ends in the '.' the book's client reads up to, only there."""
        answers = [*APHORISMS.values(), UNKNOWN]
        self.assertEqual(
            [a.index(b".") for a in answers], [len(a) - 1 for a in answers]
        )

    def test_pipelinedAndWhitespace(self) -> None:
        """Questions in one write, with whitespace between, are answered in order."""
        protocol, transport = connect()
        protocol.dataReceived(
            b"Flat is better than?\r\n  Now is better than?x?\tSparse is better than?"
        )
        self.assertEqual(transport.value(), b"Nested.Never." + UNKNOWN + b"Dense.")

    def test_byteAtATime(self) -> None:
        """A question arriving one byte at a time is answered once, when complete."""
        protocol, transport = connect()
        for byte in b"Beautiful is better than?":
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(transport.value(), b"Ugly.")

    def test_atLimit(self) -> None:
        """A question of exactly the maximum size is answered."""
        protocol, transport = connect(25)
        protocol.dataReceived(b"Beautiful is better than?")
        self.assertEqual(
            (transport.value(), transport.disconnecting), (b"Ugly.", False)
        )

    def test_unfinishedOverLimit(self) -> None:
        """An unfinished question past the limit closes, logging the peer."""
        protocol, transport = connect(24)
        with capturedLogs() as events:
            protocol.dataReceived(b"Beautiful is better than")
            protocol.dataReceived(b" ")
            protocol.dataReceived(b"?")
        self.assertEqual(
            (
                transport.value(),
                transport.disconnecting,
                [formatEvent(e) for e in events],
            ),
            (
                b"",
                True,
                [
                    f"np-zen: closing connection from {transport.getPeer()}: "
                    "question of 25 bytes or more exceeds 24"
                ],
            ),
        )

    def test_completeOverLimit(self) -> None:
        """A complete question over the limit closes after earlier answers."""
        protocol, transport = connect(24)
        with capturedLogs():
            protocol.dataReceived(b"Flat is better than?Beautiful is better than?")
        self.assertEqual(
            (transport.value(), transport.disconnecting), (b"Nested.", True)
        )

    def test_loneKnownQuestionEdges(self) -> None:
        """A read of exactly one known question still obeys limit, pause, buffer."""
        tooLong, tooLongTransport = connect(24)
        with capturedLogs():
            tooLong.dataReceived(b"Beautiful is better than?")
        paused, pausedTransport = connect()
        paused.pauseProducing()
        paused.dataReceived(b"Flat is better than?")
        held = pausedTransport.value()
        paused.resumeProducing()
        split, splitTransport = connect()
        split.dataReceived(b"Flat ")
        split.dataReceived(b"Flat is better than?")
        self.assertEqual(
            (
                tooLongTransport.value(),
                tooLongTransport.disconnecting,
                held,
                pausedTransport.value(),
                splitTransport.value(),
            ),
            (b"", True, b"", b"Nested.", b"Error: unknown aphorism."),
        )

    def test_pausedHoldsAnswers(self) -> None:
        """While paused no question is answered; resuming answers them in order."""
        protocol, transport = connect()
        protocol.pauseProducing()
        protocol.dataReceived(b"Flat is better than?Now is better than?")
        held = (transport.value(), transport.producerState)
        protocol.resumeProducing()
        self.assertEqual(
            (held, transport.value(), transport.producerState),
            ((b"", "paused"), b"Nested.Never.", "producing"),
        )

    def test_pauseMidRead(self) -> None:
        """A pause during one read's answers holds the rest, however many."""
        protocol, transport = connect()
        writes: list[bytes] = []

        def write(data: bytes) -> None:
            writes.append(data)
            if len(writes) == 2:
                protocol.pauseProducing()

        transport.write = write  # type: ignore[method-assign]
        protocol.dataReceived(b"Flat is better than?" * 10_000)
        held = len(writes)
        protocol.resumeProducing()
        self.assertEqual((held, len(writes)), (2, 10_000))


class OptionsTests(SynchronousTestCase):
    """
    C{twistd np-zen}'s options.
    """

    def test_defaults(self) -> None:
        """Without options: 1024-byte questions on the documented port."""
        config = Options()
        config.parseOptions([])
        self.assertEqual(
            (config["max-question-size"], config.defaultListen),
            (1024, ("tcp:1060:interface=127.0.0.1",)),
        )

    def test_maxQuestionSize(self) -> None:
        """--max-question-size takes a positive number."""
        config = Options()
        config.parseOptions(["--max-question-size", "64"])
        self.assertEqual(config["max-question-size"], 64)

    def test_badSize(self) -> None:
        """A non-positive size is a one-line usage error."""
        with self.assertRaises(usage.UsageError) as e:
            Options().parseOptions(["--max-question-size", "0"])
        self.assertEqual(str(e.exception).count("\n"), 0)

    def test_udpRefused(self) -> None:
        """A udp: listener is a usage error: zen speaks TCP only."""
        with self.assertRaises(usage.UsageError) as e:
            Options().parseOptions(["--listen", "udp:1060"])
        self.assertEqual(str(e.exception), "np-zen does not speak UDP: 'udp:1060'")

    def test_help(self) -> None:
        """--help describes the protocol and the default listener."""
        text = str(Options())
        self.assertEqual(
            [s in text for s in ["Beautiful is better than?", "tcp:1060:interface"]],
            [True, True],
        )


class ServiceTests(SynchronousTestCase):
    """
    L{makeService} and L{zenService} listen where told.
    """

    def test_default(self) -> None:
        """By default the service listens on 127.0.0.1:1060."""
        config = Options()
        config.parseOptions([])
        reactor = MemoryReactorClock()
        makeService(config, reactor=reactor).startService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(1060, "127.0.0.1")],
        )

    def test_keywordTwin(self) -> None:
        """zenService takes the shared settings as keywords."""
        reactor = MemoryReactorClock()
        zenService(
            ZenSettings(maxQuestionSize=10, listen=(r"tcp:2060:interface=\:\:1",)),
            reactor=reactor,
        ).startService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(2060, "::1")],
        )


# Foundations of Python Network Programming (3rd ed.), chapter 7: the parts of
# zen_utils.py the client uses, and client.py, as printed in the book.
BOOK_ZEN_UTILS = '''
import argparse, socket, time

aphorisms = {b'Beautiful is better than?': b'Ugly.',
             b'Explicit is better than?': b'Implicit.',
             b'Simple is better than?': b'Complex.'}

def get_answer(aphorism):
    """Return the string response to a particular Zen-of-Python aphorism."""
    time.sleep(0.0)  # increase to simulate an expensive operation
    return aphorisms.get(aphorism, b'Error: unknown aphorism.')

def recv_until(sock, suffix):
    """Receive bytes over socket `sock` until we receive the `suffix`."""
    message = sock.recv(4096)
    if not message:
        raise EOFError('socket closed')
    while not message.endswith(suffix):
        data = sock.recv(4096)
        if not data:
            raise IOError('received {!r} then socket closed'.format(message))
        message += data
    return message
'''

BOOK_CLIENT = """
import argparse, random, socket, zen_utils

def client(address, cause_error=False):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.connect(address)
    aphorisms = list(zen_utils.aphorisms)
    if cause_error:
        sock.sendall(aphorisms[0][:-1])
        return
    for aphorism in random.sample(aphorisms, 3):
        sock.sendall(aphorism)
        print(aphorism, zen_utils.recv_until(sock, b'.'))
    sock.close()

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='Example client')
    parser.add_argument('host', help='IP or hostname')
    parser.add_argument('-e', action='store_true', help='cause an error')
    parser.add_argument('-p', metavar='port', type=int, default=1060,
                        help='TCP port (default 1060)')
    args = parser.parse_args()
    address = (args.host, args.p)
    client(address, args.e)
"""


async def asyncioClient(port: int, questions: list[bytes]) -> list[bytes]:
    """
    Pipeline C{questions} in one write with asyncio streams; read the answers.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(questions))
    await writer.drain()
    answers = [await reader.readuntil(b".") for _ in questions]
    writer.close()
    await writer.wait_closed()
    return answers


class RealSocketTests(TestCase):
    """
    Clients nobody here wrote, over real sockets on 127.0.0.1.
    """

    def listen(self, **kwargs: Any) -> int:
        """
        Start C{zenService} on an ephemeral port; return the port number.
        """
        service = zenService(
            ZenSettings(listen=("tcp:0:interface=127.0.0.1",), **kwargs)
        )
        service.startService()
        self.addCleanup(service.stopService)
        (child,) = service.services
        return child.port.getHost().port  # type: ignore[attr-defined]

    def test_booksClient(self) -> Deferred[None]:
        """The book's client.py, run unmodified, prints the book's three answers."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        for name, source in [
            ("zen_utils.py", BOOK_ZEN_UTILS),
            ("client.py", BOOK_CLIENT),
        ]:
            with open(os.path.join(directory, name), "w") as f:
                f.write(textwrap.dedent(source))
        port = self.listen()
        d = getProcessOutputAndValue(
            sys.executable,
            [os.path.join(directory, "client.py"), "127.0.0.1", "-p", str(port)],
            env=os.environ,
            path=directory,
        )

        def check(result: tuple[bytes, bytes, int]) -> None:
            out, err, code = result
            self.assertEqual(
                (sorted(out.decode().splitlines()), err, code),
                (
                    [
                        "b'Beautiful is better than?' b'Ugly.'",
                        "b'Explicit is better than?' b'Implicit.'",
                        "b'Simple is better than?' b'Complex.'",
                    ],
                    b"",
                    0,
                ),
            )

        return d.addCallback(check)

    def test_asyncioClient(self) -> Deferred[None]:
        """An asyncio client pipelining every question gets answers in order."""
        port = self.listen()
        questions = [*APHORISMS, b"  Ugly is better than?"] * 50
        d = deferToThread(asyncio.run, asyncioClient(port, questions))
        expected = [*APHORISMS.values(), UNKNOWN] * 50
        return d.addCallback(self.assertEqual, expected)

    def test_pipelinedUnread(self) -> Deferred[None]:
        """100k questions sent unread: bounded buffers, then all answers in order."""
        from twisted.internet import reactor

        factory = _Recording(ZenFactory())
        port = listenSmall(self, factory)
        sock = floodClient(port)
        self.addCleanup(sock.close)
        batch = b"Beautiful is better than?" + b"\n?" * 9
        answers = b"Ugly." + UNKNOWN * 9
        payload = batch * 10_000

        def measure() -> int:
            if not factory.built:
                return 0
            protocol = factory.built[0]
            return bufferedBytes(protocol.transport) + len(protocol._buffer)

        flood = Flood(sock, payload, len(answers) * 10_000, measure)

        def check(received: bytes) -> None:
            self.assertEqual(
                (
                    received == answers * 10_000,
                    flood.peak <= 256 * 1024,
                    (flood.sentBeforeStall or 0) < len(payload),
                ),
                (True, True, True),
                f"peak {flood.peak}, stalled after {flood.sentBeforeStall}",
            )

        return flood.start(reactor).addCallback(check)
