from twisted.application.service import ServiceMaker

NetpluginsDNS = ServiceMaker(
    "netplugins dns",
    "netplugins.tap.dns",
    "Authoritative DNS over UDP and TCP from BIND zone files, with transfers, "
    "response rate limiting and a forwarder.",
    "np-dns",
)
