# The pipeline of Foundations of Python Network Programming's chapter 8
# queuepi.py (PUB/SUB, REQ/REP and PUSH/PULL estimating pi), spread over
# processes that meet at three np-zmq devices instead of binding each other:
#
#     QUEUEPI=path/to/queuepi.py twistd -n -y tac/zmq-pipeline.tac
#
# bitsource publishes into a forwarder; always_yes and judge subscribe from
# it; judge asks pythagoras through a queue; both push their verdicts through
# a streamer to tally, whose running estimate of pi is logged as
# "[tally] Y 3.14...".  Each book function runs unchanged in its own process
# (netplugins.examples.zmqpipeline explains how), restarted if it dies.
# NP_ZMQ_PIPELINE_PORT (default 6700) is the first of six loopback ports:
# the three frontends, then the three backends.  mypy checks this file.
import os
import sys

from twisted.application.service import Application
from twisted.runner.procmon import ProcessMonitor

from netplugins.examples.zmqpipeline import ROLES
from netplugins.tap.zmq import ZMQSettings, zmqService

book = os.path.abspath(os.environ.get("QUEUEPI", "queuepi.py"))
if not os.path.isfile(book):
    raise SystemExit(f"set QUEUEPI to the book's queuepi.py (not found: {book})")
port = int(os.environ.get("NP_ZMQ_PIPELINE_PORT", "6700"))


def url(offset: int) -> str:
    return f"tcp://127.0.0.1:{port + offset}"


application = Application("queuepi.py across processes through np-zmq devices")
devices = {
    # device: (frontend, backend)
    "forwarder": (url(0), url(3)),
    "queue": (url(1), url(4)),
    "streamer": (url(2), url(5)),
}
for device, (frontend, backend) in devices.items():
    zmqService(
        ZMQSettings(device=device, frontend=frontend, backend=backend)
    ).setServiceParent(application)

pubsub = devices["forwarder"]
reqrep = devices["queue"]
pushpull = devices["streamer"]
arguments = {
    "bitsource": [pubsub[0]],
    "always_yes": [pubsub[1], pushpull[0]],
    "judge": [pubsub[1], reqrep[0], pushpull[0]],
    "pythagoras": [reqrep[1]],
    "tally": [pushpull[1]],
}
assert arguments.keys() == ROLES.keys()
processes = ProcessMonitor()
for role, urls in arguments.items():
    processes.addProcess(
        role,
        [sys.executable, "-u", "-m", "netplugins.examples.zmqpipeline", book, role]
        + urls,
        env=dict(os.environ),
    )
processes.setServiceParent(application)
