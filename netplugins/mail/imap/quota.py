"""
np-imap's QUOTA commands (RFC 9208) on the store's storage quota
(L{netplugins.mail.maildir.quota}): one quota root a user, named
L{QUOTA_ROOT} as Dovecot names its own, over every mailbox, with the
STORAGE resource in units of 1024 octets.

GETQUOTA and GETQUOTAROOT report the user's limit: its own from the user
directory (an C{ldap:} checker's C{quota_attribute}), else
C{--quota-storage}; a user without one (its own 0, or neither set) has no
root.  SETQUOTA is refused (the limit is the operator's).  An APPEND, COPY
or MOVE past the limit is refused by the store and answered C{NO [OVERQUOTA]}
(L{netplugins.mail.imap.server}).  Without a quota nothing is advertised and
GETQUOTAROOT names no root.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from netplugins.mail.imap.parse import (
    Command,
    IMAPSyntaxError,
    astring,
    formatValue,
)
from netplugins.mail.imap.session import CommandError, SessionBase

QUOTA_ROOT = "User quota"

CAPABILITIES = ("QUOTA", "QUOTA=RES-STORAGE")


class QuotaCommands(SessionBase):
    """
    GETQUOTA, GETQUOTAROOT and SETQUOTA.
    """

    def quotaCapabilities(self) -> tuple[str, ...]:
        """
        What CAPABILITY says of quotas: nothing without one.
        """
        return CAPABILITIES if self.store.hasQuotas else ()

    def _sendQuota(self, used: int, limit: int) -> None:
        self._untagged(
            b"QUOTA "
            + formatValue(QUOTA_ROOT.encode())
            + b" (STORAGE %d %d)" % (used // 1024, limit // 1024)
        )

    def do_GETQUOTAROOT(self, command: Command) -> Deferred[bytes]:
        if len(command.args) != 1:
            raise IMAPSyntaxError("GETQUOTAROOT needs a mailbox name")
        name = self._mailboxName(command.args[0])
        shown = self._mailboxValue(name)

        # Any name has the user's root, as Dovecot answers: one quota holds
        # every mailbox, there or not.
        d = self.store.storageLimit(self.user)
        return d.addCallback(self._cbQuotaRoot, formatValue(shown))

    def _cbQuotaRoot(self, limit: int | None, shown: bytes) -> Deferred[bytes] | bytes:
        if limit is None:
            self._untagged(b"QUOTAROOT " + shown)
            return b"Getquotaroot completed."
        root = formatValue(QUOTA_ROOT.encode())
        self._untagged(b"QUOTAROOT " + shown + b" " + root)
        d = self.store.storageUsed(self.user)
        d.addCallback(self._sendQuota, limit)
        return d.addCallback(lambda _: b"Getquotaroot completed.")

    def do_GETQUOTA(self, command: Command) -> Deferred[bytes]:
        if len(command.args) != 1:
            raise IMAPSyntaxError("GETQUOTA needs a quota root")
        root = astring(command.args[0]).decode("utf-8", "replace")
        d = self.store.storageLimit(self.user)
        return d.addCallback(self._cbQuota, root)

    def _cbQuota(self, limit: int | None, root: str) -> Deferred[bytes]:
        if limit is None or root != QUOTA_ROOT:
            raise CommandError("Quota root does not exist")
        d = self.store.storageUsed(self.user)
        d.addCallback(self._sendQuota, limit)
        return d.addCallback(lambda _: b"Getquota completed.")

    def do_SETQUOTA(self, command: Command) -> bytes:
        if len(command.args) != 2 or not isinstance(command.args[1], list):
            raise IMAPSyntaxError("SETQUOTA needs a quota root and a list")
        raise CommandError("[NOPERM] Quota is set by the administrator")
