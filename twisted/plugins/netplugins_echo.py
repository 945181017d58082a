from twisted.application.service import ServiceMaker

NetpluginsEcho = ServiceMaker(
    "netplugins echo",
    "netplugins.tap.echo",
    "Echo over TCP, UNIX sockets or TLS, raw or framed (line, netstring, blocks).",
    "np-echo",
)
