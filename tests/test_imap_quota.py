"""
Tests for the storage quota (RFC 9208's QUOTA in np-imap, 452 4.2.2 in
np-smtp): the store's count and refusals, the IMAP commands in memory,
IMAPClient and smtplib over TCP, and the commands against Dovecot's quota.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.cred.ldap.checker import LDAPChecker
from netplugins.cred.ldap.config import configFromMapping
from netplugins.cred.ldap.directory import Directory as LDAPDirectory
from netplugins.mail.imap.server import IMAPConfig, IMAPFactory
from netplugins.mail.maildir.quota import OverQuotaError, blockingUsage
from netplugins.mail.maildir.store import MaildirStore
from netplugins.mail.smtp.server import SMTPConfig, SMTPFactory
from netplugins.mail.users import LocalUsers, MailRealm
from netplugins.tap.mail import MailHostSettings, Options
from netplugins.tap.mailhost import mailParts
from tests.test_imap import Session, makeFactory, plainMessage, serveOverTLS
from tests.test_imap_idle import serveSMTP
from tests.test_imap_sort import compareWithDovecot
from tests.test_mailusers import Directory

KIB = 1024


def sized(total: int, lines: int = 1) -> bytes:
    """
    A message of C{total} octets (CRLF line ends), its body C{lines} lines.
    """
    header = b"From: carol@example.net\r\nSubject: big\r\n\r\n"
    room = total - len(header) - 2 * lines
    width, extra = divmod(room, lines)
    body = b"".join(
        b"x" * (width + (1 if i < extra else 0)) + b"\r\n" for i in range(lines)
    )
    data = header + body
    assert len(data) == total
    return data


def quotaStore(root: str, limit: int | None) -> MaildirStore:
    return MaildirStore(root, runBlocking=maybeDeferred, quotaStorage=limit)


class StoreQuotaTests(SynchronousTestCase):
    """
    The store counts every folder and refuses writes past the limit.
    """

    def setUp(self) -> None:
        self.root = self.mktemp()
        self.store = quotaStore(self.root, 10 * KIB)

    def test_usage(self) -> None:
        """Usage sums INBOX's and every folder's messages, new/ and cur/."""
        self.successResultOf(self.store.deliver("alice", sized(3 * KIB)))
        self.successResultOf(self.store.createFolder("alice", "Archive"))
        folder = self.store.folder("alice", "Archive")
        self.successResultOf(folder.append(sized(2 * KIB)))
        with open(os.path.join(self.root, "alice", "cur", "foreign:2,S"), "wb") as f:
            f.write(b"x" * 100)
        self.assertEqual(self.successResultOf(self.store.storageUsed("alice")), 5220)
        self.assertEqual(blockingUsage(os.path.join(self.root, "nobody")), 0)

    def test_refusals(self) -> None:
        """Deliver, append, append-many and copy past the limit leave nothing."""
        self.successResultOf(self.store.deliver("alice", sized(8 * KIB)))
        self.failureResultOf(
            self.store.deliver("alice", sized(3 * KIB)), OverQuotaError
        )
        inbox = self.store.folder("alice")
        self.failureResultOf(inbox.append(sized(3 * KIB)), OverQuotaError)
        self.failureResultOf(
            inbox.appendMany(
                [(sized(KIB), "", None, ()), (sized(2 * KIB), "", None, ())]
            ),
            OverQuotaError,
        )
        self.successResultOf(self.store.createFolder("alice", "Archive"))
        state = self.successResultOf(inbox.scan())
        self.failureResultOf(
            inbox.copy(list(state.messages), self.store.folder("alice", "Archive")),
            OverQuotaError,
        )
        self.assertEqual(self.successResultOf(self.store.storageUsed("alice")), 8 * KIB)
        self.assertEqual(os.listdir(os.path.join(self.root, "alice", "tmp")), [])
        # Another user has a quota of their own.
        self.successResultOf(self.store.deliver("bob", sized(8 * KIB)))

    def test_settings(self) -> None:
        """--quota-storage reaches the store; a bad value is refused."""
        options = Options()
        options.parseOptions(["--quota-storage", "2048", "--state-dir", self.mktemp()])
        parts = mailParts(options.settings, options.common, reactor=Clock())
        self.assertEqual(parts.store.quotaStorage, 2048)
        self.assertRaises(ValueError, MailHostSettings, quotaStorage=0)
        self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--quota-storage", "0"]
        )


class IMAPQuotaTests(SynchronousTestCase):
    """
    GETQUOTA, GETQUOTAROOT, SETQUOTA and [OVERQUOTA] in memory.
    """

    def session(self, limit: int | None) -> Session:
        root = self.mktemp()
        store = quotaStore(root, limit)
        s = Session(self, root=root, factory=makeFactory(root, Clock(), store=store))
        s.login()
        return s

    def test_commands(self) -> None:
        """One root for every mailbox, STORAGE in KiB, SETQUOTA refused."""
        s = self.session(100 * KIB)
        self.assertIn(b" QUOTA QUOTA=RES-STORAGE ", s.send(b"c CAPABILITY\r\n"))
        s.send(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (3 * KIB, sized(3 * KIB)))
        self.assertEqual(
            s.send(b"q GETQUOTAROOT inbox\r\n"),
            b'* QUOTAROOT INBOX "User quota"\r\n'
            b'* QUOTA "User quota" (STORAGE 3 100)\r\n'
            b"q OK Getquotaroot completed.\r\n",
        )
        self.assertEqual(
            s.send(b'q GETQUOTA "User quota"\r\n'),
            b'* QUOTA "User quota" (STORAGE 3 100)\r\nq OK Getquota completed.\r\n',
        )
        self.assertIn(b"q NO", s.send(b'q GETQUOTA ""\r\n'))
        self.assertIn(
            b'* QUOTAROOT Nowhere "User quota"',
            s.send(b"q GETQUOTAROOT Nowhere\r\n"),
        )
        self.assertIn(
            b"q NO [NOPERM]", s.send(b'q SETQUOTA "User quota" (STORAGE 1)\r\n')
        )
        self.assertIn(b"q BAD", s.send(b"q GETQUOTA\r\n"))

    def test_overQuota(self) -> None:
        """APPEND, COPY and MOVE past the limit get NO [OVERQUOTA]."""
        s = self.session(10 * KIB)
        s.send(b"c CREATE Archive\r\n")
        reply = s.send(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (6 * KIB, sized(6 * KIB)))
        self.assertIn(b"a OK", reply)
        reply = s.send(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (5 * KIB, sized(5 * KIB)))
        self.assertEqual(reply, b"a NO [OVERQUOTA] Quota exceeded\r\n")
        s.send(b"s SELECT INBOX\r\n")
        self.assertEqual(
            s.send(b"c COPY 1 Archive\r\n"), b"c NO [OVERQUOTA] Quota exceeded\r\n"
        )
        self.assertEqual(
            s.send(b"m MOVE 1 Archive\r\n"), b"m NO [OVERQUOTA] Quota exceeded\r\n"
        )
        self.assertIn(
            b"* 1 EXISTS", s.send(b"n NOOP\r\n") + s.send(b"s SELECT INBOX\r\n")
        )

    def test_largeAppend(self) -> None:
        """An APPEND of a message over 64 KiB (MAX_COMMAND) is stored."""
        s = self.session(None)
        data = sized(400 * KIB + 600, lines=200)
        self.assertEqual(
            s.send(b"a APPEND INBOX {%d}\r\n" % len(data)),
            b"+ Ready for literal data\r\n",
        )
        self.assertIn(b"a OK [APPENDUID", s.send(data + b"\r\n"))
        reply = s.send(b"b APPEND INBOX {%d+}\r\n%s x\r\n" % (len(data), data))
        self.assertIn(b"b BAD", reply)
        reply = s.send(b"c APPEND INBOX {%d+}\r\n%s\r\n" % (len(data), data))
        self.assertIn(b"c OK [APPENDUID", reply)

    def test_noQuota(self) -> None:
        """Without a quota nothing is advertised and no root is named."""
        s = self.session(None)
        self.assertNotIn(b"QUOTA", s.send(b"c CAPABILITY\r\n"))
        self.assertEqual(
            s.send(b"q GETQUOTAROOT INBOX\r\n"),
            b"* QUOTAROOT INBOX\r\nq OK Getquotaroot completed.\r\n",
        )
        self.assertIn(b"q NO", s.send(b'q GETQUOTA "User quota"\r\n'))


class QuotaClientTests(TestCase):
    """
    IMAPClient and smtplib meet the quota over TCP.
    """

    caPath: str
    root: str
    store: MaildirStore
    factory: Any
    port: int

    def setUp(self) -> None:
        serveOverTLS(self)
        self.store.quotaStorage = 20 * KIB
        self.smtpPort = serveSMTP(self, self.store)

    def test_clients(self) -> Deferred[Any]:
        """IMAPClient reads the quota and is refused; smtplib gets 452 4.2.2."""

        def session() -> dict[str, Any]:
            out: dict[str, Any] = {}
            with smtplib.SMTP("127.0.0.1", self.smtpPort) as smtp:
                big = sized(12 * KIB, lines=20)
                smtp.sendmail("carol@example.net", ["alice@example.org"], big)
                try:
                    smtp.sendmail("carol@example.net", ["alice@example.org"], big)
                except smtplib.SMTPDataError as e:
                    out["smtp"] = (e.smtp_code, e.smtp_error)
            c = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
            c.starttls(ssl.create_default_context(cafile=self.caPath))
            c.login("alice", "alice-pw")
            try:
                out["roots"] = c.get_quota_root("INBOX")
                out["quota"] = c.get_quota()
                try:
                    c.append("INBOX", sized(10 * KIB))
                except IMAPClientError as e:
                    out["append"] = str(e)
                c.append("INBOX", plainMessage("small").replace(b"\n", b"\r\n"))
            finally:
                c.logout()
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertEqual(out["smtp"], (452, b"4.2.2 Error: mailbox full"))
            roots, quotas = out["roots"]
            self.assertEqual(roots.quota_roots, ["User quota"])
            self.assertEqual(
                [(q.quota_root, q.resource, q.usage, q.limit) for q in quotas],
                [("User quota", "STORAGE", 12, 20)],
            )
            self.assertEqual(
                [(q.resource, q.limit) for q in out["quota"]], [("STORAGE", 20)]
            )
            self.assertIn("OVERQUOTA", out["append"])

        return deferToThread(session).addCallback(check)


#: Dovecot's quota: the plugins, and one root of 1 MiB.
QUOTA_CONFIG = (
    "mail_plugins = $mail_plugins quota\n"
    "protocol imap {\n  mail_plugins = $mail_plugins imap_quota\n}\n"
    "plugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=1M\n}\n"
)

#: Each of these takes the same whole KiB whether its line ends are CRLF
#: (np-imap keeps them) or LF (Dovecot's Maildir): 400 KiB and 600 octets.
BIG = sized(400 * KIB + 600, lines=200)

SCRIPT: list[str | tuple[str, bytes]] = [
    "CREATE Box",
    "GETQUOTAROOT INBOX",
    'GETQUOTA "User quota"',
    ('APPEND INBOX "01-Oct-2024 10:00:00 +0000" ', BIG),
    ('APPEND Box "01-Oct-2024 10:00:00 +0000" ', BIG),
    "GETQUOTAROOT Box",
    ('APPEND INBOX "01-Oct-2024 10:00:00 +0000" ', BIG),
    "SELECT INBOX",
    "COPY 1 Box",
    "GETQUOTAROOT INBOX",
    'GETQUOTA "nonexistent"',
    "GETQUOTAROOT nonexistent",
]


class DovecotQuotaTests(TestCase):
    """
    The quota commands answered as Dovecot's quota plugin answers them.
    """

    timeout = 120
    maxDiff = None

    def test_sameAnswers(self) -> Deferred[None]:
        """GETQUOTA, GETQUOTAROOT and the [OVERQUOTA] refusals agree."""
        return compareWithDovecot(self, SCRIPT, QUOTA_CONFIG, 1024 * KIB)


def userQuotaStore(root: str, limit: int | None, quotas: dict[str, int]) -> Any:
    """
    A store whose users' own limits come from C{quotas} through L{LocalUsers}.
    """
    users = LocalUsers(["example.org"], [Directory(quotas=quotas)])
    assert users.hasStorageQuotas
    return MaildirStore(
        root,
        runBlocking=maybeDeferred,
        quotaStorage=limit,
        quotaLookup=users.storageQuota,
    )


class UserQuotaTests(SynchronousTestCase):
    """
    A user's own limit from the user directory overrides C{--quota-storage}.
    """

    def test_store(self) -> None:
        """Own limits are enforced at delivery; 0 is none; others get the default."""
        quotas = {"alice": 4 * KIB, "bob": 0}
        store = userQuotaStore(self.mktemp(), 10 * KIB, quotas)
        self.successResultOf(store.deliver("alice", sized(3 * KIB)))
        self.failureResultOf(store.deliver("alice", sized(2 * KIB)), OverQuotaError)
        self.failureResultOf(
            store.deliverMany(["carol", "alice"], sized(2 * KIB)), OverQuotaError
        )
        self.assertEqual(self.successResultOf(store.storageUsed("carol")), 0)
        self.successResultOf(store.deliver("bob", sized(30 * KIB)))
        self.successResultOf(store.deliver("carol", sized(9 * KIB)))
        self.failureResultOf(store.deliver("carol", sized(2 * KIB)), OverQuotaError)
        self.assertEqual(self.successResultOf(store.storageLimit("alice")), 4 * KIB)
        self.assertIsNone(self.successResultOf(store.storageLimit("bob")))
        # The directory is asked again at each write.
        quotas["alice"] = 8 * KIB
        self.successResultOf(store.deliver("alice", sized(2 * KIB)))
        del quotas["bob"]
        self.failureResultOf(store.deliver("bob", sized(KIB)), OverQuotaError)

    def test_imap(self) -> None:
        """GETQUOTAROOT reports the user's own limit; APPEND and COPY meet it."""
        root = self.mktemp()
        store = userQuotaStore(root, None, {"alice": 8 * KIB})
        s = Session(self, root=root, factory=makeFactory(root, Clock(), store=store))
        s.login()
        self.assertIn(b" QUOTA QUOTA=RES-STORAGE ", s.send(b"c CAPABILITY\r\n"))
        s.send(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (5 * KIB, sized(5 * KIB)))
        self.assertEqual(
            s.send(b"q GETQUOTAROOT INBOX\r\n"),
            b'* QUOTAROOT INBOX "User quota"\r\n'
            b'* QUOTA "User quota" (STORAGE 5 8)\r\n'
            b"q OK Getquotaroot completed.\r\n",
        )
        s.send(b"s SELECT INBOX\r\n")
        self.assertEqual(
            s.send(b"c COPY 1 INBOX\r\n"), b"c NO [OVERQUOTA] Quota exceeded\r\n"
        )
        reply = s.send(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (4 * KIB, sized(4 * KIB)))
        self.assertEqual(reply, b"a NO [OVERQUOTA] Quota exceeded\r\n")

    def test_imapUnlimited(self) -> None:
        """A user whose own limit is 0 has no quota root, whatever the default."""
        root = self.mktemp()
        store = userQuotaStore(root, KIB, {"alice": 0})
        s = Session(self, root=root, factory=makeFactory(root, Clock(), store=store))
        s.login()
        self.assertEqual(
            s.send(b"q GETQUOTAROOT INBOX\r\n"),
            b"* QUOTAROOT INBOX\r\nq OK Getquotaroot completed.\r\n",
        )
        self.assertIn(b"q NO", s.send(b'q GETQUOTA "User quota"\r\n'))
        reply = s.send(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (4 * KIB, sized(4 * KIB)))
        self.assertIn(b"a OK", reply)

    def test_mailParts(self) -> None:
        """The mail services' store asks the users only with a quota_attribute."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config = os.path.join(directory, "ldap.ini")
        stores = []
        for extra in ("", "quota_attribute = mailQuota\n"):
            with open(config, "w") as f:
                f.write(f"[ldap]\nurl = ldap://127.0.0.1/dc=example,dc=org\n{extra}")
            options = Options()
            options.parseOptions(
                ["--auth", f"ldap:config={config}", "--state-dir", self.mktemp()]
            )
            parts = mailParts(options.settings, options.common, reactor=Clock())
            stores.append(parts.store)
        self.assertIsNone(stores[0].quotaLookup)
        self.assertFalse(stores[0].hasQuotas)
        self.assertIsNotNone(stores[1].quotaLookup)
        self.assertTrue(stores[1].hasQuotas)

    def test_ldapConfig(self) -> None:
        """quota_attribute is read, fetched with the entry, and checked."""
        url = "ldap://127.0.0.1/dc=example,dc=org"
        config = configFromMapping({"url": url, "quota_attribute": "mailQuota"})
        self.assertEqual(config.quotaAttribute, "mailQuota")
        self.assertIn("mailQuota", LDAPDirectory(config).fetch)
        self.assertIsNone(configFromMapping({"url": url}).quotaAttribute)
        self.assertRaises(
            ValueError, configFromMapping, {"url": url, "quota_attribute": "a b"}
        )


#: The fixture's schema has no quota attribute: inetOrgPerson's
#: employeeNumber holds the bytes, named by quota_attribute.
QUOTA_ATTRIBUTE = "employeeNumber"


class LDAPQuotaTests(TestCase):
    """
    A quota from the private slapd, read by IMAPClient and met by smtplib.
    """

    def setUp(self) -> None:
        from twisted.internet import reactor

        from tests.slapd import PEOPLE, sharedSlapd, userDN

        self.slapd = sharedSlapd()
        dn = userDN("alice")
        self.slapd.modify(
            f"dn: {dn}\nchangetype: modify\n"
            f"replace: {QUOTA_ATTRIBUTE}\n{QUOTA_ATTRIBUTE}: {16 * KIB}\n"
        )
        self.addCleanup(
            self.slapd.modify,
            f"dn: {dn}\nchangetype: modify\ndelete: {QUOTA_ATTRIBUTE}\n",
        )
        config = configFromMapping(
            {
                "url": f"{self.slapd.url()}/{PEOPLE}?uid?sub",
                "quota_attribute": QUOTA_ATTRIBUTE,
            }
        )
        checker = LDAPChecker(config, reactor=reactor)
        users = LocalUsers(["ex.org"], [checker])
        self.assertTrue(users.hasStorageQuotas)
        root = os.path.abspath(self.mktemp())
        self.store = MaildirStore(
            root,
            reactor=reactor,
            quotaStorage=1024 * KIB,
            quotaLookup=users.storageQuota,
        )
        portal = Portal(MailRealm(users), [checker])
        imap = IMAPFactory(
            self.store,
            portal,
            config=IMAPConfig(allowPlaintextAuth=True),
            reactor=reactor,
        )
        smtp = SMTPFactory(
            self.store,
            portal,
            users=users,
            config=SMTPConfig(hostname="mx.test"),
            reactor=reactor,
        )
        self.ports = []
        for factory in (imap, smtp):
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[arg-type]
            self.addCleanup(port.stopListening)
            self.ports.append(port.getHost().port)  # type: ignore[attr-defined]

    def test_getQuotaRoot(self) -> None:
        """IMAPClient reads alice's 16 KiB; bob has the default; SMTP meets both."""
        from tests.slapd import PASSWORDS

        imapPort, smtpPort = self.ports

        def session() -> dict[str, Any]:
            out: dict[str, Any] = {}
            with smtplib.SMTP("127.0.0.1", smtpPort, timeout=10) as smtp:
                big = sized(12 * KIB, lines=20)
                smtp.sendmail("carol@example.net", ["alice@ex.org"], big)
                try:
                    smtp.sendmail("carol@example.net", ["alice@ex.org"], big)
                except smtplib.SMTPDataError as e:
                    out["smtp"] = e.smtp_code
                smtp.sendmail("carol@example.net", ["bob@ex.org"], big)
                smtp.sendmail("carol@example.net", ["bob@ex.org"], big)
            for user in ("alice", "bob"):
                c = IMAPClient("127.0.0.1", port=imapPort, ssl=False, timeout=10)
                try:
                    c.login(user, PASSWORDS[user])
                    roots, quotas = c.get_quota_root("INBOX")
                    out[user] = (
                        roots.quota_roots,
                        [(q.resource, q.usage, q.limit) for q in quotas],
                    )
                finally:
                    c.logout()
            return out

        def check(out: dict[str, Any]) -> None:
            self.assertEqual(out["smtp"], 452)
            self.assertEqual(out["alice"], (["User quota"], [("STORAGE", 12, 16)]))
            self.assertEqual(out["bob"], (["User quota"], [("STORAGE", 24, 1024)]))

        return deferToThread(session).addCallback(check)  # type: ignore[return-value]
