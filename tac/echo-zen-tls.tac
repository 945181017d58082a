# Two services composed in Python, sharing one TLS context factory (and so one
# certificate, one reload watcher, one SIGHUP handler):
#     twistd -n -y tac/echo-zen-tls.tac
# Every command-line option is a field of the service's settings class:
# --listen-tls is listenTLS, --max-connections-per-ip is maxConnectionsPerIP,
# and so on; mypy checks this file.
from twisted.application.service import Application

from netplugins.tap.echo import EchoSettings, echoService
from netplugins.tap.zen import ZenSettings, zenService
from netplugins.tls.server import ServerTLS
from netplugins.tls.identity import TLSSettings

# Give certificates=(("site.pem", "site.key"),) for a real one; without any, a
# development certificate is generated under var/tls.
tls = ServerTLS(TLSSettings(stateDir="var"))

application = Application("echo and zen over one certificate")
echoService(
    EchoSettings(
        framing="line",
        listen=("tcp:7007:interface=127.0.0.1",),
        listenTLS=("tcp:7008:interface=127.0.0.1",),
        tls=tls,
        maxConnectionsPerIP=8,
        idleTimeout=300,
    )
).setServiceParent(application)
zenService(
    ZenSettings(
        listenTLS=("tcp:1061:interface=127.0.0.1",),
        tls=tls,
        maxConnectionsPerIP=8,
    )
).setServiceParent(application)
