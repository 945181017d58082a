"""
Per-user TLS policy (L{netplugins.homes.HomeStore.tlsRequiredFor}, np-ftp's
C{--tls-required-user}): a user whose entry requires TLS is refused before
the password over a cleartext control connection, and with C{all} cannot
move data in the clear.
"""

from __future__ import annotations

import ftplib
import io
import ssl
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.ftp.server import FTPConfig, FTPFactory
from netplugins.homes import HomeStore
from netplugins.tap.ftp import Options
from tests.support import WatermarkTransport
from tests.test_ftp import PASSWORD, _Portal, _Server

REFUSED = b"530 Non-anonymous sessions must use TLS: AUTH TLS first.\r\n"


@frozen
class _Entry:
    attributes: dict[str, tuple[str, ...]]


@frozen
class _Config:
    attributes: tuple[str, ...]


class _Directory:
    """
    Stands in for an C{ldap:} checker: C{lookupAttributes} and the
    attributes its URL fetches.
    """

    def __init__(self, entries: dict[str, _Entry], *attributes: str) -> None:
        self.entries = entries
        self.config = _Config(("uid", *attributes))
        self.asked: list[str] = []

    def lookupAttributes(self, user: str) -> Deferred[_Entry | None]:
        self.asked.append(user)
        return succeed(self.entries.get(user))


class _Wrapper:
    def __init__(self, checker: object) -> None:
        self.checker = checker


class StoreTests(SynchronousTestCase):
    """
    L{HomeStore.tlsRequiredFor}.
    """

    def policy(self, store: HomeStore, user: str) -> str:
        result: str = self.successResultOf(store.tlsRequiredFor(user))
        return result

    def test_listed(self) -> None:
        """tlsRequiredUsers answers for the users it names, none for others."""
        store = HomeStore(
            "/h/{user}", tlsRequiredUsers={"bob": "all", "eve": "control"}
        )
        self.assertEqual(self.policy(store, "bob"), "all")
        self.assertEqual(self.policy(store, "eve"), "control")
        self.assertEqual(self.policy(store, "alice"), "none")

    def test_badPolicy(self) -> None:
        """A word other than none, control or all is refused."""
        self.assertRaises(
            ValueError, HomeStore, "/h/{user}", tlsRequiredUsers={"bob": "yes"}
        )

    def test_ldapAttribute(self) -> None:
        """An ldap: checker fetching tlsRequired gives the strongest known value."""
        directory = _Directory(
            {
                "bob": _Entry({"tlsrequired": ("ALL",)}),
                "eve": _Entry({"tlsrequired": ("control", "bogus")}),
                "amy": _Entry({"tlsrequired": ("maybe",)}),
                "joe": _Entry({}),
            },
            "tlsRequired",
        )
        store = HomeStore("/h/{user}", checkers=[_Wrapper(directory)])
        self.assertEqual(self.policy(store, "bob"), "all")
        self.assertEqual(self.policy(store, "eve"), "control")
        self.assertEqual(self.policy(store, "amy"), "none")
        self.assertEqual(self.policy(store, "joe"), "none")
        self.assertEqual(self.policy(store, "nobody"), "none")

    def test_ldapNotAsked(self) -> None:
        """The directory is not asked when its URL does not fetch tlsRequired."""
        directory = _Directory({"bob": _Entry({"tlsrequired": ("all",)})})
        store = HomeStore("/h/{user}", checkers=[directory])
        self.assertEqual(self.policy(store, "bob"), "none")
        self.assertEqual(directory.asked, [])

    def test_listBeforeDirectory(self) -> None:
        """tlsRequiredUsers answers without asking the directory."""
        directory = _Directory({}, "tlsRequired")
        store = HomeStore(
            "/h/{user}", checkers=[directory], tlsRequiredUsers={"bob": "control"}
        )
        self.assertEqual(self.policy(store, "bob"), "control")
        self.assertEqual(directory.asked, [])


class _SlowStore(HomeStore):
    """
    A store whose policy answers wait for the test.
    """

    def __init__(self) -> None:
        super().__init__("/nonexistent/{user}")
        self.pending: list[Deferred[str]] = []

    def tlsRequiredFor(self, user: str) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self.pending.append(d)
        return d


def session(store: HomeStore, tlsRequired: str = "none") -> tuple[Any, Any]:
    """
    A greeted np-ftp control connection in memory (AUTH TLS offered).
    """
    factory = FTPFactory(
        store,
        _Portal(),
        config=FTPConfig(tlsRequired=tlsRequired),
        tls=object(),
        reactor=Clock(),
    )
    protocol: Any = factory.buildProtocol(None)
    transport = WatermarkTransport()
    protocol.makeConnection(transport)
    transport.clear()
    return protocol, transport


class ControlTests(SynchronousTestCase):
    """
    The control connection in memory, --tls-required none.
    """

    def test_userRequiringTLS(self) -> None:
        """USER of a user requiring TLS gets 530 in the clear; others 331."""
        store = HomeStore("/h/{user}", tlsRequiredUsers={"bob": "control"})
        protocol, transport = session(store)
        protocol.dataReceived(b"USER bob\r\n")
        self.assertEqual(transport.value(), REFUSED)
        transport.clear()
        protocol.dataReceived(b"USER alice\r\n")
        self.assertEqual(transport.value(), b"331 Password required.\r\n")

    def test_passwordHeld(self) -> None:
        """A PASS pipelined behind USER waits for the policy, then is refused."""
        store = _SlowStore()
        protocol, transport = session(store)
        protocol.dataReceived(b"USER bob\r\nPASS secret\r\n")
        self.assertEqual(transport.value(), b"")
        store.pending[0].callback("all")
        self.assertEqual(transport.value(), REFUSED + b"503 Login with USER first.\r\n")

    def test_serviceStronger(self) -> None:
        """A user's none does not weaken --tls-required control."""
        store = HomeStore("/h/{user}", tlsRequiredUsers={"bob": "none"})
        protocol, transport = session(store, "control")
        protocol.dataReceived(b"USER bob\r\n")
        self.assertEqual(transport.value(), REFUSED)


class OptionsTests(SynchronousTestCase):
    """
    C{--tls-required-user}.
    """

    def test_parsed(self) -> None:
        """NAME=control and NAME=all are taken, in order."""
        options = Options()
        options.parseOptions(
            ["--tls-required-user", "bob=all", "--tls-required-user", "a=b=control"]
        )
        self.assertEqual(options.settings.tlsRequiredUser, ("bob=all", "a=b=control"))

    def test_refused(self) -> None:
        """Anything else is a usage error."""
        for value in ("bob", "bob=none", "=all", "bob=yes"):
            self.assertRaises(
                UsageError, Options().parseOptions, ["--tls-required-user", value]
            )


class FtplibTests(TestCase):
    """
    np-ftp over sockets with ftplib, --tls-required none and alice=all.
    """

    def test_userRequiresAll(self) -> Any:
        """alice: refused in the clear, PROT C refused, transfers need PROT P."""
        server = _Server(
            self,
            tlsRequired="none",
            tlsSessionReuse="optional",
            tlsRequiredUser=("alice=all",),
        )

        def talk() -> None:
            plain = ftplib.FTP(timeout=10)
            plain.connect("127.0.0.1", server.port)
            with self.assertRaises(ftplib.error_perm) as caught:
                plain.login("alice", PASSWORD)
            self.assertTrue(str(caught.exception).startswith("530"))
            plain.close()
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            client = ftplib.FTP_TLS(context=context, timeout=10)
            client.connect("127.0.0.1", server.port)
            client.login("alice", PASSWORD)
            with self.assertRaises(ftplib.error_perm) as caught:
                client.storbinary("STOR clear.bin", io.BytesIO(b"x"))
            self.assertTrue(str(caught.exception).startswith("522"))
            client.prot_p()
            with self.assertRaises(ftplib.error_perm) as caught:
                client.prot_c()
            self.assertTrue(str(caught.exception).startswith("534"))
            client.storbinary("STOR private.bin", io.BytesIO(b"secret data"))
            client.quit()

        def check(_: object) -> None:
            with open(f"{server.home}/private.bin", "rb") as f:
                self.assertEqual(f.read(), b"secret data")

        return deferToThread(talk).addCallback(check)
