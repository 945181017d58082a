from twisted.application.service import ServiceMaker

NetpluginsRPC = ServiceMaker(
    "netplugins rpc",
    "netplugins.tap.rpc",
    "Python functions over XML-RPC (/RPC2) and JSON-RPC 2.0 (/jsonrpc).",
    "np-rpc",
)
