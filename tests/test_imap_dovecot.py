"""
The differential test: one scripted IMAP session run against a private Dovecot
(L{tests.dovecot}) and against np-imap, seeded with the same messages by the
session's own APPENDs (with explicit dates, so INTERNALDATE agrees), and the
normalised responses compared command by command.

Normalisation (L{normalise}) removes only what legitimately differs between
two correct servers:
  - the greeting and CAPABILITY lists (extensions differ), and every piece of
    human-readable text after a status response (only status and response
    code are kept);
  - UIDVALIDITY values, in response codes, STATUS, APPENDUID and COPYUID
    (each server picks its own);
  - C{\\Recent} and RECENT counts, which depend on which session saw a
    message first;
  - (not normalised: Dovecot is given np-imap's special-use mailboxes, with
    C{auto = create}, so LIST agrees on them)
  - an empty C{* ENABLED}, which np-imap sends and Dovecot leaves out (RFC
    5161 allows both);
  - the RFC 5530 code NONEXISTENT, which Dovecot gives to DELETE but not
    to SELECT, np-imap to both;
  - the order of LIST/LSUB lines and of FETCH items (both are unordered);
  - quoted string versus literal (the same string either way);
  - untagged EXISTS/FETCH FLAGS that Dovecot may send early about the
    session's own changes are kept: the script is arranged so both agree;
  - mod-sequence values (RFC 7162 fixes their order, not their numbers):
    the CONDSTORE script (L{CONDSTORE_SCRIPT}) saves the highest one seen
    and passes it back (C{CHANGEDSINCE {a}}), so both servers are asked
    about the same changes; and np-imap's C{* OK [HIGHESTMODSEQ]} at every
    SELECT, as RFC 7162 section 3.1.2.1 asks, which Dovecot sends only once
    CONDSTORE is enabled, is dropped from the first script.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from netplugins.mail.imap.mailboxes import SPECIAL_USE
from netplugins.mail.imap.parse import Literal, Token, tokenize
from netplugins.mail.maildir.store import MaildirStore
from tests import dovecot
from tests.dovecot import Dovecot
from tests.test_imap import MULTIPART, makeFactory

PASSWORD = "alice-pw"

ALTERNATIVE = (
    b'From: "Bob" <bob@example.org>\r\nTo: alice@example.org\r\n'
    b"Cc: carol@example.net\r\nReply-To: list@example.org\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= menu\r\n"
    b"Date: Tue, 1 Oct 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/alternative; boundary=alt\r\n\r\n"
    b"--alt\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9 au lait\r\n"
    b"--alt\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: inline\r\n\r\nPGI+Y2Fmw6k8L2I+\r\n--alt--\r\n"
)
PLAIN = (
    b"From: carol@example.net\r\nTo: alice@example.org\r\n"
    b"Subject: plain\r\n\r\njust text\r\nsecond line\r\n"
)
HEADERLESS = b"no header at all"

#: Dovecot's settings for np-imap's special-use mailboxes.
SPECIAL_USE_CONFIG = (
    "namespace inbox {\n"
    + "".join(
        f"  mailbox {name} {{\n    special_use = {use}\n    auto = create\n  }}\n"
        for name, use in SPECIAL_USE.items()
    )
    + "}\n"
)

SCRIPT: list[str | tuple[str, bytes]] = [
    "ENABLE X-NONE",
    ('APPEND INBOX (\\Seen) "07-Feb-1994 21:52:25 -0800" ', MULTIPART),
    ('APPEND INBOX "01-Oct-2024 10:00:00 +0000" ', PLAIN),
    ('APPEND INBOX (\\Flagged) "02-Oct-2024 10:00:00 +0000" ', HEADERLESS),
    ('APPEND INBOX "03-Oct-2024 10:00:00 +0000" ', ALTERNATIVE),
    "CREATE Projects",
    "CREATE a.b.c",
    "CREATE Projects",
    'LIST "" *',
    'LIST "" %',
    'LIST "" a.%',
    'LIST "" ""',
    'LIST "" "*%*%*%*%*%*%x"',
    'LIST (SPECIAL-USE) "" *',
    'LIST (SPECIAL-USE) "" %',
    'LIST (SPECIAL-USE) "" S*',
    "SUBSCRIBE Projects",
    "SUBSCRIBE a.b.c",
    'LSUB "" *',
    'LIST (SUBSCRIBED) "" *',
    'LIST (SUBSCRIBED) "" * RETURN (CHILDREN)',
    'LIST (SUBSCRIBED RECURSIVEMATCH) "" %',
    'LIST (SUBSCRIBED RECURSIVEMATCH) "" a.%',
    'LIST () "" % RETURN (SUBSCRIBED)',
    'LIST "" (INBOX Projects a.*) RETURN (SUBSCRIBED CHILDREN)',
    'LIST "" % RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))',
    'LIST "" * RETURN (CHILDREN STATUS (MESSAGES))',
    'LIST (RECURSIVEMATCH) "" *',
    'LIST (X-NONE) "" *',
    "STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)",
    "SELECT INBOX",
    "FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)",
    "FETCH 1:* BODYSTRUCTURE",
    "FETCH 1:* BODY",
    "FETCH 1 (BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[2.HEADER] BODY.PEEK[2.1] "
    "BODY.PEEK[1.MIME] BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] "
    "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)] BODY.PEEK[TEXT]<10.20> BODY.PEEK[9])",
    "FETCH 4 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[2])",
    "FETCH 3 (BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1])",
    "UID FETCH 2 (BODY[] FLAGS)",
    "FETCH 2 (RFC822.HEADER RFC822.TEXT)",
    "SEARCH ALL",
    "SEARCH SEEN",
    "SEARCH UNSEEN",
    "SEARCH FLAGGED",
    "SEARCH SUBJECT hello",
    "SEARCH FROM alice",
    "SEARCH TO bob@example.org",
    "SEARCH BODY world",
    "SEARCH TEXT inner",
    "SEARCH SINCE 1-Jan-2000",
    "SEARCH BEFORE 1-Jan-2000",
    "SEARCH ON 2-Oct-2024",
    "SEARCH SENTSINCE 1-Jan-2000",
    "SEARCH LARGER 100",
    "SEARCH SMALLER 100",
    "SEARCH OR FLAGGED SEEN",
    "SEARCH NOT DELETED 2:*",
    "SEARCH HEADER Message-ID <1@example.org>",
    "UID SEARCH UID 2:3",
    "STORE 1 +FLAGS (\\Answered)",
    "STORE 2 -FLAGS (\\Seen)",
    "STORE 3 FLAGS (\\Draft \\Flagged)",
    "STORE 1 +FLAGS ($Forwarded Work)",
    "SEARCH KEYWORD Work",
    "SEARCH UNKEYWORD $Forwarded",
    "STORE 1 -FLAGS (Work)",
    "STORE 2 FLAGS (\\Seen Later)",
    "STORE 1:2 +FLAGS.SILENT (\\Deleted)",
    "UID STORE 4 +FLAGS (\\Seen)",
    "UID COPY 1:2 Projects",
    "FETCH 1:* FLAGS",
    "COPY 1 Nowhere",
    "MOVE 3 Projects",
    "UID MOVE 1 Nowhere",
    "FETCH 99 FLAGS",
    "EXPUNGE",
    "FETCH 1:* (UID FLAGS)",
    "STATUS Projects (MESSAGES UIDNEXT UNSEEN)",
    "SELECT Projects",
    "FETCH 1:* (UID FLAGS RFC822.SIZE)",
    "EXAMINE INBOX",
    "FETCH 1 BODY[TEXT]",
    "FETCH 1 FLAGS",
    "STORE 1 +FLAGS (\\Seen)",
    "CLOSE",
    "RENAME a.b.c x",
    'LIST "" *',
    'APPEND x (\\Seen Work) {5+}\r\nfirst "04-Oct-2024 10:00:00 +0000" {6+}\r\nsecond',
    "APPEND nowhere {5+}\r\nthird {6+}\r\nfourth",
    "STATUS x (MESSAGES UIDNEXT)",
    "DELETE Projects",
    "DELETE nonexistent",
    "SELECT nonexistent",
    "FETCH 1 FLAGS",
    "NOOP",
]

#: CONDSTORE and QRESYNC (RFC 7162).  C{=name} saves the highest
#: mod-sequence seen so far as C{{name}}; C{{V}} is the UIDVALIDITY seen;
#: C{* OK [HIGHESTMODSEQ]} is compared from C{=condstore} on.
CONDSTORE_SCRIPT: list[str | tuple[str, bytes]] = [
    ('APPEND INBOX (\\Seen) "07-Feb-1994 21:52:25 -0800" ', MULTIPART),
    ('APPEND INBOX "01-Oct-2024 10:00:00 +0000" ', PLAIN),
    ('APPEND INBOX (\\Flagged) "02-Oct-2024 10:00:00 +0000" ', HEADERLESS),
    ('APPEND INBOX "03-Oct-2024 10:00:00 +0000" ', ALTERNATIVE),
    "CREATE Other",
    "SELECT INBOX",
    "=condstore",
    "STATUS Other (HIGHESTMODSEQ MESSAGES)",
    "FETCH 1:* (FLAGS MODSEQ)",
    "=a",
    "STORE 1 +FLAGS.SILENT (\\Flagged)",
    "STORE 2 +FLAGS (\\Answered)",
    "FETCH 1:* (FLAGS) (CHANGEDSINCE {a})",
    "=b",
    "STORE 1:4 (UNCHANGEDSINCE {a}) +FLAGS (\\Draft)",
    "UID STORE 1:4 (UNCHANGEDSINCE {b}) -FLAGS (\\Draft)",
    "STORE 3 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)",
    "FETCH 1:* (UID FLAGS) (CHANGEDSINCE {b})",
    "SEARCH MODSEQ {b}",
    'SEARCH MODSEQ "/flags/\\\\draft" all {a}',
    "UID SEARCH MODSEQ {b} UNSEEN",
    "SEARCH MODSEQ 999999999",
    "STORE 4 +FLAGS (\\Deleted)",
    "EXPUNGE",
    "EXAMINE INBOX",
    "STORE 1 (UNCHANGEDSINCE {b}) +FLAGS (\\Seen)",
    "UNSELECT",
    "SELECT INBOX (QRESYNC ({V} {a}))",
    "ENABLE QRESYNC",
    "SELECT INBOX (QRESYNC ({V} {a}))",
    "SELECT INBOX (QRESYNC ({V} {a} 1:2))",
    "SELECT INBOX (QRESYNC ({V} {b} 1:9 (1:3 1:3)))",
    "SELECT INBOX (QRESYNC (1 {a}))",
    "STORE 2 +FLAGS (\\Deleted)",
    "UID EXPUNGE 2",
    "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {a} VANISHED)",
    "FETCH 1:* (FLAGS) (CHANGEDSINCE {a} VANISHED)",
    "FETCH 1 FLAGS",
    "UID MOVE 1 Other",
    "STATUS Other (HIGHESTMODSEQ MESSAGES)",
    "NOOP",
]

_CODE = re.compile(rb"^\[([^\]]*)\]")
_STATUS = {b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH"}


class RawClient:
    """
    A minimal blocking IMAP client that returns every response line of each
    command (literals included), unparsed.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.counter = 0
        self.greeting = self.file.readline()

    def _readResponse(self) -> tuple[bytes, list[bytes]]:
        # One response: a line, and for each literal it announces the
        # literal and the rest of the line.
        line = self.file.readline()
        pieces = []
        while True:
            match = re.search(rb"\{(\d+)\}\r\n$", line)
            if match is None:
                pieces.append(line.rstrip(b"\r\n"))
                return pieces[0], pieces
            pieces.append(line[: match.start()])
            pieces.append(Literal(self.file.read(int(match.group(1)))))
            line = self.file.readline()

    def command(self, text: str, literal: bytes | None = None) -> list[list[bytes]]:
        self.counter += 1
        tag = b"t%d" % self.counter
        line = tag + b" " + text.encode()
        if literal is not None:
            self.sock.sendall(line + b"{%d}\r\n" % len(literal))
            first, pieces = self._readResponse()
            if not first.startswith(b"+"):
                return [pieces]
            self.sock.sendall(literal + b"\r\n")
        else:
            self.sock.sendall(line + b"\r\n")
        responses = []
        while True:
            first, pieces = self._readResponse()
            responses.append(pieces)
            if first.startswith(tag + b" ") or not first:
                return responses

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _flags(value: Token) -> Token:
    if isinstance(value, list):
        return sorted(str(f) for f in value if str(f).lower() != "\\recent")
    return value


def _normaliseCode(code: bytes) -> bytes:
    words = code.split(b" ")
    name = words[0].upper()
    if name == b"CAPABILITY":
        return b"CAPABILITY"
    if (
        name in (b"UIDVALIDITY", b"APPENDUID", b"COPYUID", b"HIGHESTMODSEQ")
        and len(words) > 1
    ):
        words[1] = b"*"
    return b" ".join(words)


def normalise(pieces: list[bytes], tag: bytes) -> Any:
    """
    One response made comparable; C{None} for responses to drop.
    """
    first = pieces[0]
    words = first.split(b" ", 2)
    isTagged = words[0] == tag
    if words[0] in (tag, b"*") and len(words) > 1 and words[1].upper() in _STATUS:
        rest = words[2] if len(words) > 2 else b""
        code = _CODE.match(rest)
        label = b"TAGGED" if isTagged else b"*"
        normalised = _normaliseCode(code.group(1)) if code else None
        if normalised == b"NONEXISTENT":
            normalised = None
        return (label, words[1].upper(), normalised)
    if first.startswith(b"+"):
        return ("+",)
    tokens = tokenize(list(pieces))
    if len(tokens) >= 3 and str(tokens[2]).upper() == "RECENT":
        return None
    if len(tokens) >= 2 and str(tokens[1]).upper() == "CAPABILITY":
        return None
    if len(tokens) == 2 and str(tokens[1]).upper() == "ENABLED":
        return None
    if len(tokens) >= 4 and str(tokens[2]).upper() == "FETCH":
        items = tokens[3]
        assert isinstance(items, list)
        fetched = {}
        for name, value in zip(items[::2], items[1::2], strict=True):
            key = str(name).upper()
            fetched[key] = _flags(value) if key == "FLAGS" else value
            if key == "MODSEQ":
                fetched[key] = ["*"]
        return ("FETCH", tokens[1], sorted(fetched.items()))
    if len(tokens) >= 3 and str(tokens[1]).upper() == "STATUS":
        values = tokens[3]
        assert isinstance(values, list)
        pairs = dict(
            zip((str(v).upper() for v in values[::2]), values[1::2], strict=True)
        )
        for item in ("UIDVALIDITY", "HIGHESTMODSEQ"):
            if item in pairs:
                pairs[item] = "*"
        return ("STATUS", tokens[2], sorted(pairs.items()))
    if len(tokens) >= 2 and str(tokens[1]).upper() == "FLAGS":
        return ("FLAGS", _flags(tokens[2]))
    if len(tokens) >= 5 and str(tokens[1]).upper() in ("LIST", "LSUB"):
        attributes = tokens[2]
        assert isinstance(attributes, list)
        return (
            str(tokens[1]).upper(),
            sorted(str(a) for a in attributes),
            tokens[3],
            tokens[4],
            # RFC 5258's extended data (CHILDINFO).
            *tokens[5:],
        )
    if len(tokens) >= 3 and str(tokens[1]).upper() == "SEARCH":
        # RFC 7162's (MODSEQ n) after the numbers found.
        return tuple(["*"] if isinstance(t, list) else t for t in tokens)
    return tuple(tokens)


_MODSEQS = re.compile(rb"(?:HIGHESTMODSEQ|MODSEQ \(?) ?(\d+)")
_VALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_SAVED = re.compile(r"\{([A-Za-z]\w*)\}")


def _send(
    client: RawClient, step: str | tuple[str, bytes], saved: dict[str, str]
) -> tuple[bytes, list[list[bytes]]] | None:
    """
    Run one step of a script on C{client}: its tag and responses; C{None}
    for a step that saves the highest mod-sequence seen (C{=name}).
    """
    text, *literal = (step,) if isinstance(step, str) else step
    if text.startswith("="):
        saved[text[1:]] = saved["highest"]
        return None
    text = _SAVED.sub(lambda m: saved[m.group(1)], text)
    responses = client.command(text, *literal)
    for pieces in responses:
        line = b"".join(p for p in pieces if not isinstance(p, Literal))
        for value in _MODSEQS.findall(line):
            saved["highest"] = str(max(int(value), int(saved["highest"])))
        validity = _VALIDITY.search(line)
        if validity is not None:
            saved["V"] = validity.group(1).decode()
    return b"t%d" % client.counter, responses


def runScript(
    port: int, script: list[str | tuple[str, bytes]] = SCRIPT
) -> list[list[Any]]:
    """
    Log in as alice, run C{script}, and return each command's normalised
    responses (LIST/LSUB lines sorted).
    """
    client = RawClient(port)
    saved = {"highest": "0"}
    try:
        results: list[list[Any]] = []
        steps = [_send(client, f"LOGIN alice {PASSWORD}", saved)] + [
            _send(client, step, saved) for step in script
        ]
        enabled = False
        for name, step in zip(["LOGIN", *script], steps, strict=True):
            if step is None:
                enabled = enabled or name == "=condstore"
                results.append([])
                continue
            tag, responses = step
            normalised = [normalise(r, tag) for r in responses]
            normalised = [n for n in normalised if n is not None]
            if not enabled:
                normalised = [
                    n for n in normalised if n != (b"*", b"OK", b"HIGHESTMODSEQ *")
                ]
            # LIST-STATUS's STATUS lines follow LIST's order, which differs.
            listing = ("LIST", "LSUB", "STATUS")
            lists = sorted((n for n in normalised if n[0] in listing), key=repr)
            others = [n for n in normalised if n[0] not in listing]
            results.append(lists + others)
        client.command("LOGOUT")
        return results
    finally:
        client.close()


class DifferentialTests(TestCase):
    """
    np-imap answers a scripted session as Dovecot does, after normalisation.
    """

    timeout = 120
    maxDiff = None

    def setUp(self) -> None:
        from twisted.internet import reactor

        config = dovecot._config
        self.patch(dovecot, "_config", lambda *a: config(*a) + SPECIAL_USE_CONFIG)
        self.dovecot = Dovecot({"alice": PASSWORD})
        self.addCleanup(self.dovecot.stop)
        self.dovecot.start()
        root = os.path.abspath(self.mktemp())
        factory = makeFactory(
            root,
            reactor,
            store=MaildirStore(root, reactor=reactor),
            allowPlaintextAuth=True,
            autoCreate=tuple(SPECIAL_USE),
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port  # type: ignore[attr-defined]

    def test_sameSession(self) -> Deferred[Any]:
        """Every command of the script gets the same normalised responses."""

        def both() -> tuple[list[list[Any]], list[list[Any]]]:
            return runScript(self.dovecot.port), runScript(self.port)

        return deferToThread(both).addCallback(self.compare, SCRIPT)

    def compare(
        self,
        results: tuple[list[list[Any]], list[list[Any]]],
        script: list[str | tuple[str, bytes]],
    ) -> None:
        dovecot, ours = results
        steps = ["LOGIN"] + [s if isinstance(s, str) else s[0] for s in script]
        for step, theirs, mine in zip(steps, dovecot, ours, strict=True):
            self.assertEqual(mine, theirs, f"after {step!r}")

    def test_condstore(self) -> Deferred[Any]:
        """CONDSTORE and QRESYNC commands get the same normalised responses."""

        def both() -> tuple[list[list[Any]], list[list[Any]]]:
            return (
                runScript(self.dovecot.port, CONDSTORE_SCRIPT),
                runScript(self.port, CONDSTORE_SCRIPT),
            )

        return deferToThread(both).addCallback(self.compare, CONDSTORE_SCRIPT)
