"""
Helpers shared by the test modules: a transport with a write watermark, and
free ports, processes and C{twistd} runs for the tests that start servers.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.testing import StringTransport

#: The checkout, put on C{PYTHONPATH} of the C{twistd} runs so that they
#: serve this tree's code and plugins.
ROOT = Path(__file__).resolve().parent.parent

#: The C{twistd} next to the interpreter running the tests (C{.venv/bin}).
TWISTD = Path(sys.executable).parent / "twistd"

_PR_SET_PDEATHSIG = 1


class WatermarkTransport(StringTransport):
    """
    A L{StringTransport} that pauses its streaming producer, as a real one
    does, once more than C{watermark} bytes wait unsent (never, for C{None}),
    and resumes it when the test calls L{drain}.

    @ivar TLS: claims TLS once C{startTLS} was called.
    @ivar tlsStarted: the context factory given to C{startTLS}.
    @ivar writtenInClear: what had been written when C{startTLS} was called.
    @ivar aborted: whether C{abortConnection} was called.
    """

    TLS = False
    tlsStarted: Any = None
    writtenInClear: bytes | None = None

    def __init__(self, watermark: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.watermark = watermark
        self.aborted = False
        self.producerPaused = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self._check()

    def writeSequence(self, data: Any) -> None:
        super().writeSequence(data)
        self._check()

    def _check(self) -> None:
        if (
            self.producer is not None
            and self.watermark is not None
            and not self.producerPaused
            and len(self.io.getvalue()) > self.watermark
        ):
            self.producerPaused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """
        The peer read everything: return it and resume the producer.
        """
        data = self.value()
        self.clear()
        if self.producerPaused and self.producer is not None:
            self.producerPaused = False
            self.producer.resumeProducing()
        return data

    def startTLS(self, contextFactory: Any) -> None:
        self.writtenInClear = self.value()
        self.tlsStarted = contextFactory
        self.TLS = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def dieWithParent() -> None:
    """
    Have the calling process killed when its parent dies (Linux): for
    C{preexec_fn}, so that no server outlives a test run killed outright.
    The kernel sends the signal when the I{thread} that started the process
    ends: start processes from the main thread, not from a thread pool's.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def freePort() -> int:
    """
    A TCP port nobody listens on on 127.0.0.1 right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoggedProcess(subprocess.Popen[bytes]):
    """
    A subprocess whose standard output and error go to the file C{log}.
    """

    def __init__(self, argv: Sequence[str], log: Path, **kwargs: Any) -> None:
        self.log = log
        with log.open("ab") as output:
            super().__init__(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=dieWithParent,
                **kwargs,
            )

    def output(self) -> str:
        """
        What the process wrote so far.
        """
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """
        Terminate the process and wait for it; kill it if it is still there
        C{timeout} seconds later.
        """
        if self.poll() is None:
            self.terminate()
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.wait()


def startProcess(
    testCase: Any,
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    name: str = "output",
) -> LoggedProcess:
    """
    Start C{argv} with its output in C{NAME.log} in a fresh temporary
    directory of C{testCase} (and in that directory unless C{cwd} is given),
    stopped by L{LoggedProcess.stop} at cleanup.

    @param env: variables added to this process's environment.
    """
    directory = Path(testCase.mktemp()).resolve()
    directory.mkdir(parents=True)
    process = LoggedProcess(
        argv,
        directory / f"{name}.log",
        cwd=directory if cwd is None else cwd,
        env={**os.environ, **(env or {})},
    )
    testCase.addCleanup(process.stop)
    return process


def runTwistd(
    testCase: Any,
    *args: str,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> LoggedProcess:
    """
    Start C{twistd -n --pidfile= ARGS} on this checkout (as L{startProcess}:
    its log in C{twistd.log} in a temporary directory, stopped at cleanup).
    """
    return startProcess(
        testCase,
        [sys.executable, str(TWISTD), "-n", "--pidfile=", *args],
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), **(env or {})},
        name="twistd",
    )


def waitForPort(
    port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 30.0
) -> None:
    """
    Block until something accepts connections on 127.0.0.1:C{port}.

    @raise AssertionError: if C{process} exits first (with its output, for a
        L{LoggedProcess}) or C{timeout} seconds pass.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"{_command(process)} exited with status {process.returncode}"
                f" before listening on port {port}{_output(process)}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(
        f"nothing listening on port {port} after {timeout:g} s{_output(process)}"
    )


def _command(process: subprocess.Popen[bytes]) -> str:
    args = process.args
    if isinstance(args, str | bytes | os.PathLike):
        return str(args)
    return " ".join(str(arg) for arg in args)


def _output(process: subprocess.Popen[bytes] | None) -> str:
    if isinstance(process, LoggedProcess):
        return ":\n" + process.output()
    return ""
