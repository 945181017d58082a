from twisted.application.service import ServiceMaker

NetpluginsRPyC = ServiceMaker(
    "netplugins rpyc",
    "netplugins.tap.rpyc",
    "Host an rpyc.Service: bounded session threads, optional login, TLS.",
    "np-rpyc",
)
