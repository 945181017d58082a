"""
np-dns: an authoritative DNS server over UDP and TCP, with zone transfers,
response rate limiting and a forwarder for listed clients.

dnspython does the DNS (zone files, messages, TSIG, truncation); Twisted does
the transport, limits and workers.  L{netplugins.dns.zone} loads and indexes a
zone, L{netplugins.dns.answer} answers a query from the zones,
L{netplugins.dns.server} speaks UDP and TCP.
"""
