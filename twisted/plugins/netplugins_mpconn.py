from twisted.application.service import ServiceMaker

NetpluginsMPConn = ServiceMaker(
    "netplugins mpconn",
    "netplugins.tap.mpconn",
    "A multiprocessing.connection server: authkey handshake, echo or pickle RPC.",
    "np-mpconn",
)
