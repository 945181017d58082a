"""
The C{ldap:} checker, against a real private OpenLDAP (L{tests.slapd}) and a few
misbehaving fake servers on the reactor.
"""

from __future__ import annotations

import io
import itertools
import os
import threading
import time
from typing import Any

from twisted.cred import strcred
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, LoopingCall
from twisted.logger import Logger
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.cred.ldap.checker import LDAPChecker
from netplugins.cred.ldap.config import (
    HELP,
    LDAPConfig,
    configFromMapping,
    loadConfigFile,
    parseArgument,
)
from netplugins.cred.ldap.directory import LDAPUser
from tests import slapd
from tests.slapd import (
    ADMINS_GROUP,
    BASE_DN,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    STAFF_GROUP,
    WEIRD_UID,
    sharedSlapd,
    userDN,
)


def _writeFile(case: SynchronousTestCase, text: str) -> str:
    path = os.path.abspath(case.mktemp())
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


class ParseURLTests(SynchronousTestCase):
    """
    The RFC 4516 command-line form.
    """

    def test_full(self) -> None:
        """
        Host, port, percent-encoded base DN, attributes, scope and filter parse.
        """
        config = parseArgument(
            "ldap://ldap.example.org:1389/ou=people,dc=example%2Cdc=org"
            "?mail,cn?one?(objectClass=inetOrgPerson)"
        )
        self.assertEqual(
            config,
            LDAPConfig(
                host="ldap.example.org",
                port=1389,
                useSSL=False,
                baseDN="ou=people,dc=example,dc=org",
                attributes=("mail", "cn"),
                scope="one",
                filter="(objectClass=inetOrgPerson)",
            ),
        )

    def test_defaults(self) -> None:
        """ldaps:// defaults: port 636, uid, sub, no filter; filters parenthesised."""
        # ldaps:// defaults to port 636, attribute uid, scope sub, no filter; an
        # unparenthesised filter is parenthesised.
        self.assertEqual(
            parseArgument("ldaps://ldap.example.org/dc=example,dc=org"),
            LDAPConfig(
                host="ldap.example.org",
                port=636,
                useSSL=True,
                baseDN="dc=example,dc=org",
            ),
        )
        self.assertEqual(
            parseArgument("ldap://h/dc=x??base?objectClass=*").filter,
            "(objectClass=*)",
        )
        self.assertEqual(parseArgument("ldap://h/dc=x").port, 389)

    def test_bad(self) -> None:
        """
        Each malformed URL gives a ValueError naming the problem.
        """
        cases = {
            "http://h/dc=x": "expected ldap:ldap://",
            "ldap:///dc=x": "names no host",
            "ldap://h/": "base DN is not a valid DN",
            "ldap://h/not a dn": "not a valid DN",
            "ldap://h/dc=x?uid?deep": "scope must be base, one or sub",
            "ldap://h/dc=x?uid?sub?(uid=": "bad LDAP filter",
            "ldap://h/dc=x?uid?sub??bindname=cn=x": "extensions are not supported",
            "ldap://h/dc=x?u(id": "bad attribute name",
            "ldap://h:99999/dc=x": "bad LDAP URL",
            "ldap://h/dc=x?a?b?c?d?e": "too many",
            "nonsense": "expected ldap:ldap://",
        }
        for argument, fragment in cases.items():
            e = self.assertRaises(ValueError, parseArgument, argument)
            self.assertIn(fragment, str(e), argument)


class ConfigFileTests(SynchronousTestCase):
    """
    The C{config=PATH} form.
    """

    def test_full(self) -> None:
        """
        Every setting is read; the password comes from its file less the newline.
        """
        secret = _writeFile(self, "s3cret\n")
        ca = _writeFile(self, "not checked until use")
        path = _writeFile(
            self,
            "\n".join(
                [
                    "[ldap]",
                    "url = ldap://ldap.example.org/ou=people,dc=example,dc=org?uid?sub",
                    "bind_dn = cn=reader,dc=example,dc=org",
                    f"bind_password_file = {secret}",
                    f"ca_file = {ca}",
                    "starttls = yes",
                    "connect_timeout = 1.5",
                    "receive_timeout = 2.5",
                    "required_group = cn=staff,dc=example,dc=org",
                    "group_membership = memberOf",
                    "bind_dn_template = uid={user},ou=people,dc=example,dc=org",
                    "pool_size = 3",
                    "cache_ttl = 30",
                ]
            ),
        )
        self.assertEqual(
            parseArgument(f"config={path}"),
            LDAPConfig(
                host="ldap.example.org",
                port=389,
                useSSL=False,
                baseDN="ou=people,dc=example,dc=org",
                bindDN=SERVICE_DN,
                bindPassword="s3cret",
                caFile=ca,
                startTLS=True,
                connectTimeout=1.5,
                receiveTimeout=3,
                requiredGroup="cn=staff,dc=example,dc=org",
                groupMembership="memberOf",
                bindDNTemplate="uid={user},ou=people,dc=example,dc=org",
                poolSize=3,
                cacheTTL=30.0,
            ),
        )

    def test_passwordNotInRepr(self) -> None:
        """
        The service password never shows in the config's repr (log lines).
        """
        secret = _writeFile(self, "s3cret")
        config = configFromMapping(
            {
                "url": "ldap://h/dc=x",
                "bind_dn": "cn=r,dc=x",
                "bind_password_file": secret,
            }
        )
        self.assertEqual(config.bindPassword, "s3cret")
        self.assertNotIn("s3cret", repr(config))

    def test_bad(self) -> None:
        """
        Each bad setting gives a one-line ValueError naming file and problem.
        """
        empty = _writeFile(self, "\n")
        cases = {
            "url = ldap://h/dc=x\nport = 1": "unknown setting 'port'",
            "bind_dn = cn=r,dc=x": "url is required",
            "url = ldap://h/dc=x\nbind_dn = cn=r,dc=x": "go together",
            (
                f"url = ldap://h/dc=x\nbind_dn = cn=r,dc=x\n"
                f"bind_password_file = {empty}"
            ): "is empty",
            (
                "url = ldap://h/dc=x\nbind_dn = cn=r,dc=x\nbind_password_file = /nope"
            ): "cannot read bind_password_file",
            "url = ldap://h/dc=x\nca_file = /nope.pem": "does not exist",
            "url = ldaps://h/dc=x\nstarttls = yes": "starttls makes no sense",
            "url = ldap://h/dc=x\nstarttls = maybe": "yes or no",
            "url = ldap://h/dc=x\nreceive_timeout = -1": "positive number",
            "url = ldap://h/dc=x\nconnect_timeout = soon": "number of seconds",
            "url = ldap://h/dc=x\npool_size = 0": "pool_size must be from 1",
            "url = ldap://h/dc=x\ncache_ttl = inf": "positive number",
            "url = ldap://h/dc=x\nbind_dn_template = uid=x,dc=x": "{user} once",
            "url = ldap://h/dc=x\nrequired_group = nonsense": "not a valid DN",
            "url = ldap://h/dc=x\ngroup_membership = owner": "member or memberOf",
            "url = ldap://h/dc=x?uid?everywhere": "scope must be",
        }
        for body, fragment in cases.items():
            path = _writeFile(self, "[ldap]\n" + body + "\n")
            e = self.assertRaises(ValueError, loadConfigFile, path)
            self.assertIn(fragment, str(e), body)
            self.assertIn(path, str(e))
            self.assertNotIn("\n", str(e))

    def test_badFile(self) -> None:
        """
        A missing file, a file without [ldap] and an unparseable one are refused.
        """
        e = self.assertRaises(ValueError, loadConfigFile, "/nonexistent/ldap.ini")
        self.assertIn("cannot read LDAP config", str(e))
        e = self.assertRaises(ValueError, loadConfigFile, _writeFile(self, "[x]\n"))
        self.assertIn("no [ldap] section", str(e))
        e = self.assertRaises(ValueError, loadConfigFile, _writeFile(self, "url=1\n"))
        self.assertIn("bad LDAP config", str(e))


class _AuthOptions(usage.Options, strcred.AuthOptionMixin):
    supportedInterfaces = list(strcred.AuthOptionMixin.supportedInterfaces or [])


class DropinTests(SynchronousTestCase):
    """
    The strcred dropin, as C{twistd ... --auth ldap:...} finds it.
    """

    def test_helpAuthType(self) -> None:
        """
        --help-auth-type ldap documents the URL and the config-file form.
        """
        options = _AuthOptions()
        options.authOutput = io.StringIO()
        argv = ["--help-auth-type", "ldap"]
        self.assertRaises(SystemExit, options.parseOptions, argv)
        text = options.authOutput.getvalue()
        self.assertIn("ldap://HOST[:PORT]/BASEDN", text)
        self.assertIn("config=PATH", text)
        self.assertIn("bind_password_file", text)
        self.assertEqual(strcred.findCheckerFactory("ldap").authHelp, HELP)

    def test_makeChecker(self) -> None:
        """makeChecker builds an LDAPChecker offline; a bad argument is ValueError."""
        # makeChecker builds an LDAPChecker without touching the network; a bad argument
        # is a ValueError.
        checker = strcred.makeChecker("ldap:ldap://127.0.0.1:1/dc=example,dc=org")
        self.assertIsInstance(checker, LDAPChecker)
        self.assertRaises(ValueError, strcred.makeChecker, "ldap:ldap://h/dc=x?a?b")

    def test_twistdOptions(self) -> None:
        """
        Twisted's own AuthOptionMixin turns a bad ldap: argument into UsageError.
        """
        options = _AuthOptions()
        e = self.assertRaises(
            usage.UsageError, options.parseOptions, ["--auth", "ldap:config=/nope"]
        )
        self.assertIn("cannot read LDAP config", str(e))


class _Silent(Protocol):
    """
    Accepts a connection and never says a word.
    """

    def connectionMade(self) -> None:
        assert self.factory is not None
        self.factory.connections += 1  # type: ignore[attr-defined]


class _RefuseStartTLS(Protocol):
    """
    Answers the first LDAP message (StartTLS) with C{how}, then records
    everything the client sends.
    """

    def connectionMade(self) -> None:
        self.answered = False
        self.factory.connections += 1  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        factory: Any = self.factory
        if self.answered:
            factory.received += data
            return
        self.answered = True
        assert self.transport is not None
        # LDAPMessage: 30 len 02 01 id ...; short forms are all ldap3 sends here.
        messageID = data[4]
        if factory.how == "refuse":
            # resultCode protocolError (2).
            self.transport.write(_extendedResponse(messageID, 0x02))
        else:
            # Success, then something that is not a TLS handshake.
            self.transport.write(
                _extendedResponse(messageID, 0x00) + b"this is not TLS\r\n" * 4
            )


def _extendedResponse(messageID: int, resultCode: int) -> bytes:
    """
    An LDAP ExtendedResponse with C{resultCode}, empty matched DN and message,
    answering message C{messageID}.
    """
    # LDAPMessage, messageID, ExtendedResponse; resultCode, then matchedDN and
    # diagnosticMessage, both empty.
    return (
        b"\x30\x0c\x02\x01"
        + bytes([messageID])
        + b"\x78\x07\x0a\x01"
        + bytes([resultCode])
        + b"\x04\x00\x04\x00"
    )


def _listen(case: TestCase, protocol: type[Protocol], **attributes: Any) -> Any:
    factory: Any = Factory.forProtocol(protocol)
    factory.connections = 0  # type: ignore[attr-defined]
    for name, value in attributes.items():
        setattr(factory, name, value)
    port: Any = reactor.listenTCP(  # type: ignore[attr-defined]
        0, factory, interface="127.0.0.1"
    )
    case.addCleanup(port.stopListening)
    return factory, port.getHost().port


class _CheckerMixin:
    """
    Make checkers on the shared slapd and log in with them.
    """

    def setUp(self) -> None:
        self.server = sharedSlapd()
        self.events: list[dict[str, Any]] = []
        self.secretFile = _writeFile(self, SERVICE_PASSWORD + "\n")  # type: ignore[arg-type]

    def checker(self, clock: Any = None, **settings: str) -> LDAPChecker:
        mapping = {
            "url": f"{self.server.url()}/{BASE_DN}?uid?sub",
            "bind_dn": SERVICE_DN,
            "bind_password_file": self.secretFile,
            "connect_timeout": "1",
            "receive_timeout": "1",
        }
        mapping.update(settings)
        for key in [k for k, v in mapping.items() if v == ""]:
            del mapping[key]
        checker = LDAPChecker(configFromMapping(mapping), clock=clock)
        checker.log = Logger(observer=self.events.append)  # type: ignore[misc,arg-type]
        self.addCleanup(checker.close)  # type: ignore[attr-defined]
        return checker

    def login(
        self, checker: LDAPChecker, username: str | bytes, password: str | bytes
    ) -> Deferred[Any]:
        credentials = UsernamePassword(username, password)  # type: ignore[arg-type]
        return checker.requestAvatarId(credentials)

    def refused(
        self, checker: LDAPChecker, username: str | bytes, password: str | bytes
    ) -> Deferred[Any]:
        return self.assertFailure(  # type: ignore[attr-defined,no-any-return]
            self.login(checker, username, password), UnauthorizedLogin
        )

    def logText(self) -> str:
        from twisted.logger import formatEvent

        return "\n".join(formatEvent(e) for e in self.events)


class LoginTests(_CheckerMixin, TestCase):
    """
    Search-then-bind and direct bind against the real slapd.
    """

    @inlineCallbacks
    def test_rightPassword(self) -> Any:
        """
        The right password gives the username as avatar ID, in the type given.
        """
        checker = self.checker()
        self.assertEqual((yield self.login(checker, "alice", "alice-pw")), "alice")
        self.assertEqual((yield self.login(checker, b"alice", b"alice-pw")), b"alice")

    @inlineCallbacks
    def test_avatarIdIsDirectorysUid(self) -> Any:
        """The avatar ID is the entry's uid as stored, not the name as typed."""
        checker = self.checker()
        self.assertEqual((yield self.login(checker, "ALICE", "alice-pw")), "alice")
        self.assertEqual((yield self.login(checker, b"Alice", b"alice-pw")), b"alice")

    @inlineCallbacks
    def test_wrongPasswordUnknownUser(self) -> Any:
        """
        A wrong password and an unknown user both fail, and are logged.
        """
        checker = self.checker()
        yield self.refused(checker, "alice", "bob-pw")
        yield self.refused(checker, "nobody", "alice-pw")
        self.assertIn("invalidCredentials", self.logText())
        self.assertIn("0 entries match", self.logText())

    @inlineCallbacks
    def test_unknownUserCostsABind(self) -> Any:
        """An unknown user costs a bind (to a decoy DN), as a wrong password does."""
        checker = self.checker()
        directory = checker.directory
        binds: list[str] = []
        connect = directory._connect

        def counting(user: str | None, password: str | None) -> Any:
            if user != directory.config.bindDN:
                binds.append(user or "")
            return connect(user, password)

        self.patch(directory, "_connect", counting)
        yield self.refused(checker, "nobody", "alice-pw")
        yield self.refused(checker, "alice", "bob-pw")
        self.assertEqual(len(binds), 2, binds)
        self.assertIn("netplugins-decoy", binds[0])
        self.assertTrue(binds[0].endswith(BASE_DN), binds[0])

    @inlineCallbacks
    def test_injection(self) -> Any:
        """
        Filter metacharacters in the username are escaped, so they match nobody.
        """
        checker = self.checker()
        for name in ["*", "alic*", ")(uid=*", "*)(|(uid=*", "alice)(uid=*", "\\2a"]:
            yield self.refused(checker, name, "alice-pw")
        self.assertNotIn("alice,", self.logText())

    @inlineCallbacks
    def test_specialCharacters(self) -> Any:
        """
        A uid with *, (, ), =, comma and non-ASCII logs in, as str and as bytes.
        """
        checker = self.checker()
        self.assertEqual((yield self.login(checker, WEIRD_UID, "zoë-pw")), WEIRD_UID)
        self.assertEqual(
            (yield self.login(checker, WEIRD_UID.encode(), "zoë-pw".encode())),
            WEIRD_UID.encode(),
        )
        yield self.refused(checker, WEIRD_UID, "alice-pw")

    @inlineCallbacks
    def test_directBindTemplate(self) -> Any:
        """Direct bind escapes the username for the DN; NUL and injection fail."""
        checker = self.checker(
            bind_dn_template=f"uid={{user}},{PEOPLE}",
            bind_dn="",
            bind_password_file="",
        )
        self.assertEqual((yield self.login(checker, "bob", "bob-pw")), "bob")
        self.assertEqual((yield self.login(checker, WEIRD_UID, "zoë-pw")), WEIRD_UID)
        yield self.refused(checker, "bob", "alice-pw")
        yield self.refused(checker, "bob,ou=people", "bob-pw")
        yield self.refused(checker, "x\x00", "bob-pw")
        yield self.refused(checker, "*", "bob-pw")

    @inlineCallbacks
    def test_anonymousSearch(self) -> Any:
        """
        Without a service account the search is anonymous.
        """
        checker = self.checker(bind_dn="", bind_password_file="")
        self.assertEqual((yield self.login(checker, "bob", "bob-pw")), "bob")

    @inlineCallbacks
    def test_badServiceAccount(self) -> Any:
        """A refused service account fails the login, logged naming the server."""
        # A refused service account fails the login and is logged as a backend error
        # naming the server.
        checker = self.checker(bind_password_file=_writeFile(self, "wrong"))
        yield self.refused(checker, "alice", "alice-pw")
        self.assertIn("search account", self.logText())
        self.assertIn(f"127.0.0.1:{self.server.port}", self.logText())

    @inlineCallbacks
    def test_exactlyOne(self) -> Any:
        """
        Two entries with the uid refuse, even with the right password.
        """
        checker = self.checker()
        yield self.refused(checker, "twin", "twin-pw")
        self.assertIn("2 entries match, not exactly one", self.logText())

    @inlineCallbacks
    def test_referrals(self) -> Any:
        """Referral entries and referral answers are never followed: both fail."""
        # Neither a referral entry among the results nor a referral answer to the search
        # is followed: both fail.
        checker = self.checker()
        yield self.refused(checker, "mallory", "x-pw")
        referred = self.checker(
            url=f"{self.server.url()}/ou=people,ou=elsewhere,{BASE_DN}"
        )
        yield self.refused(referred, "alice", "alice-pw")
        self.assertIn("'referral' (not followed)", self.logText())
        direct = self.checker(bind_dn_template=f"uid={{user}},ou=elsewhere,{BASE_DN}")
        yield self.refused(direct, "alice", "alice-pw")

    @inlineCallbacks
    def test_filterFromURL(self) -> Any:
        """
        The URL's filter is ANDed with the username match.
        """
        checker = self.checker(url=f"{self.server.url()}/{BASE_DN}?uid?sub?(cn=bob)")
        self.assertEqual((yield self.login(checker, "bob", "bob-pw")), "bob")
        yield self.refused(checker, "alice", "alice-pw")

    @inlineCallbacks
    def test_groupOfNames(self) -> Any:
        """
        A required groupOfNames group admits members and refuses others.
        """
        checker = self.checker(required_group=STAFF_GROUP)
        self.assertEqual((yield self.login(checker, "alice", "alice-pw")), "alice")
        yield self.refused(checker, "bob", "bob-pw")
        self.assertIn("not a member", self.logText())

    @inlineCallbacks
    def test_groupOfUniqueNames(self) -> Any:
        """
        A required groupOfUniqueNames group admits members and refuses others.
        """
        checker = self.checker(required_group=ADMINS_GROUP)
        self.assertEqual((yield self.login(checker, "bob", "bob-pw")), "bob")
        yield self.refused(checker, "alice", "alice-pw")

    @inlineCallbacks
    def test_memberOf(self) -> Any:
        """
        With group_membership = memberOf the user's memberOf decides.
        """
        checker = self.checker(required_group=STAFF_GROUP, group_membership="memberOf")
        self.assertEqual((yield self.login(checker, WEIRD_UID, "zoë-pw")), WEIRD_UID)
        yield self.refused(checker, "bob", "bob-pw")

    @inlineCallbacks
    def test_attributes(self) -> Any:
        """Logins record DN, uid, mail, groups; lookupAttributes reads the others."""
        # A login records the user's DN, uid, mail and groups; lookupAttributes reads
        # users who never logged in, and None for unknown ones.
        checker = self.checker()
        yield self.login(checker, "alice", "alice-pw")
        alice = checker.attributes["alice"]
        self.assertEqual(
            (alice.dn, alice.uid, alice.mail, alice.groups),
            (userDN("alice"), "alice", ("alice@ex.org",), (STAFF_GROUP,)),
        )
        self.assertIs((yield checker.lookupAttributes(b"alice")), alice)
        bob = yield checker.lookupAttributes("bob")
        self.assertIsInstance(bob, LDAPUser)
        self.assertEqual((bob.dn, bob.mail), (userDN("bob"), ("bob@ex.org",)))
        self.assertNotIn("bob", checker.attributes)
        self.assertIsNone((yield checker.lookupAttributes("nobody")))

    @inlineCallbacks
    def test_lookupByMail(self) -> Any:
        """lookupByMail finds the one entry with an address; filters are escaped."""
        # lookupByMail finds the one entry holding an address (any case) whatever its
        # uid; filter characters in the address are escaped, not wildcards.
        checker = self.checker()
        for address in [slapd.DOTTED_MAIL[0], slapd.DOTTED_MAIL[1].upper()]:
            dana = yield checker.lookupByMail(address)
            self.assertIsInstance(dana, LDAPUser)
            self.assertEqual(
                (dana.username, dana.uid, dana.dn, dana.mail),
                ("dana", "dana", userDN("dana"), slapd.DOTTED_MAIL),
            )
        for address in ["dana.smith@ex.or*", "*", "nobody@ex.org", ")(uid=*"]:
            self.assertIsNone((yield checker.lookupByMail(address)), address)

    @inlineCallbacks
    def test_pooledSearchConnection(self) -> Any:
        """
        The service account's connection is reused across logins.
        """
        checker = self.checker()
        for _ in range(3):
            yield self.login(checker, "bob", "bob-pw")
        yield self.refused(checker, "bob", "alice-pw")
        self.assertEqual(checker.directory.searches.opened, 1)


class TLSTests(_CheckerMixin, TestCase):
    """
    ldaps:// and StartTLS verify certificate and host name.
    """

    @inlineCallbacks
    def test_startTLS(self) -> Any:
        """
        ldap:// with starttls = yes and the right CA logs in.
        """
        checker = self.checker(starttls="yes", ca_file=self.server.caFile)
        self.assertEqual((yield self.login(checker, "alice", "alice-pw")), "alice")

    @inlineCallbacks
    def test_ldaps(self) -> Any:
        """
        ldaps:// with the right CA logs in.
        """
        checker = self.checker(
            url=f"{self.server.url(tls=True)}/{BASE_DN}", ca_file=self.server.caFile
        )
        self.assertEqual((yield self.login(checker, "alice", "alice-pw")), "alice")

    @inlineCallbacks
    def test_wrongCA(self) -> Any:
        """
        A CA that did not sign slapd's certificate fails ldaps:// and StartTLS.
        """
        ldaps = self.checker(
            url=f"{self.server.url(tls=True)}/{BASE_DN}",
            ca_file=self.server.wrongCAFile,
        )
        yield self.refused(ldaps, "alice", "alice-pw")
        startTLS = self.checker(starttls="yes", ca_file=self.server.wrongCAFile)
        yield self.refused(startTLS, "alice", "alice-pw")
        self.assertIn("CERTIFICATE_VERIFY_FAILED", self.logText())

    @inlineCallbacks
    def test_wrongHostName(self) -> Any:
        """
        The right CA but an address missing from the certificate fails.
        """
        other = self.server.otherHost
        ldaps = self.checker(
            url=f"{self.server.url(tls=True, host=other)}/{BASE_DN}",
            ca_file=self.server.caFile,
        )
        yield self.refused(ldaps, "alice", "alice-pw")
        startTLS = self.checker(
            url=f"{self.server.url(host=other)}/{BASE_DN}",
            starttls="yes",
            ca_file=self.server.caFile,
        )
        yield self.refused(startTLS, "alice", "alice-pw")
        self.assertEqual(
            self.logText().count("certificate is not valid for '127.0.0.2'"), 2
        )

    @inlineCallbacks
    def test_startTLSRefusedNoClearBind(self) -> Any:
        """A server refusing or garbling StartTLS never sees a cleartext bind."""
        # A server refusing StartTLS, or answering it with garbage, never sees a bind or
        # a password in the clear.
        for how in ("refuse", "garbage"):
            factory, port = _listen(self, _RefuseStartTLS, how=how, received=b"")
            checker = self.checker(
                url=f"ldap://127.0.0.1:{port}/{BASE_DN}",
                starttls="yes",
                ca_file=self.server.caFile,
                bind_dn_template=f"uid={{user}},{PEOPLE}",
            )
            yield self.refused(checker, "alice", "alice-pw")
            service = self.checker(
                url=f"ldap://127.0.0.1:{port}/{BASE_DN}",
                starttls="yes",
                ca_file=self.server.caFile,
            )
            yield self.refused(service, "alice", "alice-pw")
            self.assertEqual(factory.connections, 2)
            for secret in (b"alice-pw", SERVICE_PASSWORD.encode(), b"uid=alice"):
                self.assertNotIn(secret, factory.received, how)
            # Only an unbind (application tag 2, 0x42) may follow.
            self.assertNotIn(b"\x60", factory.received.replace(b"\x42\x00", b""), how)


class InputTests(_CheckerMixin, TestCase):
    """
    Bad input is refused before any network traffic.
    """

    @inlineCallbacks
    def test_noConnection(self) -> Any:
        """
        Empty, whitespace, NUL and non-UTF-8 credentials fail with no connection.
        """
        factory, port = _listen(self, _Silent)
        checker = self.checker(url=f"ldap://127.0.0.1:{port}/{BASE_DN}")
        bad: list[tuple[str | bytes, str | bytes]] = [
            ("alice", ""),
            ("alice", " \t "),
            (b"alice", b""),
            (b"alice", b"\xff"),
            ("", "alice-pw"),
            ("alice", "a\x00b"),
            ("\x00", "alice-pw"),
            (b"al\xffice", b"alice-pw"),
        ]
        for username, password in bad:
            yield self.refused(checker, username, password)
        self.assertEqual(factory.connections, 0)
        self.assertIn("refused without asking", self.logText())


class CacheTests(_CheckerMixin, TestCase):
    """
    The optional positive-result cache.
    """

    def setUp(self) -> None:
        super().setUp()
        self.carol = userDN("carol")
        self.server.setPassword(self.carol, "carol-pw")
        self.addCleanup(self.server.setPassword, self.carol, "carol-pw")

    @inlineCallbacks
    def test_offByDefault(self) -> Any:
        """
        Without cache_ttl a changed password takes effect at once.
        """
        checker = self.checker()
        yield self.login(checker, "carol", "carol-pw")
        self.server.setPassword(self.carol, "carol-new")
        yield self.refused(checker, "carol", "carol-pw")

    @inlineCallbacks
    def test_hitAndExpiry(self) -> Any:
        """A success is cached for cache_ttl, keyed by (not storing) the password."""
        # A success is remembered for cache_ttl seconds, keyed by the password (never
        # stored), and only for that password.
        clock = Clock()
        checker = self.checker(clock=clock, cache_ttl="60")
        yield self.login(checker, "carol", "carol-pw")
        self.server.setPassword(self.carol, "carol-new")
        self.assertEqual((yield self.login(checker, b"carol", b"carol-pw")), b"carol")
        yield self.refused(checker, "carol", "carol-other")
        self.assertNotIn("carol-pw", repr(checker._cache))
        clock.advance(61)
        yield self.refused(checker, "carol", "carol-pw")
        self.assertEqual((yield self.login(checker, "carol", "carol-new")), "carol")

    @inlineCallbacks
    def test_failuresNotCached(self) -> Any:
        """
        A failure is not remembered: the same password works once it is right.
        """
        checker = self.checker(clock=Clock(), cache_ttl="60")
        yield self.refused(checker, "carol", "carol-later")
        self.server.setPassword(self.carol, "carol-later")
        self.assertEqual((yield self.login(checker, "carol", "carol-later")), "carol")


class DeadServerTests(_CheckerMixin, TestCase):
    """
    Dead, silent or killed servers fail the login within the timeout while the
    reactor keeps serving.
    """

    @inlineCallbacks
    def test_silentServer(self) -> Any:
        """A silent server fails the login within the timeout; the reactor runs."""
        # A listener that accepts and never answers fails the login within the receive
        # timeout, and a LoopingCall keeps ticking meanwhile.
        factory, port = _listen(self, _Silent)
        checker = self.checker(url=f"ldap://127.0.0.1:{port}/{BASE_DN}")
        ticks: list[float] = []
        loop = LoopingCall(lambda: ticks.append(time.monotonic()))
        loop.start(0.02)
        self.addCleanup(loop.stop)
        started = time.monotonic()
        yield self.refused(checker, "alice", "alice-pw")
        elapsed = time.monotonic() - started
        self.assertEqual(factory.connections, 1)
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, 2.5)
        self.assertGreater(len(ticks), 20)
        self.assertLess(max(b - a for a, b in itertools.pairwise(ticks)), 0.3)
        self.assertIn("unusable", self.logText())
        self.assertIn("timed out", self.logText())

    @inlineCallbacks
    def test_nothingListening(self) -> Any:
        """
        A refused connection fails the login and names the server in the log.
        """
        from tests.support import freePort

        port = freePort()
        checker = self.checker(url=f"ldap://127.0.0.1:{port}/{BASE_DN}")
        yield self.refused(checker, "alice", "alice-pw")
        self.assertIn(f"127.0.0.1:{port}", self.logText())

    @inlineCallbacks
    def test_deadline(self) -> Any:
        """If ldap3 hangs past every timeout, the login fails at the deadline."""
        # If ldap3 hangs past every socket timeout, the login still fails at the
        # deadline with a log line saying so.
        checker = self.checker(connect_timeout="0.1")
        release = threading.Event()
        self.addCleanup(release.set)

        def hang(username: str, password: str) -> LDAPUser:
            release.wait(30)
            raise AssertionError("should have been abandoned")

        checker.directory.authenticate = hang  # type: ignore[method-assign]
        started = time.monotonic()
        yield self.refused(checker, "alice", "alice-pw")
        self.assertLess(time.monotonic() - started, checker.config.deadline + 1)
        self.assertIn("did not answer within", self.logText())

    @inlineCallbacks
    def test_killedMidRun(self) -> Any:
        """slapd killed with a pooled connection open fails the next login quickly."""
        # slapd killed after a login (pooled connection open) fails the next login
        # within the timeout instead of hanging.
        own = slapd.startedSlapd()
        self.addCleanup(own.stop)
        checker = self.checker(url=f"{own.url()}/{BASE_DN}")
        self.assertEqual((yield self.login(checker, "alice", "alice-pw")), "alice")
        own.kill()
        started = time.monotonic()
        yield self.refused(checker, "alice", "alice-pw")
        self.assertLess(time.monotonic() - started, 2.5)
        self.assertIn("unusable", self.logText())


class ConfigReloadTests(_CheckerMixin, TestCase):
    """
    A C{config=PATH} checker re-reads its file on SIGHUP.
    """

    def setUp(self) -> None:
        from netplugins import reload

        super().setUp()
        self.patch(reload, "_callbacks", [])
        self.patch(reload, "_installed", {})

    def writeConfig(self, path: str, url: str) -> None:
        text = "\n".join(
            [
                "[ldap]",
                f"url = {url}",
                f"bind_dn = {SERVICE_DN}",
                f"bind_password_file = {self.secretFile}",
                "connect_timeout = 1",
                "receive_timeout = 1",
                "",
            ]
        )
        with open(path + ".new", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".new", path)

    def configChecker(self, url: str) -> tuple[str, LDAPChecker]:
        path = os.path.abspath(self.mktemp())
        self.writeConfig(path, url)
        checker = strcred.makeChecker(f"ldap:config={path}")
        assert isinstance(checker, LDAPChecker)
        checker.log = Logger(observer=self.events.append)  # type: ignore[misc,arg-type]
        self.addCleanup(checker.close)
        return path, checker

    @inlineCallbacks
    def test_sighupRereads(self) -> Any:
        """After SIGHUP a rewritten config file is in force for the next login."""
        from netplugins import reload

        url = f"{self.server.url()}/{BASE_DN}?uid?sub"
        path, checker = self.configChecker(url + "?(cn=bob)")
        yield self.refused(checker, "alice", "alice-pw")
        old = checker.directory
        self.writeConfig(path, url)
        reload.reloadAll()
        # Asked for while the reload runs: it waits and uses the new file.
        self.assertEqual((yield self.login(checker, "alice", "alice-pw")), "alice")
        self.assertIsNot(checker.directory, old)
        self.assertIn("reloaded", self.logText())

    @inlineCallbacks
    def test_brokenConfigKeepsOld(self) -> Any:
        """A config file that no longer loads is logged and the old one stays."""
        from netplugins import reload

        path, checker = self.configChecker(f"{self.server.url()}/{BASE_DN}?uid?sub")
        with open(path, "w", encoding="utf-8") as f:
            f.write("[ldap]\nurl = http://nowhere/\n")
        reload.reloadAll()
        self.assertEqual((yield self.login(checker, "alice", "alice-pw")), "alice")
        self.assertIn("rejected, keeping the previous one", self.logText())
