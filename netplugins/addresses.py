# -*- test-case-name: tests.test_addresses -*-
"""
Addresses as log lines show them.

Log events carry addresses as text, never as address objects: C{twistd --logger}
JSON output (C{jsonFileLogObserver}) cannot serialise those and drops them.
"""

from __future__ import annotations

from twisted.internet import address


def describe(where: object) -> str:
    """
    An address as text: C{host:port} for IPv4, C{[host]:port} for IPv6, the
    socket path for UNIX sockets (C{unix socket} when it has none), C{str()} of
    anything else.
    """
    if isinstance(where, address.IPv4Address):
        return f"{where.host}:{where.port}"
    if isinstance(where, address.IPv6Address):
        return f"[{where.host}]:{where.port}"
    if isinstance(where, address.UNIXAddress):
        name = where.name
        if not name:
            return "unix socket"
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else name
    if isinstance(where, address.HostnameAddress):
        host = where.hostname.decode("ascii", "replace")
        return f"{host}:{where.port}"
    return str(where)
