"""
Reading an RPC request body and writing the answer (L{RPCResource}, the base
of the XML-RPC and JSON-RPC resources).  The site (L{netplugins.web.http}) has
already bounded the body; a gzip-encoded one is inflated only up to the same
bound, so a small bomb cannot expand into gigabytes.
"""

from __future__ import annotations

import zlib
from typing import Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from netplugins.rpc.methods import Methods
from netplugins.safepickle import DEFAULT_MAX_NESTING
from netplugins.twistedinternals import requestDisconnected
from netplugins.web.http import DEFAULT_MAX_BODY_SIZE


class BodyError(Exception):
    """
    A body refused with an HTTP status and a one-line message.
    """

    def __init__(self, code: int, message: bytes):
        super().__init__(code, message)
        self.code = code
        self.message = message


def gunzip(data: bytes, maxSize: int) -> bytes:
    """
    Inflate one gzip member, producing at most C{maxSize} bytes.

    @raise BodyError: 413 if it would produce more, 400 if C{data} is not
        exactly one gzip member.
    """
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, maxSize + 1)
    except zlib.error:
        raise BodyError(400, b"bad gzip body\n") from None
    if len(out) > maxSize:
        raise BodyError(413, b"request body too large\n")
    if not inflater.eof or inflater.unused_data:
        raise BodyError(400, b"truncated gzip body or trailing bytes\n")
    return out


def requestBody(request: Request) -> bytes:
    """
    The body of C{request}, decoded.

    @raise BodyError: for an encoding other than gzip, or a bad gzip body.
    """
    assert request.content is not None
    body = request.content.read()
    encoding = (request.getHeader(b"content-encoding") or b"identity").lower()
    if encoding in (b"gzip", b"x-gzip"):
        channel: Any = request.channel
        maxSize = getattr(channel.site, "maxBodySize", DEFAULT_MAX_BODY_SIZE)
        return gunzip(body, maxSize)
    if encoding != b"identity":
        raise BodyError(415, b"unsupported content encoding\n")
    return body


def refuse(request: Request, error: BodyError) -> bytes:
    """
    Answer C{request} with C{error}'s status; returns the body to render.
    """
    request.setResponseCode(error.code)
    request.setHeader(b"content-type", b"text/plain")
    return error.message


class RPCResource(Resource):
    """
    What the XML-RPC and JSON-RPC resources share: POST only, the body read
    with L{requestBody} (refused with its status), and the answer written
    unless the client has gone.

    Subclasses name their C{protocolName} and C{contentType} and give
    L{answer}.
    """

    isLeaf = True
    protocolName: ClassVar[str] = "RPC"
    contentType: ClassVar[bytes] = b"application/octet-stream"

    def __init__(self, methods: Methods, *, maxNesting: int = DEFAULT_MAX_NESTING):
        super().__init__()
        self.methods = methods
        self.maxNesting = maxNesting

    def render_GET(self, request: Request) -> bytes:
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        return f"{self.protocolName} takes POST requests.\n".encode()

    def render_POST(self, request: Request) -> Any:
        try:
            body = requestBody(request)
        except BodyError as e:
            return refuse(request, e)
        self.answer(body, request).addCallback(self._respond, request)
        return NOT_DONE_YET

    def answer(self, body: bytes, request: Request) -> Deferred[bytes | None]:
        """
        The response body to the request body C{body}, or C{None} for
        204 No Content; never fails.
        """
        raise NotImplementedError

    def _respond(self, body: bytes | None, request: Request) -> None:
        if requestDisconnected(request):
            return
        if body is None:
            request.setResponseCode(204)
            request.finish()
            return
        request.setHeader(b"content-type", self.contentType)
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()
