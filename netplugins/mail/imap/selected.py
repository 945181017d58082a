"""
np-imap's commands on the selected mailbox: SELECT and EXAMINE (which enter
that state), IDLE, CLOSE, UNSELECT, EXPUNGE, FETCH, STORE, COPY, MOVE
(RFC 6851) and SEARCH, with their UID forms.

FETCH and SEARCH read message contents only when an item needs them, a batch
of messages per trip to the store's thread pool; FLAGS, UID, INTERNALDATE and
RFC822.SIZE come from the scan (the size from the file name, C{,W=}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed

from netplugins.mail.imap.condstore import (
    Qresync,
    formatRanges,
    parseFetchModifiers,
    parseSelectParameters,
    parseStoreModifiers,
    restrict,
    setRanges,
    vanishedLines,
)
from netplugins.mail.imap.fetch import (
    Entity,
    FetchItem,
    canonical,
    fetchValue,
    formatInternalDate,
    parseEntity,
    parseFetchItems,
    splitEntity,
)
from netplugins.mail.imap.notify import IdleWatch
from netplugins.mail.imap.parse import (
    Command,
    IMAPSyntaxError,
    Token,
    astring,
    formatSequenceSet,
    formatValue,
    parseSequenceSet,
)
from netplugins.mail.imap.search import Candidate, matches, parseSearch, usesModseq
from netplugins.mail.imap.session import (
    CommandError,
    Selected,
    SessionBase,
    lettersFor,
    noSuchMailbox,
    splitFlags,
    trap,
)
from netplugins.mail.maildir.errors import KeywordLimitError, NoSuchFolderError
from netplugins.mail.maildir.folder import Message
from netplugins.mail.maildir.modseq import (
    Ranges,
    complementRanges,
    intersectRanges,
    toRanges,
)

#: A FETCH or SEARCH reads message contents in batches of at most this many
#: messages and (unless one message is larger) bytes: one thread hop each.
BATCH_MESSAGES = 100
BATCH_BYTES = 1024 * 1024


def _batch(
    targets: list[tuple[int, Message]],
    index: int,
    needsContent: Callable[[Message], bool],
) -> list[tuple[int, Message]]:
    """
    The run of C{targets} from C{index} on whose contents are needed, within
    L{BATCH_MESSAGES} and L{BATCH_BYTES} (but at least one message).
    """
    batch: list[tuple[int, Message]] = []
    size = 0
    for seq, message in targets[index : index + BATCH_MESSAGES]:
        if not needsContent(message) or (batch and size + message.size > BATCH_BYTES):
            break
        batch.append((seq, message))
        size += message.size
    return batch


class SelectedCommands(SessionBase):
    """
    The commands on one selected mailbox.
    """

    def do_SELECT(self, command: Command, readOnly: bool = False) -> Deferred[bytes]:
        if len(command.args) not in (1, 2):
            raise IMAPSyntaxError("expected a mailbox name")
        qresync = None
        if len(command.args) == 2:
            parameters = parseSelectParameters(command.args[1])
            if parameters.qresync is not None and not self.qresync:
                raise IMAPSyntaxError("QRESYNC is not enabled")
            if parameters.condstore:
                self.condstore = True
            qresync = parameters.qresync
        if self.selected is not None:
            # RFC 7162's [CLOSED]: the old mailbox's responses end here.
            self._untagged(b"OK [CLOSED] Previous mailbox closed.")
        self.selected = None
        self.state = "authenticated"
        folder = self._folder(self._mailboxName(command.args[0]))
        d = folder.scan(claimNew=not readOnly)
        d.addErrback(noSuchMailbox)
        return d.addCallback(self._cbSelect, folder, readOnly, qresync)

    def do_EXAMINE(self, command: Command) -> Deferred[bytes]:
        return self.do_SELECT(command, readOnly=True)

    def _cbSelect(
        self, state: Any, folder: Any, readOnly: bool, qresync: Qresync | None
    ) -> Deferred[bytes] | bytes:
        selected = Selected(
            folder,
            readOnly,
            state.uidValidity,
            state.uidNext,
            list(state.messages),
            {m.uid for m in state.messages if m.recent},
        )
        selected.keywords = state.keywords
        selected.highestModseq = state.highestModseq
        self.selected = selected
        self.state = "selected"
        self._sendFlags(selected)
        self._untagged(b"%d EXISTS" % len(selected.messages))
        self._untagged(b"%d RECENT" % len(selected.recent))
        for seq, message in enumerate(selected.messages, 1):
            if "S" not in message.flags:
                self._untagged(b"OK [UNSEEN %d] First unseen." % seq)
                break
        self._untagged(b"OK [UIDVALIDITY %d] UIDs valid" % state.uidValidity)
        self._untagged(b"OK [UIDNEXT %d] Predicted next UID" % state.uidNext)
        # Every mailbox keeps mod-sequences: HIGHESTMODSEQ always, as RFC
        # 7162 section 3.1.2.1 asks, and never NOMODSEQ.
        self._untagged(b"OK [HIGHESTMODSEQ %d] Highest" % state.highestModseq)
        mode = b"[READ-ONLY]" if readOnly else b"[READ-WRITE]"
        text = mode + b" Select completed."
        if qresync is None or qresync.uidValidity != state.uidValidity:
            return text
        return self._resync(selected, qresync).addCallback(lambda _: text)

    def _resync(self, selected: Selected, qresync: Qresync) -> Deferred[None]:
        """
        RFC 7162 section 3.2.5: after SELECT's responses, the known UIDs
        expunged since the client's mod-sequence (C{VANISHED (EARLIER)}),
        then the messages changed since, with their UID, FLAGS and MODSEQ.
        """
        largest = selected.uidNext - 1
        d = self._vanishedSince(selected, qresync.modseq, qresync.knownUids, largest)

        def cbVanished(_: object) -> Deferred[None]:
            known = (
                setRanges(qresync.knownUids, largest)
                if qresync.knownUids is not None
                else None
            )
            lines = [
                [b"* " + self._flagsFetch(seq, m, modseq=True) + b"\r\n"]
                for seq, m in enumerate(selected.messages, 1)
                if m.modseq > qresync.modseq
                and (known is None or any(lo <= m.uid <= hi for lo, hi in known))
            ]
            return self._sendPaced(lines)

        return d.addCallback(cbVanished)

    def _vanishedSince(
        self, selected: Selected, modseq: int, within: Any, largest: int
    ) -> Deferred[None]:
        """
        Send C{* VANISHED (EARLIER)} for the UIDs (of sequence set
        C{within}, if given) expunged since C{modseq} that this session no
        longer lists.
        """

        def cbRanges(result: tuple[Ranges, int]) -> Deferred[None]:
            ranges = restrict(result[0], within, largest)
            listed = toRanges(m.uid for m in selected.messages)
            ranges = _without(ranges, listed)
            return self._sendPaced([[line] for line in vanishedLines(ranges, True)])

        return selected.folder.vanished(modseq).addCallback(cbRanges)

    def _sendPaced(self, lines: list[list[bytes]]) -> Deferred[None]:
        """
        Write C{lines} (pieces ended by CRLF), L{BATCH_MESSAGES} a write,
        waiting for the client to read between writes.
        """
        if not lines or self._closing:
            return succeed(None)
        if self.discipline.outputBlocked:
            return self._whenWritable().addCallback(lambda _: self._sendPaced(lines))
        self._sendLines(lines[:BATCH_MESSAGES])
        return self._sendPaced(lines[BATCH_MESSAGES:])

    def do_IDLE(self, command: Command) -> Deferred[bytes]:
        done: Deferred[bytes] = Deferred()

        def response(line: bytes) -> None:
            self._stopIdlePoll()
            self._setTimer(self.factory.config.idleTimeout)
            if line.strip().upper() == b"DONE":
                done.callback(b"Idle completed.")
            else:
                done.errback(IMAPSyntaxError("Expected DONE."))

        self._continuation = response
        self.sendLine(b"+ idling")
        self._setTimer(self.factory.config.idleCommandTimeout)
        if self.selected is not None:
            # New mail at once where inotify watches the folder, else polled.
            self._idlePoll = IdleWatch(
                self.factory, self.selected.folder.path, self._pollIdle
            )
        return done

    def _pollIdle(self) -> Deferred[None] | None:
        if self.selected is None or self._closing:
            return None
        return self._refresh().addErrback(
            lambda f: self.log.failure("np-imap: IDLE poll failed", f)
        )

    def _stopIdlePoll(self) -> None:
        if self._idlePoll is not None and self._idlePoll.running:
            self._idlePoll.stop()
        self._idlePoll = None

    def do_CLOSE(self, command: Command) -> Deferred[bytes] | bytes:
        selected = self.selected
        assert selected is not None
        self.selected = None
        self.state = "authenticated"
        if selected.readOnly:
            return b"Close completed."
        deleted = [m for m in selected.messages if "T" in m.flags]
        return selected.folder.delete(deleted).addCallback(
            lambda _: b"Close completed."
        )

    def do_UNSELECT(self, command: Command) -> bytes:
        self.selected = None
        self.state = "authenticated"
        return b"Unselect completed."

    def do_EXPUNGE(
        self, command: Command, uids: Token | None = None
    ) -> Deferred[bytes]:
        selected = self.selected
        assert selected is not None
        if selected.readOnly:
            raise CommandError("Mailbox is read-only.")
        chosen = (
            self._messagesFor(uids, True)
            if uids is not None
            else list(enumerate(selected.messages, 1))
        )
        deleted = [m for _, m in chosen if "T" in m.flags]
        d = selected.folder.delete(deleted)
        d.addCallback(lambda _: self._refresh())
        return d.addCallback(lambda _: self._expungeDone(selected))

    def _expungeDone(self, selected: Selected) -> bytes:
        # QRESYNC clients learn the new HIGHESTMODSEQ from the tagged OK,
        # as Dovecot tells them.
        if self.qresync:
            return b"[HIGHESTMODSEQ %d] Expunge completed." % selected.highestModseq
        return b"Expunge completed."

    def do_UID_EXPUNGE(self, command: Command) -> Deferred[bytes]:
        if len(command.args) != 1:
            raise IMAPSyntaxError("UID EXPUNGE needs a UID set")
        return self.do_EXPUNGE(command, command.args[0])

    def _sizeOf(self, message: Message, content: bytes | None) -> int:
        # The store's names record the CRLF size of what it wrote; only a
        # message another program delivered needs reading (once) to know it.
        if message.wireSize is not None:
            return message.wireSize
        key = (message.uid, message.key)
        if content is not None:
            self._sizes[key] = len(content)
        return self._sizes.get(key, message.size)

    def _needsContent(self, message: Message, items: list[FetchItem]) -> bool:
        return any(
            i.needsContent
            or (
                i.name == "RFC822.SIZE"
                and message.wireSize is None
                and (message.uid, message.key) not in self._sizes
            )
            for i in items
        )

    def _readBatch(
        self, targets: list[tuple[int, Message]]
    ) -> Deferred[list[tuple[int, Message, bytes]]]:
        """
        The contents of C{targets} (CRLF line ends) in one trip to the store's
        pool, leaving out messages another session expunged meanwhile.
        """
        assert self.selected is not None
        d = self.selected.folder.readMany([m for _, m in targets])
        return d.addCallback(
            lambda contents: [
                # A message whose served size is its file's (a BINARYMIME
                # one, bare CR and LF included) is served as it is.
                (
                    seq,
                    message,
                    content if message.wireSize == message.size else canonical(content),
                )
                for (seq, message), content in zip(targets, contents, strict=True)
                if content is not None
            ]
        )

    def _readNextBatch(
        self, _: object, targets: list[tuple[int, Message]]
    ) -> Deferred[list[tuple[int, Message, bytes]]]:
        return self._readBatch(targets)

    def do_FETCH(self, command: Command, byUid: bool = False) -> Deferred[bytes]:
        selected = self.selected
        assert selected is not None
        if len(command.args) not in (2, 3):
            raise IMAPSyntaxError("FETCH needs a message set and attributes")
        items = parseFetchItems(command.args[1])
        modifiers = (
            parseFetchModifiers(command.args[2]) if len(command.args) > 2 else None
        )
        if byUid and not any(i.name == "UID" for i in items):
            items.insert(0, FetchItem("UID"))
        targets = self._messagesFor(command.args[0], byUid)
        d: Deferred[Any] = succeed(None)
        if modifiers is not None and modifiers.changedSince is not None:
            since = modifiers.changedSince
            if modifiers.vanished:
                if not byUid or not self.qresync:
                    raise IMAPSyntaxError("VANISHED needs UID FETCH and QRESYNC")
                largest = selected.uidNext - 1
                d = self._vanishedSince(
                    selected, since, parseSequenceSet(command.args[0]), largest
                )
            targets = [(seq, m) for seq, m in targets if m.modseq > since]
            if not any(i.name == "MODSEQ" for i in items):
                items.append(FetchItem("MODSEQ"))
        if any(i.name == "MODSEQ" for i in items):
            self._enableCondstore()
        d.addCallback(lambda _: self._fetchEach(targets, items, 0))
        return d.addCallback(lambda _: b"Fetch completed.")

    def do_UID_FETCH(self, command: Command) -> Deferred[bytes]:
        return self.do_FETCH(command, byUid=True)

    def _fetchEach(
        self, targets: list[tuple[int, Message]], items: list[FetchItem], index: int
    ) -> Deferred[None]:
        # Messages whose contents are needed are read a batch at a time: one
        # thread hop per batch, memory bounded by the batch, reads pacing the
        # writes.
        # Lines that need no contents go out together too: one write per run
        # of them, not one per message.
        # No batch is made while the client has not read the last ones (the
        # transport's output is over its watermark): a FETCH 1:* of a large
        # mailbox queues one batch, not the mailbox.
        lines: list[list[bytes]] = []
        while index < len(targets) and not self._closing:
            if self.discipline.outputBlocked:
                self._sendLines(lines)
                return self._whenWritable().addCallback(
                    self._fetchNext, targets, items, index
                )
            batch = _batch(targets, index, lambda m: self._needsContent(m, items))
            if batch:
                self._sendLines(lines)
                d = self._readBatch(batch)
                d.addCallback(self._cbFetchBatch, items)
                return d.addCallback(
                    self._fetchNext, targets, items, index + len(batch)
                )
            seq, message = targets[index]
            lines.append(
                self._fetchLine(
                    seq, message, items, None, self._sizeOf(message, None), False
                )
            )
            index += 1
            if len(lines) >= BATCH_MESSAGES:
                self._sendLines(lines)
                lines = []
        self._sendLines(lines)
        return succeed(None)

    def _sendLines(self, lines: list[list[bytes]]) -> None:
        """
        Write C{lines}, each a list of pieces ended by CRLF, in order, in one
        transport write (a sequence: message contents are not copied into one
        string first).
        """
        if lines and not self._closing:
            self.transport.writeSequence([piece for line in lines for piece in line])

    def _fetchNext(
        self,
        _: object,
        targets: list[tuple[int, Message]],
        items: list[FetchItem],
        index: int,
    ) -> Deferred[None]:
        return self._fetchEach(targets, items, index)

    def _cbFetchBatch(
        self, loaded: list[tuple[int, Message, bytes]], items: list[FetchItem]
    ) -> Deferred[None]:
        selected = self.selected
        assert selected is not None
        marking: list[tuple[int, Message]] = []
        if not selected.readOnly and any(not i.peek for i in items):
            marking = [(seq, m) for seq, m, _ in loaded if "S" not in m.flags]
        d = self._markSeen(marking)
        return d.addCallback(self._writeBatch, loaded, items)

    def _markSeen(self, marking: list[tuple[int, Message]]) -> Deferred[set[int]]:
        """
        Add C{\\Seen} to C{marking} (a non-PEEK FETCH), one store call per
        resulting set of flags.

        @return: the UIDs whose flags changed.
        """
        selected = self.selected
        assert selected is not None
        groups: dict[str, list[tuple[int, Message]]] = {}
        for seq, message in marking:
            groups.setdefault(message.flags + "S", []).append((seq, message))
        d: Deferred[Any] = succeed(None)
        for flags, members in groups.items():
            d.addCallback(self._storeGroup, selected, flags, members)
        return d.addCallback(lambda _: {m.uid for _, m in marking})

    def _writeBatch(
        self,
        marked: set[int],
        loaded: list[tuple[int, Message, bytes]],
        items: list[FetchItem],
    ) -> None:
        selected = self.selected
        assert selected is not None
        entityOf = parseEntity if any(i.needsStructure for i in items) else splitEntity
        lines: list[list[bytes]] = []
        for seq, message, content in loaded:
            if (
                message.uid in marked
                and seq <= len(selected.messages)
                and selected.messages[seq - 1].uid == message.uid
            ):
                message = selected.messages[seq - 1]
            lines.append(
                self._fetchLine(
                    seq,
                    message,
                    items,
                    entityOf(content),
                    self._sizeOf(message, content),
                    message.uid in marked,
                )
            )
        self._sendLines(lines)

    def _fetchLine(
        self,
        seq: int,
        message: Message,
        items: list[FetchItem],
        entity: Entity | None,
        size: int,
        flagsChanged: bool,
    ) -> list[bytes]:
        """
        One C{* n FETCH (...)} response line with its CRLF, as pieces.
        """
        selected = self.selected
        assert selected is not None
        out: list[bytes] = [b"* %d FETCH (" % seq]
        names = {i.name for i in items}
        for item in items:
            if len(out) > 1:
                out.append(b" ")
            if item.name == "UID":
                out.append(b"UID %d" % message.uid)
            elif item.name == "FLAGS":
                out.append(b"FLAGS " + formatValue(selected.flagsOf(message)))
            elif item.name == "INTERNALDATE":
                out.append(
                    b"INTERNALDATE "
                    + formatValue(formatInternalDate(message.internalDate))
                )
            elif item.name == "RFC822.SIZE":
                out.append(b"RFC822.SIZE %d" % size)
            elif item.name == "MODSEQ":
                out.append(b"MODSEQ (%d)" % message.modseq)
            else:
                assert entity is not None
                label, value = fetchValue(item, entity)
                out.append(label.encode() + b" ")
                out.extend(value)
        if flagsChanged and "FLAGS" not in names:
            if len(out) > 1:
                out.append(b" ")
            out.append(b"FLAGS " + formatValue(selected.flagsOf(message)))
        if flagsChanged and self.condstore and "MODSEQ" not in names:
            out.append(b" MODSEQ (%d)" % message.modseq)
        out.append(b")\r\n")
        return out

    def do_STORE(self, command: Command, byUid: bool = False) -> Deferred[bytes]:
        selected = self.selected
        assert selected is not None
        args = list(command.args)
        unchangedSince = None
        if len(args) == 4:
            unchangedSince = parseStoreModifiers(args.pop(1))
        if len(args) != 3 or not isinstance(args[1], str):
            raise IMAPSyntaxError("STORE needs a message set, an item and flags")
        item = args[1].upper()
        silent = item.endswith(".SILENT")
        mode = item.removesuffix(".SILENT")
        if mode not in ("FLAGS", "+FLAGS", "-FLAGS"):
            raise IMAPSyntaxError("invalid STORE item")
        raw = args[2]
        flagTokens = raw if isinstance(raw, list) else [raw]
        names = [astring(f).decode("utf-8", "replace") for f in flagTokens]
        keywords = splitFlags(names)
        targets = self._messagesFor(args[0], byUid)
        if unchangedSince is not None:
            self._enableCondstore()
        if selected.readOnly:
            if unchangedSince is not None:
                raise CommandError("Mailbox is read-only.")
            # Nothing changes in an EXAMINEd mailbox; Dovecot says OK too.
            return succeed(b"Store completed.")
        missing = [k for k in keywords if k not in selected.keywords]
        if missing and mode != "-FLAGS":
            d = selected.folder.addKeywords(missing)
            d.addErrback(trap, KeywordLimitError, "[LIMIT] Too many keywords")
            d.addCallback(lambda known: self._reportKeywords(selected, known))
        else:
            d = succeed(None)
        refused: list[int] = []
        d.addCallback(
            lambda _: self._storeFlags(
                selected, targets, mode, names, silent, byUid, unchangedSince, refused
            )
        )
        return d.addCallback(lambda _: self._storeDone(refused, byUid))

    def _storeDone(self, refused: list[int], byUid: bool) -> bytes:
        """
        STORE's tagged text: RFC 7162's C{[MODIFIED set]} (UIDs for UID
        STORE, else numbers) for messages UNCHANGEDSINCE left alone.
        """
        if not refused:
            return b"Store completed."
        numbers = sorted(refused)
        return b"[MODIFIED %s] Conditional store failed." % formatRanges(
            toRanges(numbers)
        )

    def _storeFlags(
        self,
        selected: Selected,
        targets: list[tuple[int, Message]],
        mode: str,
        names: list[str],
        silent: bool,
        byUid: bool,
        unchangedSince: int | None = None,
        refused: list[int] | None = None,
    ) -> Deferred[None]:
        letters = lettersFor(names, selected.keywords)
        groups: dict[str, list[tuple[int, Message]]] = {}
        for seq, message in targets:
            if mode == "FLAGS":
                new = letters
            elif mode == "+FLAGS":
                new = "".join(sorted(set(message.flags) | set(letters)))
            else:
                new = "".join(sorted(set(message.flags) - set(letters)))
            groups.setdefault(new, []).append((seq, message))
        d: Deferred[Any] = succeed(None)
        failed: set[int] = set()
        for new, members in groups.items():
            if unchangedSince is None:
                d.addCallback(self._storeGroup, selected, new, members)
            else:
                d.addCallback(
                    self._storeGroupIf, selected, new, members, unchangedSince, failed
                )

        def report(_: object) -> None:
            if refused is not None:
                refused.extend(
                    m.uid if byUid else seq for seq, m in targets if m.uid in failed
                )
            # A conditional STORE reports only what it changed, as Dovecot.
            self._reportStored(
                [(seq, m) for seq, m in targets if m.uid not in failed],
                silent,
                byUid,
                onlyChanged=unchangedSince is not None,
            )

        return d.addCallback(report)

    def _storeGroupIf(
        self,
        _: object,
        selected: Selected,
        flags: str,
        members: list[tuple[int, Message]],
        unchangedSince: int,
        failed: set[int],
    ) -> Deferred[None]:
        d = selected.folder.setFlagsIf(
            [message for _, message in members], flags, unchangedSince
        )

        def cbStored(result: tuple[list[Message], list[Message]]) -> None:
            updated, refused = result
            failed.update(m.uid for m in refused)
            self._cbStored(updated, members)

        return d.addCallback(cbStored)  # type: ignore[no-any-return]

    def _storeGroup(
        self,
        _: object,
        selected: Selected,
        flags: str,
        members: list[tuple[int, Message]],
    ) -> Deferred[None]:
        d = selected.folder.setFlags([message for _, message in members], flags)
        return d.addCallback(self._cbStored, members)  # type: ignore[no-any-return]

    def _cbStored(
        self, updated: list[Message], members: list[tuple[int, Message]]
    ) -> None:
        selected = self.selected
        assert selected is not None
        byUid = {m.uid: m for m in updated}
        for seq, message in members:
            if message.uid in byUid and seq <= len(selected.messages):
                selected.messages[seq - 1] = byUid[message.uid]
                selected.highestModseq = max(
                    selected.highestModseq, byUid[message.uid].modseq
                )

    def _reportStored(
        self,
        targets: list[tuple[int, Message]],
        silent: bool,
        byUid: bool,
        onlyChanged: bool = False,
    ) -> None:
        selected = self.selected
        assert selected is not None
        for seq, old in targets:
            if seq > len(selected.messages):
                continue
            message = selected.messages[seq - 1]
            if onlyChanged and message.modseq == old.modseq:
                continue
            if silent:
                # RFC 7162 section 3.1.3: the new MODSEQ goes out all the same.
                if self.condstore and message.modseq != old.modseq:
                    self._untagged(self._flagsFetch(seq, message, flags=False))
                continue
            if self.condstore or self.qresync:
                self._untagged(self._flagsFetch(seq, message))
                continue
            uid = b"UID %d " % message.uid if byUid else b""
            self._untagged(
                b"%d FETCH (%sFLAGS %s)"
                % (
                    seq,
                    uid,
                    formatValue(selected.flagsOf(message)),
                )
            )

    def do_UID_STORE(self, command: Command) -> Deferred[bytes]:
        return self.do_STORE(command, byUid=True)

    def do_COPY(self, command: Command, byUid: bool = False) -> Deferred[bytes]:
        selected = self.selected
        assert selected is not None
        if len(command.args) != 2:
            raise IMAPSyntaxError("COPY needs a message set and a mailbox")
        targets = [m for _, m in self._messagesFor(command.args[0], byUid)]
        target = self._folder(self._mailboxName(command.args[1]))
        d = target.scan(claimNew=False)
        d.addErrback(
            trap, NoSuchFolderError, "[TRYCREATE] Mailbox doesn't exist: " + target.name
        )

        def cbTarget(state: Any) -> Deferred[bytes]:
            copying = selected.folder.copy(targets, target)
            return copying.addCallback(
                lambda copies: (
                    b"[COPYUID %d %s %s] Copy completed."
                    % (
                        state.uidValidity,
                        formatSequenceSet(m.uid for m in targets).encode(),
                        formatSequenceSet(c.uid for c in copies).encode(),
                    )
                    if copies
                    else b"Copy completed."
                )
            )

        return d.addCallback(cbTarget)

    def do_UID_COPY(self, command: Command) -> Deferred[bytes]:
        return self.do_COPY(command, byUid=True)

    def do_MOVE(self, command: Command, byUid: bool = False) -> Deferred[bytes]:
        """
        Copy into the target, then delete from the source: a Maildir has no
        atomic move between folders, so a failure between the two leaves
        both copies, never none.  C{* OK [COPYUID ...]} goes before the
        EXPUNGE responses, as RFC 6851 asks.
        """
        selected = self.selected
        assert selected is not None
        if len(command.args) != 2:
            raise IMAPSyntaxError("MOVE needs a message set and a mailbox")
        if selected.readOnly:
            raise CommandError("[CANNOT] Mailbox is read-only.")
        chosen = self._messagesFor(command.args[0], byUid)
        targets = [m for _, m in chosen]
        target = self._folder(self._mailboxName(command.args[1]))
        d = target.scan(claimNew=False)
        d.addErrback(
            trap, NoSuchFolderError, "[TRYCREATE] Mailbox doesn't exist: " + target.name
        )

        def cbTarget(state: Any) -> Deferred[None]:
            copying = selected.folder.copy(targets, target)
            return copying.addCallback(cbCopied, state.uidValidity)

        def cbCopied(copies: list[Message], uidValidity: int) -> Deferred[None]:
            if copies:
                self._untagged(
                    b"OK [COPYUID %d %s %s] Moved UIDs."
                    % (
                        uidValidity,
                        formatSequenceSet(m.uid for m in targets).encode(),
                        formatSequenceSet(c.uid for c in copies).encode(),
                    )
                )
            return selected.folder.delete(targets).addCallback(
                lambda _: self._expunged(selected, {m.uid for m in targets})
            )

        d.addCallback(cbTarget)
        if self.qresync:
            # The tagged OK carries the new HIGHESTMODSEQ, as after EXPUNGE.
            d.addCallback(lambda _: self._refresh())
            return d.addCallback(
                lambda _: b"[HIGHESTMODSEQ %d] Move completed." % selected.highestModseq
            )
        return d.addCallback(lambda _: b"Move completed.")

    def do_UID_MOVE(self, command: Command) -> Deferred[bytes]:
        return self.do_MOVE(command, byUid=True)

    def _expunged(self, selected: Selected, uids: set[int]) -> Deferred[None]:
        """
        Forget the messages of C{selected} whose UIDs are C{uids} and send
        their EXPUNGE responses (highest number first, so the numbers stay
        valid), L{BATCH_MESSAGES} a write, waiting for the client to read
        between writes.
        """
        numbers = [
            seq
            for seq in range(len(selected.messages), 0, -1)
            if selected.messages[seq - 1].uid in uids
        ]
        if self.qresync:
            # RFC 7162 section 3.2.10: VANISHED, by UID, instead.
            gone = [m.uid for m in selected.messages if m.uid in uids]
            lines = [[line] for line in vanishedLines(toRanges(gone), False)]
            selected.messages = [m for m in selected.messages if m.uid not in uids]
            selected.recent -= uids
            return self._sendPaced(lines)
        selected.messages = [m for m in selected.messages if m.uid not in uids]
        selected.recent -= uids
        return self._sendExpunges(numbers)

    def _sendExpunges(self, numbers: list[int]) -> Deferred[None]:
        if not numbers or self._closing:
            return succeed(None)
        if self.discipline.outputBlocked:
            return self._whenWritable().addCallback(
                lambda _: self._sendExpunges(numbers)
            )
        batch, rest = numbers[:BATCH_MESSAGES], numbers[BATCH_MESSAGES:]
        self._sendLines([[b"* %d EXPUNGE\r\n" % seq] for seq in batch])
        return self._sendExpunges(rest)

    def do_SEARCH(self, command: Command, byUid: bool = False) -> Deferred[bytes]:
        selected = self.selected
        assert selected is not None
        args = list(command.args)
        if args and isinstance(args[0], str) and args[0].upper() == "CHARSET":
            if len(args) < 2:
                raise IMAPSyntaxError("CHARSET needs a name")
            charset = astring(args[1]).decode("ascii", "replace").upper()
            if charset not in ("UTF-8", "US-ASCII"):
                raise CommandError("[BADCHARSET (UTF-8 US-ASCII)] Unknown charset")
            args = args[2:]
        key, needsContent = parseSearch(args)
        withModseq = usesModseq(key)
        if withModseq:
            self._enableCondstore()
        messages = list(enumerate(selected.messages, 1))
        largestUid = messages[-1][1].uid if messages else 0
        found: list[int] = []
        modseqs: list[int] = []

        def check(content: bytes | None, seq: int, message: Message) -> None:
            candidate = Candidate(
                seq,
                message.uid,
                frozenset(selected.flagsOf(message)),
                message.internalDate,
                self._sizeOf(message, content),
                parseEntity(content) if content is not None else None,
                modseq=message.modseq,
            )
            if matches(key, candidate, len(messages), largestUid):
                found.append(message.uid if byUid else seq)
                modseqs.append(message.modseq)

        def checkBatch(loaded: list[tuple[int, Message, bytes]]) -> None:
            for seq, message, content in loaded:
                check(content, seq, message)

        d: Deferred[Any] = succeed(None)
        if not needsContent:
            for seq, message in messages:
                check(None, seq, message)
        index = 0
        while needsContent and index < len(messages):
            batch = _batch(messages, index, lambda m: True)
            d.addCallback(self._readNextBatch, batch)
            d.addCallback(checkBatch)
            index += len(batch)

        def report(_: object) -> bytes:
            words = [b"SEARCH"] + [b"%d" % n for n in found]
            if withModseq and found:
                # RFC 7162 section 3.1.5: the highest of the found messages.
                words.append(b"(MODSEQ %d)" % max(modseqs))
            self._untagged(b" ".join(words))
            return b"Search completed."

        return d.addCallback(report)

    def do_UID_SEARCH(self, command: Command) -> Deferred[bytes]:
        return self.do_SEARCH(command, byUid=True)


def _without(ranges: Ranges, listed: Ranges) -> Ranges:
    """
    C{ranges} less the numbers of C{listed} (both merged and ascending).
    """
    if not ranges:
        return []
    return intersectRanges(ranges, complementRanges(listed, ranges[-1][1]))
