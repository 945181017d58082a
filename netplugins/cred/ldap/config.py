"""
Configuration of the C{ldap:} checker: an RFC 4516 LDAP URL, the way Apache's
C{AuthLDAPURL} reads one, and an INI file for everything that must not appear on a
command line (the service account's password above all).

    ldap:ldap://host:port/basedn?attr?scope?filter
    ldap:config=/etc/netplugins/ldap.ini

Parsing is pure (no network, no ldap3 connections), so every mistake surfaces as
one C{ValueError} line when the checker is made, not at the first login.
"""

from __future__ import annotations

import configparser
import math
import os
from urllib.parse import unquote, urlsplit

from attrs import field, frozen

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_RECEIVE_TIMEOUT = 5
DEFAULT_POOL_SIZE = 4
MAX_POOL_SIZE = 64
SCOPES = ("base", "one", "sub")
MEMBERSHIPS = ("member", "memberOf")
USER_PLACEHOLDER = "{user}"

# Keys of the [ldap] section, with the words "yes"/"no" for the flag.
CONFIG_KEYS = (
    "url",
    "bind_dn",
    "bind_password_file",
    "ca_file",
    "starttls",
    "connect_timeout",
    "receive_timeout",
    "required_group",
    "group_membership",
    "bind_dn_template",
    "pool_size",
    "cache_ttl",
    "quota_attribute",
)

HELP = """\
Bind as the user against an LDAP directory (ldap3; OpenLDAP, Active Directory,
389 DS).  Two forms:

  ldap:ldap://HOST[:PORT]/BASEDN[?ATTR[?SCOPE[?FILTER]]]
  ldap:ldaps://HOST[:PORT]/BASEDN[?ATTR[?SCOPE[?FILTER]]]
      An RFC 4516 URL as Apache's AuthLDAPURL takes it.  ATTR (default uid) is
      the attribute the username is matched against (further comma-separated
      attributes are fetched too); SCOPE is sub (default), one or base; FILTER
      (percent-encoded) is ANDed with (ATTR=username).  The user's entry is found
      with an anonymous search, then the user's DN is bound with the password.
      ldaps:// checks the server certificate against the system CAs.

  ldap:config=PATH
      An INI file with an [ldap] section, for what must stay off command lines:
        url = ldap://ldap.example.org/ou=people,dc=example,dc=org?uid?sub
        bind_dn = cn=reader,dc=example,dc=org   (search as this service account)
        bind_password_file = /etc/netplugins/ldap.secret   (one line)
        ca_file = /etc/ssl/ldap-ca.pem     (CA for ldaps:// and StartTLS)
        starttls = yes                     (never falls back to cleartext)
        connect_timeout = 5                (seconds)
        receive_timeout = 5                (whole seconds per answer)
        required_group = cn=staff,ou=groups,dc=example,dc=org
        group_membership = member          (groupOfNames / groupOfUniqueNames)
                                           or memberOf (the user's attribute)
        bind_dn_template = uid={user},ou=people,dc=example,dc=org
                                           (bind directly, no search)
        pool_size = 4                      (threads and pooled connections)
        cache_ttl = 0                      (seconds to remember a success; 0 = off)
        quota_attribute = mailQuota        (mail: the entry's storage quota in
                                           bytes, 0 = none; overrides
                                           --quota-storage)

Usernames are escaped (RFC 4515 in filters, RFC 4514 in DNs); exactly one entry
must match; referrals are never followed; empty or whitespace passwords are
refused without contacting the server.
"""


def _positiveNumber(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{key} must be a number of seconds, not {value!r}") from None
    if not 0 < number < math.inf:
        raise ValueError(f"{key} must be a positive number of seconds, not {value!r}")
    return number


def checkDN(dn: str, what: str) -> str:
    """
    Check that C{dn} is a syntactically valid DN (RFC 4514).

    @raise ValueError: naming C{what}.
    """
    from ldap3.core.exceptions import LDAPInvalidDnError
    from ldap3.utils.dn import parse_dn

    try:
        parse_dn(dn)
    except LDAPInvalidDnError as e:
        raise ValueError(f"{what} is not a valid DN: {dn!r} ({e})") from None
    if not dn.strip():
        raise ValueError(f"{what} is empty")
    return dn


def checkFilter(ldapFilter: str) -> str:
    """
    Parenthesise C{ldapFilter} if needed and check its syntax (RFC 4515).

    @raise ValueError: for a malformed filter.
    """
    from ldap3.core.exceptions import LDAPInvalidFilterError
    from ldap3.operation.search import parse_filter

    if not ldapFilter.startswith("("):
        ldapFilter = f"({ldapFilter})"
    try:
        parse_filter(ldapFilter, None, False, False, None, False)
    except LDAPInvalidFilterError as e:
        raise ValueError(f"bad LDAP filter {ldapFilter!r}: {e}") from None
    return ldapFilter


@frozen
class LDAPConfig:
    """
    Everything the C{ldap:} checker needs to know; see L{HELP} for the meaning
    of each setting.

    @ivar attributes: what to fetch from the user's entry; the first is the
        attribute the username is matched against.
    @ivar bindPassword: the service account's password (never in C{repr}).
    @ivar receiveTimeout: whole seconds, as ldap3 hands it to C{SO_RCVTIMEO}.
    """

    host: str
    port: int
    useSSL: bool
    baseDN: str
    attributes: tuple[str, ...] = ("uid",)
    scope: str = "sub"
    filter: str | None = None
    bindDN: str | None = None
    bindPassword: str | None = field(default=None, repr=False)
    caFile: str | None = None
    startTLS: bool = False
    connectTimeout: float = DEFAULT_CONNECT_TIMEOUT
    receiveTimeout: int = DEFAULT_RECEIVE_TIMEOUT
    requiredGroup: str | None = None
    groupMembership: str = "member"
    bindDNTemplate: str | None = None
    poolSize: int = DEFAULT_POOL_SIZE
    cacheTTL: float = 0.0
    quotaAttribute: str | None = None

    @property
    def userAttribute(self) -> str:
        """
        The attribute the username is matched against.
        """
        return self.attributes[0]

    @property
    def deadline(self) -> float:
        """
        Seconds after which a login fails whatever the server is doing: enough
        for a connect and an answer on both the search and the user connection.
        """
        return 2 * (self.connectTimeout + self.receiveTimeout) + 1

    def describe(self) -> str:
        """
        The server and base as a log line shows them (no secrets).
        """
        scheme = "ldaps" if self.useSSL else "ldap"
        tls = " (StartTLS)" if self.startTLS else ""
        return f"{scheme}://{self.host}:{self.port}/{self.baseDN}{tls}"


def _attributeName(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-;." for c in name)


def parseURL(url: str) -> dict[str, object]:
    """
    Parse an RFC 4516 URL into L{LDAPConfig} keyword arguments.

    @raise ValueError: for anything malformed or unsupported (extensions).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"bad LDAP URL {url!r}: {e}") from None
    if parts.scheme not in ("ldap", "ldaps"):
        raise ValueError(f"LDAP URL must start with ldap:// or ldaps://, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"LDAP URL {url!r} names no host")
    if parts.username is not None or parts.fragment:
        raise ValueError(f"unexpected user or fragment in LDAP URL {url!r}")
    useSSL = parts.scheme == "ldaps"
    fields = parts.query.split("?") if parts.query else []
    if len(fields) > 4:
        raise ValueError(f"too many ?-fields in LDAP URL {url!r}")
    fields += [""] * (4 - len(fields))
    attrs, scope, ldapFilter, extensions = (unquote(f) for f in fields)
    if extensions:
        raise ValueError(
            f"LDAP URL extensions are not supported ({extensions!r}); "
            "use ldap:config=PATH for the bind DN and other settings"
        )
    baseDN = checkDN(unquote(parts.path.lstrip("/")), "the LDAP URL's base DN")
    attributes = tuple(a.strip() for a in attrs.split(",")) if attrs else ("uid",)
    for attribute in attributes:
        if not _attributeName(attribute):
            raise ValueError(f"bad attribute name {attribute!r} in LDAP URL {url!r}")
    scope = scope.lower() or "sub"
    if scope not in SCOPES:
        raise ValueError(f"LDAP URL scope must be base, one or sub, not {scope!r}")
    return {
        "host": parts.hostname,
        "port": port if port is not None else (636 if useSSL else 389),
        "useSSL": useSSL,
        "baseDN": baseDN,
        "attributes": attributes,
        "scope": scope,
        "filter": checkFilter(ldapFilter) if ldapFilter else None,
    }


def _yesNo(key: str, value: str) -> bool:
    word = value.strip().lower()
    if word in ("yes", "true", "on", "1"):
        return True
    if word in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"{key} must be yes or no, not {value!r}")


def readPasswordFile(path: str) -> str:
    """
    The secret in C{path}: its text less one trailing newline.

    @raise ValueError: if unreadable, not UTF-8 or empty.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError as e:
        raise ValueError(
            f"cannot read bind_password_file {path!r}: {e.strerror}"
        ) from None
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    try:
        secret = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"bind_password_file {path!r} is not UTF-8") from None
    if not secret.strip():
        raise ValueError(f"bind_password_file {path!r} is empty")
    return secret


def loadConfigFile(path: str) -> LDAPConfig:
    """
    Read an INI file's C{[ldap]} section into an L{LDAPConfig}.

    @raise ValueError: with one line naming the file and the problem.
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ValueError(f"cannot read LDAP config {path!r}: {e.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"bad LDAP config {path!r}: {first}") from None
    if not parser.has_section("ldap"):
        raise ValueError(f"LDAP config {path!r} has no [ldap] section")
    section = dict(parser.items("ldap"))
    try:
        return configFromMapping(section, os.path.dirname(os.path.abspath(path)))
    except ValueError as e:
        raise ValueError(f"LDAP config {path!r}: {e}") from None


def configFromMapping(section: dict[str, str], relativeTo: str = ".") -> LDAPConfig:
    """
    Build an L{LDAPConfig} from C{[ldap]} keys (see L{CONFIG_KEYS}); relative
    file names are taken from C{relativeTo}.

    @raise ValueError: for unknown keys or bad values.
    """
    unknown = sorted(set(section) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}")
    if "url" not in section:
        raise ValueError("url is required")
    kwargs = parseURL(section["url"].strip())

    def path(key: str) -> str | None:
        value = section.get(key, "").strip()
        return os.path.join(relativeTo, value) if value else None

    bindDN = section.get("bind_dn", "").strip() or None
    passwordFile = path("bind_password_file")
    if (bindDN is None) != (passwordFile is None):
        raise ValueError("bind_dn and bind_password_file go together")
    if bindDN is not None and passwordFile is not None:
        kwargs["bindDN"] = checkDN(bindDN, "bind_dn")
        kwargs["bindPassword"] = readPasswordFile(passwordFile)
    caFile = path("ca_file")
    if caFile is not None:
        if not os.path.isfile(caFile):
            raise ValueError(f"ca_file {caFile!r} does not exist")
        kwargs["caFile"] = caFile
    if "starttls" in section:
        kwargs["startTLS"] = _yesNo("starttls", section["starttls"])
        if kwargs["startTLS"] and kwargs["useSSL"]:
            raise ValueError("starttls makes no sense with an ldaps:// url")
    if "connect_timeout" in section:
        kwargs["connectTimeout"] = _positiveNumber(
            "connect_timeout", section["connect_timeout"]
        )
    if "receive_timeout" in section:
        # ldap3 packs it into SO_RCVTIMEO as whole seconds.
        kwargs["receiveTimeout"] = math.ceil(
            _positiveNumber("receive_timeout", section["receive_timeout"])
        )
    group = section.get("required_group", "").strip()
    if group:
        kwargs["requiredGroup"] = checkDN(group, "required_group")
    membership = section.get("group_membership", "member").strip()
    if membership not in MEMBERSHIPS:
        raise ValueError(
            f"group_membership must be member or memberOf, not {membership!r}"
        )
    kwargs["groupMembership"] = membership
    template = section.get("bind_dn_template", "").strip()
    if template:
        kwargs["bindDNTemplate"] = checkTemplate(template)
    if "pool_size" in section:
        try:
            size = int(section["pool_size"])
        except ValueError:
            size = 0
        if not 1 <= size <= MAX_POOL_SIZE:
            raise ValueError(f"pool_size must be from 1 to {MAX_POOL_SIZE}")
        kwargs["poolSize"] = size
    if "cache_ttl" in section:
        ttl = section["cache_ttl"].strip()
        kwargs["cacheTTL"] = (
            0.0 if ttl in ("0", "") else _positiveNumber("cache_ttl", ttl)
        )
    quotaAttribute = section.get("quota_attribute", "").strip()
    if quotaAttribute:
        if not _attributeName(quotaAttribute):
            raise ValueError(f"bad quota_attribute {quotaAttribute!r}")
        kwargs["quotaAttribute"] = quotaAttribute
    return LDAPConfig(**kwargs)  # type: ignore[arg-type]


def checkTemplate(template: str) -> str:
    """
    Check a direct-bind DN template: exactly one C{{user}}, a valid DN around it.

    @raise ValueError: otherwise.
    """
    if template.count(USER_PLACEHOLDER) != 1:
        raise ValueError(f"bind_dn_template must contain {USER_PLACEHOLDER} once")
    checkDN(template.replace(USER_PLACEHOLDER, "x"), "bind_dn_template")
    return template


def parseArgument(argument: str) -> LDAPConfig:
    """
    Parse what follows C{ldap:} in C{--auth}: a URL or C{config=PATH}.

    @raise ValueError: with one line.
    """
    if argument.startswith("config="):
        return loadConfigFile(argument[len("config=") :])
    if argument.startswith(("ldap://", "ldaps://")):
        return LDAPConfig(**parseURL(argument))  # type: ignore[arg-type]
    raise ValueError(
        "expected ldap:ldap://HOST/BASEDN?ATTR?SCOPE?FILTER, ldaps://... "
        "or ldap:config=PATH (see --help-auth-type ldap)"
    )
