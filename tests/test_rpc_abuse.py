"""
C{twistd np-rpc} against hostile clients (L{tests.abuse}, as in
L{tests.test_abuse}): answers never read, stalled TLS handshakes, a 100 MiB
body, deep nesting, and request heads and bodies trickled past their
deadlines.
"""

from __future__ import annotations

import json
import time
import xmlrpc.client

from tests.abuse import RSSWatch, connect, secondsUntilEOF
from tests.test_abuse import (
    DEADLINE,
    OVERSIZE_GROWTH,
    HTTPTestCase,
    _post,
    _trickled,
)

#: The answer L{big} gives, and so what a never-reading client is sent.
BIG = "x" * (1024 * 1024)


def big() -> str:
    """
    One mebibyte of answer.
    """
    return BIG


def ping() -> bool:
    """
    A small answer.
    """
    return True


#: The registry the abuse tests serve (C{--functions}).
abuseFunctions = {"big": big, "ping": ping}


def _answer(port: int, request: bytes) -> bytes:
    """
    Send C{request} (asking the server to close after it) on a fresh
    connection; return the response body, read until the server closes or 10
    seconds pass.
    """
    sock = connect(port, receiveBuffer=None)
    try:
        sock.sendall(request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
        _, answer = secondsUntilEOF(sock, time.monotonic(), 10)
    finally:
        sock.close()
    return answer.partition(b"\r\n\r\n")[2]


class RPCTests(HTTPTestCase):
    """
    C{twistd np-rpc}.
    """

    tapname = "np-rpc"
    deadlineOptions = (
        "--header-timeout",
        f"{DEADLINE:g}",
        "--body-timeout",
        f"{DEADLINE:g}",
        "--keepalive-timeout",
        f"{DEADLINE:g}",
    )

    def options(self) -> list[str]:
        return ["--functions", "tests.test_rpc_abuse:abuseFunctions"]

    def test_neverReads(self) -> None:
        """Pipelined XML-RPC calls answered with 1 MiB never read: bounded."""
        port, tlsPort, server = self.serveBoth()
        call = _post("/RPC2", xmlrpc.client.dumps((), "big").encode())
        self.assertNeverReadsBounded(server, port, tlsPort, [call])

    def test_stalledTLS(self) -> None:
        """A TLS handshake with no bytes, or half a ClientHello, is cut off."""
        self.checkStalledTLS()

    def test_hugeBody(self) -> None:
        """100 MiB posted over --max-body-size: 413, not read, memory bounded."""
        port, server = self.servePlain()
        self.assertHugeBodyRefused(port, server, "/RPC2", [413])

    def test_hugeBodyWithoutCredentials(self) -> None:
        """100 MiB posted without credentials: 401 or 413, not read, bounded."""
        port, server = self.serveWithUsers()
        self.assertHugeBodyRefused(port, server, "/jsonrpc", [401, 413])

    def test_deepNesting(self) -> None:
        """20 000-deep XML, 10**5 JSON brackets: faults, memory bounded, no trace."""
        port, server = self.servePlain()
        xml = (
            b"<methodCall><methodName>big</methodName><params><param>"
            + b"<value><array><data>" * 20000
            + b"</data></array></value>" * 20000
            + b"</param></params></methodCall>"
        )
        jsonBody = b"[" * 10**5
        call = _post("/RPC2", xmlrpc.client.dumps((), "big").encode())
        _answer(port, call)
        watch = RSSWatch(server, ceiling=4 * OVERSIZE_GROWTH)
        answers = [_answer(port, _post("/RPC2", xml))]
        answers.append(_answer(port, _post("/jsonrpc", jsonBody)))
        self.assertGrowth(watch, OVERSIZE_GROWTH, "deep nesting")
        fault = xmlrpc.client.Fault(0, "")
        try:
            xmlrpc.client.loads(answers[0])
        except xmlrpc.client.Fault as f:
            fault = f
        self.assertEqual(
            [
                fault.faultCode,
                json.loads(answers[1])["error"]["code"],
                b"Traceback" in server.logTail(200).encode(),
                xmlrpc.client.loads(_answer(port, call))[0][0] == BIG,
            ],
            [-32600, -32700, False, True],
        )

    def test_deadlines(self) -> None:
        """Header, body, keep-alive and idle deadlines close the socket itself."""
        port, tlsPort = self.serveShortDeadlines()
        call = _post("/RPC2", xmlrpc.client.dumps((), "big").encode())
        ping = _post("/RPC2", xmlrpc.client.dumps((), "ping").encode())
        self.assertDeadlinesClose(
            port, tlsPort, call, trickled=_trickled("/RPC2"), request=ping
        )
