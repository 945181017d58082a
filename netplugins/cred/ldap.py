"""
The C{ldap:} credential checker: bind as the user via ldap3, without blocking the
reactor.

ldap3 is synchronous here (its SYNC strategy) and runs in a bounded pool of its
own, C{netplugins-ldap}; the reactor side only screens input, consults the
optional cache and turns every failure into L{UnauthorizedLogin}.  What ldaptor's
C{LDAPBindingChecker} gets wrong is done right: the username is escaped (RFC 4515
in filters, RFC 4514 in DNs), exactly one entry must match, empty passwords never
reach the server, referrals are never followed, connections are always unbound,
and a failed StartTLS never falls back to a cleartext bind.

Services that want more than the avatar ID read L{LDAPChecker.attributes} (filled
at each login) or call L{LDAPChecker.lookupAttributes} (asks the directory for
users who have not logged in, e.g. mail recipients).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import ldap3
from attrs import field, frozen
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from netplugins.cred._input import avatarIdFor, normaliseCredentials
from netplugins.cred._reload import follow, reloadWhileAlive
from netplugins.cred.ldapconfig import (
    USER_PLACEHOLDER,
    LDAPConfig,
    loadConfigFile,
    parseArgument,
)
from netplugins.threads import PoolFullError, blockingPool, deferToPool

_T = TypeVar("_T")

POOL_NAME = "netplugins-ldap"
# Attributes fetched for every user on top of the configured ones.
STANDARD_ATTRIBUTES = ("uid", "mail", "cn", "memberOf")
MAX_REMEMBERED = 10_000
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4


class RefusedError(Exception):
    """
    The directory answered, and the answer is no (wrong password, no such user,
    two users, a referral, not in the group).  Not a backend failure.
    """


@frozen
class LDAPUser:
    """
    What the directory says about a user who logged in.

    @ivar username: the name the user logged in with.
    @ivar dn: the entry the password was bound against.
    @ivar attributes: attribute name (lower case) to values, as text.
    @ivar groups: DNs of the user's groups: C{memberOf} values, plus the
        required group once membership was checked.
    """

    username: str
    dn: str
    attributes: Mapping[str, tuple[str, ...]] = field(factory=dict)
    groups: tuple[str, ...] = ()

    @property
    def uid(self) -> str:
        """
        The entry's C{uid}, or the username if it has none.
        """
        return (self.attributes.get("uid") or (self.username,))[0]

    @property
    def mail(self) -> tuple[str, ...]:
        """
        The entry's C{mail} addresses.
        """
        return self.attributes.get("mail", ())


def clientContext(caFile: str | None) -> ssl.SSLContext:
    """
    A TLS client context that verifies the certificate chain (against C{caFile},
    else the system store) and the host name, TLS 1.2 or later.
    """
    # One client TLS profile for every netplugins client side.
    from netplugins.tls import clientSSLContext

    return clientSSLContext(caFile=caFile, minVersion="1.2")


class VerifyingTls(ldap3.Tls):  # type: ignore[misc]
    """
    ldap3's C{Tls} with a real verifying context.

    ldap3 builds its own context with C{check_hostname = False} and then calls a
    matcher of its own; here the standard library checks chain and host name
    during the handshake (IP addresses included), for ldaps:// and StartTLS.
    """

    def __init__(self, context: ssl.SSLContext, caFile: str | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=caFile)
        self.context = context

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self.context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )


def _text(values: Any) -> tuple[str, ...]:
    if not isinstance(values, list):
        values = [values]
    return tuple(
        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values
    )


def describeError(error: BaseException) -> str:
    """
    One readable line for an ldap3 error, whose messages often arrive as the
    repr of a tuple wrapped in another.
    """
    text = str(error)
    while True:
        match = re.fullmatch(r"\(\s*(['\"])(.*)\1,?\)", text, re.DOTALL)
        if match is None:
            return " ".join(text.split())
        text = match.group(2).replace("\\'", "'")


def _entries(connection: Any) -> list[Any]:
    # Continuation references (searchResRef) are referrals: never entries.
    return [r for r in connection.response or () if r.get("type") == "searchResEntry"]


def _unbind(connection: Any) -> None:
    try:
        connection.unbind()
    except (LDAPException, OSError):
        # The connection is already broken; closing is all that is left.
        try:
            connection.strategy.close()
        except Exception:  # noqa: S110 - nothing more to do for a dead socket
            pass


class SearchConnections:
    """
    Bound connections for the search step (service account or anonymous),
    reused across logins; at most C{size} idle ones are kept.  Used only from
    pool threads.
    """

    def __init__(self, openConnection: Callable[[], Any], size: int) -> None:
        self._open = openConnection
        self._size = size
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        self.opened = 0

    def run(self, operation: Callable[[Any], _T]) -> _T:
        """
        Run C{operation(connection)} on a pooled connection; a reused one that
        turns out dead (not merely slow) is replaced once.
        """
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            reused = connection is not None
            if connection is None:
                connection = self._open()
                self.opened += 1
            try:
                result = operation(connection)
            except RefusedError:
                self._giveBack(connection)
                raise
            except (LDAPException, OSError) as e:
                _unbind(connection)
                if reused and not isinstance(e, TimeoutError):
                    continue
                raise
            except BaseException:
                _unbind(connection)
                raise
            self._giveBack(connection)
            return result

    def _giveBack(self, connection: Any) -> None:
        with self._lock:
            keep = not (self._closed or connection.closed)
            if keep and len(self._idle) < self._size:
                self._idle.append(connection)
                return
        _unbind(connection)

    def close(self) -> None:
        """
        Unbind every idle connection, and any in use as it is given back.
        """
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            _unbind(connection)


class Directory:
    """
    The blocking half: everything here runs in the C{netplugins-ldap} pool.
    """

    def __init__(self, config: LDAPConfig) -> None:
        self.config = config
        self._decoyDN = f"cn=netplugins-decoy-{secrets.token_hex(8)},{config.baseDN}"
        self.tls: VerifyingTls | None = None
        if config.useSSL or config.startTLS:
            self.tls = VerifyingTls(clientContext(config.caFile), config.caFile)
        self.searches = SearchConnections(self._openSearch, config.poolSize)
        fetch = dict.fromkeys(config.attributes + STANDARD_ATTRIBUTES)
        self.fetch = list(fetch)

    def _connect(self, user: str | None, password: str | None) -> Any:
        """
        Open, secure and bind a connection; raise L{RefusedError} for bad credentials.
        """
        config = self.config
        server = ldap3.Server(
            config.host,
            port=config.port,
            use_ssl=config.useSSL,
            tls=self.tls,
            get_info=ldap3.NONE,
            connect_timeout=config.connectTimeout,
        )
        connection = ldap3.Connection(
            server,
            user=user,
            password=password,
            authentication=ldap3.SIMPLE if user is not None else ldap3.ANONYMOUS,
            client_strategy=ldap3.SYNC,
            auto_bind=ldap3.AUTO_BIND_NONE,
            auto_referrals=False,
            read_only=True,
            check_names=False,
            raise_exceptions=False,
            receive_timeout=config.receiveTimeout,
        )
        try:
            connection.open(read_server_info=False)
            if config.startTLS:
                # start_tls raises when the server refuses or the handshake
                # fails; the explicit check keeps a cleartext bind impossible
                # even if a future ldap3 merely returned False.
                if not connection.start_tls(read_server_info=False):
                    raise LDAPException("StartTLS was not started")
                if not connection.tls_started:
                    raise LDAPException("StartTLS was not started")
            if not connection.bind(read_server_info=False):
                result = connection.result or {}
                raise RefusedError(
                    f"bind as {user or 'anonymous'!r} refused: "
                    f"{result.get('description', 'no answer')}"
                )
        except BaseException:
            _unbind(connection)
            raise
        return connection

    def _openSearch(self) -> Any:
        try:
            return self._connect(self.config.bindDN, self.config.bindPassword)
        except RefusedError as e:
            # A refused service account is a configuration fault, not a login
            # failure: report it as a backend error.
            raise LDAPException(f"search account: {e}") from None

    def _filter(self, username: str) -> str:
        match = f"({self.config.userAttribute}={escape_filter_chars(username)})"
        if self.config.filter:
            return f"(&{match}{self.config.filter})"
        return match

    def _search(self, connection: Any, base: str, scope: str, ldapFilter: str) -> Any:
        """
        The one entry under C{base} matching C{ldapFilter}, or L{RefusedError}.
        """
        connection.search(
            base,
            ldapFilter,
            search_scope={"base": ldap3.BASE, "one": ldap3.LEVEL, "sub": ldap3.SUBTREE}[
                scope
            ],
            attributes=self.fetch,
            size_limit=2,
            time_limit=self.config.receiveTimeout,
        )
        result = connection.result or {}
        code = result.get("result")
        if code == _SIZE_LIMIT_EXCEEDED:
            raise RefusedError("more than one entry matches")
        if code == 32:  # noSuchObject: for a base search, simply no such user
            raise RefusedError("no such entry")
        if code != _SUCCESS:
            raise RefusedError(
                f"search answered {result.get('description')!r} (not followed)"
            )
        entries = _entries(connection)
        if len(entries) != 1:
            raise RefusedError(f"{len(entries)} entries match, not exactly one")
        return entries[0]

    def _user(self, username: str, entry: Any) -> LDAPUser:
        attributes = {
            name.lower(): _text(values)
            for name, values in (entry.get("raw_attributes") or {}).items()
            if values
        }
        return LDAPUser(
            username=username,
            dn=entry["dn"],
            attributes=attributes,
            groups=attributes.get("memberof", ()),
        )

    def _templateDN(self, username: str) -> str:
        assert self.config.bindDNTemplate is not None
        return self.config.bindDNTemplate.replace(
            USER_PLACEHOLDER, escape_rdn(username)
        )

    def find(self, connection: Any, username: str) -> LDAPUser:
        """
        Find C{username}'s single entry through C{connection}.
        """
        if self.config.bindDNTemplate is not None:
            dn = self._templateDN(username)
            entry = self._search(connection, dn, "base", self._filter(username))
        else:
            config = self.config
            entry = self._search(
                connection, config.baseDN, config.scope, self._filter(username)
            )
        return self._user(username, entry)

    def checkGroup(self, connection: Any, user: LDAPUser) -> LDAPUser:
        """
        Refuse unless C{user} is in the required group (if one is configured).
        """
        group = self.config.requiredGroup
        if group is None:
            return user
        if self.config.groupMembership == "memberOf":
            base = user.dn
            ldapFilter = f"(memberOf={escape_filter_chars(group)})"
        else:
            base = group
            dn = escape_filter_chars(user.dn)
            ldapFilter = f"(|(member={dn})(uniqueMember={dn}))"
        connection.search(
            base,
            ldapFilter,
            search_scope=ldap3.BASE,
            attributes=[ldap3.NO_ATTRIBUTES],
            size_limit=1,
            time_limit=self.config.receiveTimeout,
        )
        if not _entries(connection):
            raise RefusedError(f"not a member of {group!r}")
        groups = user.groups
        if group.lower() not in (g.lower() for g in groups):
            groups += (group,)
        return LDAPUser(user.username, user.dn, user.attributes, groups)

    def authenticate(self, username: str, password: str) -> LDAPUser:
        """
        Bind as C{username} with C{password}; the user's attributes, or
        L{RefusedError}, or an ldap3/socket error for a backend failure.
        """
        if self.config.bindDNTemplate is not None:
            connection = self._connect(self._templateDN(username), password)
            try:
                return self.checkGroup(connection, self.find(connection, username))
            finally:
                _unbind(connection)
        try:
            user = self.searches.run(lambda c: self.find(c, username))
        except RefusedError:
            self._decoyBind(password)
            raise
        _unbind(self._connect(user.dn, password))
        if self.config.requiredGroup is None:
            return user
        return self.searches.run(lambda c: self.checkGroup(c, user))

    def _decoyBind(self, password: str) -> None:
        """
        Bind to an entry that does not exist: an unknown user then costs the
        bind a wrong password costs, so response times do not tell which
        names exist.
        """
        # invalidCredentials (or noSuchObject) is the expected answer.
        with contextlib.suppress(Exception):
            _unbind(self._connect(self._decoyDN, password))

    def lookup(self, username: str) -> LDAPUser | None:
        """
        C{username}'s attributes, read with the search account; C{None} if the
        directory has no single entry for it.
        """
        try:
            return self.searches.run(lambda c: self.find(c, username))
        except RefusedError:
            return None

    def lookupByMail(self, address: str) -> LDAPUser | None:
        """
        The user whose C{mail} attribute holds C{address} (escaped as RFC 4515
        requires), searched under the base DN with the search account;
        C{None} unless exactly one entry matches.
        """
        config = self.config
        ldapFilter = f"(mail={escape_filter_chars(address)})"
        if config.filter:
            ldapFilter = f"(&{ldapFilter}{config.filter})"
        try:
            entry = self.searches.run(
                lambda c: self._search(c, config.baseDN, config.scope, ldapFilter)
            )
        except RefusedError:
            return None
        user = self._user(address, entry)
        names = user.attributes.get(config.userAttribute.lower())
        return self._user(names[0], entry) if names else None


def _loadDirectory(path: str) -> Directory:
    """
    Read the configuration file at C{path} and make its L{Directory} (blocking:
    files and the CA bundle are read).
    """
    return Directory(loadConfigFile(path))


@implementer(ICredentialsChecker)
class LDAPChecker:
    """
    Checks L{IUsernamePassword} credentials by binding to an LDAP directory.

    @ivar attributes: username to the L{LDAPUser} of its last successful
        login (the most recent L{MAX_REMEMBERED}).
    """

    credentialInterfaces = (IUsernamePassword,)
    log = Logger()

    def __init__(
        self,
        config: LDAPConfig,
        reactor: Any = None,
        clock: Any = None,
        *,
        configPath: str | None = None,
    ):
        """
        @param reactor: runs the thread pool's callbacks and the login deadline;
            the global reactor by default, looked up at the first login.
        @param clock: what the cache reads the time from; C{reactor} by default.
        @param configPath: the file C{config} came from, re-read on SIGHUP.
        """
        self.config = config
        self.configPath = configPath
        self._reloading: Deferred[bool] | None = None
        self.directory = Directory(config)
        self.attributes: OrderedDict[str, LDAPUser] = OrderedDict()
        self._reactor = reactor
        self._clock = clock
        self._pool: ThreadPool | None = None
        self._cache: dict[tuple[str, bytes], tuple[float, LDAPUser]] = {}
        self._cacheKey = os.urandom(32)
        if not (config.useSSL or config.startTLS):
            self.log.warn(
                "LDAP passwords travel in the clear to {server}; use ldaps:// or "
                "starttls = yes",
                server=config.describe(),
            )
        if configPath is not None:
            reloadWhileAlive(self, LDAPChecker.reload)

    @classmethod
    def fromArgument(cls, argument: str) -> LDAPChecker:
        """
        A checker for what follows C{ldap:} in C{--auth}; a C{config=PATH}
        one re-reads its file on SIGHUP.

        @raise ValueError: with one line.
        """
        config = parseArgument(argument)
        path = argument[len("config=") :] if argument.startswith("config=") else None
        return cls(config, configPath=path)

    def reload(self) -> Deferred[bool]:
        """
        Re-read the configuration file in the pool and switch new logins to it,
        with fresh connections; a file that no longer loads is logged and the
        current configuration stays.  Logins asked for meanwhile wait for it.

        @return: a L{Deferred} firing with whether the new file is in force.
        """
        if self.configPath is None:
            return succeed(False)
        if self._reloading is not None:
            # The running read may predate the change that prompted this call.
            return follow(self._reloading).addCallback(lambda _: self.reload())
        d: Deferred[bool] = self._inPool(_loadDirectory, self.configPath).addCallbacks(
            self._cbReloaded, self._ebReloaded
        )
        if not d.called:
            # Cleared by the callbacks; a pool that refused at once left none.
            self._reloading = d
        return follow(d)

    def _cbReloaded(self, directory: Directory) -> bool:
        self._reloading = None
        old, self.directory = self.directory, directory
        self.config = directory.config
        # Cached logins were checked against the old server, filter or group.
        self._cache.clear()
        if self._pool is not None:
            self._pool.adjustPoolsize(maxthreads=self.config.poolSize)
            # Straight to the pool, as at shutdown: unbinding is never refused.
            deferToThreadPool(self._getReactor(), self._pool, old.searches.close)
        self.log.info(
            "LDAP configuration reloaded from {path}: {server}",
            path=self.configPath,
            server=self.config.describe(),
        )
        return True

    def _ebReloaded(self, reason: Failure) -> bool:
        self._reloading = None
        if reason.check(ValueError):
            self.log.error(
                "LDAP configuration {path} rejected, keeping the previous one: {error}",
                path=self.configPath,
                error=reason.getErrorMessage(),
            )
        else:
            self.log.failure(
                "LDAP configuration {path} not reloaded, keeping the previous one",
                reason,
                path=self.configPath,
            )
        return False

    def _getReactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _getPool(self) -> ThreadPool:
        if self._pool is None:
            reactor = self._getReactor()
            self._pool = blockingPool(
                name=POOL_NAME, maxThreads=self.config.poolSize, reactor=reactor
            )
            reactor.addSystemEventTrigger("before", "shutdown", self.close)
        return self._pool

    def _inPool(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        reactor = self._getReactor()
        d = deferToPool(reactor, self._getPool(), f, *args)
        d.addTimeout(self.config.deadline, reactor)
        return d

    def close(self) -> Deferred[None]:
        """
        Unbind the pooled search connections (at reactor shutdown, or by hand).
        """
        if self._pool is None:
            return succeed(None)
        searches = self.directory.searches
        # Straight to the pool: unbinding at shutdown is not refused for a full
        # queue.
        return deferToThreadPool(self._getReactor(), self._pool, searches.close)

    def _now(self) -> float:
        return float((self._clock or self._getReactor()).seconds())

    def _cacheKeyFor(self, name: str, password: str) -> tuple[str, bytes]:
        # Only a keyed hash of the password is kept, under a per-process key.
        digest = hmac.new(self._cacheKey, password.encode("utf-8"), hashlib.sha256)
        return (name, digest.digest())

    def _cached(self, key: tuple[str, bytes]) -> LDAPUser | None:
        hit = self._cache.get(key)
        if hit is None:
            return None
        expires, user = hit
        if self._now() >= expires:
            del self._cache[key]
            return None
        return user

    def _remember(self, key: tuple[str, bytes] | None, user: LDAPUser) -> None:
        self.attributes[user.username] = user
        self.attributes.move_to_end(user.username)
        while len(self.attributes) > MAX_REMEMBERED:
            self.attributes.popitem(last=False)
        if key is None:
            return
        now = self._now()
        if len(self._cache) >= MAX_REMEMBERED:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        if len(self._cache) < MAX_REMEMBERED:
            self._cache[key] = (now + self.config.cacheTTL, user)

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[Any]:
        """
        Bind as the user; fires with the avatar ID (the username, in the type
        it came in) or fails with L{UnauthorizedLogin}.
        """
        if self._reloading is not None:
            # Check against the configuration being loaded, not the old one.
            return follow(self._reloading).addCallback(
                lambda _: self.requestAvatarId(credentials)
            )
        try:
            name, password = normaliseCredentials(
                credentials.username, credentials.password
            )
        except UnauthorizedLogin as e:
            self.log.info("LDAP login refused without asking: {reason}", reason=str(e))
            return fail(UnauthorizedLogin())
        avatarId = avatarIdFor(credentials.username, name)
        key = self._cacheKeyFor(name, password) if self.config.cacheTTL else None
        if key is not None:
            user = self._cached(key)
            if user is not None:
                self.log.debug("LDAP login for {user!r} from cache", user=name)
                return succeed(avatarId)
        d = self._inPool(self.directory.authenticate, name, password)
        d.addCallbacks(
            self._cbLoggedIn,
            self._ebLoginFailed,
            callbackArgs=(key, avatarId),
            errbackArgs=(name,),
        )
        return d

    def _cbLoggedIn(
        self, user: LDAPUser, key: tuple[str, bytes] | None, avatarId: str | bytes
    ) -> str | bytes:
        self._remember(key, user)
        self.log.info("LDAP login for {user!r} as {dn}", user=user.username, dn=user.dn)
        return avatarId

    def _ebLoginFailed(self, reason: Failure, name: str) -> Failure:
        self._logFailure(reason, "login", name)
        return Failure(UnauthorizedLogin())

    def _logFailure(self, reason: Failure, what: str, name: str) -> None:
        from twisted.internet.defer import TimeoutError as DeferredTimeout

        if reason.check(RefusedError):
            self.log.info(
                "LDAP {what} for {user!r} refused: {reason}",
                what=what,
                user=name,
                reason=reason.getErrorMessage(),
            )
        elif reason.check(PoolFullError):
            # Overload, not a broken server: one line, no traceback.
            self.log.warn(
                "LDAP {what} for {user!r} refused: too many LDAP calls waiting "
                "({error})",
                what=what,
                user=name,
                error=reason.getErrorMessage(),
            )
        elif reason.check(DeferredTimeout):
            self.log.error(
                "LDAP {what} for {user!r} failed: {server} did not answer within "
                "{deadline} seconds",
                what=what,
                user=name,
                server=self.config.describe(),
                deadline=self.config.deadline,
            )
        else:
            error: Any = reason.value
            self.log.error(
                "LDAP {what} for {user!r} failed: {server} unusable: {error}",
                what=what,
                user=name,
                server=self.config.describe(),
                error=f"{type(error).__name__}: {describeError(error)}",
            )

    def lookupAttributes(self, avatarId: str | bytes) -> Deferred[LDAPUser | None]:
        """
        The attributes of C{avatarId}: those of its last login if any, else
        fresh from the directory through the search account (no password
        involved).  Fires with C{None} when the directory has no single entry
        for it or cannot be reached.
        """
        if isinstance(avatarId, bytes):
            avatarId = avatarId.decode("utf-8", "replace")
        name = avatarId
        known = self.attributes.get(name)
        if known is not None:
            return succeed(known)
        d = self._inPool(self.directory.lookup, name)

        def failed(reason: Failure) -> None:
            self._logFailure(reason, "lookup", name)
            return None

        d.addErrback(failed)
        return d

    def lookupByMail(self, address: str) -> Deferred[LDAPUser | None]:
        """
        The user whose C{mail} attribute holds C{address}, read through the
        search account (for mail servers resolving recipients whose local
        part is not their user name).  Fires with C{None} when not exactly one
        entry has it or the directory cannot be reached.
        """
        d = self._inPool(self.directory.lookupByMail, address)

        def failed(reason: Failure) -> None:
            self._logFailure(reason, "mail lookup", address)
            return None

        d.addErrback(failed)
        return d
