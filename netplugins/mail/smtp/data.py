"""
The body of one SMTP DATA (L{netplugins.mail.smtp.server}), read from raw bytes: lines
are dot-unstuffed, the message ends only at CRLF.CRLF after a CRLF-terminated
line, and a bare LF or CR anywhere marks it for refusal (so C{<LF>.<LF>}
smuggling cannot end it early and start a second transaction).  Past the size
limit the bytes are counted, not kept.
"""

from __future__ import annotations

# A line longer than this is stored in pieces, so a client cannot make the
# reader hold an endless unfinished line.
_FLUSH = 8192


class MessageReader:
    """
    Reads one message from DATA up to its terminator.

    @ivar bare: whether a bare LF or CR was seen (refuse the message).
    @ivar oversize: whether it grew past C{maxSize} (refuse it; its bytes
        were dropped).
    """

    def __init__(self, maxSize: int) -> None:
        self.maxSize = maxSize
        self.bare = False
        self.oversize = False
        self._parts: list[bytes] = []
        self._size = 0
        self._tail = b""
        self._atLineStart = True

    def message(self) -> bytes:
        """
        The message read so far, with CRLF line ends and dots unstuffed.
        """
        return b"".join(self._parts)

    def _add(self, content: bytes) -> None:
        self._size += len(content)
        if self._size > self.maxSize:
            self.oversize = True
            self._parts = []
        elif not self.bare:
            self._parts.append(content)

    def feed(self, data: bytes) -> bytes | None:
        """
        Read C{data}.

        @return: C{None} while the message goes on; once its terminator is
            read, the bytes that followed it (the client's next commands).
        """
        buffer = self._tail + data if self._tail else data
        start = 0
        while (newline := buffer.find(b"\n", start)) != -1:
            line = buffer[start : newline + 1]
            start = newline + 1
            atLineStart = self._atLineStart
            crlf = line.endswith(b"\r\n")
            self._atLineStart = crlf
            content = line[:-2] if crlf else line[:-1]
            if not crlf or b"\r" in content:
                self.bare = True
            if atLineStart and crlf and content == b".":
                self._tail = b""
                return buffer[start:]
            if atLineStart and content.startswith(b"."):
                content = content[1:]
            self._add(content + b"\r\n")
        tail = buffer[start:]
        if len(tail) > _FLUSH:
            # A long unfinished line: keep only its last byte (a CR, perhaps).
            part = tail[:-1]
            if self._atLineStart and part.startswith(b"."):
                part = part[1:]
            if b"\r" in part:
                self.bare = True
            self._add(part)
            self._atLineStart = False
            tail = tail[-1:]
        self._tail = tail
        return None
