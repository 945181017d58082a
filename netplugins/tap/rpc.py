"""
C{twistd np-rpc}: the functions host's settings, its command line and its
keyword twin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs
from attrs import frozen
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.python import usage

from netplugins.mpconn import loadFunctions
from netplugins.options import ServiceOptions, positiveInt
from netplugins.rpc.functions import FunctionMethods
from netplugins.rpc.settings import batchSetting, nestingSetting, noNilFlag
from netplugins.rpc.web import (
    checkPlaintextAuth,
    rpcResource,
)
from netplugins.service import served
from netplugins.settings import setting
from netplugins.threads import DEFAULT_MAX_THREADS, blockingPool, deferToPool
from netplugins.web.options import HTTPSettings

#: The book's ports: its XML-RPC programs call 7001, its JSON-RPC one 7002.
DEFAULT_LISTEN = ("tcp:7001:interface=127.0.0.1", "tcp:7002:interface=127.0.0.1")
#: What C{--functions} is without one: Foundations ch. 18's functions.
DEFAULT_FUNCTIONS = "netplugins.examples.bookrpc:functions"


@frozen(kw_only=True)
class RPCSettings(HTTPSettings):
    """
    What np-rpc is told: the shared and HTTP settings, the functions, the
    request limits, the pool for blocking functions and whether XML-RPC
    answers may carry C{<nil/>}.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    #: In Python, also the mapping of names to functions itself.
    functions: str | Mapping[str, Callable[..., Any]] = setting(
        DEFAULT_FUNCTIONS,
        "package.module:registry, a mapping of names to functions (those "
        "marked @netplugins.mpconn.blocking run in a thread pool), as "
        "np-mpconn's --functions. Default: Foundations of Python Network "
        "Programming ch. 18's addtogether, quadratic, remote_repr and lengths.",
    )
    noNil: bool = noNilFlag("a function returning None answers")
    maxNesting: int = nestingSetting()
    maxBatch: int = batchSetting()
    threads: int = setting(
        DEFAULT_MAX_THREADS,
        "The most blocking functions running at once.",
        positiveInt,
    )


class Options(ServiceOptions):
    """
    Options for C{twistd np-rpc}.
    """

    settingsType = RPCSettings
    synopsis = "[options]"
    longdesc = (
        "Python functions over HTTP: XML-RPC at /RPC2 (xmlrpc.client.ServerProxy, "
        "with system.listMethods, methodHelp, methodSignature and multicall) and "
        "JSON-RPC 2.0 at /jsonrpc (batches, notifications, named parameters); / "
        "answers either, by Content-Type. --functions names a registry, a mapping "
        "of names to functions, as np-mpconn's does; the default serves "
        "Foundations of Python Network Programming ch. 18's functions on the "
        "book's ports, 7001 and 7002. A function's exception is answered as "
        "SimpleXMLRPCServer does (\"<class 'ValueError'>:math domain error\", "
        "fault 1; JSON-RPC error -32000), never with a traceback. With --auth, "
        "requests need HTTP Basic credentials, over TLS only unless "
        "--allow-plaintext-auth."
    )
    tapname = "np-rpc"
    usesCheckers = True

    def postOptions(self) -> None:
        """
        Load the functions now, so that a bad registry is a usage error
        rather than a failure to start.
        """
        super().postOptions()
        settings: RPCSettings = self.settings
        try:
            checkPlaintextAuth(self.common, settings.allowPlaintextAuth, DEFAULT_LISTEN)
            functions = settings.functions
            if isinstance(functions, str):
                functions = loadFunctions(functions)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self.settings = attrs.evolve(settings, functions=functions)


def rpcService(
    settings: RPCSettings = RPCSettings(), *, reactor: Any = None
) -> MultiService:
    """
    The functions host: the keyword twin of C{twistd np-rpc} is
    C{rpcService(RPCSettings(functions={...}, listen=(...), ...))}.

    @raise ValueError: for a bad value.
    """
    if reactor is None:
        from twisted.internet import reactor
    theReactor = reactor
    common = settings.common()
    checkPlaintextAuth(common, settings.allowPlaintextAuth, settings.defaultListen)
    functions = settings.functions
    if isinstance(functions, str):
        functions = loadFunctions(functions)

    def runBlocking(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        pool = blockingPool("np-rpc", maxThreads=settings.threads, reactor=theReactor)
        return deferToPool(theReactor, pool, f, *args, **kwargs)

    resource = rpcResource(
        FunctionMethods(functions, runBlocking),
        maxNesting=settings.maxNesting,
        maxBatch=settings.maxBatch,
        allowNone=not settings.noNil,
        checkers=common.checkers,
        allowPlaintextAuth=settings.allowPlaintextAuth,
        realmName="np-rpc",
        reactor=theReactor,
    )
    return served(
        common,
        settings.site(resource, reactor=theReactor),
        name="np-rpc",
        defaultListen=settings.defaultListen,
        reactor=theReactor,
    )


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The service configured by a parsed command line.
    """
    return rpcService(config.settings, reactor=reactor)
