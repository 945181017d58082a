"""
ZeroMQ devices on the reactor: what C{zmq.proxy} does, without a thread.

A device binds two sockets, a frontend and a backend, and moves whole
multipart messages between them:

  - C{queue}: ROUTER frontend (REQ and DEALER clients), DEALER backend (REP
    and DEALER workers); requests go back, replies come forth with their
    envelopes;
  - C{forwarder}: XSUB frontend (PUB publishers), XPUB backend (SUB
    subscribers); messages go back, subscriptions come forth;
  - C{streamer}: PULL frontend (PUSH producers), PUSH backend (PULL
    consumers); one way.

High-water marks hold: when the output socket would block (C{zmq.Again} on a
C{NOBLOCK} send) the message is held, the input side is no longer read, and
the send is tried again when the output socket wakes; the unread input
fills the input's own high-water mark and its peers block in turn, as they
would on a device that blocks.  Nothing is dropped by a queue or a streamer;
the ROUTER frontend refuses to route a reply to a client that is gone
(C{ROUTER_MANDATORY}), and that reply is dropped and logged.  A forwarder's
XPUB drops messages for a subscriber over its high-water mark, as PUB
sockets do.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import zmq
from attrs import frozen
from twisted.application.service import Service
from twisted.logger import Logger
from zmq.utils.monitor import parse_monitor_message

from netplugins.zmq.bridge import Drainer, _reactor, events

#: What each device binds at its frontend and its backend, and whether
#: messages also flow from the backend to the frontend.
DEVICES: dict[str, tuple[int, int, bool]] = {
    "queue": (zmq.ROUTER, zmq.DEALER, True),
    "forwarder": (zmq.XSUB, zmq.XPUB, True),
    "streamer": (zmq.PULL, zmq.PUSH, False),
}

DEFAULT_HWM = 1000
#: The largest frame accepted from a peer (ZMQ_MAXMSGSIZE): a bigger one
#: closes that peer's connection before the frame is allocated.
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024

#: Seconds between tries of a reply held for a queue client that does not
#: read, and after which it is dropped (see L{_Route}).
HOLD_RETRY = 0.05
HOLD_TIMEOUT = 5.0
#: Clients remembered as not reading (their replies dropped at once).
MAX_STALLED = 10000

#: zmq.Socket.send without its Python layer (routing_id and group, for
#: draft sockets): a one-part message moves in about 0.7 us instead of 1.1.
_send = zmq.backend.Socket.send
#: Frames shorter than this are sent as a copy of their bytes: a Frame sent
#: without copying costs pyzmq a second Frame object (its reference to the
#: message), more than copying a few hundred bytes (10 B: 0.60 against 0.65
#: us a message; 1000 B: 0.81 against 0.68).
_COPY_BELOW = 512
#: Flags as plain ints: pyzmq's enums cost a conversion per call.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)

#: Seconds between two log lines about the same kind of failed handshake.
LOG_INTERVAL = 10.0

#: Monitor events logged: handshakes that failed (wrong CURVE key, bad
#: greeting, refused by the ZAP handler).
_HANDSHAKE_FAILURES = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake failed (protocol error)",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "handshake refused (authentication)",
}


class _Route:
    """
    One direction of a device: messages from C{source} to C{target}, with
    at most one message held while the target would block.

    A ROUTER target (replies to a queue's clients) blocks for one client at
    a time, and its C{zmq.POLLOUT} says only that I{some} client can take a
    message: a held reply is retried every L{HOLD_RETRY} seconds rather than
    on C{zmq.POLLOUT}, and dropped (and logged) after L{HOLD_TIMEOUT}, so
    that a client that never reads stalls the other clients' replies for
    that long once; later replies to that client are dropped at once while
    it still does not read.
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        source: zmq.Socket[Any],
        target: zmq.Socket[Any],
        clock: Any,
        routing: bool = False,
    ):
        self.name = name
        self.source = source
        self.target = target
        self.clock = clock
        self.routing = routing
        self.held: list[zmq.Frame] | None = None
        self.heldSince: float | None = None
        self.stalled: set[bytes] = set()
        self.moved = 0
        self.dropped = 0

    def move(self, budget: int) -> int:
        """
        Move up to C{budget} messages; stop when the source has none or the
        target would block (holding the message it took).

        @return: how many were moved (or dropped).
        """
        count = 0
        if self.held is not None:
            if not self._sendHeld():
                return 0
            count = 1
        # The common case, a one-part message, costs a receive, a look at
        # its more flag and a send: nothing else is done per message.
        recv, target, send = self.source.recv, self.target, _send
        sent = 0
        try:
            while count < budget:
                try:
                    frame = recv(_NOBLOCK, False)
                except zmq.Again:
                    break
                if frame.more:
                    # The other parts of a message arrive with its first.
                    held = [frame]
                    while frame.more:
                        frame = recv(_NOBLOCK, False)
                        held.append(frame)
                    self.held = held
                    if not self._sendHeld():
                        break
                else:
                    try:
                        if len(frame) < _COPY_BELOW:
                            send(target, frame.bytes, _NOBLOCK)
                        else:
                            send(target, frame, _NOBLOCK, False)
                    except zmq.ZMQError:
                        self.held = [frame]
                        if not self._sendHeld():
                            break
                    else:
                        sent += 1
                count += 1
        finally:
            self.moved += sent
        return count

    def _sendHeld(self) -> bool:
        """
        Send the message held, or drop it (a queue's reply that cannot be
        routed).

        @return: whether it is gone; C{False} if it is still held because
            the target would block.
        """
        held = self.held
        assert held is not None
        try:
            target, send, last = self.target, _send, len(held) - 1
            # As zmq.Socket.send_multipart: once the first part is taken,
            # libzmq takes the others (high-water marks count messages).
            for index in range(last):
                send(target, held[index], _NOBLOCK | _SNDMORE, False)
            send(target, held[last], _NOBLOCK, False)
        except zmq.Again:
            if not self.routing or not self._giveUp(held[0].bytes):
                return False
            self.dropped += 1
        except zmq.ZMQError as e:
            if e.errno != errno.EHOSTUNREACH:
                raise
            # ROUTER_MANDATORY: the client this reply is for has gone.
            self.log.info(
                "{route}: dropping a reply for a client that is gone",
                route=self.name,
            )
            self.dropped += 1
        else:
            if self.routing and self.stalled:
                self.stalled.discard(held[0].bytes)
            self.moved += 1
        self.held = None
        self.heldSince = None
        return True

    def _giveUp(self, peer: bytes) -> bool:
        """
        Whether to drop the reply held for C{peer}, whose pipe is full.
        """
        if peer in self.stalled:
            return True
        now = self.clock.seconds()
        if self.heldSince is None:
            self.heldSince = now
            return False
        if now - self.heldSince < HOLD_TIMEOUT:
            return False
        if len(self.stalled) >= MAX_STALLED:
            self.stalled.clear()
        self.stalled.add(peer)
        self.log.warn(
            "{route}: a client has not read its replies for {timeout:g} s: "
            "dropping them until it reads",
            route=self.name,
            timeout=HOLD_TIMEOUT,
        )
        return True

    def ready(self, sourceEvents: int, targetEvents: int) -> bool:
        """
        Whether a move could do something now, given the C{zmq.EVENTS} of
        its source and target, read once after the last send and receive.
        """
        if self.held is not None:
            # A ROUTER's POLLOUT may be another client's: retried on a timer.
            return not self.routing and bool(targetEvents & zmq.POLLOUT)
        return bool(sourceEvents & zmq.POLLIN)


@frozen
class Security:
    """
    How a device's sockets secure their connections.

    @ivar curveSecretKey: the server's CURVE secret key (Z85), or C{None}.
    @ivar curvePublicKey: its public key (Z85).
    @ivar plain: whether clients log in with ZeroMQ PLAIN (checked by the
        ZAP handler).
    """

    curveSecretKey: bytes | None = None
    curvePublicKey: bytes | None = None
    plain: bool = False

    def apply(self, socket: zmq.Socket[Any]) -> None:
        """
        Set the mechanism on C{socket}, before it binds.
        """
        if self.curveSecretKey is not None:
            socket.setsockopt(zmq.CURVE_SERVER, 1)
            socket.setsockopt(zmq.CURVE_SECRETKEY, self.curveSecretKey)
            socket.setsockopt(zmq.CURVE_PUBLICKEY, self.curvePublicKey or b"")
        elif self.plain:
            socket.setsockopt(zmq.PLAIN_SERVER, 1)
        if self.curveSecretKey is not None or self.plain:
            # With a domain, every handshake goes to the ZAP handler.
            socket.setsockopt(zmq.ZAP_DOMAIN, b"np-zmq")


class Device(Service):
    """
    A ZeroMQ device as a Twisted service: binds C{frontend} and C{backend}
    when started, forwards on the reactor thread, closes both (and its
    context) when stopped.

    @ivar frontendEndpoint: the frontend's bound endpoint once started
        (a C{tcp://HOST:*} wildcard resolved to its port).
    @ivar backendEndpoint: the same for the backend.
    """

    log = Logger()

    def __init__(
        self,
        kind: str,
        frontend: str,
        backend: str,
        *,
        hwm: int = DEFAULT_HWM,
        maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
        handshakeTimeout: float | None = None,
        security: Security = Security(),
        zap: Callable[[zmq.Context[Any]], Service] | None = None,
        reactor: Any = None,
    ) -> None:
        if kind not in DEVICES:
            raise ValueError(f"unknown device {kind!r}")
        self.kind = kind
        self.frontend = frontend
        self.backend = backend
        self.hwm = hwm
        self.maxMessageSize = maxMessageSize
        self.handshakeTimeout = handshakeTimeout
        self.security = security
        self._makeZAP = zap
        self._reactor = _reactor(reactor)
        self.frontendEndpoint: str | None = None
        self.backendEndpoint: str | None = None
        self.routes: list[_Route] = []
        self._context: zmq.Context[Any] | None = None
        self._zap: Service | None = None
        self._drainer: Drainer | None = None
        self._monitor: Drainer | None = None
        self._monitors: list[tuple[str, zmq.Socket[Any]]] = []
        self._logged: dict[tuple[str, str], tuple[float | None, int]] = {}
        self._retry: Any = None

    def _socket(self, kind: int, endpoint: str) -> tuple[zmq.Socket[Any], str]:
        assert self._context is not None
        socket = self._context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, self.hwm)
        socket.setsockopt(zmq.RCVHWM, self.hwm)
        socket.setsockopt(zmq.MAXMSGSIZE, self.maxMessageSize)
        if self.handshakeTimeout is not None:
            # A peer whose ZMTP handshake (login included) is not done by
            # then is disconnected (libzmq's default: 30 s).
            socket.setsockopt(
                zmq.HANDSHAKE_IVL, max(1, round(self.handshakeTimeout * 1000))
            )
        if kind == zmq.ROUTER:
            socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.security.apply(socket)
        monitor = socket.get_monitor_socket(sum(_HANDSHAKE_FAILURES))
        try:
            socket.bind(endpoint)
        except zmq.ZMQError as e:
            raise ValueError(f"cannot bind {endpoint}: {e}") from None
        bound = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._monitors.append((bound, monitor))
        return socket, bound

    def startService(self) -> None:
        super().startService()
        frontKind, backKind, both = DEVICES[self.kind]
        self._context = zmq.Context()
        try:
            if self._makeZAP is not None:
                self._zap = self._makeZAP(self._context)
                self._zap.startService()
            front, self.frontendEndpoint = self._socket(frontKind, self.frontend)
            back, self.backendEndpoint = self._socket(backKind, self.backend)
        except Exception:
            self._close()
            raise
        clock = self._reactor
        self.routes = [
            _Route(f"np-zmq {self.kind} frontend to backend", front, back, clock)
        ]
        if both:
            self.routes.append(
                _Route(
                    f"np-zmq {self.kind} backend to frontend",
                    back,
                    front,
                    clock,
                    routing=frontKind == zmq.ROUTER,
                )
            )
        self._drainer = Drainer(self._turn, self._reactor)
        self._drainer.watch(front, back)
        self._monitor = Drainer(self._monitorTurn, self._reactor)
        self._monitor.watch(*(socket for _, socket in self._monitors))
        self._monitor.start()
        self._drainer.start()
        self.log.info(
            "np-zmq {kind} device: frontend {frontType} bound to {frontend}, "
            "backend {backType} bound to {backend}, high-water mark {hwm}",
            kind=self.kind,
            frontType=zmq.SocketType(frontKind).name,
            frontend=self.frontendEndpoint,
            backType=zmq.SocketType(backKind).name,
            backend=self.backendEndpoint,
            hwm=self.hwm,
        )

    def stopService(self) -> None:
        super().stopService()
        self._close()

    def _close(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        for drainer in (self._drainer, self._monitor):
            if drainer is not None:
                drainer.stop()
        self._drainer = self._monitor = None
        if self._zap is not None and self._zap.running:
            self._zap.stopService()
        self._zap = None
        self._monitors = []
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None

    def _turn(self, budget: int) -> bool:
        left = budget
        while True:
            moved = sum(route.move(left) for route in self.routes)
            left -= moved
            if left <= 0:
                return True
            if moved:
                continue
            # Everything would block: zmq.EVENTS again, after the last send
            # and receive, before trusting the descriptors to wake us.
            if not self._ready():
                self._retryHeld()
                return False

    def _ready(self) -> bool:
        """
        Whether a route could move something now.

        Every socket's C{zmq.EVENTS} is read exactly once (reading it
        processes the socket's commands and re-arms its descriptor, which
        would otherwise stay readable) and each route decides from those
        values: a second read of the same socket could consume the signal
        of a message that arrived after the first and report it to a route
        that does not read that socket, and the device would sleep with
        the message waiting.
        """
        read: dict[int, int] = {}
        for route in self.routes:
            for socket in (route.source, route.target):
                if id(socket) not in read:
                    read[id(socket)] = events(socket)
        return any(
            route.ready(read[id(route.source)], read[id(route.target)])
            for route in self.routes
        )

    def _retryHeld(self) -> None:
        """
        Wake again soon if a reply is held for a ROUTER client.
        """
        if not any(route.routing and route.held for route in self.routes):
            return
        if self._retry is None or not self._retry.active():
            drainer = self._drainer
            if drainer is not None:
                self._retry = self._reactor.callLater(HOLD_RETRY, drainer.wake)

    def _monitorTurn(self, budget: int) -> bool:
        count = 0
        while count < budget:
            got = 0
            for endpoint, monitor in self._monitors:
                try:
                    message = monitor.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                self._logEvent(endpoint, dict(parse_monitor_message(message)))
                got += 1
            count += got
            if not got and not any(
                events(monitor) & zmq.POLLIN for _, monitor in self._monitors
            ):
                return False
        return True

    def _logEvent(self, endpoint: str, event: dict[str, Any]) -> None:
        what = _HANDSHAKE_FAILURES.get(event["event"], "monitor event")
        # A refused peer reconnects every 100 ms or so: one line per kind
        # of failure and endpoint per LOG_INTERVAL, with the count since.
        key = (endpoint, what)
        now = self._reactor.seconds()
        last, unlogged = self._logged.get(key, (None, 0))
        if last is not None and now - last < LOG_INTERVAL:
            self._logged[key] = (last, unlogged + 1)
            return
        self._logged[key] = (now, 0)
        self.log.warn(
            "np-zmq {kind}: {what} on {endpoint}: {code}{since}",
            kind=self.kind,
            what=what,
            endpoint=endpoint,
            code=(
                f"ZAP status {event['value']}"
                if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
                else _describe(event["value"])
            ),
            since=f" ({unlogged} more since the last line)" if unlogged else "",
        )


def _describe(code: int) -> str:
    for name in dir(zmq):
        if name.startswith("PROTOCOL_ERROR_") and getattr(zmq, name) == code:
            return name.removeprefix("PROTOCOL_ERROR_").replace("_", " ").lower()
    try:
        return zmq.strerror(code)
    except Exception:
        return str(code)
