"""
A ZeroMQ streamer's throughput: producer processes PUSH C{--size}-byte
messages into the device's frontend (C{--port}) as fast as it takes them,
consumer processes PULL them from its backend (C{--backend-port}); a request
is one message delivered to a consumer inside the measured window, and any
message that arrives changed is an error:

    python -m bench.clients.zmqstream --port P --backend-port B --connections 1

C{--connections} producer and consumer pairs, each a process of its own (no
GIL shared), all on the load generator's CPU.  Not L{runWorkers}: that runs
a request and waits for its answer on one connection, while a stream flows
one way, from a producer's connection to a consumer's.  Latency is not
reported: under a saturating stream it is the time a message waits in the
high-water-mark queues, not the device's speed.  Every loop is bounded by
the measured window (send and receive time out after 100 ms), and only
127.0.0.1 is ever connected to.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from typing import Any

import zmq

from bench.clients import CONNECT_TIMEOUT, HOST, arguments, emit, fail, result

# Messages sent or received between two looks at the clock.
BURST = 64
# Milliseconds a send or receive may block before the clock is looked at.
TIMEOUT_MS = 100


def produce(options: argparse.Namespace, pipe: Any) -> None:
    """
    PUSH the payload into the frontend from the start signal to the window's
    end; report the messages sent and the CPU used in the window.
    """
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.sndtimeo = TIMEOUT_MS
    push.linger = 0
    push.connect(f"tcp://{HOST}:{options.port}")
    pipe.send("ready")
    start, end = pipe.recv()
    payload = b"m" * options.size
    send = push.send
    sent = 0
    cpu: float | None = None
    while True:
        now = time.monotonic()
        if cpu is None and now >= start:
            cpu = time.process_time()
        if now >= end:
            break
        counting = cpu is not None
        try:
            for _ in range(BURST):
                send(payload)
                sent += counting
        except zmq.Again:
            pass
    push.close()
    context.term()
    used = time.process_time() - cpu if cpu is not None else 0.0
    pipe.send((sent, 0, 0, used))


def consume(options: argparse.Namespace, pipe: Any) -> None:
    """
    PULL from the backend; count the messages that arrive in the window and
    those among them that differ from the payload.
    """
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.rcvtimeo = TIMEOUT_MS
    pull.linger = 0
    pull.connect(f"tcp://{HOST}:{options.backend_port}")
    pipe.send("ready")
    start, end = pipe.recv()
    payload = b"m" * options.size
    recv = pull.recv
    received = wrong = 0
    cpu: float | None = None
    while True:
        now = time.monotonic()
        if cpu is None and now >= start:
            cpu = time.process_time()
        if now >= end:
            break
        counting = cpu is not None
        try:
            for _ in range(BURST):
                message = recv()
                if counting:
                    received += 1
                    wrong += message != payload
        except zmq.Again:
            pass
    pull.close()
    context.term()
    used = time.process_time() - cpu if cpu is not None else 0.0
    pipe.send((0, received, wrong, used))


def stream(options: argparse.Namespace) -> None:
    """
    Run the producers and consumers over one window and print the result.
    """
    context = multiprocessing.get_context("fork")
    children = []
    for role in (consume, produce) * options.connections:
        receiver, sender = context.Pipe()
        process = context.Process(target=role, args=(options, sender), daemon=True)
        process.start()
        sender.close()
        children.append((process, receiver))
    deadline = time.monotonic() + CONNECT_TIMEOUT
    for _, receiver in children:
        if not receiver.poll(max(0.0, deadline - time.monotonic())):
            for each, _ in children:
                each.kill()
            fail(f"not every client started within {CONNECT_TIMEOUT:g} s")
        receiver.recv()
    start = time.monotonic() + options.warmup
    end = start + options.duration
    for _, receiver in children:
        receiver.send((start, end))
    time.sleep(max(0.0, start - time.monotonic()))
    emit(event="measuring")
    sent = received = errors = 0
    cpu = 0.0
    for process, receiver in children:
        # A child ends within a timeout of the window's end; one that does
        # not is stuck.
        if not receiver.poll(max(1.0, end - time.monotonic() + 10)):
            process.kill()
            errors += 1
            continue
        s, r, e, c = receiver.recv()
        sent, received, errors, cpu = sent + s, received + r, errors + e, cpu + c
        process.join(5)
    result(
        received,
        received * options.size,
        options.duration,
        [],
        errors,
        cpu,
        connections=options.connections,
        sent=sent,
    )


def main() -> None:
    parser = arguments("ZeroMQ streamer throughput: PUSH in, PULL out")
    parser.add_argument("--backend-port", type=int, required=True)
    stream(parser.parse_args())


if __name__ == "__main__":
    main()
