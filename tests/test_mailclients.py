"""
End-to-end tests of mail hosts with real mail clients from Debian and PyPI,
against C{tac/mailhost.tac} (users in the shared slapd, L{tests.slapd}) where
a class sets C{ldap}, else C{twistd np-mail} (htpasswd users): fetchmail
(POP3 with STLS, a non-ASCII password, against both), getmail6 (POP3-SSL
into a Maildir, the Return-Path np-smtp records), mbsync (IMAPS: a folder
deleted and created again within the second gets a new UIDVALIDITY, with
np-mail; a two-way sync of flags, deletions and moves with CONDSTORE
offered, which isync 1.4 does not use), offlineimap (a two-way IMAPS sync),
neomutt (batch sending through submission; its IMAPS index driven in a
pseudo-terminal, with np-mail), msmtp and s-nail (submission with STARTTLS
and AUTH, with np-mail), IMAPClient (IMAPS, flags, MOVE).

A missing client fails the test: C{scripts/debian-packages.txt} names them.
"""

from __future__ import annotations

import email
import email.policy
import fcntl
import imaplib
import os
import pty
import re
import select
import shutil
import smtplib
import ssl
import struct
import subprocess
import termios
import time
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

from imapclient import IMAPClient
from twisted.trial.unittest import SynchronousTestCase

from netplugins.cred.htpasswd import hashPassword
from tests import slapd
from tests.mailfixtures import PASSWORDS, writeHtpasswd
from tests.pki import PKI
from tests.support import freePort, runTwistd, waitForPort
from tests.test_mail import startMailhostTac

DOMAIN = "example.test"

#: A user whose password is not ASCII (np-pop3 refused it before bc2c058).
UTF8_USER = "carol"
UTF8_PASSWORD = "pässwörd"

#: Seconds a client may take for one run.
CLIENT_TIMEOUT = 30


class MailHost:
    """
    A mail host in a subprocess of C{testCase}, the clients' server: a
    certificate from a test CA, and either C{twistd np-mail} (every endpoint
    on a free loopback port, the users of L{tests.mailfixtures.PASSWORDS}
    plus L{UTF8_USER} in an htpasswd file, domain L{DOMAIN}) or, with
    C{ldap}, C{tac/mailhost.tac} with the LDAP users of L{tests.slapd},
    domain C{ex.org}.

    @ivar directory: the test's temporary directory (state, clients' files).
    @ivar caPath: the test CA certificate (PEM), for the clients to trust.
    @ivar ports: endpoint name (C{"submission"}, C{"pop3"}, ...) to port.
    @ivar domain: the users' mail domain.
    @ivar passwords: user name to password (C{alice} and C{bob} at least).
    @ivar utf8User: a user whose password is not ASCII...
    @ivar utf8Password: ...that password...
    @ivar utf8Address: ...and that user's address.
    """

    def __init__(self, testCase: SynchronousTestCase, ldap: bool = False) -> None:
        self.directory = Path(testCase.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        pki = PKI(str(self.directory / "pki"))
        cert, key = pki.serverCertificate("localhost", "127.0.0.1")
        self.caPath = pki.caPath
        if ldap:
            self.domain = "ex.org"
            self.passwords = dict(slapd.PASSWORDS)
            self.utf8User = slapd.WEIRD_UID
            self.utf8Address = "zox@ex.org"  # its mail value
            self.ports = startMailhostTac(
                testCase, str(self.directory), str(cert), str(key)
            )
        else:
            self.domain = DOMAIN
            self.passwords = dict(PASSWORDS)
            self.utf8User = UTF8_USER
            self.utf8Address = f"{UTF8_USER}@{DOMAIN}"
            self.ports = self.startNpMail(testCase, cert, key)
        self.utf8Password = self.passwords.setdefault(self.utf8User, UTF8_PASSWORD)

    def startNpMail(
        self, testCase: SynchronousTestCase, cert: str, key: str
    ) -> dict[str, int]:
        """
        Run C{twistd np-mail} with an htpasswd file; return its ports.
        """
        htpasswd = writeHtpasswd(str(self.directory))
        with open(htpasswd, "a") as f:
            f.write(f"{UTF8_USER}:{hashPassword(UTF8_PASSWORD, cost=4)}\n")
        names = ("smtp", "submission", "pop3", "pop3s", "imap", "imaps")
        ports = {name: freePort() for name in names}
        endpoints = [
            f"--{name}=tcp:{port}:interface=127.0.0.1" for name, port in ports.items()
        ]
        process = runTwistd(
            testCase,
            "np-mail",
            f"--state-dir={self.directory / 'state'}",
            f"--domain={DOMAIN}",
            f"--auth=htpasswd:{htpasswd}",
            f"--tls-cert={cert}",
            f"--tls-key={key}",
            "--hostname=mail.example.test",
            *endpoints,
            cwd=self.directory,
        )
        for port in ports.values():
            waitForPort(port, process)
        return ports

    def context(self) -> ssl.SSLContext:
        """
        A client TLS context trusting the test CA only.
        """
        return ssl.create_default_context(cafile=self.caPath)

    def submit(self, user: str, password: str, message: EmailMessage) -> None:
        """
        Send C{message} from C{user}'s own address to its C{To} with smtplib
        (submission port, STARTTLS, AUTH).
        """
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=10) as smtp:
            smtp.starttls(context=self.context())
            smtp.login(user, password)
            smtp.send_message(message, from_addr=f"{user}@{self.domain}")

    def imap(self, user: str) -> imaplib.IMAP4_SSL:
        """
        An imaplib session logged in as C{user} over IMAPS.
        """
        session = imaplib.IMAP4_SSL(
            "127.0.0.1", self.ports["imaps"], ssl_context=self.context(), timeout=10
        )
        session.login(user, self.passwords[user])
        return session


def message(sender: str, to: str, subject: str, body: str) -> EmailMessage:
    """
    A plain text message.
    """
    out = EmailMessage()
    out["From"] = sender
    out["To"] = to
    out["Subject"] = subject
    out["Message-ID"] = f"<{subject.replace(' ', '-')}@{DOMAIN}>"
    out.set_content(body)
    return out


class ClientTests(SynchronousTestCase):
    """
    Mail clients against a L{MailHost}: C{twistd np-mail}, or with C{ldap}
    C{tac/mailhost.tac}.
    """

    ldap = False


def clientEnvironment() -> dict[str, str]:
    """
    This process's environment without the Python path trial's workers
    (C{-j}) get, which would make Debian's Python clients (offlineimap,
    getmail) load this interpreter's modules.
    """
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def requireClient(testCase: SynchronousTestCase, name: str) -> None:
    """
    Fail the test if the client program C{name} is not installed.
    """
    if shutil.which(name) is None:
        testCase.fail(
            f"{name} is not installed (scripts/debian-packages.txt names its"
            " package; scripts/test installs it)"
        )


def runClient(
    testCase: SynchronousTestCase,
    argv: Sequence[str],
    cwd: Path,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """
    Run a mail client with L{CLIENT_TIMEOUT}, output captured, C{input} (if
    given) on its standard input; fail the test (with its output) if it is
    not installed or does not finish in time.
    """
    requireClient(testCase, argv[0])
    try:
        return subprocess.run(
            list(argv),
            cwd=cwd,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=CLIENT_TIMEOUT,
            env={**clientEnvironment(), "HOME": str(cwd), "LC_ALL": "C.UTF-8"},
        )
    except subprocess.TimeoutExpired as e:
        testCase.fail(f"{' '.join(argv)} still running after {e.timeout} s:\n{e}")


def runInTerminal(
    testCase: SynchronousTestCase, argv: Sequence[str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """
    Run a full-screen client (neomutt) on a pseudo-terminal of 40x120, its
    screen output drained until it exits, within L{CLIENT_TIMEOUT}; the
    result's C{stdout} is that output.  Fail as L{runClient} does.
    """
    requireClient(testCase, argv[0])
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    try:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            start_new_session=True,
            env={
                **clientEnvironment(),
                "HOME": str(cwd),
                "TERM": "xterm",
                "LC_ALL": "C.UTF-8",
            },
        )
    finally:
        os.close(terminal)
    screen = bytearray()
    deadline = time.monotonic() + CLIENT_TIMEOUT
    try:
        while process.poll() is None or select.select([controller], [], [], 0)[0]:
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                testCase.fail(
                    f"{' '.join(argv)} still running after {CLIENT_TIMEOUT} s:\n"
                    + screen.decode(errors="replace")
                )
            if select.select([controller], [], [], 0.2)[0]:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the terminal's last holder is gone
                    break
                if not chunk:
                    break
                screen += chunk
    finally:
        os.close(controller)
    return subprocess.CompletedProcess(
        list(argv), process.wait(), screen.decode(errors="replace"), ""
    )


def inbox(
    host: MailHost, user: str, mailbox: str = "INBOX"
) -> list[tuple[str, list[bytes]]]:
    """
    C{(subject, flags)} of each message in C{user}'s C{mailbox}, read with
    imaplib.
    """
    session = host.imap(user)
    try:
        session.select(mailbox, readonly=True)
        status, data = session.fetch("1:*", "(FLAGS BODY.PEEK[HEADER])")
        if status != "OK" or data == [None]:
            return []
        out = []
        for item in data:
            if isinstance(item, tuple):
                flags = imaplib.ParseFlags(item[0])
                parsed = email.message_from_bytes(item[1], policy=email.policy.default)
                out.append((str(parsed["Subject"]), sorted(flags)))
        return out
    finally:
        session.logout()


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """
    A client's command, status and output, for a failure message.
    """
    return (
        f"{' '.join(result.args)} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def maildirMessages(maildir: Path) -> list[bytes]:
    """
    The messages in C{maildir}'s cur/ and new/, in name order.
    """
    return [
        path.read_bytes()
        for sub in ("cur", "new")
        if (maildir / sub).is_dir()
        for path in sorted((maildir / sub).iterdir())
    ]


class FetchmailTests(ClientTests):
    """
    fetchmail against np-mail's POP3.
    """

    def test_stlsNonASCIIPassword(self) -> None:
        """fetchmail: STLS, USER and a UTF-8 PASS log in; the message arrives whole."""
        host = MailHost(self, self.ldap)
        sent = message(
            f"alice@{host.domain}", host.utf8Address, "for fetchmail", "Grüße.\n"
        )
        host.submit("alice", host.passwords["alice"], sent)
        delivered = host.directory / "delivered.eml"
        rc = host.directory / "fetchmailrc"
        rc.write_text(
            "set no syslog\n"
            f"poll localhost via 127.0.0.1 protocol pop3 port {host.ports['pop3']}"
            " auth password\n"
            f'  user "{host.utf8User}" password "{host.utf8Password}"\n'
            "  sslproto tls1.2+ sslcommonname localhost\n"
            f"  sslcertck sslcertfile {host.caPath}\n"
            f'  mda "cat > {delivered}"\n',
            encoding="utf-8",
        )
        rc.chmod(0o600)
        result = runClient(
            self,
            [
                "fetchmail",
                "-v",
                "--nodetach",
                "-f",
                str(rc),
                "--pidfile",
                str(host.directory / "fetchmail.pid"),
            ],
            host.directory,
        )
        self.assertEqual(result.returncode, 0, describe(result))
        self.assertIn("PASS *", result.stdout, describe(result))
        self.assertTrue(delivered.exists(), describe(result))
        # The MDA gets the message with LF line ends, after fetchmail's own
        # Received: header and np-smtp's trace fields.
        self.assertIn(sent.as_bytes(), delivered.read_bytes(), describe(result))


class GetmailTests(ClientTests):
    """
    getmail6 against C{tac/mailhost.tac}'s POP3S (LDAP users).
    """

    ldap = True

    def test_returnPath(self) -> None:
        """getmail6 over POP3-SSL: Return-Path: is the SMTP envelope sender."""
        host = MailHost(self, self.ldap)
        # The From: header names someone else, so that only the envelope
        # (MAIL FROM) can have given the Return-Path.
        sent = message(
            "Alias <alias@elsewhere.test>", f"bob@{host.domain}", "for getmail", "Hi.\n"
        )
        host.submit("alice", host.passwords["alice"], sent)
        maildir = host.directory / "Maildir"
        # getmail refuses to deliver as root: then it delivers as nobody,
        # who must reach the Maildir (mktemp's directory is private).
        asRoot = os.geteuid() == 0
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
            if asRoot:
                (maildir / sub).chmod(0o777)
        if asRoot:
            for parent in maildir.parents:
                if parent == Path.cwd():
                    break
                parent.chmod(parent.stat().st_mode | 0o055)
        rc = host.directory / "getmailrc"
        rc.write_text(
            "[retriever]\n"
            "type = SimplePOP3SSLRetriever\n"
            "server = 127.0.0.1\n"
            f"port = {host.ports['pop3s']}\n"
            "username = bob\n"
            f"password = {host.passwords['bob']}\n"
            f"ca_certs = {host.caPath}\n"
            "[destination]\n"
            "type = Maildir\n"
            f"path = {maildir}/\n"
            + ("user = nobody\n" if asRoot else "")
            + "[options]\n"
            "verbose = 2\n"
            "read_all = true\n"
            "delete = false\n"
        )
        result = runClient(
            self,
            ["getmail", f"--getmaildir={host.directory}", f"--rcfile={rc}"],
            host.directory,
        )
        self.assertEqual(result.returncode, 0, describe(result))
        messages = [
            email.message_from_bytes(raw, policy=email.policy.default)
            for raw in maildirMessages(maildir)
        ]
        self.assertEqual(
            [(m["Subject"], m.get_all("Return-Path")) for m in messages],
            [("for getmail", [f"<alice@{host.domain}>"])],
            describe(result),
        )


class MbsyncTests(ClientTests):
    """
    mbsync (isync) against np-mail's IMAPS.
    """

    def test_folderRecreated(self) -> None:
        """mbsync: a folder deleted and made again in a second is not synced as old."""
        host = MailHost(self, self.ldap)
        local = host.directory / "mail"
        local.mkdir()
        rc = mbsyncConfig(host, local, "Patterns Demo\nCreate Near\nSync Pull\n")
        argv = ["mbsync", "-V", "-c", str(rc), "demo"]
        session = host.imap("alice")
        self.addCleanup(session.logout)
        # Before 8c2f631 a folder's UIDVALIDITY was the second it was
        # created in: start at a second's beginning, so that the folder is
        # created both times within one second, as a fast client does.
        time.sleep(1 - time.time() % 1)
        self.assertEqual(session.create("Demo")[0], "OK")
        appended = [appendMessage(self, session, "first")]
        first = runClient(self, argv, host.directory)
        self.assertEqual(first.returncode, 0, describe(first))
        self.assertEqual(subjects(local / "Demo"), ["first"], describe(first))
        self.assertEqual(session.delete("Demo")[0], "OK")
        self.assertEqual(session.create("Demo")[0], "OK")
        appended.append(appendMessage(self, session, "second"))
        second = runClient(self, argv, host.directory)
        report = f"APPEND replies: {appended}\n{describe(second)}"
        if second.returncode == 0:
            self.assertEqual(subjects(local / "Demo"), ["second"], report)
        else:
            # mbsync refuses to sync a folder whose UIDVALIDITY changed:
            # it noticed, and did not keep the old message as current.
            self.assertRegex(
                second.stdout + second.stderr, "UIDVALIDITY .*changed", report
            )


class MbsyncSyncTests(ClientTests):
    """
    mbsync's two-way sync against C{tac/mailhost.tac}'s IMAPS (LDAP users).
    """

    ldap = True

    def test_twoWaySyncFlagsAndMove(self) -> None:
        """mbsync: flags, deletions and moves made on either side reach the other."""
        host = MailHost(self, self.ldap)
        local = host.directory / "mail"
        local.mkdir()
        rc = mbsyncConfig(
            host,
            local,
            "Patterns INBOX Archive\nCreate Both\nExpunge Both\nSync All\n",
        )
        # -Dn shows the IMAP dialogue: what np-imap offered, what mbsync used.
        argv = ["mbsync", "-V", "-Dn", "-c", str(rc), "demo"]
        session = host.imap("alice")
        self.addCleanup(session.logout)
        # Archive is one of the special-use mailboxes np-imap makes at login.
        for subject in ("one", "two", "three", "four"):
            appendMessage(self, session, subject, "INBOX")
        first = runClient(self, argv, host.directory)
        self.assertEqual(first.returncode, 0, describe(first))
        self.assertIn("CONDSTORE", first.stdout, describe(first))
        self.assertEqual(
            sorted(subjects(local / "INBOX")), ["four", "one", "three", "two"]
        )
        # Near: one flagged, two deleted, four moved to Archive.
        files = {subject: path for subject, path in localMessages(local / "INBOX")}
        setLocalFlags(files["one"], "F")
        setLocalFlags(files["two"], "ST")
        (local / "Archive" / "cur").mkdir(parents=True, exist_ok=True)
        # A message moved between Maildirs loses its mbsync UID (,U=n).
        moved = re.sub(r",U=[0-9]+", "", files["four"].name)
        files["four"].rename(local / "Archive" / "cur" / moved)
        # Far: three answered, then moved to Archive (RFC 6851).
        session.select("INBOX")
        uid = session.uid("SEARCH", "SUBJECT", "three")[1][0].decode()
        self.assertEqual(session.uid("STORE", uid, "+FLAGS", "(\\Answered)")[0], "OK")
        self.assertEqual(session.uid("MOVE", uid, "Archive")[0], "OK", session)
        session.unselect()
        second = runClient(self, argv, host.directory)
        self.assertEqual(second.returncode, 0, describe(second))
        report = describe(second)
        self.assertEqual(
            sorted(inbox(host, "alice")), [("one", [b"\\Flagged"])], report
        )
        self.assertEqual(
            sorted(inbox(host, "alice", "Archive")),
            [("four", []), ("three", [b"\\Answered"])],
            report,
        )
        self.assertEqual(
            sorted(
                (s, p.name.split(":2,")[1]) for s, p in localMessages(local / "INBOX")
            ),
            [("one", "F")],
            report,
        )
        self.assertEqual(
            sorted(
                (s, p.name.split(":2,")[1]) for s, p in localMessages(local / "Archive")
            ),
            [("four", ""), ("three", "R")],
            report,
        )


def appendMessage(
    testCase: SynchronousTestCase,
    session: imaplib.IMAP4,
    subject: str,
    mailbox: str = "Demo",
) -> bytes:
    """
    APPEND a message with C{subject} to C{mailbox}; return the reply's text.
    """
    sent = message(f"alice@{DOMAIN}", f"alice@{DOMAIN}", subject, "Hi.\n")
    status, data = session.append(mailbox, "", None, sent.as_bytes())
    testCase.assertEqual(status, "OK", data)
    return bytes(data[0])


def mbsyncConfig(host: MailHost, local: Path, channel: str) -> Path:
    """
    An mbsyncrc syncing alice's mailboxes on C{host}'s IMAPS with the
    Maildirs under C{local}, in channel C{demo} whose other settings are
    C{channel} (lines).
    """
    rc = host.directory / "mbsyncrc"
    rc.write_text(
        "IMAPAccount np\n"
        "Host localhost\n"
        f"Port {host.ports['imaps']}\n"
        "User alice\n"
        f"Pass {host.passwords['alice']}\n"
        "SSLType IMAPS\n"
        f"CertificateFile {host.caPath}\n"
        "\n"
        "IMAPStore remote\n"
        "Account np\n"
        "\n"
        "MaildirStore local\n"
        f"Path {local}/\n"
        f"Inbox {local}/INBOX\n"
        "SubFolders Verbatim\n"
        "\n"
        "Channel demo\n"
        "Far :remote:\n"
        "Near :local:\n"
        f"{channel}"
        "SyncState *\n"
    )
    return rc


def localMessages(maildir: Path) -> list[tuple[str, Path]]:
    """
    C{(subject, file)} of each message in C{maildir}'s cur/ and new/.
    """
    return [
        (
            str(
                email.message_from_bytes(
                    path.read_bytes(), policy=email.policy.default
                )["Subject"]
            ),
            path,
        )
        for sub in ("cur", "new")
        if (maildir / sub).is_dir()
        for path in sorted((maildir / sub).iterdir())
    ]


def setLocalFlags(path: Path, letters: str) -> None:
    """
    Add Maildir flag C{letters} to the message file C{path} (in cur/).
    """
    base, _, flags = path.name.partition(":2,")
    flags = "".join(sorted(set(flags + letters)))
    path.rename(path.parent.parent / "cur" / f"{base}:2,{flags}")


def subjects(maildir: Path) -> list[str]:
    """
    The subjects of the messages in C{maildir}, in name order.
    """
    return [
        str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"])
        for raw in maildirMessages(maildir)
    ]


class OfflineimapTests(ClientTests):
    """
    offlineimap (offlineimap3) against C{tac/mailhost.tac}'s IMAPS (LDAP
    users).
    """

    ldap = True

    def test_twoWaySync(self) -> None:
        """offlineimap: mail comes down, a local flag and a local message go up."""
        host = MailHost(self, self.ldap)
        for subject in ("first", "second"):
            host.submit(
                "alice",
                host.passwords["alice"],
                message(f"alice@{host.domain}", f"bob@{host.domain}", subject, "Hi.\n"),
            )
        local = host.directory / "mail"
        rc = host.directory / "offlineimaprc"
        rc.write_text(
            "[general]\n"
            "accounts = np\n"
            f"metadata = {host.directory / 'offlineimap'}\n"
            "\n"
            "[Account np]\n"
            "localrepository = local\n"
            "remoterepository = remote\n"
            "\n"
            "[Repository local]\n"
            "type = Maildir\n"
            f"localfolders = {local}\n"
            "\n"
            "[Repository remote]\n"
            "type = IMAP\n"
            "remotehost = localhost\n"
            f"remoteport = {host.ports['imaps']}\n"
            "remoteuser = bob\n"
            f"remotepass = {host.passwords['bob']}\n"
            "ssl = yes\n"
            f"sslcacertfile = {host.caPath}\n"
            "tls_level = tls_secure\n"
            "ssl_version = tls1_2\n"
            "folderfilter = lambda name: name == 'INBOX'\n"
        )
        argv = ["offlineimap", "-c", str(rc), "-o", "-u", "basic"]
        first = runClient(self, argv, host.directory)
        self.assertEqual(first.returncode, 0, describe(first))
        self.assertEqual(
            subjects(local / "INBOX"), ["first", "second"], describe(first)
        )
        # Mark "second" seen locally (Maildir info ",S" in cur/) and write a
        # message of our own into the local INBOX.
        for path in (local / "INBOX" / "new").iterdir():
            if b"Subject: second" in path.read_bytes():
                path.rename(local / "INBOX" / "cur" / f"{path.name}S")
        drafted = message(
            f"bob@{host.domain}", f"bob@{host.domain}", "written locally", "Me.\n"
        )
        (local / "INBOX" / "new" / "1.local").write_bytes(drafted.as_bytes())
        second = runClient(self, argv, host.directory)
        self.assertEqual(second.returncode, 0, describe(second))
        self.assertEqual(
            inbox(host, "bob"),
            [("first", []), ("second", [b"\\Seen"]), ("written locally", [])],
            describe(second),
        )


def muttrc(host: MailHost, user: str) -> Path:
    """
    A neomutt configuration for C{user}: IMAPS INBOX, submission with
    STARTTLS, the test CA trusted, no prompts.
    """
    rc = host.directory / f"muttrc-{user}"
    rc.write_text(
        f'set from = "{user}@{host.domain}"\n'
        f'set smtp_url = "smtp://{user}@localhost:{host.ports["submission"]}/"\n'
        f'set smtp_pass = "{host.passwords[user]}"\n'
        f'set imap_user = "{user}"\n'
        f'set imap_pass = "{host.passwords[user]}"\n'
        f'set folder = "imaps://localhost:{host.ports["imaps"]}/"\n'
        'set spoolfile = "+INBOX"\n'
        "set ssl_starttls = yes\n"
        "set ssl_force_tls = yes\n"
        f'set ssl_ca_certificates_file = "{host.caPath}"\n'
        f'set certificate_file = "{host.directory / "mutt-certificates"}"\n'
        'set record = ""\n'
        'set header_cache = ""\n'
        'set message_cachedir = ""\n'
        'set charset = "utf-8"\n'
        "set wait_key = no\n"
        "set quit = yes\n"
        "set move = no\n"
        "set mark_old = no\n"
        "set sort = date-sent\n"
    )
    return rc


class NeomuttTests(ClientTests):
    """
    neomutt in batch mode sending through C{tac/mailhost.tac}'s
    submission (LDAP users).
    """

    ldap = True

    def test_batchSend(self) -> None:
        """neomutt -s in batch mode: submission, STARTTLS, AUTH; delivered."""
        host = MailHost(self, self.ldap)
        rc = muttrc(host, "alice")
        result = runClient(
            self,
            [
                "neomutt",
                "-n",
                "-F",
                str(rc),
                "-s",
                "from neomutt",
                f"bob@{host.domain}",
            ],
            host.directory,
            input="Grüße aus neomutt.\n",
        )
        self.assertEqual(result.returncode, 0, describe(result))
        self.assertEqual(inbox(host, "bob"), [("from neomutt", [])], describe(result))


class NeomuttIndexTests(ClientTests):
    """
    neomutt's IMAPS index driven by pushed keys in a pseudo-terminal.
    """

    def test_imapsIndex(self) -> None:
        """neomutt over IMAPS: every message piped out whole, one flagged."""
        host = MailHost(self, self.ldap)
        sent = [
            message(
                f"alice@{host.domain}",
                f"bob@{host.domain}",
                subject,
                f"{subject} body\n",
            )
            for subject in ("first", "second")
        ]
        for each in sent:
            host.submit("alice", host.passwords["alice"], each)
            time.sleep(1.05)  # distinct Date: seconds, for sort = date-sent
        rc = muttrc(host, "bob")
        piped = host.directory / "piped.mbox"
        keys = (
            "<tag-pattern>~A<enter>"
            f"<tag-prefix><pipe-message>cat >> {piped}<enter>"
            "<first-entry><flag-message><sync-mailbox><quit>"
        )
        result = runInTerminal(
            self,
            ["neomutt", "-n", "-F", str(rc), "-e", f'push "{keys}"'],
            host.directory,
        )
        self.assertEqual(result.returncode, 0, describe(result))
        self.assertTrue(piped.exists(), describe(result))
        out = piped.read_bytes()
        for each in sent:
            self.assertIn(each.as_bytes(), out, describe(result))
        self.assertEqual(
            inbox(host, "bob"),
            [("first", [b"\\Flagged"]), ("second", [])],
            describe(result),
        )


class SubmissionClientTests(ClientTests):
    """
    msmtp and s-nail sending through np-mail's submission port (STARTTLS,
    AUTH, the test CA trusted and the name checked).
    """

    def test_msmtp(self) -> None:
        """msmtp -t: STARTTLS, AUTH PLAIN, recipients from the headers."""
        host = MailHost(self, self.ldap)
        rc = host.directory / "msmtprc"
        rc.write_text(
            "account np\n"
            "host localhost\n"
            f"port {host.ports['submission']}\n"
            "tls on\n"
            "tls_starttls on\n"
            f"tls_trust_file {host.caPath}\n"
            "auth on\n"
            "user alice\n"
            f"password {host.passwords['alice']}\n"
            f"from alice@{host.domain}\n"
            "account default : np\n"
        )
        rc.chmod(0o600)
        sent = message(
            f"alice@{host.domain}", f"bob@{host.domain}", "from msmtp", "Hi.\n"
        )
        result = runClient(
            self,
            ["msmtp", "-C", str(rc), "-v", "-t"],
            host.directory,
            input=sent.as_string(),
        )
        self.assertEqual(result.returncode, 0, describe(result))
        self.assertIn("--> STARTTLS", result.stdout, describe(result))
        self.assertEqual(inbox(host, "bob"), [("from msmtp", [])], describe(result))

    def test_sNail(self) -> None:
        """s-nail -#: smtp-use-starttls, AUTH, a UTF-8 body; delivered."""
        host = MailHost(self, self.ldap)
        result = runClient(
            self,
            [
                "s-nail",
                "-:/",
                "-#",
                "-S",
                "v15-compat",
                "-S",
                "sendwait",
                "-S",
                f"mta=smtp://alice:{host.passwords['alice']}@localhost:"
                f"{host.ports['submission']}",
                "-S",
                "smtp-use-starttls",
                "-S",
                f"tls-ca-file={host.caPath}",
                "-S",
                "tls-ca-no-defaults",
                "-S",
                f"from=alice@{host.domain}",
                "-S",
                "ttycharset=utf-8",
                "-s",
                "from s-nail",
                f"bob@{host.domain}",
            ],
            host.directory,
            input="Grüße aus s-nail.\n",
        )
        self.assertEqual(result.returncode, 0, describe(result))
        self.assertEqual(inbox(host, "bob"), [("from s-nail", [])], describe(result))


class IMAPClientTests(ClientTests):
    """
    IMAPClient (PyPI) against C{tac/mailhost.tac}'s IMAPS (LDAP users).
    """

    ldap = True

    def test_fetchFlagMove(self) -> None:
        """IMAPClient over IMAPS: a submitted message fetched, flagged and moved."""
        host = MailHost(self, self.ldap)
        sent = message(
            f"alice@{host.domain}", f"bob@{host.domain}", "for imapclient", "Hi.\n"
        )
        host.submit("alice", host.passwords["alice"], sent)
        with IMAPClient(
            "127.0.0.1",
            port=host.ports["imaps"],
            ssl=True,
            ssl_context=host.context(),
            timeout=10,
        ) as client:
            client.login("bob", host.passwords["bob"])
            self.assertIn(b"MOVE", client.capabilities())
            client.select_folder("INBOX")
            [uid] = client.search(["SUBJECT", "for imapclient"])
            fetched = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
            self.assertIn(sent.as_bytes().replace(b"\n", b"\r\n"), fetched)
            client.add_flags([uid], [b"\\Flagged"])
            client.move([uid], "Archive")
            self.assertEqual(client.search(), [])
            client.logout()
        self.assertEqual(
            inbox(host, "bob", "Archive"), [("for imapclient", [b"\\Flagged"])]
        )


# fetchmail logs in through both checkers: bcrypt (htpasswd) and an LDAP bind.


class FetchmailLDAPTests(FetchmailTests):
    """
    fetchmail against C{tac/mailhost.tac}: an LDAP uid and password not ASCII.
    """

    ldap = True
