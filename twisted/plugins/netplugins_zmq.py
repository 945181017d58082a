from twisted.application.service import ServiceMaker

NetpluginsZMQ = ServiceMaker(
    "netplugins zmq",
    "netplugins.tap.zmq",
    "A ZeroMQ device (queue, forwarder, streamer) with CURVE and PLAIN login.",
    "np-zmq",
)
