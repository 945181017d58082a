"""
The settings every netplugins service shares (L{ServiceSettings}: listening,
TLS, credential checkers, connection limits and deadlines, the state
directory) and the C{twistd} options made from them (L{ServiceOptions}).

A service declares its own settings as a subclass of L{ServiceSettings}
(see L{netplugins.settings}); its C{Options} subclasses L{ServiceOptions}
and names that class as C{settingsType}, and the parsed command line is
C{options.settings}, validated into C{options.common}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs
from attrs import field, frozen
from twisted.cred import strcred
from twisted.cred.checkers import (
    ICredentialsChecker,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.python import usage

from netplugins.coerce import choice
from netplugins.limits.settings import DEFAULT_CLOSE_GRACE, Limits, parseNetwork
from netplugins.service import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_STATE_DIR,
    Common,
    parseDatagram,
)
from netplugins.settings import (
    Setting,
    commandLine,
    declared,
    fromOptions,
    ownDeclared,
    repeated,
    setting,
)
from netplugins.tls.identity import TLSSettings
from netplugins.tls.server import DEFAULT_HANDSHAKE_TIMEOUT, ServerTLS
from netplugins.twistedinternals import coerceDoc
from netplugins.workers import checkEndpoint


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
    "ServiceSettings",
    "choice",
    "limitFloat",
    "limitInt",
    "positiveFloat",
    "positiveInt",
]


tlsMinVersionChoice = choice("1.2", "1.3", name="--tls-min-version")


def endpoint(description: str) -> str:
    """
    A listen endpoint description spoken in the clear (C{--listen}, np-mail's
    C{--smtp}, ...): a stream endpoint or C{udp:}.  It is parsed, once, when
    the settings are loaded (L{ServiceSettings.common}); a C{udp:} one is
    checked here already.
    """
    parseDatagram(description)
    return description


def tlsEndpoint(description: str) -> str:
    """
    A listen endpoint description wrapped in the service's TLS
    (C{--listen-tls}, np-mail's C{--smtps}, ...): no C{udp:}.  Parsed when
    the settings are loaded, as L{endpoint}.
    """
    if parseDatagram(description) is not None:
        raise ValueError(f"UDP cannot be wrapped in TLS: {description!r}")
    return description


#: The coercers of endpoint settings, and whether their listeners wrap TLS.
_LISTENING: dict[Callable[[str], Any] | None, bool] = {
    endpoint: False,
    tlsEndpoint: True,
}


def network(text: str) -> str:
    """
    Check a C{--allow}/C{--deny} network.
    """
    parseNetwork(text)
    return text


tlsClientCertChoice = choice("optional", "required", name="--tls-client-cert")


def makeChecker(description: str) -> ICredentialsChecker:
    """
    C{strcred.makeChecker}, with Twisted's C{memory:} checker keyed as its
    credentials are: it stores the user names and passwords of
    C{memory:alice:pw} as text, while L{IUsernamePassword} credentials carry
    bytes, so as Twisted makes it no login ever matches.
    """
    checker = strcred.makeChecker(description)
    if isinstance(checker, InMemoryUsernamePasswordDatabaseDontUse):
        checker.users = {
            _utf8(user): _utf8(password) for user, password in checker.users.items()
        }
    return checker  # type: ignore[no-any-return]


def _utf8(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


@frozen(kw_only=True)
class ServiceSettings:
    """
    The settings every netplugins service shares, declared once: each field
    is a keyword of the services' typed keyword twins and, through
    L{netplugins.settings}, a shared command-line option of
    L{ServiceOptions}.  L{common} validates them into the L{Common} the
    service layer uses.

    A service's settings class subclasses this one, adds its own fields and
    may change a shared default (np-echo's C{idleTimeout}).

    @cvar defaultListen: where the service listens when no C{listen} or
        C{listenTLS} is given; shown in C{--help}.
    """

    defaultListen: ClassVar[tuple[str, ...]] = ()

    listen: tuple[str, ...] = repeated(
        "Listen on this endpoint, speaking in the clear (STARTTLS where the "
        "protocol has it); repeatable.  Any Twisted server endpoint string "
        "(tcp:, tcp6:, unix:, systemd:, haproxy:, ...) or udp:PORT for datagram "
        "services.",
        endpoint,
    )
    listenTLS: tuple[str, ...] = repeated(
        "Listen on this endpoint wrapped in TLS from the --tls-* options; repeatable.",
        tlsEndpoint,
    )
    tlsCert: tuple[str, ...] = repeated(
        "A PEM certificate with its chain; repeat with --tls-key for several "
        "names (SNI picks).  Without any, TLS uses a development certificate "
        "generated in the state directory."
    )
    tlsKey: tuple[str, ...] = repeated(
        "The PEM private key for the --tls-cert given at the same position."
    )
    tlsDir: str | None = setting(
        None,
        "A directory of PEM files (certificate, chain and key together), "
        "as Twisted's tls: endpoint reads; the file name is the SNI name.",
    )
    tlsClientCA: str | None = setting(
        None,
        "Verify client certificates against the CA certificates in this PEM.",
    )
    tlsClientCert: str | None = setting(
        None,
        "'optional' or 'required' (the default when --tls-client-ca is given).",
        tlsClientCertChoice,
    )
    tlsMinVersion: str = setting(
        "1.2", "Lowest TLS version: 1.2 or 1.3.", tlsMinVersionChoice
    )
    tlsHandshakeTimeout: float = setting(
        DEFAULT_HANDSHAKE_TIMEOUT,
        "Abort connections whose TLS handshake (or STARTTLS) takes longer, in seconds.",
        positiveFloat,
    )
    maxConnections: int | None = setting(
        DEFAULT_MAX_CONNECTIONS,
        "Refuse connections beyond this many at once.",
        limitInt,
    )
    maxConnectionsPerIP: int | None = setting(
        DEFAULT_MAX_CONNECTIONS_PER_IP,
        "Refuse connections beyond this many at once from one address "
        "(IPv6: from one /64).",
        limitInt,
    )
    idleTimeout: float | None = setting(
        None,
        "Close connections idle for this many seconds (the service's default "
        "is shown below).",
        limitFloat,
    )
    preAuthTimeout: float | None = setting(
        None,
        "Close connections that have not logged in after this many seconds "
        "(services that log users in; default 120).",
        positiveFloat,
        option="preauth-timeout",
    )
    closeGrace: float = setting(
        DEFAULT_CLOSE_GRACE,
        "Abort a connection the server closed (deadline, error, goodbye) that "
        "is still open this many seconds later.",
        positiveFloat,
    )
    allow: tuple[str, ...] = repeated(
        "Accept connections only from this network (CIDR, IPv4 or IPv6); repeatable.",
        network,
    )
    deny: tuple[str, ...] = repeated(
        "Refuse connections from this network (CIDR, IPv4 or IPv6); repeatable.",
        network,
    )
    stateDir: str = setting(
        DEFAULT_STATE_DIR, "Where generated certificates, stores and keys live."
    )
    workers: int = setting(
        1,
        "Serve from this many processes sharing the listening ports "
        "(SO_REUSEPORT); connection limits then apply per process.",
        positiveInt,
    )
    #: C{--auth} checker descriptions (Twisted's strcred syntax).
    auth: tuple[str, ...] = field(default=(), converter=tuple[str, ...])
    #: Checkers made already (the command line's C{--auth} makes these).
    checkers: tuple[ICredentialsChecker, ...] = field(
        default=(), converter=tuple[ICredentialsChecker, ...]
    )
    #: A TLS context factory to share with other services.
    tls: ServerTLS | None = None
    #: What L{common} loaded, made on its first call.
    _loaded: Common | None = field(default=None, init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if len(self.tlsCert) != len(self.tlsKey):
            raise ValueError("--tls-cert and --tls-key must be given in pairs")
        if self.tlsClientCert is not None and self.tlsClientCA is None:
            raise ValueError("--tls-client-cert needs --tls-client-ca")
        if self.workers > 1:
            for description in self.listen + self.listenTLS:
                checkEndpoint(description)

    def common(self) -> Common:
        """
        The shared settings loaded for the service layer, once (the command
        line's check and the keyword twin get the same value): the checkers
        made, the networks parsed, the TLS files read and every endpoint
        setting parsed into its L{Listener} (so a bad one is a L{ValueError}
        now rather than a failure at startup).  A cap, idle timeout or login
        deadline of 0 is none.

        @raise ValueError: with a one-line message, for a bad value.
        """
        if self._loaded is None:
            common = self._load()
            for attribute, declaration in declared(type(self)):
                secure = _LISTENING.get(declaration.coerce)
                if secure is None:
                    continue
                for description in getattr(self, attribute.name):
                    try:
                        common.listener(description, secure=secure)
                    except ValueError as e:
                        raise ValueError(
                            f"--{declaration.name(attribute.name)}: {e}"
                        ) from None
            object.__setattr__(self, "_loaded", common)
        assert self._loaded is not None
        return self._loaded

    def _load(self) -> Common:
        checkers = list(self.checkers)
        if self.auth:
            for description in self.auth:
                try:
                    checkers.append(makeChecker(description))
                except Exception as e:
                    name = description.split(":")[0]
                    raise ValueError(f"--auth {name}: {e}") from None
        tlsSettings = TLSSettings(
            certificates=tuple(zip(self.tlsCert, self.tlsKey, strict=True)),
            directory=self.tlsDir,
            clientCA=self.tlsClientCA,
            clientCert=(
                self.tlsClientCert
                or ("required" if self.tlsClientCA is not None else None)
            ),
            minVersion=self.tlsMinVersion,
            stateDir=self.stateDir,
            handshakeTimeout=self.tlsHandshakeTimeout,
        )
        tls = self.tls
        if tls is None and (
            self.listenTLS or self.tlsCert or self.tlsDir or self.tlsClientCA
        ):
            try:
                tls = ServerTLS(tlsSettings)
            except (ValueError, OSError) as e:
                raise ValueError(f"TLS: {e}") from None
        return Common(
            listen=self.listen,
            listenTLS=self.listenTLS,
            tlsSettings=tlsSettings,
            limits=Limits(
                maxConnections=self.maxConnections or None,
                maxConnectionsPerIP=self.maxConnectionsPerIP or None,
                idleTimeout=self.idleTimeout or None,
                preAuthTimeout=self.preAuthTimeout or None,
                closeGrace=self.closeGrace,
                allow=tuple(parseNetwork(a) for a in self.allow),
                deny=tuple(parseNetwork(d) for d in self.deny),
            ),
            stateDir=self.stateDir,
            checkers=tuple(checkers),
            tls=tls,
            workers=self.workers,
        )


def _repeatedOption(name: str, declaration: Setting) -> Callable[[Any, str], None]:
    def opt(self: Any, value: str) -> None:
        self[name].append(value)

    opt.__doc__ = declaration.help
    opt.__name__ = "opt_" + name.replace("-", "_")
    return opt


def _declareOptions(cls: type[usage.Options], fields: Any) -> None:
    """
    Give C{cls} the command-line options of settings C{fields}.
    """
    parameters, flags, repeats = commandLine(fields)
    cls.optParameters = parameters  # type: ignore[attr-defined]
    cls.optFlags = flags  # type: ignore[attr-defined]
    for name, declaration in repeats.items():
        method = _repeatedOption(name, declaration)
        setattr(cls, method.__name__, method)
    cls._repeated = [*getattr(cls, "_repeated", ()), *repeats]  # type: ignore[attr-defined]


class ServiceOptions(usage.Options, strcred.AuthOptionMixin):
    """
    Options shared by every netplugins service, from L{ServiceSettings}; a
    plugin's C{Options} subclasses it and names its settings class as
    C{settingsType}, whose own fields become the plugin's own options.  The
    parsed command line is then C{self.settings} (an instance of
    C{settingsType}) and C{self.common}.

    @cvar settingsType: the service's settings class.
    @cvar tapname: the plugin's name, for messages.
    @cvar speaksUDP: whether C{--listen udp:...} is accepted.
    @cvar usesCheckers: whether the service logs users in with C{--auth}
        checkers; a service that does not refuses C{--auth} rather than
        silently serving everyone.
    @cvar withoutCheckers: why C{--auth} is refused, for the message.
    """

    settingsType: ClassVar[type[ServiceSettings]] = ServiceSettings
    tapname: ClassVar[str] = "this service"
    speaksUDP: ClassVar[bool] = False
    usesCheckers: ClassVar[bool] = False
    withoutCheckers: ClassVar[str] = "logs nobody in: --auth would protect nothing"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "settingsType" in cls.__dict__:
            _declareOptions(cls, ownDeclared(cls.settingsType, ServiceSettings))

    @property
    def defaultListen(self) -> tuple[str, ...]:
        return self.settingsType.defaultListen

    def __init__(self) -> None:
        super().__init__()
        for key in getattr(self, "_repeated", ()):
            self[key] = []
        self["credCheckers"] = []
        # Method docstrings arrive with their indentation, and Twisted appends
        # ". <coerceDoc>" to a coerced parameter's help: tidy both for --help.
        for name, doc in list(self.docs.items()):
            if doc:
                doc = " ".join(doc.split())
                if coerceDoc(self, name):
                    doc = doc.rstrip(".")
                self.docs[name] = doc

    def opt_auth(self, description: str) -> None:
        """
        A credential checker, in Twisted's strcred syntax (see --help-auth);
        repeatable.
        """
        try:
            self.addChecker(makeChecker(description))
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
        idle = attrs.fields(self.settingsType).idleTimeout.default
        if idle:
            text += f"Idle connections close after {idle:g} s.\n"
        return text

    def postOptions(self) -> None:
        try:
            self.settings = fromOptions(
                self.settingsType, self, checkers=tuple(self["credCheckers"])
            )
            self.common: Common = self.settings.common()
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


_declareOptions(ServiceOptions, declared(ServiceSettings))
