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

This module holds the checker (cache, pool, reload, logging); the directory
work is L{netplugins.cred.ldap.directory}, connections and TLS
L{netplugins.cred.ldap.connection}, the settings L{netplugins.cred.ldap.config}.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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
from netplugins.cred.ldap.config import LDAPConfig, parseArgument
from netplugins.cred.ldap.connection import RefusedError, describeError
from netplugins.cred.ldap.directory import Directory, LDAPUser, loadDirectory
from netplugins.mail.directory import IMailDirectory
from netplugins.threads import PoolFullError, blockingPool, deferToPool

_T = TypeVar("_T")

POOL_NAME = "netplugins-ldap"
MAX_REMEMBERED = 10_000


@implementer(ICredentialsChecker, IMailDirectory)
class LDAPChecker:
    """
    Checks L{IUsernamePassword} credentials by binding to an LDAP directory;
    as an L{IMailDirectory}, finds mail recipients by their C{mail} values.

    @ivar attributes: username to the L{LDAPUser} of its last successful
        login (the most recent L{MAX_REMEMBERED}).
    """

    credentialInterfaces = (IUsernamePassword,)
    log = Logger()

    @property
    def hasStorageQuotas(self) -> bool:
        """
        Whether the config names a C{quota_attribute}.
        """
        return self.config.quotaAttribute is not None

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
        d: Deferred[bool] = self._inPool(loadDirectory, self.configPath).addCallbacks(
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
        Bind as the user; fires with the avatar ID or fails with
        L{UnauthorizedLogin}.

        The avatar ID is the entry's C{uid} as the directory spells it (the
        name typed otherwise), in the type the username came in: C{ALICE} and
        C{alice} log in as one user, with one Maildir and one log name, and
        nothing the client typed beyond what the directory matched reaches
        the service.
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
        key = self._cacheKeyFor(name, password) if self.config.cacheTTL else None
        if key is not None:
            user = self._cached(key)
            if user is not None:
                self.log.debug("LDAP login for {user!r} from cache", user=name)
                return succeed(avatarIdFor(credentials.username, user.uid))
        d = self._inPool(self.directory.authenticate, name, password)
        d.addCallbacks(
            self._cbLoggedIn,
            self._ebLoginFailed,
            callbackArgs=(key, credentials.username),
            errbackArgs=(name,),
        )
        return d

    def _cbLoggedIn(
        self, user: LDAPUser, key: tuple[str, bytes] | None, typed: str | bytes
    ) -> str | bytes:
        self._remember(key, user)
        self.log.info("LDAP login for {user!r} as {dn}", user=user.username, dn=user.dn)
        return avatarIdFor(typed, user.uid)

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

    # IMailDirectory

    def lookupRecipient(self, address: str) -> Deferred[str | None]:
        """
        The C{uid} of the entry whose C{mail} holds C{address}
        (L{lookupByMail}); failing that, of the entry of the local part as a
        user name (L{lookupAttributes}), if its C{mail} values, when it has
        any, include the address.
        """
        folded = address.casefold()
        local = address.rpartition("@")[0]
        d: Deferred[Any] = self.lookupByMail(folded)
        return d.addCallback(self._cbRecipientByMail, local, folded)

    def _cbRecipientByMail(
        self, user: LDAPUser | None, local: str, address: str
    ) -> str | Deferred[str | None] | None:
        if user is not None:
            return _recipient(user, address)
        d: Deferred[Any] = self.lookupAttributes(local)
        return d.addCallback(_recipient, address)

    def mailboxFor(self, avatarId: str) -> Deferred[str | None]:
        """
        The C{uid} of C{avatarId}'s entry as its last login read it, if any.
        """
        known = self.attributes.get(avatarId)
        return succeed(None if known is None else known.uid)

    def senderAddresses(self, avatarId: str, mailbox: str) -> Deferred[Sequence[str]]:
        """
        The C{mail} values of C{avatarId}'s entry, if its C{uid} names
        C{mailbox}.
        """
        d: Deferred[Any] = self.lookupAttributes(avatarId)
        return d.addCallback(
            lambda user: user.mail if user is not None and user.uid == mailbox else ()
        )

    def storageQuota(self, mailbox: str) -> Deferred[int | None]:
        """
        The C{quota_attribute} value (bytes, C{0} for none) of the entry
        C{mailbox} names (L{lookupAttributes}: its last login's, else read
        with the search account), if its C{uid} is C{mailbox}; C{None}
        without the setting, the entry, or a whole number there.
        """
        attribute = self.config.quotaAttribute
        if attribute is None:
            return succeed(None)
        d: Deferred[Any] = self.lookupAttributes(mailbox)
        return d.addCallback(self._cbQuota, mailbox, attribute.lower())

    def _cbQuota(
        self, user: LDAPUser | None, mailbox: str, attribute: str
    ) -> int | None:
        if user is None or user.uid != mailbox:
            return None
        values = user.attributes.get(attribute, ())
        if not values:
            return None
        text = values[0].strip()
        if not (text.isascii() and text.isdigit()):
            self.log.warn(
                "LDAP {attribute} of {user!r} is not a number of bytes: {value!r}",
                attribute=self.config.quotaAttribute,
                user=mailbox,
                value=values[0],
            )
            return None
        return int(text)


def _recipient(user: LDAPUser | None, address: str) -> str | None:
    """
    The C{uid} of C{user}, unless it has C{mail} values and C{address}
    (case-folded) is not one of them.
    """
    if user is None:
        return None
    mail = [m.casefold() for m in user.mail]
    if mail and address not in mail:
        return None
    return user.uid
