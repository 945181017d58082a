"""
The options every netplugins plugin shares (see SPEC.md, "Options every plugin
shares"): listening, TLS, credential checkers, connection limits and the state
directory.  A service's C{Options} subclasses L{ServiceOptions}, adds its own
C{optParameters}, and reads the validated result from C{self.common}.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.cred import strcred
from twisted.python import usage

from netplugins.coerce import choice
from netplugins.limits.settings import DEFAULT_CLOSE_GRACE
from netplugins.service import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_STATE_DIR,
    Common,
    commonSettings,
    parseDatagram,
)
from netplugins.tls import DEFAULT_HANDSHAKE_TIMEOUT


def positiveInt(value: str) -> int:
    """
    Coerce a positive integer option.
    """
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"expected a whole number, not {value!r}") from None
    if number <= 0:
        raise ValueError(f"expected a positive number, not {number}")
    return number


positiveInt.coerceDoc = "A positive whole number."  # type: ignore[attr-defined]


def positiveFloat(value: str) -> float:
    """
    Coerce a positive number of seconds.
    """
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number of seconds, not {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise ValueError(f"expected a positive number of seconds, not {value!r}")
    return number


positiveFloat.coerceDoc = "A positive number."  # type: ignore[attr-defined]


def limitInt(value: str) -> int:
    """
    Coerce a cap: a whole number, 0 for none.
    """
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"expected a whole number, not {value!r}") from None
    if number < 0:
        raise ValueError(f"expected 0 (no limit) or more, not {number}")
    return number


limitInt.coerceDoc = "0 for no limit."  # type: ignore[attr-defined]


def limitFloat(value: str) -> float:
    """
    Coerce a number of seconds, 0 for none.
    """
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number of seconds, not {value!r}") from None
    if not 0 <= number < float("inf"):
        raise ValueError(f"expected 0 (none) or more seconds, not {value!r}")
    return number


limitFloat.coerceDoc = "Seconds, 0 for none."  # type: ignore[attr-defined]


__all__ = [
    "ServiceOptions",
    "choice",
    "limitFloat",
    "limitInt",
    "positiveFloat",
    "positiveInt",
]


class ServiceOptions(usage.Options, strcred.AuthOptionMixin):
    """
    Options shared by every netplugins service.

    @cvar defaultListen: where the service listens when no C{--listen} or
        C{--listen-tls} is given; shown in C{--help}.
    @cvar tapname: the plugin's name, for messages.
    @cvar speaksUDP: whether C{--listen udp:...} is accepted.
    @cvar usesCheckers: whether the service logs users in with C{--auth}
        checkers; a service that does not refuses C{--auth} rather than
        silently serving everyone.
    @cvar withoutCheckers: why C{--auth} is refused, for the message.
    @cvar defaultIdleTimeout: C{--idle-timeout} when not given (C{None}: the
        service keeps its own protocol timeouts).
    """

    defaultListen: ClassVar[tuple[str, ...]] = ()
    tapname: ClassVar[str] = "this service"
    speaksUDP: ClassVar[bool] = False
    usesCheckers: ClassVar[bool] = False
    withoutCheckers: ClassVar[str] = "logs nobody in: --auth would protect nothing"
    defaultIdleTimeout: ClassVar[float | None] = None

    optParameters: ClassVar[list[Any]] = [
        [
            "tls-dir",
            None,
            None,
            "A directory of PEM files (certificate, chain and key together), "
            "as Twisted's tls: endpoint reads; the file name is the SNI name.",
        ],
        [
            "tls-client-ca",
            None,
            None,
            "Verify client certificates against the CA certificates in this PEM.",
        ],
        [
            "tls-client-cert",
            None,
            None,
            "'optional' or 'required' (the default when --tls-client-ca is given).",
        ],
        ["tls-min-version", None, "1.2", "Lowest TLS version: 1.2 or 1.3."],
        [
            "max-connections",
            None,
            DEFAULT_MAX_CONNECTIONS,
            "Refuse connections beyond this many at once.",
            limitInt,
        ],
        [
            "max-connections-per-ip",
            None,
            DEFAULT_MAX_CONNECTIONS_PER_IP,
            "Refuse connections beyond this many at once from one address "
            "(IPv6: from one /64).",
            limitInt,
        ],
        [
            "idle-timeout",
            None,
            None,
            "Close connections idle for this many seconds (the service's "
            "default is shown below).",
            limitFloat,
        ],
        [
            "preauth-timeout",
            None,
            None,
            "Close connections that have not logged in after this many seconds "
            "(services that log users in; default 120).",
            positiveFloat,
        ],
        [
            "tls-handshake-timeout",
            None,
            DEFAULT_HANDSHAKE_TIMEOUT,
            "Abort connections whose TLS handshake (or STARTTLS) takes longer, "
            "in seconds.",
            positiveFloat,
        ],
        [
            "close-grace",
            None,
            DEFAULT_CLOSE_GRACE,
            "Abort a connection the server closed (deadline, error, goodbye) that "
            "is still open this many seconds later.",
            positiveFloat,
        ],
        [
            "state-dir",
            None,
            DEFAULT_STATE_DIR,
            "Where generated certificates, stores and keys live.",
        ],
        [
            "workers",
            None,
            1,
            "Serve from this many processes sharing the listening ports "
            "(SO_REUSEPORT); connection limits then apply per process.",
            positiveInt,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        for key in ("listen", "listen-tls", "tls-cert", "tls-key", "allow", "deny"):
            self[key] = []
        self["credCheckers"] = []
        # Method docstrings arrive with their indentation, and Twisted appends
        # ". <coerceDoc>" to a coerced parameter's help: tidy both for --help.
        for name, doc in list(self.docs.items()):
            if doc:
                doc = " ".join(doc.split())
                dispatch = self._dispatch.get(name)
                if isinstance(dispatch, usage.CoerceParameter) and dispatch.doc:
                    doc = doc.rstrip(".")
                self.docs[name] = doc

    def opt_listen(self, description: str) -> None:
        """
        Listen on this endpoint, speaking in the clear (STARTTLS where the
        protocol has it); repeatable.  Any Twisted server endpoint string
        (tcp:, tcp6:, unix:, systemd:, haproxy:, ...) or udp:PORT for datagram
        services.
        """
        self["listen"].append(description)

    def opt_listen_tls(self, description: str) -> None:
        """
        Listen on this endpoint wrapped in TLS from the --tls-* options;
        repeatable.
        """
        self["listen-tls"].append(description)

    def opt_tls_cert(self, path: str) -> None:
        """
        A PEM certificate with its chain; repeat with --tls-key for several
        names (SNI picks).  Without any, TLS uses a development certificate
        generated in the state directory.
        """
        self["tls-cert"].append(path)

    def opt_tls_key(self, path: str) -> None:
        """
        The PEM private key for the --tls-cert given at the same position.
        """
        self["tls-key"].append(path)

    def opt_allow(self, network: str) -> None:
        """
        Accept connections only from this network (CIDR, IPv4 or IPv6);
        repeatable.
        """
        self["allow"].append(network)

    def opt_deny(self, network: str) -> None:
        """
        Refuse connections from this network (CIDR, IPv4 or IPv6); repeatable.
        """
        self["deny"].append(network)

    def opt_auth(self, description: str) -> None:
        """
        A credential checker, in Twisted's strcred syntax (see --help-auth);
        repeatable.
        """
        try:
            self.addChecker(strcred.makeChecker(description))
        except strcred.UnsupportedInterfaces as e:
            raise usage.UsageError(
                f"--auth {description.split(':')[0]} does not fit this service: {e}"
            ) from None
        except strcred.InvalidAuthType as e:
            raise usage.UsageError(f"--auth: unknown checker {e}") from None
        except Exception as e:
            # strcred factories raise ValueError (or worse) for bad arguments;
            # their message is the one-line error the user needs.
            raise usage.UsageError(f"--auth {description.split(':')[0]}: {e}") from None

    def getUsage(self, width: int | None = None) -> str:
        text = super().getUsage(width)
        if self.defaultListen:
            text += "\nWithout --listen or --listen-tls, listens on: {}\n".format(
                ", ".join(self.defaultListen)
            )
        if self.defaultIdleTimeout:
            text += f"Idle connections close after {self.defaultIdleTimeout:g} s.\n"
        return text

    def postOptions(self) -> None:
        try:
            self.common: Common = commonSettings(
                listen=self["listen"],
                listenTLS=self["listen-tls"],
                tlsCert=self["tls-cert"],
                tlsKey=self["tls-key"],
                tlsDir=self["tls-dir"],
                tlsClientCA=self["tls-client-ca"],
                tlsClientCert=self["tls-client-cert"],
                tlsMinVersion=self["tls-min-version"],
                checkers=self["credCheckers"],
                maxConnections=self["max-connections"],
                maxConnectionsPerIP=self["max-connections-per-ip"],
                idleTimeout=(
                    self.defaultIdleTimeout
                    if self["idle-timeout"] is None
                    else self["idle-timeout"]
                ),
                preAuthTimeout=self["preauth-timeout"],
                closeGrace=self["close-grace"],
                tlsHandshakeTimeout=self["tls-handshake-timeout"],
                allow=self["allow"],
                deny=self["deny"],
                stateDir=self["state-dir"],
                workers=self["workers"],
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        if self["credCheckers"] and not self.usesCheckers:
            raise usage.UsageError(f"{self.tapname} {self.withoutCheckers}")
        if not self.speaksUDP:
            for description in self.common.listen:
                if parseDatagram(description) is not None:
                    raise usage.UsageError(
                        f"{self.tapname} does not speak UDP: {description!r}"
                    )
