"""
C{twistd np-zmq}: a ZeroMQ device's settings, its command line and its
keyword twin.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from attrs import frozen
from twisted.application.service import MultiService
from twisted.python import usage

from netplugins.coerce import choice
from netplugins.cred.throttle import LoginThrottle
from netplugins.options import ServiceOptions, ServiceSettings, positiveInt
from netplugins.settings import flag, optionName, setting
from netplugins.zmq.device import (
    DEFAULT_HWM,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEVICES,
    Device,
    Security,
)
from netplugins.zmq.security import PUBLIC_KEY_FILE, PeerRealm, ZAPHandler, serverKeys

DEFAULT_FRONTEND = "tcp://127.0.0.1:5559"
DEFAULT_BACKEND = "tcp://127.0.0.1:5560"

#: The shared settings a ZeroMQ device has a use for; the others are
#: refused (see L{ZMQSettings.__attrs_post_init__}).
APPLICABLE = {"stateDir", "auth", "checkers", "workers", "preAuthTimeout"}

_ENDPOINT = re.compile(r"(tcp://(\[[0-9A-Fa-f:.]+\]|[^:/\s]+):(\d+|\*)|ipc://\S+)\Z")

deviceChoice = choice(*DEVICES, name="--device")


def zmqEndpoint(description: str) -> str:
    """
    Check a ZeroMQ endpoint to bind: C{tcp://HOST:PORT} (C{*} for any port)
    or C{ipc://PATH}.
    """
    if not _ENDPOINT.match(description):
        raise ValueError(
            f"expected a ZeroMQ endpoint to bind, tcp://HOST:PORT or "
            f"ipc://PATH, not {description!r}"
        )
    return description


zmqEndpoint.coerceDoc = "tcp://HOST:PORT or ipc://PATH."  # type: ignore[attr-defined]


@frozen(kw_only=True)
class ZMQSettings(ServiceSettings):
    """
    What np-zmq is told: which device, its two endpoints, its high-water
    mark and its security.  Of the shared settings only the state
    directory and C{--auth} apply: ZeroMQ endpoints are not Twisted
    endpoints, and libzmq, not Twisted, accepts the connections.
    """

    device: str = setting(
        "queue",
        "queue (ROUTER/DEALER: REQ clients, REP workers), forwarder "
        "(XSUB/XPUB: PUB publishers, SUB subscribers) or streamer "
        "(PULL/PUSH: PUSH producers, PULL consumers).",
        deviceChoice,
    )
    frontend: str = setting(
        DEFAULT_FRONTEND,
        "The ZeroMQ endpoint the device binds for clients (REQ, PUB, PUSH).",
        zmqEndpoint,
    )
    backend: str = setting(
        DEFAULT_BACKEND,
        "The ZeroMQ endpoint the device binds for workers (REP, SUB, PULL).",
        zmqEndpoint,
    )
    curve: bool = flag(
        "Encrypt with CURVE: the server key pair is generated in the state "
        f"directory; clients need its public key, STATE-DIR/{PUBLIC_KEY_FILE} "
        "(logged at startup)."
    )
    hwm: int = setting(
        DEFAULT_HWM,
        "High-water mark: messages queued per peer and direction before the "
        "device stops reading (queue, streamer) or drops (forwarder).",
        positiveInt,
    )
    maxMessageSize: int = setting(
        DEFAULT_MAX_MESSAGE_SIZE,
        "The largest message frame accepted, in bytes; a bigger one closes "
        "its connection.",
        positiveInt,
    )
    allowPlaintextAuth: bool = flag(
        "Accept --auth (ZeroMQ PLAIN) although passwords then travel in the "
        "clear: ZeroMQ cannot carry PLAIN inside CURVE."
    )

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.workers != 1:
            raise ValueError(
                "np-zmq is one process: several could not bind the same "
                "ZeroMQ endpoints (--workers)"
            )
        if self.frontend == self.backend and not self.frontend.endswith(":*"):
            raise ValueError("--frontend and --backend must differ")
        for each in attrs.fields(ServiceSettings):
            default: Any = each.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = default.factory()
            if each.name in APPLICABLE or getattr(self, each.name) == default:
                continue
            option = optionName(each.name)
            if "netplugins.setting" in each.metadata:
                option = each.metadata["netplugins.setting"].name(each.name)
            raise ValueError(
                f"--{option} does not apply to np-zmq: libzmq accepts its "
                "connections on --frontend and --backend"
            )
        if self.auth or self.checkers:
            if self.curve:
                raise ValueError(
                    "--auth with --curve: ZeroMQ gives a connection one "
                    "mechanism, and PLAIN passwords cannot travel inside "
                    "CURVE; choose one"
                )
            if not self.allowPlaintextAuth:
                raise ValueError(
                    "--auth (ZeroMQ PLAIN) sends passwords in the clear: "
                    "add --allow-plaintext-auth to accept that"
                )


class Options(ServiceOptions):
    """
    Options for C{twistd np-zmq}.
    """

    settingsType = ZMQSettings
    synopsis = "[options]"
    longdesc = (
        "A ZeroMQ device: binds --frontend and --backend and forwards whole "
        "multipart messages between them, as zmq.proxy does, on the reactor. "
        "queue: REQ or DEALER clients to REP or DEALER workers and back; "
        "forwarder: PUB publishers to SUB subscribers (subscriptions flow "
        "back); streamer: PUSH producers to PULL consumers. At the high-water "
        "mark a queue or streamer stops reading its input until the output "
        "takes messages again, so nothing is dropped; a forwarder drops for "
        "slow subscribers, as PUB does. --curve encrypts (the public key "
        f"file, STATE-DIR/{PUBLIC_KEY_FILE}, is logged); --auth logs clients "
        "and workers in with ZeroMQ PLAIN through the credential checkers "
        "(cleartext: needs --allow-plaintext-auth). ZeroMQ endpoints are not "
        "Twisted endpoints: of the shared options only --state-dir, --auth and "
        "--preauth-timeout (the ZeroMQ handshake's deadline, login included; "
        "default libzmq's 30 s) apply; --listen, --listen-tls, the --tls-* "
        "options, connection caps, other deadlines, --allow/--deny and "
        "--workers above 1 are refused."
    )
    tapname = "np-zmq"
    usesCheckers = True

    compData = usage.Completions(optActions={"device": usage.CompleteList(DEVICES)})


def zmqService(
    settings: ZMQSettings = ZMQSettings(), *, reactor: Any = None
) -> MultiService:
    """
    A ZeroMQ device: the keyword twin of C{twistd np-zmq} is
    C{zmqService(ZMQSettings(device=..., frontend=..., backend=..., ...))}.

    @raise ValueError: for a bad value.
    """
    common = settings.common()
    security = Security()
    zap = None
    if settings.curve:
        public, secret, publicFile = serverKeys(common.stateDir)
        security = Security(curveSecretKey=secret, curvePublicKey=public)
        Device.log.info(
            "np-zmq: CURVE public key {key} (file: {path})",
            key=public.decode("ascii"),
            path=publicFile,
        )

        def zap(context: Any) -> ZAPHandler:
            return ZAPHandler(context, b"CURVE", reactor=reactor)

    elif common.checkers:
        security = Security(plain=True)
        portal = common.portal(PeerRealm())
        throttle = LoginThrottle(reactor)

        def zap(context: Any) -> ZAPHandler:
            return ZAPHandler(
                context, b"PLAIN", portal=portal, throttle=throttle, reactor=reactor
            )

    service = MultiService()
    service.setName(f"np-zmq {settings.device} {settings.frontend}")
    Device(
        settings.device,
        settings.frontend,
        settings.backend,
        hwm=settings.hwm,
        maxMessageSize=settings.maxMessageSize,
        handshakeTimeout=settings.preAuthTimeout,
        security=security,
        zap=zap,
        reactor=reactor,
    ).setServiceParent(service)
    return service


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The device configured by a parsed command line.
    """
    return zmqService(config.settings, reactor=reactor)
