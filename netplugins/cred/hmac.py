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
from twisted.python.failure import Failure
from zope.interface import Attribute, implementer

from netplugins.cred._reload import reloadWhileAlive

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


def _stampOf(path: str) -> tuple[int, int, int]:
    """
    What tells a changed file: identity, size and modification time.
    """
    try:
        info = os.stat(path)
    except OSError:
        return _MISSING
    return (info.st_ino, info.st_size, info.st_mtime_ns)


@frozen
class _Read:
    """
    One reading of a key file: its keys, or why it did not load.
    """

    stamp: tuple[int, int, int]
    keys: tuple[HMACKey, ...] | None
    error: str | None = None
    worldReadable: bool = False


def _readKeys(path: str) -> _Read:
    """
    Read and parse the key file at C{path} (blocking).
    """
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            data = f.read()
    except OSError as e:
        return _Read(_MISSING, None, f"cannot read key file {path}: {e.strerror}")
    stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
    try:
        keys = parseKeys(data, path)
    except KeyFileError as e:
        return _Read(stamp, None, str(e))
    return _Read(stamp, keys, worldReadable=bool(info.st_mode & stat.S_IROTH))


def _inBlockingPool(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    # Imported here: scanning the hmac dropin stays free of thread pools.
    from netplugins.threads import deferToBlocking

    return deferToBlocking(f, *args)


class KeyFile:
    """
    The keys in a file, re-read when the file changes.

    The file is C{stat}ed on every use (cheap, on the calling thread); when its
    identity, size or modification time changed, it is read again in the
    blocking pool while the keys loaded before stay in force, so handshakes
    never wait for the disk.  A file that no longer loads is logged and the
    previous keys stay in force.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        runBlocking: Callable[..., Deferred[Any]] = _inBlockingPool,
    ) -> None:
        """
        Load C{path} now (blocking: this runs while options are parsed).

        @param runBlocking: how later re-reads run, C{f(*args) -> Deferred};
            the shared blocking pool by default.
        @raise KeyFileError: if it cannot be read or is malformed.
        """
        self.path = path
        self._runBlocking = runBlocking
        self._failedStamp: tuple[int, int, int] | None = None
        self._reading: Deferred[None] | None = None
        self._readAgain = False
        first = _readKeys(path)
        if first.keys is None:
            raise KeyFileError(first.error)
        self._stamp: tuple[int, int, int] | None = first.stamp
        self._keys: tuple[HMACKey, ...] = first.keys
        self._warnIfReadable(first)
        reloadWhileAlive(self, KeyFile.reload)

    def reload(self) -> Deferred[None]:
        """
        Re-read the file now even if it looks unchanged (SIGHUP).

        @return: a L{Deferred} firing once the keys read are in force (or
            refused).
        """
        self._stamp = self._failedStamp = None
        if self._reading is not None:
            # The running read may predate the change that prompted this one.
            self._readAgain = True
            return self._reading
        return self._read()

    def _read(self) -> Deferred[None]:
        self._readAgain = False
        reading: Deferred[None] = Deferred()
        # Set before the read, which may finish at once (a synchronous runner).
        self._reading = reading
        d = self._runBlocking(_readKeys, self.path)
        d.addCallbacks(self._cbRead, self._ebRead)
        d.addBoth(lambda _: self._cbFinished(reading))
        return reading

    def _cbFinished(self, reading: Deferred[None]) -> None:
        self._reading = None
        if self._readAgain:
            self._read().chainDeferred(reading)
        else:
            reading.callback(None)

    def _cbRead(self, read: _Read) -> None:
        if read.keys is None:
            # A broken file is reported once per change, not once per login.
            self._failedStamp = read.stamp
            self.log.error(
                "{why}; keeping the {count} keys loaded before",
                why=read.error,
                count=len(self._keys),
            )
            return
        self._stamp, self._failedStamp, self._keys = read.stamp, None, read.keys
        self._warnIfReadable(read)
        self.log.info(
            "reloaded {count} HMAC keys from {path}",
            count=len(self._keys),
            path=self.path,
        )

    def _ebRead(self, failure: Failure) -> None:
        # Keep the keys; the next use notices the change again and retries.
        from netplugins.threads import PoolFullError

        if failure.check(PoolFullError):
            self.log.warn(
                "HMAC key file {path} changed but the blocking pool is full; "
                "keeping the keys loaded before for now",
                path=self.path,
            )
            return
        self.log.failure(
            "re-reading HMAC key file {path} failed; keeping the keys loaded before",
            failure,
            path=self.path,
        )

    def _warnIfReadable(self, read: _Read) -> None:
        if read.worldReadable:
            self.log.warn(
                "HMAC key file {path} is readable by every user; "
                "chmod o-r it (0600 is best)",
                path=self.path,
            )

    def keys(self) -> tuple[HMACKey, ...]:
        """
        The keys in force now; if the file changed, a re-read starts in the
        blocking pool and these keys serve until it has finished.
        """
        stamp = _stampOf(self.path)
        if stamp not in (self._stamp, self._failedStamp) and self._reading is None:
            self._read()
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
