"""
Machinery for the abuse suite (L{tests.test_abuse}): every service runs as a
real C{twistd} process, hostile clients talk to it over loopback sockets, and
the service is judged only from outside: its resident memory from
C{/proc/PID/status}, its side of each connection from C{/proc/net/tcp} and
C{/proc/net/tcp6}.  Nothing in the server is patched or asked.

Typical use::

    server = startServer(self, "np-echo", "--listen", f"tcp:{port}", ports=[port])
    warmUp(port, b"x" * 1024)
    watch = RSSWatch(server)
    result = flood([connect(port)], [b"x" * 65536], watch=watch)
    ... watch.growth, result.describe() ...

Every helper blocks and returns what it observed; the test decides.
"""

from __future__ import annotations

import functools
import os
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from attrs import define

from tests.support import freePort, runTwistd

__all__ = [
    "Flood",
    "MiB",
    "RSSWatch",
    "Server",
    "Stall",
    "clientHello",
    "concurrently",
    "connect",
    "establishedPeers",
    "expect",
    "flood",
    "freePort",
    "secondsUntilEOF",
    "secondsUntilServerCloses",
    "startServer",
    "tlsConnect",
    "trickle",
    "warmUp",
]

MiB = 1024 * 1024


#: Seconds without a byte accepted by the kernel after which a flood is
#: taken as blocked by the server.
STALL = 2.0

#: The longest a flood goes on when the server never blocks it.
FLOOD_LIMIT = 12.0

#: TCP states in C{/proc/net/tcp} (include/net/tcp_states.h).
ESTABLISHED = "01"
LISTEN = "0A"

_T = TypeVar("_T")


class _TCPTables:
    """
    The text of C{/proc/net/tcp} and C{/proc/net/tcp6}, shared by all
    client threads (a busy machine holds thousands of TIME_WAIT lines), read
    again when it is older than L{fresh} seconds or than what the caller
    needs, and searched with one regular expression per local port.
    """

    fresh = 0.01

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken = 0.0
        self._text = ""

    def text(self, notBefore: float) -> str:
        """
        The tables, read no earlier than C{notBefore} (a C{time.monotonic()}).
        """
        with self._lock:
            started = time.monotonic()
            if self._taken < notBefore or started - self._taken > self.fresh:
                parts = []
                for name in ("/proc/net/tcp", "/proc/net/tcp6"):
                    try:
                        with open(name) as f:
                            parts.append(f.read())
                    except FileNotFoundError:
                        pass
                self._text = "".join(parts)
                self._taken = started
            return self._text

    def sockets(self, port: int, notBefore: float) -> list[tuple[int, str, str]]:
        """
        (remote port, state, "tx_queue:rx_queue") of every socket whose local
        port is C{port}, in tables read no earlier than C{notBefore}.
        """
        text = self.text(notBefore)
        return [
            (int(remote, 16), state, queues)
            for remote, state, queues in _localPort(port).findall(text)
        ]


@functools.cache
def _localPort(port: int) -> re.Pattern[str]:
    # sl, local address:port, remote address:port, state, tx_queue:rx_queue
    return re.compile(
        rf"^ *\d+: [0-9A-F]+:{port:04X} [0-9A-F]+:([0-9A-F]{{4}}) "
        r"([0-9A-F]{2}) ([0-9A-F]{8}:[0-9A-F]{8}) ",
        re.MULTILINE,
    )


_tables = _TCPTables()


def _serverSide(port: int, peer: int, notBefore: float) -> str | None:
    """
    The queues ("tx_queue:rx_queue") of the server's ESTABLISHED socket on
    C{port} connected to C{peer}, as of C{notBefore} or later; C{None} when
    there is none.
    """
    for remote, state, queues in _tables.sockets(port, notBefore):
        if remote == peer and state == ESTABLISHED:
            return queues
    return None


def establishedPeers(port: int, notBefore: float = 0.0) -> set[int]:
    """
    The remote ports of the ESTABLISHED sockets whose local port is C{port}
    (in C{/proc/net/tcp} or C{/proc/net/tcp6}): the server's side of its
    connections on that listening port.

    @param notBefore: a C{time.monotonic()} the tables must be read after
        (a connection made after a shared read is not in it).
    """
    return {
        remote
        for remote, state, _ in _tables.sockets(port, notBefore)
        if state == ESTABLISHED
    }


def _listening(port: int) -> bool:
    return any(state == LISTEN for _, state, _ in _tables.sockets(port, 0.0))


def statusField(pid: int, name: str) -> int:
    """
    A memory field of C{/proc/PID/status} (C{VmRSS}, C{VmHWM}), in bytes.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(f"no {name} for process {pid}")


@define
class Server:
    """
    A C{twistd -n} process serving one plugin.

    @ivar directory: its state directory (and working directory).
    @ivar log: its twistd log file.
    """

    process: subprocess.Popen[bytes]
    directory: str
    log: str

    @property
    def pid(self) -> int:
        """
        The server's process id.
        """
        return self.process.pid

    def rss(self) -> int:
        """
        The server's resident set size now, in bytes.
        """
        return statusField(self.pid, "VmRSS")

    def running(self) -> bool:
        """
        Whether the process is still alive.
        """
        return self.process.poll() is None

    def logTail(self, lines: int = 20) -> str:
        """
        The last C{lines} lines of the twistd log.
        """
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """
        Kill the process (no graceful shutdown to wait for) and reap it.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def startServer(
    testCase: Any, tapname: str, *args: str, ports: Sequence[int]
) -> Server:
    """
    Run C{twistd -n --pidfile= TAPNAME --state-dir DIR ARGS} with its state in
    a fresh temporary directory of C{testCase}, killed at cleanup; return once
    every one of C{ports} is listening.

    @raise RuntimeError: the process exited, or did not listen within 20 s.
    """
    directory = os.path.abspath(testCase.mktemp())
    os.makedirs(directory, exist_ok=True)
    log = os.path.join(directory, "twistd.log")
    process = runTwistd(
        testCase,
        f"--logfile={log}",
        tapname,
        "--state-dir",
        directory,
        *args,
        cwd=directory,
    )
    server = Server(process, directory, log)
    testCase.addCleanup(server.stop)
    deadline = time.monotonic() + 20
    while not all(_listening(port) for port in ports):
        if not server.running() or time.monotonic() > deadline:
            raise RuntimeError(
                f"{tapname} did not listen on {list(ports)} "
                f"(exit status {process.poll()}):\n{process.output()}"
                f"{server.logTail()}"
            )
        time.sleep(0.02)
    return server


def connect(
    port: int, receiveBuffer: int | None = 4096, abortive: bool = True
) -> socket.socket:
    """
    A blocking TCP connection to C{127.0.0.1:port}, 10 s timeout.

    @param receiveBuffer: C{SO_RCVBUF} to ask for before connecting (small by
        default, so that a client that never reads fills the server's output
        quickly); C{None} for the kernel's default.
    @param abortive: close with a reset (C{SO_LINGER} 0), leaving no
        TIME_WAIT socket behind: the suite opens thousands of connections.
    """
    sock = socket.socket()
    if receiveBuffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
    if abortive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def tlsConnect(
    port: int, receiveBuffer: int | None = 4096, abortive: bool = True
) -> ssl.SSLSocket:
    """
    L{connect}, then a TLS handshake (certificate not checked: these clients
    attack the server, they do not trust it).
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(
        connect(port, receiveBuffer, abortive), server_hostname="localhost"
    )


def expect(sock: socket.socket, pattern: bytes, timeout: float = 10) -> bytes:
    """
    Read from C{sock} until what was read matches the regular expression
    C{pattern} (multiline); return all of it.

    @raise AssertionError: EOF or C{timeout} seconds first, saying what came.
    """
    received = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, received, re.MULTILINE):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {pattern!r} in {timeout:g} s: {received!r}")
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            raise AssertionError(f"EOF before {pattern!r}: {received!r}")
        received += data
    return received


def warmUp(
    port: int,
    payload: bytes,
    count: int = 64,
    greeting: bytes = b"",
    *,
    tls: bool = False,
    setup: Callable[[socket.socket], None] | None = None,
) -> None:
    """
    One polite connection first: send C{payload} C{count} times, read
    whatever comes until the server has been quiet for 0.2 s, close, and wait
    until the server's side of it is gone.  Lazily built state (imports,
    caches, allocator pools) then does not count as growth.

    @param greeting: a regular expression to read before sending.
    @param tls: connect with L{tlsConnect}.
    @param setup: called with the socket before sending (a handshake, say).
    """
    with (tlsConnect if tls else connect)(port, None, abortive=False) as sock:
        if greeting:
            expect(sock, greeting)
        if setup is not None:
            setup(sock)
        local = sock.getsockname()[1]
        try:
            sock.sendall(payload * count)
            sock.settimeout(0.2)
            while sock.recv(1 << 20):
                pass
        except (TimeoutError, ConnectionError, ssl.SSLError):
            # Daytime, or a service refusing the payload: warm all the same.
            pass
    closed = time.monotonic()
    while local in establishedPeers(port, closed) and time.monotonic() < closed + 5:
        time.sleep(0.02)


@define
class RSSWatch:
    """
    The growth of a server's resident set from now on: C{VmRSS} sampled while
    hostile clients run, and once more at the end.

    @ivar baseline: C{VmRSS} when the watch was made, in bytes.
    @ivar peak: the largest C{VmRSS} sampled, in bytes.
    @ivar ceiling: growth past which a flood stops at once rather than let a
        broken server eat the machine.
    """

    server: Server
    ceiling: int = 512 * MiB
    baseline: int = 0
    peak: int = 0

    def __attrs_post_init__(self) -> None:
        self.baseline = self.peak = self.server.rss()

    def sample(self) -> int:
        """
        Read C{VmRSS} now (0 once the process is gone); keep the peak.
        """
        try:
            rss = self.server.rss()
        except (OSError, LookupError):
            return 0
        self.peak = max(self.peak, rss)
        return rss

    @property
    def growth(self) -> int:
        """
        The peak over the baseline, in bytes.
        """
        return self.peak - self.baseline

    @property
    def runaway(self) -> bool:
        """
        Whether growth passed the ceiling.
        """
        return self.growth > self.ceiling

    def describe(self) -> str:
        """
        The growth in MiB, with its baseline and peak, for messages.
        """
        return (
            f"RSS grew {self.growth / MiB:.1f} MiB "
            f"({self.baseline / MiB:.1f} -> {self.peak / MiB:.1f} MiB)"
        )


@define
class _Sender:
    """
    One connection of a L{flood}: where it is in its data, what it sent.
    """

    sock: socket.socket
    data: bytes
    maxBytes: int | None
    offset: int = 0
    sent: int = 0
    ended: str = ""

    def push(self, budget: int) -> int:
        """
        Send up to C{budget} bytes without blocking; return how many went.
        """
        view = memoryview(self.data)
        pushed = 0
        while pushed < budget and not self.ended:
            chunk = view[self.offset :]
            if self.maxBytes is not None:
                chunk = chunk[: self.maxBytes - self.sent]
            try:
                n = self.sock.send(chunk)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                break
            except ssl.SSLError:
                self.ended = "TLS error"
                break
            except BrokenPipeError:
                self.ended = "broken pipe"
                break
            except ConnectionResetError:
                self.ended = "reset"
                break
            pushed += n
            self.sent += n
            self.offset = (self.offset + n) % len(self.data)
            if self.maxBytes is not None and self.sent >= self.maxBytes:
                self.ended = "sent all"
        return pushed


@define
class Flood:
    """
    What a flood did.

    @ivar sent: bytes the kernel took, per connection.
    @ivar ended: per connection, how its sending ended: C{""} (still open),
        C{"sent all"}, C{"broken pipe"}, C{"reset"} or C{"TLS error"}.
    @ivar why: why the flood stopped: C{"stalled"} (nothing taken for
        L{STALL} seconds), C{"ended"} (every connection ended),
        C{"time limit"} or C{"runaway memory"}.
    @ivar seconds: how long it ran.
    @ivar lastProgress: C{time.monotonic()} of the last byte taken.
    """

    sent: list[int]
    ended: list[str]
    why: str
    seconds: float
    lastProgress: float

    def describe(self) -> str:
        """
        One line for messages.
        """
        sent = ", ".join(f"{n / MiB:.1f}" for n in self.sent)
        ended = ", ".join(e or "open" for e in self.ended)
        return (
            f"sent {sent} MiB in {self.seconds:.1f} s, stopped: {self.why} "
            f"(connections: {ended})"
        )


def flood(
    socks: Sequence[socket.socket],
    payloads: Sequence[bytes],
    *,
    maxBytes: int | None = None,
    stall: float = STALL,
    limit: float = FLOOD_LIMIT,
    watch: RSSWatch | None = None,
) -> Flood:
    """
    Send C{payloads[i]} over C{socks[i]} again and again, never reading,
    through non-blocking sockets, until the kernel has taken nothing for
    C{stall} seconds, every connection ended (closed by the server, or
    C{maxBytes} each sent), C{limit} seconds passed, or C{watch} saw runaway
    growth.  Payloads are never cut between rounds: a partial send continues
    where it stopped.  The sockets are left open and non-blocking.
    """
    senders = []
    for sock, payload in zip(socks, payloads, strict=True):
        sock.setblocking(False)
        data = payload * max(1, 65536 // len(payload))
        senders.append(_Sender(sock, data, maxBytes))
    start = lastProgress = nextSample = time.monotonic()
    while True:
        now = time.monotonic()
        active = [s for s in senders if not s.ended]
        if not active:
            why = "ended"
            break
        if now - lastProgress >= stall:
            why = "stalled"
            break
        if now - start >= limit:
            why = "time limit"
            break
        if watch is not None and now >= nextSample:
            nextSample = now + 0.1
            watch.sample()
            if watch.runaway:
                why = "runaway memory"
                break
        _, writable, _ = select.select([], [s.sock for s in active], [], 0.05)
        for sender in active:
            if sender.sock in writable and sender.push(1 << 20):
                lastProgress = time.monotonic()
    if watch is not None:
        watch.sample()
    return Flood(
        [s.sent for s in senders],
        [s.ended for s in senders],
        why,
        time.monotonic() - start,
        lastProgress,
    )


def secondsUntilEOF(
    sock: socket.socket, since: float, timeout: float
) -> tuple[float | None, bytes]:
    """
    Read (and keep) what comes on C{sock} until EOF or a reset.

    @param since: the C{time.monotonic()} to count from.
    @param timeout: give up this many seconds after C{since}.
    @return: seconds from C{since} to EOF or reset (C{None}: still open at
        the timeout), and the bytes read.
    """
    received = b""
    sock.setblocking(True)
    while True:
        left = since + timeout - time.monotonic()
        if left <= 0:
            return None, received
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionError:
            data = b""
        if not data:
            return time.monotonic() - since, received
        received += data


def secondsUntilServerCloses(
    port: int,
    sock: socket.socket,
    since: float,
    timeout: float,
    fromQuiet: bool = False,
) -> float | None:
    """
    Watch C{/proc/net/tcp} until the server's side of C{sock} (a connection
    to C{port}) is no longer ESTABLISHED.  The client side is left alone: it
    neither reads nor closes, so only the server can end the connection.

    @param since: the C{time.monotonic()} to count from.
    @param timeout: give up this many seconds after C{since}.
    @param fromQuiet: count from the last time the server's socket queues
        changed instead, if later than C{since}: a server still working
        through the requests in its receive queue is not idle yet, though
        its client can send no more.
    @return: seconds from C{since} (or the last change) until the server's
        side left ESTABLISHED, or C{None} if it still was at the timeout.
    """
    peer = sock.getsockname()[1]
    connected = time.monotonic()
    last = _serverSide(port, peer, connected)
    giveUp = since + timeout + (FLOOD_LIMIT if fromQuiet else 0)
    while last is not None:
        now = time.monotonic()
        if now - since > timeout or now > giveUp:
            return None
        time.sleep(0.02)
        queues = _serverSide(port, peer, connected)
        if fromQuiet and queues is not None and queues != last:
            since = max(since, time.monotonic())
        last = queues
    return time.monotonic() - since


def clientHello() -> bytes:
    """
    The first flight of a TLS client (its ClientHello record), as Python's
    C{ssl} module writes it for C{localhost}.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def concurrently(*calls: Callable[[], _T]) -> list[_T]:
    """
    Run C{calls} in threads at once; return their results in order (the
    first exception raised, if any, propagates).
    """
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


@define
class Stall:
    """
    A client that stalls a TLS handshake: it connects, goes through C{steps}
    (for STARTTLS: the greeting, the command, its go-ahead), then sends half
    a ClientHello if C{partial}, or nothing, and waits for the server to end
    the connection.

    @ivar name: for messages.
    @ivar steps: (bytes to send, regular expression to read up to) pairs.
    """

    name: str
    port: int
    steps: Sequence[tuple[bytes, bytes]] = ()
    partial: bool = False

    def run(self, timeout: float) -> tuple[float | None, bytes]:
        """
        Stall; return seconds from the stall until the server ended the
        connection (C{None}: still open C{timeout} seconds after), and what
        it sent after the last step.
        """
        sock = connect(self.port, receiveBuffer=None)
        try:
            for send, pattern in self.steps:
                sock.sendall(send)
                expect(sock, pattern)
            if self.partial:
                hello = clientHello()
                sock.sendall(hello[: len(hello) // 2])
            return secondsUntilEOF(sock, time.monotonic(), timeout)
        finally:
            sock.close()


def trickle(
    port: int, data: bytes, interval: float, timeout: float, head: bytes = b""
) -> float | None:
    """
    Connect to C{port}, send C{head} at once, then C{data} one byte every
    C{interval} seconds (from the start again when it runs out), never
    reading, until the server's side of the connection is no longer
    ESTABLISHED.

    @return: seconds from connecting until then, or C{None} if it still was
        C{timeout} seconds after.
    """
    since = time.monotonic()
    with connect(port, receiveBuffer=None) as sock:
        connected = time.monotonic()
        local = sock.getsockname()[1]
        sock.sendall(head)
        position = 0
        while local in establishedPeers(port, connected):
            if time.monotonic() - since > timeout:
                return None
            try:
                sock.send(data[position : position + 1])
            except OSError:
                pass
            position = (position + 1) % len(data)
            time.sleep(interval)
        return time.monotonic() - since


#: What L{bytesApp} answers every request with.
APP_BODY = b"x" * 102400


def bytesApp(environ: dict[str, Any], startResponse: Callable[..., Any]) -> list[bytes]:
    """
    A WSGI application answering every request with L{APP_BODY} (100 KiB),
    for C{np-wsgi --app tests.abuse:bytesApp}.
    """
    startResponse(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", "102400")],
    )
    return [APP_BODY]
