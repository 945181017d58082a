"""
np-pop3: a POP3 server (RFC 1939, 2449, 2595, 5034, 6856) on the Maildir store.

Written on L{LineReceiver} rather than C{twisted.mail.pop3.POP3} for the same
reasons as L{netplugins.mail.smtp.server}: STLS must throw away pipelined input
(L{netplugins.starttls}), logins go through the shared throttle, and every
mailbox operation is a Deferred off the reactor thread.

Rules it keeps:
  - USER/PASS and AUTH PLAIN only over TLS (implicit, or after STLS) unless
    C{allowPlaintextAuth}; CAPA advertises only what is allowed.
  - One session per mailbox: the store's mailbox lock is taken at login
    (C{-ERR [IN-USE]} otherwise) and released when the connection ends.
  - The message list is fixed at login.  DELE only marks; deletions happen at
    QUIT (the UPDATE state), never when the connection just drops.
  - UIDL is C{<uidvalidity>.<uid>}: stable across sessions and processes.
  - RFC 6856: CAPA says C{UTF8 USER} (USER and PASS take UTF-8, as they
    always did) and C{LANG}; the C{UTF8} command (before login) enables
    UTF-8 mode, in which messages with UTF-8 headers (mail that came with
    SMTPUTF8) are what the client asked for; without it they are served as
    stored (no RFC 6857 downgrade).  C{LANG} knows one language, C{en}.
  - A message POP3's lines cannot carry (one that came as SMTP BINARYMIME,
    RFC 3030: NUL, bare CR or LF in its parts) is served converted
    (L{downgradeBinary}): each such part re-encoded base64, a
    C{Content-Transfer-Encoding: binary} container made C{8bit}.  LIST and
    STAT still count the stored size.
  - Limits: command lines of L{MAX_LINE} bytes, C{maxErrors} bad commands, an
    idle deadline reset per command, a pre-auth deadline, at most 6 logins.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import re
from base64 import b64decode, encodebytes
from collections.abc import Callable
from email.generator import BytesGenerator
from io import BytesIO
from typing import Any

from attrs import frozen
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from netplugins.mail.factory import MailFactory
from netplugins.mail.linesession import LineSession, plainCredentials
from netplugins.mail.maildir.errors import MailboxLockedError
from netplugins.mail.maildir.files import MailboxLock
from netplugins.mail.maildir.folder import FolderState, Message
from netplugins.mail.users import MailAccount
from netplugins.session import CLOSE_GRACE
from netplugins.starttls import startTLSDiscarding

MAX_LINE = 4096


@frozen
class POP3Config:
    """
    How a POP3 listener behaves.

    @ivar hostname: the name in the greeting.
    @ivar allowPlaintextAuth: accept USER/PASS and AUTH before TLS.
    @ivar closeGrace: seconds a closed session gets to send what is queued
        before it is aborted.
    """

    hostname: str = "localhost"
    allowPlaintextAuth: bool = False
    maxErrors: int = 20
    idleTimeout: float = 600.0
    preAuthTimeout: float = 120.0
    closeGrace: float = CLOSE_GRACE


def _size(message: Message) -> int:
    """
    A message's size as POP3 counts it (CRLF line ends), known exactly for
    messages this store wrote.
    """
    return message.size if message.wireSize is None else message.wireSize


#: What a POP3 line cannot hold: NUL, and CR or LF not in a CRLF pair.
_BINARY = re.compile(rb"\x00|\r(?!\n)|(?<!\r)\n")


def isBinary(message: Message, data: bytes) -> bool:
    """
    Whether C{data}, the contents of C{message}, must be converted for POP3:
    it holds NUL or a bare CR, or a bare LF in a message the store serves as
    it is (a BINARYMIME one: C{,W=} equal to C{,S=}), where it is content
    rather than another program's line end.
    """
    if b"\x00" in data or re.search(rb"\r(?!\n)", data):
        return True
    return message.wireSize == message.size and _BINARY.search(data) is not None


def downgradeBinary(data: bytes) -> bytes:
    """
    A BINARYMIME message as lines: each leaf part holding NUL, bare CR or LF
    (or declared C{binary}) re-encoded base64, each container declared
    C{binary} made C{8bit}; CRLF line ends.  Blocking (the store's pool).
    """
    policy = email.policy.compat32.clone(linesep="\r\n", max_line_length=0)
    parsed = email.message_from_bytes(data, policy=policy)
    for part in parsed.walk():
        encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if part.is_multipart() or part.get_content_maintype() == "message":
            if encoding == "binary":
                part.replace_header("Content-Transfer-Encoding", "8bit")
            continue
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes):
            continue
        if encoding != "binary" and _BINARY.search(raw) is None:
            continue
        if encoding in ("base64", "quoted-printable"):
            # Already lines; a stray bare line end is only a line end.
            continue
        del part["Content-Transfer-Encoding"]
        part["Content-Transfer-Encoding"] = "base64"
        part.set_payload(encodebytes(raw).decode("ascii"))
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=policy).flatten(parsed)
    return out.getvalue()


def byteStuff(message: bytes) -> bytes:
    """
    C{message} as a POP3 multi-line body: CRLF line ends, lines starting with
    a dot doubled, ending with CRLF (the terminator is not included).
    """
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"".join(line + b"\r\n" for line in stuffed)


def topOf(message: bytes, count: int) -> bytes:
    """
    The headers, the blank line and the first C{count} body lines.
    """
    normal = message.replace(b"\r\n", b"\n")
    headers, sep, body = normal.partition(b"\n\n")
    if not sep:
        return message
    bodyLines = body.split(b"\n")[:count] if count else []
    return headers + b"\n\n" + b"".join(line + b"\n" for line in bodyLines)


class POP3Server(LineSession):
    """
    One POP3 session.  See the module docstring.
    """

    log = Logger()
    MAX_LENGTH = MAX_LINE
    factory: POP3Factory
    transport: Any

    def __init__(self) -> None:
        super().__init__()
        self.user: bytes | None = None
        self.state: FolderState | None = None
        self.deleted: set[int] = set()
        self._lock: MailboxLock | None = None
        self._pending: Callable[[bytes], None] | None = None
        # RFC 6856: the client issued UTF8.
        self.utf8 = False

    @property
    def config(self) -> POP3Config:
        return self.factory.config

    # Connection and timers

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm("preauth", self.config.preAuthTimeout)
        self.ok(f"{self.config.hostname} POP3 netplugins ready")

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        self._release()

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def _timedOut(self, name: str) -> None:
        self.log.info(
            "np-pop3: closing connection from {peer}: {deadline} deadline passed",
            peer=str(self.transport.getPeer()),
            deadline=name,
        )
        self.err("Timeout, closing")
        self._close(f"{name} deadline passed")

    # Replies

    def ok(self, text: str = "") -> None:
        self.transport.write(f"+OK {text}".rstrip().encode() + b"\r\n")

    def err(self, text: str) -> None:
        self.transport.write(f"-ERR {text}".encode() + b"\r\n")

    def _error(self, text: str) -> None:
        self.err(text)
        self.errors += 1
        if self.errors >= self.config.maxErrors:
            self.err("Too many errors, closing")
            self._close("too many errors")

    def _ebUnexpected(self, reason: Failure) -> None:
        self.log.failure("np-pop3: unexpected error", reason)
        if not self._lost:
            self.err("[SYS/TEMP] Internal error")

    # Lines

    def lineLengthExceeded(self, line: bytes) -> None:
        self.err("Line too long")
        self._close("line too long")

    def lineReceived(self, line: bytes) -> None:
        self._arm("idle", self.config.idleTimeout)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending(line)
            return
        rawVerb, _, rawArgument = line.partition(b" ")
        try:
            verb = rawVerb.decode("ascii").upper()
        except UnicodeDecodeError:
            self._error("Unknown command")
            return
        allowed: tuple[str, ...]
        if self.account is None:
            allowed = (
                "CAPA",
                "STLS",
                "USER",
                "PASS",
                "AUTH",
                "QUIT",
                "NOOP",
                "UTF8",
                "LANG",
            )
        else:
            allowed = (
                "CAPA",
                "STAT",
                "LIST",
                "UIDL",
                "TOP",
                "RETR",
                "DELE",
                "RSET",
                "NOOP",
                "QUIT",
                "LANG",
            )
        if verb not in allowed:
            self._error("Unknown command or wrong state")
            return
        # A user name or password may be UTF-8 (poplib, fetchmail and getmail
        # send it raw, as IMAP LOGIN and SASL PLAIN carry it); it reaches the
        # checker as the very bytes sent, stripped of ASCII spaces only.
        encoding = "utf-8" if verb in ("USER", "PASS") else "ascii"
        try:
            argument = rawArgument.strip().decode(encoding)
        except UnicodeDecodeError:
            self._error(f"Invalid {encoding.upper()} in argument")
            return
        getattr(self, "pop_" + verb)(argument)

    # AUTHORIZATION state

    def pop_CAPA(self, argument: str) -> None:
        capabilities = ["TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE"]
        if self.account is None:
            if self.factory.tls is not None and not self.secure:
                capabilities.append("STLS")
            if self._authAllowed():
                capabilities += ["USER", "SASL PLAIN"]
        # USER: user names and passwords may be UTF-8 (RFC 6856 section 2).
        capabilities += [
            "UTF8 USER" if "USER" in capabilities else "UTF8",
            "LANG",
            "IMPLEMENTATION netplugins",
        ]
        self.ok("Capability list follows")
        self.transport.write(
            b"".join(c.encode() + b"\r\n" for c in capabilities) + b".\r\n"
        )

    def pop_UTF8(self, argument: str) -> None:
        if argument:
            self._error("Syntax: UTF8")
            return
        self.utf8 = True
        self.ok("UTF8 enabled")

    def pop_LANG(self, argument: str) -> None:
        # RFC 6856 section 3, with one language: English.
        if not argument:
            self.ok("Language listing follows")
            self.transport.write(b"en English\r\n.\r\n")
        elif argument.lower() in ("en", "*"):
            self.ok("en Language changed")
        else:
            self._error("Invalid language")

    def pop_STLS(self, argument: str) -> None:
        if self.factory.tls is None or self.secure:
            self._error("TLS not available")
            return
        startTLSDiscarding(self, self.factory.tls, b"+OK Begin TLS negotiation\r\n")
        self.secure = True
        self.user = None

    def pop_USER(self, argument: str) -> None:
        if not self._authAllowed():
            self._error("[AUTH] Plaintext login refused: use STLS first")
            return
        if not argument:
            self._error("Syntax: USER name")
            return
        self.user = argument.encode("utf-8")
        self.ok("Send PASS")

    def pop_PASS(self, argument: str) -> None:
        if self.user is None:
            self._error("USER first")
            return
        user, self.user = self.user, None
        self._login(user, argument.encode("utf-8"))

    def pop_AUTH(self, argument: str) -> None:
        mechanism, _, initial = argument.partition(" ")
        if not mechanism:
            self.ok("Mechanisms follow")
            self.transport.write(b"PLAIN\r\n.\r\n")
        elif not self._authAllowed():
            self._error("[AUTH] Plaintext login refused: use STLS first")
        elif mechanism.upper() != "PLAIN":
            self._error("Unsupported mechanism")
        elif initial:
            self._authPlain(initial.encode())
        else:
            self.transport.write(b"+ \r\n")
            self._pending = self._authPlain

    def _authPlain(self, response: bytes) -> None:
        if response == b"*":
            self._error("Authentication aborted")
            return
        try:
            decoded = b64decode(response, validate=True)
        except (binascii.Error, ValueError):
            self._error("Cannot decode response")
            return
        credentials = plainCredentials(decoded)
        if credentials is None:
            self._error("[AUTH] Authentication failed")
            return
        self._login(*credentials)

    def _cbLoggedIn(
        self, result: tuple[Any, MailAccount, Any]
    ) -> Deferred[None] | None:
        if self._lost:
            return None
        account = result[1]
        store = self.factory.store
        d = store.lockMailbox(account.mailbox)

        def locked(lock: MailboxLock) -> Deferred[None] | None:
            if self._lost:
                lock.release()
                return None
            self._lock = lock
            self.account = account
            self._disarm("preauth")
            return store.folder(account.mailbox).scan().addCallback(self._cbScanned)

        def busy(reason: Failure) -> None:
            reason.trap(MailboxLockedError)
            if not self._lost:
                self._error("[IN-USE] Mailbox in use by another session")

        return d.addCallbacks(locked, busy)

    def _cbScanned(self, state: FolderState) -> None:
        self.state = state
        if self._lost:
            return
        assert self.account is not None
        self.log.info(
            "np-pop3: {user} logged in from {peer}, {count} messages",
            user=self.account.avatarId,
            peer=str(self.transport.getPeer()),
            count=len(state.messages),
        )
        self.ok(f"{len(state.messages)} messages ({self._octets()} octets)")

    def _ebLogin(self, reason: Failure) -> None:
        if self._lost:
            return
        if self._loginsUsedUp(reason):
            self.err("[AUTH] Too many failed attempts")
            self._close("too many failed logins")
        elif reason.check(UnauthorizedLogin):
            self._error("[AUTH] Authentication failed")
        else:
            self.log.failure("np-pop3: login error", reason)
            self.err("[SYS/TEMP] Temporary authentication failure")

    # TRANSACTION state

    def _visible(self) -> list[tuple[int, Message]]:
        assert self.state is not None
        return [
            (n, m)
            for n, m in enumerate(self.state.messages, start=1)
            if n not in self.deleted
        ]

    def _octets(self) -> int:
        return sum(_size(m) for _, m in self._visible())

    def _message(self, argument: str) -> tuple[int, Message] | None:
        assert self.state is not None
        if not argument.isdigit():
            self._error("Syntax: message number")
            return None
        number = int(argument)
        if not 1 <= number <= len(self.state.messages):
            self._error("No such message")
            return None
        if number in self.deleted:
            self._error("Message deleted")
            return None
        return number, self.state.messages[number - 1]

    def pop_STAT(self, argument: str) -> None:
        self.ok(f"{len(self._visible())} {self._octets()}")

    def _listing(self, argument: str, show: Callable[[Message], str]) -> None:
        if argument:
            found = self._message(argument)
            if found is not None:
                self.ok(f"{found[0]} {show(found[1])}")
            return
        self.ok()
        self.transport.write(
            b"".join(f"{n} {show(m)}\r\n".encode() for n, m in self._visible())
            + b".\r\n"
        )

    def pop_LIST(self, argument: str) -> None:
        self._listing(argument, lambda m: str(_size(m)))

    def pop_UIDL(self, argument: str) -> None:
        assert self.state is not None
        validity = self.state.uidValidity
        self._listing(argument, lambda m: f"{validity}.{m.uid}")

    def _send(self, argument: str, transform: Callable[[bytes], bytes]) -> None:
        found = self._message(argument)
        if found is None:
            return
        assert self.account is not None
        message = found[1]

        def servable(data: bytes) -> bytes:
            return downgradeBinary(data) if isBinary(message, data) else data

        d = self.factory.store.folder(self.account.mailbox).read(message, servable)

        def send(data: bytes) -> None:
            if self._lost:
                return
            self.ok(f"{_size(message)} octets")
            self.transport.write(byteStuff(transform(data)) + b".\r\n")

        def gone(reason: Failure) -> None:
            if not self._lost:
                self.err("[SYS/TEMP] Message no longer available")

        self._wait(d.addCallbacks(send, gone))

    def pop_RETR(self, argument: str) -> None:
        self._send(argument, lambda data: data)

    def pop_TOP(self, argument: str) -> None:
        number, _, lines = argument.partition(" ")
        if not lines.strip().isdigit():
            self._error("Syntax: TOP message lines")
            return
        count = int(lines)
        self._send(number, lambda data: topOf(data, count))

    def pop_DELE(self, argument: str) -> None:
        found = self._message(argument)
        if found is not None:
            self.deleted.add(found[0])
            self.ok(f"Message {found[0]} deleted")

    def pop_RSET(self, argument: str) -> None:
        self.deleted.clear()
        self.ok(f"{len(self._visible())} messages")

    def pop_NOOP(self, argument: str) -> None:
        self.ok()

    def pop_QUIT(self, argument: str) -> None:
        if self.account is None or not self.deleted:
            self.ok("Bye")
            self._close("QUIT")
            return
        assert self.state is not None
        doomed = [self.state.messages[n - 1] for n in sorted(self.deleted)]
        d = self.factory.store.folder(self.account.mailbox).delete(doomed)

        def done(result: object) -> None:
            self._release()
            if not self._lost:
                self.ok(f"Bye, {len(doomed)} messages deleted")
                self._close("QUIT")

        def failed(reason: Failure) -> None:
            self.log.failure("np-pop3: deleting at QUIT failed", reason)
            if not self._lost:
                self.err("[SYS/TEMP] Some deleted messages not removed")
                self._close("QUIT")

        self._wait(d.addCallbacks(done, failed))


class POP3Factory(MailFactory):
    """
    Builds L{POP3Server}s sharing one store, portal and throttle; C{tls} is
    offered with STLS.
    """

    protocol = POP3Server  # type: ignore[assignment]
    configType = POP3Config
    config: POP3Config
