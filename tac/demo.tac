# The whole netplugins suite on 127.0.0.1:
#     twistd -n -y tac/demo.tac        (or ./scripts/demo)
# State (development certificate, demo users, keys) is kept under ./var.
# See netplugins/demo.py for what listens where; the log prints the table.
from twisted.application.service import Application

from netplugins.demo import demoService

application = Application("netplugins demo")
demoService(stateDir="var").setServiceParent(application)
