"""
An IMAP4rev1 server (RFC 3501, with IDLE, UIDPLUS, LITERAL+, SASL-IR,
UNSELECT, NAMESPACE, CHILDREN and APPENDLIMIT) on the shared Maildir store.

Why not C{twisted.mail.imap4.IMAP4Server}?  Its flaws sit in its core, not at
its edges: it reads commands and literals in one loop that keeps executing
what was pipelined after STARTTLS (command injection), announces
C{"Ready for -5 octets"} to C{{-5}}, buffers APPEND literals without bound and
matches LIST patterns with a backtracking regular expression
(GHSA-8pqf-f4m5-798g); its mailbox interfaces are synchronous-first, while
every Maildir access here must run off the reactor thread.  Fixing those means
replacing the parser, the literal handling, the state machine and LIST, which
is most of it.  So this module is a small state machine of its own, over
L{netplugins.mail.imapparse} (bounded reading and tokenising),
L{netplugins.mail.imapfetch} (MIME structure, ENVELOPE, BODYSTRUCTURE and
sections cut from the original octets) and L{netplugins.mail.imapsearch}.

Commands run one at a time: while one waits on the store, input is buffered
(and reading paused past L{MAX_BUFFERED}), so pipelining works and a slow
disk cannot make a session's memory grow without bound.

Security rules, from SECURITY.md:
  - STARTTLS discards everything the client sent after the STARTTLS line
    before the handshake;
  - before TLS, CAPABILITY says LOGINDISABLED and LOGIN/AUTHENTICATE are
    refused with C{NO [PRIVACYREQUIRED]}, unless the operator allows
    plaintext logins;
  - logins go through the shared L{LoginThrottle}: at most six per
    connection, the next one hangs up;
  - a literal's size is checked when it is announced: malformed is BAD, an
    APPEND over the limit is C{NO [TOOBIG]} before a byte of it is read (the
    client waits for a continuation it never gets; a LITERAL+ one closes the
    connection), other commands' literals are bounded by L{MAX_COMMAND};
  - 120 seconds to log in, 30 minutes idle (counted from the last complete
    command, so trickling bytes does not keep a session alive), longer in IDLE.
"""

from __future__ import annotations

import binascii
import os
import re
from calendar import timegm
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define, field
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from netplugins.cred.throttle import LoginThrottle
from netplugins.mail.imapfetch import (
    Entity,
    FetchItem,
    canonical,
    fetchValue,
    formatInternalDate,
    parseEntity,
    parseFetchItems,
)
from netplugins.mail.imapparse import (
    Command,
    IMAPSyntaxError,
    Literal,
    Token,
    astring,
    commandHead,
    formatSequenceSet,
    formatValue,
    iterParents,
    literalAnnounced,
    mailboxName,
    matchPattern,
    parseSequenceSet,
    tokenize,
)
from netplugins.mail.imapsearch import Candidate, matches, parseSearch
from netplugins.mail.maildir import (
    IMAP_FLAGS,
    INBOX,
    FolderExistsError,
    MaildirError,
    MaildirStore,
    Message,
    NoSuchFolderError,
)
from netplugins.mail.users import IMailAccount

DELIMITER = "."
MAX_LINE = 8 * 1024
MAX_COMMAND = 64 * 1024
MAX_BUFFERED = 256 * 1024
DEFAULT_APPEND_LIMIT = 25 * 1024 * 1024
PRE_AUTH_TIMEOUT = 120.0
IDLE_TIMEOUT = 30 * 60.0
IDLE_COMMAND_TIMEOUT = 2 * 60 * 60.0
POLL_INTERVAL = 2.0

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_LETTER_FLAGS = {letter: flag for flag, letter in IMAP_FLAGS.items()}
_ATOM_NAME = re.compile(r"[A-Za-z0-9._&+,\-~!$'/:;<=>?@^`|#]+\Z")
_DATE_TIME = re.compile(
    r" ?([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) "
    r"([+-])([0-9]{2})([0-9]{2})\Z"
)
_MONTHS = {m: i + 1 for i, m in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec".split())}

# Commands and the states they are allowed in.
_ANY = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "ID"})
_NOT_AUTHENTICATED = frozenset({"STARTTLS", "LOGIN", "AUTHENTICATE"})
_AUTHENTICATED = frozenset({
    "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
    "LIST", "LSUB", "STATUS", "APPEND", "IDLE", "NAMESPACE",
})
_SELECTED = frozenset({
    "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY",
    "UID FETCH", "UID SEARCH", "UID STORE", "UID COPY", "UID EXPUNGE",
})


def flagsOf(message: Message, recent: bool = False) -> list[str]:
    """
    The IMAP flags of a stored message.
    """
    flags = [_LETTER_FLAGS[c] for c in message.flags if c in _LETTER_FLAGS]
    if recent:
        flags.append("\\Recent")
    return flags


def lettersFor(flags: Sequence[str]) -> str:
    """
    Maildir letters for IMAP flags; keywords (unsupported: PERMANENTFLAGS
    does not offer C{\\*}) and C{\\Recent} are dropped.
    """
    byName = {f.lower(): letter for f, letter in IMAP_FLAGS.items()}
    return "".join(sorted({byName[f.lower()] for f in flags if f.lower() in byName}))


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


def _mailboxValue(name: str) -> Token:
    return name if _ATOM_NAME.match(name) else name.encode("utf-8")


@define
class Selected:
    """
    The selected mailbox as this session knows it.

    @ivar messages: the messages by sequence number minus one.
    @ivar recent: the UIDs this session reports as C{\\Recent}.
    """

    folder: Any
    readOnly: bool
    uidValidity: int
    uidNext: int
    messages: list[Message]
    recent: set[int] = field(factory=set)


class IMAPServer(Protocol):
    """
    One IMAP session.  See the module docstring.
    """

    log = Logger()

    factory: IMAPFactory
    transport: Any

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pieces: list[bytes] = []
        self._commandSize = 0
        self._head: tuple[str, str] | None = None
        self._literal: tuple[int, list[bytes]] | None = None
        self._busy = False
        self._parsing = False
        self._paused = False
        self._closing = False
        self._continuation: Callable[[bytes], None] | None = None
        self.state = "not authenticated"
        self.account: Any = None
        self._logout: Callable[[], None] | None = None
        self.selected: Selected | None = None
        self._tls = False
        self._timer: Any = None
        self._idlePoll: Any = None
        self._attempts: Any = None
        self._sizes: dict[tuple[int, str], int] = {}

    # Connection

    def connectionMade(self) -> None:
        self._tls = ISSLTransport.providedBy(self.transport)
        self._attempts = self.factory.throttle.connection()
        self._setTimer(self.factory.preAuthTimeout)
        self.sendLine(b"* OK [CAPABILITY " + self.capabilities() + b"] np-imap ready.")

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closing = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._stopIdlePoll()
        if self._logout is not None:
            logout, self._logout = self._logout, None
            logout()

    def sendLine(self, line: bytes) -> None:
        if not self._closing:
            self.transport.write(line + b"\r\n")

    def _untagged(self, text: bytes) -> None:
        self.sendLine(b"* " + text)

    def _tagged(self, tag: str, status: bytes, text: bytes) -> None:
        self.sendLine(tag.encode() + b" " + status + b" " + text)

    def _setTimer(self, seconds: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.factory.reactor.callLater(seconds, self._timedOut)

    def _timedOut(self) -> None:
        self.log.info("np-imap: closing idle connection from {peer}",
                      peer=str(self.transport.getPeer()))
        self._untagged(b"BYE Autologout; idle for too long")
        self._close()

    def _close(self) -> None:
        self.transport.loseConnection()
        self._closing = True

    def capabilities(self) -> bytes:
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "IDLE", "UIDPLUS", "UNSELECT",
                "NAMESPACE", "CHILDREN", "ID",
                f"APPENDLIMIT={self.factory.appendLimit}"]
        if self.state == "not authenticated":
            if not self._tls and self.factory.startTLS is not None:
                caps.append("STARTTLS")
            if self._loginAllowed():
                caps.append("AUTH=PLAIN")
            else:
                caps.append("LOGINDISABLED")
        return " ".join(caps).encode()

    def _loginAllowed(self) -> bool:
        return self._tls or self.factory.allowPlaintextAuth

    # Reading commands

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self._buffer += data
        self._parse()
        if self._busy and len(self._buffer) > MAX_BUFFERED and not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _parse(self) -> None:
        # Commands that finish at once call back in here: the outer loop
        # carries on instead, so pipelining cannot recurse without bound.
        if self._parsing:
            return
        self._parsing = True
        try:
            self._parseBuffered()
        finally:
            self._parsing = False
        if not self._busy and self._paused and not self._closing:
            self._paused = False
            self.transport.resumeProducing()

    def _parseBuffered(self) -> None:
        while (not self._busy or self._continuation is not None) and not self._closing:
            if self._literal is not None:
                remaining, chunks = self._literal
                take = bytes(self._buffer[:remaining])
                del self._buffer[:remaining]
                chunks.append(take)
                remaining -= len(take)
                if remaining:
                    self._literal = (remaining, chunks)
                    return
                self._literal = None
                self._pieces.append(Literal(b"".join(chunks)))
                continue
            end = self._buffer.find(b"\n")
            if end == -1 or end > MAX_LINE:
                if len(self._buffer) > MAX_LINE:
                    self._lineTooLong()
                return
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            self._lineReceived(line)

    def _lineTooLong(self) -> None:
        self.log.warn("np-imap: line over {limit} bytes from {peer}",
                      limit=MAX_LINE, peer=str(self.transport.getPeer()))
        self._untagged(b"BYE Line too long")
        self._close()

    def _resetCommand(self) -> None:
        self._pieces = []
        self._commandSize = 0
        self._head = None

    def _lineReceived(self, line: bytes) -> None:
        if self._continuation is not None:
            continuation, self._continuation = self._continuation, None
            continuation(line)
            return
        if not self._pieces and not line.strip():
            return
        try:
            if self._head is None:
                self._head = commandHead(line)
            announced = literalAnnounced(line)
        except IMAPSyntaxError as e:
            tag = self._head[0] if self._head else "*"
            self._resetCommand()
            self._tagged(tag, b"BAD", str(e).encode())
            return
        tag, name = self._head
        self._commandSize += len(line)
        if announced is None:
            self._pieces.append(line)
            if self._commandSize > MAX_COMMAND:
                self._resetCommand()
                self._tagged(tag, b"BAD", b"Command too long")
                return
            self._commandReady()
            return
        self._pieces.append(line[:line.rindex(b"{")])
        # APPEND takes one message up to the limit; everything else, and
        # all of APPEND but its message, fits in MAX_COMMAND.
        limit = self.factory.appendLimit if name == "APPEND" else MAX_COMMAND
        total = self._commandSize + announced.size
        self._commandSize = total
        if announced.size > limit or total > limit + (
                MAX_COMMAND if name == "APPEND" else 0):
            self._resetCommand()
            if name == "APPEND":
                self._tagged(tag, b"NO", b"[TOOBIG] Message too large")
            else:
                self._tagged(tag, b"BAD", b"Command too long")
            if not announced.synchronising:
                # Its octets are on their way: hang up rather than read them.
                self._untagged(b"BYE Literal too large")
                self._close()
            return
        self._literal = (announced.size, [])
        if announced.synchronising:
            self.sendLine(b"+ Ready for literal data")

    def _commandReady(self) -> None:
        assert self._head is not None
        tag, name = self._head
        pieces = self._pieces
        self._resetCommand()
        try:
            tokens = tokenize(pieces)
        except IMAPSyntaxError as e:
            self._tagged(tag, b"BAD", str(e).encode())
            return
        skip = 3 if name.startswith("UID ") else 2
        command = Command(tag, name, tokens[skip:])
        self._setTimer(self.factory.idleTimeout if self.state != "not authenticated"
                       else self.factory.preAuthTimeout)
        self._dispatch(command)

    def _dispatch(self, command: Command) -> None:
        name = command.name
        allowed = (
            name in _ANY
            or (name in _NOT_AUTHENTICATED and self.state == "not authenticated")
            or (name in _AUTHENTICATED and self.state in ("authenticated", "selected"))
            or (name in _SELECTED and self.state == "selected")
        )
        known = name in _ANY | _NOT_AUTHENTICATED | _AUTHENTICATED | _SELECTED
        if not known:
            self._tagged(command.tag, b"BAD", b"Unknown command")
            return
        if not allowed:
            self._tagged(command.tag, b"BAD", b"Command not valid in this state")
            return
        handler = getattr(self, "do_" + name.replace(" ", "_"))
        self._busy = True
        d = maybeDeferred(handler, command)
        d.addCallback(self._cbCommand, command)
        d.addErrback(self._ebCommand, command)
        d.addBoth(self._commandDone)

    def _cbCommand(self, text: bytes | None, command: Command) -> None:
        # None: the command answered itself.
        if text is not None:
            self._tagged(command.tag, b"OK", text)

    def _ebCommand(self, reason: Failure, command: Command) -> None:
        if reason.check(IMAPSyntaxError):
            self._tagged(command.tag, b"BAD", str(reason.value).encode())
        elif reason.check(CommandError, MaildirError):
            self._tagged(command.tag, b"NO", str(reason.value).encode())
        else:
            self.log.failure("np-imap: {command} failed", reason,
                             command=command.name)
            self._tagged(command.tag, b"NO", b"[SERVERBUG] Internal error")

    def _commandDone(self, _: object) -> None:
        self._busy = False
        self._continuation = None
        self._parse()

    # Any state

    def do_CAPABILITY(self, command: Command) -> bytes:
        self._untagged(b"CAPABILITY " + self.capabilities())
        return b"Capability completed."

    def do_NOOP(self, command: Command) -> Deferred[bytes] | bytes:
        if self.selected is None:
            return b"NOOP completed."
        return self._refresh().addCallback(lambda _: b"NOOP completed.")

    do_CHECK = do_NOOP

    def do_LOGOUT(self, command: Command) -> None:
        self._untagged(b"BYE Logging out")
        self._tagged(command.tag, b"OK", b"Logout completed.")
        self._close()

    def do_ID(self, command: Command) -> bytes:
        self._untagged(b'ID ("name" "np-imap")')
        return b"ID completed."

    # Not authenticated

    def do_STARTTLS(self, command: Command) -> None:
        if self._tls or self.factory.startTLS is None:
            raise CommandError("TLS is already active" if self._tls
                                else "STARTTLS is not available")
        # Anything pipelined after STARTTLS came in the clear: never run it.
        self._buffer.clear()
        self._tagged(command.tag, b"OK", b"Begin TLS negotiation now.")
        self.transport.startTLS(self.factory.startTLS())
        self._tls = True

    def do_LOGIN(self, command: Command) -> Deferred[bytes] | None:
        if not self._loginAllowed():
            self._tagged(command.tag, b"NO",
                         b"[PRIVACYREQUIRED] Use STARTTLS before logging in.")
            return None
        if len(command.args) != 2:
            raise IMAPSyntaxError("LOGIN needs a user name and a password")
        user, password = (astring(a) for a in command.args)
        return self._login(command, user, password)

    def do_AUTHENTICATE(self, command: Command) -> Deferred[bytes] | None:
        if not command.args or not isinstance(command.args[0], str):
            raise IMAPSyntaxError("AUTHENTICATE needs a mechanism")
        if command.args[0].upper() != "PLAIN":
            raise CommandError("Unsupported authentication mechanism")
        if not self._loginAllowed():
            self._tagged(command.tag, b"NO",
                         b"[PRIVACYREQUIRED] Use STARTTLS before logging in.")
            return None
        if len(command.args) == 2:
            return self._plain(command, astring(command.args[1]))
        done: Deferred[bytes] = Deferred()

        def response(line: bytes) -> None:
            self._plain(command, line).chainDeferred(done)

        # The next line is the client's response, read while this command runs.
        self._continuation = response
        self.sendLine(b"+ ")
        return done

    def _plain(self, command: Command, line: bytes) -> Deferred[bytes]:
        if line.strip() == b"*":
            return _failed(IMAPSyntaxError("Authentication cancelled"))
        try:
            decoded = binascii.a2b_base64(line.strip(), strict_mode=True)
        except binascii.Error:
            return _failed(IMAPSyntaxError("Invalid base64"))
        fields = decoded.split(b"\x00")
        if len(fields) != 3 or fields[0] not in (b"", fields[1]):
            return _failed(CommandError("[AUTHENTICATIONFAILED] Invalid credentials"))
        return self._login(command, fields[1], fields[2])

    def _login(self, command: Command, user: bytes, password: bytes) -> Deferred[bytes]:
        d = self.factory.throttle.login(
            self.factory.portal,
            UsernamePassword(user, password),
            None,
            IMailAccount,
            peer=self.transport.getPeer(),
            connection=self._attempts,
        )
        login: Deferred[Any] = d.addCallback(self._cbLogin)
        return login.addErrback(  # type: ignore[call-overload,no-any-return]
            self._ebLogin, user, command)

    def _cbLogin(self, result: tuple[Any, Any, Callable[[], None]]) -> Deferred[bytes]:
        _, account, logout = result
        self.account = account
        self._logout = logout
        self.state = "authenticated"
        self._setTimer(self.factory.idleTimeout)
        self.log.info("np-imap: {user} logged in from {peer}",
                      user=account.avatarId, peer=str(self.transport.getPeer()))
        # A user who never received mail has an INBOX all the same.
        d = self.store.ensureUser(self.user)
        return d.addCallback(
            lambda _: b"[CAPABILITY " + self.capabilities() + b"] Logged in")

    def _ebLogin(self, reason: Failure, user: bytes, command: Command) -> None:
        # Answers itself: NO, then BYE when the connection used all its tries.
        reason.trap(UnauthorizedLogin)
        self.log.info("np-imap: failed login for {user} from {peer}",
                      user=user.decode("utf-8", "replace")[:64],
                      peer=str(self.transport.getPeer()))
        self._tagged(command.tag, b"NO",
                     b"[AUTHENTICATIONFAILED] Authentication failed.")
        if self._attempts.exhausted:
            self._untagged(b"BYE Too many login attempts")
            self._close()

    # Authenticated: mailboxes

    @property
    def store(self) -> MaildirStore:
        return self.factory.store

    @property
    def user(self) -> str:
        return str(self.account.mailbox)

    def _folder(self, name: str) -> Any:
        try:
            return self.store.folder(self.user, name)
        except MaildirError as e:
            raise CommandError(f"[CANNOT] {e}") from None

    def do_SELECT(self, command: Command, readOnly: bool = False) -> Deferred[bytes]:
        if len(command.args) != 1:
            raise IMAPSyntaxError("expected a mailbox name")
        if self.selected is not None:
            # RFC 7162's [CLOSED]: the old mailbox's responses end here.
            self._untagged(b"OK [CLOSED] Previous mailbox closed.")
        self.selected = None
        self.state = "authenticated"
        folder = self._folder(mailboxName(command.args[0]))
        d = folder.scan(claimNew=not readOnly)
        d.addErrback(_noSuchMailbox)
        return d.addCallback(self._cbSelect, folder, readOnly)

    def do_EXAMINE(self, command: Command) -> Deferred[bytes]:
        return self.do_SELECT(command, readOnly=True)

    def _cbSelect(self, state: Any, folder: Any, readOnly: bool) -> bytes:
        selected = Selected(folder, readOnly, state.uidValidity, state.uidNext,
                            list(state.messages),
                            {m.uid for m in state.messages if m.recent})
        self.selected = selected
        self.state = "selected"
        flags = formatValue(list(SYSTEM_FLAGS))
        self._untagged(b"FLAGS " + flags)
        permanent = b"()" if readOnly else flags
        self._untagged(b"OK [PERMANENTFLAGS " + permanent + b"] Flags permitted.")
        self._untagged(b"%d EXISTS" % len(selected.messages))
        self._untagged(b"%d RECENT" % len(selected.recent))
        for seq, message in enumerate(selected.messages, 1):
            if "S" not in message.flags:
                self._untagged(b"OK [UNSEEN %d] First unseen." % seq)
                break
        self._untagged(b"OK [UIDVALIDITY %d] UIDs valid" % state.uidValidity)
        self._untagged(b"OK [UIDNEXT %d] Predicted next UID" % state.uidNext)
        mode = b"[READ-ONLY]" if readOnly else b"[READ-WRITE]"
        return mode + b" Select completed."

    def do_CREATE(self, command: Command) -> Deferred[bytes]:
        name = self._oneMailbox(command).rstrip(DELIMITER)
        if name.upper() == INBOX:
            raise CommandError("[ALREADYEXISTS] Mailbox already exists")
        self._folder(name)
        d = self.store.createFolder(self.user, name)
        d.addErrback(_trap, FolderExistsError,
                     "[ALREADYEXISTS] Mailbox already exists")
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
        d.addErrback(_trap, NoSuchFolderError,
                     f"[NONEXISTENT] Mailbox doesn't exist: {old}")
        d.addErrback(_trap, FolderExistsError,
                     "[ALREADYEXISTS] Target mailbox already exists")
        return d.addCallback(lambda _: b"Rename completed.")

    def _oneMailbox(self, command: Command) -> str:
        if len(command.args) != 1:
            raise IMAPSyntaxError("expected a mailbox name")
        return mailboxName(command.args[0])

    def do_SUBSCRIBE(self, command: Command) -> Deferred[bytes]:
        name = self._oneMailbox(command)
        return self.factory.subscriptions.change(self.user, name, True).addCallback(
            lambda _: b"Subscribe completed.")

    def do_UNSUBSCRIBE(self, command: Command) -> Deferred[bytes]:
        name = self._oneMailbox(command)
        return self.factory.subscriptions.change(self.user, name, False).addCallback(
            lambda _: b"Unsubscribe completed.")

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
        d = self.factory.subscriptions.read(self.user)
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
                attributes.append("\\HasChildren" if name in parents
                                  else "\\HasNoChildren")
            self._untagged(what.encode() + b" " + formatValue(
                [attributes, DELIMITER.encode(), _mailboxValue(name)])[1:-1])
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
        d.addErrback(_noSuchMailbox)

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
            self._untagged(b"STATUS " + formatValue(_mailboxValue(name)) + b" "
                           + formatValue(out))
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
        d.addErrback(_trap, NoSuchFolderError,
                     "[TRYCREATE] Mailbox doesn't exist: " + name)
        return d.addCallback(self._cbAppend, folder)

    def _cbAppend(self, message: Message, folder: Any) -> Deferred[bytes]:
        selected = self.selected
        if selected is not None and selected.folder.path == folder.path:
            d = self._refresh().addCallback(lambda _: selected.uidValidity)
        else:
            d = folder.scan(claimNew=False).addCallback(lambda s: s.uidValidity)
        return d.addCallback(
            lambda validity: b"[APPENDUID %d %d] Append completed."
            % (validity, message.uid))

    def do_IDLE(self, command: Command) -> Deferred[bytes]:
        done: Deferred[bytes] = Deferred()

        def response(line: bytes) -> None:
            self._stopIdlePoll()
            self._setTimer(self.factory.idleTimeout)
            if line.strip().upper() == b"DONE":
                done.callback(b"Idle completed.")
            else:
                done.errback(IMAPSyntaxError("Expected DONE."))

        self._continuation = response
        self.sendLine(b"+ idling")
        self._setTimer(self.factory.idleCommandTimeout)
        if self.selected is not None:
            from twisted.internet.task import LoopingCall

            poll = LoopingCall(self._pollIdle)
            poll.clock = self.factory.reactor
            poll.start(self.factory.pollInterval, now=False)
            self._idlePoll = poll
        return done

    def _pollIdle(self) -> Deferred[None] | None:
        if self.selected is None or self._closing:
            return None
        return self._refresh().addErrback(
            lambda f: self.log.failure("np-imap: IDLE poll failed", f))

    def _stopIdlePoll(self) -> None:
        if self._idlePoll is not None and self._idlePoll.running:
            self._idlePoll.stop()
        self._idlePoll = None

    # Selected

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
            now = {m.uid: m for m in state.messages}
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
                if new.flags != old.flags:
                    seq = len(kept)
                    flags = formatValue(flagsOf(new, new.uid in selected.recent))
                    self._untagged(b"%d FETCH (FLAGS %s)" % (seq, flags))
            added = [m for m in state.messages if m.uid not in known]
            selected.messages = kept + added
            selected.uidNext = state.uidNext
            selected.recent.update(m.uid for m in added if m.recent)
            if added:
                self._untagged(b"%d EXISTS" % len(selected.messages))
                self._untagged(b"%d RECENT" % len(selected.recent))

        return selected.folder.scan(claimNew=not selected.readOnly).addCallback(cbScan)

    def _messagesFor(self, token: Token, byUid: bool) -> list[tuple[int, Message]]:
        selected = self.selected
        assert selected is not None
        sequence = parseSequenceSet(token)
        messages = selected.messages
        if byUid:
            largest = messages[-1].uid if messages else 0
            ranges = sequence.resolve(largest)
            return [(i, m) for i, m in enumerate(messages, 1)
                    if any(lo <= m.uid <= hi for lo, hi in ranges)]
        for ends in sequence.ranges:
            if any(end is not None and end > len(messages) for end in ends):
                raise IMAPSyntaxError("Invalid messageset")
        numbers = sequence.select(range(1, len(messages) + 1), len(messages))
        return [(n, messages[n - 1]) for n in numbers]

    def do_CLOSE(self, command: Command) -> Deferred[bytes] | bytes:
        selected = self.selected
        assert selected is not None
        self.selected = None
        self.state = "authenticated"
        if selected.readOnly:
            return b"Close completed."
        deleted = [m for m in selected.messages if "T" in m.flags]
        return selected.folder.delete(deleted).addCallback(
            lambda _: b"Close completed.")

    def do_UNSELECT(self, command: Command) -> bytes:
        self.selected = None
        self.state = "authenticated"
        return b"Unselect completed."

    def do_EXPUNGE(
        self, command: Command, uids: Token | None = None
    ) -> Deferred[bytes]:
        selected = self.selected
        assert selected is not None
        if selected.readOnly:
            raise CommandError("Mailbox is read-only.")
        chosen = (self._messagesFor(uids, True) if uids is not None
                  else list(enumerate(selected.messages, 1)))
        deleted = [m for _, m in chosen if "T" in m.flags]
        d = selected.folder.delete(deleted)
        d.addCallback(lambda _: self._refresh())
        return d.addCallback(lambda _: b"Expunge completed.")

    def do_UID_EXPUNGE(self, command: Command) -> Deferred[bytes]:
        if len(command.args) != 1:
            raise IMAPSyntaxError("UID EXPUNGE needs a UID set")
        return self.do_EXPUNGE(command, command.args[0])

    def _sizeOf(self, message: Message, content: bytes | None) -> int:
        key = (message.uid, message.key)
        if content is not None:
            self._sizes[key] = len(content)
        return self._sizes.get(key, message.size)

    def _loadNext(self, _: object, message: Message) -> Deferred[bytes]:
        return self._load(message)

    def _load(self, message: Message) -> Deferred[bytes]:
        assert self.selected is not None
        return self.selected.folder.read(message).addCallback(canonical)

    def do_FETCH(self, command: Command, byUid: bool = False) -> Deferred[bytes]:
        if len(command.args) != 2:
            raise IMAPSyntaxError("FETCH needs a message set and attributes")
        items = parseFetchItems(command.args[1])
        if byUid and not any(i.name == "UID" for i in items):
            items.insert(0, FetchItem("UID"))
        targets = self._messagesFor(command.args[0], byUid)
        return self._fetchEach(targets, items, 0).addCallback(
            lambda _: b"Fetch completed.")

    def do_UID_FETCH(self, command: Command) -> Deferred[bytes]:
        return self.do_FETCH(command, byUid=True)

    def _fetchEach(
        self, targets: list[tuple[int, Message]], items: list[FetchItem], index: int
    ) -> Deferred[None]:
        # One message at a time: reads pace the writes, memory holds one message.
        while index < len(targets) and not self._closing:
            seq, message = targets[index]
            if any(i.needsContent for i in items):
                d = self._load(message)
                d.addCallbacks(self._cbFetchOne, self._ebVanished,
                               callbackArgs=(seq, message, items))
                return d.addCallback(self._fetchNext, targets, items, index + 1)
            self._fetchOne(seq, message, items, None)
            index += 1
        return succeed(None)

    def _fetchNext(
        self, _: object, targets: list[tuple[int, Message]], items: list[FetchItem],
        index: int,
    ) -> Deferred[None]:
        return self._fetchEach(targets, items, index)

    def _ebVanished(self, reason: Failure) -> None:
        # Expunged by another session since our last look: nothing to send.
        reason.trap(MaildirError)

    def _cbFetchOne(
        self, content: bytes, seq: int, message: Message, items: list[FetchItem]
    ) -> Deferred[None] | None:
        return self._fetchOne(seq, message, items, content)

    def _fetchOne(
        self, seq: int, message: Message, items: list[FetchItem], content: bytes | None
    ) -> Deferred[None] | None:
        selected = self.selected
        assert selected is not None
        entity = parseEntity(content) if content is not None else None
        size = self._sizeOf(message, content)
        setSeen = (not selected.readOnly and "S" not in message.flags
                   and any(not i.peek for i in items))
        if setSeen:
            d = selected.folder.setFlags([message], message.flags + "S")
            return d.addCallback(self._cbSeen, seq, message, items, entity, size)
        self._writeFetch(seq, message, items, entity, size, False)
        return None

    def _cbSeen(self, updated: list[Message], seq: int, message: Message,
                items: list[FetchItem], entity: Entity | None, size: int) -> None:
        selected = self.selected
        if updated and selected is not None and seq <= len(selected.messages):
            message = updated[0]
            selected.messages[seq - 1] = message
        self._writeFetch(seq, message, items, entity, size, True)

    def _writeFetch(self, seq: int, message: Message, items: list[FetchItem],
                    entity: Entity | None, size: int, flagsChanged: bool) -> None:
        selected = self.selected
        assert selected is not None
        out: list[bytes] = []
        names = {i.name for i in items}
        for item in items:
            if item.name == "UID":
                out.append(b"UID %d" % message.uid)
            elif item.name == "FLAGS":
                out.append(b"FLAGS " + formatValue(
                    flagsOf(message, message.uid in selected.recent)))
            elif item.name == "INTERNALDATE":
                out.append(b"INTERNALDATE " + formatValue(
                    formatInternalDate(message.internalDate)))
            elif item.name == "RFC822.SIZE":
                out.append(b"RFC822.SIZE %d" % size)
            else:
                assert entity is not None
                label, value = fetchValue(item, entity)
                out.append(label.encode() + b" " + value)
        if flagsChanged and "FLAGS" not in names:
            out.append(b"FLAGS " + formatValue(
                flagsOf(message, message.uid in selected.recent)))
        self.sendLine(b"* %d FETCH (" % seq + b" ".join(out) + b")")

    def do_STORE(self, command: Command, byUid: bool = False) -> Deferred[bytes]:
        selected = self.selected
        assert selected is not None
        if len(command.args) != 3 or not isinstance(command.args[1], str):
            raise IMAPSyntaxError("STORE needs a message set, an item and flags")
        item = command.args[1].upper()
        silent = item.endswith(".SILENT")
        mode = item.removesuffix(".SILENT")
        if mode not in ("FLAGS", "+FLAGS", "-FLAGS"):
            raise IMAPSyntaxError("invalid STORE item")
        raw = command.args[2]
        flagTokens = raw if isinstance(raw, list) else [raw]
        letters = lettersFor([astring(f).decode("utf-8", "replace")
                              for f in flagTokens])
        targets = self._messagesFor(command.args[0], byUid)
        if selected.readOnly:
            # Nothing changes in an EXAMINEd mailbox; Dovecot says OK too.
            return succeed(b"Store completed.")
        groups: dict[str, list[tuple[int, Message]]] = {}
        for seq, message in targets:
            if mode == "FLAGS":
                new = letters
            elif mode == "+FLAGS":
                new = "".join(sorted(set(message.flags) | set(letters)))
            else:
                new = "".join(sorted(set(message.flags) - set(letters)))
            groups.setdefault(new, []).append((seq, message))
        d: Deferred[Any] = succeed(None)
        for new, members in groups.items():
            d.addCallback(self._storeGroup, selected, new, members)
        d.addCallback(lambda _: self._reportStored(targets, silent, byUid))
        return d.addCallback(lambda _: b"Store completed.")

    def _storeGroup(
        self, _: object, selected: Selected, flags: str,
        members: list[tuple[int, Message]],
    ) -> Deferred[None]:
        d = selected.folder.setFlags([message for _, message in members], flags)
        return d.addCallback(self._cbStored, members)  # type: ignore[no-any-return]

    def _cbStored(
        self, updated: list[Message], members: list[tuple[int, Message]]
    ) -> None:
        selected = self.selected
        assert selected is not None
        byUid = {m.uid: m for m in updated}
        for seq, message in members:
            if message.uid in byUid and seq <= len(selected.messages):
                selected.messages[seq - 1] = byUid[message.uid]

    def _reportStored(self, targets: list[tuple[int, Message]], silent: bool,
                      byUid: bool) -> None:
        selected = self.selected
        assert selected is not None
        for seq, _ in targets:
            if seq > len(selected.messages):
                continue
            message = selected.messages[seq - 1]
            if silent:
                continue
            uid = b"UID %d " % message.uid if byUid else b""
            self._untagged(b"%d FETCH (%sFLAGS %s)" % (seq, uid, formatValue(
                flagsOf(message, message.uid in selected.recent))))

    def do_UID_STORE(self, command: Command) -> Deferred[bytes]:
        return self.do_STORE(command, byUid=True)

    def do_COPY(self, command: Command, byUid: bool = False) -> Deferred[bytes]:
        selected = self.selected
        assert selected is not None
        if len(command.args) != 2:
            raise IMAPSyntaxError("COPY needs a message set and a mailbox")
        targets = [m for _, m in self._messagesFor(command.args[0], byUid)]
        target = self._folder(mailboxName(command.args[1]))
        d = target.scan(claimNew=False)
        d.addErrback(_trap, NoSuchFolderError,
                     "[TRYCREATE] Mailbox doesn't exist: " + target.name)

        def cbTarget(state: Any) -> Deferred[bytes]:
            copying = selected.folder.copy(targets, target)
            return copying.addCallback(lambda copies: (
                b"[COPYUID %d %s %s] Copy completed." % (
                    state.uidValidity,
                    formatSequenceSet(m.uid for m in targets).encode(),
                    formatSequenceSet(c.uid for c in copies).encode(),
                ) if copies else b"Copy completed."))

        return d.addCallback(cbTarget)

    def do_UID_COPY(self, command: Command) -> Deferred[bytes]:
        return self.do_COPY(command, byUid=True)

    def do_SEARCH(self, command: Command, byUid: bool = False) -> Deferred[bytes]:
        selected = self.selected
        assert selected is not None
        args = list(command.args)
        if args and isinstance(args[0], str) and args[0].upper() == "CHARSET":
            if len(args) < 2:
                raise IMAPSyntaxError("CHARSET needs a name")
            charset = astring(args[1]).decode("ascii", "replace").upper()
            if charset not in ("UTF-8", "US-ASCII"):
                raise CommandError("[BADCHARSET (UTF-8 US-ASCII)] Unknown charset")
            args = args[2:]
        key, needsContent = parseSearch(args)
        messages = list(enumerate(selected.messages, 1))
        largestUid = messages[-1][1].uid if messages else 0
        found: list[int] = []

        def check(content: bytes | None, seq: int, message: Message) -> None:
            candidate = Candidate(
                seq, message.uid,
                frozenset(flagsOf(message, message.uid in selected.recent)),
                message.internalDate, self._sizeOf(message, content),
                parseEntity(content) if content is not None else None)
            if matches(key, candidate, len(messages), largestUid):
                found.append(message.uid if byUid else seq)

        d: Deferred[Any] = succeed(None)
        for seq, message in messages:
            if needsContent:
                d.addCallback(self._loadNext, message)
                d.addCallbacks(check, self._ebVanished, callbackArgs=(seq, message))
            else:
                check(None, seq, message)

        def report(_: object) -> bytes:
            self._untagged(b" ".join([b"SEARCH"] + [b"%d" % n for n in found]))
            return b"Search completed."

        return d.addCallback(report)

    def do_UID_SEARCH(self, command: Command) -> Deferred[bytes]:
        return self.do_SEARCH(command, byUid=True)


def _failed(error: Exception) -> Deferred[bytes]:
    d: Deferred[bytes] = Deferred()
    d.errback(error)
    return d


def _trap(reason: Failure, error: type[Exception], text: str) -> None:
    reason.trap(error)
    raise CommandError(text)


def _noSuchMailbox(reason: Failure) -> None:
    reason.trap(NoSuchFolderError)
    raise CommandError("[NONEXISTENT] Mailbox doesn't exist")


class Subscriptions:
    """
    Each user's subscribed mailbox names, one a line in C{subscriptions} in
    their Maildir (the Maildir++ file Courier and Dovecot use).
    """

    FILE = "subscriptions"

    def __init__(self, store: MaildirStore) -> None:
        self.store = store

    def _path(self, user: str) -> str:
        return os.path.join(self.store.userPath(user), self.FILE)

    def _blockingRead(self, user: str) -> list[str]:
        try:
            with open(self._path(user), encoding="utf-8", errors="replace") as f:
                return [line.rstrip("\n") for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def _blockingChange(self, user: str, name: str, add: bool) -> None:
        names = self._blockingRead(user)
        if add and name not in names:
            names.append(name)
        elif not add:
            names = [n for n in names if n != name]
        path = self._path(user)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(n + "\n" for n in names))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def read(self, user: str) -> Deferred[list[str]]:
        """
        C{user}'s subscriptions.
        """
        return self.store._run(self._blockingRead, user)

    def change(self, user: str, name: str, add: bool) -> Deferred[None]:
        """
        Subscribe C{user} to C{name} (C{add}) or unsubscribe.
        """
        return self.store._run(self._blockingChange, user, name, add)


class IMAPFactory(Factory):
    """
    Builds L{IMAPServer} sessions on one store and one portal.

    @ivar startTLS: makes the context factory for STARTTLS, or C{None} when
        there is no TLS.
    @ivar allowPlaintextAuth: allow LOGIN and AUTHENTICATE before TLS.
    @ivar appendLimit: the largest message APPEND accepts, in octets.
    """

    protocol = IMAPServer  # type: ignore[assignment]

    def __init__(
        self,
        portal: Any,
        store: MaildirStore,
        *,
        startTLS: Callable[[], Any] | None = None,
        allowPlaintextAuth: bool = False,
        appendLimit: int = DEFAULT_APPEND_LIMIT,
        throttle: LoginThrottle | None = None,
        preAuthTimeout: float = PRE_AUTH_TIMEOUT,
        idleTimeout: float = IDLE_TIMEOUT,
        idleCommandTimeout: float = IDLE_COMMAND_TIMEOUT,
        pollInterval: float = POLL_INTERVAL,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if appendLimit <= 0:
            raise ValueError(f"append limit must be positive, not {appendLimit}")
        self.portal = portal
        self.store = store
        self.subscriptions = Subscriptions(store)
        self.startTLS = startTLS
        self.allowPlaintextAuth = allowPlaintextAuth
        self.appendLimit = appendLimit
        self.throttle = throttle or LoginThrottle(reactor)
        self.preAuthTimeout = preAuthTimeout
        self.idleTimeout = idleTimeout
        self.idleCommandTimeout = idleCommandTimeout
        self.pollInterval = pollInterval
        self.reactor = reactor
