# -*- test-case-name: tests.test_aliases -*-
"""
Local mail aliases, in the syntax of C{/etc/aliases}::

    # Lines starting with # are comments.
    postmaster: alice
    sales: bob, carol@example.org,
        dave                  # a line starting with white space continues

A name is a local part, matched in any case in every local domain; its
targets are local user names (delivered in the domain the alias was addressed
to), addresses in a local domain, or other aliases (expanded in turn, at most
L{MAX_DEPTH} deep; an alias reached again in its own expansion is taken as a
user name, as sendmail does for C{alice: alice, backup}).  Programs
(C{|command}), C{:include:} lists and C{/file} targets are refused: the file
names mailboxes, it never runs anything or writes anywhere.

L{AliasFile} holds the table of one file: loaded when it is made (a bad file
raises L{AliasError}) and re-read, as the htpasswd checker's file is, when its
size, mtime or inode changes; the check runs in the blocking pool at each
lookup, so a slow disk never stalls the reactor.  A new file that does not
load is logged and the previous table stays in force.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from netplugins.cred._reload import follow, reloadWhileAlive
from netplugins.files import Signature, fileSignature, signatureOf
from netplugins.threads import deferToBlocking

#: How deep aliases may nest (an alias of an alias is 2).
MAX_DEPTH = 10
#: How many targets one expansion may visit, duplicates included.
MAX_EXPANSION = 1000

Table = Mapping[str, tuple[str, ...]]


class AliasError(ValueError):
    """
    An aliases file that cannot be used, or an alias that cannot be expanded;
    the message is one line.
    """


def _checkTarget(target: str) -> str | None:
    """
    Why C{target} cannot be an alias target, or C{None} if it can.
    """
    if target.startswith(("|", '"|')):
        return "program targets (|command) are not supported"
    if target.lower().startswith(":include:"):
        return ":include: targets are not supported"
    if target.startswith(("/", '"/')):
        return "file targets (/path) are not supported"
    if not target.isascii() or not target.isprintable() or " " in target:
        return f"bad target {target!r}"
    if any(c in target for c in '"<>:\\'):
        return f"bad target {target!r}"
    local, at, domain = target.rpartition("@")
    if at and (not local or not domain):
        return f"bad target {target!r}"
    return None


def parseAliases(text: str, source: str) -> dict[str, tuple[str, ...]]:
    """
    The aliases of C{text}: each name (lower case) to its targets, in order.

    @param source: how errors name the file.
    @raise AliasError: naming the first line that cannot be used.
    """
    table: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, line in enumerate(text.splitlines(), 1):

        def refuse(why: str, number: int = number, line: str = line) -> AliasError:
            return AliasError(f"{source}, line {number}: {why}: {line.strip()!r}")

        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if current is None:
                raise refuse("continuation line without an alias")
            targets = stripped
        else:
            name, colon, targets = line.partition(":")
            name = name.strip().lower()
            if not colon or not name or any(c in name for c in ' \t@"|/'):
                raise refuse("expected 'name: target, ...'")
            if name in table:
                raise refuse(f"alias {name!r} given twice")
            current = table[name] = []
        for target in targets.split(","):
            target = target.strip()
            if not target:
                continue
            why = _checkTarget(target)
            if why is not None:
                raise refuse(why)
            current.append(target)
    for name, found in table.items():
        if not found:
            raise AliasError(f"{source}: alias {name!r} has no target")
    return {name: tuple(found) for name, found in table.items()}


def expandAlias(
    table: Table, local: str, domain: str, isLocal: Callable[[str], bool]
) -> list[str] | None:
    """
    The addresses mail for C{local@domain} goes to when C{local} is an alias
    of C{table} (C{domain} being local): its targets, aliases among them
    expanded, each address once, in order.  Bare names are taken in the
    domain of the alias that names them.

    @return: C{None} when C{local} is not an alias.
    @raise AliasError: when the expansion nests deeper than L{MAX_DEPTH} or
        visits more than L{MAX_EXPANSION} targets.
    """
    start = local.lower()
    if start not in table:
        return None
    found: dict[str, None] = {}
    visited = 0

    def walk(name: str, domain: str, chain: frozenset[str]) -> None:
        nonlocal visited
        if len(chain) > MAX_DEPTH:
            raise AliasError(f"alias {start!r} nests deeper than {MAX_DEPTH}")
        for target in table[name]:
            visited += 1
            if visited > MAX_EXPANSION:
                raise AliasError(
                    f"alias {start!r} expands to over {MAX_EXPANSION} targets"
                )
            targetLocal, at, targetDomain = target.rpartition("@")
            if not at:
                targetLocal, targetDomain = target, domain
            targetDomain = targetDomain.lower().rstrip(".")
            key = targetLocal.lower()
            if key in table and key not in chain and isLocal(targetDomain):
                walk(key, targetDomain, chain | {key})
            else:
                found.setdefault(f"{targetLocal}@{targetDomain}")

    walk(start, domain, frozenset([start]))
    return list(found)


@frozen
class _Loaded:
    signature: Signature | None
    table: dict[str, tuple[str, ...]] | None
    error: str | None


def _load(path: str) -> _Loaded:
    """
    Read and parse C{path}.  Blocking; never raises.
    """
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except OSError as e:
        return _Loaded(fileSignature(path), None, f"{path}: cannot read: {e.strerror}")
    signature = signatureOf(st)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _Loaded(signature, None, f"{path}: not UTF-8")
    try:
        return _Loaded(signature, parseAliases(text, path), None)
    except AliasError as e:
        return _Loaded(signature, None, str(e))


def _refresh(path: str, signature: Signature | None) -> _Loaded | None:
    """
    C{path} loaded again if it no longer has C{signature}; else C{None}.
    Blocking; never raises.
    """
    if fileSignature(path) == signature:
        return None
    return _load(path)


def checkAliasFile(path: str) -> str:
    """
    C{path}, if it loads as an aliases file: the check of C{--aliases}.

    @raise AliasError: with the loader's one-line reason.
    """
    loaded = _load(path)
    if loaded.table is None:
        raise AliasError(loaded.error)
    return path


class AliasFile:
    """
    The aliases of one file, kept up to date with it.

    @ivar path: the file.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        runBlocking: Callable[..., Deferred[Any]] = deferToBlocking,
    ) -> None:
        """
        Load C{path} now (blocking: this runs while the service is made).

        @param runBlocking: how to run blocking calls, like L{deferToBlocking}.
        @raise AliasError: if the file cannot be read or does not load.
        """
        self.path = path
        self._runBlocking = runBlocking
        loaded = _load(path)
        if loaded.table is None:
            raise AliasError(loaded.error)
        self._table: Table = loaded.table
        self._signature = loaded.signature
        self._checking: Deferred[None] | None = None
        reloadWhileAlive(self, AliasFile.reload)

    @property
    def table(self) -> Table:
        """
        The aliases in force.
        """
        return self._table

    def current(self) -> Deferred[Table]:
        """
        The aliases in force, once the file has been checked (in the blocking
        pool) and re-read if it changed.  Never fails.
        """
        if self._checking is None:
            d = self._runBlocking(_refresh, self.path, self._signature)
            # Set before the callbacks, which clear it, in case d has fired.
            self._checking = d
            d.addCallbacks(self._cbRefreshed, self._ebRefreshed)
            waiting = follow(d)
        else:
            # Lookups arriving during a check share it.
            waiting = follow(self._checking)
        return waiting.addCallback(lambda _: self._table)

    def reload(self) -> Deferred[Table]:
        """
        Re-read the file now, changed or not (what SIGHUP does); a bad file
        keeps the aliases in force.  Never fails.
        """
        self._signature = None
        return self.current()

    def _cbRefreshed(self, loaded: _Loaded | None) -> None:
        self._checking = None
        if loaded is None:
            return
        self._signature = loaded.signature
        if loaded.table is None:
            self.log.error(
                "aliases: keeping the previous {count} aliases: {error}",
                count=len(self._table),
                error=loaded.error,
            )
            return
        self._table = loaded.table
        self.log.info(
            "aliases: loaded {count} aliases from {path}",
            count=len(loaded.table),
            path=self.path,
        )

    def _ebRefreshed(self, failure: Failure) -> None:
        self._checking = None
        self.log.failure("aliases: checking {path} failed", failure, path=self.path)
