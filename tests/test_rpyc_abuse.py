"""
Hostile clients against C{twistd np-rpyc}, judged from outside as in
L{tests.test_abuse}: resident memory and the server's side of each socket.
"""

from __future__ import annotations

import os
from typing import ClassVar

from rpyc.core import consts
from rpyc.core.channel import Channel
from rpyc.core.protocol import Connection
from rpyc.core.service import VoidService

from tests import test_abuse
from tests.abuse import MiB, freePort
from tests.mailfixtures import writeHtpasswd


class _Recorder:
    """
    The stream under a channel that only keeps what is written.
    """

    MAX_IO_CHUNK = 65536

    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data


def pingFrame(data: bytes) -> bytes:
    """
    The frame RPyC's client sends to ping with C{data} (the server answers
    with C{data} again), as its own protocol code writes it.
    """
    stream = _Recorder()
    conn = Connection(VoidService(), Channel(stream), {})
    conn._async_request(consts.HANDLE_PING, (data,))
    # Nothing to say goodbye to.
    conn._closed = True
    return stream.written


class RPyCTests(test_abuse.AbuseTestCase):
    """
    C{twistd np-rpyc} hosting the book's line counter.
    """

    tapname: ClassVar[str] = "np-rpyc"

    def options(self) -> list[str]:
        return ["--service", "netplugins.examples.bookrpyc:LineCounterService"]

    def withLogin(self) -> list[str]:
        """
        Options making every client log in first (over cleartext, here).
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        users = writeHtpasswd(directory)
        return ["--auth", f"htpasswd:{users}", "--allow-plaintext-auth"]

    def test_neverReads(self) -> None:
        """Pings answered to clients that never read, TCP and TLS: bounded."""
        port, tlsPort, server = self.serveBoth()
        self.assertNeverReadsBounded(
            server, port, tlsPort, [pingFrame(os.urandom(60000))]
        )

    def test_stalledTLS(self) -> None:
        """A TLS handshake with no bytes, or half a ClientHello, is cut off."""
        self.checkStalledTLS()

    def test_deadlines(self) -> None:
        """--idle-timeout closes idle and never-reading sessions' sockets."""
        port, tlsPort = self.serveShortDeadlines()
        self.assertDeadlinesClose(port, tlsPort, pingFrame(os.urandom(60000)))

    def test_preauthDeadline(self) -> None:
        """With --auth, a client that never logs in is closed at --preauth-timeout."""
        port, tlsPort = freePort(), freePort()
        self.serve(
            "--listen",
            test_abuse._listen(port),
            "--listen-tls",
            test_abuse._listen(tlsPort),
            *self.withLogin(),
            "--idle-timeout",
            "0",
            "--preauth-timeout",
            f"{test_abuse.DEADLINE:g}",
            "--close-grace",
            f"{test_abuse.GRACE:g}",
            ports=[port, tlsPort],
            tls=True,
        )
        self.assertClientsGone(self.deadlineClients(port, tlsPort, b"", floods=False))

    def test_hugeLoginLine(self) -> None:
        """A login line streamed past its limit: closed, nothing buffered."""
        port, server = self.servePlain(*self.withLogin())
        result, _sock = self.assertOversizeBounded(
            port, server, b"AUTH PLAIN ", b"A" * 65536, 64 * MiB
        )
        self.assertClosedByServer(result)

    def test_hugeFrame(self) -> None:
        """A frame header of 0xFFFFFFF0 bytes, then data: closed, nothing buffered."""
        port, server = self.servePlain()
        head = Channel.FRAME_HEADER.pack(0xFFFFFFF0, 0)
        result, _sock = self.assertOversizeBounded(
            port, server, head, b"\0" * 65536, 64 * MiB
        )
        self.assertClosedByServer(result)
