"""
Tests for L{netplugins.cred.htpasswd}, its strcred dropin and C{np-htpasswd}.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from weakref import WeakSet

import argon2
import bcrypt
from twisted.cred import strcred
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.tap.ftp import Options as FTPOptions
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins import htpasswd as cli
from netplugins.cred import htpasswd
from netplugins.cred.htpasswd import (
    HtpasswdChecker,
    HtpasswdError,
    Users,
    parseHtpasswd,
    reloadAll,
    schemeOf,
    verifyPassword,
)

ROOT = Path(__file__).resolve().parent.parent

# Cheap parameters keep the suite fast; the code paths are the production ones.
_fastArgon2 = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def bcryptHash(password: str, variant: str = "2b", cost: int = 4) -> str:
    """
    A bcrypt hash of C{password} with the C{$2a$}/C{$2b$}/C{$2y$} prefix.
    """
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
    return f"${variant}" + hashed[3:]


def argon2Hash(password: str) -> str:
    """
    A cheap argon2id hash of C{password}.
    """
    return _fastArgon2.hash(password)


def creds(username: Any, password: Any) -> UsernamePassword:
    """
    Credentials as a protocol passes them: C{str} (FTP) or C{bytes} (mail).
    """
    return UsernamePassword(username, password)


def runNow(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    """
    Run a "blocking" call synchronously, for tests without a thread pool.
    """
    return maybeDeferred(f, *args, **kwargs)


class PendingRunner:
    """
    A blocking-call runner whose calls wait until the test runs them.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((f, args, d))
        return d

    def runAll(self) -> None:
        while self.calls:
            f, args, d = self.calls.pop(0)
            d.callback(f(*args))


def writeFile(path: Path, text: str) -> None:
    """
    Replace C{path} by rename, as editors and np-htpasswd do (a new inode).
    """
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)


ALICE = bcryptHash("alice-pw")
BOB = argon2Hash("bob-pw")


class SchemeTests(SynchronousTestCase):
    """
    L{schemeOf} accepts bcrypt and argon2id and names what it refuses.
    """

    def test_bcryptVariants(self) -> None:
        """
        C{$2a$}, C{$2b$} and C{$2y$} hashes are bcrypt.
        """
        for variant in ("2a", "2b", "2y"):
            self.assertEqual(schemeOf(bcryptHash("x", variant)), htpasswd.BCRYPT)

    def test_argon2id(self) -> None:
        """
        argon2id hashes are accepted.
        """
        self.assertEqual(schemeOf(BOB), htpasswd.ARGON2ID)

    def test_refusedSchemes(self) -> None:
        """
        Weaker schemes are refused with a reason naming the scheme.
        """
        argon2i = argon2.PasswordHasher(
            time_cost=1, memory_cost=8, parallelism=1, type=argon2.Type.I
        ).hash("x")
        argon2d = argon2i.replace("$argon2i$", "$argon2d$")
        cases = {
            "$apr1$abcdefgh$0123456789abcdefghijkl": "$apr1$",
            "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=": "SHA-1",
            "$1$abcdefgh$0123456789abcdefghijkl": "MD5-crypt",
            "$6$salt$" + "a" * 86: "only bcrypt and argon2id",
            argon2i: "argon2i",
            argon2d: "argon2d",
            "abJnggxhB/yWI": "DES crypt or a plaintext",
            "hunter2": "plaintext",
        }
        for hashed, reason in cases.items():
            with self.assertRaises(ValueError) as raised:
                schemeOf(hashed)
            self.assertIn(reason, str(raised.exception))

    def test_malformed(self) -> None:
        """Truncated, impossible-cost, other-variant bcrypt and broken argon2id fail."""
        # Truncated bcrypt, bcrypt with an impossible cost, other bcrypt variants and
        # broken argon2id are refused.
        for hashed in (
            ALICE[:-1],
            ALICE + "x",
            "$2b$03$" + ALICE[7:],
            "$2b$32$" + ALICE[7:],
            "$2x$04$" + ALICE[7:],
            "$2$04$" + ALICE[7:],
            "$argon2id$v=19$m=8,t=1,p=1$!!!$abc",
            "$argon2id$garbage",
            BOB.rsplit("$", 1)[0] + "$",
            BOB.replace("m=8", "m=x"),
        ):
            self.assertRaises(ValueError, schemeOf, hashed)


class ParseTests(SynchronousTestCase):
    """
    L{parseHtpasswd} reads C{user:hash} lines and names the line it refuses.
    """

    def assertRefused(self, data: bytes, where: str, reason: str) -> str:
        """
        Parsing C{data} fails with an error naming C{where} and C{reason}.
        """
        with self.assertRaises(HtpasswdError) as raised:
            parseHtpasswd(data, "users.pw")
        message = str(raised.exception)
        self.assertIn(f"users.pw, line {where}", message)
        self.assertIn(reason, message)
        return message

    def test_commentsAndBlankLines(self) -> None:
        """
        Comments, blank lines and CRLF line ends are accepted.
        """
        data = f"# users\n\nalice:{ALICE}\r\n   \n  # more\nbob:{BOB}\n".encode()
        self.assertEqual(
            parseHtpasswd(data, "users.pw").entries, {"alice": ALICE, "bob": BOB}
        )

    def test_weakLine(self) -> None:
        """A weak hash is refused with line, user and advice, but not repeated."""
        # A weak hash is refused with its line number, the user and the advice to run
        # np-htpasswd; the hash itself (perhaps a plaintext password) is not repeated.
        data = f"# users\nalice:{ALICE}\n\ncarol:hunter2\n".encode()
        message = self.assertRefused(data, "4", "user 'carol'")
        self.assertIn("np-htpasswd", message)
        self.assertNotIn("hunter2", message)

    def test_apr1Line(self) -> None:
        """
        An C{htpasswd -m} line is refused naming the scheme.
        """
        self.assertRefused(
            b"dave:$apr1$Vx1Lq0cd$fH0BKrWLnWhUf9XXyz1N0/\n", "1", "$apr1$"
        )

    def test_noColon(self) -> None:
        """
        A line without a colon is refused.
        """
        self.assertRefused(f"alice:{ALICE}\nbob\n".encode(), "2", "expected user:hash")

    def test_duplicateUser(self) -> None:
        """
        A user listed twice is refused, naming both lines.
        """
        data = f"alice:{ALICE}\nbob:{BOB}\nalice:{ALICE}\n".encode()
        self.assertRefused(data, "3", "duplicate user 'alice' (first on line 1)")

    def test_badNames(self) -> None:
        """
        Empty, padded and control-character user names are refused.
        """
        self.assertRefused(f":{ALICE}\n".encode(), "1", "empty user name")
        self.assertRefused(f"alice :{ALICE}\n".encode(), "1", "whitespace")
        self.assertRefused(f"al\x01ice:{ALICE}\n".encode(), "1", "control")

    def test_notUTF8(self) -> None:
        """
        A line that is not UTF-8 is refused.
        """
        self.assertRefused(b"# ok\n\xff:" + ALICE.encode() + b"\n", "2", "not UTF-8")

    def test_dummyFollowsCommonProfile(self) -> None:
        """The dummy hash has the common scheme and cost and matches no user."""
        users = Users.fromEntries(
            {"a": bcryptHash("a", cost=5), "b": bcryptHash("b", cost=5), "c": BOB}
        )
        self.assertTrue(users.dummy.startswith("$2b$05$"))
        self.assertEqual(schemeOf(users.dummy), htpasswd.BCRYPT)
        self.assertNotIn(users.dummy, users.entries.values())
        argon = Users.fromEntries({"b": BOB})
        self.assertEqual(argon.dummy.rsplit("$", 2)[0], BOB.rsplit("$", 2)[0])
        self.assertEqual(schemeOf(argon.dummy), htpasswd.ARGON2ID)
        self.assertTrue(Users.fromEntries({}).dummy.startswith("$2b$12$"))

    def test_dummiesFollowEveryProfile(self) -> None:
        """Unknown names are spread over every scheme and cost, as users are."""
        users = Users.fromEntries(
            {
                "a": bcryptHash("a", cost=4),
                "b": bcryptHash("b", cost=4),
                "c": bcryptHash("c", cost=5),
                "d": BOB,
            }
        )
        self.assertEqual([count for _, count in users.dummies], [2, 1, 1])
        picks = Counter(
            users.dummyFor(f"nobody{i}")[:7].replace("$argon", "argon")
            for i in range(4000)
        )
        self.assertEqual(set(picks), {"$2b$04$", "$2b$05$", "argon2"})
        self.assertLess(abs(picks["$2b$04$"] / 4000 - 0.5), 0.05)
        self.assertLess(abs(picks["$2b$05$"] / 4000 - 0.25), 0.05)
        self.assertEqual(users.dummyFor("nobody1"), users.dummyFor("nobody1"))
        self.assertNotIn(users.dummyFor("nobody1"), users.entries.values())


class VerifyTests(SynchronousTestCase):
    """
    L{verifyPassword} runs the scheme's verification.
    """

    def test_bcryptVariants(self) -> None:
        """
        bcrypt C{$2a$}, C{$2b$} and C{$2y$} hashes match their password only.
        """
        for variant in ("2a", "2b", "2y"):
            hashed = bcryptHash("pw", variant)
            self.assertTrue(verifyPassword(hashed, "pw"))
            self.assertFalse(verifyPassword(hashed, "pW"))

    def test_argon2id(self) -> None:
        """
        argon2id hashes match their password only.
        """
        self.assertTrue(verifyPassword(BOB, "bob-pw"))
        self.assertFalse(verifyPassword(BOB, "bob-pW"))

    def test_compareDigest(self) -> None:
        """
        bcrypt digests are compared with C{hmac.compare_digest}.
        """
        calls = []
        real = htpasswd.hmac.compare_digest

        def spy(a: Any, b: Any) -> bool:
            calls.append((a, b))
            return real(a, b)

        self.patch(htpasswd.hmac, "compare_digest", spy)
        verifyPassword(ALICE, "alice-pw")
        self.assertEqual(len(calls), 1)

    def test_unsupported(self) -> None:
        """
        Other schemes and over-long bcrypt passwords raise C{ValueError}.
        """
        self.assertRaises(ValueError, verifyPassword, "{SHA}abc", "x")
        self.assertRaises(ValueError, verifyPassword, ALICE, "x" * 73)


class CheckerTests(SynchronousTestCase):
    """
    L{HtpasswdChecker.requestAvatarId} answers every login with a L{Deferred}.
    """

    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.write_text(f"alice:{ALICE}\nbob:{BOB}\n")
        self.checker = HtpasswdChecker(str(self.path), runBlocking=runNow)
        self.verified: list[str] = []
        real = htpasswd.verifyPassword

        def counting(hashed: str, password: str) -> bool:
            self.verified.append(hashed)
            return real(hashed, password)

        self.patch(htpasswd, "verifyPassword", counting)

    def login(self, username: Any, password: Any) -> Deferred[Any]:
        """
        Ask the checker about C{username} and C{password}.
        """
        result = self.checker.requestAvatarId(creds(username, password))
        self.assertIsInstance(result, Deferred)
        return result

    def assertRefused(self, username: Any, password: Any) -> None:
        """
        The login fails with the one generic L{UnauthorizedLogin}.
        """
        failure = self.failureResultOf(
            self.login(username, password), UnauthorizedLogin
        )
        self.assertNotIn("unknown", str(failure.value))

    def test_rightPassword(self) -> None:
        """The right password yields the user name, for bcrypt and argon2id users."""
        self.assertEqual(self.successResultOf(self.login("alice", "alice-pw")), "alice")
        self.assertEqual(self.successResultOf(self.login("bob", "bob-pw")), "bob")

    def test_bcryptVariants(self) -> None:
        """
        Users hashed with C{$2a$}, C{$2b$} and C{$2y$} all log in.
        """
        lines = [f"u{v}:{bcryptHash('pw', v)}" for v in ("2a", "2b", "2y")]
        self.path.write_text("\n".join(lines) + "\n")
        checker = HtpasswdChecker(str(self.path), runBlocking=runNow)
        for v in ("2a", "2b", "2y"):
            d = checker.requestAvatarId(creds(f"u{v}", "pw"))
            self.assertEqual(self.successResultOf(d), f"u{v}")
            d = checker.requestAvatarId(creds(f"u{v}", "pw2"))
            self.failureResultOf(d, UnauthorizedLogin)

    def test_bytesCredentials(self) -> None:
        """
        C{bytes} credentials (mail, conch) yield a C{bytes} avatar ID.
        """
        self.assertEqual(
            self.successResultOf(self.login(b"alice", b"alice-pw")), b"alice"
        )
        self.assertRefused(b"alice", b"wrong")

    def test_wrongPassword(self) -> None:
        """
        A wrong password is refused, for bcrypt and argon2id users.
        """
        self.assertRefused("alice", "alice-pW")
        self.assertRefused("bob", "bob-pW")
        self.assertEqual(self.verified, [ALICE, BOB])

    def test_unknownUserCostsAVerification(self) -> None:
        """An unknown user costs a verification against its dummy hash."""
        # An unknown user is refused after verifying against a dummy hash, the
        # same work a wrong password costs.
        self.assertRefused("mallory", "alice-pw")
        self.assertEqual(self.verified, [self.checker.users.dummyFor("mallory")])
        self.assertIn(
            self.verified[0], [dummy for dummy, _ in self.checker.users.dummies]
        )

    def test_emptyAndWhitespacePasswords(self) -> None:
        """
        Empty and whitespace-only passwords are refused without hashing.
        """
        for password in ("", "   ", "\t\n", b"", b" "):
            self.assertRefused("alice", password)
        self.assertEqual(self.verified, [])

    def test_longBcryptPassword(self) -> None:
        """A bcrypt password over 72 bytes is refused without calling bcrypt."""
        # A password over 72 bytes is refused for bcrypt users (and unknown users when
        # the dummy is bcrypt) without calling bcrypt, which would raise.
        self.path.write_text(f"alice:{ALICE}\n")
        checker = HtpasswdChecker(str(self.path), runBlocking=runNow)
        for name in ("alice", "mallory"):
            d = checker.requestAvatarId(creds(name, "é" * 37))
            self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(self.verified, [])

    def test_longArgon2Password(self) -> None:
        """
        argon2id users may have passwords longer than 72 bytes.
        """
        long = "p" * 200
        self.path.write_text(f"bob:{argon2Hash(long)}\n")
        checker = HtpasswdChecker(str(self.path), runBlocking=runNow)
        d = checker.requestAvatarId(creds("bob", long))
        self.assertEqual(self.successResultOf(d), "bob")

    def test_nulAndUndecodable(self) -> None:
        """
        NUL in either field and non-UTF-8 bytes are refused without hashing.
        """
        self.assertRefused("alice", "alice-pw\x00")
        self.assertRefused("alice\x00", "alice-pw")
        self.assertRefused(b"alice", b"\xffalice-pw")
        self.assertRefused(b"\xff", b"alice-pw")
        self.assertEqual(self.verified, [])

    def test_unusableCredentials(self) -> None:
        """
        Credentials without a username and password are refused, not raised.
        """
        d = self.checker.requestAvatarId(object())
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)

    def test_malformedHashAtRuntime(self) -> None:
        """
        A hash the backend rejects gives L{UnauthorizedLogin}, never the error.
        """
        self.path.write_text(f"alice:{ALICE[:-2]}zz\n")  # same shape, bad digest
        checker = HtpasswdChecker(str(self.path), runBlocking=runNow)
        self.patch(
            htpasswd, "verifyPassword", lambda h, p: bcrypt.checkpw(b"x", b"$2b$04$x")
        )
        d = checker.requestAvatarId(creds("alice", "alice-pw"))
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_backendError(self) -> None:
        """Any hashing backend exception becomes UnauthorizedLogin and is logged."""

        def broken(hashed: str, password: str) -> bool:
            raise MemoryError("argon2 could not allocate")

        self.patch(htpasswd, "verifyPassword", broken)
        self.assertRefused("bob", "bob-pw")
        self.assertEqual(len(self.flushLoggedErrors(MemoryError)), 1)

    def test_refusalLogged(self) -> None:
        """
        A refusal is logged with the user name and reason, never the password.
        """
        with capturedLogs() as events:
            self.assertRefused("alice", "s3cret-guess")
        refusals = [e for e in events if e.get("username") == "alice"]
        self.assertEqual(len(refusals), 1)
        self.assertEqual(refusals[0]["reason"], "wrong password")
        self.assertNotIn("s3cret-guess", repr(events))

    def test_screeningRefusalLogged(self) -> None:
        """
        Input refused before hashing is logged with the user name too.
        """
        with capturedLogs() as events:
            self.assertRefused(b"alice", b"pw\x00secret")
        refusals = [e for e in events if e.get("username") == b"alice"]
        self.assertEqual(len(refusals), 1)
        self.assertNotIn("secret", repr(events))

    def test_verificationOffTheCallingThread(self) -> None:
        """
        Verification is handed to the blocking runner, not done inline.
        """
        runner = PendingRunner()
        checker = HtpasswdChecker(str(self.path), runBlocking=runner)
        d = checker.requestAvatarId(creds("alice", "alice-pw"))
        self.assertNoResult(d)
        self.assertEqual(self.verified, [])
        runner.runAll()
        self.assertEqual(self.successResultOf(d), "alice")


class LoadTests(SynchronousTestCase):
    """
    Checkers come from C{--auth htpasswd:PATH}; bad files stop them early.
    """

    def test_strcred(self) -> None:
        """
        strcred finds the C{htpasswd} factory and makes a checker from a path.
        """
        path = self.mktemp()
        Path(path).write_text(f"alice:{ALICE}\n")
        checker = strcred.makeChecker(f"htpasswd:{path}")
        self.assertIsInstance(checker, HtpasswdChecker)
        self.assertEqual(dict(checker.users.entries), {"alice": ALICE})

    def test_usageError(self) -> None:
        """
        A refused file makes C{--auth} a usage error naming the file and line.
        """
        path = self.mktemp()
        Path(path).write_text(f"alice:{ALICE}\nbob:{{SHA}}abcdef\n")
        options = FTPOptions()
        with self.assertRaises(usage.UsageError) as raised:
            options.parseOptions(["--auth", f"htpasswd:{path}"])
        self.assertIn(f"{path}, line 2: user 'bob': SHA-1", str(raised.exception))

    def test_missingFileAndArgument(self) -> None:
        """
        A missing file or an empty argument are refused at load.
        """
        missing = self.mktemp()
        with self.assertRaises(HtpasswdError) as raised:
            HtpasswdChecker(missing)
        self.assertIn(f"{missing}: cannot read", str(raised.exception))
        self.assertRaises(ValueError, strcred.makeChecker, "htpasswd:")

    def test_helpAuthType(self) -> None:
        """
        C{--help-auth-type htpasswd} explains the format, schemes and command.
        """
        options = FTPOptions()
        options.authOutput = io.StringIO()
        self.assertRaises(
            SystemExit, options.parseOptions, ["--help-auth-type", "htpasswd"]
        )
        text = options.authOutput.getvalue()
        for needle in ("user:hash", "$2y$", "argon2id", "$apr1$", "np-htpasswd"):
            self.assertIn(needle, text)

    def test_dropinsImportNothingHeavy(self) -> None:
        """Importing the cred dropins loads no bcrypt, argon2, ldap3 or checker."""
        script = (
            "import sys\n"
            "import twisted.plugins.netplugins_cred_htpasswd\n"
            "import twisted.plugins.netplugins_cred_ldap\n"
            "import twisted.plugins.netplugins_cred_hmac\n"
            "heavy = {'bcrypt', 'argon2', 'ldap3', 'netplugins.cred.htpasswd',\n"
            "         'netplugins.cred.ldap.checker'}\n"
            "print(sorted(m for m in sys.modules\n"
            "             if m in heavy or m.split('.')[0] in heavy))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=Path(__file__).parent.parent,
            capture_output=True,
            text=True,
            check=True,
        )
        self.assertEqual(result.stdout, "[]\n")


class ReloadTests(SynchronousTestCase):
    """
    The file is re-read when it changes; a broken file keeps the old users.
    """

    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.write_text(f"alice:{ALICE}\n")
        self.runner = PendingRunner()
        self.checker = HtpasswdChecker(str(self.path), runBlocking=self.runner)

    def login(self, name: str, password: str) -> Deferred[Any]:
        """
        Log in, running every blocking call the login needs.
        """
        d = self.checker.requestAvatarId(creds(name, password))
        self.runner.runAll()
        return d

    def test_unchangedNotReread(self) -> None:
        """An unchanged file is not read again: the one blocking call verifies."""
        d = self.checker.requestAvatarId(creds("alice", "alice-pw"))
        self.assertEqual([f for f, _, _ in self.runner.calls], [htpasswd._check])
        self.runner.runAll()
        self.assertEqual(self.successResultOf(d), "alice")

    def test_changedFileReread(self) -> None:
        """A changed file is re-read in the blocking runner at the next login."""
        # After the file changes, the next login reads it (in the blocking runner) and
        # sees the new users.
        writeFile(self.path, f"bob:{BOB}\n")
        d = self.checker.requestAvatarId(creds("bob", "bob-pw"))
        self.assertEqual([f for f, _, _ in self.runner.calls], [htpasswd._load])
        self.runner.runAll()
        self.assertEqual(self.successResultOf(d), "bob")
        self.failureResultOf(self.login("alice", "alice-pw"), UnauthorizedLogin)

    def test_sameInodeRewrite(self) -> None:
        """
        A file rewritten in place (same inode, new size) is also re-read.
        """
        self.path.write_text(f"alice:{ALICE}\nbob:{BOB}\n")
        self.assertEqual(self.successResultOf(self.login("bob", "bob-pw")), "bob")

    def test_brokenFileKeepsUsers(self) -> None:
        """
        A changed file that does not load is logged once and the old users stay.
        """
        writeFile(self.path, f"alice:{ALICE}\nbob:$apr1$x$y\n")
        with capturedLogs() as events:
            self.assertEqual(
                self.successResultOf(self.login("alice", "alice-pw")), "alice"
            )
            self.successResultOf(self.login("alice", "alice-pw"))
        errors = [e for e in events if "error" in e and "line 2" in str(e["error"])]
        self.assertEqual(len(errors), 1)
        writeFile(self.path, f"bob:{BOB}\n")
        self.assertEqual(self.successResultOf(self.login("bob", "bob-pw")), "bob")

    def test_deletedFileKeepsUsers(self) -> None:
        """
        A password file that disappears leaves the old users in force.
        """
        self.path.unlink()
        self.assertEqual(self.successResultOf(self.login("alice", "alice-pw")), "alice")

    def test_concurrentLoginsShareOneRead(self) -> None:
        """
        Logins arriving while the file is being re-read wait for that read.
        """
        writeFile(self.path, f"bob:{BOB}\n")
        first = self.checker.requestAvatarId(creds("bob", "bob-pw"))
        second = self.checker.requestAvatarId(creds("bob", "bob-pw"))
        self.assertEqual([f for f, _, _ in self.runner.calls], [htpasswd._load])
        self.runner.runAll()
        self.assertEqual(self.successResultOf(first), "bob")
        self.assertEqual(self.successResultOf(second), "bob")

    def test_recipientLookupRereads(self) -> None:
        """A recipient lookup re-reads a changed file in the runner, as a login does."""
        writeFile(self.path, f"alice:{ALICE}\nbob:{BOB}\n")
        d = self.checker.lookupRecipient("Bob@example.org")
        self.assertEqual([f for f, _, _ in self.runner.calls], [htpasswd._load])
        self.runner.runAll()
        self.assertEqual(self.successResultOf(d), "bob")
        d = self.checker.lookupRecipient("bob@example.org")
        self.assertEqual(self.runner.calls, [])
        self.assertEqual(self.successResultOf(d), "bob")

    def test_reload(self) -> None:
        """
        C{reload()} re-reads the file and reports whether it is in force.
        """
        d = self.checker.reload()
        self.runner.runAll()
        self.assertIs(self.successResultOf(d), True)
        writeFile(self.path, "bob\n")
        d = self.checker.reload()
        self.runner.runAll()
        self.assertIs(self.successResultOf(d), False)
        self.assertEqual(list(self.checker.users.entries), ["alice"])

    def test_synchronousRunner(self) -> None:
        """
        Reloading works when the blocking runner answers at once.
        """
        checker = HtpasswdChecker(str(self.path), runBlocking=runNow)
        writeFile(self.path, f"bob:{BOB}\n")
        d = checker.requestAvatarId(creds("bob", "bob-pw"))
        self.assertEqual(self.successResultOf(d), "bob")
        writeFile(self.path, f"alice:{ALICE}\n")
        self.assertIs(self.successResultOf(checker.reload()), True)
        self.assertEqual(list(checker.users.entries), ["alice"])

    def test_reloadAll(self) -> None:
        """
        L{reloadAll} (the SIGHUP hook) re-reads every live checker's file.
        """
        self.patch(htpasswd, "_live", WeakSet([self.checker]))
        otherPath = Path(self.mktemp())
        otherPath.write_text(f"alice:{ALICE}\n")
        other = HtpasswdChecker(str(otherPath), runBlocking=self.runner)
        self.path.write_text(f"bob:{BOB}\n")
        otherPath.write_text(f"carol:{BOB}\n")
        d = reloadAll()
        self.runner.runAll()
        self.successResultOf(d)
        self.assertEqual(list(self.checker.users.entries), ["bob"])
        self.assertEqual(list(other.users.entries), ["carol"])


class PoolTests(TestCase):
    """
    With the real shared pool, verification happens off the reactor thread.
    """

    def test_verifiesInPool(self) -> Deferred[None]:
        """
        The hash is computed in a pool thread and the result comes back.
        """
        path = Path(self.mktemp())
        path.write_text(f"alice:{ALICE}\n")
        checker = HtpasswdChecker(str(path))
        threads = []
        real = htpasswd.verifyPassword

        def recording(hashed: str, password: str) -> bool:
            threads.append(threading.current_thread())
            return real(hashed, password)

        self.patch(htpasswd, "verifyPassword", recording)
        d = checker.requestAvatarId(creds(b"alice", b"alice-pw"))

        def check(avatarId: object) -> None:
            self.assertEqual(avatarId, b"alice")
            self.assertEqual(len(threads), 1)
            self.assertIsNot(threads[0], threading.main_thread())

        return d.addCallback(check)


class CommandTests(SynchronousTestCase):
    """
    C{np-htpasswd} adds, updates and deletes users.
    """

    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)
        self.prompts: list[str] = []
        self.typed = ["pw-one", "pw-one"]

    def command(self, *argv: str) -> int:
        """
        Run C{np-htpasswd} with C{argv}, typing C{self.typed} at the prompts.
        """

        def fakeGetpass(prompt: str) -> str:
            self.prompts.append(prompt)
            return self.typed.pop(0)

        self.patch(cli, "getpass", fakeGetpass)
        return cli.main(list(argv))

    def users(self) -> dict[str, str]:
        """
        The users in the file, as the checker loads them.
        """
        return dict(parseHtpasswd(self.path.read_bytes(), "f").entries)

    def test_create(self) -> None:
        """A new file is created 0600 with a bcrypt line; the password asked twice."""
        # A new file is created mode 0600 with a bcrypt line that verifies; the password
        # is prompted for twice.
        self.assertEqual(self.command("--cost", "4", str(self.path), "alice"), 0)
        self.assertEqual(len(self.prompts), 2)
        self.assertEqual(stat.S_IMODE(self.path.stat().st_mode), 0o600)
        hashed = self.users()["alice"]
        self.assertTrue(hashed.startswith("$2b$04$"))
        self.assertTrue(verifyPassword(hashed, "pw-one"))
        self.assertIn("Adding password for user alice", self.stdout.getvalue())

    def test_defaultCost(self) -> None:
        """
        Without C{--cost}, bcrypt cost 12 is used.
        """
        self.assertEqual(self.command(str(self.path), "alice"), 0)
        self.assertTrue(self.users()["alice"].startswith("$2b$12$"))

    def test_updateKeepsOtherLines(self) -> None:
        """Updating a user replaces its line only; comments, users, mode are kept."""
        # Updating a user replaces its line only; comments, other users (even weak ones)
        # and the file's mode are kept.
        self.path.write_text(
            f"# team\nalice:{ALICE}\nold:$apr1$x$y\nbob:{BOB}\nalice:{ALICE}"
        )
        self.path.chmod(0o640)
        self.assertEqual(self.command("--cost", "4", str(self.path), "alice"), 0)
        lines = self.path.read_text().splitlines()
        self.assertEqual(lines[0], "# team")
        self.assertTrue(lines[1].startswith("alice:$2b$04$"))
        self.assertEqual(lines[2:], ["old:$apr1$x$y", f"bob:{BOB}"])
        self.assertEqual(stat.S_IMODE(self.path.stat().st_mode), 0o640)
        self.assertIn("Updating", self.stdout.getvalue())
        self.assertIn("will not load", self.stderr.getvalue())

    def test_argon2(self) -> None:
        """
        C{--argon2} writes an argon2id hash.
        """
        self.assertEqual(self.command("--argon2", str(self.path), "bob"), 0)
        hashed = self.users()["bob"]
        self.assertTrue(hashed.startswith("$argon2id$"))
        self.assertTrue(verifyPassword(hashed, "pw-one"))

    def test_delete(self) -> None:
        """
        C{-D} removes the user and nothing else; an absent user is an error.
        """
        self.path.write_text(f"alice:{ALICE}\nbob:{BOB}\n")
        self.assertEqual(self.command("-D", str(self.path), "alice"), 0)
        self.assertEqual(self.users(), {"bob": BOB})
        self.assertEqual(self.prompts, [])
        self.assertEqual(self.command("-D", str(self.path), "alice"), 1)
        self.assertIn("'alice' not found", self.stderr.getvalue())

    def test_refusals(self) -> None:
        """Empty, blank, mismatched and over-long passwords are refused, unwritten."""
        # Empty, whitespace, mismatched and over-long bcrypt passwords are refused with
        # a message, and no file is written.
        cases = {
            ("", ""): "empty passwords",
            ("  ", "  "): "empty passwords",
            ("a", "b"): "do not match",
            ("x" * 73, "x" * 73): "72 bytes",
        }
        for typed, message in cases.items():
            self.typed = list(typed)
            self.assertEqual(self.command("--cost", "4", str(self.path), "alice"), 1)
            self.assertIn(message, self.stderr.getvalue())
        self.assertFalse(self.path.exists())
        self.assertEqual(os.listdir(self.path.parent), [])

    def test_badUserAndCost(self) -> None:
        """Bad user names (colon, leading #, too long) and costs are refused."""
        # User names with C{:}, a leading C{#} or over 256 characters, and out-of-range
        # costs are refused.
        self.assertEqual(self.command(str(self.path), "al:ice"), 1)
        self.assertEqual(self.command(str(self.path), "#alice"), 1)
        self.assertEqual(self.command(str(self.path), "a" * 257), 1)
        self.assertEqual(self.command("--cost", "3", str(self.path), "alice"), 1)
        self.assertEqual(
            self.command("--argon2", "--cost", "5", str(self.path), "a"), 1
        )
        self.assertFalse(self.path.exists())


class CommandProcessTests(TestCase):
    """
    C{np-htpasswd --stdin} as a real process, as scripts use it.
    """

    def runProcess(self, path: Path, password: bytes, *argv: str) -> Any:
        """
        Run C{python -m netplugins.htpasswd --stdin ... PATH alice}.
        """
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "netplugins.htpasswd",
                "--stdin",
                *argv,
                str(path),
                "alice",
            ],
            input=password,
            capture_output=True,
            cwd=ROOT,
            timeout=60,
        )

    def test_stdin(self) -> None:
        """
        One line of standard input is the password; its newline is not.
        """
        path = Path(self.mktemp()).resolve()
        result = self.runProcess(path, "pässword\nignored\n".encode(), "--cost", "4")
        self.assertEqual(result.returncode, 0, result.stderr)
        checker = HtpasswdChecker(str(path), runBlocking=runNow)
        d = checker.requestAvatarId(creds(b"alice", "pässword".encode()))
        self.assertEqual(self.successResultOf(d), b"alice")

    def test_stdinEmpty(self) -> None:
        """
        An empty line on standard input is refused with exit status 1.
        """
        path = Path(self.mktemp()).resolve()
        result = self.runProcess(path, b"\n")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"empty passwords are not allowed", result.stderr)
        self.assertFalse(path.exists())
