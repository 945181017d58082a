"""
Peer servers the benchmarks compare netplugins with, each run as its own
process: C{python -m bench.peers.NAME --port PORT}.
"""
