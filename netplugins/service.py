"""
Listening: turn a protocol factory and the shared settings into a running service.

A service module reads as: parse options, build a factory, then
C{listeningService(common, factory)}; this module does the wrapping (limits, TLS)
and the listening (stream endpoints, C{udp:} datagram ports) for all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from attrs import define, field
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from netplugins.addresses import describe
from netplugins.interfaces import IHandshakeEndpoint
from netplugins.limits import ConnectionTracker, Limits, parseNetwork
from netplugins.limits.settings import DEFAULT_CLOSE_GRACE
from netplugins.tls import DEFAULT_HANDSHAKE_TIMEOUT, ServerTLS, TLSSettings
from netplugins.transport import fastServerFromString, listenUDP
from netplugins.workers import checkEndpoint, isWorker, supervise

DEFAULT_STATE_DIR = "var"
#: Connection caps every service has unless told otherwise (0 or None: no cap).
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_CONNECTIONS_PER_IP = 64


@define
class Common:
    """
    What every netplugins service shares: where it listens, its limits, its TLS
    and its credential checkers.  Build it with L{commonSettings} (the keyword twin
    of L{netplugins.options.ServiceOptions}).

    @ivar listen: endpoint strings spoken in the clear (C{udp:} for datagrams).
    @ivar listenTLS: endpoint strings wrapped in TLS from C{tls}.
    @ivar tls: the server TLS context factory, shared by every listener and by
        STARTTLS; made from C{tlsSettings} on first use unless given.
    """

    listen: tuple[str, ...] = ()
    listenTLS: tuple[str, ...] = ()
    tlsSettings: TLSSettings = field(factory=TLSSettings)
    limits: Limits = field(factory=Limits)
    stateDir: str = DEFAULT_STATE_DIR
    checkers: tuple[ICredentialsChecker, ...] = ()
    tls: ServerTLS | None = None
    workers: int = 1

    def serverTLS(self, reactor: Any = None) -> ServerTLS:
        """
        The TLS context factory for this service, made on first use.
        """
        if self.tls is None:
            self.tls = ServerTLS(self.tlsSettings, reactor=reactor)
        return self.tls

    def portal(self, realm: IRealm) -> Portal:
        """
        A portal on C{realm} checked by this service's C{--auth} checkers.
        """
        return Portal(realm, list(self.checkers))


def commonSettings(
    *,
    listen: Iterable[str] = (),
    listenTLS: Iterable[str] = (),
    tls: ServerTLS | None = None,
    tlsCert: Sequence[str] = (),
    tlsKey: Sequence[str] = (),
    tlsDir: str | None = None,
    tlsClientCA: str | None = None,
    tlsClientCert: str | None = None,
    tlsMinVersion: str = "1.2",
    auth: Iterable[str] = (),
    checkers: Iterable[ICredentialsChecker] = (),
    maxConnections: int | None = DEFAULT_MAX_CONNECTIONS,
    maxConnectionsPerIP: int | None = DEFAULT_MAX_CONNECTIONS_PER_IP,
    idleTimeout: float | None = None,
    preAuthTimeout: float | None = None,
    closeGrace: float = DEFAULT_CLOSE_GRACE,
    tlsHandshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    allow: Iterable[str] = (),
    deny: Iterable[str] = (),
    stateDir: str = DEFAULT_STATE_DIR,
    workers: int = 1,
) -> Common:
    """
    Validate and collect the shared settings: the keyword twin of every shared
    command-line option (C{--listen-tls} is C{listenTLS}, C{--tls-cert} is
    C{tlsCert}, ...).  C{tls} shares one L{ServerTLS} between services.

    Connections are capped by default (L{DEFAULT_MAX_CONNECTIONS} in all,
    L{DEFAULT_MAX_CONNECTIONS_PER_IP} from one address); 0 or C{None} lifts a
    cap, as it turns the idle timeout off.  TLS files are loaded here, so a
    bad one is a L{ValueError} now rather than a failure at startup.

    @raise ValueError: with a one-line message, for any bad value.
    """
    listen = tuple(listen)
    listenTLS = tuple(listenTLS)
    for description in listen + listenTLS:
        validateEndpoint(description)
    for description in listenTLS:
        if parseDatagram(description) is not None:
            raise ValueError(f"UDP cannot be wrapped in TLS: {description!r}")
    maxConnections = maxConnections or None
    maxConnectionsPerIP = maxConnectionsPerIP or None
    idleTimeout = idleTimeout or None
    preAuthTimeout = preAuthTimeout or None
    if len(tlsCert) != len(tlsKey):
        raise ValueError("--tls-cert and --tls-key must be given in pairs")
    if tlsMinVersion not in ("1.2", "1.3"):
        raise ValueError(f"--tls-min-version must be 1.2 or 1.3, not {tlsMinVersion!r}")
    if tlsClientCert not in (None, "optional", "required"):
        raise ValueError("--tls-client-cert must be 'optional' or 'required'")
    if tlsClientCert is not None and tlsClientCA is None:
        raise ValueError("--tls-client-cert needs --tls-client-ca")
    for name, value in [
        ("--max-connections", maxConnections),
        ("--max-connections-per-ip", maxConnectionsPerIP),
        ("--idle-timeout", idleTimeout),
        ("--preauth-timeout", preAuthTimeout),
        ("--close-grace", closeGrace),
        ("--tls-handshake-timeout", tlsHandshakeTimeout),
    ]:
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive, not {value}")
    if workers < 1:
        raise ValueError(f"--workers must be positive, not {workers}")
    if workers > 1:
        for description in listen + listenTLS:
            checkEndpoint(description)
    allCheckers = list(checkers)
    if auth:
        from twisted.cred import strcred

        for description in auth:
            try:
                allCheckers.append(strcred.makeChecker(description))
            except Exception as e:
                raise ValueError(f"--auth {description.split(':')[0]}: {e}") from None
    tlsSettings = TLSSettings(
        certificates=tuple(zip(tlsCert, tlsKey, strict=True)),
        directory=tlsDir,
        clientCA=tlsClientCA,
        clientCert=(tlsClientCert or ("required" if tlsClientCA is not None else None)),
        minVersion=tlsMinVersion,
        stateDir=stateDir,
        handshakeTimeout=tlsHandshakeTimeout,
    )
    if tls is None and (listenTLS or tlsCert or tlsDir or tlsClientCA):
        try:
            tls = ServerTLS(tlsSettings)
        except (ValueError, OSError) as e:
            raise ValueError(f"TLS: {e}") from None
    return Common(
        listen=listen,
        listenTLS=listenTLS,
        tlsSettings=tlsSettings,
        limits=Limits(
            maxConnections=maxConnections,
            maxConnectionsPerIP=maxConnectionsPerIP,
            idleTimeout=idleTimeout,
            preAuthTimeout=preAuthTimeout,
            closeGrace=closeGrace,
            allow=tuple(parseNetwork(a) for a in allow),
            deny=tuple(parseNetwork(d) for d in deny),
        ),
        stateDir=stateDir,
        checkers=tuple(allCheckers),
        tls=tls,
        workers=workers,
    )


def resolveCommon(
    common: Common | None, settings: dict[str, Any], **defaults: Any
) -> Common:
    """
    The shared settings a service's keyword twin was given: a L{Common} made
    already, or the keywords of L{commonSettings} — not both.

    @param defaults: the service's own defaults for shared keywords (e.g. an
        idle timeout), used where C{settings} does not give them.
    @raise TypeError: for both.
    @raise ValueError: for a bad setting.
    """
    if common is None:
        return commonSettings(**{**defaults, **settings})
    if settings:
        raise TypeError(f"give common or shared settings, not both: {sorted(settings)}")
    return common


_UNESCAPED_COLON = re.compile(r"(?<!\\):")


@define
class DatagramAddress:
    """
    A parsed C{udp:PORT[:interface=ADDR]} (or C{udp:port=PORT:...}) description;
    like C{tcp:PORT}, without an interface it listens on all of them.
    """

    port: int
    interface: str = ""


def parseDatagram(description: str) -> DatagramAddress | None:
    """
    Parse a C{udp:} listen description; C{None} if it names a stream endpoint.

    Twisted's endpoint strings have no datagram form, so netplugins adds this one,
    with the same escaping (C{interface=\\:\\:1}).

    @raise ValueError: for a malformed C{udp:} description.
    """
    prefix, _, rest = description.partition(":")
    if prefix != "udp":
        return None
    port: int | None = None
    interface = ""
    for i, part in enumerate(_UNESCAPED_COLON.split(rest)):
        part = part.replace("\\:", ":")
        key, eq, value = part.partition("=")
        if not eq and i == 0:
            key, value = "port", key
        if key == "port":
            try:
                port = int(value)
            except ValueError:
                raise ValueError(f"bad port in {description!r}") from None
        elif key == "interface":
            interface = value
        else:
            raise ValueError(f"unknown parameter {key!r} in {description!r}")
    if port is None or not 0 <= port <= 65535:
        raise ValueError(f"{description!r} needs a port from 0 to 65535")
    return DatagramAddress(port, interface)


class _ValidationReactor:
    """
    Stands in for the reactor while endpoint strings are only being checked.
    """


def validateEndpoint(description: str) -> None:
    """
    Check a listen description without listening.

    @raise ValueError: with a one-line message.
    """
    if parseDatagram(description) is not None:
        return
    try:
        serverFromString(_ValidationReactor(), description)
    except Exception as e:
        raise ValueError(f"bad endpoint {description!r}: {e}") from None


class ListeningService(StreamServerEndpointService):
    """
    Listens on one stream endpoint and logs where, once it knows the port.

    @ivar port: the listening port once listening, else C{None}.
    """

    log = Logger()

    def __init__(self, endpoint: Any, factory: IProtocolFactory, description: str):
        super().__init__(endpoint, factory)
        self.description = description
        self.label = "netplugins"
        self.port: IListeningPort | None = None
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        assert self._waitingForPort is not None
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        self.log.info(
            "{service} listening on {address} ({description})",
            service=self.label,
            address=describe(port.getHost()),
            description=self.description,
        )
        return port


class DatagramService(Service):
    """
    Listens on one UDP port with a datagram protocol.
    """

    log = Logger()

    def __init__(
        self,
        address: DatagramAddress,
        protocol: DatagramProtocol,
        description: str,
        reactor: Any,
    ):
        self.address = address
        self.protocol = protocol
        self.description = description
        self.label = "netplugins"
        self._reactor = reactor
        self.port: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        self._listen()

    def _listen(self) -> None:
        if self.port is not None:
            return
        self.port = listenUDP(
            self._reactor,
            self.address.port,
            self.protocol,
            interface=self.address.interface,
            reusePort=isWorker(),
        )
        self.log.info(
            "{service} listening on {address} ({description})",
            service=self.label,
            address=describe(self.port.getHost()),
            description=self.description,
        )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


def listeningService(
    common: Common,
    factory: IProtocolFactory | None,
    *,
    datagram: Callable[[], DatagramProtocol] | DatagramProtocol | None = None,
    defaultListen: Sequence[str] = (),
    name: str = "netplugins",
    reactor: Any = None,
    tracker: ConnectionTracker | None = None,
) -> MultiService:
    """
    A service listening for C{factory} (streams) and C{datagram} (UDP) on every
    endpoint in C{common}, with C{common}'s limits and TLS applied.

    @param datagram: makes the protocol for each C{udp:} port (a protocol has one
        transport); a protocol instance serves a single C{udp:} port.

    @param defaultListen: used when C{common} names no endpoint at all.
    @param tracker: counts connections against C{common}'s limits; by default
        a new one for this call.  Pass one to several calls (np-mail's
        protocols) to make C{--max-connections} and friends caps on them all.
    @raise ValueError: for a C{udp:} endpoint given to a stream-only service or a
        stream endpoint given to a datagram-only one.
    """
    if reactor is None:
        from twisted.internet import reactor
    parent = MultiService()
    parent.setName(name)
    if tracker is None:
        tracker = ConnectionTracker(common.limits, reactor=reactor)
    plain = common.listen
    if not plain and not common.listenTLS:
        plain = tuple(defaultListen)
    datagramUsed = False
    described = [(d, False) for d in plain] + [(d, True) for d in common.listenTLS]
    for description, secure in described:
        child: ListeningService | DatagramService
        address = parseDatagram(description)
        if address is not None:
            if datagram is None:
                raise ValueError(f"{name} does not speak UDP: {description!r}")
            if secure:
                raise ValueError(f"UDP cannot be wrapped in TLS: {description!r}")
            if isinstance(datagram, DatagramProtocol):
                if datagramUsed:
                    raise ValueError(
                        f"{name}: several udp: ports need a datagram protocol factory"
                    )
                protocol = datagram
            else:
                protocol = datagram()
            datagramUsed = True
            child = DatagramService(
                address, tracker.wrapDatagram(protocol), description, reactor
            )
        else:
            if factory is None:
                raise ValueError(f"{name} speaks only UDP: {description!r}")
            wrapped = factory
            if secure:
                wrapped = common.serverTLS(reactor).wrapFactory(factory, reactor)
            endpoint = fastServerFromString(reactor, description, reusePort=isWorker())
            if IHandshakeEndpoint.providedBy(endpoint):
                # An authenticating endpoint (hmac:) runs its handshake first:
                # limits must apply before it, not only to clients that passed.
                endpoint.outerWrapper = tracker.wrapFactory
            else:
                wrapped = tracker.wrapFactory(wrapped)
            child = ListeningService(
                endpoint, wrapped, f"TLS {description}" if secure else description
            )
        child.label = name
        child.setServiceParent(parent)
    if common.listenTLS or common.tls is not None:
        common.serverTLS(reactor).service().setServiceParent(parent)
    return parent


def supervised(
    service: MultiService, common: Common, *, name: str, reactor: Any = None
) -> MultiService:
    """
    C{service} as this process should run it: itself, or with C{--workers N} a
    supervisor that runs the same command (or C{.tac}) in N worker processes
    sharing the ports with C{SO_REUSEPORT}.  Each service's keyword twin ends
    with this, once, around everything it listens on.
    """
    result = supervise(service, common.workers, name=name, reactor=reactor)
    assert isinstance(result, MultiService)
    return result


def listeningPorts(root: IService) -> list[tuple[str, Any, str]]:
    """
    Every port C{root} and its children listen on, as (service, address, what)
    rows, for logging a table of what listens where; C{what} is the listen
    description, prefixed C{"TLS "} for C{--listen-tls} ones.
    """
    rows: list[tuple[str, Any, str]] = []
    stack = [root]
    while stack:
        svc = stack.pop()
        port = getattr(svc, "port", None)
        if isinstance(svc, (ListeningService, DatagramService)) and port is not None:
            rows.append((svc.label, port.getHost(), svc.description))
        stack.extend(reversed(list(getattr(svc, "services", []))))
    return rows
