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
is most of it.  So this is a small state machine of its own: this module
holds the connection, command reading and login; the commands on mailboxes
are in L{netplugins.mail.imapmailboxes}, those on the selected mailbox in
L{netplugins.mail.imapselected}, their shared plumbing in
L{netplugins.mail.imapsession}; under them L{netplugins.mail.imapparse}
(bounded reading and tokenising), L{netplugins.mail.imapfetch} (MIME
structure, ENVELOPE, BODYSTRUCTURE and sections cut from the original
octets) and L{netplugins.mail.imapsearch}.

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
from collections.abc import Callable
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from netplugins.cred.throttle import LoginThrottle
from netplugins.mail.imapmailboxes import MailboxCommands
from netplugins.mail.imapparse import (
    Command,
    IMAPSyntaxError,
    Literal,
    astring,
    commandHead,
    literalAnnounced,
    tokenize,
)
from netplugins.mail.imapselected import SelectedCommands
from netplugins.mail.imapsession import CommandError, Selected, failed
from netplugins.mail.linesession import loginMailAccount, plainCredentials
from netplugins.mail.maildir import MaildirError, MaildirStore

MAX_LINE = 8 * 1024
MAX_COMMAND = 64 * 1024
MAX_BUFFERED = 256 * 1024
DEFAULT_APPEND_LIMIT = 25 * 1024 * 1024
PRE_AUTH_TIMEOUT = 120.0
IDLE_TIMEOUT = 30 * 60.0
IDLE_COMMAND_TIMEOUT = 2 * 60 * 60.0
POLL_INTERVAL = 2.0

# Commands and the states they are allowed in.
_ANY = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "ID"})
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
    }
)


class IMAPServer(MailboxCommands, SelectedCommands):
    """
    One IMAP session.  See the module docstring.
    """

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
        hostname = self.factory.hostname.encode("ascii", "replace")
        capabilities = self.capabilities()
        self.sendLine(
            b"* OK [CAPABILITY %s] %s np-imap ready." % (capabilities, hostname)
        )

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closing = True
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
            "UNSELECT",
            "NAMESPACE",
            "CHILDREN",
            "ID",
            f"APPENDLIMIT={self.factory.appendLimit}",
        ]
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
        self._pieces.append(line[: line.rindex(b"{")])
        # APPEND takes one message up to the limit; everything else, and
        # all of APPEND but its message, fits in MAX_COMMAND.
        limit = self.factory.appendLimit if name == "APPEND" else MAX_COMMAND
        total = self._commandSize + announced.size
        self._commandSize = total
        if announced.size > limit or total > limit + (
            MAX_COMMAND if name == "APPEND" else 0
        ):
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
        self._setTimer(
            self.factory.idleTimeout
            if self.state != "not authenticated"
            else self.factory.preAuthTimeout
        )
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
            self.log.failure("np-imap: {command} failed", reason, command=command.name)
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
            raise CommandError(
                "TLS is already active" if self._tls else "STARTTLS is not available"
            )
        # Anything pipelined after STARTTLS came in the clear: never run it.
        self._buffer.clear()
        self._tagged(command.tag, b"OK", b"Begin TLS negotiation now.")
        self.transport.startTLS(self.factory.startTLS())
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
        self._setTimer(self.factory.idleTimeout)
        self.log.info(
            "np-imap: {user} logged in from {peer}",
            user=account.avatarId,
            peer=str(self.transport.getPeer()),
        )
        # A user who never received mail has an INBOX all the same.
        d = self.store.ensureUser(self.user)
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
            self._close()


class IMAPFactory(Factory):
    """
    Builds L{IMAPServer} sessions on one store and one portal.

    @ivar startTLS: makes the context factory for STARTTLS, or C{None} when
        there is no TLS.
    @ivar allowPlaintextAuth: allow LOGIN and AUTHENTICATE before TLS.
    @ivar appendLimit: the largest message APPEND accepts, in octets.
    @ivar hostname: the host name in the greeting.
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
        hostname: str = "localhost",
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if appendLimit <= 0:
            raise ValueError(f"append limit must be positive, not {appendLimit}")
        self.portal = portal
        self.store = store
        self.startTLS = startTLS
        self.allowPlaintextAuth = allowPlaintextAuth
        self.appendLimit = appendLimit
        self.throttle = throttle or LoginThrottle(reactor)
        self.preAuthTimeout = preAuthTimeout
        self.idleTimeout = idleTimeout
        self.idleCommandTimeout = idleCommandTimeout
        self.pollInterval = pollInterval
        self.hostname = hostname
        self.reactor = reactor
