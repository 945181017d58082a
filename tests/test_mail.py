"""
Tests for L{netplugins.tap.mail} (np-mail) and C{tac/mailhost.tac}: a message
sent with smtplib over STARTTLS with credentials is read back with poplib and
imaplib, first in process (htpasswd), then from the tac against LDAP.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import random
import smtplib
import socket
import ssl
from email.message import EmailMessage
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.mail.pop3 import POP3Server
from netplugins.mail.smtp.server import SMTPServer
from netplugins.service import listeningPorts
from netplugins.tap.mail import MailHostSettings, Options, mailService, makeService
from tests.mailfixtures import waitForSessions, writeHtpasswd
from tests.pki import PKI
from tests.support import runTwistd, waitForPort

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAC = os.path.join(HERE, "tac", "mailhost.tac")


def roundTrip(
    ports: dict[str, int],
    context: ssl.SSLContext,
    sender: tuple[str, str],
    reader: tuple[str, str],
    to: str,
) -> dict[str, Any]:
    """
    Send a message with smtplib (submission, STARTTLS, AUTH as C{sender});
    read it back as C{reader} with poplib (STLS) and imaplib (STARTTLS).
    """
    message = EmailMessage()
    # Submission accepts only the sender's own addresses.
    message["From"] = f"{sender[0]}@{to.rpartition('@')[2]}"
    message["To"] = to
    message["Subject"] = "round trip"
    message.set_content("Hello through SMTP, POP3 and IMAP.\n")
    message.add_attachment(
        b"\x00\x01binary",
        maintype="application",
        subtype="octet-stream",
        filename="x.bin",
    )
    with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=10) as smtp:
        smtp.starttls(context=context)
        smtp.login(*sender)
        smtp.send_message(message)
    imap = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=10)
    try:
        capabilities = imap.capabilities
        imap.starttls(context)
        imap.login(*reader)
        imap.select("INBOX")
        _, found = imap.search(None, "ALL")
        _, fetched = imap.fetch(
            found[0].split()[-1], "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"
        )
        imap.logout()
    except BaseException:
        imap.shutdown()
        raise
    pop = poplib.POP3("127.0.0.1", ports["pop3"], timeout=10)
    try:
        pop.stls(context)
        pop.user(reader[0])
        pop.pass_(reader[1])
        count, _ = pop.stat()
        retrieved = b"\r\n".join(pop.retr(count)[1])
    finally:
        pop.quit()
    return {
        "imapCapabilities": capabilities,
        "imapSubject": fetched[0][1],  # type: ignore[index]
        "popMessage": retrieved,
    }


class OptionsTests(SynchronousTestCase):
    """
    C{twistd np-mail} options.
    """

    def test_parse(self) -> None:
        """Endpoints per protocol are collected; --listen is refused."""
        options = Options()
        options.parseOptions(
            [
                "--smtp",
                "tcp:25",
                "--submission",
                "tcp:587",
                "--imaps",
                "tcp:993",
                "--pop3",
                "tcp:110",
                "--domain",
                "example.org",
            ]
        )
        self.assertEqual(
            options.settings,
            MailHostSettings(
                smtp=("tcp:25",),
                submission=("tcp:587",),
                imaps=("tcp:993",),
                pop3=("tcp:110",),
                domains=("example.org",),
            ),
        )
        self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--listen", "tcp:25"]
        )

    def test_keywordTwinRefuses(self) -> None:
        """The twin refuses listen and bad endpoints as the command line does."""
        self.assertRaises(ValueError, mailService, MailHostSettings(listen=("tcp:25",)))
        error = self.assertRaises(
            ValueError, MailHostSettings(imaps=("nope:1",)).common
        )
        usageError = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--imaps", "nope:1"]
        )
        self.assertEqual(str(error), str(usageError))


class DeadlineOptionsTests(SynchronousTestCase):
    """
    The shared deadline options reach every mail protocol's sessions.
    """

    def test_deadlinesReachSessions(self) -> None:
        """--preauth-timeout and --close-grace reach SMTP, POP3 and IMAP."""
        from twisted.internet.testing import MemoryReactorClock

        from netplugins.service import ListeningService

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        service = mailService(
            MailHostSettings(
                submission=("tcp:587",),
                pop3=("tcp:110",),
                imap=("tcp:143",),
                preAuthTimeout=7,
                closeGrace=0.5,
                auth=(f"htpasswd:{writeHtpasswd(directory)}",),
                stateDir=directory,
            ),
            reactor=MemoryReactorClock(),
        )
        factories = {}
        stack: list[Any] = [service]
        while stack:
            child = stack.pop()
            if isinstance(child, ListeningService):
                factories[child.description] = child.factory
            stack.extend(getattr(child, "services", []))
        smtp, pop3, imap = (factories[f"tcp:{p}"] for p in (587, 110, 143))
        self.assertEqual(
            (
                smtp.config.preAuthTimeout,
                pop3.config.preAuthTimeout,
                imap.config.preAuthTimeout,
                smtp.config.closeGrace,
                pop3.config.closeGrace,
                imap.config.closeGrace,
            ),
            (7, 7, 7, 0.5, 0.5, 0.5),
        )


class SMTPOptionTests(SynchronousTestCase):
    """
    C{twistd np-mail --postmaster} and C{--aliases}.
    """

    def test_postmasterReachesSMTP(self) -> None:
        """--postmaster and --aliases reach np-mail's SMTP and submission."""
        from twisted.internet.testing import MemoryReactorClock

        from netplugins.service import ListeningService

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        aliases = os.path.join(directory, "aliases")
        with open(aliases, "w") as f:
            f.write("team: alice, bob\n")
        options = Options()
        options.parseOptions(
            [
                "--aliases",
                aliases,
                "--smtp",
                "tcp:25",
                "--submission",
                "tcp:587",
                "--postmaster",
                "alice",
                "--auth",
                f"htpasswd:{writeHtpasswd(directory)}",
                "--state-dir",
                directory,
            ]
        )
        service = makeService(options, reactor=MemoryReactorClock())
        postmasters = {}
        stack: list[Any] = [service]
        while stack:
            child = stack.pop()
            if isinstance(child, ListeningService):
                factory = child.factory
                postmasters[child.description] = (
                    factory.config.postmaster,
                    factory.users.aliases.table,
                )
            stack.extend(getattr(child, "services", []))
        team = {"team": ("alice", "bob")}
        self.assertEqual(
            postmasters, {"tcp:25": ("alice", team), "tcp:587": ("alice", team)}
        )

    def test_badPostmaster(self) -> None:
        """A --postmaster that cannot name a Maildir is a one-line usage error."""
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--postmaster", "../x"]
        )
        self.assertEqual(
            str(error), "Parameter type enforcement failed: bad user name '../x'"
        )


class ConnectionCapTests(SynchronousTestCase):
    """
    np-mail's connection caps count every protocol together.
    """

    def test_capsAcrossProtocols(self) -> None:
        """--max-connections 2, clients of SMTP, POP3 and IMAP: the third is refused."""
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import MemoryReactorClock, StringTransport

        from netplugins.service import ListeningService

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        service = mailService(
            MailHostSettings(
                domains=("example.org",),
                smtp=("tcp:25",),
                pop3=("tcp:110",),
                imap=("tcp:143",),
                maxConnections=2,
                auth=(f"htpasswd:{writeHtpasswd(directory)}",),
                stateDir=directory,
            ),
            reactor=MemoryReactorClock(),
        )
        factories = {}
        stack: list[Any] = [service]
        while stack:
            child = stack.pop()
            if isinstance(child, ListeningService):
                factories[child.description] = child.factory
            stack.extend(getattr(child, "services", []))
        transports: list[StringTransport] = []
        for description in ["tcp:25", "tcp:110", "tcp:143"]:
            peer = IPv4Address("TCP", "192.0.2.1", 40000 + len(transports))
            protocol = factories[description].buildProtocol(peer)
            transport = StringTransport(peerAddress=peer)
            protocol.makeConnection(transport)
            transports.append(transport)
        self.assertEqual([t.disconnecting for t in transports], [False, False, True])
        self.assertEqual(transports[2].value(), b"")


def inProcessHost(testCase: TestCase) -> tuple[dict[str, int], ssl.SSLContext]:
    """
    np-mail started in this process for C{testCase} (stopped at its cleanup):
    htpasswd users, domain C{example.org}, SMTP, submission, POP3 and IMAP on
    loopback ports with STARTTLS.  Return the ports by name and a client
    context trusting its certificate.
    """
    directory = os.path.abspath(testCase.mktemp())
    pki = PKI(os.path.join(directory, "pki"))
    cert, key = pki.serverCertificate("localhost", "127.0.0.1")
    waitForSessions(testCase, SMTPServer)
    waitForSessions(testCase, POP3Server)
    loopback = ("tcp:0:interface=127.0.0.1",)
    service = mailService(
        MailHostSettings(
            domains=("example.org",),
            hostname="mail.test",
            smtp=loopback,
            submission=loopback,
            pop3=loopback,
            imap=loopback,
            tlsCert=(cert,),
            tlsKey=(key,),
            auth=(f"htpasswd:{writeHtpasswd(directory)}",),
            stateDir=directory,
        )
    )
    service.startService()
    testCase.addCleanup(service.stopService)
    names = {
        "np-smtp": "smtp",
        "np-smtp submission": "submission",
        "np-pop3": "pop3",
        "np-imap": "imap",
    }
    ports = {names[n]: a.port for n, a, _ in listeningPorts(service)}
    return ports, ssl.create_default_context(cafile=pki.caPath)


class InProcessTests(TestCase):
    """
    np-mail in this process with htpasswd users.
    """

    def test_roundTrip(self) -> Deferred[None]:
        """smtplib → Maildir → imaplib and poplib, all over STARTTLS."""
        ports, context = inProcessHost(self)
        self.assertEqual(sorted(ports), ["imap", "pop3", "smtp", "submission"])

        def check(result: dict[str, Any]) -> None:
            self.assertIn("LOGINDISABLED", result["imapCapabilities"])
            self.assertEqual(result["imapSubject"].strip(), b"Subject: round trip")
            self.assertIn(b"Subject: round trip", result["popMessage"])
            self.assertIn(b"with ESMTPSA", result["popMessage"])
            self.assertIn(b'filename="x.bin"', result["popMessage"])

        return deferToThread(
            roundTrip,
            ports,
            context,
            ("alice", "alice-password"),
            ("bob", "bob-password"),
            "bob@example.org",
        ).addCallback(check)


_PORTS = {
    "smtp": 25,
    "submission": 587,
    "smtps": 465,
    "imap": 143,
    "imaps": 993,
    "pop3": 110,
    "pop3s": 995,
}


def freePortBase() -> int:
    """
    A base such that base + each well-known mail port is free on 127.0.0.1.
    """
    for _ in range(50):
        base = random.randrange(20000, 50000, 1000)
        try:
            for port in _PORTS.values():
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range")


def startMailhostTac(
    testCase: SynchronousTestCase, directory: str, cert: str, key: str
) -> dict[str, int]:
    """
    Run C{tac/mailhost.tac} under twistd for C{testCase} (stopped at its
    cleanup), its state in C{directory}, certificate C{cert} and C{key},
    domain C{ex.org}, users from the shared slapd (L{tests.slapd}, whose
    search account checks recipients).  Return the port of each endpoint
    (C{"smtp"}, C{"submission"}, C{"smtps"}, C{"imap"}, ...) once all listen.
    """
    from tests.slapd import PEOPLE, SERVICE_DN, SERVICE_PASSWORD, sharedSlapd

    slapd = sharedSlapd()
    secret = os.path.join(directory, "ldap.secret")
    with open(secret, "w") as f:
        f.write(SERVICE_PASSWORD + "\n")
    config = os.path.join(directory, "ldap.ini")
    with open(config, "w") as f:
        f.write(
            "\n".join(
                [
                    "[ldap]",
                    f"url = {slapd.url()}/{PEOPLE}?uid?sub",
                    f"bind_dn = {SERVICE_DN}",
                    f"bind_password_file = {secret}",
                    "starttls = yes",
                    f"ca_file = {slapd.caFile}",
                ]
            )
            + "\n"
        )
    base = freePortBase()
    process = runTwistd(
        testCase,
        "--python",
        TAC,
        cwd=directory,
        env=dict(
            MAILHOST_STATE_DIR=directory,
            MAILHOST_DOMAINS="ex.org",
            MAILHOST_AUTH=f"ldap:config={config}",
            MAILHOST_TLS_CERT=cert,
            MAILHOST_TLS_KEY=key,
            MAILHOST_INTERFACE="127.0.0.1",
            MAILHOST_PORT_BASE=str(base),
        ),
    )
    ports = {name: base + port for name, port in _PORTS.items()}
    for port in ports.values():
        waitForPort(port, process)
    return ports


class MailhostTacTests(SynchronousTestCase):
    """
    C{tac/mailhost.tac} under twistd, against a private slapd.
    """

    def test_ldapRoundTrip(self) -> None:
        """LDAP users send with smtplib over STARTTLS; the recipient reads it back."""
        from tests import slapd as fixture

        directory = os.path.abspath(self.mktemp())
        pki = PKI(os.path.join(directory, "pki"))
        cert, key = pki.serverCertificate("localhost", "127.0.0.1")
        ports = startMailhostTac(self, directory, cert, key)
        context = ssl.create_default_context(cafile=pki.caPath)
        result = roundTrip(
            ports, context, ("alice", "alice-pw"), ("bob", "bob-pw"), "bob@ex.org"
        )
        self.assertEqual(result["imapSubject"].strip(), b"Subject: round trip")
        self.assertIn(b"Subject: round trip", result["popMessage"])
        # Unknown LDAP users and foreign domains are refused at RCPT.
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=10) as smtp:
            smtp.starttls(context=context)
            self.assertEqual(smtp.ehlo()[0], 250)
            self.assertEqual(smtp.mail("x@remote.test")[0], 250)
            self.assertEqual(smtp.rcpt("nobody@ex.org")[0], 550)
            self.assertEqual(smtp.rcpt("v@victim.test")[0], 550)
            # A mail address unlike the uid reaches its user (dana).
            self.assertEqual(smtp.rcpt(fixture.DOTTED_MAIL[0])[0], 250)
        # Submission: only the user's own LDAP mail values as sender.
        with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=10) as smtp:
            smtp.starttls(context=context)
            smtp.login(fixture.DOTTED_UID, fixture.DOTTED_PASSWORD)
            self.assertEqual(smtp.mail("alice@ex.org")[0], 553)
            self.assertEqual(smtp.mail(fixture.DOTTED_MAIL[1])[0], 250)
            self.assertEqual(smtp.rcpt("alice@ex.org")[0], 250)
            self.assertEqual(smtp.data(b"Subject: from dana\r\n\r\nhi\r\n")[0], 250)
        # Implicit TLS ports answer too.
        with socket.create_connection(("127.0.0.1", ports["pop3s"]), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as secure:
                self.assertTrue(secure.recv(100).startswith(b"+OK"))
