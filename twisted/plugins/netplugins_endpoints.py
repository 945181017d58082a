"""
The C{nptls:} server endpoint: C{nptls:cert=c.pem:key=k.pem:tcp:8443} wraps any
endpoint in netplugins' TLS (see L{netplugins.tls.endpoint.parseServerEndpoint}).

Kept light: the TLS machinery is imported only when an nptls: string is parsed.
"""

from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _NPTLSServerParser:
    prefix = "nptls"

    def parseStreamServer(self, reactor, *args, **kwargs):  # type: ignore[no-untyped-def]
        from netplugins.tls.endpoint import parseServerEndpoint

        return parseServerEndpoint(reactor, *args, **kwargs)


nptlsServerParser = _NPTLSServerParser()
