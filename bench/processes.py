"""
Starting, pinning and always stopping the processes a benchmark runs.

Every process is started in its own session, recorded, and killed (its whole
process group: the children it made too) by L{stopAll}, which the suite calls
in a C{finally} and at exit, so an error or a Ctrl-C leaves nothing running.
"""

from __future__ import annotations

import atexit
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

_running: set[subprocess.Popen[bytes]] = set()

# Processes run from the repository root, where C{python -m bench.peers...}
# finds this package whatever the caller's directory.
ROOT = Path(__file__).resolve().parent.parent


class ProcessError(Exception):
    """
    A benchmark process failed to start, answer or finish in time.
    """


def pinned(argv: Sequence[str], cpu: int | str | None) -> list[str]:
    """
    C{argv} run on CPU C{cpu} only, or on a C{taskset} CPU list such as
    C{"0,1"} (C{taskset} execs it: the pid is the program's own).
    """
    if cpu is None:
        return list(argv)
    return ["taskset", "-c", str(cpu), *argv]


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def freePorts(count: int) -> list[int]:
    """
    C{count} different TCP ports on 127.0.0.1 that nothing listens on right
    now (held together while chosen, so they differ).
    """
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def start(
    argv: Sequence[str], log: Path, stdout: int | IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """
    Start C{argv} in a session of its own in L{ROOT}, stderr (and stdout
    unless given) to C{log}.
    """
    log = log.resolve()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as logFile:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=logFile if stdout is None else stdout,
            stderr=logFile,
            cwd=ROOT,
            start_new_session=True,
        )
    _running.add(process)
    return process


def stop(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """
    Terminate C{process} and its group, killing them after C{grace} seconds.
    """
    _running.discard(process)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            continue
        break
    # The group may outlive its leader; make sure none of it is left.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stopAll() -> None:
    """
    Stop every process this module started and has not stopped yet.
    """
    for process in list(_running):
        stop(process, grace=2.0)


atexit.register(stopAll)


def waitForPort(
    process: subprocess.Popen[bytes], port: int, timeout: float = 30.0
) -> None:
    """
    Wait until something accepts connections on 127.0.0.1:C{port}.

    @raise ProcessError: if C{process} exits first or C{timeout} passes.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ProcessError(f"exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise ProcessError(f"not listening on port {port} after {timeout:g} s")


def readLine(process: subprocess.Popen[bytes], deadline: float) -> bytes:
    """
    The next line C{process} writes to its stdout pipe, waiting no later than
    C{deadline} (a C{time.monotonic} value).

    @raise ProcessError: at the deadline or if the pipe closes first.
    """
    assert process.stdout is not None
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise ProcessError("no answer before the deadline")
            # One byte at a time: lines are few and short, and a buffered
            # read could swallow the next line.
            byte = os.read(process.stdout.fileno(), 1)
            if not byte:
                raise ProcessError(f"output closed after {line!r}")
            line += byte
    return line
