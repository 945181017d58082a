"""
netplugins' checkers inside Twisted's own plugins, driven by stdlib clients.

 - C{twistd -n ftp --auth ldap:config=...}: a real twistd subprocess against the
   private slapd of L{tests.slapd}; C{ftplib} logs in (FTP hands the checker
   C{str} credentials) or gets C{530}.
 - C{twistd mail --auth htpasswd:FILE}: Twisted's mail tap Options and
   C{makeService}, run in this process; C{smtplib} logs in (C{bytes}
   credentials) or gets C{535}.  One change a C{.tac} must make: the stock
   C{ESMTPFactory} offers only C{AUTH CRAM-MD5}, which needs the plaintext
   password on the server (C{IUsernameHashedPassword}); no checker of hashed
   or directory passwords can verify it, Twisted's own C{file:} included.  The
   test offers C{PLAIN} and C{LOGIN} instead (Twisted's own
   C{twisted.mail._cred.PLAINCredentials} and C{LOGINCredentials}), on the
   factory C{makeService}
   built.
 - POP3: C{twistd mail} never gives C{--auth} to POP3; POP3 logins go to each
   C{--maildirdbmdomain}'s own portal (its C{--user} passwords).  Worse, on
   Python 3 the tap stores domain names as C{str} while POP3 looks them up as
   C{bytes}, so stock C{twistd mail} refuses every POP3 login (pinned below),
   and its C{--user NAME=PASSWORD} raises C{TypeError} (its DirDBM wants
   C{bytes} keys), so the tap can define no POP3 user at all.
   Twisted's own POP3 server accepts the htpasswd checker once a C{.tac}
   registers it on the domain's portal; C{poplib} then logs in or gets C{-ERR}.
"""

from __future__ import annotations

import ftplib
import os
import poplib
import smtplib
from collections.abc import Generator
from pathlib import Path
from typing import Any, cast

from twisted.application.internet import StreamServerEndpointService
from twisted.cred import strcred
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.mail import maildir, protocols
from twisted.mail import tap as mailtap
from twisted.mail._cred import LOGINCredentials, PLAINCredentials  # Twisted's own
from twisted.mail.mail import MailService
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.cred.htpasswd import HtpasswdChecker, hashPassword
from tests.slapd import (
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    WEIRD_UID,
    sharedSlapd,
)
from tests.support import freePort, runTwistd, waitForPort


def writeUsers(case: SynchronousTestCase) -> str:
    """
    An htpasswd file with alice (bcrypt) and bob (argon2id).
    """
    path = Path(case.mktemp())
    path.write_text(
        f"alice:{hashPassword('alice-pw', cost=4)}\n"
        f"bob:{hashPassword('bob-pw', scheme='argon2id')}\n"
    )
    return str(path.resolve())


class TwistdFTPWithLDAPTests(SynchronousTestCase):
    """
    C{twistd -n ftp --auth ldap:config=FILE} as a user runs it.
    """

    def setUp(self) -> None:
        directory = sharedSlapd()
        work = Path(self.mktemp()).resolve()
        (work / "anonymous").mkdir(parents=True)
        secret = work / "reader.secret"
        secret.write_text(SERVICE_PASSWORD + "\n")
        config = work / "ldap.ini"
        config.write_text(
            "[ldap]\n"
            f"url = {directory.url()}/{PEOPLE}?uid?sub\n"
            f"bind_dn = {SERVICE_DN}\n"
            "bind_password_file = reader.secret\n"
            f"ca_file = {directory.caFile}\n"
            "starttls = yes\n"
        )
        self.log = work / "twistd.log"
        # Twisted's ftp tap takes a bare port number and listens on every
        # interface; a free loopback port is the best a test can do.
        self.port = freePort()
        self.process = runTwistd(
            self,
            f"--logfile={self.log}",
            "ftp",
            "--port",
            str(self.port),
            "--root",
            str(work / "anonymous"),
            "--auth",
            f"ldap:config={config}",
            cwd=work,
        )
        try:
            waitForPort(self.port, self.process)
        except AssertionError as e:
            self.fail(f"{e}\n{self.log.read_text()}")

    def login(self, user: str, password: str) -> str:
        ftp = ftplib.FTP()
        # Twisted's FTP decodes commands as latin-1, not UTF-8 (RFC 2640).
        ftp.encoding = "latin-1"
        ftp.connect("127.0.0.1", self.port, timeout=30)
        self.addCleanup(ftp.close)
        return ftp.login(user, password)

    def test_rightUser(self) -> None:
        """Directory users log in over FTP (230), a latin-1 odd uid included."""
        # Directory users log in (C{230}), the one whose uid holds C{*(=,} and a non-
        # ASCII letter included (sent in latin-1, as Twisted's FTP reads it).
        self.assertTrue(self.login("alice", "alice-pw").startswith("230"))
        self.assertTrue(self.login(WEIRD_UID, "zoë-pw").startswith("230"))

    def test_wrongRefused(self) -> None:
        """
        A wrong password, an unknown user and a filter injection get C{530}.
        """
        for user, password in [("alice", "bob-pw"), ("nobody", "x"), ("*", "x")]:
            error = self.assertRaises(ftplib.error_perm, self.login, user, password)
            self.assertTrue(str(error).startswith("530"), str(error))


class TwistedMailTests(TestCase):
    """
    Twisted's mail tap (C{twistd mail}'s Options and makeService) with
    C{--auth htpasswd:FILE}, on 127.0.0.1.
    """

    def setUp(self) -> None:
        self.users = writeUsers(self)
        self.maildirs = Path(self.mktemp()).resolve()
        self.maildirs.mkdir()

    def mailOptions(self, *args: str) -> mailtap.Options:
        options = mailtap.Options()
        options.parseOptions(
            [
                "--maildirdbmdomain",
                f"example.com={self.maildirs}",
                "--auth",
                f"htpasswd:{self.users}",
                *args,
            ]
        )
        self.assertTrue(
            any(isinstance(c, HtpasswdChecker) for c in options["credCheckers"])
        )
        return options

    def startService(self, options: mailtap.Options) -> StreamServerEndpointService:
        service = mailtap.makeService(options)
        listeners = [s for s in service if isinstance(s, StreamServerEndpointService)]
        self.assertEqual(len(listeners), 1)
        service.startService()
        self.addCleanup(service.stopService)
        return listeners[0]

    def smtpLogin(self, port: int, user: str, password: str) -> Deferred[Any]:
        def login() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.ehlo()
                return cast(tuple[int, bytes], smtp.login(user, password))

        return deferToThread(login)

    @inlineCallbacks
    def test_smtpAuth(self) -> Generator[Deferred[Any], Any, None]:
        """smtplib logs in over AUTH PLAIN with htpasswd (235); wrong ones get 535."""
        # C{smtplib} logs in over AUTH PLAIN with an htpasswd password (C{235}), and
        # gets C{535} for a wrong one or an unknown user.
        port = freePort()
        options = self.mailOptions(
            "--esmtp",
            "--hostname",
            "localhost",
            "--disable-anonymous",
            "--no-pop3",
            "--smtp",
            f"tcp:{port}:interface=127.0.0.1",
        )
        listener = self.startService(options)
        factory = cast(protocols.ESMTPFactory, listener.factory)
        self.assertEqual(list(factory.challengers), [b"CRAM-MD5"])
        cast(Any, factory).challengers = {
            b"PLAIN": PLAINCredentials,
            b"LOGIN": LOGINCredentials,
        }
        code, _ = yield self.smtpLogin(port, "alice", "alice-pw")
        self.assertEqual(code, 235)
        code, _ = yield self.smtpLogin(port, "bob", "bob-pw")
        self.assertEqual(code, 235)
        for user, password in [("alice", "bob-pw"), ("mallory", "alice-pw")]:
            failure = yield self.assertFailure(
                self.smtpLogin(port, user, password), smtplib.SMTPAuthenticationError
            )
            self.assertEqual(failure.smtp_code, 535)

    def popLogin(self, port: int, user: str, password: str) -> Deferred[Any]:
        def login() -> bytes:
            pop = poplib.POP3("127.0.0.1", port, timeout=30)
            try:
                pop.user(user)
                return cast(bytes, pop.pass_(password))
            finally:
                pop.close()

        return deferToThread(login)

    @inlineCallbacks
    def test_stockPOP3IgnoresAuth(self) -> Generator[Deferred[Any], Any, None]:
        """Stock twistd mail refuses POP3 logins however the password is checked."""
        # Stock C{twistd mail} refuses POP3 logins however the password is checked:
        # C{--auth} is not given to POP3, and its domain table has C{str} keys that POP3
        # looks up as C{bytes}.
        port = freePort()
        options = self.mailOptions(
            "--no-smtp", "--pop3", f"tcp:{port}:interface=127.0.0.1"
        )
        self.startService(options)
        # What POP3 looks up is b"example.com".
        self.assertEqual(list(options.service.domains), ["example.com"])
        failure = yield self.assertFailure(
            self.popLogin(port, "alice@example.com", "alice-pw"), poplib.error_proto
        )
        self.assertEqual(failure.args[0], b"-ERR Authentication failed")

    @inlineCallbacks
    def test_pop3(self) -> Generator[Deferred[Any], Any, None]:
        """Twisted's POP3 with the htpasswd checker takes the htpasswd password."""
        # Twisted's own POP3 server with the htpasswd checker on its domain's portal
        # (what a C{.tac} does): C{poplib} logs in with the htpasswd password, not the
        # domain's own, and wrong ones get C{-ERR}.
        service = MailService()
        domain = maildir.MaildirDirdbmDomain(service, os.fsencode(self.maildirs))
        # The domain's user list says who has a mailbox; its passwords are
        # not used for USER/PASS once the htpasswd checker is registered.
        domain.addUser(b"alice", b"not-this-one")
        service.addDomain(b"example.com", domain)
        checker = strcred.makeChecker(f"htpasswd:{self.users}")
        service.portals[b"example.com"].registerChecker(checker)
        listening = reactor.listenTCP(  # type: ignore[attr-defined]
            0, service.getPOP3Factory(), interface="127.0.0.1"
        )
        self.addCleanup(listening.stopListening)
        port = cast(IPv4Address, listening.getHost()).port

        reply = yield self.popLogin(port, "alice@example.com", "alice-pw")
        self.assertTrue(reply.startswith(b"+OK"), reply)
        for password in ["not-this-one", "bob-pw", ""]:
            yield self.assertFailure(
                self.popLogin(port, "alice@example.com", password), poplib.error_proto
            )
