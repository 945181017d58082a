"""
L{IMailDirectory}: what a credential checker tells the mail services about its
users, so that L{netplugins.mail.users.LocalUsers} can serve mail for the users
of any checker that provides it (C{htpasswd:} and C{ldap:} do).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


class IMailDirectory(Interface):
    """
    A directory of users who have Maildirs.

    Every method answers with a L{Deferred} that never fails: a directory that
    cannot be reached answers as one that knows no such user.
    """

    hasStorageQuotas = Attribute(
        "Whether L{storageQuota} can answer anything but C{None}: the C{ldap:} "
        "checker with a C{quota_attribute}."
    )

    # zope.interface declares methods without self.

    def lookupRecipient(address: str) -> Deferred[str | None]:  # noqa: N805
        """
        The user who receives mail at C{address}.

        @param address: C{local@domain}, the domain one of the server's, in
            lower case, the local part as the sender wrote it.
        @return: fires with the user's name, which names its Maildir, or
            C{None} when the directory has no user for C{address}.
        """

    def mailboxFor(avatarId: str) -> Deferred[str | None]:  # noqa: N805
        """
        The name of the Maildir of C{avatarId}, a user this directory logged
        in; C{None} when it is the avatar ID itself.
        """

    def senderAddresses(avatarId: str, mailbox: str) -> Deferred[Sequence[str]]:  # noqa: N805
        """
        The addresses, besides those delivered to its Maildir C{mailbox},
        that the logged-in user C{avatarId} may use as envelope sender.
        """

    def storageQuota(mailbox: str) -> Deferred[int | None]:  # noqa: N805
        """
        The most bytes the user whose Maildir is C{mailbox} may store, from
        the directory: C{0} for no limit, C{None} when the directory sets
        none (the store's C{--quota-storage} then applies).
        """
