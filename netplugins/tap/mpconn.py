"""
C{twistd np-mpconn}: the multiprocessing.connection server's command line and
its keyword twin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

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
from netplugins.options import ServiceOptions, positiveFloat, positiveInt
from netplugins.safepickle import DEFAULT_MAX_NESTING
from netplugins.service import Common, listeningService, resolveCommon, supervised
from netplugins.threads import DEFAULT_MAX_THREADS, blockingPool, deferToPool

DEFAULT_LISTEN = ("tcp:25000:interface=127.0.0.1",)

log = Logger()


modeChoice = choice(*MODES, name="--mode")


class Options(ServiceOptions):
    """
    Options for C{twistd np-mpconn}.
    """

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
    defaultListen = DEFAULT_LISTEN
    tapname = "np-mpconn"
    withoutCheckers = "authenticates peers with --authkey-file, not --auth"

    optParameters = [
        [
            "authkey-file",
            None,
            None,
            "A file holding the authkey (its bytes; one trailing newline is ignored).",
        ],
        ["mode", None, "echo", "echo or rpc.", modeChoice],
        [
            "functions",
            None,
            None,
            "For --mode rpc: package.module:registry, a mapping of names to "
            "functions (those marked @netplugins.mpconn.blocking run in a thread "
            "pool). Default: the Cookbook's add and sub.",
        ],
        [
            "max-message-size",
            None,
            DEFAULT_MAX_MESSAGE_SIZE,
            "The longest message accepted, in bytes.",
            positiveInt,
        ],
        [
            "max-nesting",
            None,
            DEFAULT_MAX_NESTING,
            "How deeply containers may nest in a message.",
            positiveInt,
        ],
        [
            "handshake-timeout",
            None,
            DEFAULT_HANDSHAKE_TIMEOUT,
            "Close connections not authenticated within this many seconds.",
            positiveFloat,
        ],
        [
            "threads",
            None,
            DEFAULT_MAX_THREADS,
            "The most blocking functions running at once.",
            positiveInt,
        ],
    ]

    compData = usage.Completions(
        optActions={
            "mode": usage.CompleteList(MODES),
            "authkey-file": usage.CompleteFiles(),
        }
    )

    def postOptions(self) -> None:
        super().postOptions()
        try:
            if self["authkey-file"] is not None:
                self["authkey"] = readAuthkey(self["authkey-file"])
            else:
                self["authkey"] = None
            if self["functions"] is not None:
                if self["mode"] != "rpc":
                    raise ValueError("--functions needs --mode rpc")
                self["function-registry"] = loadFunctions(self["functions"])
            else:
                self["function-registry"] = None
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


def mpconnService(
    *,
    authkey: bytes | None = None,
    mode: str = "echo",
    functions: Mapping[str, Callable[..., Any]] | str | None = None,
    maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
    maxNesting: int = DEFAULT_MAX_NESTING,
    handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    threads: int = DEFAULT_MAX_THREADS,
    common: Common | None = None,
    reactor: Any = None,
    **settings: Any,
) -> MultiService:
    """
    The multiprocessing.connection server: the keyword twin of
    C{twistd np-mpconn}.

    @param authkey: the key's bytes (C{--authkey-file} reads them); by default
        a random one kept in the state directory.
    @param mode: C{"echo"} or C{"rpc"}.
    @param functions: for C{rpc}, a mapping of names to callables or a
        C{package.module:registry} string; by default the Cookbook's.
    @param threads: the bound on blocking functions running at once.
    @param common: the shared settings, already made; or instead give their
        keywords (L{netplugins.service.commonSettings}) as C{settings}.
    @raise ValueError: for a bad value.
    """
    common = resolveCommon(common, settings)
    if reactor is None:
        from twisted.internet import reactor
    theReactor = reactor
    modeChoice(mode)
    if authkey is None:
        path, authkey = generatedAuthkey(common.stateDir)
        log.warn(
            "np-mpconn: no --authkey-file given; using the key in {path}", path=path
        )
    if maxNesting <= 0:
        raise ValueError(f"maximum nesting must be positive, not {maxNesting}")
    handler: EchoMode | RPCMode
    if mode == "echo":
        if functions is not None:
            raise ValueError("functions are served in rpc mode only")
        handler = EchoMode(maxNesting)
    else:
        if functions is None:
            functions = exampleFunctions
        elif isinstance(functions, str):
            functions = loadFunctions(functions)

        def runBlocking(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            pool = blockingPool("np-mpconn", maxThreads=threads, reactor=theReactor)
            return deferToPool(theReactor, pool, f, *args, **kwargs)

        handler = RPCMode(functions, runBlocking, maxNesting)
    factory = MPConnFactory(
        authkey,
        handler,
        maxMessageSize=maxMessageSize,
        handshakeTimeout=handshakeTimeout,
        closeGrace=common.limits.closeGrace,
        reactor=theReactor,
    )
    listeners = listeningService(
        common,
        factory,
        defaultListen=DEFAULT_LISTEN,
        name="np-mpconn",
        reactor=theReactor,
    )
    return supervised(listeners, common, name="np-mpconn", reactor=theReactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The service configured by a parsed command line.
    """
    return mpconnService(
        authkey=config["authkey"],
        mode=config["mode"],
        functions=config["function-registry"],
        maxMessageSize=config["max-message-size"],
        maxNesting=config["max-nesting"],
        handshakeTimeout=config["handshake-timeout"],
        threads=config["threads"],
        common=config.common,
        reactor=reactor,
    )
