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
