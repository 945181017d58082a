"""
Logging in to np-ssh: public keys (L{PublicKeyChecker}) from an OpenSSH
C{authorized_keys} file per user (C{--authorized-keys-dir DIR}, the file
C{DIR/USER}) or an C{ldap:} checker's C{sshPublicKey} values; passwords
through the shared checkers (the C{password} and C{keyboard-interactive}
methods); every attempt through the shared login
throttle (L{netplugins.cred.throttle}): at most its per-connection number
of attempts, then a disconnect; delays after failures per user and per
address.  Conch's own 20 attempts and 10-hour window do not apply: the
transport counts the login window from the connection's start.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Callable, Sequence
from typing import Any

from twisted.conch.error import ConchError, ValidPublicKey
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import transport
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netplugins.addresses import describe
from netplugins.cred.throttle import TooManyAttempts
from netplugins.threads import deferToBlocking
from netplugins.twistedinternals.conch import HookedUserAuthServer

#: Signature algorithms accepted for users' keys (nothing with SHA-1 or DSA).
USER_KEY_ALGORITHMS = frozenset(
    [
        b"ssh-ed25519",
        b"rsa-sha2-512",
        b"rsa-sha2-256",
        b"ecdsa-sha2-nistp256",
        b"ecdsa-sha2-nistp384",
        b"ecdsa-sha2-nistp521",
    ]
)

#: The smallest RSA user key accepted, in bits.
MIN_USER_RSA_BITS = 2048

#: An authorized_keys file larger than this is not read.
MAX_AUTHORIZED_KEYS_SIZE = 1024 * 1024

MSG_USERAUTH_INFO_REQUEST = 60


def userName(raw: bytes | str) -> str | None:
    """
    A user name that may name a file in the authorized keys directory, or
    C{None}.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if (
        not raw
        or len(raw) > 255
        or raw.startswith(".")
        or any(c in raw for c in "/\\\x00")
        or not raw.isprintable()
    ):
        return None
    return raw


def authorizedBlobs(text: bytes) -> set[bytes]:
    """
    The key blobs of an OpenSSH C{authorized_keys} file's lines (options
    before the key type are skipped; lines that do not parse are ignored).
    """
    blobs = set()
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(b"#"):
            continue
        for i, field in enumerate(fields[:-1]):
            if field.startswith((b"ssh-", b"ecdsa-", b"sk-")):
                try:
                    blob = base64.b64decode(fields[i + 1], validate=True)
                except (binascii.Error, ValueError):
                    break
                if getNS(blob)[0] == field:
                    blobs.add(blob)
                break
    return blobs


#: Where a user's authorized keys come from: a user name to key blobs.
KeySource = Callable[[str], Deferred[set[bytes]]]


def keysInDirectory(directory: str) -> KeySource:
    """
    The keys of C{directory/USER}, an OpenSSH C{authorized_keys} file read
    in the blocking pool at each attempt (so an edited file applies at once).
    """

    def read(name: str) -> set[bytes]:
        try:
            with open(os.path.join(directory, name), "rb") as f:
                return authorizedBlobs(f.read(MAX_AUTHORIZED_KEYS_SIZE))
        except OSError:
            return set()

    return lambda name: deferToBlocking(read, name)


def keysInLDAP(checker: Any) -> KeySource:
    """
    The C{sshPublicKey} values (OpenSSH's LPK schema) of the user's entry,
    from an C{ldap:} checker's C{lookupAttributes} (read with its search
    account: the attribute must be among those its configuration fetches).
    """

    def found(user: Any) -> set[bytes]:
        if user is None:
            return set()
        values = user.attributes.get("sshpublickey", ())
        return authorizedBlobs("\n".join(values).encode("utf-8", "replace"))

    return lambda name: checker.lookupAttributes(name).addCallback(found)


def directoryCheckers(checkers: Sequence[Any]) -> list[Any]:
    """
    The checkers among C{checkers} (or wrapped by them) that can look up a
    user's attributes without a password (C{ldap:} ones).
    """
    found = []
    for checker in checkers:
        while hasattr(checker, "checker"):
            checker = checker.checker
        if hasattr(checker, "lookupAttributes"):
            found.append(checker)
    return found


@implementer(ICredentialsChecker)
class PublicKeyChecker:
    """
    Logs users in by public key: a key any of C{sources} lists for the
    user, signed with an accepted algorithm.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, sources: Sequence[KeySource]) -> None:
        self.sources = list(sources)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        name = userName(credentials.username)
        if name is None or credentials.algName not in USER_KEY_ALGORITHMS:
            return fail(UnauthorizedLogin("key refused"))
        d: Deferred[Any] = gatherResults(
            [source(name) for source in self.sources], consumeErrors=True
        )
        d.addCallback(lambda found: set().union(*found))
        return d.addCallback(self._cbKeys, name, credentials)

    def _cbKeys(self, blobs: set[bytes], name: str, credentials: Any) -> str:
        if credentials.blob not in blobs:
            raise UnauthorizedLogin("key not authorized")
        try:
            key = Key.fromString(credentials.blob)
        except (BadKeyError, ValueError):
            raise UnauthorizedLogin("bad key") from None
        if key.type() == "RSA" and key.size() < MIN_USER_RSA_BITS:
            raise UnauthorizedLogin("RSA key too small")
        if credentials.signature is None:
            raise ValidPublicKey()
        if not key.verify(credentials.signature, credentials.sigData):
            raise UnauthorizedLogin("bad signature")
        return name


class UserAuthServer(HookedUserAuthServer):
    """
    Conch's ssh-userauth server with the shared throttle, a
    keyboard-interactive password method, and no window or attempt count
    of its own.
    """

    log = Logger()
    passwordDelay = 0
    transport: Any
    _pendingAnswer: Deferred[bytes] | None = None

    def serviceStarted(self) -> None:
        super().serviceStarted()
        # The transport's login window applies instead of conch's 10 hours.
        self.cancelConchLoginTimeout()
        factory: Any = self.transport.factory
        self.throttle = factory.throttle
        self.attempts = self.transport.loginAttempts
        if b"password" in self.supportedAuthentications:
            self.supportedAuthentications.append(b"keyboard-interactive")

    def serviceStopped(self) -> None:
        self._dropAnswer()
        super().serviceStopped()

    def _dropAnswer(self) -> None:
        pending, self._pendingAnswer = self._pendingAnswer, None
        if pending is not None:
            pending.errback(UnauthorizedLogin("keyboard-interactive abandoned"))

    def ssh_USERAUTH_REQUEST(self, packet: bytes) -> Any:
        self._dropAnswer()
        try:
            getNS(packet, 3)
        except Exception:
            self.transport.sendDisconnect(
                transport.DISCONNECT_PROTOCOL_ERROR, b"bad USERAUTH_REQUEST"
            )
            return None
        return super().ssh_USERAUTH_REQUEST(packet)

    def tryAuth(self, kind: bytes, user: bytes, data: bytes) -> Deferred[Any]:
        if kind not in self.supportedAuthentications:
            return fail(ConchError("unsupported authentication"))
        base = super().tryAuth
        return self.throttle.attempt(
            lambda: base(kind, user, data),
            username=user,
            peer=self.transport.transport.getPeer(),
            connection=self.attempts,
        )

    def authenticationFailed(self, reason: Failure) -> None:
        if reason.check(TooManyAttempts):
            self.log.info(
                "disconnecting {peer}: too many login attempts",
                peer=describe(self.transport.transport.getPeer()),
            )
            self.transport.sendDisconnect(
                transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
                b"too many authentication failures",
            )
            return
        if reason.check(UnauthorizedLogin) and self.method != b"none":
            self.log.info(
                "failed SSH login for {user!r} with {method} from {peer}",
                user=self.user,
                method=self.method.decode("ascii", "replace"),
                peer=describe(self.transport.transport.getPeer()),
            )
        super().authenticationFailed(reason)

    def auth_publickey(self, packet: bytes) -> Deferred[Any]:
        try:
            getNS(packet[1:], 2)
        except Exception:
            return fail(UnauthorizedLogin("bad publickey request"))
        return super().auth_publickey(packet)

    def auth_password(self, packet: bytes) -> Deferred[Any]:
        try:
            getNS(packet[1:])
        except Exception:
            return fail(UnauthorizedLogin("bad password request"))
        return super().auth_password(packet)

    def auth_keyboard_interactive(self, packet: bytes) -> Deferred[Any]:
        """
        Ask for the password in one prompt, and check the answer as the
        password method does.
        """
        answer: Deferred[bytes] = Deferred()
        self._pendingAnswer = answer
        self.transport.sendPacket(
            MSG_USERAUTH_INFO_REQUEST,
            NS(b"")
            + NS(b"")
            + NS(b"")
            + struct.pack(">L", 1)
            + NS(b"Password: ")
            + b"\0",
        )
        user: bytes = self.user or b""

        def login(password: bytes) -> Deferred[Any]:
            credentials = UsernamePassword(user, password)
            return self.portal.login(credentials, None, IConchUser)

        return answer.addCallback(login)

    def ssh_USERAUTH_INFO_RESPONSE(self, packet: bytes) -> None:
        answer, self._pendingAnswer = self._pendingAnswer, None
        if answer is None:
            self.transport.sendDisconnect(
                transport.DISCONNECT_PROTOCOL_ERROR, b"unexpected INFO_RESPONSE"
            )
            return
        try:
            (count,) = struct.unpack(">L", packet[:4])
            password, _ = getNS(packet[4:])
        except Exception:
            count, password = 0, b""
        if count != 1:
            answer.errback(UnauthorizedLogin("expected one answer"))
        else:
            answer.callback(password)
