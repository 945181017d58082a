"""
Tests for L{netplugins.rpycserver}, L{netplugins.tap.rpyc} and
L{netplugins.examples.bookrpyc}: np-rpyc with RPyC's own clients on
127.0.0.1.
"""

from __future__ import annotations

import io
import os
import socket
import sys
import zlib
from base64 import b64encode
from typing import Any

import rpyc
from rpyc.core.channel import Channel
from rpyc.utils.authenticators import AuthenticationError
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.cred.htpasswd import hashPassword
from netplugins.examples.bookrpyc import LineCounterService
from netplugins.rpycserver import (
    BoundedChannel,
    FrameTooLargeError,
    connect,
    parsePlain,
)
from netplugins.service import listeningPorts
from netplugins.tap.rpyc import Options, RPyCSettings, rpycService
from tests.pki import PKI

#: Foundations of Python Network Programming, ch. 18, rpyc_client.py as
#: printed: it connects to localhost:18861.
BOOK_CLIENT = """\
#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter18/rpyc_client.py
# RPyC client

import rpyc

def main():
    config = {'allow_public_attrs': True}
    proxy = rpyc.connect('localhost', 18861, config=config)
    fileobj = open('testfile.txt')
    linecount = proxy.root.line_counter(fileobj, noisy)
    print('The number of lines in the file was', linecount)

def noisy(string):
    print('Noisy:', repr(string))

if __name__ == '__main__':
    main()
"""

#: The book's testfile.txt, which its client counts.
BOOK_TESTFILE = "Simple\nis\nbetter\nthan\ncomplex.\n"

BOOK_PORT = 18861


class WhoAmIService(rpyc.Service):  # type: ignore[misc]
    """
    Answers who logged in, as RPyC's servers pass it (C{credentials}).
    """

    def on_connect(self, conn: Any) -> None:
        self.conn = conn

    def exposed_whoami(self) -> Any:
        return self.conn._config["credentials"]


class SettingsTests(SynchronousTestCase):
    """
    The command line, the keyword twin and the classic-service guard.
    """

    def test_parse(self) -> None:
        """--service loads the class; --threads and --max-frame-size are read."""
        config = Options()
        config.parseOptions(
            [
                "--service",
                "netplugins.examples.bookrpyc:LineCounterService",
                "--threads",
                "3",
                "--max-frame-size",
                "4096",
            ]
        )
        self.assertEqual(
            config.settings,
            RPyCSettings(
                service="netplugins.examples.bookrpyc:LineCounterService",
                serviceType=LineCounterService,
                threads=3,
                maxFrameSize=4096,
            ),
        )

    def test_badValues(self) -> None:
        """No service, an unloadable one or no rpyc.Service are UsageErrors."""
        for argv in [
            [],
            ["--service", "nosuch.module:Service"],
            ["--service", "netplugins.examples.pathdispatch:app"],
            [
                "--service",
                "netplugins.examples.bookrpyc:LineCounterService",
                "--threads",
                "0",
            ],
        ]:
            self.assertRaises(usage.UsageError, Options().parseOptions, argv)

    def test_classicRefused(self) -> None:
        """SlaveService and ClassicService are refused without --allow-classic."""
        for name in ["SlaveService", "ClassicService"]:
            argv = ["--service", f"rpyc.core.service:{name}"]
            with self.assertRaises(usage.UsageError) as caught:
                Options().parseOptions(argv)
            self.assertIn("--allow-classic", str(caught.exception))
            config = Options()
            config.parseOptions([*argv, "--allow-classic"])
            self.assertTrue(config.settings.allowClassic)

    def test_parsePlain(self) -> None:
        """AUTH PLAIN lines give (user, password); malformed ones give None."""

        def line(message: bytes, command: bytes = b"AUTH PLAIN ") -> bytes:
            return command + b64encode(message)

        self.assertEqual(
            [
                parsePlain(line(b"\0alice\0w\xc3\xb6nder")),
                parsePlain(line(b"alice\0alice\0pw", b"auth plain ")),
                parsePlain(line(b"bob\0alice\0pw")),
                parsePlain(line(b"\0alice")),
                parsePlain(line(b"\0alice\0\xff")),
                parsePlain(b"AUTH PLAIN !!!"),
                parsePlain(line(b"\0alice\0pw", b"AUTH LOGIN ")),
            ],
            [("alice", "wönder"), ("alice", "pw"), None, None, None, None, None],
        )


class _Bytes:
    """
    The stream side of a channel reading from bytes.
    """

    MAX_IO_CHUNK = 65536

    def __init__(self, data: bytes = b""):
        self.data = io.BytesIO(data)
        self.written = b""

    def read(self, count: int) -> bytes:
        return self.data.read(count)

    def close(self) -> None:
        self.data.close()

    def write(self, data: bytes) -> None:
        self.written += data


class ChannelTests(SynchronousTestCase):
    """
    L{BoundedChannel} bounds the frames RPyC would read whole.
    """

    def frame(self, payload: bytes) -> bytes:
        stream = _Bytes()
        Channel(stream).send(payload)
        return stream.written

    def test_withinLimit(self) -> None:
        """Frames at the limit, plain and compressed, are read."""
        plain, compressed = b"x" * 100, b"y" * 5000
        stream = _Bytes(self.frame(plain) + self.frame(compressed))
        channel = BoundedChannel(stream, maxFrameSize=5000)
        self.assertEqual((channel.recv(), channel.recv()), (plain, compressed))

    def test_tooLong(self) -> None:
        """A frame header over the limit is refused before its body is read."""
        header = Channel.FRAME_HEADER.pack(0xFFFFFFF0, 0)
        stream = _Bytes(header)
        channel = BoundedChannel(stream, maxFrameSize=5000)
        self.assertRaises(FrameTooLargeError, channel.recv)
        self.assertTrue(stream.data.closed)

    def test_inflatesTooMuch(self) -> None:
        """A small compressed frame inflating past the limit is refused."""
        bomb = zlib.compress(b"\0" * 10_000_000)
        data = Channel.FRAME_HEADER.pack(len(bomb), 1) + bomb + b"\n"
        channel = BoundedChannel(_Bytes(data), maxFrameSize=65536)
        self.assertRaises(FrameTooLargeError, channel.recv)


class ServedTests(TestCase):
    """
    np-rpyc in this process, RPyC's clients in threads or subprocesses.
    """

    def serve(self, service: Any = LineCounterService, **kwargs: Any) -> int:
        """
        Start np-rpyc hosting C{service}; return its port.
        """
        kwargs.setdefault("listen", ("tcp:0:interface=127.0.0.1",))
        hosting = rpycService(
            RPyCSettings(serviceType=service, stateDir=self.mktemp(), **kwargs)
        )
        hosting.startService()
        self.addCleanup(hosting.stopService)
        [(_, address, _)] = listeningPorts(hosting)
        return int(address.port)

    def tlsLogin(self, **kwargs: Any) -> tuple[int, Any]:
        """
        Serve L{WhoAmIService} over TLS to alice (password wonderland); its
        port and a client context trusting it.
        """
        import ssl

        users = self.mktemp()
        with open(users, "w") as f:
            f.write("alice:" + hashPassword("wonderland", cost=4) + "\n")
        pki = PKI(os.path.abspath(self.mktemp()))
        cert, key = pki.serverCertificate("localhost", "127.0.0.1")
        port = self.serve(
            WhoAmIService,
            listen=(),
            listenTLS=("tcp:0:interface=127.0.0.1",),
            tlsCert=(cert,),
            tlsKey=(key,),
            auth=(f"htpasswd:{users}",),
            **kwargs,
        )
        self.caPath = pki.caPath
        return port, ssl.create_default_context(cafile=pki.caPath)

    @inlineCallbacks
    def test_bookClient(self) -> Any:
        """The book's rpyc_client.py as printed, on its port 18861, prints its lines."""
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", BOOK_PORT))
            except OSError as e:
                self.fail(f"the book's client needs 127.0.0.1:{BOOK_PORT}: {e}")
        with capturedLogs() as events:
            self.serve(listen=(f"tcp:{BOOK_PORT}:interface=127.0.0.1",))
            directory = os.path.abspath(self.mktemp())
            os.makedirs(directory)
            for name, text in [
                ("rpyc_client.py", BOOK_CLIENT),
                ("testfile.txt", BOOK_TESTFILE),
            ]:
                with open(os.path.join(directory, name), "w") as f:
                    f.write(text)
            out, err, code = yield getProcessOutputAndValue(
                sys.executable, ["rpyc_client.py"], env=os.environ, path=directory
            )
        self.assertEqual(
            (out.decode(), err, code),
            (
                "Noisy: 'Simple\\n'\n"
                "Noisy: 'is\\n'\n"
                "Noisy: 'better\\n'\n"
                "Noisy: 'than\\n'\n"
                "Noisy: 'complex.\\n'\n"
                "The number of lines in the file was 5\n",
                b"",
                0,
            ),
        )
        self.assertIn(
            "Client has invoked exposed_line_counter()",
            [formatEvent(e) for e in events],
        )

    @inlineCallbacks
    def test_login(self) -> Any:
        """Over TLS, connect() logs in; the service sees the user as credentials."""
        port, context = self.tlsLogin()

        def session() -> Any:
            with connect(
                "127.0.0.1",
                port,
                "alice",
                "wonderland",
                sslContext=context,
                serverHostname="localhost",
            ) as conn:
                return conn.root.whoami()

        self.assertEqual((yield deferToThread(session)), "alice")

    @inlineCallbacks
    def test_loginRefused(self) -> Any:
        """A wrong password, or RPyC without a login, gets -ERR and no session."""
        port, context = self.tlsLogin()

        def wrong() -> str:
            try:
                connect(
                    "127.0.0.1",
                    port,
                    "alice",
                    "rabbit",
                    sslContext=context,
                    serverHostname="localhost",
                )
            except AuthenticationError as e:
                return str(e)
            return "logged in"

        def withoutLogin() -> str:
            try:
                conn = rpyc.ssl_connect("localhost", port, ca_certs=self.caPath)
                return str(conn.root)
            except EOFError:
                return "closed"

        self.assertEqual(
            [(yield deferToThread(wrong)), (yield deferToThread(withoutLogin))],
            ["-ERR login failed", "closed"],
        )

    @inlineCallbacks
    def test_plaintextLoginRefused(self) -> Any:
        """--auth over a cleartext listener refuses the login, unless allowed."""
        users = self.mktemp()
        with open(users, "w") as f:
            f.write("alice:" + hashPassword("wonderland", cost=4) + "\n")
        results = []
        for allowed in [False, True]:
            port = self.serve(
                WhoAmIService, auth=(f"htpasswd:{users}",), allowPlaintextAuth=allowed
            )

            def session(port: int = port) -> str:
                try:
                    with connect("127.0.0.1", port, "alice", "wonderland") as conn:
                        return str(conn.root.whoami())
                except AuthenticationError as e:
                    return str(e)

            results.append((yield deferToThread(session)))
        self.assertEqual(results, ["-ERR login refused without TLS", "alice"])

    @inlineCallbacks
    def test_sessionsBounded(self) -> Any:
        """With --threads 1, a second session is refused and logged; the first works."""
        port = self.serve(WhoAmIService, threads=1)
        first = yield deferToThread(rpyc.connect, "127.0.0.1", port)
        # Closing waits for the server's answer: not on the reactor thread.
        self.addCleanup(deferToThread, first.close)
        self.assertIsNone((yield deferToThread(lambda: first.root.whoami())))

        def second() -> str:
            try:
                conn = rpyc.connect("127.0.0.1", port)
                return str(conn.root)
            except EOFError:
                return "closed"

        with capturedLogs() as events:
            refused = yield deferToThread(second)
        self.assertEqual(refused, "closed")
        self.assertIn(
            "all 1 sessions are busy", " ".join(formatEvent(e) for e in events)
        )

    @inlineCallbacks
    def test_classicAllowed(self) -> Any:
        """With --allow-classic, rpyc.classic.connect runs code here, warned of."""
        from rpyc.core.service import SlaveService

        with capturedLogs() as events:
            port = self.serve(SlaveService, allowClassic=True)

        def session() -> int:
            conn = rpyc.classic.connect("127.0.0.1", port)
            try:
                return int(conn.modules.os.getpid())
            finally:
                conn.close()

        self.assertEqual((yield deferToThread(session)), os.getpid())
        self.assertIn(
            "can run any code as this process",
            " ".join(formatEvent(e) for e in events),
        )
