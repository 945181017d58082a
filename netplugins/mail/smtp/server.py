"""
np-smtp: an ESMTP server delivering to the Maildir store.

Why not C{twisted.mail.smtp.ESMTP}: it is a C{LineOnlyReceiver}, whose loop runs
every line of a read even after STARTTLS (the CVE-2011-0411 injection); it
speaks no enhanced status codes, takes bare-LF-terminated lines inside DATA,
has no pre-auth deadline and answers AUTH before TLS.  Working around each of
those from a subclass means overriding most of it, so this module is its own
small state machine on L{LineReceiver}, whose line loop stops when its buffer
is emptied (see L{netplugins.starttls}) or when the protocol pauses.

Rules it keeps:
  - Extensions: SIZE, 8BITMIME, PIPELINING, ENHANCEDSTATUSCODES, STARTTLS,
    AUTH PLAIN LOGIN, CHUNKING and BINARYMIME (RFC 3030: C{BDAT}; a
    C{BODY=BINARYMIME} transaction takes BDAT only, DATA gets 503 5.5.1; its
    message is stored as received, bare CR, LF and NUL included, and served
    so by np-imap (BINARY) and converted by np-pop3; it is never relayed,
    Twisted's client having no BDAT: a foreign recipient gets 554 5.6.3),
    SMTPUTF8 (RFC 6531: with C{MAIL FROM:<...> SMTPUTF8}, UTF-8 addresses;
    without it they get 553 5.6.7, as from Postfix; they are never relayed,
    Twisted's client being ASCII-only) and DSN (RFC 3461: C{RET=} and
    C{ENVID=} on MAIL, C{NOTIFY=} and C{ORCPT=} on RCPT, kept in the relay
    queue's envelope, which honours them; a local delivery is reported to a
    sender who asked for C{SUCCESS} when the sender is local or the client
    authenticated, so that a stranger cannot aim reports at others).
    Pipelined commands are answered in order: a command that waits (a
    recipient lookup, a login, a delivery) pauses the parser.
  - STARTTLS throws away whatever the client pipelined after it, and forgets
    the session (EHLO, AUTH, transaction).
  - AUTH only over TLS (unless C{allowPlaintextAuth}), through the portal and
    the shared L{LoginThrottle}; C{requireAuth} (submission) refuses MAIL until
    the client authenticated, within C{preAuthTimeout} seconds of connecting.
  - An authenticated client's MAIL FROM must be its own (Postfix's
    C{reject_sender_login_mismatch}; L{LocalUsers.maySendAs}): an address
    delivered to its Maildir, one of its LDAP C{mail} values, or C{<>};
    any other gets 553 5.7.1.
  - Local domains: recipients resolved at RCPT through L{LocalUsers}, local
    aliases expanded, unknown ones refused (550 5.1.1); delivered to each
    Maildir once, in its INBOX, with C{Return-Path:} and C{Received:}
    headers; 250 only once every copy is fsynced.
  - The postmaster (C{<postmaster>}, C{postmaster@} a local domain, the
    host name or C{localhost}, in any case) is always accepted, for the
    targets of a C{postmaster} alias or else the Maildir
    C{SMTPConfig.postmaster} names (RFC 5321 section 4.5.1).
  - Foreign domains: refused (550 5.7.1) unless the client authenticated and a
    relay queue (C{--smarthost}) is configured.  No open relay.  The relayed
    copy is staged in the queue, the local copies delivered, then the queued
    one committed before 250; a failed local delivery discards it, so a
    retry duplicates nothing (L{netplugins.mail.smtp.queue}).
  - DATA ends only at CRLF.CRLF after a CRLF-terminated line; a message with a
    bare LF or CR anywhere is consumed to that end and refused (550 5.5.2), so
    C{<LF>.<LF>} smuggling cannot start a second transaction.  A BDAT chunk is
    read by its count, whatever the command's fate (a refused one is read and
    dropped, so the stream stays in step); its message obeys the same rules.
  - Limits: C{maxMessageSize} (552 5.3.4, announced as SIZE), command lines
    of L{MAX_LINE} bytes, C{maxRecipients}, C{maxErrors} bad commands, an idle
    deadline reset per command (not per byte), a whole-DATA deadline.
  - A full disk answers 452 4.3.1 and leaves nothing in C{new/}.

The DATA reader is L{netplugins.mail.smtp.data}, the relay queue
L{netplugins.mail.smtp.queue}.
"""

from __future__ import annotations

import binascii
import re
import secrets
from base64 import b64decode
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from attrs import define, field, frozen
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.python.failure import Failure

from netplugins.cred.throttle import LoginThrottle
from netplugins.mail.factory import MailFactory
from netplugins.mail.linesession import LineSession, plainCredentials
from netplugins.mail.maildir.errors import DiskFullError
from netplugins.mail.maildir.names import checkUserName
from netplugins.mail.maildir.quota import OverQuotaError
from netplugins.mail.maildir.store import MaildirStore
from netplugins.mail.smtp.data import MessageReader
from netplugins.mail.smtp.dsn import (
    MAX_ENVID,
    SUCCESS,
    decodeXtext,
    deliveryReport,
    parseNotify,
    parseOrcpt,
)
from netplugins.mail.smtp.queue import RelayQueue, sendReport
from netplugins.mail.smtp.queuedir import SENT, Recipient
from netplugins.mail.users import LocalUsers, MailAccount, splitAddress
from netplugins.session import CLOSE_GRACE
from netplugins.starttls import startTLSDiscarding
from netplugins.twistedinternals import lineBuffer, setLineBuffer

DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024
MAX_LINE = 4096


def _maildirName(instance: object, attribute: Any, value: str) -> None:
    checkUserName(value)


@frozen
class SMTPConfig:
    """
    How an SMTP listener behaves.

    @ivar hostname: the name in the greeting and in C{Received:}.
    @ivar requireAuth: submission: MAIL only after AUTH.
    @ivar allowPlaintextAuth: offer AUTH before TLS (an operator's opt-out).
    @ivar queue: holds authenticated users' mail for foreign domains until
        the smarthost takes it; C{None}: refuse such mail.
    @ivar closeGrace: seconds a closed session gets to send what is queued
        before it is aborted.
    @ivar postmaster: the Maildir that mail for the postmaster goes to
        (RFC 5321 section 4.5.1): C{<postmaster>}, and C{postmaster@} each
        local domain, the server's host name and C{localhost}, the local part
        in any case.  It need not be a user's: name a user to have one read it.
    """

    hostname: str = "localhost"
    maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE
    maxRecipients: int = 100
    maxErrors: int = 20
    requireAuth: bool = False
    allowPlaintextAuth: bool = False
    queue: RelayQueue | None = None
    idleTimeout: float = 300.0
    preAuthTimeout: float = 120.0
    dataTimeout: float = 600.0
    closeGrace: float = CLOSE_GRACE
    postmaster: str = field(default="postmaster", validator=_maildirName)


#: A CR not before LF, or an LF not after CR.
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


@frozen
class _Rcpt:
    """
    An accepted recipient: its address, its Maildirs (C{None}: relayed),
    and its DSN requests (L{Recipient.notify}, L{Recipient.orcpt}).
    """

    address: str
    mailboxes: tuple[str, ...] | None
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None

    def notifies(self, event: str) -> bool:
        """
        Whether the sender asked for a DSN on C{event} (L{Recipient.notifies}).
        """
        return Recipient(self.address, notify=self.notify).notifies(event)


@define
class _Chunk:
    """
    The BDAT chunk being read: its size, the octets still to read, whether
    it is the last, and the reply refusing it (read and dropped) if any.
    """

    size: int
    last: bool
    refusal: tuple[int, str, str] | None
    left: int = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.left = self.size


def _peerHost(peer: IAddress) -> str:
    return str(getattr(peer, "host", "unknown"))


def _parsePath(text: str, prefix: str) -> tuple[str, list[str]] | None:
    """
    C{FROM:<addr> PARAMS} (or C{TO:}) as (address, params); C{None} if malformed.
    """
    if text[: len(prefix)].upper() != prefix:
        return None
    rest = text[len(prefix) :].lstrip(" ")
    if not rest.startswith("<"):
        return None
    end = rest.find(">")
    if end == -1:
        return None
    return rest[1:end], rest[end + 1 :].split()


class SMTPServer(LineSession):
    """
    One SMTP session.  See the module docstring.
    """

    log = Logger()
    MAX_LENGTH = MAX_LINE
    factory: SMTPFactory
    transport: Any

    def __init__(self) -> None:
        super().__init__()
        self.helo: str | None = None
        self.esmtp = False
        self.mailFrom: str | None = None
        self.recipients: list[_Rcpt] = []
        # RFC 3461: this transaction's RET= and ENVID= (decoded).
        self.dsnRet: str | None = None
        self.dsnEnvid: str | None = None
        self._authPending: Callable[[bytes], None] | None = None
        self._reader: MessageReader | None = None
        # RFC 6531: this transaction's MAIL asked for SMTPUTF8.
        self.smtputf8 = False
        # RFC 3030: this transaction's MAIL said BODY=BINARYMIME.
        self.binary = False
        # BDAT: the chunks so far (None: no BDAT yet in this transaction),
        # their size, and the chunk being read.
        self._chunks: list[bytes] | None = None
        self._chunksSize = 0
        self._chunk: _Chunk | None = None

    # Connection and timers

    @property
    def config(self) -> SMTPConfig:
        return self.factory.config

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.config.requireAuth:
            self._arm("preauth", self.config.preAuthTimeout)
        self.sendLine(f"220 {self.config.hostname} ESMTP netplugins".encode())

    def _timedOut(self, name: str) -> None:
        self.log.info(
            "np-smtp: closing connection from {peer}: {deadline} deadline passed",
            peer=str(self.transport.getPeer()),
            deadline=name,
        )
        self.reply(421, "4.4.2", f"{self.config.hostname} Error: timeout exceeded")
        self._close(f"{name} deadline passed")

    # Replies

    def reply(self, code: int, enhanced: str, text: str) -> None:
        """
        Send one reply line (with its enhanced code once EHLO negotiated it).
        """
        if self.esmtp and enhanced:
            text = f"{enhanced} {text}"
        self.transport.write(f"{code} {text}\r\n".encode("utf-8", "replace"))

    def replyLines(self, code: int, lines: list[str]) -> None:
        """
        Send a multi-line reply in one write: clients that read a reply with
        one C{recv} (sslscan's STARTTLS probe) would otherwise see half of it.
        """
        last = len(lines) - 1
        self.transport.write(
            "".join(
                f"{code}{' ' if i == last else '-'}{line}\r\n"
                for i, line in enumerate(lines)
            ).encode("utf-8", "replace")
        )

    def _error(self, code: int, enhanced: str, text: str) -> None:
        self.reply(code, enhanced, text)
        self.errors += 1
        if self.errors >= self.config.maxErrors:
            self.reply(421, "4.7.0", f"{self.config.hostname} Error: too many errors")
            self._close("too many errors")

    def _ebUnexpected(self, reason: Failure) -> None:
        self.log.failure("np-smtp: unexpected error", reason)
        if not self._lost:
            self.reply(451, "4.3.0", "Error: internal error")

    # Lines

    def lineLengthExceeded(self, line: bytes) -> None:
        self.log.info(
            "np-smtp: closing connection from {peer}: command line over {limit} bytes",
            peer=str(self.transport.getPeer()),
            limit=self.MAX_LENGTH,
        )
        self.reply(500, "5.5.0", "Error: line too long")
        self._close("line too long")

    def lineReceived(self, line: bytes) -> None:
        self._arm("idle", self.config.idleTimeout)
        if self._authPending is not None:
            pending, self._authPending = self._authPending, None
            pending(line)
            return
        if b"\n" in line or b"\r" in line:
            self._error(500, "5.5.2", "Error: bare <LF> or <CR> received")
            return
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            if line[:5].upper() not in (b"MAIL ", b"RCPT "):
                self._error(500, "5.5.2", "Error: command not recognized")
                return
            # An internationalised address (RFC 6531): MAIL and RCPT check
            # that the transaction asked for SMTPUTF8.
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                self._error(501, "5.5.2", "Error: invalid UTF-8 in command")
                return
        verb, _, argument = text.partition(" ")
        handler = None
        if verb.isalpha():
            handler = getattr(self, "smtp_" + verb.upper(), None)
        if handler is None:
            self._error(502, "5.5.2", "Error: command not recognized")
            return
        handler(argument.strip())

    # Session commands

    def _resetTransaction(self) -> None:
        self.mailFrom = None
        self.recipients = []
        self.dsnRet = None
        self.dsnEnvid = None
        self.smtputf8 = False
        self.binary = False
        self._chunks = None
        self._chunksSize = 0
        # BDAT's deadline runs from the first chunk to the last.
        self._disarm("data")

    def _refuseUnicode(self) -> None:
        # What Postfix answers when the client did not ask for SMTPUTF8.
        self._error(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")

    def smtp_HELO(self, argument: str) -> None:
        self._greeted(argument, esmtp=False)

    def smtp_EHLO(self, argument: str) -> None:
        self._greeted(argument, esmtp=True)

    def _greeted(self, argument: str, esmtp: bool) -> None:
        if not argument or " " in argument or len(argument) > 255:
            self._error(501, "5.5.4", "Syntax: EHLO hostname")
            return
        self.helo = argument
        self.esmtp = esmtp
        self._resetTransaction()
        host = self.config.hostname
        if not esmtp:
            self.reply(250, "", host)
            return
        lines = [
            host,
            "PIPELINING",
            f"SIZE {self.config.maxMessageSize}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "BINARYMIME",
            "SMTPUTF8",
            "DSN",
        ]
        if self.factory.tls is not None and not self.secure:
            lines.append("STARTTLS")
        if self._authAllowed() and self.account is None:
            lines.append("AUTH PLAIN LOGIN")
        self.replyLines(250, lines)

    def smtp_NOOP(self, argument: str) -> None:
        self.reply(250, "2.0.0", "Ok")

    def smtp_RSET(self, argument: str) -> None:
        self._resetTransaction()
        self.reply(250, "2.0.0", "Ok")

    def smtp_QUIT(self, argument: str) -> None:
        self.reply(221, "2.0.0", "Bye")
        self._close("QUIT")

    def smtp_VRFY(self, argument: str) -> None:
        # Answering would let anyone enumerate the users.
        self.reply(252, "2.0.0", "Cannot VRFY user; try RCPT")

    def smtp_HELP(self, argument: str) -> None:
        self.reply(214, "2.0.0", "See RFC 5321")

    def smtp_STARTTLS(self, argument: str) -> None:
        if argument:
            self._error(501, "5.5.4", "Syntax: STARTTLS")
        elif self.factory.tls is None or self.secure:
            self._error(454, "4.7.0", "TLS not available")
        else:
            startTLSDiscarding(
                self, self.factory.tls, b"220 2.0.0 Ready to start TLS\r\n"
            )
            self.secure = True
            self.helo = None
            self.esmtp = False
            self.account = None
            self._resetTransaction()

    # AUTH

    def smtp_AUTH(self, argument: str) -> None:
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if self.helo is None or not self.esmtp:
            self._error(503, "5.5.1", "Error: send EHLO first")
        elif not self._authAllowed():
            self._error(530, "5.7.0", "Must issue a STARTTLS command first")
        elif self.account is not None:
            self._error(503, "5.5.1", "Error: already authenticated")
        elif self.mailFrom is not None:
            self._error(503, "5.5.1", "Error: MAIL transaction in progress")
        elif mechanism == "PLAIN":
            if initial:
                self._authPlain(initial.encode("ascii"))
            else:
                self.transport.write(b"334 \r\n")
                self._authPending = self._authPlain
        elif mechanism == "LOGIN":
            if initial:
                self._authLoginUser(initial.encode("ascii"))
            else:
                self.transport.write(b"334 VXNlcm5hbWU6\r\n")
                self._authPending = self._authLoginUser
        else:
            self._error(504, "5.5.4", "Error: unsupported authentication mechanism")

    def _decode(self, response: bytes) -> bytes | None:
        if response == b"*":
            self._error(501, "5.0.0", "Authentication aborted")
            return None
        if response == b"=":
            return b""
        try:
            return b64decode(response, validate=True)
        except (binascii.Error, ValueError):
            self._error(501, "5.5.2", "Error: cannot decode response")
            return None

    def _authPlain(self, response: bytes) -> None:
        decoded = self._decode(response)
        if decoded is None:
            return
        credentials = plainCredentials(decoded)
        if credentials is None:
            self._error(535, "5.7.8", "Authentication credentials invalid")
            return
        self._login(*credentials)

    def _authLoginUser(self, response: bytes) -> None:
        username = self._decode(response)
        if username is None:
            return
        self.transport.write(b"334 UGFzc3dvcmQ6\r\n")

        def password(line: bytes) -> None:
            secret = self._decode(line)
            if secret is not None:
                self._login(username, secret)

        self._authPending = password

    def _cbLoggedIn(self, result: tuple[Any, MailAccount, Any]) -> None:
        if self._lost:
            return
        self.account = result[1]
        self._disarm("preauth")
        self.log.info(
            "np-smtp: {user} authenticated from {peer}",
            user=self.account.avatarId,
            peer=str(self.transport.getPeer()),
        )
        self.reply(235, "2.7.0", "Authentication successful")

    def _ebLogin(self, reason: Failure) -> None:
        if self._lost:
            return
        if self._loginsUsedUp(reason):
            self.reply(421, "4.7.0", "Error: too many failed authentication attempts")
            self._close("too many failed logins")
        elif reason.check(UnauthorizedLogin):
            self._error(535, "5.7.8", "Authentication credentials invalid")
        else:
            self.log.failure("np-smtp: login error", reason)
            self.reply(454, "4.7.0", "Temporary authentication failure")

    # The mail transaction

    def smtp_MAIL(self, argument: str) -> None:
        if self.helo is None:
            self._error(503, "5.5.1", "Error: send HELO/EHLO first")
            return
        if self.config.requireAuth and self.account is None:
            self._error(530, "5.7.0", "Authentication required")
            return
        if self.mailFrom is not None:
            self._error(503, "5.5.1", "Error: nested MAIL command")
            return
        parsed = _parsePath(argument, "FROM:")
        if parsed is None:
            self._error(501, "5.5.4", "Syntax: MAIL FROM:<address>")
            return
        address, params = parsed
        utf8 = any(param.upper() == "SMTPUTF8" for param in params)
        if not (utf8 or address.isascii()):
            self._refuseUnicode()
            return
        if address and splitAddress(address, utf8) is None:
            self._error(501, "5.1.7", "Bad sender address syntax")
            return
        dsn: dict[str, str] = {}
        binary = False
        for param in params:
            key, _, value = param.partition("=")
            key = key.upper()
            if key == "SIZE" and value.isdigit():
                if int(value) > self.config.maxMessageSize:
                    self._error(552, "5.3.4", "Message size exceeds fixed limit")
                    return
            elif key == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
                pass
            elif key == "BODY" and value.upper() == "BINARYMIME" and self.esmtp:
                binary = True
            elif key == "AUTH" or (key == "SMTPUTF8" and not value):
                pass
            elif key in ("RET", "ENVID") and self.esmtp:
                decoded = (
                    (value.upper() if value.upper() in ("FULL", "HDRS") else None)
                    if key == "RET"
                    else decodeXtext(value, MAX_ENVID)
                )
                if key in dsn or not decoded:
                    self._error(501, "5.5.4", f"Bad {key} parameter")
                    return
                dsn[key] = decoded
            else:
                self._error(555, "5.5.4", f"Unsupported option: {param}")
                return
        ret, envid = dsn.get("RET"), dsn.get("ENVID")
        if self.account is None:
            self._cbSender(True, address, utf8, ret, envid, binary)
            return
        d = self.factory.users.maySendAs(self.account, address)
        d.addCallback(self._cbSender, address, utf8, ret, envid, binary)
        self._wait(d)

    def _cbSender(
        self,
        allowed: bool,
        address: str,
        utf8: bool,
        ret: str | None,
        envid: str | None,
        binary: bool,
    ) -> None:
        if self._lost:
            return
        if not allowed:
            assert self.account is not None
            self.log.info(
                "np-smtp: {user} from {peer} may not send as <{sender}>",
                user=self.account.avatarId,
                peer=str(self.transport.getPeer()),
                sender=address,
            )
            self._error(
                553,
                "5.7.1",
                f"<{address}>: Sender address rejected: not owned by user "
                f"{self.account.avatarId}",
            )
            return
        self.mailFrom = address
        self.smtputf8 = utf8
        self.binary = binary
        self.dsnRet, self.dsnEnvid = ret, envid
        self.reply(250, "2.1.0", "Ok")

    def smtp_RCPT(self, argument: str) -> None:
        if self.mailFrom is None:
            self._error(503, "5.5.1", "Error: need MAIL command")
            return
        parsed = _parsePath(argument, "TO:")
        if parsed is None:
            self._error(501, "5.5.4", "Syntax: RCPT TO:<address>")
            return
        address, params = parsed
        if not (self.smtputf8 or address.isascii()):
            self._refuseUnicode()
            return
        dsn = self._rcptParameters(params)
        if dsn is None:
            return
        notify, orcpt = dsn
        if self._isPostmaster(address):
            if len(self.recipients) >= self.config.maxRecipients:
                self.reply(452, "4.5.3", "Error: too many recipients")
            else:
                postmaster = self.factory.users.postmaster(self.config.postmaster)
                postmaster.addCallback(self._cbResolved, address, notify, orcpt)
                self._wait(postmaster)
            return
        parts = splitAddress(address, self.smtputf8)
        if parts is None:
            self._error(501, "5.1.3", "Bad recipient address syntax")
            return
        if len(self.recipients) >= self.config.maxRecipients:
            self.reply(452, "4.5.3", "Error: too many recipients")
            return
        if not self.factory.users.isLocal(parts[1]):
            if not (address.isascii() and (self.mailFrom or "").isascii()):
                self._error(
                    553, "5.6.7", f"<{address}>: cannot relay unicode addresses"
                )
            elif self.binary:
                # Twisted's SMTP client has no BDAT to carry it on.
                self._error(
                    554,
                    "5.6.3",
                    f"<{address}>: cannot relay a BINARYMIME message",
                )
            elif self.account is not None and self.config.queue is not None:
                self.recipients.append(_Rcpt(address, None, notify, orcpt))
                self.reply(250, "2.1.5", "Ok")
            else:
                self.log.info(
                    "np-smtp: relay to {recipient} refused for {peer}",
                    recipient=address,
                    peer=str(self.transport.getPeer()),
                )
                self._error(550, "5.7.1", f"<{address}>: Relay access denied")
            return
        d = self.factory.users.recipients(address)
        d.addCallback(self._cbResolved, address, notify, orcpt)
        self._wait(d)

    def _rcptParameters(
        self, params: list[str]
    ) -> tuple[tuple[str, ...] | None, str | None] | None:
        """
        RCPT's DSN parameters (C{NOTIFY=}, C{ORCPT=}) as (events, original
        recipient); C{None} (refused) for a malformed, repeated or unknown
        parameter, or any after HELO, which offered no extension (RFC 5321
        section 4.1.1.11).
        """
        notify: tuple[str, ...] | None = None
        orcpt: str | None = None
        seen = set()
        for param in params:
            key, _, value = param.partition("=")
            key = key.upper()
            if key not in ("NOTIFY", "ORCPT") or not self.esmtp:
                self._error(555, "5.5.4", f"Unsupported option: {param}")
                return None
            if key == "NOTIFY":
                notify = parseNotify(value)
                parsed: object = notify
            else:
                orcpt = parseOrcpt(value)
                parsed = orcpt
            if key in seen or parsed is None:
                self._error(501, "5.5.4", f"Bad {key} parameter")
                return None
            seen.add(key)
        return notify, orcpt

    def _isPostmaster(self, address: str) -> bool:
        """
        Whether C{address} is the postmaster's, which every SMTP server must
        accept without a domain (RFC 5321 section 4.5.1).
        """
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = address, ""
        if local.casefold() != "postmaster":
            return False
        domain = domain.lower().rstrip(".")
        return (
            not at
            or self.factory.users.isLocal(domain)
            or domain in ("localhost", self.config.hostname.lower())
        )

    def _cbResolved(
        self,
        mailboxes: list[str] | None,
        address: str,
        notify: tuple[str, ...] | None,
        orcpt: str | None,
    ) -> None:
        if self._lost:
            return
        if mailboxes is None:
            self.log.info(
                "np-smtp: unknown recipient <{recipient}> refused for {peer}",
                recipient=address,
                peer=str(self.transport.getPeer()),
            )
            self._error(
                550, "5.1.1", f"<{address}>: Recipient address rejected: User unknown"
            )
        else:
            self.recipients.append(_Rcpt(address, tuple(mailboxes), notify, orcpt))
            self.reply(250, "2.1.5", "Ok")

    def smtp_DATA(self, argument: str) -> None:
        if argument:
            self._error(501, "5.5.4", "Syntax: DATA")
        elif self.mailFrom is None:
            self._error(503, "5.5.1", "Error: need MAIL command")
        elif not self.recipients:
            self._error(554, "5.5.1", "Error: no valid recipients")
        elif self._chunks is not None:
            self._error(503, "5.5.1", "Error: DATA after BDAT")
        elif self.binary:
            # RFC 3030 section 3: BODY=BINARYMIME takes BDAT only.
            self._error(503, "5.5.1", "Error: BINARYMIME requires BDAT")
        else:
            self._reader = MessageReader(self.config.maxMessageSize)
            self.setRawMode()
            self._arm("data", self.config.dataTimeout)
            self.reply(354, "", "End data with <CR><LF>.<CR><LF>")

    # DATA

    def smtp_BDAT(self, argument: str) -> None:
        size, _, last = argument.partition(" ")
        if not size.isdigit() or len(size) > 18 or last.upper() not in ("", "LAST"):
            # The chunk's length is unknown: what follows is read as commands.
            self._error(501, "5.5.4", "Syntax: BDAT size [LAST]")
            return
        refusal = None
        if self.mailFrom is None:
            refusal = (503, "5.5.1", "Error: need MAIL command")
        elif not self.recipients:
            refusal = (554, "5.5.1", "Error: no valid recipients")
        elif self._chunks is None:
            self._chunks = []
        self._chunk = _Chunk(int(size), bool(last), refusal)
        if self.deadlines is not None and "data" not in self.deadlines:
            # One deadline for all the transaction's chunks, as for DATA.
            self._arm("data", self.config.dataTimeout)
        if self._chunk.left:
            self.setRawMode()
        else:
            self._endOfChunk(b"")

    def rawDataReceived(self, data: bytes) -> None:
        self._arm("idle", self.config.idleTimeout)
        if self._chunk is not None:
            self._chunkReceived(data)
            return
        assert self._reader is not None
        rest = self._reader.feed(data)
        if rest is not None:
            self._endOfData(rest)

    def _chunkReceived(self, data: bytes) -> None:
        chunk = self._chunk
        assert chunk is not None
        part, rest = data[: chunk.left], data[chunk.left :]
        chunk.left -= len(part)
        if chunk.refusal is None and self._chunks is not None:
            # Past the size limit the bytes are counted, not kept.
            self._chunksSize += len(part)
            if self._chunksSize > self.config.maxMessageSize:
                self._chunks = []
            else:
                self._chunks.append(part)
        if not chunk.left:
            self._endOfChunk(rest)

    def _endOfChunk(self, rest: bytes) -> None:
        chunk, self._chunk = self._chunk, None
        assert chunk is not None
        self._resumeCommands(rest, chunk.last or self._chunks is None)
        if chunk.refusal is not None:
            self._error(*chunk.refusal)
            return
        if not chunk.last:
            self.reply(250, "2.0.0", f"{chunk.size} octets received")
            return
        assert self._chunks is not None
        message = b"".join(self._chunks)
        if self._chunksSize > self.config.maxMessageSize:
            self._resetTransaction()
            self._error(552, "5.3.4", "Error: message file too big")
        elif not self.binary and _BARE.search(message) is not None:
            self.log.warn(
                "np-smtp: refused a message with a bare LF or CR from {peer}",
                peer=str(self.transport.getPeer()),
            )
            self._resetTransaction()
            self._error(550, "5.5.2", "Error: bare <LF> or <CR> received")
        else:
            self._wait(self._deliver(message))

    def _resumeCommands(self, rest: bytes, done: bool = True) -> None:
        """
        Back to reading commands after a message or a chunk (C{done}: the
        last, whose deadline ends).
        """
        if done:
            self._disarm("data")
        self.setLineMode()
        # LineReceiver handed all it had to rawDataReceived: what followed the
        # message goes back to be parsed as commands once this one is done.
        setLineBuffer(self, rest + lineBuffer(self))

    def _endOfData(self, rest: bytes) -> None:
        self._resumeCommands(rest)
        peer = str(self.transport.getPeer())
        reader, self._reader = self._reader, None
        assert reader is not None
        if reader.bare:
            self.log.warn(
                "np-smtp: refused a message with a bare LF or CR from {peer}",
                peer=peer,
            )
            self._resetTransaction()
            self._error(550, "5.5.2", "Error: bare <LF> or <CR> received")
            return
        if reader.oversize:
            self._resetTransaction()
            self._error(552, "5.3.4", "Error: message file too big")
            return
        self._wait(self._deliver(reader.message()))

    def _received(self, queueId: str) -> bytes:
        peer = self.transport.getPeer()
        # RFC 6531 section 3.7.4: UTF8SMTP for an SMTPUTF8 transaction.
        protocol = "UTF8SMTP" if self.smtputf8 else "ESMTP" if self.esmtp else "SMTP"
        if self.secure:
            protocol += "S"
        if self.account is not None:
            protocol += "A"
        recipient = ""
        if len(self.recipients) == 1:
            recipient = f"\r\n\tfor <{self.recipients[0].address}>"
        return (
            f"Received: from {self.helo} ([{_peerHost(peer)}])\r\n"
            f"\tby {self.config.hostname} (netplugins) with {protocol} id {queueId}"
            f"{recipient}; {formatdate(localtime=True)}\r\n"
        ).encode()

    def _deliver(self, body: bytes) -> Deferred[Any]:
        queueId = secrets.token_hex(6).upper()
        message = self._received(queueId) + body
        users = sorted({user for r in self.recipients for user in r.mailboxes or ()})
        foreign = [
            Recipient(r.address, notify=r.notify, orcpt=r.orcpt)
            for r in self.recipients
            if r.mailboxes is None
        ]
        sender = self.mailFrom or ""
        # RFC 3461 section 5.2.2: a final delivery the sender asked to hear
        # of is reported as delivered.
        delivered = [
            Recipient(r.address, SENT, notify=r.notify, orcpt=r.orcpt)
            for r in self.recipients
            if r.mailboxes is not None and r.notifies(SUCCESS)
        ]
        # Final delivery records the envelope sender (RFC 5321 section 4.4);
        # relayed copies are not final, so they go without it.
        local = f"Return-Path: <{sender}>\r\n".encode() + message
        # One all-or-nothing delivery for the local copies: a 452 must not
        # leave some recipients served (the client will send again).
        store, queue = self.factory.store, self.config.queue
        d: Deferred[Any]
        if not foreign:
            d = store.deliverMany(users, local, self.binary)
        else:
            assert queue is not None
            d = queue.stage(
                queueId, sender, foreign, message, ret=self.dsnRet, envid=self.dsnEnvid
            )
            d.addCallback(lambda _: _deliverStaged(store, queue, queueId, users, local))
        d.addCallbacks(
            self._cbDelivered,
            self._ebDelivered,
            callbackArgs=(queueId, len(message)),
            errbackArgs=(queueId,),
        )
        if sender and delivered:
            d.addCallback(
                self._reportDelivered,
                queueId,
                sender,
                delivered,
                message,
                self.dsnEnvid,
                self.account is not None,
            )
        self._resetTransaction()
        return d

    def _reportDelivered(
        self,
        accepted: object,
        queueId: str,
        sender: str,
        delivered: list[Recipient],
        message: bytes,
        envid: str | None,
        authenticated: bool,
    ) -> None:
        """
        Send C{sender} a DSN saying C{delivered} got the message (once the
        client got its 250); only to a local sender or from an
        authenticated client.
        """
        if not accepted:
            return
        parts = splitAddress(sender, True)
        users = self.factory.users
        if not (authenticated or (parts and users.isLocal(parts[1]))):
            self.log.info(
                "np-smtp: {queueId}: no DSN for <{sender}>: not local, "
                "client not authenticated",
                queueId=queueId,
                sender=sender,
            )
            return
        report = deliveryReport(
            hostname=self.config.hostname,
            smarthost="",
            sender=sender,
            queueId=queueId,
            arrival=self.factory.reactor.seconds(),
            message=message,
            delivered=delivered,
            envid=envid,
        )
        d = sendReport(
            report,
            sender,
            queueId,
            store=self.factory.store,
            users=users,
            queue=self.config.queue,
        )
        d.addErrback(
            lambda reason: self.log.failure(
                "np-smtp: {queueId}: DSN not sent", reason, queueId=queueId
            )
        )

    def _cbDelivered(self, result: object, queueId: str, size: int) -> bool:
        self.log.info(
            "np-smtp: {queueId} accepted, {size} bytes from {peer}",
            queueId=queueId,
            size=size,
            peer=str(self.transport.getPeer()),
        )
        if not self._lost:
            self.reply(250, "2.0.0", f"Ok: queued as {queueId}")
        return True

    def _ebDelivered(self, reason: Failure, queueId: str) -> None:
        if reason.check(OverQuotaError):
            # A recipient's mailbox is full: the client may try later.
            self.log.info(
                "np-smtp: {queueId} refused: {error}",
                queueId=queueId,
                error=str(reason.value),
            )
            if not self._lost:
                self.reply(452, "4.2.2", "Error: mailbox full")
            return
        if reason.check(DiskFullError):
            # The disk, or the relay queue (QueueFullError), is full.
            self.log.error(
                "np-smtp: {queueId} refused: {error}",
                queueId=queueId,
                error=str(reason.value),
            )
            if not self._lost:
                self.reply(452, "4.3.1", "Error: insufficient system storage")
            return
        self.log.failure("np-smtp: {queueId} not delivered", reason, queueId=queueId)
        if not self._lost:
            self.reply(451, "4.3.0", "Error: local delivery failed")


def _deliverStaged(
    store: MaildirStore,
    queue: RelayQueue,
    queueId: str,
    users: list[str],
    local: bytes,
) -> Deferred[None]:
    """
    Deliver the local copies of a message whose relayed copy is staged, then
    commit that; if the local delivery fails, discard it.
    """

    def discard(reason: Failure) -> Deferred[Any]:
        return queue.discard(queueId).addBoth(lambda _: reason)

    d: Deferred[Any] = store.deliverMany(users, local)
    d.addCallbacks(lambda _: queue.commit(queueId), discard)
    return d


class SMTPFactory(MailFactory):
    """
    Builds L{SMTPServer}s sharing one store, user table, portal and throttle.

    @ivar users: the local domains and users recipients are resolved against.
    """

    protocol = SMTPServer  # type: ignore[assignment]
    configType = SMTPConfig
    config: SMTPConfig

    def __init__(
        self,
        store: MaildirStore,
        portal: Any,
        *,
        users: LocalUsers,
        config: SMTPConfig | None = None,
        tls: Any = None,
        throttle: LoginThrottle | None = None,
        reactor: Any = None,
    ) -> None:
        super().__init__(
            store, portal, config=config, tls=tls, throttle=throttle, reactor=reactor
        )
        self.users = users
