"""
XML-RPC (C{/RPC2}) and JSON-RPC 2.0 (C{/jsonrpc}) over the shared hardened
HTTP site, for any set of methods: C{np-kv}'s store calls
(L{netplugins.kv.methods}) and C{np-rpc}'s functions (L{functions}).

One module per part: L{methods} (what a set of methods offers, the error
codes), L{body} (reading a request body), L{xmlrpc}, L{jsonrpc}, L{functions}
(Python functions as methods) and L{web} (the resources, with HTTP Basic
authentication).
"""
