from twisted.application.service import ServiceMaker

NetpluginsDaytime = ServiceMaker(
    "netplugins daytime",
    "netplugins.tap.daytime",
    "The time over TCP and UDP: RFC 867 daytime, RFC 3339 or RFC 868 binary time.",
    "np-daytime",
)
