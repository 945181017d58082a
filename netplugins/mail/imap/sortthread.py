"""
np-imap's SORT and THREAD commands (RFC 5256) and their UID forms, on the
selected mailbox: the messages a search selects, ordered by
L{netplugins.mail.imap.sort} or threaded by L{netplugins.mail.imap.thread}.

A message's sort fields are read from its header once per session and kept
(at most L{MAX_CACHED} messages' worth), so that a client re-sorting a view
does not read the mailbox again; contents are read a batch at a time as
SEARCH reads them.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from netplugins.mail.imap.fetch import parseEntity, splitEntity
from netplugins.mail.imap.parse import Command, IMAPSyntaxError, Token, astring
from netplugins.mail.imap.search import Candidate, matches, parseSearch
from netplugins.mail.imap.selected import SelectedCommands, _batch
from netplugins.mail.imap.session import CommandError
from netplugins.mail.imap.sort import (
    SortFields,
    SortMessage,
    parseSortCriteria,
    sortFields,
    sortMessages,
)
from netplugins.mail.imap.thread import THREAD_ALGORITHMS, formatThreads, thread
from netplugins.mail.maildir.folder import Message

#: The most messages whose sort fields a session keeps.
MAX_CACHED = 50_000

CAPABILITIES = ("SORT", *(f"THREAD={a}" for a in THREAD_ALGORITHMS))


def _checkCharset(token: Token) -> None:
    charset = astring(token).decode("ascii", "replace").upper()
    if charset not in ("UTF-8", "US-ASCII"):
        raise CommandError("[BADCHARSET (UTF-8 US-ASCII)] Unknown charset")


class SortCommands(SelectedCommands):
    """
    SORT, THREAD, UID SORT and UID THREAD.
    """

    _sortCache: dict[tuple[int, str], SortFields] | None = None

    def do_SORT(self, command: Command, byUid: bool = False) -> Deferred[bytes]:
        if len(command.args) < 3:
            raise IMAPSyntaxError("SORT needs criteria, a charset and search keys")
        criteria = parseSortCriteria(command.args[0])
        _checkCharset(command.args[1])
        key, needsContent = parseSearch(list(command.args[2:]))

        def report(found: list[SortMessage]) -> bytes:
            numbers = sortMessages(found, criteria)
            self._untagged(b" ".join([b"SORT", *(b"%d" % n for n in numbers)]))
            return b"Sort completed."

        return self._sortable(key, needsContent, byUid).addCallback(report)

    def do_UID_SORT(self, command: Command) -> Deferred[bytes]:
        return self.do_SORT(command, byUid=True)

    def do_THREAD(self, command: Command, byUid: bool = False) -> Deferred[bytes]:
        if len(command.args) < 3 or not isinstance(command.args[0], str):
            raise IMAPSyntaxError(
                "THREAD needs an algorithm, a charset and search keys"
            )
        algorithm = command.args[0].upper()
        if algorithm not in THREAD_ALGORITHMS:
            raise IMAPSyntaxError("unknown threading algorithm")
        _checkCharset(command.args[1])
        key, needsContent = parseSearch(list(command.args[2:]))

        def report(found: list[SortMessage]) -> bytes:
            threads = formatThreads(thread(algorithm, found))
            self._untagged(b"THREAD " + threads if threads else b"THREAD")
            return b"Thread completed."

        return self._sortable(key, needsContent, byUid).addCallback(report)

    def do_UID_THREAD(self, command: Command) -> Deferred[bytes]:
        return self.do_THREAD(command, byUid=True)

    def _sortable(
        self, key: Any, needsContent: bool, byUid: bool
    ) -> Deferred[list[SortMessage]]:
        """
        The messages of the selected mailbox that C{key} matches, with their
        sort fields, in mailbox order.
        """
        selected = self.selected
        assert selected is not None
        if self._sortCache is None or len(self._sortCache) > MAX_CACHED:
            self._sortCache = {}
        cache = self._sortCache
        messages = list(enumerate(selected.messages, 1))
        largestUid = messages[-1][1].uid if messages else 0
        found: list[SortMessage] = []

        def visit(seq: int, message: Message, content: bytes | None) -> None:
            entity = None
            if content is not None:
                entity = parseEntity(content) if needsContent else splitEntity(content)
            candidate = Candidate(
                seq,
                message.uid,
                frozenset(selected.flagsOf(message)),
                message.internalDate,
                self._sizeOf(message, content),
                entity,
                modseq=message.modseq,
            )
            if not matches(key, candidate, len(messages), largestUid):
                return
            cacheKey = (message.uid, message.key)
            fields = cache.get(cacheKey)
            if fields is None:
                assert entity is not None
                fields = cache[cacheKey] = sortFields(entity, message.internalDate)
            found.append(
                SortMessage(
                    message.uid if byUid else seq,
                    fields,
                    candidate.size,
                    message.internalDate,
                )
            )

        def needs(message: Message) -> bool:
            return needsContent or (message.uid, message.key) not in cache

        def visitCached(_: object, seq: int, message: Message) -> None:
            visit(seq, message, None)

        def visitBatch(loaded: list[tuple[int, Message, bytes]]) -> None:
            for seq, message, content in loaded:
                visit(seq, message, content)

        d: Deferred[Any] = succeed(None)
        index = 0
        while index < len(messages):
            batch = _batch(messages, index, needs)
            if batch:
                d.addCallback(self._readNextBatch, batch)
                d.addCallback(visitBatch)
                index += len(batch)
            else:
                seq, message = messages[index]
                d.addCallback(visitCached, seq, message)
                index += 1
        return d.addCallback(lambda _: found)
