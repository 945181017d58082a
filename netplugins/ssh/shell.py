"""
np-ssh's built-in restricted shell (C{--shell builtin}): a small POSIX-like
command language for accounts that are not OS accounts.

A command line is C{;}-separated commands of words; single quotes keep
text as it is, double quotes and bare words expand C{$NAME} and
C{${NAME}} (and C{$?}).  The commands are C{echo}, C{uname}, C{uptime},
C{date}, C{whoami}, C{pwd}, C{ls} (inside the user's home, through the
shared user store), C{sleep}, C{exit} and C{exec}; nothing runs an OS
program.  Output is written as each command produces it.

L{Shell} runs command lines (C{exec} requests); L{InteractiveShell} reads
lines as a terminal session does (C{shell} requests): with a pty it echoes
what is typed, ends a line at CR or LF, prints a C{$ } prompt and writes
CR LF for LF.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

#: The longest command line accepted, in bytes.
MAX_LINE = 4096
#: Input waiting to be run while a command runs, at most.
MAX_PENDING_INPUT = 64 * 1024
#: The longest C{sleep}, in seconds.
MAX_SLEEP = 3600.0
#: Commands per line, at most.
MAX_COMMANDS = 64

COMMANDS = (
    "echo",
    "uname",
    "uptime",
    "date",
    "whoami",
    "pwd",
    "ls",
    "sleep",
    "exit",
    "exec",
)


class ShellSyntaxError(ValueError):
    """
    A command line that does not parse.
    """


class ExitShell(Exception):  # noqa: N818 (a signal, not an error)
    """
    C{exit} or C{exec} ended the shell with C{status}.
    """

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ShellOutput(Protocol):
    def write(self, data: bytes) -> None: ...

    def writeError(self, data: bytes) -> None: ...


class Directory(Protocol):
    def list(self, path: str) -> Deferred[list[str]]: ...


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\?")


def _expand(text: str, i: int, variables: dict[str, str]) -> tuple[str, int]:
    """
    Expand the C{$} at C{text[i]}: the value and the index after the name.
    """
    if text.startswith("${", i):
        end = text.find("}", i)
        if end < 0:
            raise ShellSyntaxError("bad substitution")
        return variables.get(text[i + 2 : end], ""), end + 1
    match = _NAME.match(text, i + 1)
    if match is None:
        return "$", i + 1
    return variables.get(match.group(), ""), match.end()


def parse(line: str, variables: dict[str, str]) -> list[list[str]]:
    """
    Split a command line into commands of expanded words.

    @raise ShellSyntaxError: for an unterminated quote.
    """
    commands: list[list[str]] = []
    words: list[str] = []
    word: list[str] = []
    inWord = False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "'":
            end = line.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated quoted string")
            word.append(line[i + 1 : end])
            inWord, i = True, end + 1
        elif c == '"':
            i += 1
            while True:
                if i >= len(line):
                    raise ShellSyntaxError("unterminated quoted string")
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < len(line) and line[i + 1] in '"\\$':
                    word.append(line[i + 1])
                    i += 2
                elif c == "$":
                    value, i = _expand(line, i, variables)
                    word.append(value)
                else:
                    word.append(c)
                    i += 1
            inWord = True
        elif c == "\\" and i + 1 < len(line):
            word.append(line[i + 1])
            inWord, i = True, i + 2
        elif c == "$":
            value, i = _expand(line, i, variables)
            word.append(value)
            inWord = True
        elif c in " \t;":
            if inWord:
                words.append("".join(word))
                word, inWord = [], False
            if c == ";":
                commands.append(words)
                words = []
            i += 1
        else:
            word.append(c)
            inWord, i = True, i + 1
    if inWord:
        words.append("".join(word))
    commands.append(words)
    return [command for command in commands if command]


def splitCommands(line: str) -> list[str]:
    """
    The C{;}-separated commands of a line, unexpanded (expanded as each
    runs, so that C{$?} is the previous command's status).
    """
    commands = []
    start = 0
    quote = ""
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"':
                i += 1
        elif c in "'\"":
            quote = c
        elif c == "\\":
            i += 1
        elif c == ";":
            commands.append(line[start:i])
            start = i + 1
        i += 1
    commands.append(line[start:])
    return commands


def uptimeText(now: float | None = None) -> str:
    """
    What C{uptime} prints: the time, how long the host has been up, the
    load averages.
    """
    now = time.time() if now is None else now
    try:
        with open("/proc/uptime") as f:
            seconds = int(float(f.read().split()[0]))
    except (OSError, ValueError, IndexError):
        seconds = 0
    days, rest = divmod(seconds, 86400)
    hours, minutes = divmod(rest // 60, 60)
    up = f"{days} day{'s' if days != 1 else ''}, " if days else ""
    up += f"{hours:2d}:{minutes:02d}"
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "0.00, 0.00, 0.00"
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    return f" {clock} up {up},  1 user,  load average: {load}"


class Shell:
    """
    Runs command lines for one user.

    @ivar variables: the shell's variables (C{USER}, C{HOME}, C{PWD},
        C{LOGNAME}, C{SHELL}, C{TERM} when given, C{?}).
    """

    def __init__(
        self,
        user: str,
        output: ShellOutput,
        clock: IReactorTime,
        directory: Directory | None = None,
        term: str | None = None,
    ) -> None:
        self.user = user
        self.output = output
        self.clock = clock
        self.directory = directory
        self.variables = {
            "USER": user,
            "LOGNAME": user,
            "HOME": "/",
            "PWD": "/",
            "SHELL": "/bin/sh",
            "?": "0",
        }
        if term:
            self.variables["TERM"] = term
        self.newline = b"\n"
        self._sleeping: Deferred[None] | None = None

    def stop(self) -> None:
        """
        The session went: cancel a running C{sleep}.
        """
        if self._sleeping is not None:
            self._sleeping.cancel()

    def _out(self, text: str) -> None:
        self.output.write(text.encode("utf-8", "replace").replace(b"\n", self.newline))

    def _err(self, text: str) -> None:
        self.output.writeError(
            text.encode("utf-8", "replace").replace(b"\n", self.newline)
        )

    def run(self, line: str) -> Deferred[int]:
        """
        Run one command line.

        @return: the last command's status; fails with L{ExitShell} when
            C{exit} or C{exec} ends the shell.
        """
        try:
            parse(line, self.variables)
        except ShellSyntaxError as e:
            self._err(f"sh: syntax error: {e}\n")
            self.variables["?"] = "2"
            return succeed(2)
        commands = splitCommands(line)
        if len(commands) > MAX_COMMANDS:
            self._err("sh: too many commands\n")
            return succeed(2)
        try:
            return self._runFrom(commands, 0, 0)
        except ExitShell:
            return fail()

    def _runFrom(self, commands: list[str], index: int, status: int) -> Deferred[int]:
        while index < len(commands):
            words = parse(commands[index], self.variables)
            index += 1
            if not words:
                continue
            result = self.command(words[0])
            if isinstance(result, Deferred):
                return result.addCallback(self._continue, commands, index)
            status = self._record(result)
        return succeed(status)

    def _continue(self, status: int, commands: list[str], index: int) -> Deferred[int]:
        return self._runFrom(commands, index, self._record(status))

    def _record(self, status: int) -> int:
        self.variables["?"] = str(status)
        return status

    def command(self, words: Sequence[str]) -> int | Deferred[int]:
        """
        Run one command; raise L{ExitShell} for C{exit}.
        """
        name, args = words[0], list(words[1:])
        if name == "exec":
            if not args:
                return 0
            result = self.command(args)
            if isinstance(result, Deferred):

                def ended(status: int) -> int:
                    raise ExitShell(status)

                return result.addCallback(ended)
            raise ExitShell(result)
        handler: Callable[[list[str]], int | Deferred[int]] | None = getattr(
            self, "do_" + name, None
        )
        if name not in COMMANDS or handler is None:
            self._err(f"sh: {name}: command not found\n")
            return 127
        return handler(args)

    def do_echo(self, args: list[str]) -> int:
        newline = "\n"
        if args and args[0] == "-n":
            args, newline = args[1:], ""
        self._out(" ".join(args) + newline)
        return 0

    def do_uname(self, args: list[str]) -> int:
        info = os.uname()
        fields = {
            "-s": info.sysname,
            "-n": info.nodename,
            "-r": info.release,
            "-v": info.version,
            "-m": info.machine,
        }
        if args == ["-a"]:
            self._out(" ".join(fields.values()) + "\n")
        elif all(a in fields for a in args):
            self._out(" ".join(fields[a] for a in args or ["-s"]) + "\n")
        else:
            self._err(f"uname: invalid option {args[0]!r}\n")
            return 1
        return 0

    def do_uptime(self, args: list[str]) -> int:
        self._out(uptimeText(self.clock.seconds()) + "\n")
        return 0

    def do_date(self, args: list[str]) -> int:
        now = time.localtime(self.clock.seconds())
        self._out(time.strftime("%a %b %e %H:%M:%S %Z %Y", now) + "\n")
        return 0

    def do_whoami(self, args: list[str]) -> int:
        self._out(self.user + "\n")
        return 0

    def do_pwd(self, args: list[str]) -> int:
        self._out(self.variables["PWD"] + "\n")
        return 0

    def do_sleep(self, args: list[str]) -> int | Deferred[int]:
        try:
            seconds = float(args[0]) if len(args) == 1 else -1.0
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= MAX_SLEEP:
            self._err("sleep: invalid time interval\n")
            return 1
        self._sleeping = deferLater(self.clock, seconds, lambda: None)

        def woke(_: object) -> int:
            self._sleeping = None
            return 0

        return self._sleeping.addCallback(woke)

    def do_exit(self, args: list[str]) -> int:
        try:
            status = int(args[0]) & 0xFF if args else int(self.variables["?"])
        except ValueError:
            self._err(f"sh: exit: {args[0]}: numeric argument required\n")
            status = 2
        raise ExitShell(status)

    def do_ls(self, args: list[str]) -> int | Deferred[int]:
        paths = [a for a in args if not a.startswith("-")] or ["."]
        if self.directory is None:
            self._err("ls: no files here\n")
            return 2
        results: list[tuple[str, list[str] | None]] = []

        def listed(names: list[str], path: str) -> None:
            results.append((path, names))

        def failed(reason: Any, path: str) -> None:
            self._err(f"ls: cannot access '{path}': {reason.getErrorMessage()}\n")
            results.append((path, None))

        directory = self.directory
        d: Deferred[Any] = succeed(None)

        def listOne(_: object, path: str) -> Deferred[list[str]]:
            return directory.list(path)

        for path in paths:
            d.addCallback(listOne, path)
            d.addCallbacks(listed, failed, callbackArgs=(path,), errbackArgs=(path,))

        def show(_: object) -> int:
            status = 0
            for path, names in results:
                if names is None:
                    status = 2
                    continue
                if len(paths) > 1:
                    self._out(f"{path}:\n")
                for name in sorted(names):
                    self._out(name + "\n")
            return status

        return d.addCallback(show)


class InteractiveShell:
    """
    A shell session reading lines from the client.

    @param pty: whether the client asked for a terminal: then typed bytes
        are echoed, CR or LF ends a line, a prompt is shown and output LF
        becomes CR LF.
    @param done: called once with the exit status when the shell ends.
    @param echo: whether to echo typed lines (default: C{pty}; a telnet
        client echoes them itself).
    """

    prompt = b"$ "

    def __init__(
        self,
        shell: Shell,
        pty: bool,
        done: Callable[[int], None],
        *,
        echo: bool | None = None,
    ) -> None:
        self.shell = shell
        self.pty = pty
        self.echo = pty if echo is None else echo
        self.done = done
        self._buffer = b""
        self._running = False
        self._ended = False
        self._started = False
        if pty:
            shell.newline = b"\r\n"

    def start(self) -> None:
        """
        Show the first prompt and run what was typed before.
        """
        self._started = True
        if self.pty:
            self.shell.output.write(self.prompt)
        self._next()

    def dataReceived(self, data: bytes) -> None:
        if self._ended:
            return
        if len(self._buffer) + len(data) > MAX_PENDING_INPUT:
            self.shell.output.writeError(b"sh: input too long\r\n")
            self._end(2)
            return
        self._buffer += data
        self._next()

    def eofReceived(self) -> None:
        self._buffer += b"\x04"
        self._next()

    def _takeLine(self) -> bytes | None:
        """
        The next line typed, with a terminal's editing applied when
        C{pty}: DEL and BS erase, ^U kills, ^C cancels the line, ^D on an
        empty line ends the shell.
        """
        ends = [
            i
            for i in (
                self._buffer.find(b"\r"),
                self._buffer.find(b"\n"),
                self._buffer.find(b"\x04"),
            )
            if i >= 0
        ]
        if not ends:
            if len(self._buffer) > MAX_LINE:
                self._buffer = b""
                self.shell.output.writeError(b"sh: line too long" + self.shell.newline)
            return None
        end = min(ends)
        raw, terminator = self._buffer[:end], self._buffer[end : end + 1]
        self._buffer = self._buffer[end + 1 :]
        if terminator == b"\r" and self._buffer.startswith(b"\n"):
            self._buffer = self._buffer[1:]
        if terminator == b"\r" and self._buffer.startswith(b"\0"):
            self._buffer = self._buffer[1:]
        line = bytearray()
        for byte in raw:
            if byte in (0x7F, 0x08):
                if line:
                    line.pop()
            elif byte == 0x15:
                line.clear()
            elif byte == 0x03:
                line.clear()
            else:
                line.append(byte)
        if terminator == b"\x04":
            if line:
                self._buffer = bytes(line) + self._buffer
            return None if line else b"\x04"
        if self.echo:
            self.shell.output.write(bytes(line) + b"\r\n")
        return bytes(line)

    def _next(self) -> None:
        while self._started and not self._running and not self._ended:
            line = self._takeLine()
            if line is None:
                return
            if line == b"\x04":
                self._end(int(self.shell.variables["?"]))
                return
            if len(line) > MAX_LINE:
                self.shell.output.writeError(b"sh: line too long" + self.shell.newline)
                continue
            self._running = True
            d = self.shell.run(line.decode("utf-8", "replace"))
            d.addCallbacks(self._ran, self._failed)

    def _ran(self, status: int) -> None:
        self._running = False
        if self._ended:
            return
        if self.pty:
            self.shell.output.write(self.prompt)
        self._next()

    def _failed(self, reason: Any) -> None:
        self._running = False
        if reason.check(ExitShell):
            self._end(reason.value.status)
        elif not self._ended:
            self._end(1)

    def _end(self, status: int) -> None:
        if not self._ended:
            self._ended = True
            self.shell.stop()
            self.done(status)

    def stop(self) -> None:
        """
        The channel closed: stop without reporting.
        """
        self._ended = True
        self.shell.stop()
