"""
Reading an RPC request body: the site (L{netplugins.web.http}) has already
bounded it; a gzip-encoded one is inflated only up to the same bound, so a
small bomb cannot expand into gigabytes.
"""

from __future__ import annotations

import zlib
from typing import Any

from twisted.web.server import Request

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
