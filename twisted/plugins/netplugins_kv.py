from twisted.application.service import ServiceMaker

NetpluginsKV = ServiceMaker(
    "netplugins kv",
    "netplugins.tap.kv",
    "A key-value store over XML-RPC (/RPC2) and JSON-RPC (/jsonrpc).",
    "np-kv",
)
