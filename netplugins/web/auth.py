"""
HTTP Basic authentication through the shared credential checkers.

L{BasicAuthResource} stands in front of any resource: a request passes only
with an C{Authorization: Basic} header that a checker of the service's
C{--auth} accepts, and the wrapped resource then sees the user's name as
C{request.remoteUser} (C{REMOTE_USER} for WSGI, the access log's user field).

Unlike twisted.web.guard's wrapper, logins go through
L{netplugins.cred.throttle.LoginThrottle} (at most six per connection, delays
after failures per user name and address), and Basic credentials are refused
over cleartext connections unless the operator opts out
(C{allowPlaintextAuth}): a password sent in the clear is a password given away.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET
from zope.interface import Interface, implementer

from netplugins.cred.throttle import LoginThrottle


class IRemoteUser(Interface):
    """
    The avatar of an HTTP login: the authenticated user's name.
    """


@implementer(IRealm)
class RemoteUserRealm:
    """
    A realm whose avatars are the avatar IDs themselves, as C{str}.
    """

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> tuple[Any, str, Any]:
        if IRemoteUser not in interfaces:
            raise NotImplementedError("only IRemoteUser avatars")
        if isinstance(avatarId, bytes):
            avatarId = avatarId.decode("utf-8", "replace")
        return IRemoteUser, str(avatarId), lambda: None


def parseBasic(header: bytes) -> tuple[str, str] | None:
    """
    The user name and password of an C{Authorization: Basic} header value,
    or C{None} if it is not one or is malformed.
    """
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(":")
    if not colon:
        return None
    return user, password


def _plain(request: Any, code: int, body: bytes) -> bytes:
    request.setResponseCode(code)
    request.responseHeaders.setRawHeaders(b"Content-Type", [b"text/plain"])
    return body


@implementer(IResource)
class BasicAuthResource(Resource):
    """
    Requires HTTP Basic authentication before anything under C{wrapped}.

    @ivar realmName: shown to the user in the browser's login prompt.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        wrapped: IResource,
        portal: Portal,
        *,
        realmName: str = "netplugins",
        allowPlaintextAuth: bool = False,
        throttle: LoginThrottle | None = None,
        reactor: Any = None,
    ) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.portal = portal
        self.realmName = realmName
        self.allowPlaintextAuth = allowPlaintextAuth
        self.throttle = throttle if throttle is not None else LoginThrottle(reactor)

    def _challenge(self, request: Any, body: bytes) -> bytes:
        quoted = self.realmName.replace("\\", "\\\\").replace('"', '\\"')
        request.responseHeaders.setRawHeaders(
            b"WWW-Authenticate",
            [f'Basic realm="{quoted}", charset="UTF-8"'.encode()],
        )
        return _plain(request, 401, body)

    def render(self, request: Any) -> bytes | int:
        header = request.getHeader(b"authorization")
        if not self.allowPlaintextAuth and not request.isSecure():
            return _plain(
                request, 403, b"403 Forbidden: Basic authentication needs TLS\n"
            )
        if header is None:
            return self._challenge(request, b"401 Unauthorized\n")
        parsed = parseBasic(header)
        if parsed is None:
            return self._challenge(request, b"401 Unauthorized: malformed header\n")
        user, password = parsed
        channel = request.channel
        attempts = getattr(channel, "_netpluginsLoginAttempts", None)
        if attempts is None:
            attempts = channel._netpluginsLoginAttempts = self.throttle.connection()
        d = self.throttle.login(
            self.portal,
            UsernamePassword(user.encode("utf-8"), password.encode("utf-8")),
            None,
            IRemoteUser,
            peer=request.getClientAddress(),
            connection=attempts,
        )
        d.addCallbacks(
            self._cbLogin,
            self._ebLogin,
            callbackArgs=(request,),
            errbackArgs=(request, user, attempts),
        )
        return NOT_DONE_YET

    def _cbLogin(self, result: tuple[Any, str, Any], request: Any) -> None:
        _, name, logout = result
        request.remoteUser = name
        request.notifyFinish().addBoth(lambda _: logout())
        if request.channel is None:
            return
        request.render(getChildForRequest(self.wrapped, request))

    def _ebLogin(self, reason: Failure, request: Any, user: str, attempts: Any) -> None:
        if request.channel is None:
            return
        if not reason.check(UnauthorizedLogin):
            self.log.failure(
                "login for {user} from {peer} failed",
                failure=reason,
                user=user,
                peer=str(request.getClientAddress()),
            )
        else:
            self.log.info(
                "HTTP login refused for {user} from {peer}",
                user=user,
                peer=str(request.getClientAddress()),
            )
        if attempts.exhausted:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        body = self._challenge(request, b"401 Unauthorized\n")
        request.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % (len(body),)])
        request.write(body)
        request.finish()


def requireBasicAuth(
    resource: IResource,
    common: Any,
    *,
    realmName: str = "netplugins",
    allowPlaintextAuth: bool = False,
    throttle: LoginThrottle | None = None,
    reactor: Any = None,
) -> BasicAuthResource:
    """
    C{resource} behind HTTP Basic checked by C{common}'s C{--auth} checkers
    (a L{netplugins.service.Common}).
    """
    return BasicAuthResource(
        resource,
        common.portal(RemoteUserRealm()),
        realmName=realmName,
        allowPlaintextAuth=allowPlaintextAuth,
        throttle=throttle,
        reactor=reactor,
    )
