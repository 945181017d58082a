"""
The HTTP services' shared parts: the hardened site and channel
(L{netplugins.web.http}), HTTP Basic through the shared checkers
(L{netplugins.web.auth}) and the cheap access log
(L{netplugins.web.accesslog}).
"""
