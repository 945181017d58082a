# -*- test-case-name: tests.test_htpasswd -*-
"""
C{np-htpasswd}: add, update and delete users in an C{htpasswd:} password file.

Passwords are never taken from the command line, where other users can read them
in the process list: they are prompted for twice, or read as one line from
standard input with C{--stdin}.  The file is replaced atomically (temporary file
in the same directory, fsync, rename) so a running server never reads half of it.
Lines of other users are kept as they are, even weak ones, so the tool can be
used to move users to bcrypt or argon2id one at a time.
"""

from __future__ import annotations

import argparse
import hmac
import sys
from collections.abc import Sequence
from getpass import getpass

from netplugins.cred.htpasswd import (
    ARGON2ID,
    BCRYPT,
    DEFAULT_BCRYPT_COST,
    HtpasswdError,
    hashPassword,
    parseHtpasswd,
    passwordProblem,
    userNameProblem,
)
from netplugins.files import writeAtomically


class CommandError(Exception):
    """
    A refusal to report on standard error, exiting with status 1.
    """


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="np-htpasswd",
        description="Add, update (default) or delete (-D) a user in an htpasswd "
        "file of bcrypt or argon2id hashes, for --auth htpasswd:FILE.",
    )
    parser.add_argument("file", metavar="FILE", help="the password file")
    parser.add_argument("user", metavar="USER", help="the user name")
    parser.add_argument("-D", "--delete", action="store_true", help="delete USER")
    parser.add_argument(
        "--argon2", action="store_true", help="hash with argon2id instead of bcrypt"
    )
    parser.add_argument(
        "--cost",
        type=int,
        default=None,
        metavar="N",
        help=f"bcrypt cost, 4 to 31 (default {DEFAULT_BCRYPT_COST})",
    )
    parser.add_argument(
        "--stdin",
        action="store_true",
        help="read the password as one line from standard input, without prompting",
    )
    return parser


def _checkUser(user: str) -> None:
    problem = userNameProblem(user)
    if problem is not None:
        raise CommandError(problem)
    if ":" in user or user.startswith("#"):
        raise CommandError("user names cannot contain ':' or start with '#'")


def _readPassword(fromStdin: bool) -> str:
    if fromStdin:
        line = sys.stdin.buffer.readline()
        try:
            return line.decode("utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError:
            raise CommandError("the password is not UTF-8") from None
    try:
        first = getpass("New password: ")
        second = getpass("Re-type new password: ")
    except (EOFError, KeyboardInterrupt):
        raise CommandError("no password given") from None
    if not hmac.compare_digest(first.encode("utf-8"), second.encode("utf-8")):
        raise CommandError("passwords do not match")
    return first


def _isUserLine(line: bytes, user: bytes) -> bool:
    stripped = line.strip()
    if not stripped or stripped.startswith(b"#"):
        return False
    return stripped.split(b":", 1)[0] == user


def updatedLines(old: bytes, user: str, newLine: str | None) -> tuple[bytes, bool]:
    """
    The file C{old} with C{user}'s line replaced by C{newLine}, appended if
    absent, or removed when C{newLine} is L{None}.  Other lines stay byte for
    byte; duplicates of C{user} are dropped.

    @return: the new contents and whether C{user} was present.
    """
    name = user.encode("utf-8")
    replacement = None if newLine is None else newLine.encode("utf-8") + b"\n"
    out: list[bytes] = []
    found = False
    for line in old.splitlines(keepends=True):
        if _isUserLine(line, name):
            if not found and replacement is not None:
                out.append(replacement)
            found = True
            continue
        out.append(line)
    if not found and replacement is not None:
        if out and not out[-1].endswith(b"\n"):
            out[-1] += b"\n"
        out.append(replacement)
    return b"".join(out), found


def run(arguments: argparse.Namespace) -> str:
    """
    Carry out one command.

    @return: what to report on success.
    @raise CommandError: for anything refused.
    """
    scheme = ARGON2ID if arguments.argon2 else BCRYPT
    if arguments.cost is not None:
        if arguments.argon2 or arguments.delete:
            raise CommandError("--cost applies to bcrypt only")
        if not 4 <= arguments.cost <= 31:
            raise CommandError("--cost must be between 4 and 31")
    user = arguments.user
    _checkUser(user)
    try:
        with open(arguments.file, "rb") as f:
            old = f.read()
    except FileNotFoundError:
        if arguments.delete:
            raise CommandError(f"{arguments.file} does not exist") from None
        old = b""
    except OSError as e:
        raise CommandError(f"cannot read {arguments.file}: {e.strerror}") from None

    if arguments.delete:
        new, found = updatedLines(old, user, None)
        if not found:
            raise CommandError(f"user {user!r} not found in {arguments.file}")
        report = f"Deleting user {user}"
    else:
        password = _readPassword(arguments.stdin)
        problem = passwordProblem(password, scheme)
        if problem is not None:
            raise CommandError(problem)
        cost = DEFAULT_BCRYPT_COST if arguments.cost is None else arguments.cost
        hashed = hashPassword(password, scheme, cost)
        new, found = updatedLines(old, user, f"{user}:{hashed}")
        verb = "Updating" if found else "Adding"
        report = f"{verb} password for user {user} ({scheme})"
    try:
        writeAtomically(arguments.file, new)
    except OSError as e:
        raise CommandError(f"cannot write {arguments.file}: {e.strerror}") from None
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """
    The C{np-htpasswd} console script.

    @return: the exit status: 0 done, 1 refused, 2 bad usage.
    """
    parser = _parser()
    arguments = parser.parse_args(argv)
    try:
        report = run(arguments)
    except CommandError as e:
        sys.stderr.write(f"np-htpasswd: {e}\n")
        return 1
    sys.stdout.write(report + "\n")
    try:
        with open(arguments.file, "rb") as f:
            parseHtpasswd(f.read(), arguments.file)
    except HtpasswdError as e:
        # Another user's line still stops the file loading: say so now rather
        # than when the server refuses to start.
        sys.stderr.write(f"np-htpasswd: warning: the file will not load: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
