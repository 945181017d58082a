"""
Authentication endpoints: httpbin's C{/basic-auth/{user}/{passwd}},
C{/hidden-basic-auth/{user}/{passwd}}, C{/bearer} and
C{/digest-auth/{qop}/{user}/{passwd}[/{algorithm}[/{stale_after}]]}, which
check against the credentials in their own URL; and C{/protected}, which
checks against the service's C{--auth} checkers through the shared HTTP Basic
layer (L{netplugins.web.auth}: login throttle, TLS required by default).

Digest nonces are this server's own (a timestamp and its HMAC), so a nonce
from elsewhere, or one older than L{NONCE_LIFETIME}, gets a new challenge
marked C{stale}.  httpbin's cookie mechanics are kept so clients tested
against it behave the same: C{stale_after} counts successful requests until
the nonce is declared stale, C{last_nonce} makes a reused nonce stale after a
failure, and C{?require-cookie=1} insists the client returns the C{fake}
cookie set with the challenge.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from typing import Any

from twisted.cred.portal import Portal
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from netplugins.httpbin.cookies import requestCookies, setCookie
from netplugins.httpbin.core import body, queryArgs
from netplugins.httpbin.routing import (
    Context,
    HttpbinError,
    jsonBody,
    route,
)
from netplugins.web.auth import BasicAuthResource, parseBasic

REALM = "np-httpbin"
NONCE_LIFETIME = 300.0
ALGORITHMS = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
    "SHA-512": hashlib.sha512,
}
_PARAM = re.compile(
    r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*,?'
)
_FAKE = "fake_value"


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _basicAuth(request: Request, user: str, passwd: str, refusal: int) -> bytes:
    given = parseBasic(request.getHeader(b"Authorization") or b"")
    if given is None or not (_same(given[0], user) & _same(given[1], passwd)):
        headers = {}
        if refusal == 401:
            headers["WWW-Authenticate"] = 'Basic realm="Fake Realm"'
        raise HttpbinError(refusal, "", headers)
    return jsonBody(request, {"authenticated": True, "user": user})


def basicAuth(context: Context, request: Request, user: str, passwd: str) -> bytes:
    """
    C{/basic-auth/{user}/{passwd}}: 401 with a challenge until given them.
    """
    return _basicAuth(request, user, passwd, 401)


def hiddenBasicAuth(
    context: Context, request: Request, user: str, passwd: str
) -> bytes:
    """
    C{/hidden-basic-auth/{user}/{passwd}}: 404 until given them.
    """
    return _basicAuth(request, user, passwd, 404)


def bearer(context: Context, request: Request) -> bytes:
    """
    C{/bearer}: any C{Bearer} token is accepted and shown.
    """
    header = request.getHeader("Authorization") or ""
    if not header.startswith("Bearer "):
        raise HttpbinError(401, "", {"WWW-Authenticate": "Bearer"})
    return jsonBody(request, {"authenticated": True, "token": header[7:]})


def parseDigest(header: str) -> dict[str, str] | None:
    """
    The parameters of a C{Digest} C{Authorization} header, unquoted.
    """
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            return None
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name] = value
        position = match.end()
    return params


def _hash(algorithm: str, *parts: str | bytes) -> str:
    joined = b":".join(p if isinstance(p, bytes) else p.encode("utf-8") for p in parts)
    return ALGORITHMS[algorithm](joined).hexdigest()


def _nonce(context: Context) -> str:
    stamp = f"{context.reactor.seconds():.6f}:{os.urandom(8).hex()}"
    mac = hmac.new(context.secret, stamp.encode("ascii"), hashlib.sha256).hexdigest()
    return base64.b64encode(f"{stamp}:{mac}".encode("ascii")).decode("ascii")


def _nonceFresh(context: Context, nonce: str) -> bool:
    try:
        decoded = base64.b64decode(nonce, validate=True).decode("ascii")
        stamp, _, mac = decoded.rpartition(":")
        issued = float(stamp.partition(":")[0])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    expected = hmac.new(context.secret, stamp.encode("ascii"), hashlib.sha256)
    age = context.reactor.seconds() - issued
    return hmac.compare_digest(mac, expected.hexdigest()) and 0 <= age <= NONCE_LIFETIME


def _challenge(
    context: Context,
    request: Request,
    qop: str | None,
    algorithm: str,
    staleAfter: str,
    stale: bool = False,
    lastNonce: str | None = None,
) -> bytes:
    offered = qop or "auth, auth-int"
    opaque = _hash(algorithm, os.urandom(10))
    request.setHeader(
        "WWW-Authenticate",
        f'Digest realm="{REALM}", nonce="{_nonce(context)}", opaque="{opaque}", '
        f'qop="{offered}", algorithm={algorithm}, stale={"TRUE" if stale else "FALSE"}',
    )
    setCookie(request, "stale_after", staleAfter)
    if lastNonce is not None:
        setCookie(request, "last_nonce", lastNonce)
    setCookie(request, "fake", _FAKE)
    request.setResponseCode(401)
    request.setHeader("Content-Type", "text/html; charset=utf-8")
    return b""


def expectedResponse(
    credentials: dict[str, str],
    password: str,
    method: str,
    uri: str,
    entity: bytes,
    algorithm: str,
) -> str | None:
    """
    The C{response} a client knowing C{password} computes (RFC 7616), or
    C{None} when the credentials lack a parameter their C{qop} needs.
    """
    ha1 = _hash(
        algorithm,
        credentials.get("username", ""),
        credentials.get("realm", ""),
        password,
    )
    qop = credentials.get("qop")
    if qop == "auth-int":
        ha2 = _hash(algorithm, method, uri, _hash(algorithm, entity))
    elif qop in (None, "auth"):
        ha2 = _hash(algorithm, method, uri)
    else:
        return None
    nonce = credentials.get("nonce", "")
    if qop is None:
        return _hash(algorithm, ha1, nonce, ha2)
    if not all(k in credentials for k in ("nc", "cnonce")):
        return None
    return _hash(
        algorithm, ha1, nonce, credentials["nc"], credentials["cnonce"], qop, ha2
    )


def digestAuth(
    context: Context,
    request: Request,
    qop: str,
    user: str,
    passwd: str,
    algorithm: str = "MD5",
    staleAfter: str = "never",
) -> bytes:
    """
    C{/digest-auth/{qop}/{user}/{passwd}[/{algorithm}[/{stale_after}]]}.
    """
    if algorithm not in ALGORITHMS:
        algorithm = "MD5"
    wantedQop = qop if qop in ("auth", "auth-int") else None
    requireCookie = queryArgs(request).get("require-cookie", "").lower() in (
        "1",
        "t",
        "true",
    )
    cookies = requestCookies(request)
    credentials = parseDigest(request.getHeader("Authorization") or "")
    if credentials is None or (requireCookie and not cookies):
        return _challenge(context, request, wantedQop, algorithm, staleAfter)
    if requireCookie and cookies.get("fake") != _FAKE:
        setCookie(request, "fake", _FAKE)
        return jsonBody(request, {"errors": ["missing cookie set on challenge"]}, 403)
    nonce = credentials.get("nonce", "")
    staleCount = cookies.get("stale_after")
    if (
        cookies.get("last_nonce") == nonce
        or staleCount == "0"
        or not _nonceFresh(context, nonce)
    ):
        return _challenge(
            context,
            request,
            wantedQop,
            algorithm,
            staleAfter,
            stale=True,
            lastNonce=nonce,
        )
    expected = expectedResponse(
        credentials,
        passwd,
        request.method.decode("ascii"),
        request.uri.decode("latin-1"),
        body(request),
        algorithm,
    )
    given = credentials.get("response", "")
    if (
        expected is None
        or (wantedQop is not None and credentials.get("qop") != wantedQop)
        or not _same(credentials.get("username", ""), user)
        or not _same(given, expected)
    ):
        return _challenge(
            context, request, wantedQop, algorithm, staleAfter, lastNonce=nonce
        )
    setCookie(request, "fake", _FAKE)
    if staleCount:
        following = str(int(staleCount) - 1) if staleCount.isdigit() else "never"
        setCookie(request, "stale_after", following)
    return jsonBody(request, {"authenticated": True, "user": user})


class WhoAmI(Resource):
    """
    What C{/protected} serves once L{netplugins.web.auth.BasicAuthResource}
    let the request through: who logged in.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        user = getattr(request, "remoteUser", None)
        return jsonBody(request, {"authenticated": True, "user": user})


def protectedResource(
    portal: Portal, *, allowPlaintextAuth: bool = False, reactor: Any = None
) -> IResource:
    """
    C{/protected}: L{WhoAmI} behind HTTP Basic checked through C{portal} (with
    L{netplugins.web.auth.RemoteUserRealm}) and the login throttle; refused
    without TLS unless C{allowPlaintextAuth}.
    """
    return BasicAuthResource(
        WhoAmI(),
        portal,
        realmName=REALM,
        allowPlaintextAuth=allowPlaintextAuth,
        reactor=reactor,
    )


def protected(context: Context, request: Request) -> Any:
    """
    C{/protected}: see L{protectedResource}; without C{--auth} checkers it
    refuses everyone.
    """
    if context.protected is None:
        raise HttpbinError(
            401,
            "no credential checkers are configured (--auth)",
            {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )
    return context.protected.render(request)


ROUTES = {
    "basic-auth": route(basicAuth, args=2),
    "hidden-basic-auth": route(hiddenBasicAuth, args=2),
    "bearer": route(bearer),
    "digest-auth": route(digestAuth, args=(3, 5)),
    "protected": route(protected),
}
