"""
Listening: turn a protocol factory and the shared settings into a running service.

A service module reads as: parse options, build a factory, then
C{listeningService(common, factory)}; this module does the wrapping (limits, TLS)
and the listening (stream endpoints, C{udp:} datagram ports) for all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define, field, frozen
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from netplugins.addresses import describe
from netplugins.interfaces import IHandshakeEndpoint
from netplugins.limits.settings import Limits
from netplugins.limits.tracker import ConnectionTracker
from netplugins.tls.identity import TLSSettings
from netplugins.tls.server import ServerTLS
from netplugins.transport import WriteThroughReactor, listenUDP
from netplugins.twistedinternals import raiseListenFailures, whenListening
from netplugins.workers import isWorker, supervise

DEFAULT_STATE_DIR = "var"
#: Connection caps every service has unless told otherwise (0 or None: no cap).
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_CONNECTIONS_PER_IP = 64


@define
class Common:
    """
    What every netplugins service shares: where it listens, its limits, its TLS
    and its credential checkers, loaded for use: made by
    L{netplugins.options.ServiceSettings.common}.

    @ivar listen: endpoint strings spoken in the clear (C{udp:} for datagrams).
    @ivar listenTLS: endpoint strings wrapped in TLS from C{tls}.
    @ivar tls: the server TLS context factory, shared by every listener and by
        STARTTLS; made from C{tlsSettings} on first use unless given.
    @ivar listeners: every endpoint string parsed so far, by (string, whether
        wrapped in TLS): L{listener} parses each once.
    """

    listen: tuple[str, ...] = ()
    listenTLS: tuple[str, ...] = ()
    tlsSettings: TLSSettings = field(factory=TLSSettings)
    limits: Limits = field(factory=Limits)
    stateDir: str = DEFAULT_STATE_DIR
    checkers: tuple[ICredentialsChecker, ...] = ()
    tls: ServerTLS | None = None
    workers: int = 1
    listeners: dict[tuple[str, bool], Listener] = field(factory=dict)

    def listener(self, description: str, *, secure: bool = False) -> Listener:
        """
        C{description} parsed (L{Listener.parse}), once: the same value for the
        same description, however many services listen on it.

        @raise ValueError: with a one-line message.
        """
        key = (description, secure)
        parsed = self.listeners.get(key)
        if parsed is None:
            parsed = self.listeners[key] = Listener.parse(description, secure=secure)
        return parsed

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


@frozen(eq=False)
class Listener:
    """
    One listen description, parsed: a C{udp:} port's address, or the stream
    endpoint Twisted's (and netplugins') endpoint parsers made of it, on a
    stand-in reactor that L{bound} binds to the service's.  An C{nptls:}
    endpoint has read its certificate files here, once.

    @ivar description: the string, as given (for the logs).
    @ivar secure: whether the listener wraps it in the service's TLS
        (C{--listen-tls}, the implicit-TLS mail endpoints).
    """

    description: str
    secure: bool = False
    address: DatagramAddress | None = None
    endpoint: IStreamServerEndpoint | None = None
    _reactor: WriteThroughReactor | None = None

    @classmethod
    def parse(cls, description: str, *, secure: bool = False) -> Listener:
        """
        Parse C{description}: C{udp:...} or any stream endpoint string.

        @raise ValueError: with a one-line message, for a bad description or
            a C{udp:} one to be wrapped in TLS.
        """
        address = parseDatagram(description)
        if address is not None:
            if secure:
                raise ValueError(f"UDP cannot be wrapped in TLS: {description!r}")
            return cls(description, secure, address)
        reactor = WriteThroughReactor()
        try:
            endpoint = serverFromString(reactor, description)
        except Exception as e:
            raise ValueError(f"bad endpoint {description!r}: {e}") from None
        return cls(description, secure, None, endpoint, reactor)

    def bound(self, reactor: Any) -> IStreamServerEndpoint:
        """
        The stream endpoint, listening with C{reactor} (with C{SO_REUSEPORT}
        in a worker process): the reactor of the last service made from it.
        """
        if self.endpoint is None or self._reactor is None:
            raise ValueError(f"not a stream endpoint: {self.description!r}")
        self._reactor.bind(reactor, reusePort=isWorker())
        return self.endpoint


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
        raiseListenFailures(self)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        whenListening(self).addCallback(self._listening)

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
        listener = common.listener(description, secure=secure)
        address = listener.address
        if address is not None:
            if datagram is None:
                raise ValueError(f"{name} does not speak UDP: {description!r}")
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
            endpoint = listener.bound(reactor)
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


def served(
    common: Common,
    factory: IProtocolFactory | None,
    *,
    name: str,
    defaultListen: Sequence[str] = (),
    datagram: Callable[[], DatagramProtocol] | DatagramProtocol | None = None,
    children: Sequence[IService] = (),
    reactor: Any = None,
) -> MultiService:
    """
    What a simple service's keyword twin returns: C{factory} (and
    C{datagram}) listening on C{common}'s endpoints (L{listeningService}),
    with C{children} (services that start and stop with it), as this process
    should run it (L{supervised}).
    """
    listeners = listeningService(
        common,
        factory,
        datagram=datagram,
        defaultListen=defaultListen,
        name=name,
        reactor=reactor,
    )
    for child in children:
        child.setServiceParent(listeners)
    return supervised(listeners, common, name=name, reactor=reactor)


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
