"""
The abuse suite: every stream service as a real C{twistd -n} process, against
clients that never read, stall TLS handshakes, send oversized input before
logging in, or just sit there, judged from outside (L{tests.abuse}): resident
memory from C{/proc/PID/status}, the server's side of each connection from
C{/proc/net/tcp}.
"""

from __future__ import annotations

import os
import pickle
import re
import socket
import struct
import time
import xmlrpc.client
from collections.abc import Callable, Sequence
from functools import partial
from multiprocessing import connection
from typing import Any, ClassVar

from twisted.trial.unittest import SynchronousTestCase

from tests.abuse import (
    Flood,
    MiB,
    RSSWatch,
    Server,
    Stall,
    concurrently,
    connect,
    expect,
    flood,
    freePort,
    secondsUntilEOF,
    secondsUntilServerCloses,
    startServer,
    tlsConnect,
    trickle,
    warmUp,
)
from tests.mailfixtures import writeHtpasswd
from tests.pki import PKI

# docs/security.md ("The abuse suite") states these bounds by name; change
# the two together.
# Observed on a two-core machine (VmRSS after a warm-up connection, peak
# while the hostile clients ran): never-read floods grew a server by 0 to
# 2 MiB, oversized input by 0 to 0.5 MiB; a server that buffers what it
# should refuse or hold back grows by the tens of MiB these clients send.

#: The most a server's resident memory may grow while clients pipeline
#: requests (over cleartext and TLS at once) and never read the answers.
NEVER_READS_GROWTH = 8 * MiB

#: The most a server's resident memory may grow while a client streams a
#: line, frame, literal, body or message over its limit.
OVERSIZE_GROWTH = 8 * MiB

#: The deadlines the deadline tests give on the command line
#: (C{--idle-timeout}, C{--preauth-timeout}, C{--tls-handshake-timeout},
#: C{--handshake-timeout}, C{--header-timeout}, C{--keepalive-timeout}) and
#: C{--close-grace}, in seconds.
DEADLINE = 1.0
GRACE = 1.0

#: How much later than its deadline (plus grace) a connection may end, for
#: scheduling on a busy two-core machine.
SLACK = 1.5

#: How long past a bound the tests keep watching, to say when a late close
#: came.
OVERTIME = 2.0

#: The options that make every deadline short.
SHORT_DEADLINES = (
    "--idle-timeout",
    f"{DEADLINE:g}",
    "--close-grace",
    f"{GRACE:g}",
    "--tls-handshake-timeout",
    f"{DEADLINE:g}",
)


def _listen(port: int) -> str:
    return f"tcp:{port}:interface=127.0.0.1"


def _closedWithin(what: str, seconds: float | None, bound: float) -> str | None:
    """
    A failure message when C{seconds} (C{None}: not within L{OVERTIME} past
    the bound) is over C{bound}.
    """
    if seconds is None:
        return f"{what}: still ESTABLISHED after {bound + OVERTIME:.1f} s"
    if seconds > bound:
        return f"{what}: closed after {seconds:.2f} s (bound {bound:.1f} s)"
    return None


class AbuseTestCase(SynchronousTestCase):
    """
    Starting a service, and the checks every service's abuse tests share.

    @cvar tapname: the plugin under test.
    @cvar deadlineOptions: the service's own deadline options, made short for
        the deadline tests (the shared ones are L{SHORT_DEADLINES}).
    """

    tapname: ClassVar[str] = ""
    deadlineOptions: ClassVar[tuple[str, ...]] = ()

    def options(self) -> list[str]:
        """
        Options every server of this test case gets.
        """
        return []

    def serve(self, *args: str, ports: Sequence[int], tls: bool = False) -> Server:
        """
        Run the plugin with L{options} and C{args} (and a test certificate,
        with C{tls}); return once it listens on C{ports}.
        """
        certificate = self.tlsOptions() if tls else []
        return startServer(
            self, self.tapname, *self.options(), *certificate, *args, ports=ports
        )

    def servePlain(self, *args: str) -> tuple[int, Server]:
        """
        Serve on one cleartext port with default deadlines; return the port
        and the server.
        """
        port = freePort()
        return port, self.serve("--listen", _listen(port), *args, ports=[port])

    def serveBoth(self, *args: str) -> tuple[int, int, Server]:
        """
        Serve on a cleartext and a TLS port with default deadlines; return
        both ports and the server.
        """
        port, tlsPort = freePort(), freePort()
        server = self.serve(
            "--listen",
            _listen(port),
            "--listen-tls",
            _listen(tlsPort),
            *args,
            ports=[port, tlsPort],
            tls=True,
        )
        return port, tlsPort, server

    def serveShortDeadlines(self, *args: str) -> tuple[int, int]:
        """
        Serve on a cleartext and a TLS port with every deadline short; return
        both ports.
        """
        port, tlsPort = freePort(), freePort()
        self.serve(
            "--listen",
            _listen(port),
            "--listen-tls",
            _listen(tlsPort),
            *SHORT_DEADLINES,
            *self.deadlineOptions,
            *args,
            ports=[port, tlsPort],
            tls=True,
        )
        return port, tlsPort

    def tlsOptions(self) -> list[str]:
        """
        C{--tls-cert} and C{--tls-key} from a fresh test CA.
        """
        cert, key = PKI(os.path.abspath(self.mktemp())).serverCertificate(
            "localhost", "127.0.0.1"
        )
        return ["--tls-cert", cert, "--tls-key", key]

    def connect(
        self, port: int, receiveBuffer: int | None = 4096, tls: bool = False
    ) -> socket.socket:
        """
        L{tests.abuse.connect} (or with C{tls}, L{tests.abuse.tlsConnect}),
        closed at cleanup.
        """
        sock = (tlsConnect if tls else connect)(port, receiveBuffer)
        self.addCleanup(sock.close)
        return sock

    def assertGrowth(self, watch: RSSWatch, bound: int, what: str) -> None:
        """
        Fail, saying how much it grew, when the server's memory grew C{bound}
        bytes or more (or the server died).
        """
        watch.sample()
        if not watch.server.running():
            self.fail(f"{what}: the server exited ({watch.server.process.returncode})")
        if watch.growth >= bound:
            self.fail(f"{what}: {watch.describe()}, bound {bound / MiB:.0f} MiB")

    def assertNeverReadsBounded(
        self,
        server: Server,
        port: int,
        tlsPort: int | None,
        payloads: Sequence[bytes],
        *,
        greeting: bytes = b"",
        setup: Callable[[socket.socket], None] | None = None,
    ) -> Flood:
        """
        After one polite warm-up connection per payload and port, flood each
        of C{payloads} over a connection to C{port} and one to C{tlsPort}
        (unless C{None}) at once, never reading: the server's growth stays
        under L{NEVER_READS_GROWTH}.

        @param greeting: read on the warm-up connections before sending.
        @param setup: called with every socket before sending (a handshake).
        """
        targets = [(port, False)] + ([(tlsPort, True)] if tlsPort else [])
        socks, rounds = [], []
        concurrently(
            *[
                lambda target=target, tls=tls, payload=payload: warmUp(
                    target, payload, greeting=greeting, tls=tls, setup=setup
                )
                for payload in payloads
                for target, tls in targets
            ]
        )
        watch = RSSWatch(server, ceiling=4 * NEVER_READS_GROWTH)
        for payload in payloads:
            for target, tls in targets:
                sock = self.connect(target, tls=tls)
                if setup is not None:
                    setup(sock)
                socks.append(sock)
                rounds.append(payload)
        result = flood(socks, rounds, watch=watch)
        self.assertGrowth(watch, NEVER_READS_GROWTH, result.describe())
        return result

    def assertStallsEnd(self, stalls: Sequence[Stall]) -> None:
        """
        Every stalled handshake ends (EOF or reset at the client) within
        L{DEADLINE} + L{SLACK} seconds of its stall.
        """
        bound = DEADLINE + SLACK
        results = concurrently(*[lambda s=s: s.run(bound + OVERTIME) for s in stalls])
        failures = []
        for stall, (seconds, _) in zip(stalls, results, strict=True):
            if seconds is None:
                failures.append(
                    f"{stall.name}: still open after {bound + OVERTIME:.1f} s"
                )
            elif seconds > bound:
                failures.append(
                    f"{stall.name}: closed after {seconds:.2f} s (bound {bound:.1f} s)"
                )
        if failures:
            self.fail("; ".join(failures))

    def deadlineClients(
        self,
        port: int,
        tlsPort: int | None,
        payload: bytes,
        *,
        setup: Callable[[socket.socket], None] | None = None,
        trickled: Sequence[tuple[str, bytes, bytes]] = (),
        bound: float = DEADLINE + GRACE + SLACK,
        floods: bool = True,
        request: bytes = b"",
        label: str = "",
    ) -> list[Callable[[], str | None]]:
        """
        Clients for L{assertClientsGone}: ones that connect and do nothing
        (on C{port}, and on C{tlsPort} after the TLS handshake) and ones
        that flood C{payload} and never read (on both ports), all of which
        must find the server's side of their connection gone (not
        ESTABLISHED in C{/proc/net/tcp}) within C{bound} seconds: of
        connecting for the idle ones; for the flooding ones, of the moment
        their connection went quiet (the last byte the kernel took, or the
        last change in the server socket's queues if the server was still
        working through what it had received), and a server that never
        stops taking their bytes fails.  For each (name, head, data) of
        C{trickled}, one more client sends the head, then the data a byte at
        a time, 5 a second, and is held to C{bound} from connecting; with an
        HTTP C{request}, one more sends it, reads the answer and is held to
        C{bound} from the answer's last byte.

        @param setup: called with each flooding client's socket first (to
            do a handshake, say).
        @param floods: whether the flooding clients are there.
        @param label: put before every client's name in messages.
        @return: callables that run one client each and return a failure
            message, or C{None}.
        """
        watched = bound + OVERTIME

        def idle(name: str, port: int, tls: bool) -> str | None:
            since = time.monotonic()
            sock = self.connect(port, tls=tls)
            seconds = secondsUntilServerCloses(port, sock, since, watched)
            return _closedWithin(label + name, seconds, bound)

        def flooding(name: str, port: int, tls: bool) -> str | None:
            sock = self.connect(port, tls=tls)
            if setup is not None:
                setup(sock)
            result = flood([sock], [payload], stall=0.3, limit=bound)
            if result.why == "time limit":
                return (
                    f"{label}{name}: the server kept taking data, never pausing "
                    f"or closing: {result.describe()}"
                )
            seconds = secondsUntilServerCloses(
                port, sock, result.lastProgress, watched, fromQuiet=True
            )
            return _closedWithin(label + name, seconds, bound)

        def trickling(name: str, head: bytes, data: bytes) -> str | None:
            seconds = trickle(port, data, 0.2, watched, head)
            return _closedWithin(label + name, seconds, bound)

        def answered(name: str) -> str | None:
            sock = self.connect(port, receiveBuffer=None)
            sock.sendall(request)
            answer = expect(sock, rb"^HTTP/1\.1 200 ")
            sock.settimeout(0.2)
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except TimeoutError:
                pass
            # The connection went quiet when the last byte came, 0.2 s ago.
            since = time.monotonic() - 0.2
            seconds = secondsUntilServerCloses(port, sock, since, watched)
            return _closedWithin(label + name, seconds, bound)

        clients = [lambda: idle("idle client", port, False)]
        if floods:
            clients.append(
                lambda: flooding("client flooding without reading", port, False)
            )
        if tlsPort is not None:
            clients.append(
                lambda: idle("idle client after the TLS handshake", tlsPort, True)
            )
        if tlsPort is not None and floods:
            clients.append(
                lambda: flooding("TLS client flooding without reading", tlsPort, True)
            )
        clients += [partial(trickling, *each) for each in trickled]
        if request:
            clients.append(lambda: answered("client idle after one request"))
        return clients

    def assertClientsGone(self, clients: Sequence[Callable[[], str | None]]) -> None:
        """
        Run L{deadlineClients} at once; fail with every message they return.
        """
        failures = [message for message in concurrently(*clients) if message]
        if failures:
            self.fail("; ".join(failures))

    def assertDeadlinesClose(
        self,
        port: int,
        tlsPort: int,
        payload: bytes,
        *,
        setup: Callable[[socket.socket], None] | None = None,
        trickled: Sequence[tuple[str, bytes, bytes]] = (),
        request: bytes = b"",
        bound: float = DEADLINE + GRACE + SLACK,
    ) -> None:
        """
        The L{deadlineClients} of one cleartext and one TLS port all find
        the server's side of their connection gone in time.
        """
        self.assertClientsGone(
            self.deadlineClients(
                port,
                tlsPort,
                payload,
                setup=setup,
                trickled=trickled,
                request=request,
                bound=bound,
            )
        )

    def assertOversizeBounded(
        self,
        port: int,
        server: Server,
        head: bytes,
        body: bytes,
        size: int,
        *,
        warm: bytes = b"",
        greeting: bytes = b"",
        setup: Callable[[socket.socket], None] | None = None,
    ) -> tuple[Flood, socket.socket]:
        """
        Send C{head}, then stream C{body} over and over up to C{size} bytes
        in all, never reading: the server's growth stays under
        L{OVERSIZE_GROWTH}.

        @param warm: sent on a polite warm-up connection first.
        @param greeting: read on the warm-up connection before C{warm}.
        @param setup: called with the socket before C{head} is sent.
        @return: the flood, and the socket, for the caller to read the
            server's answer from.
        """
        if warm:
            warmUp(port, warm, count=1, greeting=greeting)
        watch = RSSWatch(server, ceiling=4 * OVERSIZE_GROWTH)
        sock = self.connect(port, receiveBuffer=None)
        if setup is not None:
            setup(sock)
        sock.sendall(head)
        result = flood([sock], [body], maxBytes=size, watch=watch)
        self.assertGrowth(watch, OVERSIZE_GROWTH, result.describe())
        return result, sock

    def assertClosedByServer(self, result: Flood) -> None:
        """
        Every connection of C{result} was ended by the server (a reset or a
        broken pipe while sending).
        """
        for ended in result.ended:
            self.assertIn(ended, ("reset", "broken pipe"), result.describe())

    def checkStalledTLS(self, startTLS: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """
        With only C{--tls-handshake-timeout} short, TLS handshakes that stall
        (silent, or after half a ClientHello) on the TLS port, and after
        C{startTLS} (the command and its go-ahead) on the cleartext port, end
        in time.
        """
        port, tlsPort = freePort(), freePort()
        self.serve(
            "--listen",
            _listen(port),
            "--listen-tls",
            _listen(tlsPort),
            "--tls-handshake-timeout",
            f"{DEADLINE:g}",
            ports=[port, tlsPort],
            tls=True,
        )
        stalls = [
            Stall("silent", tlsPort),
            Stall("half a ClientHello", tlsPort, partial=True),
        ]
        if startTLS:
            stalls += [
                Stall("STARTTLS, then silent", port, startTLS),
                Stall("STARTTLS, then half a ClientHello", port, startTLS, True),
            ]
        self.assertStallsEnd(stalls)


class EchoTests(AbuseTestCase):
    """
    C{twistd np-echo}.
    """

    tapname = "np-echo"

    def test_neverReads(self) -> None:
        """Megabytes echoed to clients that never read, TCP and TLS: bounded."""
        port, tlsPort, server = self.serveBoth()
        self.assertNeverReadsBounded(server, port, tlsPort, [b"x" * 65536])

    def test_stalledTLS(self) -> None:
        """A TLS handshake with no bytes, or half a ClientHello, is cut off."""
        self.checkStalledTLS()

    def test_lineOverLimit(self) -> None:
        """64 MiB without a line end closes the connection, memory bounded."""
        port, server = self.servePlain("--framing", "line")
        result, _ = self.assertOversizeBounded(
            port, server, b"", b"x" * 65536, 64 * MiB, warm=b"hello\n"
        )
        self.assertClosedByServer(result)

    def test_deadlines(self) -> None:
        """--idle-timeout closes idle and backed-up connections, socket and all."""
        self.assertDeadlinesClose(*self.serveShortDeadlines(), b"x" * 65536)


class ZenTests(AbuseTestCase):
    """
    C{twistd np-zen}.
    """

    tapname = "np-zen"

    def test_neverReads(self) -> None:
        """Pipelined questions never read, over TCP and TLS: bounded memory."""
        port, tlsPort, server = self.serveBoth()
        question = b"Beautiful is better than?"
        self.assertNeverReadsBounded(server, port, tlsPort, [question])

    def test_stalledTLS(self) -> None:
        """A TLS handshake with no bytes, or half a ClientHello, is cut off."""
        self.checkStalledTLS()

    def test_questionOverLimit(self) -> None:
        """64 MiB without a '?' closes the connection, memory bounded."""
        port, server = self.servePlain()
        result, _ = self.assertOversizeBounded(
            port, server, b"", b"x" * 65536, 64 * MiB, warm=b"Explicit?"
        )
        self.assertClosedByServer(result)

    def test_deadlines(self) -> None:
        """--idle-timeout closes idle and backed-up connections, socket and all."""
        port, tlsPort = self.serveShortDeadlines()
        self.assertDeadlinesClose(port, tlsPort, b"Beautiful is better than?")


class DaytimeTests(AbuseTestCase):
    """
    C{twistd np-daytime} over TCP: it writes the time and closes.
    """

    tapname = "np-daytime"

    def test_neverReads(self) -> None:
        """Bytes sent to a daytime server are not kept: bounded, and closed."""
        port, server = self.servePlain()
        # Over TLS, test_deadlines covers it: the connection outlives the time.
        result = self.assertNeverReadsBounded(server, port, None, [b"x" * 65536])
        self.assertClosedByServer(result)

    def test_stalledTLS(self) -> None:
        """A TLS handshake with no bytes, or half a ClientHello, is cut off."""
        self.checkStalledTLS()

    def test_deadlines(self) -> None:
        """Once the time is written, --close-grace ends every connection, TLS too."""
        port, tlsPort = freePort(), freePort()
        self.serve(
            "--listen",
            _listen(port),
            "--listen-tls",
            _listen(tlsPort),
            "--close-grace",
            f"{GRACE:g}",
            ports=[port, tlsPort],
            tls=True,
        )
        self.assertDeadlinesClose(port, tlsPort, b"x" * 65536, bound=GRACE + SLACK)


class _Framed:
    """
    The framing L{multiprocessing.connection} speaks (a 4-byte big-endian
    signed length, then the bytes), over any socket, TLS included: enough
    for its C{answer_challenge} and C{deliver_challenge}.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send_bytes(self, data: bytes) -> None:
        """
        Send one message.
        """
        self.sock.sendall(struct.pack("!i", len(data)) + data)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """
        Receive one message of at most C{maxlength} bytes.
        """
        (size,) = struct.unpack("!i", self._exactly(4))
        if maxlength is not None and size > maxlength:
            raise OSError(f"message of {size} bytes over {maxlength}")
        return self._exactly(size)

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError("closed during the handshake")
            data += chunk
        return data


class MPConnTests(AbuseTestCase):
    """
    C{twistd np-mpconn} in echo mode.
    """

    tapname = "np-mpconn"
    deadlineOptions = ("--handshake-timeout", f"{DEADLINE:g}")
    authkey = b"abuse-test-authkey"

    def options(self) -> list[str]:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(self.authkey)
        return ["--authkey-file", path]

    def handshake(self, sock: socket.socket) -> None:
        """
        The client's side of the authkey handshake, over C{sock}.
        """
        sock.setblocking(True)
        connection.answer_challenge(_Framed(sock), self.authkey)  # type: ignore[arg-type]
        connection.deliver_challenge(_Framed(sock), self.authkey)  # type: ignore[arg-type]

    def frame(self, obj: object) -> bytes:
        """
        C{obj} as C{Connection.send} frames it.
        """
        message = pickle.dumps(obj)
        return struct.pack("!i", len(message)) + message

    def test_neverReads(self) -> None:
        """Messages echoed to clients that never read, TCP and TLS: bounded."""
        port, tlsPort, server = self.serveBoth()
        self.assertNeverReadsBounded(
            server, port, tlsPort, [self.frame(b"x" * 65000)], setup=self.handshake
        )

    def test_stalledTLS(self) -> None:
        """A TLS handshake with no bytes, or half a ClientHello, is cut off."""
        self.checkStalledTLS()

    def test_hugeLengthBeforeHandshake(self) -> None:
        """Length 0x7fffffff, or -1 then 2**63, before the handshake: closed."""
        port, server = self.servePlain()
        heads = [struct.pack("!i", 0x7FFFFFFF), struct.pack("!iQ", -1, 2**63)]
        watch = RSSWatch(server, ceiling=4 * OVERSIZE_GROWTH)
        socks = [self.connect(port, receiveBuffer=None) for _ in heads]
        for sock, head in zip(socks, heads, strict=True):
            sock.sendall(head)
        result = flood(socks, [b"\0" * 65536] * 2, maxBytes=64 * MiB, watch=watch)
        self.assertGrowth(watch, OVERSIZE_GROWTH, result.describe())
        self.assertClosedByServer(result)

    def test_deadlines(self) -> None:
        """--handshake-timeout and --idle-timeout close the socket itself."""
        port, tlsPort = self.serveShortDeadlines()
        self.assertDeadlinesClose(
            port, tlsPort, self.frame(b"x" * 65000), setup=self.handshake
        )


class MailTestCase(AbuseTestCase):
    """
    A mail service with the users of L{tests.mailfixtures.PASSWORDS}.

    @cvar greeting: a regular expression matching the service's greeting.
    @cvar startTLS: (command, go-ahead) steps from the greeting to a TLS
        handshake.
    @cvar floodsFast: a command allowed before login whose answer is many
        times its size, so that a deadline test's flood backs the session's
        output up within a fraction of a second.
    """

    greeting: ClassVar[bytes] = b""
    floodsFast: ClassVar[bytes] = b""
    startTLS: ClassVar[Sequence[tuple[bytes, bytes]]] = ()
    deadlineOptions = ("--preauth-timeout", f"{DEADLINE:g}")

    def options(self) -> list[str]:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        return ["--auth", f"htpasswd:{writeHtpasswd(directory)}"]

    def servePlain(self, *args: str) -> tuple[int, Server]:
        # STARTTLS is offered: give it the test certificate, not a generated one.
        return super().servePlain(*self.tlsOptions(), *args)

    def stalledMailTLS(self) -> None:
        """
        Implicit TLS and STARTTLS handshakes, silent or half-sent, end in time.
        """
        self.checkStalledTLS([(b"", self.greeting), *self.startTLS])

    def neverReads(self, *payloads: bytes) -> None:
        """
        Pipeline C{payloads} (one connection each) without logging in, and
        never read: bounded memory.
        """
        port, tlsPort, server = self.serveBoth()
        self.assertNeverReadsBounded(
            server, port, tlsPort, payloads, greeting=self.greeting
        )

    def deadlines(self, payload: bytes) -> None:
        """
        With short deadlines, idle and flooding clients that never log in
        find the server's side closed.
        """
        self.assertDeadlinesClose(*self.serveShortDeadlines(), payload)


class SMTPTests(MailTestCase):
    """
    C{twistd np-smtp}.
    """

    tapname = "np-smtp"
    greeting = rb"^220 "
    floodsFast = b"EHLO abuse.test\r\n"
    startTLS = [(b"EHLO abuse.test\r\n", rb"^250 "), (b"STARTTLS\r\n", rb"^220 ")]

    def test_neverReads(self) -> None:
        """Megabytes of NOOP pipelined before login, never read: bounded."""
        self.neverReads(b"NOOP\r\n")

    def test_stalledTLS(self) -> None:
        """SMTPS and STARTTLS handshakes, silent or half-sent, are cut off."""
        self.stalledMailTLS()

    def test_oversizeData(self) -> None:
        """50 MiB of DATA over --max-message-size gets 552, memory bounded."""
        port, server = self.servePlain("--max-message-size", str(MiB))
        envelope = [
            (b"EHLO abuse.test\r\n", rb"^250 "),
            (b"MAIL FROM:<someone@remote.test>\r\n", rb"^250 "),
            (b"RCPT TO:<alice@localhost>\r\n", rb"^250 "),
            (b"DATA\r\n", rb"^354 "),
        ]

        def begin(sock: socket.socket) -> None:
            expect(sock, self.greeting)
            for command, reply in envelope:
                sock.sendall(command)
                expect(sock, reply)

        # The warm-up delivers one small message.
        warm = self.connect(port, receiveBuffer=None)
        begin(warm)
        warm.sendall(b"Subject: small\r\n\r\nhello\r\n.\r\n")
        expect(warm, rb"^250 ")
        warm.close()
        line = b"x" * 998 + b"\r\n"
        result, sock = self.assertOversizeBounded(
            port, server, b"Subject: big\r\n\r\n", line, 50 * MiB, setup=begin
        )
        if result.ended[0] == "sent all":
            sock.setblocking(True)
            sock.sendall(b"\r\n.\r\n")
        self.assertIn(b"552 ", expect(sock, rb"^\d{3} "), result.describe())

    def test_deadlines(self) -> None:
        """Short deadlines close idle and flooding sessions, socket and all."""
        self.deadlines(self.floodsFast)


class POP3Tests(MailTestCase):
    """
    C{twistd np-pop3}.
    """

    tapname = "np-pop3"
    greeting = rb"^\+OK"
    floodsFast = b"CAPA\r\n"
    startTLS = [(b"STLS\r\n", rb"^\+OK")]

    def test_neverReads(self) -> None:
        """Pipelined CAPA, and USER x, before login and never read: bounded."""
        self.neverReads(b"CAPA\r\n", b"USER x\r\n")

    def test_stalledTLS(self) -> None:
        """POP3S and STLS handshakes, silent or half-sent, are cut off."""
        self.stalledMailTLS()

    def test_longLineBeforeLogin(self) -> None:
        """A 64 MiB line before login closes the connection, memory bounded."""
        port, server = self.servePlain()
        result, _ = self.assertOversizeBounded(
            port,
            server,
            b"USER ",
            b"x" * 65536,
            64 * MiB,
            warm=b"CAPA\r\n",
            greeting=self.greeting,
        )
        self.assertClosedByServer(result)

    def test_deadlines(self) -> None:
        """Short deadlines close idle and flooding sessions, socket and all."""
        self.deadlines(self.floodsFast)


class IMAPTests(MailTestCase):
    """
    C{twistd np-imap}.
    """

    tapname = "np-imap"
    greeting = rb"^\* OK"
    floodsFast = b"a CAPABILITY\r\n"
    startTLS = [(b"a STARTTLS\r\n", rb"^a OK")]

    def test_neverReads(self) -> None:
        """Megabytes of NOOP pipelined before login, never read: bounded."""
        self.neverReads(b"a NOOP\r\n")

    def test_stalledTLS(self) -> None:
        """IMAPS and STARTTLS handshakes, silent or half-sent, are cut off."""
        self.stalledMailTLS()

    def test_appendBeforeLogin(self) -> None:
        """APPEND {26000000}, or {26000000+}, before LOGIN: no '+', data not kept."""
        port, server = self.servePlain()
        warmUp(port, b"a NOOP\r\n", greeting=self.greeting)
        watch = RSSWatch(server, ceiling=4 * OVERSIZE_GROWTH)
        synchronizing = self.connect(port, receiveBuffer=None)
        expect(synchronizing, self.greeting)
        synchronizing.sendall(b"a APPEND INBOX {26000000}\r\n")
        try:
            answer = expect(synchronizing, rb"^(\+|a) ", timeout=5)
        except AssertionError as e:
            # EOF (refused by closing) passes below; a timeout does not.
            answer = str(e).encode()
        nonSynchronizing = self.connect(port, receiveBuffer=None)
        expect(nonSynchronizing, self.greeting)
        nonSynchronizing.sendall(b"a APPEND INBOX {26000000+}\r\n")
        # Both send the literal anyway: the server must not keep it.
        result = flood(
            [synchronizing, nonSynchronizing],
            [b"x" * 65536] * 2,
            maxBytes=26000000,
            watch=watch,
        )
        self.assertRegex(
            answer, rb"^(a (BAD|NO) |EOF before)", f"answered {answer!r} before LOGIN"
        )
        self.assertGrowth(watch, OVERSIZE_GROWTH, result.describe())
        self.assertClosedByServer(result)

    def test_deadlines(self) -> None:
        """Short deadlines close idle and flooding sessions, socket and all."""
        self.deadlines(self.floodsFast)


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def _post(path: str, body: bytes, length: int | None = None) -> bytes:
    """
    A POST of C{body}, claiming C{length} bytes (C{len(body)} by default).
    """
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: text/xml\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    ).encode() + body


def _trickled(path: str) -> list[tuple[str, bytes, bytes]]:
    """
    What the HTTP deadline tests trickle, a byte every 0.2 s, after a head
    sent at once: a request head (C{--header-timeout}), and the body of a
    POST to C{path} (C{--body-timeout}).
    """
    return [
        (
            "client trickling its request head",
            b"",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"y" * 4096,
        ),
        ("client trickling its request body", _post(path, b"", 65536), b"z" * 65536),
    ]


class HTTPTestCase(AbuseTestCase):
    """
    The checks the HTTP services share.
    """

    def assertHugeBodyRefused(
        self, port: int, server: Server, path: str, statuses: Sequence[int]
    ) -> None:
        """
        A 100 MiB body (as Content-Length says) is answered with one of
        C{statuses} before the server has read it all, memory bounded.
        """
        size = 100 * MiB
        result, sock = self.assertOversizeBounded(
            port,
            server,
            _post(path, b"", size),
            b"x" * 65536,
            size,
            warm=_post(path, b"<x/>"),
        )
        _, answer = secondsUntilEOF(sock, time.monotonic(), 2)
        status = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
        self.assertIsNotNone(status, f"answered {answer[:200]!r}; {result.describe()}")
        assert status is not None
        self.assertIn(int(status.group(1)), statuses, result.describe())
        self.assertLess(result.sent[0], size, result.describe())

    def serveWithUsers(self) -> tuple[int, Server]:
        """
        Serve with Basic auth from an htpasswd file, over cleartext.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        return self.servePlain(
            "--auth", f"htpasswd:{writeHtpasswd(directory)}", "--allow-plaintext-auth"
        )


class KVTests(HTTPTestCase):
    """
    C{twistd np-kv}: it has no option for a request-head deadline, so no
    trickling client here.
    """

    tapname = "np-kv"

    def options(self) -> list[str]:
        return ["--store", "memory"]

    def bigValue(self, port: int) -> bytes:
        """
        Store 1 MB under C{big}; return a pipelinable XML-RPC request for it.
        """
        proxy: Any = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/RPC2")
        proxy.set("big", "x" * 1000000)
        return _post("/RPC2", xmlrpc.client.dumps(("big",), "get").encode())

    def test_neverReads(self) -> None:
        """Pipelined XML-RPC gets of a 1 MB value never read: bounded memory."""
        port, tlsPort, server = self.serveBoth()
        self.assertNeverReadsBounded(server, port, tlsPort, [self.bigValue(port)])

    def test_stalledTLS(self) -> None:
        """A TLS handshake with no bytes, or half a ClientHello, is cut off."""
        self.checkStalledTLS()

    def test_hugeBodyWithoutCredentials(self) -> None:
        """100 MiB posted without credentials: 401 or 413, not read, bounded."""
        port, server = self.serveWithUsers()
        self.assertHugeBodyRefused(port, server, "/RPC2", [401, 413])

    def test_deadlines(self) -> None:
        """--idle-timeout closes idle and flooding clients' sockets."""
        port, tlsPort = self.serveShortDeadlines()
        exists = _post("/RPC2", xmlrpc.client.dumps(("big",), "exists").encode())
        self.assertDeadlinesClose(port, tlsPort, self.bigValue(port), request=exists)


class HTTPBinTests(HTTPTestCase):
    """
    C{twistd np-httpbin}.
    """

    tapname = "np-httpbin"
    deadlineOptions = (
        "--header-timeout",
        f"{DEADLINE:g}",
        "--body-timeout",
        f"{DEADLINE:g}",
        "--keepalive-timeout",
        f"{DEADLINE:g}",
    )

    def test_neverReads(self) -> None:
        """Pipelined GET /bytes/102400 never read: bounded memory."""
        port, tlsPort, server = self.serveBoth()
        self.assertNeverReadsBounded(server, port, tlsPort, [_get("/bytes/102400")])

    def test_stalledTLS(self) -> None:
        """A TLS handshake with no bytes, or half a ClientHello, is cut off."""
        self.checkStalledTLS()

    def test_hugeBody(self) -> None:
        """100 MiB posted over --max-body-size: 413, not read, memory bounded."""
        port, server = self.servePlain()
        self.assertHugeBodyRefused(port, server, "/post", [413])

    def test_deadlines(self) -> None:
        """Header, body, keep-alive and idle deadlines close the socket itself."""
        port, tlsPort = self.serveShortDeadlines()
        self.assertDeadlinesClose(
            port,
            tlsPort,
            _get("/bytes/102400"),
            trickled=_trickled("/post"),
            request=_get("/get"),
        )


class WSGITests(HTTPTestCase):
    """
    C{twistd np-wsgi} serving L{tests.abuse.bytesApp}.
    """

    tapname = "np-wsgi"
    deadlineOptions = HTTPBinTests.deadlineOptions

    def options(self) -> list[str]:
        return ["--app", "tests.abuse:bytesApp"]

    def test_neverReads(self) -> None:
        """Pipelined GETs of 100 KiB never read: bounded memory."""
        port, tlsPort, server = self.serveBoth()
        self.assertNeverReadsBounded(server, port, tlsPort, [_get("/")])

    def test_stalledTLS(self) -> None:
        """A TLS handshake with no bytes, or half a ClientHello, is cut off."""
        self.checkStalledTLS()

    def test_hugeBodyWithoutCredentials(self) -> None:
        """100 MiB posted without credentials: 401 or 413, not read, bounded."""
        port, server = self.serveWithUsers()
        self.assertHugeBodyRefused(port, server, "/", [401, 413])

    def test_deadlines(self) -> None:
        """Header, body, keep-alive and idle deadlines close the socket itself."""
        port, tlsPort = self.serveShortDeadlines()
        self.assertDeadlinesClose(
            port, tlsPort, _get("/"), trickled=_trickled("/"), request=_get("/")
        )


class MailHostTests(MailTestCase):
    """
    C{twistd np-mail}: the same sessions as np-smtp, np-pop3 and np-imap,
    wired through its own endpoint options.
    """

    tapname = "np-mail"

    #: (name, greeting, STARTTLS steps after it) of each cleartext endpoint
    #: option; the implicit TLS ones add an C{s}.
    protocols = [
        ("smtp", SMTPTests.greeting, SMTPTests.startTLS),
        ("submission", SMTPTests.greeting, SMTPTests.startTLS),
        ("pop3", POP3Tests.greeting, POP3Tests.startTLS),
        ("imap", IMAPTests.greeting, IMAPTests.startTLS),
    ]

    def serveAll(self, *args: str) -> dict[str, int]:
        """
        Serve every endpoint option on a free port; return the ports by
        option name.
        """
        ports = {name: freePort() for name, *_ in self.protocols}
        ports.update({f"{name}s": freePort() for name in ("smtp", "pop3", "imap")})
        endpoints = [f"--{name}={_listen(port)}" for name, port in ports.items()]
        self.serve(*endpoints, *args, ports=list(ports.values()), tls=True)
        return ports

    def test_stalledTLS(self) -> None:
        """Every implicit TLS and STARTTLS endpoint cuts stalled handshakes off."""
        ports = self.serveAll("--tls-handshake-timeout", f"{DEADLINE:g}")
        stalls = []
        for name, greeting, startTLS in self.protocols:
            steps = [(b"", greeting), *startTLS]
            stalls += [
                Stall(f"{name}: STARTTLS, then silent", ports[name], steps),
                Stall(f"{name}: STARTTLS, then half", ports[name], steps, True),
            ]
        for name in ("smtps", "pop3s", "imaps"):
            stalls += [
                Stall(f"{name}: silent", ports[name]),
                Stall(f"{name}: half a ClientHello", ports[name], partial=True),
            ]
        self.assertStallsEnd(stalls)

    def test_deadlines(self) -> None:
        """Short deadlines reach every endpoint: idle clients, TLS or not, go."""
        ports = self.serveAll(*SHORT_DEADLINES, *self.deadlineOptions)
        clients = []
        # No floods: the per-service tests have them, and four at once keep
        # one reactor busy for seconds (the kernel takes megabytes of answers
        # before a session's output counts as backed up).
        for name, *_ in self.protocols:
            tlsPort = ports.get(name + "s")
            clients += self.deadlineClients(
                ports[name], tlsPort, b"", floods=False, label=f"{name}: "
            )
        self.assertClientsGone(clients)
