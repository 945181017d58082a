from twisted.application.service import ServiceMaker

NetpluginsMemcache = ServiceMaker(
    "netplugins memcache",
    "netplugins.tap.memcache",
    "A memcached-compatible cache: text and meta protocols over TCP and TLS.",
    "np-memcache",
)
