"""
Request echo: the endpoints that describe the request back to the client
(C{/get /post /put /patch /delete /anything /headers /ip /user-agent /uuid}),
C{/status/{codes}}, and the helpers every other endpoint uses to describe a
request in httpbin's JSON shape.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

from twisted.web.server import Request

from netplugins.httpbin.routing import (
    ALL_METHODS,
    Context,
    HttpbinError,
    jsonBody,
    route,
)

# Headers httpbin hides unless the query string has show_env: the ones a
# proxy in front of it adds.
ENV_HEADERS = frozenset(
    name.lower()
    for name in (
        "X-Varnish",
        "X-Request-Start",
        "X-Heroku-Queue-Depth",
        "X-Real-Ip",
        "X-Forwarded-Proto",
        "X-Forwarded-Protocol",
        "X-Forwarded-Ssl",
        "X-Heroku-Queue-Wait-Time",
        "X-Forwarded-For",
        "X-Heroku-Dynos-In-Use",
        "X-Forwarded-Port",
        "X-Request-Id",
        "Via",
        "Total-Route-Time",
        "Connect-Time",
    )
)
MAX_FIELDS = 1000
# The largest body echoed back; a hardened site refuses larger ones before
# they arrive, this only bounds what one request can make us hold twice.
MAX_ECHO_BODY = 10 * 1024 * 1024
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

MultiValued = dict[str, "str | list[str]"]


def semiflatten(pairs: list[tuple[str, str]]) -> MultiValued:
    """
    Pairs as httpbin shows them: one value as itself, repeated names as a list.
    """
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in grouped.items()}


def queryPairs(request: Request) -> list[tuple[str, str]]:
    """
    The query string's name/value pairs, blanks kept; 400 beyond L{MAX_FIELDS}.
    """
    _, _, query = request.uri.partition(b"?")
    try:
        return parse_qsl(
            query.decode("utf-8", "replace"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
        )
    except ValueError:
        raise HttpbinError(400, "too many query parameters") from None


def queryArgs(request: Request) -> dict[str, str]:
    """
    The query string as a plain dictionary, the last value of a name winning.
    """
    return dict(queryPairs(request))


def dataSafe(data: bytes, contentType: str = "application/octet-stream") -> str:
    """
    C{data} as a JSON string: itself when it is UTF-8, else a base64 C{data:}
    URL (RFC 2397), as httpbin shows binary bodies and files.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return f"data:{contentType};base64," + base64.b64encode(data).decode("ascii")


def body(request: Request) -> bytes:
    """
    The request body, which must not exceed L{MAX_ECHO_BODY} (413).
    """
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data = content.read(MAX_ECHO_BODY + 1)
    if len(data) > MAX_ECHO_BODY:
        raise HttpbinError(413, "request body too large")
    return data


def _multipart(
    contentType: str, data: bytes
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """
    The form fields and files (as L{dataSafe} strings) of a multipart body.
    """
    message: Any = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: "
        + contentType.encode("latin-1", "replace")
        + b"\r\n\r\n"
        + data
    )
    if not message.is_multipart():
        raise HttpbinError(400, "malformed multipart body")
    fields: list[tuple[str, str]] = []
    files: list[tuple[str, str]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files.append(
                (
                    name,
                    dataSafe(
                        payload, part.get("Content-Type") or "application/octet-stream"
                    ),
                )
            )
        else:
            fields.append((name, payload.decode("utf-8", "replace")))
        if len(fields) + len(files) > MAX_FIELDS:
            raise HttpbinError(400, "too many form fields")
    return fields, files


def _parsedJSON(data: bytes) -> Any:
    try:
        value = json.loads(data.decode("utf-8"))
        # Indented output recurses once per level: refuse what it cannot write.
        json.dumps(value, indent=2)
    except (ValueError, RecursionError):
        return None
    return value


def headerDict(request: Request) -> dict[str, str]:
    """
    The request headers as httpbin shows them: names in WSGI's capitalisation,
    repeated headers joined with commas, proxy headers hidden unless the query
    string has C{show_env}.
    """
    showEnv = any(name == "show_env" for name, _ in queryPairs(request))
    result: dict[str, str] = {}
    for rawName, values in request.requestHeaders.getAllRawHeaders():
        name = rawName.decode("latin-1")
        if name.lower() in ENV_HEADERS and not showEnv:
            continue
        name = "-".join(word.capitalize() for word in name.split("-"))
        result[name] = ",".join(v.decode("latin-1") for v in values)
    return result


def origin(request: Request) -> str:
    """
    The client's address, or what a proxy says it is (C{X-Forwarded-For}).
    """
    forwarded = request.getHeader("X-Forwarded-For")
    if forwarded:
        return forwarded
    return str(getattr(request.getClientAddress(), "host", ""))


def scheme(request: Request) -> str:
    """
    C{https} or C{http}, as the client or a proxy in front of us saw it.
    """
    forwarded = request.getHeader("X-Forwarded-Proto") or request.getHeader(
        "X-Forwarded-Protocol"
    )
    if forwarded in ("http", "https"):
        return forwarded
    if request.getHeader("X-Forwarded-Ssl") == "on":
        return "https"
    return "https" if request.isSecure() else "http"


def hostAndPort(request: Request) -> str:
    """
    The C{Host} the client asked for, else the address it connected to.
    """
    host = request.getHeader("Host")
    if host:
        return host
    address = request.getHost()
    return f"{getattr(address, 'host', 'localhost')}:{getattr(address, 'port', 80)}"


def absoluteURL(request: Request, path: str) -> str:
    """
    C{path} on this server, as an absolute URL.
    """
    return f"{scheme(request)}://{hostAndPort(request)}{path}"


def requestDict(request: Request, *keys: str, **extras: object) -> dict[str, Any]:
    """
    httpbin's description of C{request}, limited to C{keys} (C{url args form
    data origin headers files json method}), plus C{extras}.

    As with httpbin behind Werkzeug, a form body is shown as C{form} and
    C{files}, leaving C{data} empty and C{json} null.
    """
    wanted = set(keys)
    described: dict[str, Any] = {}
    if "url" in wanted:
        described["url"] = absoluteURL(request, request.uri.decode("latin-1"))
    if "args" in wanted:
        described["args"] = semiflatten(queryPairs(request))
    if "origin" in wanted:
        described["origin"] = origin(request)
    if "headers" in wanted:
        described["headers"] = headerDict(request)
    if "method" in wanted:
        described["method"] = request.method.decode("ascii", "replace")
    if wanted & {"form", "data", "files", "json"}:
        contentType = request.getHeader("Content-Type") or ""
        mediaType = contentType.split(";")[0].strip().lower()
        data = body(request)
        form: list[tuple[str, str]] = []
        files: list[tuple[str, str]] = []
        if mediaType == "application/x-www-form-urlencoded":
            try:
                form = parse_qsl(
                    data.decode("utf-8", "replace"),
                    keep_blank_values=True,
                    max_num_fields=MAX_FIELDS,
                )
            except ValueError:
                raise HttpbinError(400, "too many form fields") from None
        elif mediaType == "multipart/form-data":
            form, files = _multipart(contentType, data)
        isForm = mediaType in FORM_TYPES
        parts = {
            "form": semiflatten(form),
            "files": semiflatten(files),
            "data": "" if isForm else dataSafe(data),
            "json": None if isForm else _parsedJSON(data),
        }
        described.update({k: v for k, v in parts.items() if k in wanted})
    described.update(extras)
    return described


ECHO_KEYS = ("url", "args", "form", "data", "origin", "headers", "files", "json")


def get(context: Context, request: Request) -> bytes:
    """
    C{/get}: the query string, headers, origin and URL.
    """
    return jsonBody(request, requestDict(request, "url", "args", "headers", "origin"))


def echo(context: Context, request: Request) -> bytes:
    """
    C{/post}, C{/put}, C{/patch}, C{/delete}: everything, body included.
    """
    return jsonBody(request, requestDict(request, *ECHO_KEYS))


def anything(context: Context, request: Request, path: str = "") -> bytes:
    """
    C{/anything[/...]}: everything, with the method, for any method.
    """
    return jsonBody(request, requestDict(request, *ECHO_KEYS, "method"))


def headers(context: Context, request: Request) -> bytes:
    """
    C{/headers}.
    """
    return jsonBody(request, requestDict(request, "headers"))


def ip(context: Context, request: Request) -> bytes:
    """
    C{/ip}.
    """
    return jsonBody(request, requestDict(request, "origin"))


def userAgent(context: Context, request: Request) -> bytes:
    """
    C{/user-agent}.
    """
    return jsonBody(request, {"user-agent": request.getHeader("User-Agent")})


def uuid4(context: Context, request: Request) -> bytes:
    """
    C{/uuid}: a fresh version 4 UUID.
    """
    return jsonBody(request, {"uuid": str(uuid.uuid4())})


TEAPOT = r"""
    -=[ teapot ]=-

       _______
      /  ___  \__
     |  (___)  | \\
      \_______/   ))
      |       |__//
       \_____/
"""

ACCEPTED_MEDIA_TYPES = [
    "image/webp",
    "image/svg+xml",
    "image/jpeg",
    "image/png",
    "image/*",
]


def statusResponse(request: Request, code: int) -> bytes:
    """
    Answer with C{code}, and with the extras httpbin gives some codes:
    redirects point at C{/redirect/1}, 401 and 407 challenge, 418 is a teapot.
    """
    request.setResponseCode(code)
    request.setHeader("Content-Type", "text/html; charset=utf-8")
    if code in (301, 302, 303, 305, 307):
        request.setHeader("Location", "/redirect/1")
    elif code == 401:
        request.setHeader("WWW-Authenticate", 'Basic realm="Fake Realm"')
    elif code == 407:
        request.setHeader("Proxy-Authenticate", 'Basic realm="Fake Realm"')
    elif code == 402:
        request.setHeader("x-more-info", "http://vimeo.com/22053820")
        return b"Payment required."
    elif code == 406:
        request.setHeader("Content-Type", "application/json")
        return json.dumps(
            {
                "message": "Client did not request a supported media type.",
                "accept": ACCEPTED_MEDIA_TYPES,
            }
        ).encode("ascii")
    elif code == 418:
        request.setHeader("x-more-info", "http://tools.ietf.org/html/rfc2324")
        return TEAPOT.encode("ascii")
    return b""


def statusCode(text: str) -> int:
    """
    A final status code (200 to 599) from text; 400 for anything else.
    """
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 3:
        raise HttpbinError(400, "Invalid status code")
    code = int(text)
    # 1xx are not final answers: a client would wait for the real one.
    if not 200 <= code <= 599:
        raise HttpbinError(400, "Invalid status code")
    return code


def status(context: Context, request: Request, codes: str) -> bytes:
    """
    C{/status/{codes}}: that status, or a weighted random choice from
    C{code[:weight],...}.
    """
    choices: list[int] = []
    weights: list[float] = []
    for choice in codes.split(",")[:MAX_FIELDS]:
        code, _, weight = choice.partition(":")
        choices.append(statusCode(code))
        try:
            weights.append(float(weight) if weight else 1.0)
        except ValueError:
            raise HttpbinError(400, "Invalid status code") from None
    if any(not 0 <= w < float("inf") for w in weights) or sum(weights) <= 0:
        raise HttpbinError(400, "Invalid status code")
    chosen = random.choices(choices, weights)[0]  # noqa: S311 (not security)
    return statusResponse(request, chosen)


ROUTES = {
    "get": route(get),
    "post": route(echo, ["POST"]),
    "put": route(echo, ["PUT"]),
    "patch": route(echo, ["PATCH"]),
    "delete": route(echo, ["DELETE"]),
    "anything": route(anything, ALL_METHODS, rest=True),
    "headers": route(headers),
    "ip": route(ip),
    "user-agent": route(userAgent),
    "uuid": route(uuid4),
    "status": route(status, ALL_METHODS, 1),
}
