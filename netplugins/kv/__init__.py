"""
C{np-kv}: a key-value store over XML-RPC (C{/RPC2}) and JSON-RPC 2.0
(C{/jsonrpc}), after the Python Cookbook's C{KeyValueServer} (recipe 11.6).

One module per part: L{store} (memory, SQLite, Redis), L{methods} (the calls
both protocols share), L{xmlrpc}, L{jsonrpc}, and L{web} (the HTTP site: body
limits, authentication).
"""
