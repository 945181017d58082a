"""
Tests for L{netplugins.session}: the reading gate, the closes that end in an
abort, and the timers a connection's loss cancels.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from netplugins.session import COMMAND, OUTPUT, Deadlines, Discipline, closeWithin
from tests.support import WatermarkTransport


class Recorder:
    """
    Counts the pauses and resumes a discipline asks for.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


def discipline(
    transport: WatermarkTransport | None = None, grace: float = 10.0
) -> tuple[Discipline, WatermarkTransport, Recorder, Clock]:
    transport = transport or WatermarkTransport(watermark=10)
    recorder = Recorder()
    clock = Clock()
    gate = Discipline(
        transport, clock, pause=recorder.pause, resume=recorder.resume, grace=grace
    )
    return gate, transport, recorder, clock


class GateTests(SynchronousTestCase):
    """
    Reading stops while any reason holds it and resumes when none does.
    """

    def test_registeredAsProducer(self) -> None:
        """The discipline is its transport's streaming producer."""
        gate, transport, _, _ = discipline()
        self.assertEqual((transport.producer, transport.streaming), (gate, True))

    def test_reasonsDoNotResumeEachOther(self) -> None:
        """Output draining does not resume a session a command holds."""
        gate, transport, recorder, _ = discipline()
        gate.hold(COMMAND)
        transport.write(b"x" * 11)
        self.assertEqual(gate.holds, {COMMAND, OUTPUT})
        transport.drain()
        self.assertEqual((gate.holds, recorder.calls), ({COMMAND}, ["pause"]))
        gate.release(COMMAND)
        self.assertEqual((gate.reading, recorder.calls), (True, ["pause", "resume"]))

    def test_holdTwice(self) -> None:
        """Holding for a reason already held pauses once."""
        gate, _, recorder, _ = discipline()
        gate.hold(COMMAND)
        gate.hold(COMMAND)
        gate.release(COMMAND)
        gate.release(COMMAND)
        self.assertEqual(recorder.calls, ["pause", "resume"])

    def test_tlsPauseBeforeHandshakeIgnored(self) -> None:
        """A TLS transport's pause for pre-handshake output holds nothing."""
        transport = WatermarkTransport(watermark=10)
        transport._handshakeDone = False  # type: ignore[attr-defined]
        gate, _, recorder, _ = discipline(transport)
        transport.write(b"greeting" * 4)
        self.assertEqual((gate.holds, recorder.calls), (set(), []))

    def test_whenWritable(self) -> None:
        """whenWritable fires at once, or when the output drains."""
        gate, transport, _, _ = discipline()
        self.assertIsNone(self.successResultOf(gate.whenWritable()))
        transport.write(b"x" * 11)
        waiting = gate.whenWritable()
        self.assertNoResult(waiting)
        transport.drain()
        self.assertIsNone(self.successResultOf(waiting))

    def test_whenWritableFiresOnLoss(self) -> None:
        """A command waiting to write is let go when the connection is lost."""
        gate, transport, _, _ = discipline()
        transport.write(b"x" * 11)
        waiting = gate.whenWritable()
        gate.lost()
        self.assertIsNone(self.successResultOf(waiting))


class CloseTests(SynchronousTestCase):
    """
    A close is polite, then an abort.
    """

    def test_politeThenAbort(self) -> None:
        """A close not finished within the grace is aborted."""
        gate, transport, _, clock = discipline(grace=3)
        gate.close("test")
        self.assertEqual((transport.disconnecting, transport.aborted), (True, False))
        self.assertIsNone(transport.producer)
        clock.advance(3)
        self.assertTrue(transport.aborted)

    def test_backedUpAbortsAtOnce(self) -> None:
        """A close while the output is backed up aborts at once."""
        gate, transport, _, _ = discipline()
        transport.write(b"x" * 11)
        gate.close("test")
        self.assertTrue(transport.aborted)

    def test_lossCancelsTimers(self) -> None:
        """The loss of the connection cancels its abort and its own timers."""
        gate, _, _, clock = discipline()
        fired: list[int] = []
        gate.callLater(5, fired.append, 1)
        gate.close("test")
        gate.lost()
        clock.advance(60)
        self.assertEqual((fired, clock.getDelayedCalls()), ([], []))

    def test_noResumeAfterClose(self) -> None:
        """Releasing a hold after the close does not resume reading."""
        gate, _, recorder, _ = discipline()
        gate.hold(COMMAND)
        gate.close("test")
        gate.release(COMMAND)
        self.assertEqual(recorder.calls, ["pause"])

    def test_closeWithin(self) -> None:
        """closeWithin aborts a transport still open after the grace only."""
        clock = Clock()
        lingering, gone = WatermarkTransport(), WatermarkTransport()
        closeWithin(lingering, 2, clock)
        closeWithin(gone, 2, clock)
        gone.disconnected = True
        clock.advance(2)
        self.assertEqual((lingering.aborted, gone.aborted), (True, False))


class DeadlinesTests(SynchronousTestCase):
    """
    L{Deadlines}: named deadlines armed, re-armed, disarmed and cancelled.
    """

    def test_lifecycle(self) -> None:
        """Re-arming starts over, disarming forgets, expiry names the deadline."""
        clock = Clock()
        expired: list[str] = []
        deadlines = Deadlines(clock, expired.append)
        deadlines.arm("idle", 10)
        deadlines.arm("login", 5)
        deadlines.disarm("login")
        clock.advance(8)
        deadlines.arm("idle", 10)
        clock.advance(9)
        armed = ("idle" in deadlines, "login" in deadlines)
        clock.advance(1)
        self.assertEqual(
            (armed, expired, "idle" in deadlines), ((True, False), ["idle"], False)
        )

    def test_cancelAll(self) -> None:
        """cancelAll leaves nothing pending on the clock."""
        clock = Clock()
        deadlines = Deadlines(clock, lambda name: None)
        deadlines.arm("idle", 10)
        deadlines.arm("data", 20)
        deadlines.cancelAll()
        self.assertEqual(clock.getDelayedCalls(), [])
