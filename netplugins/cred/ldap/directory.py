"""
The blocking half of the C{ldap:} checker (L{netplugins.cred.ldap.checker}): finding a
user's single entry (the username escaped, RFC 4515 in filters, RFC 4514 in
DNs), binding as it, checking group membership, and looking users up by name
or mail address.  Everything here runs in the checker's C{netplugins-ldap}
pool.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from typing import Any

import ldap3
from attrs import field, frozen
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from netplugins.cred.ldap.config import USER_PLACEHOLDER, LDAPConfig, loadConfigFile
from netplugins.cred.ldap.connection import (
    RefusedError,
    SearchConnections,
    VerifyingTls,
    clientContext,
    openConnection,
    unbind,
)

# Attributes fetched for every user on top of the configured ones.
STANDARD_ATTRIBUTES = ("uid", "mail", "cn", "memberOf")
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4


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


def _text(values: Any) -> tuple[str, ...]:
    if not isinstance(values, list):
        values = [values]
    return tuple(
        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values
    )


def _entries(connection: Any) -> list[Any]:
    # Continuation references (searchResRef) are referrals: never entries.
    return [r for r in connection.response or () if r.get("type") == "searchResEntry"]


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
        quota = (config.quotaAttribute,) if config.quotaAttribute else ()
        fetch = dict.fromkeys(config.attributes + STANDARD_ATTRIBUTES + quota)
        self.fetch = list(fetch)

    def _connect(self, user: str | None, password: str | None) -> Any:
        """
        Open, secure and bind a connection; raise L{RefusedError} for bad credentials.
        """
        return openConnection(self.config, self.tls, user, password)

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
                unbind(connection)
        try:
            user = self.searches.run(lambda c: self.find(c, username))
        except RefusedError:
            self._decoyBind(password)
            raise
        unbind(self._connect(user.dn, password))
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
            unbind(self._connect(self._decoyDN, password))

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


def loadDirectory(path: str) -> Directory:
    """
    Read the configuration file at C{path} and make its L{Directory} (blocking:
    files and the CA bundle are read).
    """
    return Directory(loadConfigFile(path))
