from twisted.application.service import ServiceMaker

NetpluginsHttpbin = ServiceMaker(
    "netplugins httpbin",
    "netplugins.tap.httpbin",
    "An httpbin-compatible HTTP request and response test service.",
    "np-httpbin",
)
