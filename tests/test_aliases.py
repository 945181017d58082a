"""
Tests for L{netplugins.mail.aliases}: the C{/etc/aliases} parser, expansion,
reloading, and L{LocalUsers.recipients} through aliases.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netplugins.mail.aliases import (
    MAX_DEPTH,
    AliasError,
    AliasFile,
    checkAliasFile,
    expandAlias,
    parseAliases,
)
from netplugins.mail.users import LocalUsers
from netplugins.reload import reloadAll
from netplugins.tap.smtp import Options
from tests.mailfixtures import DOMAIN, inline
from tests.test_mailusers import Directory


def isLocal(domain: str) -> bool:
    """
    Whether C{domain} is one of the tests' local domains.
    """
    return domain in ("example.org", "example.net")


def result(d: Deferred[Any]) -> Any:
    """
    What an already-fired L{Deferred} holds.
    """
    found: list[Any] = []
    d.addBoth(found.append)
    [value] = found
    return value


class ParseTests(SynchronousTestCase):
    """
    L{parseAliases} reads C{/etc/aliases} syntax and refuses what it does not run.
    """

    def test_parse(self) -> None:
        """Comments, continuation lines, case and trailing commas are understood."""
        text = (
            "# The aliases.\n"
            "\n"
            "Postmaster: alice\n"
            "sales: bob, carol@example.org,\n"
            "  dave,\n"
            "\t# a comment between continuations\n"
            "\terin\n"
        )
        self.assertEqual(
            parseAliases(text, "aliases"),
            {
                "postmaster": ("alice",),
                "sales": ("bob", "carol@example.org", "dave", "erin"),
            },
        )

    def test_refused(self) -> None:
        """Programs, includes, files and bad lines: one-line errors naming the line."""
        cases = [
            ("a: bob\nb: |/usr/bin/x\n", "line 2: program targets (|command)"),
            ('a: "|/usr/bin/x y"\n', "line 1: program targets (|command)"),
            ("a: :include:/etc/list\n", "line 1: :include: targets"),
            ("a: bob,\n  /var/mail/a\n", "line 2: file targets (/path)"),
            ("  bob\n", "line 1: continuation line without an alias"),
            ("a bob\n", "line 1: expected 'name: target, ...'"),
            ("a: bob\nA: carol\n", "line 2: alias 'a' given twice"),
            ("a: bob carol\n", "line 1: bad target 'bob carol'"),
        ]
        for text, expected in cases:
            error = self.assertRaises(AliasError, parseAliases, text, "aliases")
            self.assertIn(f"aliases, {expected}", str(error))
            self.assertNotIn("\n", str(error))
        self.assertEqual(
            str(self.assertRaises(AliasError, parseAliases, "a:\n", "f")),
            "f: alias 'a' has no target",
        )


class ExpandTests(SynchronousTestCase):
    """
    L{expandAlias} expands recursively, each address once, within bounds.
    """

    def test_notAnAlias(self) -> None:
        """A name that is no alias expands to None."""
        self.assertIsNone(expandAlias({"a": ("bob",)}, "bob", "example.org", isLocal))

    def test_nested(self) -> None:
        """Aliases of aliases expand; bare names take the domain; duplicates go."""
        table = {
            "staff": ("sales", "alice", "Bob@Example.NET"),
            "sales": ("bob@example.net", "carol", "alice"),
            "bob": ("robert",),
        }
        self.assertEqual(
            expandAlias(table, "Staff", "example.org", isLocal),
            [
                "robert@example.net",
                "carol@example.org",
                "alice@example.org",
            ],
        )

    def test_foreignNotExpanded(self) -> None:
        """A target in a foreign domain is returned as it is, not expanded."""
        table = {"a": ("b@remote.test",), "b": ("carol",)}
        self.assertEqual(
            expandAlias(table, "a", "example.org", isLocal), ["b@remote.test"]
        )

    def test_loops(self) -> None:
        """An alias met again in its own expansion is a user name: loops end."""
        table = {"a": ("a", "b"), "b": ("a", "c")}
        self.assertEqual(
            expandAlias(table, "a", "example.org", isLocal),
            ["a@example.org", "c@example.org"],
        )

    def test_depth(self) -> None:
        """An expansion deeper than MAX_DEPTH is refused."""
        table = {f"a{i}": (f"a{i + 1}",) for i in range(MAX_DEPTH + 1)}
        error = self.assertRaises(
            AliasError, expandAlias, table, "a0", "example.org", isLocal
        )
        self.assertEqual(str(error), f"alias 'a0' nests deeper than {MAX_DEPTH}")
        table = {f"a{i}": (f"a{i + 1}",) for i in range(MAX_DEPTH)}
        self.assertEqual(
            expandAlias(table, "a0", "example.org", isLocal),
            [f"a{MAX_DEPTH}@example.org"],
        )

    def test_breadth(self) -> None:
        """An expansion that fans out without end is refused."""
        table = {
            f"{x}{i}": (f"a{i + 1}", f"b{i + 1}")
            for i in range(MAX_DEPTH - 1)
            for x in "ab"
        }
        self.assertRaises(AliasError, expandAlias, table, "a0", "example.org", isLocal)


class AliasFileTests(SynchronousTestCase):
    """
    L{AliasFile} loads at once and follows changes to its file.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.write("sales: alice, bob\n")
        self.calls: list[str] = []

    def write(self, text: str) -> None:
        """
        Replace the aliases file, with a new mtime.
        """
        with open(self.path, "w") as f:
            f.write(text)
        stat = os.stat(self.path)
        bump = getattr(self, "bump", 0) + 1
        self.bump = bump
        os.utime(self.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 10**9))

    def runBlocking(self, f: Any, *args: Any) -> Deferred[Any]:
        """
        Run C{f} at once, recording it.
        """
        self.calls.append(f.__name__)
        return inline(f, *args)

    def test_badFileRefused(self) -> None:
        """A file that does not load is refused when made, in one line."""
        self.write("a: bob\nb: |x\n")
        error = self.assertRaises(AliasError, AliasFile, self.path)
        self.assertEqual(
            str(error),
            f"{self.path}, line 2: program targets (|command) are not supported: "
            "'b: |x'",
        )
        self.assertRaises(AliasError, AliasFile, self.path + ".missing")

    def test_reloadsOnChange(self) -> None:
        """Each lookup checks the file in the blocking pool; a change is read."""
        aliases = AliasFile(self.path, runBlocking=self.runBlocking)
        self.assertEqual(result(aliases.current()), {"sales": ("alice", "bob")})
        self.write("sales: carol\n")
        self.assertEqual(result(aliases.current()), {"sales": ("carol",)})
        self.assertEqual(self.calls, ["_refresh", "_refresh"])

    def test_reloadsOnSIGHUP(self) -> None:
        """SIGHUP re-reads the file even when its change went unseen."""
        aliases = AliasFile(self.path, runBlocking=self.runBlocking)
        before = os.stat(self.path)
        with open(self.path, "w") as f:
            f.write("sales: carol, dan\n")
        os.utime(self.path, ns=(before.st_atime_ns, before.st_mtime_ns))
        self.assertEqual(result(aliases.current()), {"sales": ("alice", "bob")})
        reloadAll()
        self.assertEqual(aliases.table, {"sales": ("carol", "dan")})

    def test_badNewFileKeepsOld(self) -> None:
        """A changed file that does not load is logged; the old table stays."""
        aliases = AliasFile(self.path, runBlocking=self.runBlocking)
        self.write("sales: :include:/etc/list\n")
        with capturedLogs() as events:
            table = result(aliases.current())
            self.assertEqual(result(aliases.current()), table)
        self.assertEqual(table, {"sales": ("alice", "bob")})
        [event] = [e for e in events if "error" in e]
        self.assertIn("line 1: :include: targets are not supported", event["error"])

    def test_sharedCheck(self) -> None:
        """Lookups during a check wait for it rather than starting another."""
        pending: list[Deferred[Any]] = []

        def later(f: Any, *args: Any) -> Deferred[Any]:
            pending.append(Deferred())
            return pending[-1].addCallback(lambda _: f(*args))

        aliases = AliasFile(self.path, runBlocking=later)
        first, second = aliases.current(), aliases.current()
        self.assertEqual(len(pending), 1)
        pending[0].callback(None)
        self.assertEqual(result(first), result(second))

    def test_option(self) -> None:
        """np-smtp --aliases with a bad file is a one-line usage error."""
        self.write("ok: alice\n/etc/passwd: alice\n")
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--aliases", self.path]
        )
        self.assertIn(f"{self.path}, line 2: expected 'name: target, ...'", str(error))
        self.assertNotIn("\n", str(error))
        self.write("ok: alice\n")
        self.assertEqual(checkAliasFile(self.path), self.path)


class RecipientsTests(SynchronousTestCase):
    """
    L{LocalUsers.recipients} and L{LocalUsers.postmaster} through aliases.
    """

    def users(self, text: str) -> LocalUsers:
        """
        Users alice and bob of DOMAIN, with the aliases of C{text}.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        directory = Directory(recipients={f"{u}@{DOMAIN}": u for u in ("alice", "bob")})
        return LocalUsers([DOMAIN], [directory], AliasFile(path, runBlocking=inline))

    def test_expanded(self) -> None:
        """Aliases give their targets' Maildirs, each once; users are unchanged."""
        users = self.users("team: alice, bob, Lead\nlead: alice@example.org\n")
        self.assertEqual(
            [
                result(users.recipients(address))
                for address in ["Team@example.org", "bob@example.org", "x@example.org"]
            ],
            [["alice", "bob"], ["bob"], None],
        )

    def test_unknownTarget(self) -> None:
        """An alias with a target that is no user is refused whole, and logged."""
        users = self.users("team: alice, carol, x@remote.test\n")
        with capturedLogs() as events:
            self.assertIsNone(result(users.recipients("team@example.org")))
        [event] = [e for e in events if "unknown" in e]
        self.assertEqual(
            (event["address"], event["unknown"]),
            ("team@example.org", "carol@example.org, x@remote.test"),
        )

    def test_postmaster(self) -> None:
        """A postmaster alias is followed; without one, or broken, the fallback."""
        self.assertEqual(
            result(self.users("postmaster: bob\n").postmaster("postmaster")), ["bob"]
        )
        self.assertEqual(result(self.users("a: bob\n").postmaster("admin")), ["admin"])
        self.assertEqual(
            result(self.users("postmaster: nobody\n").postmaster("admin")), ["admin"]
        )
        plain = LocalUsers([DOMAIN], [])
        self.assertEqual(result(plain.postmaster("admin")), ["admin"])

    def test_notAliasedWithoutFile(self) -> None:
        """Without an aliases file, recipients are the one user resolved."""
        directory = Directory(recipients={f"alice@{DOMAIN}": "alice"})
        users = LocalUsers([DOMAIN], [directory])
        self.assertEqual(result(users.recipients("alice@example.org")), ["alice"])
