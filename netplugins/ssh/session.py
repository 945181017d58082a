"""
What a logged-in np-ssh user may do: session channels only (no port, agent
or X11 forwarding), each running the built-in shell (C{--shell builtin}),
the operator's forced command (C{--force-command}, OpenSSH's ForceCommand:
C{SSH_ORIGINAL_COMMAND} holds what the client asked for) or the C{sftp}
subsystem in the user's home.  Shell and exec are refused by default.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from attrs import frozen
from twisted.conch.avatar import ConchUser
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import connection
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.transport import DISCONNECT_PROTOCOL_ERROR
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from netplugins.homes import HomeStore, Jail, NoHomeError
from netplugins.ssh.shell import InteractiveShell, Shell

#: Channels one connection may have open at once (OpenSSH's MaxSessions).
MAX_CHANNELS = 10

#: Environment of a forced command, besides the user's variables.
FORCED_PATH = "/usr/local/bin:/usr/bin:/bin"


@frozen
class SessionPolicy:
    """
    What sessions may run: C{shell} is C{"builtin"} or C{"none"};
    C{forceCommand} replaces every shell and exec request; C{hardlinks}
    offers SFTP's hardlink@openssh.com.
    """

    shell: str = "none"
    forceCommand: str | None = None
    sftp: bool = True
    hardlinks: bool = False


class SessionConnection(connection.SSHConnection):
    """
    Conch's ssh-connection service with at most L{MAX_CHANNELS} channels
    open at once: one more is refused as OpenSSH's MaxSessions refuses it.
    """

    transport: Any

    def ssh_CHANNEL_OPEN(self, packet: bytes) -> None:
        if len(self.channels) >= MAX_CHANNELS:
            try:
                (senderChannel,) = struct.unpack(">L", getNS(packet)[1][:4])
            except Exception:
                self.transport.sendDisconnect(
                    DISCONNECT_PROTOCOL_ERROR, b"bad CHANNEL_OPEN"
                )
                return
            self.transport.sendPacket(
                connection.MSG_CHANNEL_OPEN_FAILURE,
                struct.pack(">2L", senderChannel, connection.OPEN_RESOURCE_SHORTAGE)
                + NS(b"too many channels")
                + NS(b""),
            )
            return
        super().ssh_CHANNEL_OPEN(packet)

    def adjustWindow(self, channel: Any, bytesToAdd: int) -> None:
        # Conch reopens a channel's window as data arrives, whether or not
        # the channel consumed it: a channel that holds input keeps the
        # window closed until it takes it (SessionChannel.releaseWindow).
        if isinstance(channel, SessionChannel) and channel.holdsInput():
            channel.heldWindow += bytesToAdd
            return
        super().adjustWindow(channel, bytesToAdd)


class SSHUser(ConchUser):
    """
    A logged-in user: session channels only (at most L{MAX_CHANNELS}, see
    L{SessionConnection}).
    """

    def __init__(
        self, name: str, jail: Jail | None, policy: SessionPolicy, reactor: Any
    ):
        super().__init__()
        self.name = name
        self.jail = jail
        self.policy = policy
        self.reactor = reactor
        self.channelLookup[b"session"] = SessionChannel

    def logout(self) -> None:
        """
        The connection ended; channels have closed already.
        """


@implementer(IRealm)
class SSHRealm:
    """
    Makes an L{SSHUser} for each login, with the jail of the user's home.
    """

    log = Logger()

    def __init__(self, store: HomeStore | None, policy: SessionPolicy, reactor: Any):
        self.store = store
        self.policy = policy
        self.reactor = reactor

    def requestAvatar(
        self, avatarId: Any, mind: Any, *interfaces: Any
    ) -> Deferred[Any]:
        if IConchUser not in interfaces:
            raise NotImplementedError("np-ssh serves SSH users only")
        name = (
            avatarId.decode("utf-8", "replace")
            if isinstance(avatarId, bytes)
            else str(avatarId)
        )
        jail: Deferred[Any] = (
            self.store.jailFor(name) if self.store is not None else succeed(None)
        )

        def made(jail: Jail | None) -> tuple[Any, SSHUser, Any]:
            user = SSHUser(name, jail, self.policy, self.reactor)
            return IConchUser, user, user.logout

        def noHome(reason: Any) -> None:
            reason.trap(NoHomeError)
            self.log.warn(
                "SSH login for {user}: {why}", user=name, why=reason.getErrorMessage()
            )
            raise UnauthorizedLogin("no home")

        return jail.addCallbacks(made, noHome)


class JailDirectory:
    """
    The built-in shell's C{ls}: names in the user's jail.
    """

    def __init__(self, jail: Jail) -> None:
        self.jail = jail

    def list(self, path: str) -> Deferred[list[str]]:
        def names(result: tuple[list[tuple[str, Any]], bool]) -> list[str]:
            return [name for name, _ in result[0] if not name.startswith(".")]

        d = self.jail.inPool(self.jail.listDirectory, path, "/")
        return d.addCallback(names)


class _ChannelTransport:
    """
    A channel seen as a transport by a protocol (the SFTP server).
    """

    def __init__(self, channel: SessionChannel) -> None:
        self.channel = channel

    def write(self, data: bytes) -> None:
        self.channel.write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.channel.write(b"".join(data))

    def loseConnection(self) -> None:
        self.channel.loseConnection()

    def getPeer(self) -> Any:
        return self.channel.conn.transport.getPeer()

    def getHost(self) -> Any:
        return self.channel.conn.transport.getHost()


@implementer(IPushProducer)
class _Forced(ProcessProtocol):
    """
    A forced command's process; the producer of its standard input, paused
    while the program does not read it (then the channel's window stays
    closed).
    """

    inputPaused = False

    def __init__(self, channel: SessionChannel) -> None:
        self.channel = channel

    def pauseProducing(self) -> None:
        self.inputPaused = True

    def resumeProducing(self) -> None:
        self.inputPaused = False
        self.channel.releaseWindow()

    def stopProducing(self) -> None:
        self.inputPaused = True

    def outReceived(self, data: bytes) -> None:
        self.channel.write(data)

    def errReceived(self, data: bytes) -> None:
        self.channel.writeError(data)

    def processEnded(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.channel.finish(code if code is not None else 255)


class SessionChannel(SSHChannel):
    """
    A C{session} channel: a terminal request, then one of shell, exec or
    the C{sftp} subsystem.
    """

    name = b"session"
    log = Logger()
    conn: Any
    avatar: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.term: str | None = None
        self.pty = False
        self.program: Any = None
        self.process: Any = None
        self.finished = False

    @property
    def user(self) -> SSHUser:
        return self.avatar  # type: ignore[no-any-return]

    def request_pty_req(self, data: bytes) -> int:
        try:
            term, _ = getNS(data)
        except Exception:
            return 0
        self.term = term.decode("ascii", "replace")[:64] or None
        self.pty = True
        return 1

    def request_window_change(self, data: bytes) -> int:
        return 1

    def request_shell(self, data: bytes) -> int:
        return self._start(None)

    def request_exec(self, data: bytes) -> int:
        try:
            command, _ = getNS(data)
        except Exception:
            return 0
        return self._start(command.decode("utf-8", "replace"))

    def request_subsystem(self, data: bytes) -> int:
        try:
            name, _ = getNS(data)
        except Exception:
            return 0
        if self.program is not None or name != b"sftp" or self.user.jail is None:
            return 0
        if not self.user.policy.sftp:
            return 0
        from netplugins.ssh.sftp import SFTPServer

        server: Protocol = SFTPServer(
            self.user.jail, self.user.name, hardlinks=self.user.policy.hardlinks
        )
        self.program = server
        server.makeConnection(_ChannelTransport(self))  # type: ignore[arg-type]
        return 1

    def _start(self, command: str | None) -> int:
        if self.program is not None:
            return 0
        policy = self.user.policy
        if policy.forceCommand is not None:
            return self._force(policy.forceCommand, command)
        if policy.shell != "builtin":
            self.log.info(
                "refused {what} for {user}: no shell (--shell none)",
                what="exec" if command is not None else "shell",
                user=self.user.name,
            )
            return 0
        jail = self.user.jail
        shell = Shell(
            self.user.name,
            self,
            self.user.reactor,
            JailDirectory(jail) if jail is not None else None,
            self.term,
        )
        # The program starts after the reply to this request is sent: a
        # command that ends at once would otherwise close the channel
        # before the client hears its request succeeded (paramiko then
        # reports the channel closed).
        if command is None:
            interactive = InteractiveShell(shell, self.pty, self.finish)
            self.program = interactive
            self.user.reactor.callLater(0, interactive.start)
        else:
            self.program = shell
            if self.pty:
                shell.newline = b"\r\n"
            self.user.reactor.callLater(0, self._run, shell, command)
        return 1

    def _run(self, shell: Shell, command: str) -> None:
        if self.program is shell:
            shell.run(command).addCallbacks(self.finish, self._exited)

    def _exited(self, reason: Any) -> None:
        from netplugins.ssh.shell import ExitShell

        if reason.check(ExitShell):
            self.finish(reason.value.status)
        else:
            self.log.failure("shell command failed", reason)
            self.finish(1)

    def _force(self, program: str, command: str | None) -> int:
        env = {
            "PATH": FORCED_PATH,
            "USER": self.user.name,
            "LOGNAME": self.user.name,
            "SHELL": "/bin/sh",
        }
        if command is not None:
            env["SSH_ORIGINAL_COMMAND"] = command
        if self.term:
            env["TERM"] = self.term
        jail = self.user.jail
        home = jail.home.path if jail is not None else "/"
        env["HOME"] = home
        protocol = _Forced(self)
        self.program = protocol
        self.process = self.user.reactor.spawnProcess(
            protocol,
            "/bin/sh",
            ["/bin/sh", "-c", program],
            env=env,
            path=home if os.path.isdir(home) else "/",
        )
        self.process.registerProducer(protocol, True)
        return 1

    # Output, for the shell and the forced command

    def writeError(self, data: bytes) -> None:
        if not self.finished:
            self.writeExtended(connection.EXTENDED_DATA_STDERR, data)

    def write(self, data: bytes) -> None:
        if not self.finished:
            super().write(data)

    def finish(self, status: int) -> None:
        """
        The program ended with C{status}: report it and close.
        """
        if self.finished:
            return
        self.conn.sendRequest(self, b"exit-status", struct.pack(">L", status & 0xFF))
        self.finished = True
        self.conn.sendEOF(self)
        self.loseConnection()

    heldWindow = 0

    def holdsInput(self) -> bool:
        """
        Whether the program has more input waiting than it takes: then the
        window is not reopened.
        """
        from netplugins.ssh.sftp import MAX_QUEUED_INPUT, SFTPServer

        program = self.program
        if isinstance(program, _Forced):
            return program.inputPaused
        return isinstance(program, SFTPServer) and len(program.buf) > MAX_QUEUED_INPUT

    def releaseWindow(self) -> None:
        """
        Reopen the window held while the program caught up.
        """
        if self.heldWindow and not self.holdsInput():
            held, self.heldWindow = self.heldWindow, 0
            self.conn.adjustWindow(self, held)

    def addWindowBytes(self, data: int) -> None:
        super().addWindowBytes(data)
        resume = getattr(self.program, "resumeRequests", None)
        if resume is not None:
            resume()

    def stopWriting(self) -> None:
        if self.process is not None:
            self.process.pauseProducing()

    def startWriting(self) -> None:
        if self.process is not None:
            self.process.resumeProducing()

    # Input

    def dataReceived(self, data: bytes) -> None:
        program = self.program
        if isinstance(program, InteractiveShell) or isinstance(program, Protocol):
            program.dataReceived(data)
        elif self.process is not None:
            self.process.write(data)

    def eofReceived(self) -> None:
        if isinstance(self.program, InteractiveShell):
            self.program.eofReceived()
        elif isinstance(self.program, Protocol):
            # The SFTP client is done, as sftp-server is at end of input.
            self.finish(0)
        elif self.process is not None:
            self.process.closeStdin()

    def closed(self) -> None:
        program, self.program = self.program, None
        if isinstance(program, (InteractiveShell, Shell)):
            program.stop()
        elif isinstance(program, Protocol):
            from twisted.internet.error import ConnectionDone
            from twisted.python.failure import Failure

            program.connectionLost(Failure(ConnectionDone()))
        if self.process is not None:
            try:
                self.process.signalProcess("KILL")
            except ProcessExitedAlready:
                pass
            self.process = None
