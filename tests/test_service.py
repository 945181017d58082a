"""
Tests for L{netplugins.service} and L{netplugins.options}: the shared settings,
their validation and the listening glue.
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

import netplugins.tls.endpoint
from netplugins.limits.settings import Limits
from netplugins.options import ServiceOptions, ServiceSettings
from netplugins.service import (
    DatagramAddress,
    Listener,
    listeningPorts,
    listeningService,
    parseDatagram,
)
from tests.pki import PKI


class DatagramDescriptionTests(SynchronousTestCase):
    """
    The C{udp:} listen descriptions netplugins adds to Twisted's endpoint strings.
    """

    def test_forms(self) -> None:
        """Positional and keyword ports, escaped IPv6 interfaces all parse."""
        self.assertEqual(
            [
                parseDatagram("udp:1313"),
                parseDatagram("udp:port=13:interface=0.0.0.0"),
                parseDatagram(r"udp:53:interface=\:\:1"),
                parseDatagram("tcp:13"),
            ],
            [
                DatagramAddress(1313, ""),
                DatagramAddress(13, "0.0.0.0"),
                DatagramAddress(53, "::1"),
                None,
            ],
        )

    def test_bad(self) -> None:
        """Bad ports and unknown parameters are ValueErrors naming the input."""
        for bad in ["udp:", "udp:x", "udp:70000", "udp:13:colour=red"]:
            with self.assertRaises(ValueError) as e:
                parseDatagram(bad)
            self.assertIn(repr(bad), str(e.exception))


class OptionsTests(SynchronousTestCase):
    """
    L{ServiceOptions} parses the shared options into a validated L{Common}.
    """

    def parse(self, *argv: str) -> ServiceOptions:
        options = ServiceOptions()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """With nothing given, nothing listens explicitly and no limit is set."""
        common = self.parse().common
        self.assertEqual(
            (common.listen, common.listenTLS, common.limits, common.stateDir),
            ((), (), Limits(maxConnections=1024, maxConnectionsPerIP=64), "var"),
        )

    def test_everything(self) -> None:
        """Every shared option lands in the settings."""
        pki = PKI(self.mktemp())
        aCert, aKey = pki.serverCertificate("a.example")
        bCert, bKey = pki.serverCertificate("b.example")
        common = self.parse(
            *("--listen", "tcp:0", "--listen", "unix:/tmp/x.sock"),
            *("--listen-tls", "tcp:0"),
            *("--tls-cert", aCert, "--tls-key", aKey),
            *("--tls-cert", bCert, "--tls-key", bKey),
            *("--tls-client-ca", pki.caPath, "--tls-min-version", "1.3"),
            *("--max-connections", "10", "--max-connections-per-ip", "2"),
            *("--idle-timeout", "30", "--allow", "10.0.0.0/8", "--allow", "::1"),
            *("--deny", "10.1.0.0/16", "--state-dir", "/srv/np"),
        ).common
        self.assertEqual(
            (
                common.listen,
                common.listenTLS,
                common.tlsSettings.certificates,
                common.tlsSettings.clientCA,
                common.tlsSettings.clientCert,
                common.tlsSettings.minVersion,
                common.tlsSettings.stateDir,
                common.limits.maxConnections,
                common.limits.maxConnectionsPerIP,
                common.limits.idleTimeout,
                common.limits.allow,
                common.limits.deny,
                common.stateDir,
                sorted(common.serverTLS().names),
            ),
            (
                ("tcp:0", "unix:/tmp/x.sock"),
                ("tcp:0",),
                ((aCert, aKey), (bCert, bKey)),
                pki.caPath,
                "required",
                "1.3",
                "/srv/np",
                10,
                2,
                30.0,
                (ip_network("10.0.0.0/8"), ip_network("::1/128")),
                (ip_network("10.1.0.0/16"),),
                "/srv/np",
                ["a.example", "b.example"],
            ),
        )

    def test_deadlines(self) -> None:
        """--preauth-timeout, --close-grace and --tls-handshake-timeout land."""
        common = self.parse(
            *("--preauth-timeout", "3", "--close-grace", "0.5"),
            *("--tls-handshake-timeout", "2"),
        ).common
        self.assertEqual(
            (
                common.limits.preAuthTimeout,
                common.limits.closeGrace,
                common.tlsSettings.handshakeTimeout,
                common.serverTLS().handshakeTimeout,
            ),
            (3.0, 0.5, 2.0, 2.0),
        )

    def test_noLimits(self) -> None:
        """0 lifts the connection caps and the idle timeout."""
        limits = self.parse(
            "--max-connections",
            "0",
            "--max-connections-per-ip",
            "0",
            "--idle-timeout",
            "0",
        ).common.limits
        self.assertEqual(limits, Limits())

    def test_badTLSFiles(self) -> None:
        """Unreadable or junk TLS files are one-line usage errors at parse time."""
        junk = self.mktemp()
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        for argv in [
            ["--listen-tls", "tcp:0", "--tls-cert", "/nonexistent", "--tls-key", junk],
            ["--listen-tls", "tcp:0", "--tls-cert", junk, "--tls-key", junk],
            ["--listen-tls", "tcp:0", "--tls-dir", "/nonexistent"],
            ["--tls-client-ca", junk],
            ["--listen-tls", "udp:0"],
        ]:
            with self.assertRaises(usage.UsageError, msg=argv) as e:
                self.parse(*argv)
            self.assertNotIn("\n", str(e.exception), argv)

    def test_authRefusedWithoutLogins(self) -> None:
        """A service that logs nobody in refuses --auth instead of ignoring it."""
        with self.assertRaises(usage.UsageError) as e:
            self.parse("--auth", "anonymous")
        self.assertIn("--auth would protect nothing", str(e.exception))

    def test_workers(self) -> None:
        """--workers lands in the settings; one process is the default."""
        self.assertEqual(
            (
                self.parse().common.workers,
                self.parse("--workers", "3", "--listen", "tcp:7007").common.workers,
            ),
            (1, 3),
        )

    def test_badValuesAreUsageErrors(self) -> None:
        """Each bad value is a one-line UsageError."""
        for argv in [
            ["--listen", "bogus:1"],
            ["--listen", "tcp:notaport"],
            ["--listen", "udp:x"],
            ["--tls-cert", "a.pem"],
            ["--tls-min-version", "1.1"],
            ["--tls-client-cert", "required"],
            ["--max-connections", "-1"],
            ["--max-connections-per-ip", "many"],
            ["--idle-timeout", "-1"],
            ["--idle-timeout", "nan"],
            ["--allow", "10.0.0.0/33"],
            ["--deny", "example.org"],
            ["--workers", "0"],
            ["--workers", "2", "--listen", "unix:/tmp/x.sock"],
            ["--workers", "2", "--listen", "tcp:0"],
        ]:
            with self.assertRaises(usage.UsageError, msg=argv) as e:
                self.parse(*argv)
            self.assertNotIn("\n", str(e.exception), argv)


class _UDPPort:
    def __init__(self, port: int, interface: str) -> None:
        self.address = IPv4Address("UDP", interface, port)

    def getHost(self) -> IPv4Address:
        return self.address

    def stopListening(self) -> None:
        pass


class MemoryReactor(MemoryReactorClock):
    """
    A memory reactor that also records UDP ports.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udpServers: list[tuple[int, DatagramProtocol, int, str]] = []

    def listenUDP(  # type: ignore[override]
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
    ) -> _UDPPort:
        self.udpServers.append((port, protocol, maxPacketSize, interface))
        return _UDPPort(port, interface)


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class ListeningServiceTests(SynchronousTestCase):
    """
    L{listeningService} listens where the settings say, with defaults.
    """

    def test_defaultListen(self) -> None:
        """Without endpoints the service's defaults are used, streams and UDP."""
        reactor = MemoryReactor()
        service = listeningService(
            ServiceSettings().common(),
            Factory.forProtocol(Echo),
            datagram=DatagramProtocol(),
            defaultListen=[
                "tcp:7007:interface=127.0.0.1",
                "udp:7007:interface=127.0.0.1",
            ],
            name="np-test",
            reactor=reactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            (
                [(port, interface) for port, _, _, interface in reactor.tcpServers],
                [(port, interface) for port, _, _, interface in reactor.udpServers],
            ),
            ([(7007, "127.0.0.1")], [(7007, "127.0.0.1")]),
        )

    def test_explicitReplacesDefault(self) -> None:
        """Any explicit endpoint replaces the defaults."""
        reactor = MemoryReactor()
        service = listeningService(
            ServiceSettings(listen=(r"tcp:9000:interface=\:\:1",)).common(),
            Factory.forProtocol(Echo),
            defaultListen=["tcp:7007"],
            reactor=reactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(9000, "::1")],
        )
        self.assertEqual(
            [(name, what) for name, _, what in listeningPorts(service)],
            [("netplugins", r"tcp:9000:interface=\:\:1")],
        )

    def test_wrongKind(self) -> None:
        """UDP for a stream-only service and TLS over UDP are refused."""
        factory = Factory.forProtocol(Echo)
        with self.assertRaises(ValueError):
            listeningService(
                ServiceSettings(listen=("udp:1",)).common(),
                factory,
                reactor=MemoryReactor(),
            )
        with self.assertRaises(ValueError):
            listeningService(
                ServiceSettings(listen=("tcp:1",)).common(),
                None,
                datagram=DatagramProtocol(),
                reactor=MemoryReactor(),
            )


class ParseOnceTests(SynchronousTestCase):
    """
    Endpoint strings and TLS files are parsed and read once, on the way from
    the command line to the listening port.
    """

    def test_commonLoadedOnce(self) -> None:
        """common() is loaded once: the command line's check and the twin share it."""
        options = ServiceOptions()
        options.parseOptions(["--listen", "tcp:0"])
        self.assertIs(options.settings.common(), options.common)

    def test_endpointParsedOnce(self) -> None:
        """An nptls: endpoint reads its files once, and that endpoint listens."""
        made: list[object] = []
        original = netplugins.tls.endpoint.ServerTLS

        def counting(*args: Any, **kwargs: Any) -> Any:
            made.append(args)
            return original(*args, **kwargs)

        self.patch(netplugins.tls.endpoint, "ServerTLS", counting)
        cert, key = PKI(self.mktemp()).serverCertificate("localhost")
        description = f"nptls:cert={cert}:key={key}:tcp:8443:interface=127.0.0.1"
        options = ServiceOptions()
        options.parseOptions(["--listen", description])
        reactor = MemoryReactor()
        service = listeningService(
            options.settings.common(), Factory.forProtocol(Echo), reactor=reactor
        )
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            (
                len(made),
                [(port, interface) for port, _, _, interface in reactor.tcpServers],
                [child.endpoint for child in service],  # type: ignore[attr-defined]
            ),
            (
                1,
                [(8443, "127.0.0.1")],
                [options.common.listener(description).endpoint],
            ),
        )

    def test_boundToEachService(self) -> None:
        """One parsed endpoint listens with the reactor of the service made from it."""
        common = ServiceSettings(listen=("tcp:7007",)).common()
        first, second = MemoryReactor(), MemoryReactor()
        for reactor in (first, second):
            service = listeningService(
                common, Factory.forProtocol(Echo), reactor=reactor
            )
            service.startService()
            self.addCleanup(service.stopService)
        self.assertEqual((len(first.tcpServers), len(second.tcpServers)), (1, 1))

    def test_unboundEndpoint(self) -> None:
        """A parsed endpoint used before a service binds it says so."""
        listener = Listener.parse("tcp:7007")
        assert listener.endpoint is not None
        failure = self.failureResultOf(
            listener.endpoint.listen(Factory.forProtocol(Echo)), RuntimeError
        )
        self.assertIn("no reactor yet", str(failure.value))


class MemoryCheckerTests(SynchronousTestCase):
    """
    Twisted's C{memory:} checker logs users in through the shared layer.
    """

    def test_bytesCredentials(self) -> None:
        """memory:alice:pw takes alice's bytes credentials, from Python and argv."""

        class LoginOptions(ServiceOptions):
            usesCheckers = True

        options = LoginOptions()
        options.parseOptions(["--auth", "memory:alice:pw"])
        made = [
            options.common.checkers[0],
            ServiceSettings(auth=("memory:alice:pw",)).common().checkers[0],
        ]
        results = [
            (
                self.successResultOf(
                    checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))
                ),
                self.failureResultOf(
                    checker.requestAvatarId(UsernamePassword(b"alice", b"no")),
                    UnauthorizedLogin,
                ).type,
            )
            for checker in made
        ]
        self.assertEqual(results, [(b"alice", UnauthorizedLogin)] * 2)
