"""
What every part of an np-imap session shares: the flag and date helpers,
L{CommandError}, the L{Selected} mailbox, and L{SessionBase}, the plumbing the
command modules build on (replies, the idle deadline, closing, waiting for the
output to drain, the user's folders, and L{SessionBase._refresh}, which
reports what other sessions changed).

The session itself is L{netplugins.mail.imap.server.IMAPServer}: the connection and
login state machine there, the mailbox commands in
L{netplugins.mail.imap.mailboxes}, the selected-mailbox commands in
L{netplugins.mail.imap.selected}.
"""

from __future__ import annotations

import re
from calendar import timegm
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from netplugins.mail.imap.condstore import vanishedLines
from netplugins.mail.imap.parse import (
    IMAPSyntaxError,
    Literal,
    Raw,
    Token,
    decodeModifiedUTF7,
    encodeModifiedUTF7,
    formatValue,
    mailboxName,
    parseSequenceSet,
)
from netplugins.mail.maildir.errors import MaildirError, NoSuchFolderError
from netplugins.mail.maildir.files import MAX_KEYWORDS
from netplugins.mail.maildir.folder import Message, keywordNames
from netplugins.mail.maildir.modseq import toRanges
from netplugins.mail.maildir.names import IMAP_FLAGS, KEYWORD_LETTERS
from netplugins.mail.maildir.store import MaildirStore
from netplugins.session import Discipline

if TYPE_CHECKING:
    from netplugins.mail.imap.server import IMAPFactory

DELIMITER = "."

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SYSTEM_LOWER = frozenset(f.lower() for f in SYSTEM_FLAGS)
_LETTER_FLAGS = {letter: flag for flag, letter in IMAP_FLAGS.items()}
_ATOM_NAME = re.compile(r"[A-Za-z0-9._&+,\-~!$'/:;<=>?@^`|#]+\Z")
_DATE_TIME = re.compile(
    r" ?([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) "
    r"([+-])([0-9]{2})([0-9]{2})\Z"
)
_MONTHS = {
    m: i + 1
    for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())
}


#: The longest keyword (a custom flag) a client may give, in octets.
MAX_KEYWORD = 100
_KEYWORD = re.compile(
    r"[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]{1," + str(MAX_KEYWORD) + r"}\Z"
)


def flagsOf(
    message: Message, recent: bool = False, keywords: Sequence[str] = ()
) -> list[str]:
    """
    The IMAP flags of a stored message; C{keywords} are its folder's (the
    name of letter C{a} first).
    """
    flags = [_LETTER_FLAGS[c] for c in message.flags if c in _LETTER_FLAGS]
    flags += keywordNames(message.flags, keywords)
    if recent:
        flags.append("\\Recent")
    return flags


def lettersFor(flags: Sequence[str], keywords: Sequence[str] = ()) -> str:
    """
    Maildir letters for IMAP flags: system flags' letters, and those of the
    keywords among C{keywords} (the folder's, by index); other keywords and
    C{\\Recent} are dropped.
    """
    byName = {f.lower(): letter for f, letter in IMAP_FLAGS.items()}
    letters = {byName[f.lower()] for f in flags if f.lower() in byName}
    letters.update(KEYWORD_LETTERS[keywords.index(f)] for f in flags if f in keywords)
    return "".join(sorted(letters))


def splitFlags(flags: Sequence[str]) -> list[str]:
    """
    The keywords among C{flags} (flags not starting with a backslash).

    @raise IMAPSyntaxError: for a keyword that is not an atom, or longer than
        L{MAX_KEYWORD}, or an unknown system flag.
    """
    out = []
    for flag in flags:
        if flag.startswith("\\"):
            if flag.lower() not in _SYSTEM_LOWER and flag.lower() != "\\recent":
                raise IMAPSyntaxError("unknown system flag")
            continue
        if not _KEYWORD.match(flag):
            raise IMAPSyntaxError("invalid keyword")
        out.append(flag)
    return list(dict.fromkeys(out))


def parseDateTime(value: bytes) -> float:
    """
    APPEND's date-time (C{"17-Jul-1996 02:44:25 -0700"}) in seconds.

    @raise IMAPSyntaxError: otherwise.
    """
    match = _DATE_TIME.match(value.decode("ascii", "replace"))
    month = _MONTHS.get(match.group(2).lower()) if match else None
    if match is None or month is None:
        raise IMAPSyntaxError("invalid date-time")
    day, year, hh, mm, ss = (int(match.group(i)) for i in (1, 3, 4, 5, 6))
    offset = (int(match.group(8)) * 60 + int(match.group(9))) * 60
    if match.group(7) == "-":
        offset = -offset
    try:
        return timegm((year, month, day, hh, mm, ss)) - offset
    except (ValueError, OverflowError):
        raise IMAPSyntaxError("invalid date-time") from None


class CommandError(Exception):
    """
    A command that gets a tagged NO with this text.
    """


def mailboxValue(name: str) -> Token:
    return name if _ATOM_NAME.match(name) else name.encode("utf-8")


#: What a mailbox name may not hold: it would end the response line it is
#: echoed in (or the store's one-a-line files).
_LINE_BREAKING = re.compile(rb"[\r\n\x00]")
_UTF8_QUOTABLE = re.compile(rb"[^\x00\r\n]{0,1024}\Z")


def validMailboxName(name: bytes) -> bool:
    """
    Whether C{name}, a mailbox argument as sent, is free of CR, LF and NUL.
    """
    return _LINE_BREAKING.search(name) is None


def _escapeLineBreak(match: re.Match[bytes]) -> bytes:
    return {b"\r": b"\\r", b"\n": b"\\n"}.get(match.group(), b"\\0")


@define
class Selected:
    """
    The selected mailbox as this session knows it.

    @ivar messages: the messages by sequence number minus one.
    @ivar recent: the UIDs this session reports as C{\\Recent}.
    @ivar keywords: the folder's keywords as last reported (C{* FLAGS}).
    @ivar highestModseq: the folder's highest mod-sequence as last seen.
    """

    folder: Any
    readOnly: bool
    uidValidity: int
    uidNext: int
    messages: list[Message]
    recent: set[int] = field(factory=set)
    keywords: tuple[str, ...] = ()
    highestModseq: int = 0

    def flagsOf(self, message: Message) -> list[str]:
        """
        The IMAP flags of C{message}, C{\\Recent} and keywords included.
        """
        return flagsOf(message, message.uid in self.recent, self.keywords)


def failed(error: Exception) -> Deferred[bytes]:
    """
    A Deferred that has failed with C{error}.
    """
    d: Deferred[bytes] = Deferred()
    d.errback(error)
    return d


def trap(reason: Failure, error: type[Exception], text: str) -> None:
    """
    An errback: turn C{error} into a tagged NO saying C{text}.
    """
    reason.trap(error)
    raise CommandError(text)


def noSuchMailbox(reason: Failure) -> None:
    """
    An errback: a missing folder is C{NO [NONEXISTENT]}.
    """
    reason.trap(NoSuchFolderError)
    raise CommandError("[NONEXISTENT] Mailbox doesn't exist")


class SessionBase(Protocol):
    """
    The state and plumbing of one IMAP session that every command module
    uses; L{netplugins.mail.imap.server.IMAPServer} sets it up.
    """

    log = Logger()

    factory: IMAPFactory
    transport: Any
    discipline: Discipline
    state: str
    account: Any
    selected: Selected | None
    _closing: bool
    _continuation: Callable[[bytes], None] | None
    _timer: Any
    _idlePoll: Any
    _sizes: dict[tuple[int, str], int]
    #: Whether the client enabled UTF8=ACCEPT (RFC 6855): mailbox names are
    #: UTF-8 both ways, stored in modified UTF-7 all the same.
    utf8: bool = False
    #: Whether CONDSTORE (RFC 7162) is enabled: flag changes are reported
    #: with their MODSEQ; QRESYNC: with their UID too, and expunges as
    #: VANISHED.
    condstore: bool = False
    qresync: bool = False

    def sendLine(self, line: bytes) -> None:
        if not self._closing:
            self.transport.write(line + b"\r\n")

    def _untagged(self, text: bytes) -> None:
        self.sendLine(b"* " + text)

    def _tagged(self, tag: str, status: bytes, text: bytes) -> None:
        # The text may echo what the client sent (a mailbox name in an
        # error): it must never end the line and start a response of its own.
        text = _LINE_BREAKING.sub(_escapeLineBreak, text)
        self.sendLine(tag.encode() + b" " + status + b" " + text)

    # Deadlines and closing

    def _setTimer(self, seconds: float) -> None:
        """
        (Re)start the idle deadline: L{_timedOut} in C{seconds}.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.factory.reactor.callLater(seconds, self._timedOut)

    def _timedOut(self) -> None:
        self.log.info(
            "np-imap: closing idle connection from {peer}",
            peer=str(self.transport.getPeer()),
        )
        self._untagged(b"BYE Autologout; idle for too long")
        self._close("idle deadline passed")

    def _close(self, why: str = "") -> None:
        """
        Close after what was written, aborting the connection if it does not
        finish (L{Discipline.close}); nothing more is read or written.

        @param why: logged if the connection has to be aborted.
        """
        self._closing = True
        self.discipline.close(why)

    # Output

    def _whenWritable(self) -> Deferred[None]:
        """
        A Deferred that fires once the transport's output is under its
        watermark again (at once if it is, or if the session is closing): a
        command writing its responses in batches waits on it between batches.
        """
        if self._closing:
            return succeed(None)
        return self.discipline.whenWritable()

    # The user's folders

    @property
    def store(self) -> MaildirStore:
        return self.factory.store

    @property
    def user(self) -> str:
        return str(self.account.mailbox)

    def _mailboxName(self, token: Token) -> str:
        """
        A mailbox argument as the store names it (modified UTF-7).
        """
        name = mailboxName(token)
        return encodeModifiedUTF7(name) if self.utf8 else name

    def _mailboxValue(self, name: str) -> Token:
        """
        A stored mailbox name as this client reads it: as stored, or in
        UTF-8 (a quoted string) once UTF8=ACCEPT is enabled.
        """
        if not self.utf8:
            return mailboxValue(name)
        try:
            text = decodeModifiedUTF7(name)
        except ValueError:
            text = name  # made by other means: shown as it is
        if _ATOM_NAME.match(text):
            return text
        data = text.encode("utf-8")
        if _UTF8_QUOTABLE.match(data):
            return Raw(b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"')
        return Literal(data)

    def _folder(self, name: str) -> Any:
        try:
            return self.store.folder(self.user, name)
        except MaildirError as e:
            raise CommandError(f"[CANNOT] {e}") from None

    # The selected mailbox

    def _refresh(self) -> Deferred[None]:
        """
        Rescan the selected folder and report what others changed: EXPUNGE
        (highest number first, so the numbers stay valid), flag changes, then
        EXISTS and RECENT for new messages.
        """
        selected = self.selected
        assert selected is not None

        def cbScan(state: Any) -> None:
            if self.selected is not selected:
                return
            self._reportKeywords(selected, state.keywords)
            now = {m.uid: m for m in state.messages}
            gone = [m.uid for m in selected.messages if m.uid not in now]
            if self.qresync:
                if gone and not self._closing:
                    self.transport.writeSequence(vanishedLines(toRanges(gone), False))
            else:
                for seq in range(len(selected.messages), 0, -1):
                    if selected.messages[seq - 1].uid not in now:
                        self._untagged(b"%d EXPUNGE" % seq)
            known = {m.uid for m in selected.messages}
            kept = []
            for old in selected.messages:
                new = now.get(old.uid)
                if new is None:
                    continue
                kept.append(new)
                if new.flags != old.flags or (
                    self.condstore and new.modseq != old.modseq
                ):
                    self._untagged(self._flagsFetch(len(kept), new))
            added = [m for m in state.messages if m.uid not in known]
            selected.messages = kept + added
            selected.uidNext = state.uidNext
            selected.highestModseq = state.highestModseq
            selected.recent.update(m.uid for m in added if m.recent)
            if added:
                self._untagged(b"%d EXISTS" % len(selected.messages))
                self._untagged(b"%d RECENT" % len(selected.recent))

        return selected.folder.scan(claimNew=not selected.readOnly).addCallback(cbScan)

    def _flagsFetch(
        self, seq: int, message: Message, flags: bool = True, modseq: bool = False
    ) -> bytes:
        """
        An unsolicited C{n FETCH} of C{message}'s FLAGS (if C{flags}), with
        its UID once QRESYNC is enabled and its MODSEQ once CONDSTORE is (or
        if C{modseq}).
        """
        selected = self.selected
        assert selected is not None
        items = []
        if self.qresync:
            items.append(b"UID %d" % message.uid)
        if flags:
            items.append(b"FLAGS " + formatValue(selected.flagsOf(message)))
        if self.condstore or modseq:
            items.append(b"MODSEQ (%d)" % message.modseq)
        return b"%d FETCH (%s)" % (seq, b" ".join(items))

    def _enableCondstore(self) -> None:
        """
        A CONDSTORE enabling command ran (RFC 7162 section 3.1): from now on
        flag changes carry MODSEQ; the first one with a mailbox selected is
        told its HIGHESTMODSEQ.
        """
        if self.condstore:
            return
        self.condstore = True
        if self.selected is not None:
            self._untagged(
                b"OK [HIGHESTMODSEQ %d] Highest" % self.selected.highestModseq
            )

    def _reportKeywords(self, selected: Selected, keywords: tuple[str, ...]) -> None:
        """
        Tell the client of keywords new to C{selected} (C{* FLAGS} and
        C{PERMANENTFLAGS}, as Dovecot does).
        """
        if keywords == selected.keywords:
            return
        selected.keywords = keywords
        self._sendFlags(selected)

    def _sendFlags(self, selected: Selected) -> None:
        flags = list(SYSTEM_FLAGS) + list(selected.keywords)
        self._untagged(b"FLAGS " + formatValue(flags))
        if selected.readOnly:
            permanent = b"()"
        else:
            if len(selected.keywords) < MAX_KEYWORDS:
                flags.append("\\*")
            permanent = formatValue(flags)
        self._untagged(b"OK [PERMANENTFLAGS " + permanent + b"] Flags permitted.")

    def _messagesFor(self, token: Token, byUid: bool) -> list[tuple[int, Message]]:
        selected = self.selected
        assert selected is not None
        sequence = parseSequenceSet(token)
        messages = selected.messages
        if byUid:
            largest = messages[-1].uid if messages else 0
            ranges = sequence.resolve(largest)
            return [
                (i, m)
                for i, m in enumerate(messages, 1)
                if any(lo <= m.uid <= hi for lo, hi in ranges)
            ]
        for ends in sequence.ranges:
            if any(end is not None and end > len(messages) for end in ends):
                raise IMAPSyntaxError("Invalid messageset")
        numbers = sequence.select(range(1, len(messages) + 1), len(messages))
        return [(n, messages[n - 1]) for n in numbers]
