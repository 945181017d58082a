"""
Hostile clients against C{twistd np-ftp} (the abuse suite's machinery,
L{tests.abuse}, and its shared checks, L{tests.test_abuse}): memory stays
bounded and deadlines close the socket.
"""

from __future__ import annotations

import ftplib
import os
import socket
import time
from typing import ClassVar

from tests import test_abuse
from tests.abuse import MiB, RSSWatch, Server
from tests.mailfixtures import PASSWORDS

#: A download far larger than any buffer the server may hold for it.
BIG = 256 * MiB


def listeningSockets(pid: int) -> int:
    """
    How many TCP sockets process C{pid} has listening (IPv4 and IPv6).
    """
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                # st 0A is LISTEN; field 9 the inode.
                count += fields[3] == "0A" and fields[9] in inodes
    return count


def openFiles(pid: int) -> int:
    """
    How many descriptors process C{pid} has open.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


class FTPTests(test_abuse.MailTestCase):
    """
    C{twistd np-ftp}.
    """

    tapname = "np-ftp"
    greeting: ClassVar[bytes] = rb"^220 "
    # HELP's answer is many times its size: a flood backs the output up fast.
    floodsFast: ClassVar[bytes] = b"HELP\r\n"
    startTLS: ClassVar[list[tuple[bytes, bytes]]] = [(b"AUTH TLS\r\n", rb"^234 ")]

    def options(self) -> list[str]:
        homes = os.path.abspath(self.mktemp())
        os.makedirs(homes)
        self.home = os.path.join(homes, "alice")
        os.makedirs(self.home)
        return [*super().options(), "--root", os.path.join(homes, "{user}")]

    def loggedIn(self, port: int) -> ftplib.FTP:
        """
        An ftplib session of alice's, in the clear, in binary mode.
        """
        client = ftplib.FTP()
        client.connect("127.0.0.1", port, timeout=10)
        client.login("alice", PASSWORDS["alice"])
        client.voidcmd("TYPE I")
        return client

    def serveClear(self, *args: str) -> tuple[int, Server]:
        """
        np-ftp allowing passwords without TLS.
        """
        return self.servePlain("--tls-required", "none", *args)

    def test_neverReads(self) -> None:
        """Pipelined HELP and FEAT before login, never read: bounded."""
        self.neverReads(b"HELP\r\n", b"FEAT\r\n")

    def test_stalledTLS(self) -> None:
        """Implicit FTPS and AUTH TLS handshakes, silent or half-sent, are cut off."""
        self.stalledMailTLS()

    def test_longLineBeforeLogin(self) -> None:
        """A 64 MiB command line before login closes the connection, bounded."""
        port, server = self.servePlain()
        result, _ = self.assertOversizeBounded(
            port,
            server,
            b"USER ",
            b"x" * 65536,
            64 * MiB,
            warm=b"NOOP\r\n",
            greeting=self.greeting,
        )
        self.assertClosedByServer(result)

    def test_deadlines(self) -> None:
        """Short deadlines close idle and flooding sessions, socket and all."""
        self.deadlines(self.floodsFast)

    def test_slowReaderBounded(self) -> None:
        """A 256 MiB RETR in the clear whose reader stalls keeps RSS bounded."""
        # The download goes out with sendfile: what the reader does not take
        # stays in the file, not in the server; read later, it is all there.
        port, server = self.serveClear()
        with open(os.path.join(self.home, "big"), "wb") as f:
            f.truncate(BIG)
            f.seek(BIG // 2)
            f.write(b"middle")
        client = self.loggedIn(port)
        watch = RSSWatch(server)
        conn = client.transfercmd("RETR big")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            watch.sample()
            time.sleep(0.1)
        self.assertLess(watch.growth, 16 * MiB, watch.describe())
        received, middle = 0, b""
        conn.settimeout(30)
        while chunk := conn.recv(1 << 20):
            if received <= BIG // 2 < received + len(chunk):
                middle = chunk[BIG // 2 - received :][:6]
            received += len(chunk)
            watch.sample()
        conn.close()
        self.assertEqual(client.voidresp()[:3], "226")
        self.assertEqual((received, middle), (BIG, b"middle"))
        self.assertLess(watch.growth, 16 * MiB, watch.describe())
        client.quit()

    def test_passiveFlood(self) -> None:
        """PASV and EPSV floods hold one passive port per session, no more."""
        # 10 sessions each ask 100 times: each request closes the session's
        # previous passive port, so the server never listens on more than its
        # own port and one per session, and its descriptors do not pile up.
        port, server = self.serveClear()
        clients = [self.loggedIn(port) for _ in range(10)]
        before = openFiles(server.pid)
        watch = RSSWatch(server)
        last = []
        for client in clients:
            for i in range(100):
                if i % 2:
                    reply = client.sendcmd("EPSV")
                    self.assertEqual(reply[:3], "229", reply)
                else:
                    reply = client.sendcmd("PASV")
                    self.assertEqual(reply[:3], "227", reply)
            last.append(reply)
            watch.sample()
        # A port is closed on the reactor's next turn after the next request.
        deadline = time.monotonic() + 2
        while listeningSockets(server.pid) > 1 + len(clients):
            self.assertLess(time.monotonic(), deadline, "passive ports pile up")
            time.sleep(0.05)
        self.assertLessEqual(openFiles(server.pid), before + len(clients))
        self.assertLess(watch.growth, 16 * MiB, watch.describe())
        # The last port each session was given still works.
        with open(os.path.join(self.home, "f"), "wb") as f:
            f.write(b"data")
        client = clients[0]
        number = int(last[0].split("|")[3])
        with socket.create_connection(("127.0.0.1", number), timeout=10) as conn:
            client.sendcmd("RETR f")
            self.assertEqual(conn.recv(100), b"data")
        self.assertEqual(client.voidresp()[:3], "226")
        for client in clients:
            client.quit()
