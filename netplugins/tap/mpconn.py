"""
C{twistd np-mpconn}: the multiprocessing.connection server's settings, its
command line and its keyword twin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs
from attrs import frozen
from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from netplugins.coerce import choice
from netplugins.mpconn import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    MODES,
    EchoMode,
    MPConnFactory,
    RPCMode,
    exampleFunctions,
    generatedAuthkey,
    loadFunctions,
    readAuthkey,
)
from netplugins.options import (
    ServiceOptions,
    ServiceSettings,
    positiveFloat,
    positiveInt,
)
from netplugins.safepickle import DEFAULT_MAX_NESTING
from netplugins.service import served
from netplugins.settings import setting
from netplugins.threads import DEFAULT_MAX_THREADS, blockingPool, deferToPool

DEFAULT_LISTEN = ("tcp:25000:interface=127.0.0.1",)

log = Logger()


modeChoice = choice(*MODES, name="--mode")


@frozen(kw_only=True)
class MPConnSettings(ServiceSettings):
    """
    What np-mpconn is told: the shared settings, the authkey, the mode and
    its functions, and the message limits.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    authkeyFile: str | None = setting(
        None,
        "A file holding the authkey (its bytes; one trailing newline is ignored).",
    )
    mode: str = setting("echo", "echo or rpc.", modeChoice)
    #: In Python, also the mapping of names to functions itself.
    functions: str | Mapping[str, Callable[..., Any]] | None = setting(
        None,
        "For --mode rpc: package.module:registry, a mapping of names to "
        "functions (those marked @netplugins.mpconn.blocking run in a thread "
        "pool). Default: the Cookbook's add and sub.",
    )
    maxMessageSize: int = setting(
        DEFAULT_MAX_MESSAGE_SIZE,
        "The longest message accepted, in bytes.",
        positiveInt,
    )
    maxNesting: int = setting(
        DEFAULT_MAX_NESTING,
        "How deeply containers may nest in a message.",
        positiveInt,
    )
    handshakeTimeout: float = setting(
        DEFAULT_HANDSHAKE_TIMEOUT,
        "Close connections not authenticated within this many seconds.",
        positiveFloat,
    )
    threads: int = setting(
        DEFAULT_MAX_THREADS,
        "The most blocking functions running at once.",
        positiveInt,
    )
    #: The key's bytes, read already (C{--authkey-file} reads them); without
    #: it or C{authkeyFile}, a random key kept in the state directory.
    authkey: bytes | None = None


class Options(ServiceOptions):
    """
    Options for C{twistd np-mpconn}.
    """

    settingsType = MPConnSettings
    synopsis = "[options]"
    longdesc = (
        "A server that Python's multiprocessing.connection.Client(address, "
        "authkey=...) talks to, over TCP, UNIX sockets or TLS. Both sides prove "
        "they know the authkey (the HMAC-MD5 handshake of Python 3.11 and older "
        "and the {sha256} one of 3.12 and later) before any message is read. "
        "--mode echo sends every message back (Python Cookbook 11.7); --mode rpc "
        "answers pickled (name, args, kwargs) requests with the pickled result "
        "or exception (Cookbook 11.8, its RPCProxy works unmodified). Messages "
        "are unpickled as plain data only (containers, strings, bytes, numbers, "
        "sets, dates, decimals): anything else closes the connection. Without "
        "--authkey-file, a random key is made in the state directory."
    )
    tapname = "np-mpconn"
    withoutCheckers = "authenticates peers with --authkey-file, not --auth"

    compData = usage.Completions(
        optActions={
            "mode": usage.CompleteList(MODES),
            "authkey-file": usage.CompleteFiles(),
        }
    )

    def postOptions(self) -> None:
        """
        Read the authkey file and load the functions now, so that a bad one is
        a usage error rather than a failure to start.
        """
        super().postOptions()
        settings: MPConnSettings = self.settings
        functions = settings.functions
        try:
            authkey = (
                None
                if settings.authkeyFile is None
                else readAuthkey(settings.authkeyFile)
            )
            if isinstance(functions, str):
                if settings.mode != "rpc":
                    raise ValueError("--functions needs --mode rpc")
                functions = loadFunctions(functions)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self.settings = attrs.evolve(settings, authkey=authkey, functions=functions)


def mpconnService(
    settings: MPConnSettings = MPConnSettings(), *, reactor: Any = None
) -> MultiService:
    """
    The multiprocessing.connection server: the keyword twin of C{twistd
    np-mpconn} is C{mpconnService(MPConnSettings(authkey=..., mode=...,
    listen=(...), ...))}.

    @raise ValueError: for a bad value.
    """
    common = settings.common()
    if reactor is None:
        from twisted.internet import reactor
    theReactor = reactor
    authkey = settings.authkey
    if authkey is None and settings.authkeyFile is not None:
        authkey = readAuthkey(settings.authkeyFile)
    if authkey is None:
        path, authkey = generatedAuthkey(common.stateDir)
        log.warn(
            "np-mpconn: no --authkey-file given; using the key in {path}", path=path
        )
    functions = settings.functions
    handler: EchoMode | RPCMode
    if settings.mode == "echo":
        if functions is not None:
            raise ValueError("functions are served in rpc mode only")
        handler = EchoMode(settings.maxNesting)
    else:
        if functions is None:
            functions = exampleFunctions
        elif isinstance(functions, str):
            functions = loadFunctions(functions)

        def runBlocking(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            pool = blockingPool(
                "np-mpconn", maxThreads=settings.threads, reactor=theReactor
            )
            return deferToPool(theReactor, pool, f, *args, **kwargs)

        handler = RPCMode(functions, runBlocking, settings.maxNesting)
    factory = MPConnFactory(
        authkey,
        handler,
        maxMessageSize=settings.maxMessageSize,
        handshakeTimeout=settings.handshakeTimeout,
        closeGrace=common.limits.closeGrace,
        reactor=theReactor,
    )
    return served(
        common,
        factory,
        name="np-mpconn",
        defaultListen=settings.defaultListen,
        reactor=theReactor,
    )


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The service configured by a parsed command line.
    """
    return mpconnService(config.settings, reactor=reactor)
