"""
np-ftp's control connection: an FTP server (RFC 959, 1123) with FTPS
(RFC 2228, 4217), IPv6 and NAT-friendly data connections (RFC 2428), UTF-8
names (RFC 2640) and the RFC 3659 extensions (SIZE, MDTM, REST STREAM, MLST,
MLSD), on the shared user store (L{netplugins.homes}).

Written on L{LineReceiver} rather than C{twisted.protocols.ftp}, which has no
TLS, no REST/APPE/MLSD/ABOR, latin-1 names and a PORT that connects wherever
the client says.  Rules it keeps:
  - passwords only over TLS unless C{tlsRequired} is C{none} (anonymous
    logins, behind C{--anonymous-root}, excepted); with C{all}, every data
    connection is protected too (C{PROT P});
  - C{AUTH TLS} throws away whatever was pipelined behind it
    (L{netplugins.starttls});
  - logins through the shared throttle: at most 6 per connection, delayed
    after failures; a pre-login deadline, an idle deadline (C{421}), a
    command line of at most L{MAX_LINE} bytes, at most C{maxErrors} bad
    commands;
  - data connections only with the control connection's peer address, PORT
    and EPRT to ports of 1024 or more (L{netplugins.ftp.data});
  - protected data connections resume the control connection's TLS session
    (C{sessionReuse}: C{required} by default, as vsftpd and FileZilla
    Server; Python's ftplib cannot resume sessions and needs C{optional});
  - every path goes through the user's L{Jail}, in the thread pool;
    listings are bounded (C{maxListEntries}).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from netplugins.addresses import describe
from netplugins.cred.throttle import LoginThrottle, TooManyAttempts
from netplugins.ftp import listing
from netplugins.ftp.data import (
    CHUNK,
    ActivePort,
    DataChannel,
    FileSender,
    FromNetwork,
    PassivePort,
    Receiver,
    Sender,
    ToNetwork,
    memoryReader,
    sameHost,
)
from netplugins.ftp.tls import resumes
from netplugins.homes import TLS_POLICIES, IJail, Jail, NoHomeError, virtualPath
from netplugins.session import CLOSE_GRACE, COMMAND, Deadlines, Discipline
from netplugins.starttls import isSecure, startTLSDiscarding

#: The longest command line accepted, in bytes (CRLF included).
MAX_LINE = 2048
#: Commands read while a transfer runs, before reading stops.
MAX_QUEUED = 16
#: Names STOU tries before giving up.
UNIQUE_TRIES = 100

_ANONYMOUS = ("anonymous", "ftp")
_PRE_LOGIN = {
    "USER", "PASS", "AUTH", "PBSZ", "PROT", "FEAT", "OPTS", "QUIT", "NOOP",
    "SYST", "HELP", "ACCT", "CCC",
}  # fmt: skip
_DURING_TRANSFER = {"ABOR", "STAT", "NOOP", "QUIT"}
_TRANSFERS = {"RETR", "STOR", "APPE", "STOU", "LIST", "NLST", "MLSD"}
_COMMANDS = (
    "ABOR ACCT ALLO APPE AUTH CDUP CWD DELE EPRT EPSV FEAT HELP LIST MDTM MFF MFMT "
    "MKD MLSD MLST MODE NLST NOOP OPTS PASS PASV PBSZ PORT PROT PWD QUIT REIN REST "
    "RETR RMD RNFR RNTO SIZE STAT STOR STOU STRU SYST TYPE USER XCUP XCWD XMKD XPWD "
    "XRMD"
).split()
_ALIASES = {"XCUP": "CDUP", "XCWD": "CWD", "XMKD": "MKD", "XPWD": "PWD", "XRMD": "RMD"}

#: errno to reply, for what the jail refuses.
_ERRORS = {
    errno.ENOENT: "550 No such file or directory.",
    errno.EACCES: "550 Permission denied.",
    errno.EPERM: "550 Permission denied.",
    errno.EROFS: "550 Permission denied.",
    errno.EISDIR: "550 Is a directory.",
    errno.ENOTDIR: "550 Not a directory.",
    errno.EEXIST: "550 File exists.",
    errno.ENOTEMPTY: "550 Directory not empty.",
    errno.EBUSY: "550 Cannot change the home directory.",
    errno.ELOOP: "550 Too many levels of symbolic links.",
    errno.EINVAL: "501 Invalid path.",
    errno.ENAMETOOLONG: "501 Path too long.",
    errno.EDQUOT: "552 Quota exceeded.",
    errno.ENOSPC: "452 Insufficient storage space.",
}


def _reply(reason: Failure) -> str:
    error = reason.value
    if isinstance(error, OSError) and error.errno in _ERRORS:
        return _ERRORS[error.errno]
    return "451 Local error in processing."


def quotePath(path: str) -> str:
    """
    C{path} for a 257 reply: in double quotes, quotes doubled (RFC 959).
    """
    return '"' + path.replace('"', '""') + '"'


@frozen
class FTPConfig:
    """
    How an np-ftp listener behaves.

    @ivar tlsRequired: C{none}, C{control} (passwords only over TLS) or
        C{all} (data connections protected too).
    @ivar sessionReuse: C{required}, C{optional} or C{off}: whether a
        protected data connection must resume the control connection's TLS
        session.
    @ivar passivePorts: the passive range (inclusive), or C{None} for any.
    @ivar masquerade: the IPv4 address given in PASV replies, or C{None}.
    @ivar dataTimeout: seconds to wait for a data connection.
    """

    banner: str = "np-ftp ready."
    tlsRequired: str = "control"
    sessionReuse: str = "required"
    passivePorts: tuple[int, int] | None = None
    masquerade: str | None = None
    idleTimeout: float = 300.0
    preAuthTimeout: float = 120.0
    dataTimeout: float = 30.0
    closeGrace: float = CLOSE_GRACE
    maxErrors: int = 20
    maxListEntries: int = 10_000


class FTPServer(LineReceiver):
    """
    One FTP control connection.  See the module docstring.
    """

    log = Logger()
    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    factory: FTPFactory
    transport: Any

    def __init__(self) -> None:
        self.secure = False
        self.protected = False
        self.pbsz = False
        self.user: str | None = None
        #: What the user's entry requires of TLS (L{HomeStore.tlsRequiredFor}).
        self.userTLS = "none"
        self.jail: Jail | None = None
        self.cwd = "/"
        self.binary = False
        self.restart = 0
        self.renameFrom: str | None = None
        self.epsvAll = False
        self.facts: tuple[str, ...] = listing.FACTS
        self.errors = 0
        self.discipline: Discipline | None = None
        self._attempts: Any = None
        self.deadlines: Deadlines | None = None
        self._port: PassivePort | ActivePort | None = None
        self._channel: DataChannel | None = None
        self._transfer: Any = None
        self._queued: deque[bytes] = deque()
        self._lost = False
        self._logout: Callable[[], None] | None = None

    @property
    def config(self) -> FTPConfig:
        return self.factory.config

    # Connection and deadlines

    def connectionMade(self) -> None:
        self.secure = isSecure(self.transport)
        self.discipline = Discipline(
            self.transport,
            self.factory.reactor,
            pause=lambda: LineReceiver.pauseProducing(self),
            resume=self._resumeReading,
            grace=self.config.closeGrace,
        )
        self._attempts = self.factory.throttle.connection()
        self.deadlines = Deadlines(self.factory.reactor, self._timedOut)
        self._oobInline()
        self._arm("idle", self.config.idleTimeout)
        self._arm("login", self.config.preAuthTimeout)
        self.reply(f"220 {self.config.banner}")

    def _oobInline(self) -> None:
        # ftplib's abort() sends ABOR with MSG_OOB: without SO_OOBINLINE the
        # kernel takes its last byte out of the stream.
        try:
            handle = self.transport.getHandle()
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        except Exception:  # noqa: S110 (a transport without a socket)
            pass

    def _resumeReading(self) -> None:
        LineReceiver.resumeProducing(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._lost = True
        if self.discipline is not None:
            self.discipline.lost()
        if self.deadlines is not None:
            self.deadlines.cancelAll()
        self._closeData(abort=True)
        logout, self._logout = self._logout, None
        if logout is not None:
            logout()

    def _arm(self, name: str, seconds: float) -> None:
        assert self.deadlines is not None
        self.deadlines.arm(name, seconds)

    def _disarm(self, name: str) -> None:
        assert self.deadlines is not None
        self.deadlines.disarm(name)

    def _timedOut(self, name: str) -> None:
        self.log.info(
            "np-ftp: closing connection from {peer}: {deadline} deadline passed",
            peer=describe(self.transport.getPeer()),
            deadline=name,
        )
        text = "Login timeout" if name == "login" else "Idle timeout"
        self.reply(f"421 {text}, closing control connection.")
        self._close(f"{name} deadline passed")

    def _close(self, why: str) -> None:
        self._closeData(abort=True)
        assert self.discipline is not None
        self.discipline.close(why)

    # Replies

    def reply(self, text: str) -> None:
        """
        Send one reply line (C{text} holds no CR or LF: names are checked).
        """
        if self._lost:
            return
        self.transport.write(text.encode("utf-8", "surrogateescape") + b"\r\n")

    def replyLines(self, code: str, lines: list[str], last: str) -> None:
        """
        A multi-line reply: C{code-} first line, lines indented, C{code last}.
        """
        first, *rest = lines
        body = [f"{code}-{first}", *(f" {line}" for line in rest), f"{code} {last}"]
        self.transport.write(
            b"".join(line.encode("utf-8", "surrogateescape") + b"\r\n" for line in body)
        )

    def _error(self, text: str) -> None:
        self.reply(text)
        self.errors += 1
        if self.errors >= self.config.maxErrors:
            self.reply("421 Too many errors, closing control connection.")
            self._close("too many errors")

    # Lines

    def lineLengthExceeded(self, line: bytes) -> None:
        self.log.info(
            "np-ftp: closing connection from {peer}: command line over {limit} bytes",
            peer=describe(self.transport.getPeer()),
            limit=MAX_LINE,
        )
        self.reply("500 Command line too long.")
        self._close("line too long")

    def lineReceived(self, line: bytes) -> None:
        assert self.discipline is not None
        if self.discipline.closing:
            return
        if self._transfer is not None:
            verb = _telnet(line).split(b" ", 1)[0].strip().upper()
            if verb.decode("ascii", "replace") not in _DURING_TRANSFER:
                self._queued.append(line)
                if len(self._queued) >= MAX_QUEUED:
                    self.discipline.hold("queue")
                return
        self._arm("idle", self.config.idleTimeout)
        self._command(line)

    def _command(self, line: bytes) -> None:
        line = _telnet(line).rstrip(b"\r")
        rawVerb, _, rawArgument = line.partition(b" ")
        try:
            verb = rawVerb.decode("ascii").strip().upper()
        except UnicodeDecodeError:
            self._error("500 Unknown command.")
            return
        verb = _ALIASES.get(verb, verb)
        # RFC 2640: arguments are UTF-8; other bytes are kept as they are
        # (surrogate escapes), so any name on disk can be named.
        argument = rawArgument.decode("utf-8", "surrogateescape")
        if "\x00" in argument:
            self._error("501 NUL in argument.")
            return
        if verb not in _COMMANDS:
            self._error("500 Unknown command.")
            return
        if self.jail is None and verb not in _PRE_LOGIN:
            self._error("530 Please log in with USER and PASS.")
            return
        handler = getattr(self, "ftp_" + verb)
        try:
            handler(argument)
        except Exception:
            self.log.failure("np-ftp: {verb} failed", verb=verb)
            self.reply("451 Local error in processing.")

    def _wait(self, d: Deferred[Any]) -> None:
        """
        Read no further command until C{d} (which replies) has fired.
        """
        d.addErrback(self._ebUnexpected)
        if d.called:
            return
        discipline = self.discipline
        assert discipline is not None
        discipline.hold(COMMAND)
        d.addBoth(lambda _: discipline.release(COMMAND))

    def _ebUnexpected(self, reason: Failure) -> None:
        self.log.failure("np-ftp: unexpected error", reason)
        self.reply("451 Local error in processing.")

    def _inJail(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        assert self.jail is not None
        return self.jail.inPool(f, *args)

    def _writableJail(self) -> Jail | None:
        """
        The session's jail if it may change files, else C{None} after a 550.
        """
        assert self.jail is not None
        if not self.jail.writable:
            self._error("550 Permission denied.")
            return None
        return self.jail

    def _path(self, argument: str) -> str | None:
        """
        The virtual path C{argument} names, or C{None} after a 501 reply.
        """
        if not argument:
            self._error("501 Missing path.")
            return None
        if not listing.printable(argument):
            self._error("501 Invalid path.")
            return None
        try:
            return virtualPath(argument, self.cwd)
        except OSError as e:
            self._error(_ERRORS.get(e.errno or 0, "501 Invalid path."))
            return None

    # Login and TLS

    def _tlsOffered(self) -> bool:
        return self.factory.tls is not None

    def ftp_AUTH(self, argument: str) -> None:
        if argument.upper() not in ("TLS", "SSL", "TLS-C"):
            self._error("504 AUTH type not supported.")
        elif not self._tlsOffered():
            self._error("502 TLS not available.")
        elif self.secure:
            self._error("503 Already using TLS.")
        elif self.jail is not None:
            self._error("503 Already logged in.")
        else:
            startTLSDiscarding(
                self, self.factory.tls, b"234 Proceed with negotiation.\r\n"
            )
            self.secure = True
            self.user = None

    def ftp_PBSZ(self, argument: str) -> None:
        if not self.secure:
            self._error("503 PBSZ needs TLS: use AUTH TLS first.")
        elif argument != "0":
            self.pbsz = True
            self.reply("200 PBSZ=0")
        else:
            self.pbsz = True
            self.reply("200 PBSZ=0 successful.")

    def ftp_PROT(self, argument: str) -> None:
        level = argument.upper()
        if not self.secure:
            self._error("503 PROT needs TLS: use AUTH TLS first.")
        elif not self.pbsz:
            self._error("503 PBSZ first.")
        elif level == "P":
            self.protected = True
            self.reply("200 Protection level set to Private.")
        elif level == "C":
            if self._tlsRequired() == "all" and not self._anonymous():
                self._error("534 Data connections must be protected (PROT P).")
                return
            self.protected = False
            self.reply("200 Protection level set to Clear.")
        elif level in ("S", "E"):
            self._error("536 Protection level not supported.")
        else:
            self._error("504 Unknown protection level.")

    def ftp_CCC(self, argument: str) -> None:
        self._error("534 The control connection stays protected.")

    def _anonymous(self) -> bool:
        return self.user is not None and self.user.lower() in _ANONYMOUS

    def ftp_USER(self, argument: str) -> None:
        if self.jail is not None:
            self._error("503 Already logged in.")
            return
        if not argument or not listing.printable(argument):
            self._error("501 Syntax: USER name.")
            return
        self.user = argument
        self.userTLS = "none"
        if self._anonymous():
            if self.factory.homes.anonymousHome() is None:
                self.user = None
                self._error("530 Anonymous access is not allowed.")
                return
            self.reply("331 Anonymous login ok, send your e-mail address as password.")
            return
        if self.config.tlsRequired != "none" and not self.secure:
            self._refuseCleartext()
            return
        d = self.factory.homes.tlsRequiredFor(argument)
        d.addCallback(self._cbUserTLS, argument)
        self._wait(d)

    def _cbUserTLS(self, policy: str, user: str) -> None:
        if self._lost or self.user != user:
            return
        self.userTLS = policy
        if self._tlsRequired() != "none" and not self.secure:
            self._refuseCleartext()
            return
        self.reply("331 Password required.")

    def _refuseCleartext(self) -> None:
        # The same words whether the service or the user's entry asks:
        # nobody learns from them which users require TLS.
        self.user = None
        self.userTLS = "none"
        self._error("530 Non-anonymous sessions must use TLS: AUTH TLS first.")

    def _tlsRequired(self) -> str:
        """
        The stronger of the service's C{--tls-required} and the user's.
        """
        return max(self.config.tlsRequired, self.userTLS, key=TLS_POLICIES.index)

    def ftp_PASS(self, argument: str) -> None:
        if self.jail is not None:
            self._error("503 Already logged in.")
            return
        if self.user is None:
            self._error("503 Login with USER first.")
            return
        user = self.user
        if self._anonymous():
            home = self.factory.homes.anonymousHome()
            assert home is not None
            self._loggedIn(self.factory.homes.jail(home), None)
            return
        d = self.factory.throttle.login(
            self.factory.portal,
            UsernamePassword(
                user.encode("utf-8", "surrogateescape"),
                argument.encode("utf-8", "surrogateescape"),
            ),
            None,
            IJail,
            peer=self.transport.getPeer(),
            connection=self._attempts,
        )
        d.addCallbacks(self._cbLogin, self._ebLogin, errbackArgs=(user,))
        self._wait(d)

    def _cbLogin(self, result: tuple[Any, Jail, Callable[[], None]]) -> None:
        _, jail, logout = result
        if self._lost:
            logout()
            return
        self._loggedIn(jail, logout)

    def _loggedIn(self, jail: Jail, logout: Callable[[], None] | None) -> None:
        self.jail = jail
        self._logout = logout
        self.cwd = "/"
        self._disarm("login")
        self.log.info(
            "np-ftp: {user} logged in from {peer}",
            user=jail.home.user,
            peer=describe(self.transport.getPeer()),
        )
        self.reply("230 Login successful.")

    def _ebLogin(self, reason: Failure, user: str) -> None:
        self.user = None
        if reason.check(NoHomeError):
            self.log.warn(
                "np-ftp: {user} has no home: {why}", user=user, why=str(reason.value)
            )
            self.reply("530 Login incorrect.")
            return
        reason.trap(UnauthorizedLogin)
        self.reply("530 Login incorrect.")
        if reason.check(TooManyAttempts) or self._attempts.exhausted:
            self.reply("421 Too many login attempts, closing control connection.")
            self._close("too many login attempts")

    # Small commands

    def ftp_QUIT(self, argument: str) -> None:
        self.reply("221 Goodbye.")
        self._close("quit")

    def ftp_NOOP(self, argument: str) -> None:
        self.reply("200 NOOP ok.")

    def ftp_SYST(self, argument: str) -> None:
        self.reply("215 UNIX Type: L8")

    def ftp_ACCT(self, argument: str) -> None:
        self.reply("202 No accounts needed.")

    def ftp_REIN(self, argument: str) -> None:
        self._error("502 REIN not implemented.")

    def ftp_ALLO(self, argument: str) -> None:
        self.reply("202 No storage allocation needed.")

    def ftp_MODE(self, argument: str) -> None:
        if argument.upper() == "S":
            self.reply("200 Mode set to S.")
        else:
            self._error("504 Only MODE S is supported.")

    def ftp_STRU(self, argument: str) -> None:
        if argument.upper() == "F":
            self.reply("200 Structure set to F.")
        else:
            self._error("504 Only STRU F is supported.")

    def ftp_TYPE(self, argument: str) -> None:
        kind = argument.upper().split()
        if kind in (["A"], ["A", "N"]):
            self.binary = False
            self.reply("200 Type set to A.")
        elif kind in (["I"], ["L", "8"]):
            self.binary = True
            self.reply("200 Type set to I.")
        else:
            self._error("504 Unsupported type.")

    def ftp_HELP(self, argument: str) -> None:
        lines = ["The following commands are recognized:"]
        for i in range(0, len(_COMMANDS), 12):
            lines.append(" ".join(_COMMANDS[i : i + 12]))
        self.replyLines("214", lines, "Help OK.")

    def ftp_FEAT(self, argument: str) -> None:
        features = [
            "Features:",
            "EPRT",
            "EPSV",
            "MDTM",
            "MFF " + listing.featSettableFacts(),
            "MFMT",
            "MLST " + listing.featFacts(self.facts),
            "REST STREAM",
            "SIZE",
            "TVFS",
            "UTF8",
        ]
        if self._tlsOffered():
            features[1:1] = ["AUTH TLS"]
            features += ["PBSZ", "PROT"]
        self.replyLines("211", features, "End")

    def ftp_OPTS(self, argument: str) -> None:
        option, _, value = argument.partition(" ")
        option = option.upper()
        if option == "UTF8" and value.upper() in ("ON", ""):
            self.reply("200 Always in UTF8 mode.")
        elif option == "UTF8":
            self._error("504 UTF8 cannot be turned off.")
        elif option == "MLST":
            self.facts = listing.selectFacts(value)
            self.reply("200 MLST OPTS " + "".join(f + ";" for f in self.facts))
        else:
            self._error("501 Unknown option.")

    def ftp_PWD(self, argument: str) -> None:
        self.reply(f"257 {quotePath(self.cwd)} is the current directory.")

    def ftp_CWD(self, argument: str) -> None:
        path = self._path(argument)
        if path is None:
            return
        d = self._inJail(self._checkDirectory, path)
        d.addCallback(lambda _: self._changed(path))
        d.addErrback(lambda reason: self.reply(_reply(reason)))
        self._wait(d)

    def _checkDirectory(self, path: str) -> None:
        assert self.jail is not None
        if not stat.S_ISDIR(self.jail.stat(path).st_mode):
            raise OSError(errno.ENOTDIR, "not a directory")

    def _changed(self, path: str) -> None:
        self.cwd = path
        self.reply(f"250 Directory changed to {path}.")

    def ftp_CDUP(self, argument: str) -> None:
        self.ftp_CWD("..")

    def _simple(
        self, f: Callable[..., Any], args: tuple[Any, ...], ok: Callable[[Any], str]
    ) -> None:
        d = self._inJail(f, *args)
        d.addCallbacks(
            lambda result: self.reply(ok(result)),
            lambda reason: self.reply(_reply(reason)),
        )
        self._wait(d)

    def ftp_MKD(self, argument: str) -> None:
        path = self._path(argument)
        if path is not None:
            assert self.jail is not None
            self._simple(
                self.jail.makeDirectory,
                (path,),
                lambda made: f"257 {quotePath(made)} created.",
            )

    def ftp_RMD(self, argument: str) -> None:
        path = self._path(argument)
        if path is not None:
            assert self.jail is not None
            self._simple(
                self.jail.removeDirectory, (path,), lambda _: "250 Directory removed."
            )

    def ftp_DELE(self, argument: str) -> None:
        path = self._path(argument)
        if path is not None:
            assert self.jail is not None
            self._simple(self.jail.removeFile, (path,), lambda _: "250 File removed.")

    def ftp_RNFR(self, argument: str) -> None:
        path = self._path(argument)
        if path is None:
            return
        jail = self._writableJail()
        if jail is None:
            return

        def ready(_: object) -> str:
            self.renameFrom = path
            return "350 Ready for RNTO."

        self._simple(jail.lstat, (path,), ready)

    def ftp_RNTO(self, argument: str) -> None:
        source, self.renameFrom = self.renameFrom, None
        if source is None:
            self._error("503 RNFR first.")
            return
        path = self._path(argument)
        if path is not None:
            assert self.jail is not None
            self._simple(self.jail.rename, (source, path), lambda _: "250 Renamed.")

    def ftp_SIZE(self, argument: str) -> None:
        path = self._path(argument)
        if path is None:
            return
        assert self.jail is not None

        def size(st: os.stat_result) -> str:
            if not stat.S_ISREG(st.st_mode):
                return "550 Not a regular file."
            return f"213 {st.st_size}"

        self._simple(self.jail.stat, (path,), size)

    def ftp_MDTM(self, argument: str) -> None:
        path = self._path(argument)
        if path is None:
            return
        assert self.jail is not None

        def modified(st: os.stat_result) -> str:
            if not stat.S_ISREG(st.st_mode):
                return "550 Not a regular file."
            return f"213 {listing.timestamp(st.st_mtime)}"

        self._simple(self.jail.stat, (path,), modified)

    def ftp_MFMT(self, argument: str) -> None:
        value, _, name = argument.partition(" ")
        if not name:
            self._error("501 Syntax: MFMT YYYYMMDDHHMMSS path")
            return
        if listing.parseTime(value) is None:
            self._error("501 Bad time value.")
            return
        self._modifyFacts({"modify": value}, name)

    def ftp_MFF(self, argument: str) -> None:
        parsed = listing.parseSettableFacts(argument)
        if isinstance(parsed, str):
            self._error(parsed)
            return
        facts, name = parsed
        self._modifyFacts(facts, name)

    def _modifyFacts(self, facts: dict[str, str], name: str) -> None:
        """
        Set C{facts} (as L{listing.parseSettableFacts} gives them) of the
        file C{name}: C{213} with the facts and the name as given, as
        draft-somers-ftp-mfxx's C{MFMT} and C{MFF} answer.
        """
        path = self._path(name)
        if path is None:
            return
        jail = self._writableJail()
        if jail is None:
            return

        def modify() -> None:
            if "UNIX.mode" in facts:
                jail.setMode(path, int(facts["UNIX.mode"], 8))
            if "modify" in facts:
                mtime = listing.parseTime(facts["modify"])
                assert mtime is not None
                jail.setTimes(path, jail.stat(path).st_atime, mtime)

        if set(facts) == {"modify"}:
            done = f"213 Modify={facts['modify']}; {name}"
        else:
            done = "213 " + "".join(f"{k}={v};" for k, v in facts.items()) + " " + name
        self._simple(modify, (), lambda _: done)

    def ftp_REST(self, argument: str) -> None:
        if not argument.isdigit():
            self._error("501 REST needs a byte offset.")
            return
        self.restart = int(argument)
        self.reply(f"350 Restarting at {self.restart}.")

    def ftp_MLST(self, argument: str) -> None:
        path = virtualPath(argument, self.cwd) if argument else self.cwd
        if not listing.printable(path):
            self._error("501 Invalid path.")
            return
        assert self.jail is not None
        jail = self.jail

        def facts(st: os.stat_result) -> None:
            line = listing.factsLine(path, st, writable=jail.writable, facts=self.facts)
            self.replyLines("250", ["Listing " + path, line], "End.")

        d = self._inJail(jail.stat, path)
        d.addCallbacks(facts, lambda reason: self.reply(_reply(reason)))
        self._wait(d)

    def ftp_STAT(self, argument: str) -> None:
        if self._transfer is not None:
            self.reply("213 Status: transfer in progress.")
            return
        if not argument:
            lines = [
                "np-ftp status:",
                f"Connected from {describe(self.transport.getPeer())}",
                f"Logged in as {self.jail.home.user}" if self.jail else "Not logged in",
                f"TYPE: {'BINARY' if self.binary else 'ASCII'}, "
                f"PROT: {'P' if self.protected else 'C'}",
            ]
            self.replyLines("211", lines, "End of status.")
            return
        if self.jail is None:
            self._error("530 Please log in with USER and PASS.")
            return
        path = self._path(_listArgument(argument) or ".")
        if path is None:
            return

        def send(text: bytes) -> None:
            lines = text.decode("utf-8", "surrogateescape").splitlines()
            self.replyLines("213", ["Status of " + path, *lines], "End of status.")

        d = self._inJail(self._listText, path, "LIST")
        d.addCallbacks(send, lambda reason: self.reply(_reply(reason)))
        self._wait(d)

    # Data connections

    def _dataTLS(self) -> Callable[[], Any] | None:
        tls = self.factory.tls
        if tls is None:
            return None

        def wrap() -> Any:
            if not self.protected:
                return None
            return lambda factory: tls.wrapDataFactory(factory, self.factory.reactor)

        return wrap

    def _closeData(self, *, abort: bool) -> None:
        port, self._port = self._port, None
        if port is not None:
            port.close()
        channel, self._channel = self._channel, None
        if channel is not None:
            if abort:
                channel.abort()
            else:
                channel.close()

    def ftp_PASV(self, argument: str) -> None:
        self._passive(extended=False, argument=argument)

    def ftp_EPSV(self, argument: str) -> None:
        if argument.upper() == "ALL":
            self.epsvAll = True
            self.reply("200 EPSV ALL ok.")
            return
        self._passive(extended=True, argument=argument)

    def _passive(self, *, extended: bool, argument: str) -> None:
        if self.epsvAll and not extended:
            self._error("503 PASV not allowed after EPSV ALL.")
            return
        host = self.transport.getHost().host
        family = "2" if ":" in host and not _mapped(host) else "1"
        if extended and argument and argument != family:
            self._error(f"522 Network protocol not supported, use ({family}).")
            return
        self._closeData(abort=True)
        try:
            port = PassivePort(
                self.factory.reactor,
                host,
                self.transport.getPeer().host,
                wrap=self._dataTLS(),
                ports=self._passiveRange(),
                timeout=self.config.dataTimeout,
            )
        except CannotListenError:
            self.log.warn(
                "np-ftp: no free passive port for {peer}",
                peer=describe(self.transport.getPeer()),
            )
            self.reply("425 No passive port free, try again later.")
            return
        self._port = port
        if extended:
            self.reply(f"229 Entering Extended Passive Mode (|||{port.port}|).")
            return
        shown = self.config.masquerade or (_mapped(host) or host)
        if ":" in shown:
            port.close()
            self._port = None
            self._error("425 PASV needs IPv4: use EPSV.")
            return
        numbers = [*shown.split("."), str(port.port >> 8), str(port.port & 255)]
        self.reply(f"227 Entering Passive Mode ({','.join(numbers)}).")

    def _passiveRange(self) -> tuple[int, int] | None:
        return self.factory.passivePorts

    def ftp_PORT(self, argument: str) -> None:
        try:
            numbers = [int(n) for n in argument.split(",")]
            if len(numbers) != 6 or not all(0 <= n <= 255 for n in numbers):
                raise ValueError
        except ValueError:
            self._error("501 Syntax: PORT h1,h2,h3,h4,p1,p2.")
            return
        host = ".".join(str(n) for n in numbers[:4])
        self._active(host, numbers[4] << 8 | numbers[5], "PORT")

    def ftp_EPRT(self, argument: str) -> None:
        if len(argument) < 2:
            self._error("501 Syntax: EPRT |proto|address|port|.")
            return
        parts = argument[1:].split(argument[0])
        try:
            proto, host, number = parts[0], parts[1], int(parts[2])
            if proto not in ("1", "2") or len(parts) != 4 or not 0 < number < 65536:
                raise ValueError
            address = ipaddress.ip_address(host)
            if (proto == "1") != (address.version == 4):
                raise ValueError
        except (ValueError, IndexError):
            self._error("501 Syntax: EPRT |proto|address|port|.")
            return
        self._active(host, number, "EPRT")

    def _active(self, host: str, number: int, verb: str) -> None:
        if self.epsvAll:
            self._error(f"503 {verb} not allowed after EPSV ALL.")
            return
        peer = self.transport.getPeer().host
        if not sameHost(host, peer) or number < 1024:
            self.log.warn(
                "np-ftp: refused {verb} to {host} port {port} from {peer} "
                "(only the client's own address, ports >= 1024)",
                verb=verb,
                host=host,
                port=number,
                peer=describe(self.transport.getPeer()),
            )
            self._error(f"504 {verb} refused: only your own address and ports >= 1024.")
            return
        self._closeData(abort=True)
        self._port = ActivePort(
            self.factory.reactor,
            peer,
            number,
            bindHost=self.transport.getHost().host,
            wrap=self._dataTLS(),
            timeout=self.config.dataTimeout,
        )
        self.reply(f"200 {verb} command successful.")

    # Transfers

    def _transferAllowed(self) -> bool:
        if self._port is None:
            self._error("425 Use PORT, EPRT, PASV or EPSV first.")
            return False
        if (
            self._tlsRequired() == "all"
            and not self.protected
            and not self._anonymous()
        ):
            self._error("522 Data connections must be protected: PROT P first.")
            return False
        return True

    def ftp_RETR(self, argument: str) -> None:
        path = self._path(argument)
        if path is None or not self._transferAllowed():
            return
        offset, self.restart = self.restart, 0
        assert self.jail is not None
        jail = self.jail

        def opened(file: Any) -> Deferred[Any]:
            size = file.stat().st_size
            if offset:
                file.seek(offset)

            def read() -> Deferred[bytes]:
                return jail.inPool(file.read, CHUNK)

            convert = None if self.binary else ToNetwork()
            mode = "BINARY" if self.binary else "ASCII"

            def send(channel: DataChannel) -> Deferred[int]:
                def reads() -> Deferred[int]:
                    return Sender(channel, read, convert, self._progress).start()

                if not self.binary or isSecure(channel.transport):
                    return reads()
                # In the clear and unchanged: the kernel copies it.
                return FileSender(
                    channel,
                    file,
                    offset,
                    size,
                    jail.inPool,
                    self._progress,
                    fallback=reads,
                ).start()

            return self._run(
                f"150 Opening {mode} mode data connection for {argument} "
                f"({size} bytes).",
                send,
                close=lambda: jail.inPool(file.close),
            )

        self._open(jail.openRead, (path,), opened)

    def ftp_STOR(self, argument: str) -> None:
        self._store(argument, append=False)

    def ftp_APPE(self, argument: str) -> None:
        self._store(argument, append=True)

    def _store(self, argument: str, *, append: bool) -> None:
        path = self._path(argument)
        if path is None or not self._transferAllowed():
            return
        offset, self.restart = self.restart, 0
        jail = self._writableJail()
        if jail is None:
            return
        self._open(
            lambda: jail.openWrite(path, append=append, offset=offset or None),
            (),
            lambda file: self._receive(file, f"150 Ok to send data for {argument}."),
        )

    def ftp_STOU(self, argument: str) -> None:
        if not self._transferAllowed():
            return
        jail = self._writableJail()
        if jail is None:
            return
        base = argument or "file"
        if not listing.printable(base) or "/" in base:
            self._error("501 Invalid name.")
            return
        cwd = self.cwd

        def unique() -> tuple[str, Any]:
            for i in range(UNIQUE_TRIES):
                name = base if i == 0 else f"{base}.{i}"
                try:
                    return name, jail.openWrite(name, cwd, exclusive=True)
                except FileExistsError:
                    continue
            raise OSError(errno.EEXIST, "no unique name")

        self._open(
            unique, (), lambda made: self._receive(made[1], f"150 FILE: {made[0]}")
        )

    def _receive(self, file: Any, preliminary: str) -> Deferred[Any]:
        assert self.jail is not None
        jail = self.jail

        def write(data: bytes) -> Deferred[Any]:
            return jail.inPool(file.write, data)

        convert = None if self.binary else FromNetwork()
        return self._run(
            preliminary,
            lambda channel: Receiver(channel, write, convert, self._progress).start(),
            close=lambda: jail.inPool(file.close),
        )

    def ftp_LIST(self, argument: str) -> None:
        self._listing(argument, "LIST")

    def ftp_NLST(self, argument: str) -> None:
        self._listing(argument, "NLST")

    def ftp_MLSD(self, argument: str) -> None:
        self._listing(argument, "MLSD")

    def _listing(self, argument: str, kind: str) -> None:
        target = _listArgument(argument) if kind != "MLSD" else argument
        path = self._path(target or ".")
        if path is None or not self._transferAllowed():
            return

        def send(text: bytes) -> Deferred[Any]:
            return self._run(
                "150 Here comes the directory listing.",
                lambda channel: Sender(
                    channel, memoryReader(text), None, self._progress
                ).start(),
            )

        self._open(self._listText, (path, kind), send)

    def _listText(self, path: str, kind: str) -> bytes:
        """
        The listing of C{path} (blocking).
        """
        assert self.jail is not None
        jail = self.jail
        limit = self.config.maxListEntries
        st = jail.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            if kind == "MLSD":
                raise OSError(errno.ENOTDIR, "not a directory")
            name = path.rsplit("/", 1)[-1]
            entries = [(name, st)]
            truncated = False
        else:
            entries, truncated = jail.listDirectory(path, limit=limit)
        if truncated:
            self.log.info(
                "np-ftp: listing of {path} cut at {limit} entries",
                path=path,
                limit=limit,
            )
        now = time.time()
        lines = []
        if kind == "MLSD":
            lines.append(
                listing.factsLine(
                    ".", st, writable=jail.writable, facts=self.facts, role="cdir"
                )
            )
        for name, entry in entries:
            if not listing.printable(name):
                continue
            if kind == "NLST":
                lines.append(name)
            elif kind == "MLSD":
                lines.append(
                    listing.factsLine(
                        name, entry, writable=jail.writable, facts=self.facts
                    )
                )
            else:
                lines.append(listing.listLine(name, entry, now))
        return "".join(line + "\r\n" for line in lines).encode(
            "utf-8", "surrogateescape"
        )

    def _open(
        self,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        then: Callable[[Any], Deferred[Any] | None],
    ) -> None:
        """
        Run C{f(*args)} in the pool (opening a file, making a listing), then
        the transfer C{then} makes of its result; a failure replies with its
        error and closes the data connection waiting.
        """
        d = self._inJail(f, *args)

        def failed(reason: Failure) -> None:
            self._closeData(abort=True)
            self.reply(_reply(reason))

        # The transfer itself does not hold reading: ABOR and STAT must get
        # through while it runs (see lineReceived).
        d.addCallbacks(lambda result: _ignore(then(result)), failed)
        self._wait(d)

    def _run(
        self,
        preliminary: str,
        transfer: Callable[[DataChannel], Deferred[int]],
        close: Callable[[], Deferred[Any]] | None = None,
    ) -> Deferred[Any]:
        """
        Reply C{preliminary}, get the data connection, check its TLS, run
        C{transfer} over it, close it and reply with the outcome.
        """
        port = self._port
        assert port is not None
        self._port = None
        self.reply(preliminary)
        state: dict[str, Any] = {}
        self._transfer = state
        d = port.connect()

        def connected(channel: DataChannel) -> Deferred[Any]:
            self._channel = channel
            state["channel"] = channel
            if isSecure(channel.transport):
                return channel.handshaken.addCallback(
                    lambda _: self._checkReuse(channel)
                )
            return succeed(channel)

        def run(channel: DataChannel) -> Deferred[Any]:
            return transfer(channel).addCallback(
                lambda count: self._finishData(channel, count)
            )

        d.addCallback(connected)
        d.addCallback(run)
        if close is not None:
            d.addBoth(lambda result: close().addBoth(lambda _: result))
        d.addCallbacks(self._cbTransferred, self._ebTransfer, errbackArgs=(state,))
        d.addBoth(self._transferEnded)
        return d

    def _progress(self) -> None:
        # A transfer that moves keeps the session from its idle deadline.
        self._arm("idle", self.config.idleTimeout)

    def _checkReuse(self, channel: DataChannel) -> DataChannel:
        if self.config.sessionReuse == "off":
            return channel
        try:
            reused = resumes(channel.transport.getHandle(), self.transport.getHandle())
        except Exception:
            reused = False
        if reused:
            return channel
        if self.config.sessionReuse == "optional":
            return channel
        self.log.warn(
            "np-ftp: data connection from {peer} did not resume the control "
            "connection's TLS session; refused",
            peer=describe(channel.transport.getPeer()),
        )
        raise _NoReuseError()

    def _finishData(self, channel: DataChannel, count: int) -> Deferred[int]:
        if channel.gone:
            return succeed(count)
        channel.close()
        return channel.lost.addCallback(lambda _: count)

    def _cbTransferred(self, count: int) -> None:
        if self._transfer is not None and self._transfer.get("aborted"):
            self.reply("226 ABOR successful.")
            return
        self.reply("226 Transfer complete.")

    def _ebTransfer(self, reason: Failure, state: dict[str, Any]) -> None:
        self.log.info(
            "np-ftp: transfer for {peer} ended early: {why}",
            peer=describe(self.transport.getPeer()),
            why=f"{type(reason.value).__name__}: {reason.getErrorMessage()}",
        )
        channel = state.get("channel")
        if channel is not None:
            if reason.check(_NoReuseError):
                # Let the client finish its handshake and see the refusal.
                channel.close()
            else:
                channel.abort()
        if state.get("aborted"):
            self.reply("426 Connection closed; transfer aborted.")
            self.reply("226 ABOR successful.")
        elif reason.check(_NoReuseError):
            self.reply(
                "522 Data connection must resume the control connection's TLS session."
            )
        elif reason.check(CancelledError) or channel is None:
            self.reply("425 Can't open data connection.")
        elif isinstance(reason.value, OSError) and reason.value.errno in _ERRORS:
            self.reply(_reply(reason))
        else:
            self.reply("426 Connection closed; transfer aborted.")

    def _transferEnded(self, result: object) -> None:
        self._transfer = None
        self._channel = None
        if self._lost:
            return
        self._arm("idle", self.config.idleTimeout)
        assert self.discipline is not None
        queued, self._queued = self._queued, deque()
        self.discipline.release("queue")
        for line in queued:
            if self._lost or self.discipline.closing:
                return
            self.lineReceived(line)

    def ftp_ABOR(self, argument: str) -> None:
        state = self._transfer
        if state is None:
            self._closeData(abort=True)
            self.reply("225 No transfer to abort.")
            return
        state["aborted"] = True
        channel = state.get("channel")
        port, self._port = self._port, None
        if port is not None:
            port.close()
        if channel is not None:
            channel.abort()
        else:
            # Still waiting for the data connection: stop waiting.
            self._closeData(abort=True)


class _NoReuseError(Exception):
    """
    A protected data connection did not resume the control connection's TLS
    session.
    """


def _ignore(result: object) -> None:
    return None


def _telnet(line: bytes) -> bytes:
    """
    C{line} without Telnet commands (IAC IP, IAC DM... before ABOR), an
    escaped IAC kept once.
    """
    if b"\xff" not in line:
        return line
    out = bytearray()
    i = 0
    while i < len(line):
        byte = line[i]
        if byte == 0xFF and i + 1 < len(line):
            if line[i + 1] == 0xFF:
                out.append(0xFF)
            i += 2
            continue
        if byte == 0xF2:  # the Data Mark sent urgent, without its IAC
            i += 1
            continue
        out.append(byte)
        i += 1
    return bytes(out)


def _listArgument(argument: str) -> str:
    """
    LIST and NLST's path, without the C{ls} options clients add (C{-la}).
    """
    words = argument.split(" ")
    while words and words[0].startswith("-"):
        words.pop(0)
    return " ".join(words)


def _mapped(host: str) -> str | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return None


class FTPFactory(Factory):
    """
    Builds np-ftp sessions sharing one user store, portal, throttle and TLS.

    @ivar homes: the L{netplugins.homes.HomeStore} (anonymous access).
    @ivar portal: logs users in for L{IJail}.
    @ivar tls: the L{netplugins.ftp.tls.FTPServerTLS}, or C{None}: no FTPS.
    @ivar passivePorts: this process's share of the passive range.
    """

    protocol = FTPServer  # type: ignore[assignment]

    def __init__(
        self,
        homes: Any,
        portal: Any,
        *,
        config: FTPConfig | None = None,
        tls: Any = None,
        throttle: LoginThrottle | None = None,
        passivePorts: tuple[int, int] | None = None,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.homes = homes
        self.portal = portal
        self.config = config if config is not None else FTPConfig()
        self.tls = tls
        self.reactor = reactor
        self.throttle = throttle or LoginThrottle(reactor)
        self.passivePorts = (
            passivePorts if passivePorts is not None else self.config.passivePorts
        )
