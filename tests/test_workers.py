"""
Tests for L{netplugins.workers}: the supervisor's restarts, signals and
drain with a fake process reactor, then real workers from a C{.tac} under
twistd sharing a port with C{SO_REUSEPORT}.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins import reload, workers
from netplugins.workers import (
    WORKER_ENV,
    WorkerPool,
    checkEndpoint,
    supervise,
    workerArgv,
)
from tests.support import freePort, runTwistd


class FakeProcess:
    """
    A spawned process that records the signals it gets.
    """

    def __init__(self, pid: int, env: dict[str, str]):
        self.pid = pid
        self.env = env
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class ProcessClock(Clock):
    """
    A clock that also records spawnProcess calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], FakeProcess]] = []

    def spawnProcess(
        self,
        protocol: Any,
        executable: str,
        args: list[str],
        env: dict[str, str],
        childFDs: Any,
    ) -> FakeProcess:
        process = FakeProcess(1000 + len(self.spawned), env)
        self.spawned.append((protocol, args, process))
        return process


def end(protocol: Any, status: int = 1) -> None:
    """
    Report a worker's end to its protocol.
    """
    reason = ProcessDone(0) if status == 0 else ProcessTerminated(status)
    protocol.processEnded(Failure(reason))


class PoolTests(SynchronousTestCase):
    """
    The supervisor with a fake reactor.
    """

    def setUp(self) -> None:
        self.clock = ProcessClock()
        self.pool = WorkerPool(
            2, ["python", "twistd", "np-echo"], self.clock, env={"PATH": "/bin"}
        )
        self.pool.startService()
        self.addCleanup(lambda: self.pool._unregister and self.pool._unregister())

    def test_startsNumberedWorkers(self) -> None:
        """Each worker gets the command line and its number in the environment."""
        self.assertEqual(
            [(args, p.env) for _, args, p in self.clock.spawned],
            [
                (["python", "twistd", "np-echo"], {"PATH": "/bin", WORKER_ENV: "1"}),
                (["python", "twistd", "np-echo"], {"PATH": "/bin", WORKER_ENV: "2"}),
            ],
        )

    def test_restartWithBackoff(self) -> None:
        """A worker that dies quickly is restarted after 1 s, then 2 s, 4 s."""
        delays: list[float] = []
        for _ in range(3):
            protocol = self.clock.spawned[-1][0] if delays else self.clock.spawned[0][0]
            end(protocol)
            before = len(self.clock.spawned)
            waited = 0.0
            while len(self.clock.spawned) == before:
                self.clock.advance(0.5)
                waited += 0.5
            delays.append(waited)
        self.assertEqual(delays, [1.0, 2.0, 4.0])
        self.assertEqual(self.clock.spawned[-1][2].env[WORKER_ENV], "1")

    def test_stableResetsBackoff(self) -> None:
        """A worker that lived past stableAfter restarts after the first delay again."""
        end(self.clock.spawned[0][0])
        self.clock.advance(1)
        self.clock.advance(120)
        end(self.clock.spawned[-1][0])
        before = len(self.clock.spawned)
        self.clock.advance(1)
        self.assertEqual(len(self.clock.spawned), before + 1)

    def test_sighupForwarded(self) -> None:
        """A reload (SIGHUP) is forwarded to every worker."""
        reload.reloadAll()
        self.assertEqual(
            [p.signals for _, _, p in self.clock.spawned], [["HUP"], ["HUP"]]
        )

    def test_stopDrains(self) -> None:
        """Stopping sends SIGTERM, fires once all workers ended, restarts none."""
        d = self.pool.stopService()
        self.assertEqual(
            [p.signals for _, _, p in self.clock.spawned], [["TERM"], ["TERM"]]
        )
        self.assertNoResult(d)
        end(self.clock.spawned[0][0], 0)
        self.assertNoResult(d)
        end(self.clock.spawned[1][0], 0)
        self.successResultOf(d)
        self.clock.advance(100)
        self.assertEqual(len(self.clock.spawned), 2)

    def test_stopKillsStragglers(self) -> None:
        """A worker still running drainTimeout after SIGTERM gets SIGKILL."""
        self.pool.stopService()
        end(self.clock.spawned[0][0], 0)
        self.clock.advance(30)
        self.assertEqual(
            [p.signals for _, _, p in self.clock.spawned], [["TERM"], ["TERM", "KILL"]]
        )

    def test_pendingRestartCancelled(self) -> None:
        """A restart waiting for its delay is cancelled by stopping."""
        end(self.clock.spawned[0][0])
        self.pool.stopService()
        self.clock.advance(10)
        self.assertEqual(len(self.clock.spawned), 2)

    def test_logsRelayed(self) -> None:
        """A worker's output lines are relayed into the supervisor's log."""
        events: list[Any] = []
        from twisted.logger import globalLogPublisher

        observer: Any = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        protocol = self.clock.spawned[0][0]
        protocol.childDataReceived(1, b"hello\nwor")
        protocol.childDataReceived(1, b"ld\n")
        self.assertEqual(
            [(e["number"], e["line"]) for e in events if "line" in e],
            [(1, "hello"), (1, "world")],
        )


class HelperTests(SynchronousTestCase):
    """
    Command lines, endpoint checks and what supervise returns.
    """

    def test_argvTwistd(self) -> None:
        """A twistd script run by the interpreter is run the same way."""
        # A twistd script run by the interpreter is run the same way, twistd options
        # before the plugin.
        self.assertEqual(
            workerArgv(
                ["/v/bin/twistd", "np-echo", "--workers", "2"],
                ["/v/bin/python", "/v/bin/twistd", "np-echo", "--workers", "2"],
            ),
            [
                "/v/bin/python",
                "/v/bin/twistd",
                "--nodaemon",
                "--pidfile=",
                "--logfile=-",
                "np-echo",
                "--workers",
                "2",
            ],
        )

    def test_argvModule(self) -> None:
        """python -m twisted keeps its -m."""
        self.assertEqual(
            workerArgv(
                ["/x/twisted/__main__.py", "-ny", "a.tac"],
                ["py", "-m", "twisted", "-ny", "a.tac"],
            ),
            [
                "py",
                "-m",
                "twisted",
                "--nodaemon",
                "--pidfile=",
                "--logfile=-",
                "-ny",
                "a.tac",
            ],
        )

    def test_checkEndpoint(self) -> None:
        """unix: and port 0 cannot be shared by workers; fixed ports can."""
        refusals = {}
        for bad in ["unix:/tmp/s", "tcp:0", "tcp:port=0:interface=::1", "udp:0"]:
            refusals[bad] = str(self.assertRaises(ValueError, checkEndpoint, bad))
        self.assertEqual(
            refusals,
            {
                "unix:/tmp/s": "--workers cannot share a unix: listener: 'unix:/tmp/s'",
                "tcp:0": "--workers needs a fixed port, not 0: 'tcp:0'",
                "tcp:port=0:interface=::1": "--workers needs a fixed port, not 0: "
                "'tcp:port=0:interface=::1'",
                "udp:0": "--workers needs a fixed port, not 0: 'udp:0'",
            },
        )
        for good in [
            "tcp:8000",
            "tcp6:port=8000",
            "udp:9999",
            "systemd:domain=INET:index=0",
        ]:
            checkEndpoint(good)

    def test_oneWorker(self) -> None:
        """With one worker the service itself runs, no supervisor."""
        service = Service()
        self.assertIs(supervise(service, 1, reactor=ProcessClock()), service)

    def test_onePoolPerProcess(self) -> None:
        """A second supervised service in the same process adds no second pool."""
        # A second supervised service in the same process adds no second pool (every
        # worker runs the whole program).
        self.patch(workers, "_pools", [])
        first = supervise(Service(), 2, reactor=ProcessClock(), argv=["twistd"])
        second = supervise(Service(), 3, reactor=ProcessClock(), argv=["twistd"])
        assert isinstance(first, MultiService) and isinstance(second, MultiService)
        self.assertEqual((len(list(first)), len(list(second))), (1, 0))

    def test_insideWorker(self) -> None:
        """Inside a worker, supervise runs the service and a watch on the supervisor."""
        self.patch(os, "environ", {WORKER_ENV: "2"})
        service = Service()
        parent = supervise(service, 2, reactor=ProcessClock())
        assert isinstance(parent, MultiService)
        self.assertEqual(next(iter(parent)), service)
        self.assertEqual(workers.workerNumber(), 2)
        multi = MultiService()
        self.assertIs(supervise(multi, 2, reactor=ProcessClock()), multi)
        self.assertIsInstance(list(multi)[-1], workers._WorkerService)


TAC = """
import os
from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import reactor, task
from twisted.internet.protocol import Factory, Protocol
from netplugins.reload import onReload
from netplugins.transport import fastServerFromString
from netplugins.workers import isWorker, supervise

class Pid(Protocol):
    def connectionMade(self):
        self.transport.write(str(os.getpid()).encode())
        self.transport.loseConnection()

def reloaded():
    open(os.path.join({dir!r}, "hup-%d" % os.getpid()), "w").close()

if isWorker():
    onReload(reloaded)
endpoint = fastServerFromString(reactor, "tcp:{port}:interface=127.0.0.1",
                                reusePort=isWorker())
listening = StreamServerEndpointService(endpoint, Factory.forProtocol(Pid))
application = service.Application("workers test")
supervise(listening, 2, restartDelay=0.2).setServiceParent(application)

class SlowStop(service.Service):
    # A worker's shutdown takes a while, as one draining connections does.
    def stopService(self):
        return task.deferLater(reactor, 0.5, lambda: None)

if isWorker():
    SlowStop().setServiceParent(application)
"""


def pidsSeen(port: int, want: set[int] | None = None, seconds: float = 30) -> set[int]:
    """
    Connect repeatedly until two pids outside C{want} answered, or for
    C{seconds}; return every pid that answered.
    """
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                data = s.recv(100)
        except OSError:
            time.sleep(0.1)
            continue
        if data:
            seen.add(int(data))
        if len(seen - (want or set())) >= 2:
            break
    return seen


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class RealWorkersTests(TestCase):
    """
    A .tac under twistd: two workers on one port.
    """

    def startPool(self) -> tuple[str, int, Any]:
        """
        Run L{TAC} under twistd: its directory, its port, the supervisor.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        port = freePort()
        tac = os.path.join(directory, "w.tac")
        with open(tac, "w") as f:
            f.write(TAC.format(dir=directory, port=port))
        return directory, port, runTwistd(self, "-y", tac, cwd=directory)

    def test_workers(self) -> Any:
        """Workers share the port, are replaced, get SIGHUP and stop on SIGTERM."""
        # Two worker processes share the port; a killed worker is replaced; SIGHUP
        # reaches every worker; SIGTERM stops them all.
        directory, port, supervisor = self.startPool()

        def scenario() -> tuple[set[int], set[int], set[str], int | None, list[int]]:
            first = pidsSeen(port)
            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            second = pidsSeen(port, want={victim})
            os.kill(supervisor.pid, signal.SIGHUP)
            deadline = time.monotonic() + 20
            hups: set[str] = set()
            while time.monotonic() < deadline and len(hups) < 2:
                hups = {n for n in os.listdir(directory) if n.startswith("hup-")}
                time.sleep(0.1)
            os.kill(supervisor.pid, signal.SIGTERM)
            status = supervisor.wait(timeout=30)
            return first, second, hups, status, [p for p in second if alive(p)]

        def check(
            result: tuple[set[int], set[int], set[str], int | None, list[int]],
        ) -> None:
            first, second, hups, status, left = result
            self.assertEqual(len(first), 2, first)
            self.assertNotIn(supervisor.pid, first | second)
            self.assertEqual(len(second - {min(first)}), 2, (first, second))
            self.assertEqual(hups, {f"hup-{p}" for p in second - {min(first)}})
            # twistd ends by re-raising the signal that stopped it.
            self.assertEqual((status, left), (-signal.SIGTERM, []))
            # The supervisor's own lines (a worker's are "worker N: ...").
            stopped = re.findall(
                r"^\S+ \[[^]]+\] (worker \d+ stopped)$",
                supervisor.output(),
                re.MULTILINE,
            )
            self.assertEqual(sorted(stopped), ["worker 1 stopped", "worker 2 stopped"])

        return deferToThread(scenario).addCallback(check)

    def test_everyProcessSignalled(self) -> Any:
        """SIGTERM to the supervisor and its workers at once (systemd): a clean stop."""
        _, port, supervisor = self.startPool()

        def scenario() -> tuple[int | None, list[int]]:
            workers = pidsSeen(port)
            # systemd's KillMode=control-group: every process of the unit;
            # the supervisor's own SIGTERMs reach workers that are stopping.
            for pid in workers:
                os.kill(pid, signal.SIGTERM)
            time.sleep(0.2)
            os.kill(supervisor.pid, signal.SIGTERM)
            status = supervisor.wait(timeout=30)
            return status, [p for p in workers if alive(p)]

        def check(result: tuple[int | None, list[int]]) -> None:
            status, left = result
            self.assertEqual((status, left), (-signal.SIGTERM, []))
            output = supervisor.output()
            for bad in ("Traceback", "ReactorNotRunning", "Unhandled"):
                self.assertNotIn(bad, output)

        return deferToThread(scenario).addCallback(check)
