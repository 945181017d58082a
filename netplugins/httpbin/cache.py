"""
Caching and response headers: C{/cache}, C{/cache/{n}}, C{/etag/{etag}} and
C{/response-headers}.
"""

from __future__ import annotations

import json
import re
import uuid

from twisted.web.http import datetimeToString
from twisted.web.server import Request

from netplugins.httpbin.core import get, queryPairs, statusResponse
from netplugins.httpbin.routing import Context, HttpbinError, pathInt, route

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Field values may hold visible characters, spaces and tabs; CR and LF would
# end the header early and start one of the client's choosing.
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ENTITY_TAG = re.compile(r'\s*(?:W/)?"?([^",]*)"?\s*')
# Headers that frame the message or belong to the connection (RFC 9110 7.6.1):
# the server sets them, a client asking for them could break the framing.
_FRAMING = frozenset(
    {
        "connection",
        "content-length",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def cache(context: Context, request: Request, seconds: str = "") -> bytes:
    """
    C{/cache}: 304 for a conditional request, else C{/get} with C{ETag} and
    C{Last-Modified}; C{/cache/{n}}: C{/get} cacheable for C{n} seconds.
    """
    if seconds:
        request.setHeader("Cache-Control", f"public, max-age={pathInt(seconds)}")
        return get(context, request)
    if request.getHeader("If-Modified-Since") or request.getHeader("If-None-Match"):
        return statusResponse(request, 304)
    request.setHeader("Last-Modified", datetimeToString(context.reactor.seconds()))
    request.setHeader("ETag", uuid.uuid4().hex)
    return get(context, request)


def entityTags(header: str | None) -> list[str]:
    """
    The entity tags in an C{If-Match} or C{If-None-Match} list, unquoted.
    """
    if not header:
        return []
    return [m.group(1) for part in header.split(",") if (m := _ENTITY_TAG.match(part))]


def etag(context: Context, request: Request, tag: str) -> bytes:
    """
    C{/etag/{etag}}: as if the resource had that entity tag: 304 when
    C{If-None-Match} names it, 412 when C{If-Match} does not.
    """
    if _UNSAFE_VALUE.search(tag) or '"' in tag:
        raise HttpbinError(400, "entity tags cannot hold quotes or control characters")
    noneMatch = entityTags(request.getHeader("If-None-Match"))
    match = entityTags(request.getHeader("If-Match"))
    if noneMatch:
        if tag in noneMatch or "*" in noneMatch:
            request.setHeader("ETag", tag)
            return statusResponse(request, 304)
    elif match and tag not in match and "*" not in match:
        return statusResponse(request, 412)
    request.setHeader("ETag", tag)
    return get(context, request)


def responseHeaders(context: Context, request: Request) -> bytes:
    """
    C{/response-headers?Name=value...}: answer with those headers, and a JSON
    body listing every response header, this body's own C{Content-Length}
    included.  A requested C{Content-Type} is sent after the body's own
    C{application/json}, as httpbin sends both.  Names must be tokens and
    values free of control characters, and framing or connection headers
    (C{Transfer-Encoding}, C{Content-Length}, C{Connection}, ...) are not for
    the client to choose (400), so nothing a client sends can split the
    response.
    """
    pairs = queryPairs(request)
    for name, value in pairs:
        if not _TOKEN.fullmatch(name) or _UNSAFE_VALUE.search(value):
            raise HttpbinError(400, "invalid header name or value")
        if name.lower() in _FRAMING:
            raise HttpbinError(400, f"{name} is set by the server")
    # httpbin adds the requested headers after its own JSON Content-Type, so
    # a requested Content-Type goes out as a second value, after the JSON one.
    request.setHeader("Content-Type", "application/json")
    for name, value in pairs:
        request.responseHeaders.addRawHeader(name, value)
    # The body lists Content-Length, which depends on the body: grow it until
    # the length it states is its own.
    data = b""
    for _ in range(10):
        shown: dict[str, str | list[str]] = {"Content-Length": str(len(data))}
        for rawName, values in request.responseHeaders.getAllRawHeaders():
            name = rawName.decode("latin-1")
            decoded = [v.decode("utf-8", "replace") for v in values]
            shown[name] = decoded[0] if len(decoded) == 1 else decoded
        shown["Content-Length"] = str(len(data))
        following = (json.dumps(shown, indent=2, sort_keys=True) + "\n").encode("utf-8")
        if following == data:
            break
        data = following
    return data


ROUTES = {
    "cache": route(cache, args=(0, 1)),
    "etag": route(etag, args=1),
    "response-headers": route(responseHeaders, ["GET", "POST"]),
}
