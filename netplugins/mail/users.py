"""
Who the local mail users are, and which Maildir each one reads.

Users come from the shared credential checkers (C{--auth}):
  - C{htpasswd:PATH}: every user in the file receives mail as
    C{user@domain} for each local C{--domain}; the local part must match the
    user name exactly, or case-insensitively when that names one user only.
  - C{ldap:...}: the whole address is looked up in the C{mail} attribute
    with the checker's search account (L{LDAPChecker.lookupByMail}), so
    C{alice.smith@example.org} reaches C{uid=alice}; failing that, the local
    part as a user name (L{LDAPChecker.lookupAttributes}), whose entry's
    C{mail} values, if it has any, must include the address.  The Maildir is
    named by the entry's C{uid}.
Other checkers cannot list their users: addresses are refused for them.

Who may send as whom (L{LocalUsers.maySendAs}, Postfix's
C{reject_sender_login_mismatch}): a logged-in user may use as envelope sender
an address that is delivered to their own Maildir (so an htpasswd user
C{user@} each local domain) or one of their LDAP C{mail} values, and the
null sender C{<>}.

The mailbox of a logged-in user (POP3, IMAP, SMTP AUTH) is
L{LocalUsers.mailboxFor} of the avatar ID: the C{uid} for LDAP (so that
C{Alice} and C{alice} read the same Maildir), the name itself otherwise.
L{MailRealm} hands out L{MailAccount} avatars with that mailbox resolved.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from attrs import frozen
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import Interface, implementer

from netplugins.mail.maildir.errors import BadNameError
from netplugins.mail.maildir.names import checkUserName

MAX_ADDRESS = 254


class IMailAccount(Interface):
    """
    A logged-in mail user (the avatar interface of SMTP AUTH, POP3, IMAP).
    """


@implementer(IMailAccount)
@frozen
class MailAccount:
    """
    @ivar avatarId: what the checker answered (as text).
    @ivar mailbox: the user's Maildir name in the store.
    """

    avatarId: str
    mailbox: str


def splitAddress(address: str) -> tuple[str, str] | None:
    """
    An address's local part and lower-cased domain, or C{None} if it is not
    a plain C{local@domain} of printable ASCII.
    """
    if len(address) > MAX_ADDRESS or not address.isascii() or not address.isprintable():
        return None
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or " " in address or "<" in address:
        return None
    return local, domain.lower().rstrip(".")


def _unwrap(checker: Any) -> Any:
    # ThrottledChecker and friends keep the real checker as .checker.
    while hasattr(checker, "checker"):
        checker = checker.checker
    return checker


def _text(avatarId: str | bytes) -> str:
    if isinstance(avatarId, bytes):
        return avatarId.decode("utf-8", "replace")
    return avatarId


class LocalUsers:
    """
    The local domains and the users the checkers know.

    @ivar domains: the local domains, lower case.
    """

    log = Logger()

    def __init__(self, domains: Iterable[str], checkers: Sequence[Any]) -> None:
        self.domains = frozenset(d.lower().rstrip(".") for d in domains)
        self.checkers = [_unwrap(c) for c in checkers]

    def isLocal(self, domain: str) -> bool:
        """
        Whether C{domain} is one of ours.
        """
        return domain.lower().rstrip(".") in self.domains

    def resolve(self, address: str) -> Deferred[str | None]:
        """
        The Maildir name of the local user C{address} reaches, or C{None}
        (not local, or no such user).  Never fails.
        """
        parts = splitAddress(address)
        if parts is None or not self.isLocal(parts[1]):
            return succeed(None)
        local, domain = parts
        return self._resolve(0, local, f"{local}@{domain}".casefold())

    def _resolve(self, index: int, local: str, address: str) -> Deferred[str | None]:
        from netplugins.cred.htpasswd import HtpasswdChecker
        from netplugins.cred.ldap.checker import LDAPChecker

        for i in range(index, len(self.checkers)):
            checker = self.checkers[i]
            if isinstance(checker, HtpasswdChecker):
                found = self._inHtpasswd(checker, local)
                if found is not None:
                    return succeed(found)
            elif isinstance(checker, LDAPChecker):
                d: Deferred[Any] = checker.lookupByMail(address)
                d.addCallback(self._cbByMail, checker, local, address)
                d.addCallback(self._cbNext, i + 1, local, address)
                return d
        return succeed(None)

    def _cbByMail(
        self, user: Any, checker: Any, local: str, address: str
    ) -> str | Deferred[str | None] | None:
        if user is not None:
            return self._cbLDAP(user, address)
        d: Deferred[Any] = checker.lookupAttributes(local)
        return d.addCallback(self._cbLDAP, address)

    def _cbNext(
        self, found: str | None, index: int, local: str, address: str
    ) -> str | Deferred[str | None] | None:
        if found is not None:
            return found
        return self._resolve(index, local, address)

    @staticmethod
    def _inHtpasswd(checker: Any, local: str) -> str | None:
        entries = checker.users.entries
        if local in entries:
            return local
        folded = [name for name in entries if name.casefold() == local.casefold()]
        return folded[0] if len(folded) == 1 else None

    @staticmethod
    def _cbLDAP(user: Any, address: str) -> str | None:
        if user is None:
            return None
        mail = [m.casefold() for m in user.mail]
        if mail and address not in mail:
            return None
        try:
            return checkUserName(user.uid)
        except BadNameError:
            return None

    def maySendAs(self, account: MailAccount, address: str) -> Deferred[bool]:
        """
        Whether C{account} may use C{address} as its envelope sender: the null
        sender, an address delivered to its own Maildir, or one of its LDAP
        C{mail} values.  Never fails.
        """
        if not address:
            return succeed(True)
        d: Deferred[Any] = self.resolve(address)
        return d.addCallback(self._cbMaySendAs, account, address)

    def _cbMaySendAs(
        self, mailbox: str | None, account: MailAccount, address: str
    ) -> bool | Deferred[bool]:
        from netplugins.cred.ldap.checker import LDAPChecker

        if mailbox is not None and mailbox == account.mailbox:
            return True
        for checker in self.checkers:
            if isinstance(checker, LDAPChecker):
                d: Deferred[Any] = checker.lookupAttributes(account.avatarId)
                return d.addCallback(
                    lambda user: (
                        user is not None
                        and user.uid == account.mailbox
                        and address.casefold() in (m.casefold() for m in user.mail)
                    )
                )
        return False

    def mailboxFor(self, avatarId: str | bytes) -> Deferred[str]:
        """
        The Maildir name of a logged-in user.
        """
        from netplugins.cred.ldap.checker import LDAPChecker

        name = _text(avatarId)
        for checker in self.checkers:
            if isinstance(checker, LDAPChecker):
                known = checker.attributes.get(name)
                if known is not None:
                    return succeed(known.uid)
        return succeed(name)


@implementer(IRealm)
class MailRealm:
    """
    Logs users in as L{MailAccount}s of L{LocalUsers}.
    """

    def __init__(self, users: LocalUsers) -> None:
        self.users = users

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> Deferred[Any]:
        if IMailAccount not in interfaces:
            raise NotImplementedError("only IMailAccount")
        d = self.users.mailboxFor(avatarId)
        return d.addCallback(
            lambda mailbox: (
                IMailAccount,
                MailAccount(_text(avatarId), checkUserName(mailbox)),
                lambda: None,
            )
        )
