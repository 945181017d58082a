"""
COMPRESS=DEFLATE for np-imap (RFC 4978): after C{COMPRESS DEFLATE}, both
directions are one raw deflate stream each (RFC 1951, no zlib header), over
TLS as well as in the clear.

Output goes through L{DeflateTransport}, which stands in for the session's
transport and ends every write (a FETCH batch is one) with C{Z_SYNC_FLUSH},
so the client can read each response as soon as it arrives.  Input goes
through L{Inflater}: what the client sent is kept compressed and inflated
L{INFLATE_CHUNK} octets at a time, only while the session reads commands
(L{netplugins.session}); so a compression bomb costs what its compressed
octets take plus one chunk, and meets the same line, literal and command
limits as clear text (a line of a million C{A}s is closed at 8 KiB, not
inflated first).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from typing import Any

from netplugins.mail.imap.parse import Command, IMAPSyntaxError
from netplugins.mail.imap.session import CommandError, SessionBase

#: The most octets inflated at a time, before the parser takes them.
INFLATE_CHUNK = 16 * 1024

CAPABILITIES = ("COMPRESS=DEFLATE",)


class DeflateTransport:
    """
    A transport whose writes are deflated (raw, sync-flushed each write)
    onto another; everything else is the other's.
    """

    def __init__(self, transport: Any) -> None:
        self.wrapped = transport
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)

    def write(self, data: bytes) -> None:
        self.wrapped.write(
            self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        )

    def writeSequence(self, data: Iterable[bytes]) -> None:
        pieces = [self._deflate.compress(piece) for piece in data]
        pieces.append(self._deflate.flush(zlib.Z_SYNC_FLUSH))
        self.wrapped.writeSequence(pieces)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


class Inflater:
    """
    The client's deflated input, inflated a chunk at a time on demand.
    """

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(-15)
        self._pending = b""

    def feed(self, data: bytes) -> None:
        """
        Keep C{data}, compressed, until it is asked for.
        """
        self._pending += data

    def inflateInto(self, buffer: bytearray) -> bool:
        """
        Inflate at most L{INFLATE_CHUNK} octets onto C{buffer}.

        @return: whether any were.
        @raise zlib.error: for input that is not a deflate stream.
        """
        if not self._pending:
            return False
        out = self._inflate.decompress(self._pending, INFLATE_CHUNK)
        self._pending = self._inflate.unconsumed_tail
        if self._inflate.eof:
            # The client ended its stream: nothing after it is readable.
            self._pending = b""
        buffer += out
        return bool(out)


class CompressCommands(SessionBase):
    """
    The COMPRESS command, and reading through the inflater once it ran.

    @ivar inflater: the client's input stream once compressed, else C{None}.
    """

    inflater: Inflater | None = None
    _clearBuffer: Callable[[], bytes]

    def do_COMPRESS(self, command: Command) -> None:
        if len(command.args) != 1 or not isinstance(command.args[0], str):
            raise IMAPSyntaxError("COMPRESS needs a mechanism")
        if command.args[0].upper() != "DEFLATE":
            raise IMAPSyntaxError("Unknown compression mechanism")
        if self.inflater is not None:
            raise CommandError("[COMPRESSIONACTIVE] DEFLATE already active")
        self._tagged(command.tag, b"OK", b"DEFLATE active")
        # What the client sent after this command is compressed already.
        self.inflater = Inflater()
        self.inflater.feed(self._clearBuffer())
        self.transport = DeflateTransport(self.transport)

    def _inflateMore(self, buffer: bytearray) -> bool:
        """
        Inflate the next chunk of the client's input onto C{buffer}; a
        stream that is no deflate stream ends the session.

        @return: whether anything was added (or more is pending).
        """
        assert self.inflater is not None
        try:
            return self.inflater.inflateInto(buffer)
        except zlib.error as e:
            self.log.info(
                "np-imap: bad compressed input from {peer}: {error}",
                peer=str(self.transport.getPeer()),
                error=str(e),
            )
            self.inflater = Inflater()
            self._untagged(b"BYE Invalid compressed data")
            self._close("invalid compressed data")
            return False
