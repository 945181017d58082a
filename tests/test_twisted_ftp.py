"""
Twisted's own FTP server with C{--auth htpasswd:FILE}, driven by stdlib C{ftplib}.

Twisted's C{file:} checker fails every FTP login because FTP passes C{str}
credentials; the htpasswd checker must work there unchanged.
"""

from __future__ import annotations

import ftplib
import io
from collections.abc import Generator
from pathlib import Path
from typing import Any, cast

import bcrypt
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols.ftp import FTPFactory, FTPRealm
from twisted.tap.ftp import Options as FTPOptions
from twisted.trial.unittest import TestCase

from netplugins.cred.htpasswd import HtpasswdChecker

CONTENT = b"hello from an htpasswd login\n"


class TwistedFTPTests(TestCase):
    """
    C{twistd ftp --auth htpasswd:FILE}, as a user would run it, on 127.0.0.1.
    """

    def setUp(self) -> None:
        base = Path(self.mktemp()).resolve()
        home = base / "home" / "alice"
        home.mkdir(parents=True)
        (home / "hello.txt").write_bytes(CONTENT)
        anonymous = base / "anonymous"
        anonymous.mkdir()
        users = base / "users"
        hashed = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(4)).decode()
        users.write_text(f"# ftp users\nalice:$2y{hashed[3:]}\n")

        # The same parsing and portal as twisted.tap.ftp.makeService, which
        # has no option for the users' home directory.
        options = FTPOptions()
        options.parseOptions(["--auth", f"htpasswd:{users}", "--root", str(anonymous)])
        self.assertTrue(
            any(isinstance(c, HtpasswdChecker) for c in options["credCheckers"])
        )
        realm = FTPRealm(str(anonymous), str(base / "home"))
        self.factory = FTPFactory(
            Portal(realm, options["credCheckers"]), options["userAnonymous"]
        )
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = cast(IPv4Address, port.getHost()).port

    @inlineCallbacks
    def serverClosed(self) -> Generator[Deferred[Any], Any, None]:
        """
        Wait until the server has closed every connection, so the reactor is
        clean when the test ends.
        """
        for _ in range(500):
            if not self.factory.connectionCount:
                return
            yield deferLater(reactor, 0.01, lambda: None)
        self.fail("FTP connections still open")

    def client(self) -> ftplib.FTP:
        """
        An ftplib client connected to the server.
        """
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", self.port, timeout=10)
        return ftp

    @inlineCallbacks
    def test_loginListRetrieve(self) -> Generator[Deferred[Any], Any, None]:
        """
        The right password logs in; the user lists and retrieves a home file.
        """

        def session() -> tuple[str, list[str], bytes]:
            ftp = self.client()
            try:
                reply = ftp.login("alice", "alice-pw")
                listing: list[str] = []
                ftp.retrlines("LIST", listing.append)
                data = io.BytesIO()
                ftp.retrbinary("RETR hello.txt", data.write)
                ftp.quit()
            finally:
                ftp.close()
            return reply, listing, data.getvalue()

        reply, listing, data = yield deferToThread(session)
        yield self.serverClosed()
        self.assertTrue(reply.startswith("230"), reply)
        self.assertEqual([line.split()[-1] for line in listing], ["hello.txt"])
        self.assertEqual(data, CONTENT)

    @inlineCallbacks
    def test_wrongPassword(self) -> Generator[Deferred[Any], Any, None]:
        """
        A wrong password and an unknown user both get 530.
        """

        def attempt(user: str, password: str) -> str:
            ftp = self.client()
            try:
                ftp.login(user, password)
            except ftplib.error_perm as e:
                return str(e)
            finally:
                ftp.close()
            return "logged in"

        wrong = yield deferToThread(attempt, "alice", "alice-pW")
        unknown = yield deferToThread(attempt, "mallory", "alice-pw")
        yield self.serverClosed()
        self.assertTrue(wrong.startswith("530"), wrong)
        self.assertTrue(unknown.startswith("530"), unknown)
