"""
np-ssh against hostile clients: a 1 MB version string, a client that
never logs in, a man in the middle's packets during a strict key
exchange (the Terrapin attack's move), guessing passwords past the
attempt limit, an SFTP length prefix of 0xFFFFFFFF, and more channels than
allowed.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ClientCreator, Protocol, connectionDone
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from netplugins.cred.throttle import LoginThrottle
from netplugins.ssh.packets import Plain, padded
from netplugins.tap.ssh import SSHSettings, sshService
from tests.abuse import MiB, secondsUntilEOF, statusField
from tests.sshsupport import PASSWORD, USER, hostKeyFiles, startSSH
from tests.support import freePort

MSG_DISCONNECT = 1
MSG_IGNORE = 2
MSG_KEXINIT = 20


def kexinit(*kex: bytes) -> bytes:
    """
    A client KEXINIT payload offering C{kex} and np-ssh's other algorithms.
    """

    def names(*values: bytes) -> bytes:
        joined = b",".join(values)
        return struct.pack(">L", len(joined)) + joined

    return (
        bytes((MSG_KEXINIT,))
        + b"\0" * 16
        + names(*kex)
        + names(b"ssh-ed25519")
        + names(b"aes128-ctr") * 2
        + names(b"hmac-sha2-256-etm@openssh.com") * 2
        + names(b"none") * 2
        + names() * 2
        + b"\0\0\0\0\0"
    )


def plainPacket(payload: bytes) -> bytes:
    codec = Plain()
    return codec.seal(0, padded(payload, codec))


def handshake(port: int) -> socket.socket:
    """
    A raw connection that has exchanged version lines with np-ssh.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"SSH-2.0-hostile\r\n")
    banner = b""
    while not banner.endswith(b"\n"):
        banner += sock.recv(1)
    assert banner.startswith(b"SSH-2.0-"), banner
    return sock


def disconnected(sock: socket.socket, timeout: float = 10.0) -> tuple[bool, bytes]:
    """
    Whether the server closed C{sock} within C{timeout}, and what it sent.
    """
    seconds, received = secondsUntilEOF(sock, time.monotonic(), timeout)
    return seconds is not None, received


def disconnectCode(received: bytes) -> int | None:
    """
    The reason code of the plain DISCONNECT packet in C{received} after the
    server's KEXINIT, if any.
    """
    offset = 0
    while offset + 5 <= len(received):
        (length,) = struct.unpack(">L", received[offset : offset + 4])
        payload = received[offset + 5 : offset + 4 + length]
        if payload[:1] == bytes((MSG_DISCONNECT,)):
            return int(struct.unpack(">L", payload[1:5])[0])
        offset += 4 + length
    return None


class HostileClientTests(TestCase):
    """
    twistd np-ssh, with a short login window, against raw sockets.
    """

    def test_hugeVersionString(self) -> None:
        """A 1 MB version line is cut off early: disconnect, bounded memory."""
        server = startSSH(self)
        before = statusField(server.process.pid, "VmRSS")
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sent = 0
        try:
            chunk = b"SSH-2.0-" + b"x" * (64 * 1024)
            while sent < MiB:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        closed, received = disconnected(sock)
        growth = statusField(server.process.pid, "VmRSS") - before
        self.assertEqual(
            (closed, sent < MiB or b"longer than 4KB" in received, growth < 8 * MiB),
            (True, True, True),
        )

    def test_loginWindow(self) -> None:
        """A client that never logs in (SSH, telnet) is dropped at --preauth-timeout."""
        telnetPort = freePort()
        server = startSSH(
            self,
            "--preauth-timeout",
            "1",
            "--close-grace",
            "1",
            "--shell",
            "builtin",
            "--telnet",
            f"tcp:{telnetPort}:interface=127.0.0.1",
        )
        quiet = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        talked = handshake(server.port)
        telnet = socket.create_connection(("127.0.0.1", telnetPort), timeout=10)
        started = time.monotonic()
        seconds = [secondsUntilEOF(s, started, 10)[0] for s in (quiet, talked, telnet)]
        self.assertEqual([s is not None and s < 4 for s in seconds], [True] * 3)

    def test_strictKexFirstPacket(self) -> None:
        """With strict kex, a packet before the client's KEXINIT ends the connection."""
        server = startSSH(self)
        sock = handshake(server.port)
        sock.sendall(
            plainPacket(bytes((MSG_IGNORE,)) + b"\0\0\0\0")
            + plainPacket(
                kexinit(b"curve25519-sha256", b"kex-strict-c-v00@openssh.com")
            )
        )
        closed, received = disconnected(sock)
        self.assertEqual((closed, disconnectCode(received)), (True, 2))

    def test_strictKexInjected(self) -> None:
        """With strict kex, an IGNORE slipped in during key exchange ends it."""
        server = startSSH(self)
        sock = handshake(server.port)
        sock.sendall(
            plainPacket(kexinit(b"curve25519-sha256", b"kex-strict-c-v00@openssh.com"))
            + plainPacket(bytes((MSG_IGNORE,)) + b"\0\0\0\0")
        )
        closed, received = disconnected(sock)
        self.assertEqual((closed, disconnectCode(received)), (True, 2))

    def test_withoutStrictKexIgnoreAllowed(self) -> None:
        """Without strict kex an IGNORE before KEXINIT is allowed, as RFC 4253 says."""
        server = startSSH(self, "--preauth-timeout", "3")
        sock = handshake(server.port)
        sock.sendall(
            plainPacket(bytes((MSG_IGNORE,)) + b"\0\0\0\0")
            + plainPacket(kexinit(b"curve25519-sha256"))
        )
        seconds, received = secondsUntilEOF(sock, time.monotonic(), 1.5)
        self.assertEqual((seconds, disconnectCode(received)), (None, None))

    def test_malformedMessages(self) -> None:
        """Truncated KEXINIT and kex messages end the connection, no traceback."""
        server = startSSH(self)
        codes = []
        for packets in (
            [bytes((MSG_KEXINIT,)) + b"\0" * 16 + b"\0\0\1\0"],
            [kexinit(b"curve25519-sha256"), bytes((30,)) + b"\0\0\0\x20short"],
            [kexinit(b"diffie-hellman-group16-sha512"), bytes((30,)) + b"\0\0\0\1\1"],
        ):
            sock = handshake(server.port)
            sock.sendall(b"".join(plainPacket(p) for p in packets))
            closed, received = disconnected(sock)
            codes.append((closed, disconnectCode(received)))
        self.assertEqual(codes, [(True, 2)] * 3)
        self.assertNotIn("Traceback", server.log())

    def test_oversizedPacket(self) -> None:
        """A packet length over 256 KiB is refused before its body arrives."""
        server = startSSH(self)
        sock = handshake(server.port)
        sock.sendall(struct.pack(">LB", 0x7FFFFFF8, 4))
        closed, received = disconnected(sock)
        self.assertEqual((closed, disconnectCode(received)), (True, 2))


ATTEMPTS = """
import sys, paramiko
t = paramiko.Transport(("127.0.0.1", int(sys.argv[1])))
t.start_client(timeout=10)
for i in range(8):
    try:
        t.auth_password(sys.argv[2], "wrong %d" % i)
        print("accepted")
        break
    except paramiko.SSHException:
        print("refused, connected:", t.is_active())
        if not t.is_active():
            break
"""

CHANNELS = """
import sys, paramiko
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect("127.0.0.1", int(sys.argv[1]), username="alice", password=sys.argv[2],
          look_for_keys=False, allow_agent=False)
t = c.get_transport()
opened = []
for i in range(12):
    try:
        opened.append(t.open_session(timeout=5))
    except paramiko.ChannelException as e:
        print("refused at", len(opened) + 1, e.code)
        break
sftp = opened[0]
sftp.invoke_subsystem("sftp")
sftp.sendall(b"\\xff\\xff\\xff\\xff\\x01\\0\\0\\0\\1")
print("sftp closed", sftp.recv(100) == b"", t.is_active())
"""


class InProcessTests(TestCase):
    """
    np-ssh's keyword twin in this process (a login throttle with short
    delays, so that the attempt limit is reached quickly), against paramiko
    in a subprocess.
    """

    timeout = 60

    def service(self, telnetPort: int | None = None) -> int:
        directory = Path(self.mktemp()).resolve()
        (directory / "homes" / USER).mkdir(parents=True)
        import bcrypt

        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
        (directory / "users").write_text(f"{USER}:{hashed}\n")
        port = freePort()
        settings = SSHSettings(
            listen=(f"tcp:{port}:interface=127.0.0.1",),
            auth=(f"htpasswd:{directory / 'users'}",),
            hostKey=tuple(hostKeyFiles()),
            stateDir=str(directory / "state"),
            root=str(directory / "homes" / "{user}"),
            throttle=LoginThrottle(reactor, baseDelay=0.01, maxDelay=0.01),
            shell="builtin",
            telnet=(
                None if telnetPort is None else f"tcp:{telnetPort}:interface=127.0.0.1"
            ),
        )
        service = sshService(settings, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return port

    def client(self, program: str, *args: str) -> Deferred[Any]:
        return getProcessOutputAndValue(
            sys.executable, ["-c", program, *args], env=dict(os.environ)
        )

    @inlineCallbacks
    def test_seventhAttemptDisconnects(self) -> Any:
        """Six wrong passwords are refused; the seventh attempt is disconnected."""
        port = self.service()
        out, err, _ = yield self.client(ATTEMPTS, str(port), USER)
        self.assertEqual(
            out.decode().splitlines(),
            ["refused, connected: True"] * 6 + ["refused, connected: False"],
            err,
        )

    @inlineCallbacks
    def test_unknownUserSameAnswers(self) -> Any:
        """An unknown user gets the same answers, and the same disconnect."""
        port = self.service()
        out, err, _ = yield self.client(ATTEMPTS, str(port), "nobody-here")
        self.assertEqual(
            out.decode().splitlines(),
            ["refused, connected: True"] * 6 + ["refused, connected: False"],
            err,
        )

    @inlineCallbacks
    def test_channelsAndSFTPLength(self) -> Any:
        """An 11th channel is refused; SFTP length 0xFFFFFFFF closes its channel."""
        port = self.service()
        out, err, _ = yield self.client(CHANNELS, str(port), PASSWORD)
        self.assertEqual(
            out.decode().splitlines(), ["refused at 11 4", "sftp closed True True"], err
        )

    @inlineCallbacks
    def test_telnetAttempts(self) -> Any:
        """Telnet answers six wrong passwords with Login incorrect, then hangs up."""
        telnetPort = freePort()
        self.service(telnetPort)
        received: list[bytes] = []
        done: Deferred[None] = Deferred()

        class Guesser(Protocol):
            def connectionMade(self) -> None:
                assert self.transport is not None
                self.transport.write(b"alice\r\nwrong\r\n" * 8)

            def dataReceived(self, data: bytes) -> None:
                received.append(data)

            def connectionLost(self, reason: Failure = connectionDone) -> None:
                done.callback(None)

        yield ClientCreator(reactor, Guesser).connectTCP("127.0.0.1", telnetPort)
        yield done
        self.assertEqual(b"".join(received).count(b"Login incorrect"), 6)


PIPELINED_READS = """
import socket, struct, sys, time, paramiko
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect("127.0.0.1", int(sys.argv[1]), username="alice", key_filename=sys.argv[2],
          look_for_keys=False, allow_agent=False)
channel = c.get_transport().open_session()
channel.invoke_subsystem("sftp")
buffered = b""

def take(n):
    global buffered
    while len(buffered) < n:
        chunk = channel.recv(65536)
        if not chunk:
            raise SystemExit("closed")
        buffered += chunk
    out, buffered = buffered[:n], buffered[n:]
    return out

def reply():
    (n,) = struct.unpack(">L", take(4))
    return take(n)

def request(kind, body):
    channel.sendall(struct.pack(">LB", len(body) + 1, kind) + body)

request(1, struct.pack(">L", 3))
reply()
request(3, struct.pack(">LL", 1, 3) + b"big" + struct.pack(">LL", 1, 0))
answer = reply()
(size,) = struct.unpack(">L", answer[5:9])
handle = answer[9 : 9 + size]
channel.settimeout(3)
sent = 0
try:
    for i in range(20000):
        body = struct.pack(">LL", i + 2, len(handle)) + handle
        request(5, body + struct.pack(">QL", 0, 255 * 1024))
        sent += 1
except socket.timeout:
    pass
print("sent", sent)
sys.stdout.flush()
time.sleep(2)
print("done")
"""


class PipelineTests(TestCase):
    """
    A client that asks for more than it reads.
    """

    def test_readsNeverRead(self) -> None:
        """READs whose replies are never read: the server stops taking them."""
        server = startSSH(self)
        (server.home / "big").write_bytes(os.urandom(1024 * 1024))
        before = statusField(server.process.pid, "VmRSS")
        result = subprocess.run(
            [sys.executable, "-c", PIPELINED_READS, str(server.port), server.key],
            capture_output=True,
            timeout=60,
        )
        growth = statusField(server.process.pid, "VmRSS") - before
        lines = result.stdout.decode().splitlines()
        self.assertEqual(
            (lines[-1:], growth < 64 * MiB), (["done"], True), result.stderr
        )
        self.assertLess(int(lines[0].split()[-1]), 20000)


UNREAD_STDIN = """
import socket, sys, paramiko
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect("127.0.0.1", int(sys.argv[1]), username="alice", key_filename=sys.argv[2],
          look_for_keys=False, allow_agent=False)
channel = c.get_transport().open_session()
channel.exec_command("anything")
channel.settimeout(3)
sent = 0
try:
    while sent < 64 * 1024 * 1024:
        channel.sendall(b"x" * 32768)
        sent += 32768
except socket.timeout:
    pass
print(sent)
"""


class ForcedCommandInputTests(TestCase):
    """
    A forced command that never reads its standard input.
    """

    def test_stdinNeverRead(self) -> None:
        """The channel's window stays closed: the client cannot push 64 MiB."""
        server = startSSH(self, "--force-command", "sleep 30")
        before = statusField(server.process.pid, "VmRSS")
        result = subprocess.run(
            [sys.executable, "-c", UNREAD_STDIN, str(server.port), server.key],
            capture_output=True,
            timeout=60,
        )
        growth = statusField(server.process.pid, "VmRSS") - before
        self.assertEqual(
            (int(result.stdout) < 8 * MiB, growth < 16 * MiB),
            (True, True),
            result.stderr,
        )
