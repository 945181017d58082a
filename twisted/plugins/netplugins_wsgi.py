from twisted.application.service import ServiceMaker

NetpluginsWSGI = ServiceMaker(
    "netplugins wsgi",
    "netplugins.tap.wsgi",
    "Host a WSGI application: thread pool, limits, static files, Basic auth, TLS.",
    "np-wsgi",
)
