"""
ZeroMQ on the Twisted reactor: the bridge that watches a ZeroMQ socket
(L{netplugins.zmq.bridge}), the devices np-zmq serves
(L{netplugins.zmq.device}) and their security, CURVE keys and the ZAP
handler (L{netplugins.zmq.security}).
"""
