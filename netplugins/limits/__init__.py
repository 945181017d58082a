"""
Connection limits shared by every netplugins service: who may connect
(C{--allow}, C{--deny}), how many at once (C{--max-connections},
C{--max-connections-per-ip}), how long a silent connection lives
(C{--idle-timeout}), and how much a UDP source can make a service say
(docs/security.md).

One L{ConnectionTracker} per service wraps every factory and datagram protocol
that service listens with, so its counts cover all of the service's listeners.

The package is split by side: L{netplugins.limits.settings} (L{Limits},
networks), L{netplugins.limits.tracker} (L{ConnectionTracker}),
L{netplugins.limits.stream} and L{netplugins.limits.datagram} (the wrappers).
"""

from __future__ import annotations

from netplugins.limits.settings import (
    IGNORED_SOURCE_PORTS,
    IPAddress,
    IPNetwork,
    Limits,
    parseNetwork,
)
from netplugins.limits.stream import CLOSE_GRACE
from netplugins.limits.tracker import ConnectionTracker
from netplugins.ratelimit import REPORT_INTERVAL, REPORTS_PER_INTERVAL

__all__ = [
    "CLOSE_GRACE",
    "IGNORED_SOURCE_PORTS",
    "REPORTS_PER_INTERVAL",
    "REPORT_INTERVAL",
    "ConnectionTracker",
    "IPAddress",
    "IPNetwork",
    "Limits",
    "parseNetwork",
]
