"""
np-imap's mailbox commands, valid once logged in: CREATE, DELETE, RENAME,
SUBSCRIBE, UNSUBSCRIBE, NAMESPACE, LIST, LSUB, STATUS and APPEND.

LIST and LSUB match patterns with L{matchPattern}, which does not backtrack
(GHSA-8pqf-f4m5-798g); APPEND's size was checked when its literal was
announced (L{netplugins.mail.imap}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from netplugins.mail.imapparse import (
    Command,
    IMAPSyntaxError,
    Literal,
    astring,
    formatValue,
    iterParents,
    mailboxName,
    matchPattern,
)
from netplugins.mail.imapsession import (
    DELIMITER,
    CommandError,
    SessionBase,
    lettersFor,
    mailboxValue,
    noSuchMailbox,
    parseDateTime,
    trap,
)
from netplugins.mail.maildir import (
    INBOX,
    FolderExistsError,
    Message,
    NoSuchFolderError,
)


class MailboxCommands(SessionBase):
    """
    The commands on the user's mailboxes as a whole.
    """

    def do_CREATE(self, command: Command) -> Deferred[bytes]:
        name = self._oneMailbox(command).rstrip(DELIMITER)
        if name.upper() == INBOX:
            raise CommandError("[ALREADYEXISTS] Mailbox already exists")
        self._folder(name)
        d = self.store.createFolder(self.user, name)
        d.addErrback(trap, FolderExistsError, "[ALREADYEXISTS] Mailbox already exists")
        return d.addCallback(lambda _: b"Create completed.")

    def do_DELETE(self, command: Command) -> Deferred[bytes]:
        name = self._oneMailbox(command)
        if name.upper() == INBOX:
            raise CommandError("INBOX can't be deleted.")
        self._folder(name)

        def cbList(names: list[str]) -> Deferred[None]:
            if name not in names:
                raise CommandError(f"[NONEXISTENT] Mailbox doesn't exist: {name}")
            if any(n.startswith(name + DELIMITER) for n in names):
                raise CommandError("Mailbox has children, delete them first")
            if self.selected is not None and self.selected.folder.name == name:
                self.selected = None
                self.state = "authenticated"
            return self.store.deleteFolder(self.user, name)

        d = self.store.listFolders(self.user).addCallback(cbList)
        return d.addCallback(lambda _: b"Delete completed.")

    def do_RENAME(self, command: Command) -> Deferred[bytes]:
        if len(command.args) != 2:
            raise IMAPSyntaxError("RENAME needs two mailbox names")
        old, new = (mailboxName(a) for a in command.args)
        if INBOX in (old.upper(), new.upper()):
            raise CommandError("[CANNOT] INBOX can't be renamed here.")
        self._folder(old)
        self._folder(new)
        d = self.store.renameFolder(self.user, old, new)
        d.addErrback(
            trap, NoSuchFolderError, f"[NONEXISTENT] Mailbox doesn't exist: {old}"
        )
        d.addErrback(
            trap, FolderExistsError, "[ALREADYEXISTS] Target mailbox already exists"
        )
        return d.addCallback(lambda _: b"Rename completed.")

    def _oneMailbox(self, command: Command) -> str:
        if len(command.args) != 1:
            raise IMAPSyntaxError("expected a mailbox name")
        return mailboxName(command.args[0])

    def do_SUBSCRIBE(self, command: Command) -> Deferred[bytes]:
        name = self._oneMailbox(command)
        return self.store.setSubscribed(self.user, name, True).addCallback(
            lambda _: b"Subscribe completed."
        )

    def do_UNSUBSCRIBE(self, command: Command) -> Deferred[bytes]:
        name = self._oneMailbox(command)
        return self.store.setSubscribed(self.user, name, False).addCallback(
            lambda _: b"Unsubscribe completed."
        )

    def do_NAMESPACE(self, command: Command) -> bytes:
        self._untagged(b'NAMESPACE (("" ".")) NIL NIL')
        return b"Namespace completed."

    def do_LIST(self, command: Command) -> Deferred[bytes] | bytes:
        reference, pattern = self._listArgs(command)
        if not pattern:
            self._untagged(b'LIST (\\Noselect) "." ""')
            return b"List completed."
        d = self.store.listFolders(self.user)
        return d.addCallback(self._cbList, reference + pattern, "LIST")

    def do_LSUB(self, command: Command) -> Deferred[bytes]:
        reference, pattern = self._listArgs(command)
        d = self.store.subscriptions(self.user)
        return d.addCallback(self._cbList, reference + pattern, "LSUB")

    def _listArgs(self, command: Command) -> tuple[str, str]:
        if len(command.args) != 2:
            raise IMAPSyntaxError("expected a reference and a pattern")
        reference = astring(command.args[0]).decode("utf-8", "replace")
        pattern = astring(command.args[1]).decode("utf-8", "replace")
        return reference, pattern

    def _cbList(self, names: list[str], pattern: str, what: str) -> bytes:
        existing = set(names)
        everything = set(existing)
        if what == "LIST":
            for name in existing:
                everything.update(iterParents(name, DELIMITER))
        parents = {p for n in everything for p in iterParents(n, DELIMITER)}
        for name in sorted(everything):
            if not matchPattern(pattern, name, DELIMITER):
                continue
            attributes = []
            if name not in existing:
                attributes.append("\\Noselect")
            if what == "LIST":
                attributes.append(
                    "\\HasChildren" if name in parents else "\\HasNoChildren"
                )
            self._untagged(
                what.encode()
                + b" "
                + formatValue([attributes, DELIMITER.encode(), mailboxValue(name)])[
                    1:-1
                ]
            )
        return what.capitalize().encode() + b" completed."

    def do_STATUS(self, command: Command) -> Deferred[bytes]:
        if len(command.args) != 2 or not isinstance(command.args[1], list):
            raise IMAPSyntaxError("STATUS needs a mailbox and a list of items")
        name = mailboxName(command.args[0])
        items = [str(i).upper() for i in command.args[1]]
        known = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN"}
        if not items or any(i not in known for i in items):
            raise IMAPSyntaxError("unknown STATUS item")
        d = self._folder(name).scan(claimNew=False)
        d.addErrback(noSuchMailbox)

        def cbScan(state: Any) -> bytes:
            values = {
                "MESSAGES": len(state.messages),
                "RECENT": sum(1 for m in state.messages if m.recent),
                "UIDNEXT": state.uidNext,
                "UIDVALIDITY": state.uidValidity,
                "UNSEEN": sum(1 for m in state.messages if "S" not in m.flags),
            }
            out: list[object] = []
            for item in items:
                out += [item, values[item]]
            self._untagged(
                b"STATUS " + formatValue(mailboxValue(name)) + b" " + formatValue(out)
            )
            return b"Status completed."

        return d.addCallback(cbScan)

    def do_APPEND(self, command: Command) -> Deferred[bytes]:
        args = list(command.args)
        if len(args) < 2 or not isinstance(args[-1], Literal):
            raise IMAPSyntaxError("APPEND needs a mailbox and a literal message")
        name = mailboxName(args[0])
        data = bytes(args[-1])
        flags: list[str] = []
        when: float | None = None
        for extra in args[1:-1]:
            if isinstance(extra, list) and not flags:
                flags = [astring(f).decode("utf-8", "replace") for f in extra]
            elif isinstance(extra, bytes) and when is None:
                when = parseDateTime(extra)
            else:
                raise IMAPSyntaxError("unexpected APPEND argument")
        folder = self._folder(name)
        d = folder.append(data, lettersFor(flags), when)
        d.addErrback(
            trap, NoSuchFolderError, "[TRYCREATE] Mailbox doesn't exist: " + name
        )
        return d.addCallback(self._cbAppend, folder)

    def _cbAppend(self, message: Message, folder: Any) -> Deferred[bytes]:
        selected = self.selected
        if selected is not None and selected.folder.path == folder.path:
            d = self._refresh().addCallback(lambda _: selected.uidValidity)
        else:
            d = folder.scan(claimNew=False).addCallback(lambda s: s.uidValidity)
        return d.addCallback(
            lambda validity: (
                b"[APPENDUID %d %d] Append completed." % (validity, message.uid)
            )
        )
