# -*- test-case-name: tests.test_htpasswd -*-
"""
The C{htpasswd:PATH} credential checker: Apache-style C{user:hash} files.

Only hashes that are still expensive to attack are accepted: bcrypt (C{$2a$},
C{$2b$}, C{$2y$}, as C{htpasswd -B} writes) and argon2id.  A file holding
anything weaker is refused when it is loaded, naming the line, so a server never
starts half-protected.

Hashing costs tens to hundreds of milliseconds of CPU, so every verification runs
in the shared blocking pool (L{netplugins.threads}).  The file is re-read (in
that pool) when its size, mtime or inode changes, found at a login or a mail
recipient lookup, and on L{reloadAll} (what a SIGHUP handler calls); a
file that no longer loads is logged and the previous users stay in force.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
import secrets
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from weakref import WeakSet

import argon2
import bcrypt
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from attrs import frozen
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netplugins.cred._input import (
    MAX_PASSWORD,
    MAX_USERNAME,
    avatarIdFor,
    normaliseCredentials,
)
from netplugins.cred._reload import follow
from netplugins.files import Signature, fileSignature, signatureOf
from netplugins.mail.directory import IMailDirectory
from netplugins.threads import PoolFullError, deferToBlocking

BCRYPT = "bcrypt"
ARGON2ID = "argon2id"

DEFAULT_BCRYPT_COST = 12

# What every refused login says, whatever the reason (which is logged).
REFUSED = "invalid user name or password"

# bcrypt only ever looks at the first 72 bytes; bcrypt >= 5 raises ValueError
# beyond that rather than truncating silently.
BCRYPT_MAX_PASSWORD = 72

_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_BCRYPT_HASH = re.compile(r"\$(2[aby])\$(\d\d)\$[./A-Za-z0-9]{53}\Z")
# The PHC string argon2-cffi and libargon2 write; argon2.extract_parameters
# alone does not check the salt and digest are base64.
_ARGON2ID_HASH = re.compile(
    r"\$argon2id\$(?:v=\d+\$)?m=\d+,t=\d+,p=\d+"
    r"\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{6,}\Z"
)

_REFUSED_SCHEMES = (
    ("$apr1$", "Apache MD5 ($apr1$) is too weak"),
    ("{SHA}", "SHA-1 ({SHA}) is too weak"),
    ("$1$", "MD5-crypt ($1$) is too weak"),
    ("$argon2i$", "argon2i is not accepted, only argon2id"),
    ("$argon2d$", "argon2d is not accepted, only argon2id"),
)


class HtpasswdError(ValueError):
    """
    A password file, or a line in it, that cannot be used.
    """


def schemeOf(hashed: str) -> str:
    """
    Identify and validate a password hash.

    @return: L{BCRYPT} or L{ARGON2ID}.
    @raise ValueError: for a malformed hash or any other scheme; the message
        never repeats the hash, which could be a plaintext password.
    """
    if hashed.startswith("$2"):
        match = _BCRYPT_HASH.match(hashed)
        if match is None:
            raise ValueError(
                "malformed bcrypt hash (expected $2a$, $2b$ or $2y$, a two-digit "
                "cost and 53 characters of salt and digest)"
            )
        if not 4 <= int(match[2]) <= 31:
            raise ValueError("bcrypt cost must be between 04 and 31")
        return BCRYPT
    if hashed.startswith("$argon2id$"):
        try:
            if _ARGON2ID_HASH.match(hashed) is None:
                raise InvalidHashError()
            argon2.extract_parameters(hashed)
        except InvalidHashError:
            raise ValueError("malformed argon2id hash") from None
        return ARGON2ID
    for prefix, reason in _REFUSED_SCHEMES:
        if hashed.startswith(prefix):
            raise ValueError(reason)
    if hashed.startswith("$"):
        raise ValueError("unsupported scheme; only bcrypt and argon2id are accepted")
    raise ValueError(
        "not a bcrypt or argon2id hash (DES crypt or a plaintext password?)"
    )


def passwordProblem(password: str, scheme: str = BCRYPT) -> str | None:
    """
    Why C{password} cannot be set with C{scheme}, or L{None} if it can.

    The same rules the checker applies at login, so a password set here can be
    used to log in.
    """
    if not password.strip():
        return "empty passwords are not allowed"
    if "\x00" in password:
        return "passwords cannot contain NUL"
    if len(password) > MAX_PASSWORD:
        return f"passwords are limited to {MAX_PASSWORD} characters"
    if scheme == BCRYPT and len(password.encode("utf-8")) > BCRYPT_MAX_PASSWORD:
        return (
            f"bcrypt passwords are limited to {BCRYPT_MAX_PASSWORD} bytes "
            "(use argon2id for longer ones)"
        )
    return None


def hashPassword(
    password: str, scheme: str = BCRYPT, cost: int = DEFAULT_BCRYPT_COST
) -> str:
    """
    Hash a new password.  Blocking: tens to hundreds of milliseconds.

    @param cost: the bcrypt log2 cost; argon2id uses argon2-cffi's defaults
        (RFC 9106 low-memory profile).
    @raise ValueError: for a password L{passwordProblem} refuses or an unknown
        scheme.
    """
    problem = passwordProblem(password, scheme)
    if problem is not None:
        raise ValueError(problem)
    if scheme == BCRYPT:
        salt = bcrypt.gensalt(rounds=cost)
        return bcrypt.hashpw(password.encode("utf-8"), salt).decode("ascii")
    if scheme == ARGON2ID:
        return argon2.PasswordHasher(type=argon2.Type.ID).hash(password)
    raise ValueError(f"unknown scheme {scheme!r}")


def verifyPassword(hashed: str, password: str) -> bool:
    """
    Whether C{password} matches C{hashed}.  Blocking: runs the full hash.

    @raise ValueError: for a hash of another scheme or a password bcrypt cannot
        take; the backends may raise others for malformed hashes.
    """
    secret = password.encode("utf-8")
    if hashed.startswith("$2"):
        if len(secret) > BCRYPT_MAX_PASSWORD:
            raise ValueError("password too long for bcrypt")
        expected = hashed.encode("ascii")
        return hmac.compare_digest(bcrypt.hashpw(secret, expected), expected)
    if hashed.startswith("$argon2id$"):
        # libargon2 recomputes the digest and compares it in constant time.
        try:
            return argon2.low_level.verify_secret(
                hashed.encode("ascii"), secret, argon2.Type.ID
            )
        except VerifyMismatchError:
            return False
    raise ValueError("unsupported hash scheme")


def _b64(size: int) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode("ascii").rstrip("=")


def dummyHashLike(hashed: str) -> str:
    """
    A hash of the same scheme and cost as C{hashed} that no password matches, so
    that checking an unknown user costs what checking a known one does.
    """
    if hashed.startswith("$2"):
        salt = bcrypt.gensalt(rounds=int(hashed[4:6])).decode("ascii")
        digest = "".join(secrets.choice(_BCRYPT_ALPHABET) for _ in range(31))
        return hashed[:7] + salt[7:] + digest
    params = argon2.extract_parameters(hashed)
    head = hashed.rsplit("$", 2)[0]
    return f"{head}${_b64(params.salt_len)}${_b64(params.hash_len)}"


def _profile(hashed: str) -> str:
    if hashed.startswith("$2"):
        return hashed[:7]
    params = argon2.extract_parameters(hashed)
    return f"{hashed.rsplit('$', 2)[0]}:{params.salt_len}:{params.hash_len}"


#: Keys the choice of an unknown user's dummy hash: stable for a name within
#: a process, unpredictable from outside it.
_DUMMY_KEY = secrets.token_bytes(32)


@frozen
class Users:
    """
    The users of one password file.

    Checking an unknown user must cost what checking a known one does.  When
    the file mixes schemes or costs, one dummy hash would give the users
    whose cost differs from it away; so there is a dummy per scheme and cost
    in the file, and each unknown name is checked against one of them chosen
    by a keyed hash of the name, in proportion to how many users have that
    scheme and cost.  An unknown name then times like some user's, always the
    same one.

    @ivar entries: user name to hash.
    @ivar dummies: (dummy hash, users with its scheme and cost) for every
        scheme and cost in the file, the most common first.
    """

    entries: Mapping[str, str]
    dummies: tuple[tuple[str, int], ...]

    @classmethod
    def fromEntries(cls, entries: Mapping[str, str]) -> Users:
        """
        Wrap validated C{entries}, choosing their dummy hashes.
        """
        models: dict[str, str] = {}
        for hashed in entries.values():
            models.setdefault(_profile(hashed), hashed)
        profiles = Counter(_profile(h) for h in entries.values()).most_common()
        dummies = tuple(
            (dummyHashLike(models[profile]), count) for profile, count in profiles
        )
        if not dummies:
            model = f"$2b${DEFAULT_BCRYPT_COST:02d}$" + "." * 53
            dummies = ((dummyHashLike(model), 1),)
        return cls(dict(entries), dummies)

    @property
    def dummy(self) -> str:
        """
        The dummy hash of the most common scheme and cost.
        """
        return self.dummies[0][0]

    def dummyFor(self, name: str) -> str:
        """
        The dummy hash an unknown C{name} is checked against.
        """
        if len(self.dummies) == 1:
            return self.dummy
        total = sum(count for _, count in self.dummies)
        digest = hmac.digest(_DUMMY_KEY, name.encode("utf-8", "replace"), "sha256")
        pick = int.from_bytes(digest[:8], "big") % total
        for dummy, count in self.dummies:
            if pick < count:
                return dummy
            pick -= count
        raise AssertionError("unreachable")


def userNameProblem(name: str) -> str | None:
    """
    Why C{name} cannot be a user name in a password file, or L{None}.
    """
    if not name:
        return "empty user name"
    if name != name.strip():
        return "user name has leading or trailing whitespace"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "user name contains control characters"
    if len(name) > MAX_USERNAME:
        return f"user name longer than {MAX_USERNAME} characters"
    return None


def parseHtpasswd(data: bytes, source: str) -> Users:
    """
    Parse the contents of a password file.

    @param source: the file's name, for error messages.
    @raise HtpasswdError: naming C{source} and the line number, for a line that
        is not C{user:hash}, a refused or malformed hash, or a duplicate user.
    """
    entries: dict[str, str] = {}
    seenAt: dict[str, int] = {}
    for number, raw in enumerate(data.split(b"\n"), 1):
        where = f"{source}, line {number}"
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise HtpasswdError(f"{where}: not UTF-8") from None
        if not line or line.startswith("#"):
            continue
        name, colon, hashed = line.partition(":")
        if not colon:
            raise HtpasswdError(f"{where}: expected user:hash")
        problem = userNameProblem(name)
        if problem is not None:
            raise HtpasswdError(f"{where}: {problem}")
        if name in seenAt:
            raise HtpasswdError(
                f"{where}: duplicate user {name!r} (first on line {seenAt[name]})"
            )
        try:
            schemeOf(hashed)
        except ValueError as e:
            raise HtpasswdError(
                f"{where}: user {name!r}: {e}; set a new password with np-htpasswd"
            ) from None
        entries[name] = hashed
        seenAt[name] = number
    return Users.fromEntries(entries)


@frozen
class _Loaded:
    signature: Signature | None
    users: Users | None
    error: str | None


def _load(path: str) -> _Loaded:
    """
    Read and parse C{path}.  Blocking; never raises.
    """
    try:
        with open(path, "rb") as f:
            signature = signatureOf(os.fstat(f.fileno()))
            data = f.read()
    except OSError as e:
        return _Loaded(None, None, f"{path}: cannot read: {e.strerror}")
    try:
        return _Loaded(signature, parseHtpasswd(data, path), None)
    except HtpasswdError as e:
        return _Loaded(signature, None, str(e))


def _check(users: Users, name: str, password: str) -> str | None:
    """
    Verify C{name} and C{password} against C{users}.  Blocking.

    @return: L{None} on success, else why the login is refused.
    """
    hashed = users.entries.get(name)
    target = users.dummyFor(name) if hashed is None else hashed
    if target.startswith("$2") and len(password.encode("utf-8")) > BCRYPT_MAX_PASSWORD:
        return "password longer than bcrypt's 72 bytes"
    matched = verifyPassword(target, password)
    if hashed is None:
        return "unknown user"
    return None if matched else "wrong password"


def _recipient(users: Users, local: str) -> str | None:
    """
    The user of C{users} that the local part C{local} names, or C{None}.
    """
    entries = users.entries
    if local in entries:
        return local
    folded = [name for name in entries if name.casefold() == local.casefold()]
    return folded[0] if len(folded) == 1 else None


def _forLog(username: object) -> object:
    # Screening refuses over-long names; they must not flood the log either.
    if isinstance(username, str | bytes):
        return username[:64]
    return username


_live: WeakSet[HtpasswdChecker] = WeakSet()
_sighup: list[Callable[[], None]] = []


def _reloadOnSIGHUP() -> None:
    if not _sighup:
        from netplugins.reload import onReload

        _sighup.append(onReload(reloadAll))


def reloadAll() -> Deferred[Any]:
    """
    Re-read every live htpasswd checker's file now, changed or not: what a SIGHUP
    handler calls (from the reactor thread, e.g. via C{reactor.callFromThread}).

    @return: a L{Deferred} that fires once every file has been read.
    """
    return DeferredList([checker.reload() for checker in list(_live)])


@implementer(ICredentialsChecker, IMailDirectory)
class HtpasswdChecker:
    """
    Check L{IUsernamePassword} credentials (C{str} or C{bytes}) against a
    password file of bcrypt and argon2id hashes; as an L{IMailDirectory}, its
    users receive mail at their names in every local domain.

    @ivar path: the password file.
    """

    credentialInterfaces = (IUsernamePassword,)
    log = Logger()
    hasStorageQuotas = False

    def __init__(
        self,
        path: str,
        runBlocking: Callable[..., Deferred[Any]] = deferToBlocking,
    ) -> None:
        """
        Load C{path} now (blocking: this runs while options are parsed).

        @param runBlocking: how to run blocking calls, like L{deferToBlocking}.
        @raise HtpasswdError: if the file cannot be read or does not load.
        """
        self.path = path
        self._runBlocking = runBlocking
        loaded = _load(path)
        if loaded.users is None:
            raise HtpasswdError(loaded.error)
        self._users = loaded.users
        self._signature = loaded.signature
        self._reloading: Deferred[bool] | None = None
        _live.add(self)
        _reloadOnSIGHUP()

    @property
    def users(self) -> Users:
        """
        The users in force.
        """
        return self._users

    def reload(self) -> Deferred[bool]:
        """
        Re-read the file in the blocking pool, whether or not it changed.

        @return: a L{Deferred} firing with C{True} if the new file is in force,
            C{False} if it failed to load and the previous users were kept.
        """
        if self._reloading is not None:
            # Chain rather than join: the running read may predate the change
            # that prompted this call.
            return follow(self._reloading).addCallback(lambda _: self.reload())
        d = self._runBlocking(_load, self.path)
        # Set before the callbacks, which clear it, in case d has already fired.
        self._reloading = d
        d.addCallback(self._cbLoaded)
        d.addErrback(self._ebLoaded)
        return follow(d)

    def _cbLoaded(self, loaded: _Loaded) -> bool:
        self._reloading = None
        self._signature = loaded.signature
        if loaded.users is None:
            self.log.error(
                "htpasswd: keeping the previous {count} users: {error}",
                count=len(self._users.entries),
                error=loaded.error,
            )
            return False
        self._users = loaded.users
        self.log.info(
            "htpasswd: loaded {count} users from {path}",
            count=len(loaded.users.entries),
            path=self.path,
        )
        return True

    def _ebLoaded(self, failure: Failure) -> bool:
        self._reloading = None
        self.log.failure("htpasswd: reloading {path} failed", failure, path=self.path)
        return False

    def _current(self) -> Deferred[Users]:
        """
        The users in force, re-reading the file first if it has changed.
        """
        if self._reloading is None and fileSignature(self.path) == self._signature:
            return succeed(self._users)
        if self._reloading is not None:
            waiting = follow(self._reloading)
        else:
            waiting = self.reload()
        return waiting.addCallback(lambda _: self._users)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        """
        Check C{credentials} off the reactor thread.

        @return: a L{Deferred} firing with the avatar ID (C{bytes} if the
            username was C{bytes}) or failing with L{UnauthorizedLogin}.
        """
        try:
            username = credentials.username
            name, password = normaliseCredentials(username, credentials.password)
        except UnauthorizedLogin as e:
            self.log.info(
                "htpasswd: login refused for {username!r}: {reason}",
                username=_forLog(getattr(credentials, "username", None)),
                reason=str(e),
            )
            return fail(e)
        except Exception:
            self.log.failure("htpasswd: unusable credentials")
            return fail(UnauthorizedLogin(REFUSED))
        d = maybeDeferred(self._current).addCallback(
            lambda users: self._runBlocking(_check, users, name, password)
        )
        d.addCallbacks(
            self._cbChecked,
            self._ebChecked,
            callbackArgs=(username, name),
            errbackArgs=(name,),
        )
        return d

    def _cbChecked(
        self, refusal: str | None, username: str | bytes, name: str
    ) -> str | bytes:
        if refusal is not None:
            self.log.info(
                "htpasswd: login refused for {username!r}: {reason}",
                username=name,
                reason=refusal,
            )
            # One message for every refusal: protocols may repeat it to the
            # client, who must not learn which user names exist.
            raise UnauthorizedLogin(REFUSED)
        return avatarIdFor(username, name)

    def _ebChecked(self, failure: Failure, name: str) -> Failure:
        if failure.check(UnauthorizedLogin):
            return failure
        if failure.check(PoolFullError):
            # Overload, not a bug: one line, no traceback.
            self.log.warn(
                "htpasswd: login refused for {username!r}: too many checks "
                "waiting ({error})",
                username=name,
                error=failure.getErrorMessage(),
            )
            return Failure(UnauthorizedLogin(REFUSED))
        self.log.failure(
            "htpasswd: verification failed for {username!r}", failure, username=name
        )
        return Failure(UnauthorizedLogin(REFUSED))

    # IMailDirectory

    def lookupRecipient(self, address: str) -> Deferred[str | None]:
        """
        The user named by C{address}'s local part: exactly, or ignoring case
        when that names one user only.  A changed file is re-read first, as a
        login does, so a user just added receives mail before logging in.
        """
        local = address.rpartition("@")[0]
        return self._current().addCallback(_recipient, local)

    def mailboxFor(self, avatarId: str) -> Deferred[str | None]:
        """
        C{None}: a user's Maildir is named by the user name itself.
        """
        return succeed(None)

    def senderAddresses(self, avatarId: str, mailbox: str) -> Deferred[Sequence[str]]:
        """
        None: the file records no addresses.
        """
        return succeed(())

    def storageQuota(self, mailbox: str) -> Deferred[int | None]:
        """
        C{None}: the file records no quotas (C{--quota-storage} applies).
        """
        return succeed(None)
