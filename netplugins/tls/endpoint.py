# -*- test-case-name: tests.test_tls -*-
"""
The C{nptls:} server endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.python.components import proxyForInterface
from zope.interface import implementer

from netplugins.endpointargs import unparse
from netplugins.tls.identity import TLSSettings
from netplugins.tls.server import ServerTLS

_OPTIONS = ("dir", "clientca", "clientcert", "minversion", "statedir")
_PAIR = re.compile(r"^(cert|key)(\d*)$")


def settingsFromEndpointOptions(options: Mapping[str, str]) -> TLSSettings:
    """
    L{TLSSettings} from the C{nptls:} keywords: C{cert}/C{key} (further pairs as
    C{cert2}/C{key2}, ...: an endpoint string keeps only the last value of a
    repeated keyword), C{dir}, C{clientca}, C{clientcert}, C{minversion},
    C{statedir}.

    @raise ValueError: for an unpaired certificate or key or a bad value.
    """
    pairs: dict[int, dict[str, str]] = {}
    for key, value in options.items():
        match = _PAIR.match(key)
        if match:
            pairs.setdefault(int(match.group(2) or 1), {})[match.group(1)] = value
    certificates = []
    for index in sorted(pairs):
        pair = pairs[index]
        suffix = "" if index == 1 else str(index)
        if "cert" not in pair or "key" not in pair:
            raise ValueError(
                f"nptls: cert{suffix}= and key{suffix}= must be given together"
            )
        certificates.append((pair["cert"], pair["key"]))
    minVersion = options.get("minversion", "1.2")
    if minVersion not in ("1.2", "1.3"):
        raise ValueError(f"nptls: minversion must be 1.2 or 1.3, not {minVersion!r}")
    clientCA = options.get("clientca")
    clientCert = options.get("clientcert")
    if clientCert not in (None, "optional", "required"):
        raise ValueError("nptls: clientcert must be 'optional' or 'required'")
    if clientCert is not None and clientCA is None:
        raise ValueError("nptls: clientcert= needs clientca=")
    return TLSSettings(
        certificates=tuple(certificates),
        directory=options.get("dir"),
        clientCA=clientCA,
        clientCert=clientCert or ("required" if clientCA else None),
        minVersion=minVersion,
        stateDir=options.get("statedir", "var"),
    )


def parseServerEndpoint(
    reactor: Any, *args: object, **kwargs: object
) -> IStreamServerEndpoint:
    """
    Parse C{nptls:[OPTION=VALUE:]...WRAPPED}: the keywords of
    L{settingsFromEndpointOptions} configure TLS, everything else is the
    wrapped endpoint (C{tcp:8443}, C{unix:...}, C{haproxy:...}).

    @raise ValueError: with a one-line message.
    """
    ours = {k: str(v) for k, v in kwargs.items() if k in _OPTIONS or _PAIR.match(k)}
    rest = {k: v for k, v in kwargs.items() if k not in ours}
    if not args:
        raise ValueError(
            "nptls: needs a wrapped endpoint after its options, "
            "e.g. nptls:cert=c.pem:key=k.pem:tcp:8443"
        )
    settings = settingsFromEndpointOptions(ours)
    from twisted.internet.endpoints import serverFromString

    description = unparse(args, rest)
    try:
        wrapped = serverFromString(reactor, description)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"nptls: bad wrapped endpoint {description!r}: {e}") from None
    return TLSServerEndpoint(ServerTLS(settings, reactor), wrapped, reactor)


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """
    Listens on C{wrapped} with L{ServerTLS.wrapFactory}; while listening, the
    certificates reload on SIGHUP and when their files change.
    """

    def __init__(
        self, serverTLS: ServerTLS, wrapped: IStreamServerEndpoint, reactor: Any
    ):
        self.serverTLS = serverTLS
        self.wrapped = wrapped
        self.reactor = reactor

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        listening = self.wrapped.listen(
            self.serverTLS.wrapFactory(protocolFactory, self.reactor)
        )

        def watch(port: IListeningPort) -> IListeningPort:
            watcher = self.serverTLS.service()
            watcher.startService()
            return _WatchedPort(port, watcher)

        return listening.addCallback(watch)


class _WatchedPort(proxyForInterface(IListeningPort, "_port")):  # type: ignore[misc]
    """
    A listening port that stops its certificate watcher when it stops.
    """

    def __init__(self, port: IListeningPort, watcher: IService):
        self._port = port
        self._watcher = watcher

    def stopListening(self) -> Any:
        if self._watcher.running:
            self._watcher.stopService()
        return self._port.stopListening()
