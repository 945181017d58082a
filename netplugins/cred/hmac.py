"""
Shared-secret challenge/response (Python Cookbook 11.9): key files, credentials and
the C{hmac:KEYFILE} checker.

The server sends a random challenge; the client answers
C{hmac.new(key, challenge, digestmod).digest()}.  The answer carries no name, so
the server tries every key, always all of them, and the name of the key that
matches is the avatar ID.  L{netplugins.hmacwrap} runs this handshake in front of
any stream endpoint; this module is what it and the checker share.

Key file format, one key per line::

    # comment
    backup:correct horse battery staple     the key is the line's bytes after ':'
    monitor:hex:8f2e...                     hex-encoded key
    deploy:base64:q83v...                   base64-encoded key
    odd:raw:hex:not-hex                     'raw:' keeps a key that starts 'hex:'

Names are UTF-8 without whitespace or control characters; empty keys, duplicate
names and duplicate keys (which would make the avatar ambiguous) are refused with
the line number.  A file readable by every user is loaded with a warning.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from attrs import field, frozen
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.strcred import ICheckerFactory
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import Attribute, implementer

DEFAULT_DIGEST = "sha256"
CHALLENGE_SIZE = 32
# A shorter challenge could repeat, and a repeated challenge makes a recorded
# response replayable.
MIN_CHALLENGE_SIZE = 16

DIGESTS: dict[str, Callable[..., Any]] = {
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
    "sha3_256": hashlib.sha3_256,
    "sha3_512": hashlib.sha3_512,
    "sha1": hashlib.sha1,
    "md5": hashlib.md5,
}
# Only for peers that cannot do better (the Cookbook's Python 2 default was MD5);
# never chosen unless named.
LEGACY_DIGESTS = frozenset({"sha1", "md5"})


def digestFor(name: str) -> Callable[..., Any]:
    """
    The hashlib constructor for a digest name (C{sha256}, C{sha512}, C{md5}, ...).

    @raise ValueError: for a name not in L{DIGESTS}.
    """
    try:
        return DIGESTS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown digest {name!r}; choose one of {', '.join(DIGESTS)}"
        ) from None


class KeyFileError(ValueError):
    """
    A key file could not be read or holds a refused line.
    """


@frozen
class HMACKey:
    """
    One named shared secret.
    """

    name: str
    key: bytes = field(repr=False)


def _decodeKey(spec: bytes) -> bytes:
    scheme, colon, rest = spec.partition(b":")
    if colon and scheme == b"hex":
        return bytes.fromhex(rest.decode("ascii"))
    if colon and scheme == b"base64":
        return base64.b64decode(rest, validate=True)
    if colon and scheme == b"raw":
        return rest
    return spec


def parseKeys(data: bytes, source: str = "<keys>") -> tuple[HMACKey, ...]:
    """
    Parse the text of a key file.

    @param source: the file name, for error messages.
    @raise KeyFileError: naming C{source} and the line, for a malformed line,
        an empty or undecodable key, a duplicate name or key, or no key at all.
    """
    keys: list[HMACKey] = []
    names: dict[str, int] = {}
    secrets: dict[bytes, int] = {}
    for number, line in enumerate(data.split(b"\n"), 1):
        line = line.removesuffix(b"\r")
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        where = f"{source}, line {number}"
        rawName, colon, spec = line.partition(b":")
        if not colon:
            raise KeyFileError(f"{where}: expected name:key")
        try:
            name = rawName.decode("utf-8")
        except UnicodeDecodeError:
            raise KeyFileError(f"{where}: the name is not UTF-8") from None
        if not name or any(c.isspace() or not c.isprintable() for c in name):
            raise KeyFileError(
                f"{where}: the name must be non-empty, without spaces or "
                "control characters"
            )
        try:
            key = _decodeKey(spec)
        except (ValueError, binascii.Error):
            raise KeyFileError(
                f"{where}: the key for {name!r} does not decode"
            ) from None
        if not key:
            raise KeyFileError(f"{where}: the key for {name!r} is empty")
        if name in names:
            raise KeyFileError(
                f"{where}: {name!r} is already defined on line {names[name]}"
            )
        if key in secrets:
            raise KeyFileError(
                f"{where}: the key for {name!r} is the same as line "
                f"{secrets[key]}'s, so the name would be ambiguous"
            )
        names[name] = secrets[key] = number
        keys.append(HMACKey(name, key))
    if not keys:
        raise KeyFileError(f"{source}: no keys")
    return tuple(keys)


def responseFor(key: bytes, challenge: bytes, digestmod: str = DEFAULT_DIGEST) -> bytes:
    """
    What a client holding C{key} answers to C{challenge}: Cookbook 11.9's
    C{client_authenticate}.
    """
    return hmac.new(key, challenge, digestFor(digestmod)).digest()


def findKey(
    keys: Sequence[HMACKey], challenge: bytes, response: bytes, digestmod: str
) -> HMACKey | None:
    """
    The key whose HMAC of C{challenge} is C{response}, or C{None}.

    Every key is tried whatever matches, each with C{hmac.compare_digest}, so the
    time taken says nothing about which key matched or how much of it.
    """
    constructor = digestFor(digestmod)
    found: HMACKey | None = None
    for entry in keys:
        expected = hmac.new(entry.key, challenge, constructor).digest()
        if hmac.compare_digest(expected, response) and found is None:
            found = entry
    return found


_MISSING = (-1, -1, -1)


def _reloadOnSIGHUP(keyFile: KeyFile) -> None:
    from netplugins.reload import onReload

    # A weak reference: a key file nobody uses any more drops out at the next
    # SIGHUP instead of living as long as the process.
    ref = weakref.ref(keyFile)

    def reload() -> None:
        live = ref()
        if live is None:
            unregister()
        else:
            live.reload()

    unregister = onReload(reload)


class KeyFile:
    """
    The keys in a file, re-read when the file changes.

    The file is C{stat}ed on every use and read again only when its identity,
    size or modification time changed; a key file is a few lines, so that
    read stays on the calling thread.  A file that no longer loads is logged and
    the previous keys stay in force.
    """

    log = Logger()

    def __init__(self, path: str) -> None:
        """
        Load C{path}.

        @raise KeyFileError: if it cannot be read or is malformed.
        """
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._failedStamp: tuple[int, int, int] | None = None
        self._keys: tuple[HMACKey, ...] = ()
        try:
            info = os.stat(path)
        except OSError as e:
            raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from None
        self._load(info)
        _reloadOnSIGHUP(self)

    def reload(self) -> None:
        """
        Re-read the file now even if it looks unchanged (SIGHUP).
        """
        self._stamp = self._failedStamp = None
        self.keys()

    @staticmethod
    def _stampOf(info: os.stat_result) -> tuple[int, int, int]:
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def _load(self, info: os.stat_result) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise KeyFileError(
                f"cannot read key file {self.path}: {e.strerror}"
            ) from None
        keys = parseKeys(data, self.path)
        if info.st_mode & stat.S_IROTH:
            self.log.warn(
                "HMAC key file {path} is readable by every user; "
                "chmod o-r it (0600 is best)",
                path=self.path,
            )
        self._keys = keys
        self._stamp = self._stampOf(info)

    def keys(self) -> tuple[HMACKey, ...]:
        """
        The current keys, re-reading the file first if it changed.
        """
        try:
            info: os.stat_result | None = os.stat(self.path)
        except OSError as e:
            info, why = None, f"cannot read key file {self.path}: {e.strerror}"
        stamp = _MISSING if info is None else self._stampOf(info)
        # A broken file is reported once per change, not once per login.
        if stamp in (self._stamp, self._failedStamp):
            return self._keys
        try:
            if info is None:
                raise KeyFileError(why)
            self._load(info)
        except KeyFileError as e:
            self._failedStamp = stamp
            self.log.error(
                "{why}; keeping the {count} keys loaded before",
                why=str(e),
                count=len(self._keys),
            )
        else:
            self._failedStamp = None
            self.log.info(
                "reloaded {count} HMAC keys from {path}",
                count=len(self._keys),
                path=self.path,
            )
        return self._keys

    def find(self, challenge: bytes, response: bytes, digestmod: str) -> HMACKey | None:
        """
        The key that answers C{challenge} with C{response}; see L{findKey}.
        """
        return findKey(self.keys(), challenge, response, digestmod)


class IHMACResponse(ICredentials):
    """
    A client's answer to a challenge: I{HMAC(key, challenge)} for some key the
    server knows.  The server, not the client, chooses the challenge and the
    digest.
    """

    challenge = Attribute("The challenge the server sent (bytes).")
    response = Attribute("The client's answer (bytes).")
    digestmod = Attribute("The digest name: 'sha256', 'sha512', 'md5', ...")


@implementer(IHMACResponse)
@frozen
class HMACResponse:
    """
    A challenge and the answer to it.
    """

    challenge: bytes = field(repr=False)
    response: bytes = field(repr=False)
    digestmod: str = DEFAULT_DIGEST


@implementer(ICredentialsChecker)
class HMACChecker:
    """
    Checks L{IHMACResponse}s against a L{KeyFile}; the avatar ID is the name of
    the key that produced the response (C{str}).
    """

    credentialInterfaces = (IHMACResponse,)
    log = Logger()

    def __init__(self, keys: KeyFile) -> None:
        self.keys = keys

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        """
        @return: a Deferred firing with the key name (C{str}), or failing with
            L{UnauthorizedLogin} for any mismatch or malformed credentials.
        """
        try:
            challenge, response = credentials.challenge, credentials.response
            if not isinstance(challenge, bytes) or not isinstance(response, bytes):
                raise UnauthorizedLogin("challenge and response must be bytes")
            if len(challenge) < MIN_CHALLENGE_SIZE:
                raise UnauthorizedLogin("challenge too short to be unique")
            found = self.keys.find(challenge, response, credentials.digestmod)
        except UnauthorizedLogin as e:
            return fail(e)
        except ValueError as e:
            return fail(UnauthorizedLogin(str(e)))
        except Exception:
            self.log.failure("HMAC check failed")
            return fail(UnauthorizedLogin("HMAC check failed"))
        if found is None:
            return fail(UnauthorizedLogin("no key matches the response"))
        return succeed(found.name)


hmacHelp = """
Checks answers to a random challenge (Python Cookbook 11.9): the client proves
it holds a shared key by sending HMAC(key, challenge), SHA-256 unless the
service chooses another digest.  The avatar ID is the name of the matching key.

The key file has one "name:key" line per key; blank lines and lines starting
with "#" are ignored.  The key is the rest of the line as bytes, or
"name:hex:..." / "name:base64:..." for binary keys ("name:raw:..." for a key
that itself starts with "hex:" or "base64:").  Empty keys, duplicate names and
duplicate keys are refused with the line number.  Keep the file unreadable by
other users (a warning is logged otherwise).  It is re-read when it changes; a
file that no longer loads is logged and the previous keys stay in force.

To run the handshake in front of any service, listen on
"hmac:keyfile=PATH:tcp:PORT" (see netplugins.hmacwrap).
"""


@implementer(ICheckerFactory, IPlugin)
class HMACCheckerFactory:
    """
    Makes L{HMACChecker}s from C{hmac:KEYFILE}.
    """

    authType = "hmac"
    authHelp = hmacHelp
    argStringFormat = "Path to a file of name:key lines."
    credentialInterfaces = (IHMACResponse,)

    def generateChecker(self, argstring: str) -> HMACChecker:
        """
        Load the key file C{argstring}.

        @raise ValueError: for a missing path or a bad key file (strcred reports
            it as a usage error).
        """
        if not argstring.strip():
            raise ValueError("hmac needs the path of a key file")
        return HMACChecker(KeyFile(argstring))
