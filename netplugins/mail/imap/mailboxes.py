"""
np-imap's mailbox commands, valid once logged in: CREATE, DELETE, RENAME,
SUBSCRIBE, UNSUBSCRIBE, NAMESPACE, LIST, LSUB, STATUS and APPEND.

SPECIAL-USE (RFC 6154) is by name, as Dovecot's C{special_use} settings are:
the mailboxes of L{SPECIAL_USE} carry their attribute in LIST, and
C{LIST (SPECIAL-USE)} lists only them; the session creates them at login
(L{netplugins.mail.imap.server.IMAPConfig.autoCreate}).  C{CREATE name (USE
(...))} is accepted when the attribute is the one that name has.

LIST takes RFC 5258's extended forms (selection options SUBSCRIBED, REMOTE,
RECURSIVEMATCH, SPECIAL-USE; several patterns; return options SUBSCRIBED,
CHILDREN, SPECIAL-USE) and RFC 5819's RETURN (STATUS (...)), whose STATUS
lines are made one mailbox scan at a time, waiting for the client to read.

RENAME of INBOX moves its messages into the new mailbox and leaves INBOX
empty (RFC 3501 section 6.3.5).

LIST and LSUB match patterns with L{ListPattern}, which does not backtrack
(GHSA-8pqf-f4m5-798g) and reads each name once for the name and all its
parents; APPEND's size was checked when its literal was announced
(L{netplugins.mail.imap.server}).

Bounds, so that one command's work stays small: a mailbox name (created,
renamed or subscribed to) has at most L{MAX_MAILBOX_LEVELS} levels and
L{MAX_MAILBOX_NAME} octets, and a user at most L{MAX_MAILBOXES} mailboxes and
as many subscriptions; LIST and LSUB refuse to go through more (made by other
means) with C{NO [LIMIT]}.  APPEND refuses a message with NUL octets, which
RFC 3501's literals cannot hold.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed

from netplugins.mail.imap.binary import Literal8
from netplugins.mail.imap.parse import (
    Command,
    IMAPSyntaxError,
    ListPattern,
    Literal,
    Token,
    astring,
    encodeModifiedUTF7,
    formatSequenceSet,
    formatValue,
)
from netplugins.mail.imap.session import (
    DELIMITER,
    CommandError,
    SessionBase,
    lettersFor,
    noSuchMailbox,
    parseDateTime,
    splitFlags,
    trap,
)
from netplugins.mail.maildir.errors import (
    FolderExistsError,
    KeywordLimitError,
    NoSuchFolderError,
)
from netplugins.mail.maildir.folder import Message
from netplugins.mail.maildir.names import INBOX

#: The most levels (names between delimiters) in a mailbox name: Dovecot's
#: limit before it bounded the whole name only.
MAX_MAILBOX_LEVELS = 16
#: The longest mailbox name, in UTF-8 octets: the Maildir store's own limit
#: (the name is one directory name, C{.a.b.c}).
MAX_MAILBOX_NAME = 250
#: The most mailboxes (INBOX included), and the most subscriptions, a user
#: may have; LIST and LSUB go through at most this many names.
MAX_MAILBOXES = 5000

#: The special-use attribute of each mailbox that has one, by name.
SPECIAL_USE = {
    "Drafts": "\\Drafts",
    "Sent": "\\Sent",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}


def checkMailboxName(name: str) -> None:
    """
    Refuse a name deeper than L{MAX_MAILBOX_LEVELS} or longer than
    L{MAX_MAILBOX_NAME}.

    @raise CommandError: C{NO [LIMIT]} for such a name.
    """
    if len(name.encode("utf-8", "surrogateescape")) > MAX_MAILBOX_NAME:
        raise CommandError(
            f"[LIMIT] Mailbox name longer than {MAX_MAILBOX_NAME} octets"
        )
    if name.count(DELIMITER) >= MAX_MAILBOX_LEVELS:
        raise CommandError(
            f"[LIMIT] Mailbox name deeper than {MAX_MAILBOX_LEVELS} levels"
        )


def _hasChildren(names: list[str], name: str) -> bool:
    # names is sorted: those under name follow name + DELIMITER at once.
    below = name + DELIMITER
    i = bisect_left(names, below)
    return i < len(names) and names[i].startswith(below)


def statusItems(token: Token) -> list[str]:
    """
    STATUS's item names.

    @raise IMAPSyntaxError: for none, or an unknown one.
    """
    if not isinstance(token, list):
        raise IMAPSyntaxError("expected a list of STATUS items")
    items = [str(i).upper() for i in token]
    if not items or any(i not in _STATUS_ITEMS for i in items):
        raise IMAPSyntaxError("unknown STATUS item")
    return items


_STATUS_ITEMS = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"}
)


@define
class ListQuery:
    """
    What a LIST asks for (RFC 5258's options).
    """

    subscribedOnly: bool = False
    specialOnly: bool = False
    recursive: bool = False
    extended: bool = False
    children: bool = True
    returnChildren: bool = False
    special: bool = True
    returnSpecial: bool = False
    subscribed: bool = False
    status: list[str] | None = None
    existing: list[str] = field(factory=list)


class MailboxCommands(SessionBase):
    """
    The commands on the user's mailboxes as a whole.
    """

    def do_CREATE(self, command: Command) -> Deferred[bytes]:
        if len(command.args) == 2:
            # RFC 6154's CREATE-SPECIAL-USE: CREATE name (USE (attributes)).
            name = self._mailboxName(command.args[0]).rstrip(DELIMITER)
            self._checkUse(name, command.args[1])
        else:
            name = self._oneMailbox(command).rstrip(DELIMITER)
        if name.upper() == INBOX:
            raise CommandError("[ALREADYEXISTS] Mailbox already exists")
        checkMailboxName(name)
        self._folder(name)

        def cbList(names: list[str]) -> Deferred[None]:
            if len(names) >= MAX_MAILBOXES:
                raise CommandError(f"[LIMIT] At most {MAX_MAILBOXES} mailboxes")
            return self.store.createFolder(self.user, name)

        d = self.store.listFolders(self.user).addCallback(cbList)
        d.addErrback(trap, FolderExistsError, "[ALREADYEXISTS] Mailbox already exists")
        return d.addCallback(lambda _: b"Create completed.")

    def _checkUse(self, name: str, parameters: Token) -> None:
        """
        Accept C{(USE (attributes))} for C{name} if the attributes are at most
        the one its name gives it.

        @raise CommandError: C{NO [USEATTR]} for any other attribute.
        """
        if (
            not isinstance(parameters, list)
            or len(parameters) != 2
            or not isinstance(parameters[0], str)
            or parameters[0].upper() != "USE"
            or not isinstance(parameters[1], list)
        ):
            raise IMAPSyntaxError("expected (USE (attributes))")
        wanted = {astring(a).decode("utf-8", "replace").lower() for a in parameters[1]}
        own = SPECIAL_USE.get(name, "").lower()
        if wanted - {own}:
            raise CommandError(
                "[USEATTR] Special-use attributes are given by mailbox name"
            )

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
        old, new = (self._mailboxName(a) for a in command.args)
        if new.upper() == INBOX:
            raise CommandError("[ALREADYEXISTS] INBOX exists.")
        self._folder(old)
        self._folder(new)
        checkMailboxName(new)
        if old == INBOX:
            return self._renameInbox(new)

        def cbList(names: list[str]) -> Deferred[None]:
            # Children move too: their new names must fit as well.
            for name in names:
                if name.startswith(old + DELIMITER):
                    checkMailboxName(new + name[len(old) :])
            return self.store.renameFolder(self.user, old, new)

        d = self.store.listFolders(self.user).addCallback(cbList)
        d.addErrback(
            trap, NoSuchFolderError, f"[NONEXISTENT] Mailbox doesn't exist: {old}"
        )
        d.addErrback(
            trap, FolderExistsError, "[ALREADYEXISTS] Target mailbox already exists"
        )
        return d.addCallback(lambda _: b"Rename completed.")

    def _renameInbox(self, new: str) -> Deferred[bytes]:
        """
        RFC 3501 section 6.3.5: INBOX's messages move to a new mailbox
        C{new}; INBOX stays, empty.
        """

        def cbList(names: list[str]) -> Deferred[None]:
            if len(names) >= MAX_MAILBOXES:
                raise CommandError(f"[LIMIT] At most {MAX_MAILBOXES} mailboxes")
            return self.store.renameInbox(self.user, new)

        d = self.store.listFolders(self.user).addCallback(cbList)
        d.addErrback(
            trap, FolderExistsError, "[ALREADYEXISTS] Target mailbox already exists"
        )
        return d.addCallback(lambda _: b"Rename completed.")

    def _oneMailbox(self, command: Command) -> str:
        if len(command.args) != 1:
            raise IMAPSyntaxError("expected a mailbox name")
        return self._mailboxName(command.args[0])

    def do_SUBSCRIBE(self, command: Command) -> Deferred[bytes]:
        name = self._oneMailbox(command)
        checkMailboxName(name)

        def cbSubscriptions(names: list[str]) -> Deferred[None]:
            if name not in names and len(names) >= MAX_MAILBOXES:
                raise CommandError(f"[LIMIT] At most {MAX_MAILBOXES} subscriptions")
            return self.store.setSubscribed(self.user, name, True)

        d = self.store.subscriptions(self.user).addCallback(cbSubscriptions)
        return d.addCallback(lambda _: b"Subscribe completed.")

    def do_UNSUBSCRIBE(self, command: Command) -> Deferred[bytes]:
        name = self._oneMailbox(command)
        return self.store.setSubscribed(self.user, name, False).addCallback(
            lambda _: b"Unsubscribe completed."
        )

    def do_NAMESPACE(self, command: Command) -> bytes:
        self._untagged(b'NAMESPACE (("" ".")) NIL NIL')
        return b"Namespace completed."

    def do_LIST(self, command: Command) -> Deferred[bytes] | bytes:
        """
        LIST, with RFC 5258's extended forms (selection options SUBSCRIBED,
        REMOTE, RECURSIVEMATCH and SPECIAL-USE; several patterns; return
        options SUBSCRIBED, CHILDREN, SPECIAL-USE and RFC 5819's STATUS).
        """
        args = list(command.args)
        query = ListQuery()
        if args and isinstance(args[0], list):
            options = {str(o).upper() for o in args.pop(0)}
            if options - {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}:
                raise IMAPSyntaxError("unsupported LIST selection option")
            if "RECURSIVEMATCH" in options and not options - {
                "RECURSIVEMATCH",
                "REMOTE",
            }:
                raise IMAPSyntaxError("RECURSIVEMATCH needs another option")
            query.subscribedOnly = "SUBSCRIBED" in options
            query.specialOnly = "SPECIAL-USE" in options
            query.recursive = "RECURSIVEMATCH" in options
            query.extended = True
            query.subscribed = query.subscribedOnly
        if len(args) == 4 and str(args[2]).upper() == "RETURN":
            returns = args.pop()
            args.pop()
            query.extended = True
            self._listReturns(query, returns)
        if query.extended:
            # RFC 5258: the extended LIST says only what it is asked.
            query.children = query.returnChildren
            query.special = query.specialOnly or query.returnSpecial
        if len(args) != 2:
            raise IMAPSyntaxError("expected a reference and a pattern")
        patterns = args[1] if isinstance(args[1], list) else [args[1]]
        if not patterns:
            raise IMAPSyntaxError("expected a pattern")
        texts = [self._listArgs([args[0], p]) for p in patterns]
        if not query.extended and not texts[0][1]:
            self._untagged(b'LIST (\\Noselect) "." ""')
            return b"List completed."
        d = self.store.listFolders(self.user)

        def cbFolders(names: list[str]) -> Deferred[list[str]] | list[str]:
            query.existing = names
            if query.subscribed:
                return self.store.subscriptions(self.user)
            return []

        d.addCallback(cbFolders)
        return d.addCallback(
            self._cbExtendedList, [r + p for r, p in texts if r + p], query
        )

    def _listReturns(self, query: ListQuery, returns: Token) -> None:
        if not isinstance(returns, list):
            raise IMAPSyntaxError("expected return options")
        tokens = list(returns)
        while tokens:
            option = str(tokens.pop(0)).upper()
            if option == "CHILDREN":
                query.returnChildren = True
            elif option == "SUBSCRIBED":
                query.subscribed = True
            elif option == "SPECIAL-USE":
                query.returnSpecial = True
            elif option == "STATUS" and tokens and isinstance(tokens[0], list):
                query.status = statusItems(tokens.pop(0))
            else:
                raise IMAPSyntaxError("unsupported LIST return option")

    def _cbExtendedList(
        self, subscriptions: list[str], patterns: list[str], query: ListQuery
    ) -> Deferred[bytes] | bytes:
        existing = query.existing
        if len(existing) > MAX_MAILBOXES or len(subscriptions) > MAX_MAILBOXES:
            raise CommandError(f"[LIMIT] More than {MAX_MAILBOXES} mailboxes to list")
        subscribed = set(subscriptions)
        known = set(existing)
        names = sorted(set(existing) | subscribed) if query.subscribedOnly else existing
        found: dict[str, bool] = {}  # name -> whether it matched itself
        for pattern in patterns:
            matcher = ListPattern(pattern, DELIMITER)
            for name in names:
                lengths = matcher.prefixes(name)
                if not lengths:
                    continue
                whole = lengths[-1] == len(name)
                if query.subscribedOnly:
                    if whole and name in subscribed:
                        found[name] = True
                    if query.recursive:
                        # A parent that matches, with a subscribed child.
                        for n in lengths:
                            if n < len(name) and name in subscribed:
                                found.setdefault(name[:n], False)
                else:
                    for n in lengths:
                        found.setdefault(name[:n], n == len(name))
        sortedNames = sorted(existing)
        lines: list[tuple[str, bytes]] = []
        for name in sorted(found):
            if query.specialOnly and (name not in known or name not in SPECIAL_USE):
                continue
            if query.subscribedOnly and not found[name] and not query.recursive:
                continue
            attributes = []
            if name not in known:
                attributes.append("\\NonExistent" if query.extended else "\\Noselect")
            if query.children:
                attributes.append(
                    "\\HasChildren"
                    if _hasChildren(sortedNames, name)
                    else "\\HasNoChildren"
                )
            if query.special and name in known and name in SPECIAL_USE:
                attributes.append(SPECIAL_USE[name])
            if query.subscribed and name in subscribed:
                attributes.append("\\Subscribed")
            value: list[Any] = [
                attributes,
                DELIMITER.encode(),
                self._mailboxValue(name),
            ]
            if query.subscribedOnly and not (found[name] and name in subscribed):
                value.append(["CHILDINFO", [b"SUBSCRIBED"]])
            lines.append((name, b"LIST " + formatValue(value)[1:-1]))
        if query.status is None:
            for _, line in lines:
                self._untagged(line)
            return b"List completed."
        return self._listStatus(lines, known, query.status, 0)

    def _listStatus(
        self,
        lines: list[tuple[str, bytes]],
        known: set[str],
        items: list[str],
        index: int,
    ) -> Deferred[bytes]:
        """
        RFC 5819: each LIST line, then the STATUS of its mailbox if it can be
        selected, one mailbox scan at a time, waiting for the client to read.
        """
        while index < len(lines) and not self._closing:
            name, line = lines[index]
            if self.discipline.outputBlocked:
                return self._whenWritable().addCallback(
                    self._listStatusNext, lines, known, items, index
                )
            self._untagged(line)
            index += 1
            if name in known:
                d = self._folder(name).scan(claimNew=False)
                d.addCallbacks(
                    self._sendStatus,
                    # Deleted meanwhile: the LIST line stands alone.
                    lambda f: f.trap(NoSuchFolderError),
                    callbackArgs=(name, items),
                )
                return d.addCallback(self._listStatusNext, lines, known, items, index)
        return succeed(b"List completed.")

    def _listStatusNext(
        self,
        _: object,
        lines: list[tuple[str, bytes]],
        known: set[str],
        items: list[str],
        index: int,
    ) -> Deferred[bytes]:
        return self._listStatus(lines, known, items, index)

    def do_LSUB(self, command: Command) -> Deferred[bytes]:
        reference, pattern = self._listArgs(list(command.args))
        d = self.store.subscriptions(self.user)
        return d.addCallback(self._cbList, reference + pattern, "LSUB")

    def _listArgs(self, args: list[Token]) -> tuple[str, str]:
        if len(args) != 2:
            raise IMAPSyntaxError("expected a reference and a pattern")
        reference = astring(args[0]).decode("utf-8", "replace")
        pattern = astring(args[1]).decode("utf-8", "replace")
        if self.utf8:
            # Wildcards are ASCII: they stay as they are.
            return encodeModifiedUTF7(reference), encodeModifiedUTF7(pattern)
        return reference, pattern

    def _cbList(self, names: list[str], pattern: str, what: str) -> bytes:
        if len(names) > MAX_MAILBOXES:
            raise CommandError(f"[LIMIT] More than {MAX_MAILBOXES} mailboxes to list")
        matcher = ListPattern(pattern, DELIMITER)
        for name in sorted(set(names)):
            if matcher.matches(name):
                self._untagged(
                    what.encode()
                    + b" "
                    + formatValue([[], DELIMITER.encode(), self._mailboxValue(name)])[
                        1:-1
                    ]
                )
        return what.capitalize().encode() + b" completed."

    def do_STATUS(self, command: Command) -> Deferred[bytes]:
        if len(command.args) != 2 or not isinstance(command.args[1], list):
            raise IMAPSyntaxError("STATUS needs a mailbox and a list of items")
        name = self._mailboxName(command.args[0])
        items = statusItems(command.args[1])
        if "HIGHESTMODSEQ" in items:
            self._enableCondstore()
        d = self._folder(name).scan(claimNew=False)
        d.addErrback(noSuchMailbox)
        d.addCallback(self._sendStatus, name, items)
        return d.addCallback(lambda _: b"Status completed.")

    def _sendStatus(self, state: Any, name: str, items: list[str]) -> None:
        values = {
            "MESSAGES": len(state.messages),
            "RECENT": sum(1 for m in state.messages if m.recent),
            "UIDNEXT": state.uidNext,
            "UIDVALIDITY": state.uidValidity,
            "UNSEEN": sum(1 for m in state.messages if "S" not in m.flags),
            "HIGHESTMODSEQ": state.highestModseq,
        }
        out: list[object] = []
        for item in items:
            out += [item, values[item]]
        self._untagged(
            b"STATUS " + formatValue(self._mailboxValue(name)) + b" " + formatValue(out)
        )

    def do_APPEND(self, command: Command) -> Deferred[bytes]:
        """
        APPEND, and MULTIAPPEND (RFC 3502): several messages, each with its
        own flags and date, stored all or nothing.
        """
        args = list(command.args)
        if len(args) < 2:
            raise IMAPSyntaxError("APPEND needs a mailbox and a literal message")
        name = self._mailboxName(args[0])
        items = []
        flags: list[str] | None = None
        when: float | None = None
        for extra in args[1:]:
            if isinstance(extra, Literal):
                if b"\x00" in extra and isinstance(extra, Literal8):
                    # RFC 3516: binary content the store cannot keep as such.
                    raise CommandError("[UNKNOWN-CTE] NUL octets cannot be stored")
                if b"\x00" in extra:
                    # RFC 3501's literals hold CHAR8, which leaves NUL out.
                    raise IMAPSyntaxError("NUL octets are not allowed in a message")
                flags = flags or []
                items.append((bytes(extra), lettersFor(flags), when, splitFlags(flags)))
                flags, when = None, None
            elif isinstance(extra, list) and flags is None and when is None:
                flags = [astring(f).decode("utf-8", "replace") for f in extra]
            elif isinstance(extra, bytes) and when is None:
                when = parseDateTime(extra)
            else:
                raise IMAPSyntaxError("unexpected APPEND argument")
        if not items or flags is not None or when is not None:
            raise IMAPSyntaxError("APPEND needs a literal message")
        folder = self._folder(name)
        d = folder.appendMany(items)
        d.addErrback(
            trap, NoSuchFolderError, "[TRYCREATE] Mailbox doesn't exist: " + name
        )
        d.addErrback(trap, KeywordLimitError, "[LIMIT] Too many keywords")
        return d.addCallback(self._cbAppend, folder)

    def _cbAppend(self, messages: list[Message], folder: Any) -> Deferred[bytes]:
        selected = self.selected
        if selected is not None and selected.folder.path == folder.path:
            d = self._refresh().addCallback(lambda _: selected.uidValidity)
        else:
            d = folder.scan(claimNew=False).addCallback(lambda s: s.uidValidity)
        uids = formatSequenceSet(m.uid for m in messages).encode()
        return d.addCallback(
            lambda validity: b"[APPENDUID %d %s] Append completed." % (validity, uids)
        )
