"""
Tests for L{netplugins.mail.users}: local users come from any checker that
provides L{IMailDirectory}, and from no other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from attrs import field, frozen
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

from netplugins.cred.htpasswd import HtpasswdChecker
from netplugins.cred.ldap.checker import LDAPChecker
from netplugins.cred.throttle import LoginThrottle, ThrottledChecker
from netplugins.mail.directory import IMailDirectory
from netplugins.mail.users import LocalUsers, MailAccount
from tests.mailfixtures import inline, writeHtpasswd


@implementer(IMailDirectory)
@frozen
class Directory:
    """
    An L{IMailDirectory} from dictionaries.

    @ivar recipients: address to user name.
    @ivar mailboxes: avatar ID to Maildir name.
    @ivar senders: avatar ID to the addresses it may send as.
    """

    recipients: dict[str, str] = field(factory=dict)
    mailboxes: dict[str, str] = field(factory=dict)
    senders: dict[str, tuple[str, ...]] = field(factory=dict)
    quotas: dict[str, int] | None = None

    @property
    def hasStorageQuotas(self) -> bool:
        return self.quotas is not None

    def storageQuota(self, mailbox: str) -> Deferred[int | None]:
        return succeed((self.quotas or {}).get(mailbox))

    def lookupRecipient(self, address: str) -> Deferred[str | None]:
        return succeed(self.recipients.get(address))

    def mailboxFor(self, avatarId: str) -> Deferred[str | None]:
        return succeed(self.mailboxes.get(avatarId))

    def senderAddresses(self, avatarId: str, mailbox: str) -> Deferred[Sequence[str]]:
        return succeed(self.senders.get(avatarId, ()))


class DirectoryTests(SynchronousTestCase):
    """
    L{LocalUsers} asks the L{IMailDirectory} checkers only.
    """

    def test_checkersProvideIt(self) -> None:
        """The htpasswd and LDAP checkers provide IMailDirectory."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        checker = HtpasswdChecker(writeHtpasswd(directory), runBlocking=inline)
        self.assertTrue(verifyObject(IMailDirectory, checker))
        self.assertTrue(verifyClass(IMailDirectory, LDAPChecker))

    def test_anyDirectory(self) -> None:
        """A checker providing IMailDirectory serves mail for its users."""
        users = LocalUsers(
            ["example.org"],
            [Directory(recipients={"Carol.Smith@example.org": "carol"})],
        )
        resolved = [
            self.successResultOf(users.resolve(address))
            for address in (
                "Carol.Smith@Example.ORG",
                "carol.smith@example.org",
                "Carol.Smith@example.net",
            )
        ]
        self.assertEqual(resolved, ["carol", None, None])

    def test_otherCheckersIgnored(self) -> None:
        """A checker without IMailDirectory knows no recipient."""
        checker = InMemoryUsernamePasswordDatabaseDontUse(carol=b"secret")
        users = LocalUsers(["example.org"], [checker])
        self.assertEqual(users.directories, [])
        self.assertIsNone(self.successResultOf(users.resolve("carol@example.org")))

    def test_unwrapsThrottled(self) -> None:
        """The checker behind a ThrottledChecker is asked: htpasswd users."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        checker = HtpasswdChecker(writeHtpasswd(directory), runBlocking=inline)
        throttled = ThrottledChecker(checker, LoginThrottle(Clock()))
        users = LocalUsers(["example.org"], [throttled])
        self.assertEqual(
            [
                self.successResultOf(users.resolve(address))
                for address in ("ALICE@example.org", "carol@example.org")
            ],
            ["alice", None],
        )

    def test_inOrder(self) -> None:
        """The first directory answering with a Maildir name wins."""
        users = LocalUsers(
            ["example.org"],
            [
                Directory(recipients={"a@example.org": ".bad", "b@example.org": "b1"}),
                Directory(recipients={"a@example.org": "a2", "b@example.org": "b2"}),
            ],
        )
        self.assertEqual(
            [
                self.successResultOf(users.resolve(address))
                for address in ("a@example.org", "b@example.org")
            ],
            ["a2", "b1"],
        )

    def test_senders(self) -> None:
        """A user sends as its own recipients' addresses and its directory's."""
        users = LocalUsers(
            ["example.org"],
            [
                Directory(
                    recipients={"carol@example.org": "carol"},
                    senders={"carol": ("C.Smith@example.net",)},
                )
            ],
        )
        carol = MailAccount("carol", "carol")
        self.assertEqual(
            [
                self.successResultOf(users.maySendAs(carol, address))
                for address in (
                    "",
                    "carol@example.org",
                    "c.smith@EXAMPLE.net",
                    "dave@example.org",
                )
            ],
            [True, True, True, False],
        )

    def test_mailbox(self) -> None:
        """A logged-in user's Maildir is its directory's, else its avatar ID."""
        users = LocalUsers(["example.org"], [Directory(mailboxes={"Carol": "carol"})])
        self.assertEqual(
            [
                self.successResultOf(users.mailboxFor(avatarId))
                for avatarId in ("Carol", b"dave")
            ],
            ["carol", "dave"],
        )
