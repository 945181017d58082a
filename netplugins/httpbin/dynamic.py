"""
Dynamic data: C{/delay/{n}}, C{/drip}, C{/stream/{n}}, C{/stream-bytes/{n}},
C{/bytes/{n}}, C{/range/{n}} and C{/base64/{value}}.

Nothing here blocks the reactor: waits are reactor timers, and bodies that
take time or space are written a chunk at a time by L{PacedWriter}, which
stops when the client goes away and pauses while the client is not reading.
Every size and time a client picks is capped, as httpbin caps some of them:
the context's C{maxDelay} (10 s, as httpbin's C{/delay}) for any wait or
duration, L{MAX_BYTES} for random and range bodies, L{MAX_DRIP_BYTES} for
C{/drip}, L{MAX_STREAM_LINES} lines.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import random
from collections.abc import Iterator
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from netplugins.httpbin.core import queryArgs, requestDict, statusCode
from netplugins.httpbin.routing import (
    ALL_METHODS,
    Context,
    HttpbinError,
    jsonBody,
    number,
    pathInt,
    route,
    wholeNumber,
)

MAX_BYTES = 100 * 1024
MAX_DRIP_BYTES = 10 * 1024 * 1024
MAX_STREAM_LINES = 100
DEFAULT_CHUNK = 10 * 1024
# Unpaced bodies are written up to this much per reactor turn, so one big
# response cannot keep the reactor from other clients.
TURN_BYTES = 64 * 1024
# The shortest pause between drips: finer drips are grouped into chunks.
MIN_DRIP_INTERVAL = 0.01


@implementer(IPushProducer)
class PacedWriter:
    """
    Writes C{chunks} to a request, one every C{interval} seconds after an
    initial C{delay}, then finishes it.  With no interval it writes as fast
    as the client reads, yielding to the reactor every L{TURN_BYTES}.

    It is the request's streaming producer: while the transport's buffer is
    full it is paused and writes nothing; when the client goes away its
    timer is cancelled.
    """

    def __init__(
        self,
        request: Request,
        chunks: Iterator[bytes],
        reactor: Any,
        interval: float = 0.0,
        delay: float = 0.0,
    ):
        self.request = request
        self.chunks = chunks
        self.reactor = reactor
        self.interval = interval
        self.delay = delay
        self.paused = False
        self.done = False
        self.call: IDelayedCall | None = None

    def start(self) -> Any:
        """
        Begin; returns C{NOT_DONE_YET} for the resource to return.
        """
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._schedule(self.delay)
        return NOT_DONE_YET

    def _schedule(self, seconds: float) -> None:
        if not self.done and not self.paused and self.call is None:
            self.call = self.reactor.callLater(seconds, self._tick)

    def _tick(self) -> None:
        self.call = None
        written = 0
        while not self.paused and not self.done:
            chunk = next(self.chunks, None)
            if chunk is None:
                self._finish()
                return
            self.request.write(chunk)
            written += len(chunk)
            if self.interval > 0 or written >= TURN_BYTES:
                break
        self._schedule(self.interval)

    def _finish(self) -> None:
        self.done = True
        self.request.unregisterProducer()
        self.request.finish()

    def pauseProducing(self) -> None:
        self.paused = True
        if self.call is not None:
            self.call.cancel()
            self.call = None

    def resumeProducing(self) -> None:
        self.paused = False
        self._schedule(0)

    def stopProducing(self) -> None:
        self.done = True
        if self.call is not None:
            self.call.cancel()
            self.call = None


def seconds(context: Context, value: str | None, default: float, name: str) -> float:
    """
    A wait a client asked for, from 0 to the context's C{maxDelay}.
    """
    return min(max(number(value, default, name), 0.0), context.maxDelay)


def delayed(context: Context, request: Request, n: str) -> Any:
    """
    C{/delay/{n}}: answer as C{/post} does, after C{n} seconds (at most
    C{maxDelay}).
    """
    wait = seconds(context, n, 0.0, "delay")
    payload = jsonBody(
        request,
        requestDict(
            request, "url", "args", "form", "data", "origin", "headers", "files"
        ),
    )
    request.setHeader("Content-Length", str(len(payload)))
    return PacedWriter(request, iter([payload]), context.reactor, delay=wait).start()


def drip(context: Context, request: Request) -> Any:
    """
    C{/drip?numbytes=10&duration=2&delay=0&code=200}: asterisks spread over
    C{duration} seconds after C{delay}.
    """
    args = {k.lower(): v for k, v in queryArgs(request).items()}
    duration = seconds(context, args.get("duration"), 2.0, "duration")
    delay = seconds(context, args.get("delay"), 0.0, "delay")
    size = wholeNumber(args.get("numbytes"), 10, "numbytes")
    code = statusCode(args.get("code", "200"))
    if size <= 0:
        raise HttpbinError(400, "number of bytes must be positive")
    size = min(size, MAX_DRIP_BYTES)
    steps = max(
        math.ceil(size / TURN_BYTES),
        min(size, int(duration / MIN_DRIP_INTERVAL)),
        1,
    )
    chunkSize = math.ceil(size / steps)
    request.setResponseCode(code)
    request.setHeader("Content-Type", "application/octet-stream")
    request.setHeader("Content-Length", str(size))
    return PacedWriter(
        request,
        _sized(size, chunkSize, lambda n: b"*" * n),
        context.reactor,
        interval=duration / steps,
        delay=delay,
    ).start()


def _sized(total: int, chunkSize: int, make: Any) -> Iterator[bytes]:
    """
    C{total} bytes from C{make(n)} in chunks of C{chunkSize}, made lazily.
    """
    sent = 0
    while sent < total:
        n = min(chunkSize, total - sent)
        yield make(n)
        sent += n


def stream(context: Context, request: Request, n: str) -> Any:
    """
    C{/stream/{n}}: C{n} (at most 100) JSON lines, each C{/get}'s with an C{id}.
    """
    count = min(pathInt(n), MAX_STREAM_LINES)
    described = requestDict(request, "url", "args", "headers", "origin")
    lines = (
        (json.dumps({**described, "id": i}) + "\n").encode("ascii")
        for i in range(count)
    )
    request.setHeader("Content-Type", "application/json")
    return PacedWriter(request, lines, context.reactor).start()


def _randomSource(request: Request) -> random.Random:
    seed = queryArgs(request).get("seed")
    if seed is None:
        return random.Random()  # noqa: S311 (test data, not secrets)
    return random.Random(wholeNumber(seed, 0, "seed"))  # noqa: S311


def streamBytes(context: Context, request: Request, n: str) -> Any:
    """
    C{/stream-bytes/{n}?seed=&chunk_size=}: C{n} random bytes (at most
    100 KiB), chunked.
    """
    size = min(pathInt(n), MAX_BYTES)
    chunk = wholeNumber(
        queryArgs(request).get("chunk_size"), DEFAULT_CHUNK, "chunk_size"
    )
    source = _randomSource(request)
    request.setHeader("Content-Type", "application/octet-stream")
    return PacedWriter(
        request, _sized(size, max(1, chunk), source.randbytes), context.reactor
    ).start()


def randomBytes(context: Context, request: Request, n: str) -> bytes:
    """
    C{/bytes/{n}?seed=}: C{n} random bytes (at most 100 KiB).
    """
    size = min(pathInt(n), MAX_BYTES)
    data = _randomSource(request).randbytes(size)
    request.setHeader("Content-Type", "application/octet-stream")
    return data


def requestedRange(header: str | None, size: int) -> tuple[int, int] | None:
    """
    The first and last byte of a single C{bytes=} range over C{size} bytes;
    C{None} for no usable range header (the whole body is sent, as RFC 9110
    allows for ranges it does not honour, multiple ranges included).

    @raise ValueError: for a range that cannot be satisfied.
    """
    if not header:
        return None
    unit, eq, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or not eq or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if any(s and (not s.isdigit() or len(s) > 18) for s in (first, last)):
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise ValueError("empty suffix range")
        return max(0, size - suffix), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise ValueError("range not satisfiable")
    return start, end


def rangeBody(context: Context, request: Request, n: str) -> Any:
    """
    C{/range/{n}?duration=&chunk_size=}: C{n} bytes of the alphabet, honouring
    a C{Range} header with 206 (or 416), paced over C{duration} seconds.
    """
    size = pathInt(n)
    request.setHeader("ETag", f"range{min(size, MAX_BYTES + 1)}")
    request.setHeader("Accept-Ranges", "bytes")
    if not 0 < size <= MAX_BYTES:
        raise HttpbinError(
            404, f"number of bytes must be in the range (0, {MAX_BYTES}]"
        )
    args = queryArgs(request)
    chunk = max(1, wholeNumber(args.get("chunk_size"), DEFAULT_CHUNK, "chunk_size"))
    duration = seconds(context, args.get("duration"), 0.0, "duration")
    try:
        wanted = requestedRange(request.getHeader("Range"), size)
    except ValueError:
        request.setResponseCode(416)
        request.setHeader("Content-Range", f"bytes */{size}")
        return b""
    first, last = wanted if wanted is not None else (0, size - 1)
    length = last - first + 1
    if wanted is not None and length != size:
        request.setResponseCode(206)
    if wanted is not None:
        request.setHeader("Content-Range", f"bytes {first}-{last}/{size}")
    request.setHeader("Content-Type", "application/octet-stream")
    request.setHeader("Content-Length", str(length))
    offsets = iter(range(first, last + 1, chunk))
    chunks = (
        bytes(97 + i % 26 for i in range(start, min(start + chunk, last + 1)))
        for start in offsets
    )
    steps = math.ceil(length / chunk)
    return PacedWriter(
        request, chunks, context.reactor, interval=duration / steps
    ).start()


def decodeBase64(context: Context, request: Request, value: str) -> bytes:
    """
    C{/base64/{value}}: the URL-safe base64 C{value}, decoded, as UTF-8 text.
    It is shown as HTML, as httpbin shows it, but sandboxed so that decoded
    markup cannot run script in this origin.
    """
    request.setHeader("Content-Type", "text/html; charset=utf-8")
    request.setHeader("Content-Security-Policy", "sandbox; default-src 'none'")
    try:
        return (
            base64.urlsafe_b64decode(value.encode("ascii"))
            .decode("utf-8")
            .encode("utf-8")
        )
    except (UnicodeError, binascii.Error, ValueError):
        return b"Incorrect Base64 data try: SFRUUEJJTiBpcyBhd2Vzb21l"


ROUTES = {
    "delay": route(delayed, ALL_METHODS, 1),
    "drip": route(drip),
    "stream": route(stream, args=1),
    "stream-bytes": route(streamBytes, args=1),
    "bytes": route(randomBytes, args=1),
    "range": route(rangeBody, args=1),
    "base64": route(decodeBase64, args=1),
}
