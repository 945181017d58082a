"""
C{--workers N}: one service in N processes.

The process twistd starts becomes a supervisor: it listens on nothing and
starts N workers, each re-running the same command line (or C{.tac} file) with
C{NETPLUGINS_WORKER} set in its environment.  A worker listens on its own TCP
and UDP sockets with C{SO_REUSEPORT}, so the kernel spreads connections (by
address and port hash) over the workers; one inherited socket shared by all
balanced badly (one process took every connection in 3 of 8 measured runs).

The supervisor:
  - restarts a worker that dies, after a delay that doubles with each quick
    death (1 s, 2 s, 4 s, ... up to a minute) and resets once a worker has
    lived a minute;
  - on SIGTERM (twistd stopping it) sends SIGTERM to every worker and waits
    for each to finish its own graceful stop, killing those still there after
    C{drainTimeout} seconds;
  - on SIGHUP forwards SIGHUP to every worker, so each reloads its
    certificates and password files (L{netplugins.reload});
  - relays each worker's log lines into its own log, tagged with the worker.

A worker stops by itself when its supervisor is gone (its stdin, a pipe from
the supervisor, reaches end of file).

Limits are per worker: C{--max-connections} and C{--max-connections-per-ip}
bound each worker's connections, so N workers accept up to N times as many in
all, and one address's connections may land on any worker; login throttles
count per worker too.  Give a per-worker share where a global bound matters.

Listeners need fixed ports (C{tcp:0} would give each worker its own port), and
C{unix:} listeners cannot be shared by C{SO_REUSEPORT}: see L{checkEndpoint}.

From a C{.tac}, wrap the service:
C{supervise(service, 4).setServiceParent(application)}; every worker runs the
whole C{.tac}, so supervise one service per file.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet import abstract, error, main
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from netplugins.reload import onReload

WORKER_ENV = "NETPLUGINS_WORKER"


def workerNumber() -> int | None:
    """
    This process's worker number (1 to N), or C{None} outside a worker.
    """
    value = os.environ.get(WORKER_ENV)
    return int(value) if value else None


def isWorker() -> bool:
    """
    Whether this process is a worker: its listeners must set C{SO_REUSEPORT}.
    """
    return workerNumber() is not None


def checkEndpoint(description: str) -> None:
    """
    Refuse a listen description that workers cannot share.

    @raise ValueError: for C{unix:} (no C{SO_REUSEPORT} on UNIX sockets) and
        port 0 (each worker would get a port of its own).
    """
    prefix, _, rest = description.partition(":")
    if prefix == "unix":
        raise ValueError(f"--workers cannot share a unix: listener: {description!r}")
    if prefix in ("tcp", "tcp6", "udp"):
        first = rest.split(":", 1)[0]
        port = first.partition("=")[2] if first.startswith("port=") else first
        if port == "0":
            raise ValueError(f"--workers needs a fixed port, not 0: {description!r}")


def workerArgv(
    argv: Sequence[str] | None = None, origArgv: Sequence[str] | None = None
) -> list[str]:
    """
    The command line that starts a worker: this process's own, in the
    foreground, without a pid file, logging to stdout (the supervisor relays
    it).  twistd options go before the plugin name, so they are inserted
    right after the program.
    """
    argv = list(sys.argv if argv is None else argv)
    origArgv = list(getattr(sys, "orig_argv", []) if origArgv is None else origArgv)
    if (
        len(origArgv) >= len(argv)
        and origArgv[len(origArgv) - len(argv) + 1 :] == argv[1:]
    ):
        # "python -m twisted ..." or "python /path/twistd ...": keep how the
        # interpreter was asked to run twistd.
        program = origArgv[: len(origArgv) - len(argv) + 1]
    else:
        program = [sys.executable, argv[0]]
    return [*program, "--nodaemon", "--pidfile=", "--logfile=-", *argv[1:]]


class _WorkerProtocol(ProcessProtocol):
    """
    One worker process: relays its output lines, reports its end.
    """

    log = Logger()

    def __init__(self, number: int, ended: Callable[[_WorkerProtocol, Failure], None]):
        self.number = number
        self.ended = ended
        self.buffers: dict[int, bytes] = {1: b"", 2: b""}
        self.finished: Deferred[None] = Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self.buffers.get(childFD, b"") + data).split(b"\n")
        self.buffers[childFD] = lines.pop()
        for line in lines:
            self.log.info(
                "worker {number}: {line}",
                number=self.number,
                line=line.decode("utf-8", "replace").rstrip("\r"),
            )

    def processEnded(self, reason: Failure) -> None:
        for childFD in list(self.buffers):
            if self.buffers[childFD]:
                self.childDataReceived(childFD, b"\n")
        self.ended(self, reason)
        self.finished.callback(None)


class WorkerPool(Service):
    """
    Starts, restarts, signals and stops the worker processes.

    @ivar workers: how many.
    @ivar argv: the worker command line (see L{workerArgv}).
    @ivar restartDelay: the first restart delay, doubled per quick death up to
        C{maxRestartDelay}.
    @ivar stableAfter: a worker that lived this long resets the delay.
    @ivar drainTimeout: how long a stopping worker may take before SIGKILL.
    @ivar processes: the running workers' process transports, by number.
    """

    log = Logger()

    def __init__(
        self,
        workers: int,
        argv: Sequence[str],
        reactor: Any,
        *,
        restartDelay: float = 1.0,
        maxRestartDelay: float = 60.0,
        stableAfter: float = 60.0,
        drainTimeout: float = 30.0,
        env: dict[str, str] | None = None,
    ):
        self.workers = workers
        self.argv = list(argv)
        self.reactor = reactor
        self.restartDelay = restartDelay
        self.maxRestartDelay = maxRestartDelay
        self.stableAfter = stableAfter
        self.drainTimeout = drainTimeout
        self.env = dict(os.environ if env is None else env)
        self.processes: dict[int, Any] = {}
        self.protocols: dict[int, _WorkerProtocol] = {}
        self.failures: dict[int, int] = {}
        self.started: dict[int, float] = {}
        self.pending: dict[int, Any] = {}
        self.stopping = False
        self._unregister: Callable[[], None] | None = None

    def startService(self) -> None:
        super().startService()
        self.stopping = False
        self._unregister = onReload(self.reload)
        for number in range(1, self.workers + 1):
            self.spawn(number)

    def spawn(self, number: int) -> None:
        """
        Start worker C{number}.
        """
        self.pending.pop(number, None)
        env = dict(self.env, **{WORKER_ENV: str(number)})
        protocol = _WorkerProtocol(number, self._ended)
        self.protocols[number] = protocol
        self.started[number] = self.reactor.seconds()
        self.processes[number] = self.reactor.spawnProcess(
            protocol,
            self.argv[0],
            self.argv,
            env=env,
            childFDs={0: "w", 1: "r", 2: "r"},
        )
        self.log.info(
            "worker {number} started (pid {pid})",
            number=number,
            pid=self.processes[number].pid,
        )

    def _ended(self, protocol: _WorkerProtocol, reason: Failure) -> None:
        number = protocol.number
        if self.protocols.get(number) is not protocol:
            return
        del self.protocols[number]
        self.processes.pop(number, None)
        if self.stopping:
            self.log.info("worker {number} stopped", number=number)
            return
        lived = self.reactor.seconds() - self.started.get(number, 0)
        failures = 0 if lived >= self.stableAfter else self.failures.get(number, 0)
        delay = min(self.maxRestartDelay, self.restartDelay * 2**failures)
        self.failures[number] = failures + 1
        self.log.error(
            "worker {number} ended ({why}) after {lived:.1f} s; "
            "restarting in {delay:.1f} s",
            number=number,
            why=reason.getErrorMessage(),
            lived=lived,
            delay=delay,
        )
        self.pending[number] = self.reactor.callLater(delay, self.spawn, number)

    def signalAll(self, signal: str) -> None:
        """
        Send C{signal} (C{"TERM"}, C{"HUP"}, ...) to every running worker.
        """
        for process in list(self.processes.values()):
            try:
                process.signalProcess(signal)
            except ProcessExitedAlready:
                # Ended meanwhile: processEnded will say so.
                continue

    def reload(self) -> None:
        """
        Forward SIGHUP: every worker reloads its certificates and password
        files.
        """
        self.log.info("forwarding SIGHUP to {count} workers", count=len(self.processes))
        self.signalAll("HUP")

    def stopService(self) -> Deferred[Any]:
        """
        SIGTERM every worker; fire once all have ended, killing stragglers
        after C{drainTimeout}.
        """
        super().stopService()
        self.stopping = True
        if self._unregister is not None:
            self._unregister()
            self._unregister = None
        for call in self.pending.values():
            if call.active():
                call.cancel()
        self.pending.clear()
        waiting = [p.finished for p in self.protocols.values()]
        self.signalAll("TERM")
        kill = self.reactor.callLater(self.drainTimeout, self.signalAll, "KILL")

        def done(result: object) -> object:
            if kill.active():
                kill.cancel()
            return result

        return DeferredList(waiting).addBoth(done)


class _ParentWatch(abstract.FileDescriptor):
    """
    Reads the worker's stdin, a pipe from the supervisor: at its end (the
    supervisor is gone) the worker stops.
    """

    log = Logger()

    def __init__(self, reactor: Any, fd: int = 0):
        super().__init__(reactor)
        self.fd = fd
        self.connected = 1

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> Any:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        return None if data else main.CONNECTION_DONE

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.log.info("supervisor gone: stopping worker")
        reactor: Any = self.reactor
        try:
            reactor.stop()
        except error.ReactorNotRunning:
            pass  # stopping already (a SIGTERM came first)


def _terminateOnce() -> None:
    """
    Make a worker act on the first SIGTERM only: it gets one from the
    supervisor and, under systemd (C{KillMode=control-group}) or a C{kill}
    of the process group, one of its own, and Twisted's handler stopping
    the reactor a second time logs C{ReactorNotRunning}.
    """
    handler = signal.getsignal(signal.SIGTERM)
    if not callable(handler):
        return

    def once(number: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        handler(number, frame)

    signal.signal(signal.SIGTERM, once)


class _WorkerService(Service):
    """
    In a worker: watch for the supervisor going away.
    """

    def __init__(self, reactor: Any):
        self.reactor = reactor
        self.watch: _ParentWatch | None = None

    def startService(self) -> None:
        super().startService()
        os.set_blocking(0, False)
        self.watch = _ParentWatch(self.reactor)
        self.watch.startReading()
        # After twistd's handlers are in place (when the reactor runs).
        self.reactor.callWhenRunning(_terminateOnce)

    def stopService(self) -> None:
        super().stopService()
        if self.watch is not None:
            self.watch.stopReading()
            self.watch = None


_pools: list[WorkerPool] = []


def supervise(
    service: IService,
    workers: int,
    *,
    name: str = "netplugins",
    reactor: Any = None,
    argv: Sequence[str] | None = None,
    **poolSettings: Any,
) -> IService:
    """
    C{service} itself for one worker; inside a worker, C{service} with a
    watch on the supervisor; otherwise a supervisor of C{workers} processes
    that each run this command line.

    Only one supervisor per process: every worker runs the whole program, so
    a second call (a C{.tac} composing several services) gets a service that
    does nothing.

    @param poolSettings: L{WorkerPool} settings (C{restartDelay},
        C{drainTimeout}, ...).
    """
    if reactor is None:
        from twisted.internet import reactor
    if workers <= 1:
        return service
    if isWorker():
        if isinstance(service, MultiService):
            # The caller's service stays the one returned, children and all.
            _WorkerService(reactor).setServiceParent(service)
            return service
        parent = MultiService()
        parent.setName(name)
        service.setServiceParent(parent)
        _WorkerService(reactor).setServiceParent(parent)
        return parent
    parent = MultiService()
    parent.setName(name)
    if not _pools:
        pool = WorkerPool(workers, workerArgv(argv), reactor, **poolSettings)
        _pools.append(pool)
        pool.setServiceParent(parent)
    return parent
