"""
netplugins: network protocol servers on Twisted, registered as twistd plugins.

Each protocol lives in its own module (L{netplugins.echo}, ...); its command-line
glue lives in L{netplugins.tap}; shared parts are L{netplugins.options} (the options
every plugin takes), L{netplugins.service} (listening), L{netplugins.limits},
L{netplugins.tls} and L{netplugins.cred}.
"""
