"""
np-ssh's telnet front (C{--telnet ENDPOINT}), for the book's telnet
examples: the built-in shell behind a C{login:} / C{Password:} dialogue,
with the same checkers, login throttle, login window and user store as
SSH.  Passwords cross telnet in the clear, so the endpoint must be a
loopback address, a UNIX socket, or wrapped in TLS (L{checkTelnetEndpoint}).
The terminal type comes from the client's TTYPE; no other client
variable (NEW-ENVIRON) is taken.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from twisted.conch.interfaces import IConchUser
from twisted.conch.telnet import ECHO, SGA, TelnetProtocol, TelnetTransport
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from netplugins.addresses import describe
from netplugins.session import Discipline, cancelCall
from netplugins.ssh.session import JailDirectory, SSHUser
from netplugins.ssh.shell import MAX_LINE, InteractiveShell, Shell

#: The terminal type option (RFC 1091), and its subnegotiation's SEND and IS.
TTYPE = bytes([24])
TTYPE_SEND = b"\x01"
TTYPE_IS = b"\x00"

_INTERFACE = re.compile(r"(?:^|:)interface=((?:\\:|[^:])*)")


def checkTelnetEndpoint(description: str) -> str:
    """
    Accept a telnet endpoint only on a loopback address, a UNIX socket or
    TLS (C{ssl:}, C{tls:}).

    @raise ValueError: otherwise, with one line.
    """
    kind = description.split(":", 1)[0]
    if kind in ("ssl", "tls", "unix"):
        return description
    if kind in ("tcp", "tcp6"):
        match = _INTERFACE.search(description)
        if match is not None:
            try:
                address = ipaddress.ip_address(match.group(1).replace("\\:", ":"))
            except ValueError:
                address = None
            if address is not None and address.is_loopback:
                return description
    raise ValueError(
        f"--telnet {description!r}: passwords cross telnet in the clear; listen "
        "on a loopback interface (tcp:PORT:interface=127.0.0.1), a unix: socket "
        "or ssl:/tls:"
    )


class TelnetLogin(TelnetProtocol):
    """
    One telnet session: the login dialogue, then the built-in shell.
    """

    log = Logger()
    transport: Any
    factory: Any

    def __init__(self) -> None:
        self.term: str | None = None
        self.buffer = b""
        self.user: bytes | None = None
        self.checking = False
        self.afterCR = False
        self.shell: InteractiveShell | None = None
        self._loginCall: Any = None
        self.discipline: Discipline | None = None

    def connectionMade(self) -> None:
        factory = self.factory
        self.attempts = factory.throttle.connection()
        self._loginCall = factory.reactor.callLater(
            factory.loginTimeout, self._loginExpired
        )
        tcp = self.transport.transport
        self.discipline = Discipline(
            tcp,
            factory.reactor,
            pause=tcp.pauseProducing,
            resume=tcp.resumeProducing,
            grace=factory.closeGrace,
        )
        self.transport.do(TTYPE).addCallbacks(self._askTerminal, lambda _: None)
        self.write(b"login: ")

    def _askTerminal(self, _: object) -> None:
        self.transport.requestNegotiation(TTYPE, TTYPE_SEND)

    def connectionLost(self, reason: Any = None) -> None:
        cancelCall(self._loginCall)
        if self.shell is not None:
            self.shell.stop()
        if self.discipline is not None:
            self.discipline.lost()

    def _close(self, why: str) -> None:
        if self.discipline is not None:
            self.discipline.close(why)

    def _loginExpired(self) -> None:
        self._loginCall = None
        self.write(b"\r\nLogin timed out\r\n")
        self._close("telnet login window over")

    # Options

    def enableRemote(self, option: bytes) -> bool:
        return option == TTYPE

    def enableLocal(self, option: bytes) -> bool:
        return option in (ECHO, SGA)

    def disableLocal(self, option: bytes) -> None:
        pass

    def disableRemote(self, option: bytes) -> None:
        pass

    def unhandledSubnegotiation(self, command: bytes, data: list[bytes]) -> None:
        payload = b"".join(data)
        if command == TTYPE and payload[:1] == TTYPE_IS:
            term = payload[1:65].decode("ascii", "replace")
            self.term = "".join(c for c in term if c.isprintable()) or None

    # Input

    def dataReceived(self, data: bytes) -> None:
        if self.shell is not None:
            self.shell.dataReceived(data)
            return
        self.buffer += data
        while not self.checking:
            if self.afterCR and self.buffer[:1] in (b"\n", b"\0"):
                # CR LF and CR NUL end one line, even split across reads.
                self.buffer = self.buffer[1:]
            if self.buffer:
                self.afterCR = False
            ends = [
                i for i in (self.buffer.find(b"\r"), self.buffer.find(b"\n")) if i >= 0
            ]
            if not ends:
                if len(self.buffer) > MAX_LINE:
                    self._close("telnet login line too long")
                return
            end = min(ends)
            self.afterCR = self.buffer[end : end + 1] == b"\r"
            line, self.buffer = self.buffer[:end], self.buffer[end + 1 :]
            self._line(line)

    def _line(self, line: bytes) -> None:
        if self.user is None:
            if not line:
                self.write(b"login: ")
                return
            self.user = line
            self.transport.will(ECHO).addErrback(lambda _: None)
            self.write(b"Password: ")
            return
        user, self.user = self.user, None
        self.transport.wont(ECHO).addErrback(lambda _: None)
        self.write(b"\r\n")
        self.checking = True
        factory = self.factory
        d = factory.throttle.attempt(
            lambda: factory.portal.login(
                UsernamePassword(user, line), None, IConchUser
            ),
            username=user,
            peer=self.transport.getPeer(),
            connection=self.attempts,
        )
        d.addCallbacks(self._loggedIn, self._failed)

    def _failed(self, reason: Any) -> None:
        self.checking = False
        if not reason.check(UnauthorizedLogin):
            self.log.failure("telnet login failed", reason)
        self.log.info(
            "failed telnet login from {peer}", peer=describe(self.transport.getPeer())
        )
        self.write(b"Login incorrect\r\n")
        if self.attempts.exhausted:
            self._close("telnet login attempts used")
            return
        self.write(b"login: ")
        self.dataReceived(b"")

    def _loggedIn(self, result: tuple[Any, SSHUser, Any]) -> None:
        _, avatar, logout = result
        cancelCall(self._loginCall)
        self._loginCall = None
        self.logout = logout
        shell = Shell(
            avatar.name,
            self,
            self.factory.reactor,
            JailDirectory(avatar.jail) if avatar.jail is not None else None,
            self.term,
        )
        self.shell = InteractiveShell(shell, True, self._ended, echo=False)
        self.shell.start()
        pending, self.buffer = self.buffer, b""
        if pending:
            self.shell.dataReceived(pending)

    def _ended(self, status: int) -> None:
        self._close("telnet shell ended")

    # Output, for the shell

    def write(self, data: bytes) -> None:
        # Conch's telnet transport sends each LF as CR LF already.
        self.transport.write(data.replace(b"\r\n", b"\n"))

    def writeError(self, data: bytes) -> None:
        self.write(data)


class LineTelnetTransport(TelnetTransport):
    """
    Conch's telnet transport, but a CR ends a line at once: conch holds a
    CR until the next byte says whether it is CR LF or CR NUL, and
    telnetlib (the book's telnet_login.py) sends a bare CR and waits for
    the answer.  A LF or NUL arriving next is then dropped.
    """

    _afterCR = False

    def dataReceived(self, data: bytes) -> None:
        if self._afterCR and data:
            self._afterCR = False
            if data[:1] in (b"\n", b"\0"):
                data = data[1:]
        super().dataReceived(data)
        if self.state == "newline":
            self.state = "data"
            self._afterCR = True
            self.applicationDataReceived(b"\r")


class TelnetFactory(Factory):
    """
    Telnet sessions sharing the SSH service's portal, throttle and window.
    """

    def __init__(
        self,
        portal: Any,
        throttle: Any,
        *,
        loginTimeout: float,
        closeGrace: float,
        reactor: Any,
    ) -> None:
        self.portal = portal
        self.throttle = throttle
        self.loginTimeout = loginTimeout
        self.closeGrace = closeGrace
        self.reactor = reactor

    def buildProtocol(self, addr: Any) -> TelnetTransport:
        transport = LineTelnetTransport(TelnetLogin)
        transport.factory = self
        return transport
