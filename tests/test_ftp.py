"""
Tests for np-ftp (L{netplugins.ftp}, L{netplugins.tap.ftp}): the control
connection in memory, then the service over sockets with ftplib, the book's
chapter 17 programs as printed, curl and lftp.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import random
import shutil
import socket
import ssl
import stat
import subprocess
import sys
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.cred.htpasswd import hashPassword
from netplugins.ftp.data import FromNetwork, ToNetwork
from netplugins.ftp.server import FTPConfig, FTPFactory
from netplugins.homes import HomeStore
from netplugins.service import listeningPorts
from netplugins.tap.ftp import FTPSettings, Options, ftpService, workerShare
from tests.support import WatermarkTransport, runTwistd, waitForPort

PASSWORD = "s3cret pass"
FOPNP = "https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter17/"


def addUser(htpasswd: str, name: str, password: str = PASSWORD) -> None:
    """
    Add C{name} with C{password} (cheap bcrypt) to C{htpasswd}.
    """
    with open(htpasswd, "a", encoding="utf-8") as f:
        f.write(f"{name}:{hashPassword(password, cost=4)}\n")


class _Portal:
    def login(self, *args: Any) -> Any:
        raise AssertionError("no login expected")


_TLS = object()


def session(
    config: FTPConfig | None = None, tls: Any = _TLS
) -> tuple[Any, WatermarkTransport, Clock]:
    """
    An np-ftp session on a transport in memory, greeted (C{tls}: a stand-in
    context factory, so that AUTH TLS is offered).
    """
    config = config or FTPConfig()
    clock = Clock()
    factory = FTPFactory(
        HomeStore("/nonexistent/{user}"),
        _Portal(),
        config=config,
        tls=tls,
        reactor=clock,
    )
    protocol: Any = factory.buildProtocol(None)
    transport = WatermarkTransport()
    protocol.makeConnection(transport)
    transport.clear()
    return protocol, transport, clock


class ControlTests(SynchronousTestCase):
    """
    The control connection in memory.
    """

    def test_greeting(self) -> None:
        """The session greets with 220."""
        clock = Clock()
        factory = FTPFactory(HomeStore("/h/{user}"), _Portal(), reactor=clock)
        transport = WatermarkTransport()
        protocol: Any = factory.buildProtocol(None)
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), b"220 np-ftp ready.\r\n")

    def test_userBeforeTLS(self) -> None:
        """A password login before AUTH TLS is refused (default policy)."""
        protocol, transport, _ = session()
        protocol.dataReceived(b"USER alice\r\n")
        self.assertEqual(
            transport.value(),
            b"530 Non-anonymous sessions must use TLS: AUTH TLS first.\r\n",
        )

    def test_anonymousRefused(self) -> None:
        """Anonymous logins are refused without --anonymous-root."""
        protocol, transport, _ = session()
        protocol.dataReceived(b"USER anonymous\r\n")
        self.assertEqual(transport.value(), b"530 Anonymous access is not allowed.\r\n")

    def test_commandsNeedLogin(self) -> None:
        """File commands before login get 530."""
        protocol, transport, _ = session()
        protocol.dataReceived(b"RETR x\r\nPORT 127,0,0,1,4,1\r\n")
        self.assertEqual(transport.value().count(b"530 Please log in"), 2)

    def test_authTLSInjection(self) -> None:
        """Commands pipelined after AUTH TLS are discarded, unanswered."""
        protocol, transport, _ = session()
        protocol.dataReceived(b"AUTH TLS\r\nUSER alice\r\nPASS x\r\n")
        self.assertEqual(transport.value(), b"234 Proceed with negotiation.\r\n")
        self.assertTrue(transport.TLS)

    def test_lineTooLong(self) -> None:
        """A 4 KiB command line gets 500 and the connection closes."""
        protocol, transport, _ = session()
        protocol.dataReceived(b"NOOP " + b"x" * 4096 + b"\r\n")
        self.assertEqual(transport.value(), b"500 Command line too long.\r\n")
        self.assertTrue(transport.disconnecting)

    def test_loginDeadline(self) -> None:
        """A session that does not log in gets 421 at the deadline."""
        _, transport, clock = session(FTPConfig(preAuthTimeout=5.0))
        clock.advance(5)
        self.assertEqual(
            transport.value(), b"421 Login timeout, closing control connection.\r\n"
        )
        self.assertTrue(transport.disconnecting)

    def test_feat(self) -> None:
        """FEAT lists the extensions, AUTH TLS included."""
        protocol, transport, _ = session()
        protocol.dataReceived(b"FEAT\r\n")
        lines = transport.value().split(b"\r\n")
        self.assertEqual(lines[0], b"211-Features:")
        for feature in (
            b" AUTH TLS",
            b" UTF8",
            b" REST STREAM",
            b" EPSV",
            b" PROT",
            b" MFMT",
            b" MFF modify;UNIX.mode;",
        ):
            self.assertIn(feature, lines)
        self.assertEqual(lines[-2], b"211 End")

    def test_telnetStripped(self) -> None:
        """Telnet IAC IP / IAC DM before a command are ignored."""
        protocol, transport, _ = session()
        protocol.dataReceived(b"\xff\xf4\xff\xf2NOOP\r\n")
        self.assertEqual(transport.value(), b"200 NOOP ok.\r\n")

    def test_tooManyErrors(self) -> None:
        """Twenty bad commands close the session with 421."""
        protocol, transport, _ = session()
        protocol.dataReceived(b"BOGUS\r\n" * 20)
        self.assertTrue(
            transport.value().endswith(
                b"421 Too many errors, closing control connection.\r\n"
            )
        )


class ConversionTests(SynchronousTestCase):
    """
    TYPE A conversions, across chunk boundaries.
    """

    def test_toNetwork(self) -> None:
        """Lone LF becomes CRLF; CRLF split across chunks stays CRLF."""
        convert = ToNetwork()
        self.assertEqual(convert(b"a\nb\r") + convert(b"\nc\n"), b"a\r\nb\r\nc\r\n")

    def test_fromNetwork(self) -> None:
        """CRLF becomes LF, a CR at a chunk's end waits for the next."""
        convert = FromNetwork()
        self.assertEqual(
            convert(b"a\r\nb\r") + convert(b"\nc") + convert.flush(), b"a\nb\nc"
        )


class OptionsTests(SynchronousTestCase):
    """
    The command line.
    """

    def test_options(self) -> None:
        """np-ftp's own options reach its settings."""
        options = Options()
        options.parseOptions(
            [
                "--root", "/srv/ftp/{user}",
                "--passive-ports", "60000-60099",
                "--masquerade", "192.0.2.1",
                "--tls-required", "all",
                "--tls-session-reuse", "optional",
            ]
        )  # fmt: skip
        settings = options.settings
        self.assertEqual(
            (
                settings.root,
                settings.passivePorts,
                settings.masquerade,
                settings.tlsRequired,
                settings.tlsSessionReuse,
            ),
            ("/srv/ftp/{user}", "60000-60099", "192.0.2.1", "all", "optional"),
        )

    def test_bad(self) -> None:
        """Bad values are one-line usage errors."""
        from twisted.python import usage

        for argv in (
            ["--root", "/srv/{uid}"],
            ["--passive-ports", "80-90"],
            ["--masquerade", "example.org"],
            ["--tls-required", "sometimes"],
            ["--anonymous-root", "/nonexistent-dir"],
        ):
            self.assertRaises(usage.UsageError, Options().parseOptions, argv)

    def test_workerShare(self) -> None:
        """Workers split the passive range without overlap."""
        self.assertEqual(workerShare((60000, 60099), 2, 4), (60025, 60049))
        self.assertEqual(workerShare((60000, 60099), None, 4), (60000, 60099))


class _Server:
    """
    np-ftp running in this process (its keyword twin) on a free port.
    """

    def __init__(self, case: TestCase, **settings: Any) -> None:
        base = os.path.abspath(case.mktemp())
        self.base = base
        self.root = os.path.join(base, "homes")
        self.pub = os.path.join(base, "pub")
        os.makedirs(os.path.join(self.root, "alice"))
        os.makedirs(self.pub)
        self.htpasswd = os.path.join(base, "users")
        addUser(self.htpasswd, "alice")
        service = ftpService(
            FTPSettings(
                listen=("tcp:0:interface=127.0.0.1",),
                auth=(f"htpasswd:{self.htpasswd}",),
                root=os.path.join(self.root, "{user}"),
                anonymousRoot=self.pub,
                stateDir=os.path.join(base, "state"),
                **settings,
            )
        )
        service.startService()
        case.addCleanup(service.stopService)
        self.port = next(address.port for _, address, what in listeningPorts(service))
        self.home = os.path.join(self.root, "alice")

    def tls(self) -> ftplib.FTP_TLS:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client = ftplib.FTP_TLS(context=context, timeout=10)
        client.connect("127.0.0.1", self.port)
        client.login("alice", PASSWORD)
        client.prot_p()
        return client


def blob(size: int) -> bytes:
    return random.Random(size).randbytes(size)


class FtplibTests(TestCase):
    """
    np-ftp over sockets with Python's ftplib.
    """

    def test_tlsSession(self) -> Any:
        """FTP_TLS: byte-exact STOR/RETR, REST, APPE, STOU, MLSD, UTF-8 names."""
        server = _Server(self, tlsSessionReuse="optional")
        data = blob(3_000_001)

        def talk() -> None:
            client = server.tls()
            client.storbinary("STOR big.bin", io.BytesIO(data))
            out = io.BytesIO()
            client.retrbinary("RETR big.bin", out.write)
            self.assertEqual(out.getvalue(), data)
            self.assertEqual(client.size("big.bin"), len(data))
            out = io.BytesIO()
            client.retrbinary("RETR big.bin", out.write, rest=1000)
            self.assertEqual(out.getvalue(), data[1000:])
            client.storbinary("APPE big.bin", io.BytesIO(b"tail"))
            client.mkd("dossier é")
            client.cwd("dossier é")
            self.assertEqual(client.pwd(), "/dossier é")
            client.storbinary("STOR naïve.txt", io.BytesIO(b"x"))
            response = client.storbinary("STOU", io.BytesIO(b"y"))
            self.assertTrue(response.startswith("226"))
            names = sorted(name for name, _ in client.mlsd())
            self.assertEqual(names[:2], [".", "file"])
            self.assertIn("naïve.txt", names)
            client.cwd("..")
            facts = dict(client.mlsd())["big.bin"]
            self.assertEqual(facts["size"], str(len(data) + 4))
            client.quit()

        d = deferToThread(talk)

        def check(_: object) -> None:
            with open(os.path.join(server.home, "big.bin"), "rb") as f:
                self.assertEqual(f.read(), data + b"tail")
            self.assertTrue(
                os.path.exists(os.path.join(server.home, "dossier é", "naïve.txt"))
            )

        return d.addCallback(check)

    def test_ascii(self) -> Any:
        """retrlines and storlines convert line ends."""
        server = _Server(self, tlsSessionReuse="optional")
        with open(os.path.join(server.home, "text"), "wb") as f:
            f.write(b"one\ntwo\r\nthree\n")

        def talk() -> list[str]:
            client = server.tls()
            lines: list[str] = []
            client.retrlines("RETR text", lines.append)
            client.storlines("STOR up.txt", io.BytesIO(b"a\nb\n"))
            client.quit()
            return lines

        def check(lines: list[str]) -> None:
            self.assertEqual(lines, ["one", "two", "three"])
            with open(os.path.join(server.home, "up.txt"), "rb") as f:
                self.assertEqual(f.read(), b"a\nb\n")

        return deferToThread(talk).addCallback(check)

    def test_sendfile(self) -> Any:
        """Binary RETR in the clear goes by sendfile, byte-exact, REST too; not TLS."""
        server = _Server(self, tlsRequired="none", tlsSessionReuse="optional")
        data = blob(20_000_003)
        with open(os.path.join(server.home, "big.bin"), "wb") as f:
            f.write(data)
        with open(os.path.join(server.home, "text"), "wb") as f:
            f.write(b"one\ntwo\n")
        calls: list[int] = []
        sendfile = os.sendfile

        def counted(out: int, file: int, offset: int | None, count: int) -> int:
            moved = sendfile(out, file, offset, count)
            calls.append(moved)
            return moved

        self.patch(os, "sendfile", counted)

        def talk() -> tuple[bytes, bytes, int, bytes, list[str], int]:
            client = ftplib.FTP()
            client.connect("127.0.0.1", server.port, timeout=10)
            client.login("alice", PASSWORD)
            whole, part = io.BytesIO(), io.BytesIO()
            client.retrbinary("RETR big.bin", whole.write)
            client.retrbinary("RETR big.bin", part.write, rest=12_345_678)
            plain = len(calls)
            # Converting line ends, and over TLS, the file is read instead.
            lines: list[str] = []
            client.retrlines("RETR text", lines.append)
            client.quit()
            secure = server.tls()
            tls = io.BytesIO()
            secure.retrbinary("RETR big.bin", tls.write)
            secure.quit()
            return (
                whole.getvalue(),
                part.getvalue(),
                plain,
                tls.getvalue(),
                lines,
                len(calls),
            )

        def check(result: tuple[bytes, bytes, int, bytes, list[str], int]) -> None:
            whole, part, plain, tls, lines, total = result
            self.assertEqual(whole, data)
            self.assertEqual(part, data[12_345_678:])
            self.assertEqual(tls, data)
            self.assertEqual(lines, ["one", "two"])
            self.assertGreaterEqual(plain, 2)
            self.assertEqual(sum(calls), len(data) * 2 - 12_345_678)
            self.assertEqual(total, plain)

        return deferToThread(talk).addCallback(check)

    def test_sessionReuseRequired(self) -> Any:
        """By default a data connection that does not resume TLS is refused."""
        server = _Server(self)

        def talk() -> str:
            client = server.tls()
            try:
                client.nlst()
            except ftplib.error_perm as e:
                return str(e)
            finally:
                client.close()
            return "listed"

        d = deferToThread(talk)
        d.addCallback(lambda result: self.assertTrue(result.startswith("522"), result))
        return d

    def test_traversal(self) -> Any:
        """../, absolute paths and links pointing out stay in the home."""
        server = _Server(self, tlsSessionReuse="optional")
        with open(os.path.join(server.base, "secret"), "w") as f:
            f.write("outside")
        os.symlink(os.path.join(server.base, "secret"), os.path.join(server.home, "s"))
        os.symlink("../../..", os.path.join(server.home, "up"))

        def talk() -> list[str]:
            client = server.tls()
            results = []
            for path in ("../secret", "../../secret", "/../secret", "s", "up/secret"):
                try:
                    client.retrbinary("RETR " + path, lambda _: None)
                    results.append("read")
                except ftplib.error_perm as e:
                    results.append(str(e)[:3])
            client.cwd("../../..")
            results.append(client.pwd())
            client.quit()
            return results

        d = deferToThread(talk)
        d.addCallback(self.assertEqual, ["550"] * 5 + ["/"])
        return d

    def test_bounce(self) -> Any:
        """PORT/EPRT to another address or a port below 1024 get 504."""
        server = _Server(self, tlsSessionReuse="optional")

        def talk() -> list[str]:
            client = server.tls()
            results = []
            for command in (
                "PORT 127,0,0,2,4,1",
                "PORT 127,0,0,1,0,25",
                "EPRT |1|10.0.0.1|2000|",
                "EPRT |2|::1|2000|",
            ):
                try:
                    results.append(client.sendcmd(command)[:3])
                except ftplib.Error as e:
                    results.append(str(e)[:3])
            results.append(client.sendcmd("PORT 127,0,0,1,4,1")[:3])
            client.quit()
            return results

        d = deferToThread(talk)
        d.addCallback(self.assertEqual, ["504", "504", "504", "504", "200"])
        return d

    def test_foreignDataConnection(self) -> Any:
        """A data connection from another address is closed, the client's taken."""
        server = _Server(self, tlsRequired="none")
        with open(os.path.join(server.pub, "f"), "wb") as f:
            f.write(b"data")

        def talk() -> tuple[bytes, bytes]:
            client = ftplib.FTP()
            client.connect("127.0.0.1", server.port, timeout=10)
            client.login()
            client.voidcmd("TYPE I")
            host, port = ftplib.parse227(client.sendcmd("PASV"))
            intruder = socket.create_connection(
                (host, port), timeout=10, source_address=("127.0.0.2", 0)
            )
            intruder.settimeout(10)
            stolen = intruder.recv(100)
            intruder.close()
            conn = socket.create_connection((host, port), timeout=10)
            client.sendcmd("RETR f")
            got = conn.recv(100)
            conn.close()
            client.voidresp()
            client.quit()
            return stolen, got

        d = deferToThread(talk)
        d.addCallback(self.assertEqual, (b"", b"data"))
        return d

    def test_abort(self) -> Any:
        """ABOR during a download (ASCII, and binary by sendfile) ends it."""
        server = _Server(self, tlsRequired="none")
        with open(os.path.join(server.pub, "big"), "wb") as f:
            f.write(b"x" * 50_000_000)

        def talk() -> list[str]:
            client = ftplib.FTP()
            client.connect("127.0.0.1", server.port, timeout=10)
            client.login()
            results = []
            for kind in ("A", "I"):
                client.voidcmd(f"TYPE {kind}")
                conn = client.transfercmd("RETR big")
                conn.recv(1000)
                response = client.abort()
                conn.close()
                while not response.startswith("226"):
                    response = client.getresp()
                results.append(client.sendcmd("NOOP"))
            client.quit()
            return results

        return deferToThread(talk).addCallback(
            self.assertEqual, ["200 NOOP ok.", "200 NOOP ok."]
        )


def _bookProgram(name: str) -> str:
    """
    The text of the book's chapter 17 program C{name}, as printed.
    """
    return BOOK[name]


#: Foundations of Python Network Programming, 3rd ed., chapter 17, as printed
#: (https://github.com/brandon-rhodes/fopnp, py3/chapter17/).
BOOK: dict[str, str] = {}

BOOK["connect.py"] = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter17/connect.py

from ftplib import FTP

def main():
    ftp = FTP('ftp.ibiblio.org')
    print("Welcome:", ftp.getwelcome())
    ftp.login()
    print("Current working directory:", ftp.pwd())
    ftp.quit()

if __name__ == '__main__':
    main()
"""

BOOK["nlst.py"] = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter17/nlst.py

from ftplib import FTP

def main():
    ftp = FTP('ftp.ibiblio.org')
    ftp.login()
    ftp.cwd('/pub/academic/astronomy/')
    entries = ftp.nlst()
    ftp.quit()

    print(len(entries), "entries:")
    for entry in sorted(entries):
        print(entry)

if __name__ == '__main__':
    main()
"""

BOOK["dir.py"] = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter17/dir.py

from ftplib import FTP

def main():
    ftp = FTP('ftp.ibiblio.org')
    ftp.login()
    ftp.cwd('/pub/academic/astronomy/')
    entries = []
    ftp.dir(entries.append)
    ftp.quit()

    print(len(entries), "entries:")
    for entry in entries:
        print(entry)

if __name__ == '__main__':
    main()
"""

BOOK["asciidl.py"] = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter17/asciidl.py
# Downloads README from remote and writes it to disk.

import os
from ftplib import FTP

def main():
    if os.path.exists('README'):
        raise IOError('refusing to overwrite your README file')

    ftp = FTP('ftp.kernel.org')
    ftp.login()
    ftp.cwd('/pub/linux/kernel')

    with open('README', 'w') as f:
        def writeline(data):
            f.write(data)
            f.write(os.linesep)

        ftp.retrlines('RETR README', writeline)

    ftp.quit()

if __name__ == '__main__':
    main()
"""

BOOK["binarydl.py"] = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter17/binarydl.py

import os
from ftplib import FTP

def main():
    if os.path.exists('patch8.gz'):
        raise IOError('refusing to overwrite your patch8.gz file')

    ftp = FTP('ftp.kernel.org')
    ftp.login()
    ftp.cwd('/pub/linux/kernel/v1.0')

    with open('patch8.gz', 'wb') as f:
        ftp.retrbinary('RETR patch8.gz', f.write)

    ftp.quit()

if __name__ == '__main__':
    main()
"""

BOOK["advbinarydl.py"] = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter17/advbinarydl.py

import os, sys
from ftplib import FTP

def main():
    if os.path.exists('linux-1.0.tar.gz'):
        raise IOError('refusing to overwrite your linux-1.0.tar.gz file')

    ftp = FTP('ftp.kernel.org')
    ftp.login()
    ftp.cwd('/pub/linux/kernel/v1.0')
    ftp.voidcmd("TYPE I")

    socket, size = ftp.ntransfercmd("RETR linux-1.0.tar.gz")
    nbytes = 0

    f = open('linux-1.0.tar.gz', 'wb')

    while True:
        data = socket.recv(2048)
        if not data:
            break
        f.write(data)
        nbytes += len(data)
        print("\rReceived", nbytes, end=' ')
        if size:
            print("of %d total bytes (%.1f%%)"
                  % (size, 100 * nbytes / float(size)), end=' ')
        else:
            print("bytes", end=' ')
        sys.stdout.flush()

    print()
    f.close()
    socket.close()
    ftp.voidresp()
    ftp.quit()

if __name__ == '__main__':
    main()
"""

BOOK["recursedl.py"] = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter17/recursedl.py

from ftplib import FTP, error_perm

def walk_dir(ftp, dirpath):
    original_dir = ftp.pwd()
    try:
        ftp.cwd(dirpath)
    except error_perm:
        return  # ignore non-directores and ones we cannot enter
    print(dirpath)
    names = sorted(ftp.nlst())
    for name in names:
        walk_dir(ftp, dirpath + '/' + name)
    ftp.cwd(original_dir)  # return to cwd of our caller

def main():
    ftp = FTP('ftp.kernel.org')
    ftp.login()
    walk_dir(ftp, '/pub/linux/kernel/Historic/old-versions')
    ftp.quit()

if __name__ == '__main__':
    main()
"""

BOOK["binaryul.py"] = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter17/binaryul.py

from ftplib import FTP
import sys, getpass, os.path

def main():
    if len(sys.argv) != 5:
        print("usage:", sys.argv[0],
              "<host> <username> <localfile> <remotedir>")
        exit(2)

    host, username, localfile, remotedir = sys.argv[1:]
    prompt = "Enter password for {} on {}: ".format(username, host)
    password = getpass.getpass(prompt)

    ftp = FTP(host)
    ftp.login(username, password)
    ftp.cwd(remotedir)
    with open(localfile, 'rb') as f:
        ftp.storbinary('STOR %s' % os.path.basename(localfile), f)
    ftp.quit()

if __name__ == '__main__':
    main()
"""

BOOK["advbinaryul.py"] = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter17/advbinaryul.py

from ftplib import FTP
import sys, getpass, os.path

BLOCKSIZE = 8192  # chunk size to read and transmit: 8 kB

def main():
    if len(sys.argv) != 5:
        print("usage:", sys.argv[0],
              "<host> <username> <localfile> <remotedir>")
        exit(2)

    host, username, localfile, remotedir = sys.argv[1:]
    prompt = "Enter password for {} on {}: ".format(username, host)
    password = getpass.getpass(prompt)
    ftp = FTP(host)
    ftp.login(username, password)

    ftp.cwd(remotedir)
    ftp.voidcmd("TYPE I")
    datasock, esize = ftp.ntransfercmd('STOR %s' % os.path.basename(localfile))
    size = os.stat(localfile)[6]
    nbytes = 0

    f = open(localfile, 'rb')
    while 1:
        data = f.read(BLOCKSIZE)
        if not data:
            break
        datasock.sendall(data)
        nbytes += len(data)
        print("\rSent", nbytes, "of", size, "bytes",
              "(%.1f%%)\r" % (100 * nbytes / float(size)))
        sys.stdout.flush()

    print()
    datasock.close()
    f.close()
    ftp.voidresp()
    ftp.quit()

if __name__ == '__main__':
    main()
"""


def _privateLoopback() -> str:
    """
    A loopback address of its own for a test that must listen on port 21.
    """
    pick = random.randint
    return f"127.{pick(1, 254)}.{pick(1, 254)}.{pick(2, 254)}"


class ModifyFactsTests(TestCase):
    """
    MFMT and MFF (draft-somers-ftp-mfxx) with Python's ftplib.
    """

    def test_mfmt(self) -> Any:
        """MFMT sets a file's modification time, which MDTM and MLST then show."""
        server = _Server(self, tlsSessionReuse="optional")
        with open(os.path.join(server.home, "a b.txt"), "wb") as f:
            f.write(b"x")

        def talk() -> list[str]:
            client = server.tls()
            answers = [
                client.sendcmd("MFMT 20010203040506 a b.txt"),
                client.sendcmd("MDTM a b.txt"),
                client.sendcmd("MFMT 20010203040507.250 a b.txt"),
            ]
            client.quit()
            return answers

        def check(answers: list[str]) -> None:
            self.assertEqual(
                answers,
                [
                    "213 Modify=20010203040506; a b.txt",
                    "213 20010203040506",
                    "213 Modify=20010203040507.250; a b.txt",
                ],
            )
            st = os.stat(os.path.join(server.home, "a b.txt"))
            self.assertEqual(st.st_mtime, 981173107.25)

        return deferToThread(talk).addCallback(check)

    def test_mff(self) -> Any:
        """MFF sets the modify and UNIX.mode facts of a file or a directory."""
        server = _Server(self, tlsSessionReuse="optional")
        with open(os.path.join(server.home, "f"), "wb") as f:
            f.write(b"x")
        os.mkdir(os.path.join(server.home, "d"))

        def talk() -> list[str]:
            client = server.tls()
            answers = [
                client.sendcmd("MFF modify=19991231235959;UNIX.mode=0600; f"),
                client.sendcmd("MFF UNIX.mode=750; d"),
            ]
            client.quit()
            return answers

        def check(answers: list[str]) -> None:
            self.assertEqual(
                answers,
                [
                    "213 modify=19991231235959;UNIX.mode=0600; f",
                    "213 UNIX.mode=750; d",
                ],
            )
            st = os.stat(os.path.join(server.home, "f"))
            self.assertEqual(
                (st.st_mtime, stat.S_IMODE(st.st_mode)), (946684799, 0o600)
            )
            mode = stat.S_IMODE(os.stat(os.path.join(server.home, "d")).st_mode)
            self.assertEqual(mode, 0o750)

        return deferToThread(talk).addCallback(check)

    def test_refusals(self) -> Any:
        """Bad times and facts get 501/504, what is missing or outside the home 550."""
        server = _Server(self, tlsSessionReuse="optional")
        secret = os.path.join(server.base, "secret")
        with open(secret, "w") as f:
            f.write("outside")
        before = os.stat(secret).st_mtime
        os.symlink(secret, os.path.join(server.home, "s"))
        commands = [
            "MFMT 20011301000000 s",  # month 13
            "MFMT 20010230000000 s",  # 30 February
            "MFMT 2001 s",
            "MFMT 20010203040506",
            "MFF create=20010203040506; s",
            "MFF UNIX.mode=9999; s",
            "MFF modify=20010203040506 s",
            "MFMT 20010203040506 ../secret",
            "MFMT 20010203040506 s",
            "MFF UNIX.mode=0777; /../../secret",
            "MFMT 20010203040506 missing",
        ]

        def talk() -> list[str]:
            client = server.tls()
            codes = []
            for command in commands:
                try:
                    codes.append(client.sendcmd(command)[:3])
                except ftplib.all_errors as e:
                    codes.append(str(e)[:3])
            client.quit()
            return codes

        def check(codes: list[str]) -> None:
            self.assertEqual(
                codes,
                ["501", "501", "501", "501", "504", "501", "501"] + ["550"] * 4,
            )
            self.assertEqual(os.stat(secret).st_mtime, before)

        return deferToThread(talk).addCallback(check)

    def test_readOnly(self) -> Any:
        """An anonymous (read-only) session cannot change facts."""
        server = _Server(self, tlsRequired="none")
        with open(os.path.join(server.pub, "f"), "wb") as f:
            f.write(b"x")

        def talk() -> list[str]:
            client = ftplib.FTP()
            client.connect("127.0.0.1", server.port, timeout=10)
            client.login()
            codes = []
            for command in ("MFMT 20010203040506 f", "MFF UNIX.mode=0777; f"):
                try:
                    codes.append(client.sendcmd(command)[:3])
                except ftplib.error_perm as e:
                    codes.append(str(e)[:3])
            client.quit()
            return codes

        return deferToThread(talk).addCallback(self.assertEqual, ["550", "550"])


class BookTests(TestCase):
    """
    The book's chapter 17 programs, exactly as printed, against np-ftp on
    port 21 (as they hard-code it).  The programs that name ftp.ibiblio.org
    or ftp.kernel.org run in a private mount namespace whose /etc/hosts maps
    those names to np-ftp's loopback address (root, util-linux unshare).
    """

    def setUp(self) -> None:
        self.host = _privateLoopback()
        base = os.path.abspath(self.mktemp())
        self.pub = os.path.join(base, "pub-root")
        astronomy = os.path.join(self.pub, "pub", "academic", "astronomy")
        kernel = os.path.join(self.pub, "pub", "linux", "kernel")
        old = os.path.join(kernel, "Historic", "old-versions")
        for directory in (
            astronomy,
            os.path.join(kernel, "v1.0"),
            os.path.join(old, "old", "corrupt"),
            os.path.join(old, "impure"),
            os.path.join(old, "tytso"),
        ):
            os.makedirs(directory)
        for name in ("INDEX", "README", "moon.shar.Z"):
            with open(os.path.join(astronomy, name), "wb") as f:
                f.write(blob(100))
        os.mkdir(os.path.join(astronomy, "incoming"))
        with open(os.path.join(old, "linux-0.01.tar.gz"), "wb") as f:
            f.write(b"old")
        self.readme = b"Linux kernel release\nREADME line 2\n"
        with open(os.path.join(kernel, "README"), "wb") as f:
            f.write(self.readme)
        self.patchData = blob(30_000)
        with open(os.path.join(kernel, "v1.0", "patch8.gz"), "wb") as f:
            f.write(self.patchData)
        self.tarball = blob(1_259_161)
        with open(os.path.join(kernel, "v1.0", "linux-1.0.tar.gz"), "wb") as f:
            f.write(self.tarball)
        self.root = os.path.join(base, "homes")
        os.makedirs(os.path.join(self.root, "brandon"))
        self.htpasswd = os.path.join(base, "users")
        addUser(self.htpasswd, "brandon", "abc123")
        service = ftpService(
            FTPSettings(
                listen=(f"tcp:21:interface={self.host}",),
                auth=(f"htpasswd:{self.htpasswd}",),
                root=os.path.join(self.root, "{user}"),
                anonymousRoot=self.pub,
                tlsRequired="none",
                stateDir=os.path.join(base, "state"),
            )
        )
        service.startService()
        self.addCleanup(service.stopService)
        self.hosts = os.path.join(base, "hosts")
        with open(self.hosts, "w") as f:
            f.write(
                f"127.0.0.1 localhost\n{self.host} ftp.ibiblio.org ftp.kernel.org\n"
            )
        self.work = os.path.join(base, "work")
        os.makedirs(self.work)

    def runBook(
        self, name: str, *argv: str, stdin: bytes = b"", hosts: bool = True
    ) -> Any:
        program = os.path.join(self.work, name)
        with open(program, "w") as f:
            f.write(BOOK[name])
        command = [sys.executable, program, *argv]
        if hosts:
            command = [
                "unshare", "-m", "sh", "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"',
                self.hosts, *command,
            ]  # fmt: skip

        def go() -> str:
            # A new session has no controlling terminal: getpass reads stdin.
            done = subprocess.run(
                command,
                cwd=self.work,
                input=stdin,
                capture_output=True,
                timeout=60,
                start_new_session=True,
            )
            output = done.stdout.decode() + done.stderr.decode()
            if done.returncode:
                raise AssertionError(f"{name} exited {done.returncode}:\n{output}")
            return output

        return deferToThread(go)

    def read(self, name: str) -> bytes:
        with open(os.path.join(self.work, name), "rb") as f:
            return f.read()

    def test_connect(self) -> Any:
        """connect.py logs in anonymously and prints the working directory."""
        d = self.runBook("connect.py")
        d.addCallback(
            self.assertEqual,
            "Welcome: 220 np-ftp ready.\nCurrent working directory: /\n",
        )
        return d

    def test_listings(self) -> Any:
        """nlst.py and dir.py list the astronomy directory."""
        d = self.runBook("nlst.py")
        d.addCallback(
            self.assertEqual, "4 entries:\nINDEX\nREADME\nincoming\nmoon.shar.Z\n"
        )
        d.addCallback(lambda _: self.runBook("dir.py"))

        def checkDir(output: str) -> None:
            lines = output.splitlines()
            self.assertEqual(lines[0], "4 entries:")
            self.assertTrue(lines[3].startswith("drwx"))
            self.assertTrue(lines[3].endswith(" incoming"))

        return d.addCallback(checkDir)

    def test_downloads(self) -> Any:
        """asciidl.py, binarydl.py and advbinarydl.py download exact files."""
        d = self.runBook("asciidl.py")
        d.addCallback(lambda _: self.assertEqual(self.read("README"), self.readme))
        d.addCallback(lambda _: self.runBook("binarydl.py"))
        d.addCallback(
            lambda _: self.assertEqual(self.read("patch8.gz"), self.patchData)
        )
        d.addCallback(lambda _: self.runBook("advbinarydl.py"))

        def checkAdvanced(output: str) -> None:
            self.assertEqual(self.read("linux-1.0.tar.gz"), self.tarball)
            self.assertIn("of 1259161 total bytes (100.0%)", output)

        return d.addCallback(checkAdvanced)

    def test_recursive(self) -> Any:
        """recursedl.py walks the directory tree."""
        d = self.runBook("recursedl.py")
        base = "/pub/linux/kernel/Historic/old-versions"
        d.addCallback(
            self.assertEqual,
            f"{base}\n{base}/impure\n{base}/old\n{base}/old/corrupt\n{base}/tytso\n",
        )
        return d

    def test_uploads(self) -> Any:
        """binaryul.py and advbinaryul.py upload byte-exact files as brandon."""
        local = os.path.join(self.work, "true")
        data = blob(27_168)
        with open(local, "wb") as f:
            f.write(data)
        d = self.runBook(
            "binaryul.py",
            self.host,
            "brandon",
            local,
            ".",
            stdin=b"abc123\n",
            hosts=False,
        )
        d.addCallback(
            lambda _: self.runBook(
                "advbinaryul.py",
                self.host,
                "brandon",
                local,
                "/",
                stdin=b"abc123\n",
                hosts=False,
            )
        )

        def check(output: str) -> None:
            self.assertIn("Sent 27168 of 27168 bytes (100.0%)", output)
            with open(os.path.join(self.root, "brandon", "true"), "rb") as f:
                self.assertEqual(f.read(), data)

        return d.addCallback(check)


class ClientsTests(TestCase):
    """
    C{twistd np-ftp} with curl and lftp, FTPS with TLS session reuse required
    (the default).
    """

    def setUp(self) -> None:
        for tool in ("curl", "lftp"):
            if shutil.which(tool) is None:
                raise AssertionError(f"{tool} is missing (scripts/debian-packages.txt)")
        base = os.path.abspath(self.mktemp())
        self.base = base
        self.home = os.path.join(base, "homes", "alice")
        os.makedirs(self.home)
        htpasswd = os.path.join(base, "users")
        addUser(htpasswd, "alice")
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            self.port, self.tlsPort = a.getsockname()[1], b.getsockname()[1]
        self.server = runTwistd(
            self,
            "np-ftp",
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--listen-tls", f"tcp:{self.tlsPort}:interface=127.0.0.1",
            "--auth", f"htpasswd:{htpasswd}",
            "--root", os.path.join(base, "homes", "{user}"),
            "--state-dir", os.path.join(base, "state"),
            cwd=base,
        )  # fmt: skip
        waitForPort(self.port, self.server)
        waitForPort(self.tlsPort, self.server)

    def tool(self, *argv: str) -> Any:
        def go() -> str:
            done = subprocess.run(
                list(argv), cwd=self.base, capture_output=True, timeout=60
            )
            output = done.stdout.decode(errors="replace") + done.stderr.decode(
                errors="replace"
            )
            if done.returncode:
                raise AssertionError(
                    f"{argv[0]} exited {done.returncode}:\n{output}\n"
                    + self.server.output()[-3000:]
                )
            return output

        return deferToThread(go)

    def test_curl(self) -> Any:
        """curl: upload and download with --ssl-reqd, implicit ftps://, -C - resume."""
        data = blob(2_500_000)
        local = os.path.join(self.base, "up.bin")
        with open(local, "wb") as f:
            f.write(data)
        url = f"ftp://127.0.0.1:{self.port}/"
        curl = ("curl", "-sS", "-k", "-u", f"alice:{PASSWORD}")
        d = self.tool(*curl, "--ssl-reqd", "-T", local, url + "big.bin")
        d.addCallback(
            lambda _: self.tool(*curl, "--ssl-reqd", url + "big.bin", "-o", "a.bin")
        )
        d.addCallback(
            lambda _: self.tool(
                *curl, f"ftps://127.0.0.1:{self.tlsPort}/big.bin", "-o", "b.bin"
            )
        )

        def partial(_: object) -> Any:
            with open(os.path.join(self.base, "c.bin"), "wb") as f:
                f.write(data[:1_000_000])
            return self.tool(
                *curl, "--ssl-reqd", "-C", "-", url + "big.bin", "-o", "c.bin"
            )

        d.addCallback(partial)

        def check(_: object) -> None:
            for name in ("a.bin", "b.bin", "c.bin"):
                with open(os.path.join(self.base, name), "rb") as f:
                    self.assertEqual(
                        hashlib.sha256(f.read()).digest(),
                        hashlib.sha256(data).digest(),
                        name,
                    )

        return d.addCallback(check)

    def test_tls13DataWithoutTickets(self) -> None:
        """curl, TLS 1.3: data connections resume the control session, get no ticket."""
        with open(os.path.join(self.base, "up.bin"), "wb") as f:
            f.write(blob(300_000))
        url = f"ftp://127.0.0.1:{self.port}/t.bin"
        curl = ("curl", "-v", "-sS", "-k", "-u", f"alice:{PASSWORD}", "--ssl-reqd")
        d = self.tool(*curl, "--tlsv1.3", "-T", "up.bin", url)

        def check(output: str) -> None:
            # The control connection's handshake, then the data connection's.
            control, _, data = output.partition("Connect data stream passively")
            self.assertIn("SSL connection using TLSv1.3", control)
            self.assertIn("Newsession Ticket", control)
            self.assertIn("SSL connection using TLSv1.3", data)
            self.assertIn("SSL re-using session ID", data)
            self.assertNotIn("Certificate (11)", data)  # resumed
            self.assertNotIn("Newsession Ticket", data)
            with open(os.path.join(self.home, "t.bin"), "rb") as f:
                self.assertEqual(f.read(), blob(300_000))

        return d.addCallback(check)

    def test_lftpUploadsWhole(self) -> Any:
        """lftp (GnuTLS, TLS 1.3) uploads that close at once arrive whole."""
        # An unread session ticket on an upload's data connection makes
        # lftp's close a reset that truncates the upload.
        sizes = [200_000] * 8 + [2_000_000] * 4
        puts = []
        for index, size in enumerate(sizes):
            with open(os.path.join(self.base, f"u{index}.bin"), "wb") as f:
                f.write(blob(size)[index:] + bytes(index))
            puts.append(f"put u{index}.bin")
        script = (
            "set ftp:ssl-force true; set ftp:ssl-protect-data true; "
            "set ssl:verify-certificate no; set net:max-retries 1; "
            'set ssl:priority "NORMAL:-VERS-ALL:+VERS-TLS1.3"; '
            + "; ".join(puts)
            + "; quit"
        )
        d = self.tool(
            "lftp", "-u", f"alice,{PASSWORD}", "-p", str(self.port),
            "-e", script, "127.0.0.1",
        )  # fmt: skip

        def check(output: str) -> None:
            for index in range(len(sizes)):
                name = f"u{index}.bin"
                with open(os.path.join(self.base, name), "rb") as f:
                    sent = f.read()
                with open(os.path.join(self.home, name), "rb") as f:
                    self.assertEqual(len(f.read()), len(sent), name)

        return d.addCallback(check)

    def test_curlClear(self) -> Any:
        """curl, TLS for the login only, downloads byte-exact (sendfile), -C - too."""
        # --ftp-ssl-control: AUTH TLS for the control connection, PROT C for
        # the data connection, which np-ftp's default --tls-required allows.
        data = blob(30_000_001)
        with open(os.path.join(self.home, "big.bin"), "wb") as f:
            f.write(data)
        with open(os.path.join(self.base, "part.bin"), "wb") as f:
            f.write(data[:7_000_000])
        url = f"ftp://127.0.0.1:{self.port}/big.bin"
        curl = ("curl", "-sS", "-k", "-u", f"alice:{PASSWORD}", "--ftp-ssl-control")
        d = self.tool(*curl, url, "-o", "whole.bin")
        d.addCallback(lambda _: self.tool(*curl, "-C", "-", url, "-o", "part.bin"))

        def check(_: object) -> None:
            for name in ("whole.bin", "part.bin"):
                with open(os.path.join(self.base, name), "rb") as f:
                    self.assertEqual(
                        hashlib.sha256(f.read()).digest(),
                        hashlib.sha256(data).digest(),
                        name,
                    )

        return d.addCallback(check)

    def test_lftpMirror(self) -> Any:
        """lftp (ftp:ssl-force) mirrors a tree up and back: byte-exact, times kept."""
        up = os.path.join(self.base, "tree")
        os.makedirs(os.path.join(up, "sub dir"))
        files = ["a.bin", os.path.join("sub dir", "é.txt")]
        with open(os.path.join(up, files[0]), "wb") as f:
            f.write(blob(700_000))
        with open(os.path.join(up, files[1]), "wb") as f:
            f.write("ünïcode\n".encode())
        for index, name in enumerate(files):
            os.utime(os.path.join(up, name), (1_000_000_000, 1_000_000_000 + index))
        script = (
            "set ftp:ssl-force true; set ftp:ssl-protect-data true; "
            "set ssl:verify-certificate no; set net:max-retries 1; "
            "mirror -R tree up; mirror up back; quit"
        )
        d = self.tool(
            "lftp",
            "-u",
            f"alice,{PASSWORD}",
            "-p",
            str(self.port),
            "-e",
            script,
            "127.0.0.1",
        )

        def check(_: object) -> None:
            result = subprocess.run(
                ["diff", "-r", up, os.path.join(self.base, "back")], capture_output=True
            )
            self.assertEqual(result.returncode, 0, result.stdout)
            times = [
                os.stat(os.path.join(where, name)).st_mtime
                for where in (os.path.join(self.home, "up"), self.base + "/back")
                for name in files
            ]
            self.assertEqual(times, [1_000_000_000, 1_000_000_001] * 2)

        return d.addCallback(check)
