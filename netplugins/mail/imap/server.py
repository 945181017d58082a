"""
An IMAP4rev1 server (RFC 3501, with IDLE, UIDPLUS, LITERAL+, SASL-IR,
UNSELECT, NAMESPACE, CHILDREN, APPENDLIMIT, MOVE, SPECIAL-USE, ENABLE,
MULTIAPPEND, UTF8=ACCEPT, LIST-EXTENDED, LIST-STATUS, CONDSTORE,
QRESYNC, SORT, THREAD, QUOTA, COMPRESS=DEFLATE and BINARY) on
the shared Maildir store.

Why not C{twisted.mail.imap4.IMAP4Server}?  Its flaws sit in its core, not at
its edges: it reads commands and literals in one loop that keeps executing
what was pipelined after STARTTLS (command injection), announces
C{"Ready for -5 octets"} to C{{-5}}, buffers APPEND literals without bound and
matches LIST patterns with a backtracking regular expression
(GHSA-8pqf-f4m5-798g); its mailbox interfaces are synchronous-first, while
every Maildir access here must run off the reactor thread.  Fixing those means
replacing the parser, the literal handling, the state machine and LIST, which
is most of it.  So this is a small state machine of its own: this module
holds the connection, command reading and login; the commands on mailboxes
are in L{netplugins.mail.imap.mailboxes}, those on the selected mailbox in
L{netplugins.mail.imap.selected}, their shared plumbing in
L{netplugins.mail.imap.session}; under them L{netplugins.mail.imap.parse}
(bounded reading and tokenising), L{netplugins.mail.imap.fetch} (MIME
structure, ENVELOPE, BODYSTRUCTURE and sections cut from the original
octets) and L{netplugins.mail.imap.search}.

Sessions follow L{netplugins.session}: a command is taken from the input only
while the transport's output is under its watermark and no other command
waits (on a login or the store); reading from the socket stops meanwhile, so
pipelining works, and neither a slow disk nor a client that never reads makes
a session's memory grow without bound.  FETCH also waits for the output to
drain between its batches of responses.  Every close (a deadline, LOGOUT, too
many logins, a line too long) aborts the connection if it does not finish.

Security rules (docs/security.md, np-imap):
  - STARTTLS discards everything the client sent after the STARTTLS line
    before the handshake;
  - before TLS, CAPABILITY says LOGINDISABLED and LOGIN/AUTHENTICATE are
    refused with C{NO [PRIVACYREQUIRED]}, unless the operator allows
    plaintext logins;
  - logins go through the shared L{LoginThrottle}: at most six per
    connection, the next one hangs up;
  - a literal's size is checked when it is announced, before a byte of it is
    read: malformed is BAD; before login a command's literals are bounded by
    L{MAX_LOGIN_COMMAND} (enough for LOGIN's arguments), after it an APPEND's
    message by the APPENDLIMIT (a MULTIAPPEND's L{MAX_MULTIAPPEND} messages
    by L{MULTIAPPEND_FACTOR} times it together) and every other command by
    L{MAX_COMMAND}.
    Over the bound, a synchronizing literal gets a tagged BAD (or
    C{NO [TOOBIG]} for APPEND) instead of the continuation, so the client
    sends nothing; a LITERAL+ one is on its way and cannot be skipped
    safely, so the connection is closed with BYE, as Dovecot does;
  - a synchronizing literal of a command not valid in the current state is
    refused at once, without the continuation;
  - mailbox names holding CR, LF or NUL are refused before the command runs
    (with UTF8=ACCEPT enabled, names that are not UTF-8 are BAD; they are
    stored in modified UTF-7 either way),
    and no tagged response text can hold those bytes;
  - 120 seconds to log in, counted from the connection (commands do not
    extend it); then 30 minutes idle (counted from the last complete command,
    so trickling bytes does not keep a session alive), longer in IDLE.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

from attrs import field, frozen
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import ISSLTransport
from twisted.python.failure import Failure

from netplugins.mail.factory import MailFactory
from netplugins.mail.imap.binary import Literal8
from netplugins.mail.imap.compress import CAPABILITIES as COMPRESS_CAPABILITIES
from netplugins.mail.imap.compress import CompressCommands
from netplugins.mail.imap.mailboxes import SPECIAL_USE, MailboxCommands
from netplugins.mail.imap.parse import (
    Command,
    IMAPSyntaxError,
    Literal,
    astring,
    commandHead,
    literalAnnounced,
    tokenize,
)
from netplugins.mail.imap.quota import QuotaCommands
from netplugins.mail.imap.session import (
    CommandError,
    Selected,
    failed,
    validMailboxName,
)
from netplugins.mail.imap.sortthread import CAPABILITIES as SORT_CAPABILITIES
from netplugins.mail.imap.sortthread import SortCommands
from netplugins.mail.linesession import loginMailAccount, plainCredentials
from netplugins.mail.maildir.errors import MaildirError
from netplugins.mail.maildir.quota import OverQuotaError
from netplugins.session import CLOSE_GRACE, COMMAND, Discipline
from netplugins.starttls import startTLSDiscarding

MAX_LINE = 8 * 1024
MAX_COMMAND = 64 * 1024
#: The most a command's lines and literals may hold before login: LOGIN's
#: user name and password with room to spare (Dovecot's login process reads
#: commands into 4 KiB too).
MAX_LOGIN_COMMAND = 4 * 1024
DEFAULT_APPEND_LIMIT = 25 * 1024 * 1024
#: MULTIAPPEND (RFC 3502): the most messages one APPEND may carry, and how
#: many times the APPENDLIMIT they may hold together (the command is held in
#: memory until its last message arrives, then stored all or nothing).
MAX_MULTIAPPEND = 1000
MULTIAPPEND_FACTOR = 2
PRE_AUTH_TIMEOUT = 120.0
IDLE_TIMEOUT = 30 * 60.0
IDLE_COMMAND_TIMEOUT = 2 * 60 * 60.0
POLL_INTERVAL = 2.0

# Commands and the states they are allowed in.
_ANY = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "ID"})

#: What ENABLE (RFC 5161) can enable.
ENABLE = ("UTF8=ACCEPT", "CONDSTORE", "QRESYNC")
_NOT_AUTHENTICATED = frozenset({"STARTTLS", "LOGIN", "AUTHENTICATE"})
_AUTHENTICATED = frozenset(
    {
        "SELECT",
        "EXAMINE",
        "CREATE",
        "DELETE",
        "RENAME",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "LIST",
        "LSUB",
        "STATUS",
        "APPEND",
        "IDLE",
        "NAMESPACE",
        "ENABLE",
        "GETQUOTA",
        "GETQUOTAROOT",
        "SETQUOTA",
        "COMPRESS",
    }
)
_SELECTED = frozenset(
    {
        "CHECK",
        "CLOSE",
        "UNSELECT",
        "EXPUNGE",
        "SEARCH",
        "FETCH",
        "STORE",
        "COPY",
        "UID FETCH",
        "UID SEARCH",
        "UID STORE",
        "UID COPY",
        "UID EXPUNGE",
        "MOVE",
        "UID MOVE",
        "SORT",
        "UID SORT",
        "THREAD",
        "UID THREAD",
    }
)


#: The arguments naming mailboxes, by command (LIST's and LSUB's reference
#: and pattern included): refused with CR, LF or NUL before the command runs.
_MAILBOX_ARGUMENTS: dict[str, tuple[int, ...]] = {
    "SELECT": (0,),
    "EXAMINE": (0,),
    "CREATE": (0,),
    "DELETE": (0,),
    "RENAME": (0, 1),
    "SUBSCRIBE": (0,),
    "UNSUBSCRIBE": (0,),
    "LIST": (0, 1),
    "LSUB": (0, 1),
    "STATUS": (0,),
    "GETQUOTAROOT": (0,),
    "APPEND": (0,),
    "COPY": (1,),
    "UID COPY": (1,),
    "MOVE": (1,),
    "UID MOVE": (1,),
}


class IMAPServer(MailboxCommands, SortCommands, QuotaCommands, CompressCommands):
    """
    One IMAP session.  See the module docstring.

    @ivar discipline: its reading gate and closer (L{netplugins.session}).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pieces: list[bytes] = []
        self._commandSize = 0
        self._literals = 0
        self._literalBytes = 0
        self._head: tuple[str, str] | None = None
        self._literal: tuple[int, list[bytes]] | None = None
        self._literal8 = False
        self._running = False
        self._parsing = False
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
        self.enabled: set[str] = set()
        self.utf8 = False
        self.condstore = False
        self.qresync = False

    # Connection

    def connectionMade(self) -> None:
        self._tls = ISSLTransport.providedBy(self.transport)
        self.discipline = Discipline(
            self.transport,
            self.factory.reactor,
            pause=self._pauseReading,
            resume=self._resumeReading,
            grace=self.factory.config.closeGrace,
        )
        self._attempts = self.factory.throttle.connection()
        # From the connection, not the last command: NOOPs do not extend it.
        self.discipline.callLater(
            self.factory.config.preAuthTimeout, self._preAuthTimedOut
        )
        hostname = self.factory.config.hostname.encode("ascii", "replace")
        capabilities = self.capabilities()
        self.sendLine(
            b"* OK [CAPABILITY %s] %s np-imap ready." % (capabilities, hostname)
        )

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closing = True
        self.discipline.lost()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._stopIdlePoll()
        if self._logout is not None:
            logout, self._logout = self._logout, None
            logout()

    def capabilities(self) -> bytes:
        caps = [
            "IMAP4rev1",
            "LITERAL+",
            "SASL-IR",
            "IDLE",
            "UIDPLUS",
            "MOVE",
            "SPECIAL-USE",
            "CREATE-SPECIAL-USE",
            "ENABLE",
            "UTF8=ACCEPT",
            "UNSELECT",
            "NAMESPACE",
            "CHILDREN",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "ID",
            "MULTIAPPEND",
            "CONDSTORE",
            "QRESYNC",
            *SORT_CAPABILITIES,
            *self.quotaCapabilities(),
            *COMPRESS_CAPABILITIES,
            "BINARY",
            f"APPENDLIMIT={self.factory.config.appendLimit}",
        ]
        if self.state == "not authenticated":
            if not self._tls and self.factory.tls is not None:
                caps.append("STARTTLS")
            if self._loginAllowed():
                caps.append("AUTH=PLAIN")
            else:
                caps.append("LOGINDISABLED")
        return " ".join(caps).encode()

    def _loginAllowed(self) -> bool:
        return self._tls or self.factory.config.allowPlaintextAuth

    def _preAuthTimedOut(self) -> None:
        if self.state != "not authenticated" or self._closing:
            return
        self.log.info(
            "np-imap: closing connection from {peer}: no login in {timeout:g} s",
            peer=str(self.transport.getPeer()),
            timeout=self.factory.config.preAuthTimeout,
        )
        self._untagged(b"BYE Autologout; no login in time")
        self._close("pre-auth deadline passed")

    # Reading commands

    def _pauseReading(self) -> None:
        # The discipline holds reading: the socket stops, and so does the
        # parsing of what is buffered (L{_parseBuffered} checks the
        # discipline).
        self.transport.pauseProducing()

    def _resumeReading(self) -> None:
        self.transport.resumeProducing()
        self._parse()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self.inflater is not None:
            self.inflater.feed(data)
        else:
            self._buffer += data
        self._parse()

    def _parse(self) -> None:
        # Commands that finish at once call back in here: the outer loop
        # carries on instead, so pipelining cannot recurse without bound.
        if self._parsing:
            return
        self._parsing = True
        try:
            self._parseBuffered()
            # After COMPRESS: inflate a chunk more only while commands are
            # read, so a compression bomb waits compressed (docs/security.md).
            while (
                self.inflater is not None
                and self.discipline.reading
                and not self._closing
                and self._inflateMore(self._buffer)
            ):
                self._parseBuffered()
        finally:
            self._parsing = False

    def _clearBuffer(self) -> bytes:
        """
        Forget the input not parsed yet, and return it (STARTTLS).
        """
        discarded = bytes(self._buffer)
        self._buffer.clear()
        return discarded

    def _parseBuffered(self) -> None:
        # Reading stops while a command waits (unless it waits for the
        # client's next line) and while the output is over its watermark.
        while self.discipline.reading and not self._closing:
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
                kind = Literal8 if self._literal8 else Literal
                self._pieces.append(kind(b"".join(chunks)))
                continue
            end = self._buffer.find(b"\n")
            if end == -1 or end > MAX_LINE:
                if len(self._buffer) > MAX_LINE:
                    self._lineTooLong()
                return
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            self._lineReceived(line)

    def _lineTooLong(self) -> None:
        self.log.warn(
            "np-imap: line over {limit} bytes from {peer}",
            limit=MAX_LINE,
            peer=str(self.transport.getPeer()),
        )
        self._untagged(b"BYE Line too long")
        self._close("line too long")

    def _resetCommand(self) -> None:
        self._pieces = []
        self._commandSize = 0
        self._literals = 0
        self._literalBytes = 0
        self._head = None

    def _lineReceived(self, line: bytes) -> None:
        if self._continuation is not None:
            continuation, self._continuation = self._continuation, None
            continuation(line)
            self._holdWhileRunning()
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
            # APPEND's messages are bounded by the APPENDLIMIT when announced
            # (L{_literalRefusal}); the rest of it, by MAX_COMMAND.
            messages = self._literalBytes if name == "APPEND" else 0
            if self._commandSize - messages > MAX_COMMAND:
                self._resetCommand()
                self._tagged(tag, b"BAD", b"Command too long")
                return
            self._commandReady()
            return
        head = line[: line.rindex(b"{")]
        # RFC 3516's literal8, ~{n}: APPEND's binary form.
        self._literal8 = head.endswith(b"~")
        self._pieces.append(head.removesuffix(b"~"))
        total = self._commandSize + announced.size
        self._commandSize = total
        refusal = self._literalRefusal(name, announced.size, total)
        if refusal is not None:
            self._resetCommand()
            self._tagged(tag, *refusal)
            if not announced.synchronising:
                # Its octets are on their way, and reading past them would
                # mean trusting the client's count: hang up, as Dovecot does.
                self._untagged(b"BYE Literal too large")
                self._close("literal too large")
            return
        if announced.synchronising:
            refused = self._refusal(name)
            if refused is not None:
                # The client waits for the continuation: answer instead,
                # and it sends nothing of the literal.
                self._resetCommand()
                self._tagged(tag, b"BAD", refused)
                return
        self._literal = (announced.size, [])
        self._literals += 1
        self._literalBytes += announced.size
        if announced.synchronising:
            self.sendLine(b"+ Ready for literal data")

    def _literalRefusal(
        self, name: str, size: int, total: int
    ) -> tuple[bytes, bytes] | None:
        """
        Why a literal of C{size} octets, making the command C{total} octets,
        cannot be read now: a status and text, or C{None} to read it.
        """
        if self.state == "not authenticated":
            # Nothing large before login, whatever the command says it is.
            if total > MAX_LOGIN_COMMAND:
                return b"BAD", b"Literal too large before login"
            return None
        if name == "APPEND":
            # Each message up to the limit, MULTIAPPEND's together up to
            # MULTIAPPEND_FACTOR times it; all of APPEND but its messages
            # fits in MAX_COMMAND.
            limit = self.factory.config.appendLimit
            if size > limit:
                return b"NO", b"[TOOBIG] Message too large"
            if self._literals >= MAX_MULTIAPPEND:
                return b"NO", b"[LIMIT] Too many messages in one APPEND"
            if self._literalBytes + size > MULTIAPPEND_FACTOR * limit:
                return b"NO", b"[TOOBIG] Messages too large together"
            if total > MULTIAPPEND_FACTOR * limit + MAX_COMMAND:
                return b"NO", b"[TOOBIG] Command too large"
            return None
        if total > MAX_COMMAND:
            return b"BAD", b"Command too long"
        return None

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
        if self.state != "not authenticated":
            self._setTimer(self.factory.config.idleTimeout)
        self._dispatch(command)

    def _refusal(self, name: str) -> bytes | None:
        """
        Why command C{name} cannot run in this state (a BAD's text), or
        C{None} if it can.
        """
        if name not in _ANY | _NOT_AUTHENTICATED | _AUTHENTICATED | _SELECTED:
            return b"Unknown command"
        allowed = (
            name in _ANY
            or (name in _NOT_AUTHENTICATED and self.state == "not authenticated")
            or (name in _AUTHENTICATED and self.state in ("authenticated", "selected"))
            or (name in _SELECTED and self.state == "selected")
        )
        return None if allowed else b"Command not valid in this state"

    def _dispatch(self, command: Command) -> None:
        name = command.name
        refused = self._refusal(name)
        if refused is not None:
            self._tagged(command.tag, b"BAD", refused)
            return
        for index in _MAILBOX_ARGUMENTS.get(name, ()):
            if index < len(command.args) and not _validMailboxArgument(
                command.args[index]
            ):
                # Echoed in replies, or written one a line by the store: a
                # line break would become a response of its own.
                self._tagged(
                    command.tag, b"NO", b"[CANNOT] Mailbox name holds CR, LF or NUL"
                )
                return
        handler = getattr(self, "do_" + name.replace(" ", "_"))
        self._running = True
        d = maybeDeferred(handler, command)
        d.addCallback(self._cbCommand, command)
        d.addErrback(self._ebCommand, command)
        d.addBoth(self._commandDone)
        self._holdWhileRunning()

    def _holdWhileRunning(self) -> None:
        """
        Hold reading while the running command waits on something other
        than the client's next line (a login, the store).
        """
        if self._running and self._continuation is None:
            self.discipline.hold(COMMAND)

    def _cbCommand(self, text: bytes | None, command: Command) -> None:
        # None: the command answered itself.
        if text is not None:
            self._tagged(command.tag, b"OK", text)

    def _ebCommand(self, reason: Failure, command: Command) -> None:
        if reason.check(IMAPSyntaxError):
            self._tagged(command.tag, b"BAD", str(reason.value).encode())
        elif reason.check(OverQuotaError):
            self._tagged(command.tag, b"NO", b"[OVERQUOTA] Quota exceeded")
        elif reason.check(CommandError, MaildirError):
            self._tagged(command.tag, b"NO", str(reason.value).encode())
        else:
            self.log.failure("np-imap: {command} failed", reason, command=command.name)
            self._tagged(command.tag, b"NO", b"[SERVERBUG] Internal error")

    def _commandDone(self, _: object) -> None:
        self._running = False
        self._continuation = None
        self.discipline.release(COMMAND)
        # Finished within the parsing loop, that loop carries on; else parse
        # what waited (a no-op when the release above already did).
        self._parse()

    # Any state

    def do_CAPABILITY(self, command: Command) -> bytes:
        self._untagged(b"CAPABILITY " + self.capabilities())
        return b"Capability completed."

    def do_NOOP(self, command: Command) -> Deferred[bytes] | bytes:
        return self._refreshed(b"NOOP completed.")

    def do_CHECK(self, command: Command) -> Deferred[bytes] | bytes:
        # Maildir writes are durable when they finish: nothing to flush.
        return self._refreshed(b"Check completed.")

    def _refreshed(self, text: bytes) -> Deferred[bytes] | bytes:
        """
        C{text}, after reporting what changed in the selected mailbox.
        """
        if self.selected is None:
            return text
        return self._refresh().addCallback(lambda _: text)

    def do_LOGOUT(self, command: Command) -> None:
        self._untagged(b"BYE Logging out")
        self._tagged(command.tag, b"OK", b"Logout completed.")
        self._close("logout")

    def do_ID(self, command: Command) -> bytes:
        self._untagged(b'ID ("name" "np-imap")')
        return b"ID completed."

    # Authenticated

    def do_ENABLE(self, command: Command) -> bytes:
        """
        RFC 5161: enable what is both asked for and known (L{ENABLE}), and
        say so in C{* ENABLED}; unknown names are ignored, as the RFC asks.
        """
        if self.state != "authenticated":
            raise IMAPSyntaxError("ENABLE is valid only before SELECT")
        if not command.args or not all(isinstance(a, str) for a in command.args):
            raise IMAPSyntaxError("ENABLE needs capability names")
        enabled = []
        for name in command.args:
            assert isinstance(name, str)
            extension = name.upper()
            if extension in ENABLE and extension not in self.enabled:
                self.enabled.add(extension)
                enabled.append(extension)
        if "UTF8=ACCEPT" in self.enabled:
            self.utf8 = True
        # RFC 7162 section 3.2.3: QRESYNC implies CONDSTORE.
        if "QRESYNC" in self.enabled:
            self.qresync = True
        if self.enabled & {"CONDSTORE", "QRESYNC"}:
            self.condstore = True
        self._untagged(" ".join(["ENABLED", *enabled]).encode())
        return b"Enabled."

    # Not authenticated

    def do_STARTTLS(self, command: Command) -> None:
        if self._tls or self.factory.tls is None:
            raise CommandError(
                "TLS is already active" if self._tls else "STARTTLS is not available"
            )
        # Anything pipelined after STARTTLS came in the clear: never run it.
        startTLSDiscarding(
            self,
            self.factory.tls,
            command.tag.encode() + b" OK Begin TLS negotiation now.\r\n",
            clearBuffer=self._clearBuffer,
            discipline=self.discipline,
        )
        self._tls = True

    def do_LOGIN(self, command: Command) -> Deferred[bytes] | None:
        if not self._loginAllowed():
            self._tagged(
                command.tag, b"NO", b"[PRIVACYREQUIRED] Use STARTTLS before logging in."
            )
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
            self._tagged(
                command.tag, b"NO", b"[PRIVACYREQUIRED] Use STARTTLS before logging in."
            )
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
            return failed(IMAPSyntaxError("Authentication cancelled"))
        try:
            decoded = binascii.a2b_base64(line.strip(), strict_mode=True)
        except binascii.Error:
            return failed(IMAPSyntaxError("Invalid base64"))
        credentials = plainCredentials(decoded)
        if credentials is None:
            return failed(CommandError("[AUTHENTICATIONFAILED] Invalid credentials"))
        return self._login(command, *credentials)

    def _login(self, command: Command, user: bytes, password: bytes) -> Deferred[bytes]:
        d = loginMailAccount(
            self.factory, self.transport, self._attempts, user, password
        )
        login: Deferred[Any] = d.addCallback(self._cbLogin)
        return login.addErrback(  # type: ignore[call-overload,no-any-return]
            self._ebLogin, user, command
        )

    def _cbLogin(self, result: tuple[Any, Any, Callable[[], None]]) -> Deferred[bytes]:
        _, account, logout = result
        self.account = account
        self._logout = logout
        self.state = "authenticated"
        self._setTimer(self.factory.config.idleTimeout)
        self.log.info(
            "np-imap: {user} logged in from {peer}",
            user=account.avatarId,
            peer=str(self.transport.getPeer()),
        )
        # A user who never received mail has an INBOX all the same, and the
        # special-use mailboxes, as Dovecot's auto = create makes them.
        d = self.store.ensureUser(self.user, self.factory.config.autoCreate)
        return d.addCallback(
            lambda _: b"[CAPABILITY " + self.capabilities() + b"] Logged in"
        )

    def _ebLogin(self, reason: Failure, user: bytes, command: Command) -> None:
        # Answers itself: NO, then BYE when the connection used all its tries.
        reason.trap(UnauthorizedLogin)
        self.log.info(
            "np-imap: failed login for {user} from {peer}",
            user=user.decode("utf-8", "replace")[:64],
            peer=str(self.transport.getPeer()),
        )
        self._tagged(
            command.tag, b"NO", b"[AUTHENTICATIONFAILED] Authentication failed."
        )
        if self._attempts.exhausted:
            self._untagged(b"BYE Too many login attempts")
            self._close("too many login attempts")


def _validMailboxArgument(token: Any) -> bool:
    # Not a string (a list): the command itself says BAD.
    return not isinstance(token, (str, bytes)) or validMailboxName(
        token.encode("utf-8") if isinstance(token, str) else token
    )


@frozen
class IMAPConfig:
    """
    How an IMAP listener behaves.

    @ivar hostname: the host name in the greeting.
    @ivar allowPlaintextAuth: allow LOGIN and AUTHENTICATE before TLS.
    @ivar appendLimit: the largest message APPEND accepts, in octets.
    @ivar preAuthTimeout: seconds from the connection to log in.
    @ivar idleTimeout: seconds a logged-in session may stay without a command.
    @ivar idleCommandTimeout: the same, in IDLE.
    @ivar pollInterval: seconds between looks for new mail in IDLE.
    @ivar closeGrace: seconds a closed session gets to send what is queued
        before it is aborted.
    @ivar autoCreate: the mailboxes made at each login if missing (by
        default those of L{SPECIAL_USE}).
    """

    hostname: str = "localhost"
    allowPlaintextAuth: bool = False
    appendLimit: int = field(default=DEFAULT_APPEND_LIMIT)
    preAuthTimeout: float = PRE_AUTH_TIMEOUT
    idleTimeout: float = IDLE_TIMEOUT
    idleCommandTimeout: float = IDLE_COMMAND_TIMEOUT
    pollInterval: float = POLL_INTERVAL
    closeGrace: float = CLOSE_GRACE
    autoCreate: tuple[str, ...] = tuple(SPECIAL_USE)

    @appendLimit.validator
    def _checkAppendLimit(self, attribute: object, value: int) -> None:
        if value <= 0:
            raise ValueError(f"append limit must be positive, not {value}")


class IMAPFactory(MailFactory):
    """
    Builds L{IMAPServer} sessions on one store and one portal; C{tls} is
    offered with STARTTLS.
    """

    protocol = IMAPServer  # type: ignore[assignment]
    configType = IMAPConfig
    config: IMAPConfig
