"""
Who the local mail users are, and which Maildir each one reads.

Users come from the shared credential checkers (C{--auth}) that provide
L{IMailDirectory}, asked in order; the first that knows an address wins, and
its answer must be a valid Maildir name.  The two here:
  - C{htpasswd:PATH}: every user in the file receives mail as
    C{user@domain} for each local C{--domain}; the local part must match the
    user name exactly, or case-insensitively when that names one user only.
  - C{ldap:...}: the whole address is looked up in the C{mail} attribute
    with the checker's search account, so C{alice.smith@example.org} reaches
    C{uid=alice}; failing that, the local part as a user name, whose entry's
    C{mail} values, if it has any, must include the address.  The Maildir is
    named by the entry's C{uid}.
Other checkers cannot list their users: addresses are refused for them.

Local aliases (C{--aliases}, L{netplugins.mail.aliases}) come before users:
L{LocalUsers.recipients} expands an alias to the Maildirs of its targets,
and refuses it whole when one target is no user (logged, so the operator
sees the broken alias).

Who may send as whom (L{LocalUsers.maySendAs}, Postfix's
C{reject_sender_login_mismatch}): a logged-in user may use as envelope sender
an address that is delivered to their own Maildir (so an htpasswd user
C{user@} each local domain, and a local alias of theirs: one whose expansion
reaches their Maildir, a list alias for each of its members, as Postfix
does with the alias map as C{smtpd_sender_login_maps}) or one their
directory gives them (their LDAP C{mail} values), and the null sender
C{<>}.

The mailbox of a logged-in user (POP3, IMAP, SMTP AUTH) is
L{LocalUsers.mailboxFor} of the avatar ID: what its directory maps it to (the
C{uid} for LDAP, so that C{Alice} and C{alice} read the same Maildir), the
name itself otherwise.  L{MailRealm} hands out L{MailAccount} avatars with
that mailbox resolved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from attrs import frozen
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from zope.interface import Interface, implementer

from netplugins.mail.aliases import AliasError, AliasFile, Table, expandAlias
from netplugins.mail.directory import IMailDirectory
from netplugins.mail.maildir.errors import BadNameError
from netplugins.mail.maildir.names import checkUserName

MAX_ADDRESS = 254

_T = TypeVar("_T")


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


def splitAddress(address: str, utf8: bool = False) -> tuple[str, str] | None:
    """
    An address's local part and lower-cased domain, or C{None} if it is not
    a plain C{local@domain} of printable ASCII (or, with C{utf8}, of
    printable characters: an RFC 6531 address), at most L{MAX_ADDRESS} octets.
    """
    if (
        len(address.encode("utf-8")) > MAX_ADDRESS
        or not (utf8 or address.isascii())
        or not address.isprintable()
    ):
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


def _maildirName(name: str | None) -> str | None:
    """
    C{name}, if it can name a Maildir; else C{None}.
    """
    if name is None:
        return None
    try:
        return checkUserName(name)
    except BadNameError:
        return None


def _listOf(mailbox: str | None) -> list[str] | None:
    return None if mailbox is None else [mailbox]


def _first(
    directories: Sequence[IMailDirectory],
    ask: Callable[[IMailDirectory], Deferred[_T | None]],
) -> Deferred[_T | None]:
    """
    The first answer of C{ask(directory)} that is not C{None}, asking the
    C{directories} in turn; C{None} when none knows.
    """

    def askFrom(index: int) -> Deferred[_T | None]:
        if index == len(directories):
            return succeed(None)
        d = ask(directories[index])
        return d.addCallback(
            lambda found: found if found is not None else askFrom(index + 1)
        )

    return askFrom(0)


class LocalUsers:
    """
    The local domains and the users the checkers know.

    @ivar domains: the local domains, lower case.
    @ivar directories: the checkers that provide L{IMailDirectory}, in order.
    @ivar aliases: the local aliases, if any.
    """

    log = Logger()

    def __init__(
        self,
        domains: Iterable[str],
        checkers: Sequence[Any],
        aliases: AliasFile | None = None,
    ) -> None:
        self.domains = frozenset(d.lower().rstrip(".") for d in domains)
        self.directories: list[IMailDirectory] = [
            c for c in map(_unwrap, checkers) if IMailDirectory.providedBy(c)
        ]
        self.aliases = aliases

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
        recipient = f"{local}@{domain}"
        return _first(
            self.directories,
            lambda directory: directory.lookupRecipient(recipient).addCallback(
                _maildirName
            ),
        )

    def recipients(self, address: str) -> Deferred[list[str] | None]:
        """
        The Maildir names mail for C{address} goes to: its alias's targets'
        (each once), or the user's it reaches; C{None} to refuse it (not
        local, no such user, or an alias with a target that is no user).
        Never fails.
        """
        parts = splitAddress(address)
        if parts is None or not self.isLocal(parts[1]) or self.aliases is None:
            return self.resolve(address).addCallback(_listOf)
        d = self.aliases.current()
        return d.addCallback(self._cbExpand, address, *parts)

    def postmaster(self, fallback: str) -> Deferred[list[str]]:
        """
        The Maildir names of the postmaster: the targets of a C{postmaster}
        alias (its bare names in the first local domain, in sorted order),
        else (or when one of those is no user) C{fallback}.  Never fails.
        """
        if self.aliases is None or not self.domains:
            return succeed([fallback])
        address = f"postmaster@{min(self.domains)}"
        d = self.aliases.current()
        d.addCallback(self._cbExpand, address, "postmaster", min(self.domains))
        return d.addCallback(lambda found: found or [fallback])

    def _cbExpand(
        self, table: Table, address: str, local: str, domain: str
    ) -> list[str] | Deferred[list[str] | None] | None:
        try:
            targets = expandAlias(table, local, domain, self.isLocal)
        except AliasError as e:
            self.log.error(
                "aliases: <{address}> refused: {error}", address=address, error=e
            )
            return None
        if targets is None:
            return self.resolve(address).addCallback(_listOf)
        d = gatherResults([self.resolve(target) for target in targets])
        return d.addCallback(self._cbTargets, address, targets)

    def _cbTargets(
        self, mailboxes: list[str | None], address: str, targets: list[str]
    ) -> list[str] | None:
        unknown = [
            t for t, mailbox in zip(targets, mailboxes, strict=True) if mailbox is None
        ]
        if unknown:
            self.log.error(
                "aliases: <{address}> refused: no user for {unknown}",
                address=address,
                unknown=", ".join(unknown),
            )
            return None
        return list(dict.fromkeys(m for m in mailboxes if m is not None))

    def maySendAs(self, account: MailAccount, address: str) -> Deferred[bool]:
        """
        Whether C{account} may use C{address} as its envelope sender: the null
        sender, an address delivered to its own Maildir (its own, or an alias
        that reaches it), or one its directory gives it
        (L{IMailDirectory.senderAddresses}: its LDAP C{mail} values).  Never
        fails.
        """
        if not address:
            return succeed(True)
        d: Deferred[Any] = self.recipients(address)
        return d.addCallback(self._cbMaySendAs, account, address)

    def _cbMaySendAs(
        self, mailboxes: list[str] | None, account: MailAccount, address: str
    ) -> bool | Deferred[bool]:
        if mailboxes is not None and account.mailbox in mailboxes:
            return True
        folded = address.casefold()

        def holds(addresses: Sequence[str]) -> bool | None:
            return True if folded in (a.casefold() for a in addresses) else None

        d = _first(
            self.directories,
            lambda directory: directory.senderAddresses(
                account.avatarId, account.mailbox
            ).addCallback(holds),
        )
        return d.addCallback(bool)

    @property
    def hasStorageQuotas(self) -> bool:
        """
        Whether a directory may set per-user storage quotas.
        """
        return any(d.hasStorageQuotas for d in self.directories)

    def storageQuota(self, mailbox: str) -> Deferred[int | None]:
        """
        The storage quota the first directory that sets one gives the
        Maildir C{mailbox} (bytes, C{0} for no limit); C{None} when none
        does.  Never fails.
        """
        return _first(
            [d for d in self.directories if d.hasStorageQuotas],
            lambda directory: directory.storageQuota(mailbox),
        )

    def mailboxFor(self, avatarId: str | bytes) -> Deferred[str]:
        """
        The Maildir name of a logged-in user: what the first directory that
        maps it says (L{IMailDirectory.mailboxFor}), else the avatar ID.
        """
        name = _text(avatarId)
        d = _first(self.directories, lambda directory: directory.mailboxFor(name))
        return d.addCallback(lambda mailbox: name if mailbox is None else mailbox)


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
