"""
np-memcache: memcached's text and meta protocols over TCP and TLS, served
from one process's memory (L{netplugins.memcache.protocol},
L{netplugins.memcache.meta}, L{netplugins.memcache.store}).
"""
