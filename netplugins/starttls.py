"""
Starting TLS in the middle of a line-based protocol without the command
injection of CVE-2011-0411 (SMTP C{STARTTLS}, IMAP C{STARTTLS}, POP3 C{STLS},
FTP C{AUTH TLS}).

A client that sends C{STARTTLS\\r\\nRCPT TO:<x>\\r\\n} in one write has the
second command sitting in the server's line buffer, in the clear, when the
server switches to TLS; a server that goes on to execute it lets a
man-in-the-middle add commands to the protected session.  Twisted's C{ESMTP}
and C{IMAP4Server} do.  The rule (Postfix's, and RFC 3207 section 4.2's
"MUST discard any knowledge obtained from the client"): everything buffered
after the line that started TLS is thrown away, unanswered.

For a protocol built on L{twisted.protocols.basic.LineReceiver} (not
C{LineOnlyReceiver}: its loop runs over a copy of the lines it split, so
clearing its buffer does not stop it), call L{startTLSDiscarding} from the
handler of the STARTTLS line::

    def do_STARTTLS(self):
        startTLSDiscarding(
            self, self.serverTLS, b"220 2.0.0 Ready to start TLS\\r\\n"
        )
        self.resetSession()   # forget EHLO, AUTH, capabilities...

It writes the go-ahead reply, empties the line buffer (which makes
C{LineReceiver.dataReceived} stop before the next buffered line), starts TLS
and logs what was discarded, naming the peer.  The handshake has the same
deadline as on an implicit-TLS listener (the context factory's
C{handshakeTimeout}, 10 s by default): a client that asks for TLS and then
stalls is aborted then, not kept until its session's own deadline.  Bytes
that arrive later in the clear go to the TLS layer, where they fail the
handshake.  Protocols with their own buffer pass C{clearBuffer}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger

from netplugins.session import Discipline
from netplugins.tls.handshake import handshakeDone
from netplugins.tls.server import DEFAULT_HANDSHAKE_TIMEOUT

log = Logger(namespace="netplugins.starttls")


def isSecure(transport: Any) -> bool:
    """
    Whether C{transport} already speaks TLS (an implicit-TLS listener, or
    after STARTTLS).
    """
    return ISSLTransport.providedBy(transport) or bool(getattr(transport, "TLS", False))


def startTLSDiscarding(
    protocol: Any,
    contextFactory: Any,
    reply: bytes = b"",
    *,
    clearBuffer: Callable[[], bytes] | None = None,
    discipline: Discipline | None = None,
) -> bytes:
    """
    Answer C{reply}, throw away everything the client sent after the current
    line, and start TLS on C{protocol.transport}.

    @param protocol: a L{LineReceiver} (its C{clearLineBuffer} is used) or
        any protocol with a C{transport}, given C{clearBuffer}.
    @param contextFactory: the server TLS context factory (for example
        C{common.serverTLS(reactor)}).
    @param reply: the go-ahead, written in the clear before TLS starts.
    @param clearBuffer: empties the protocol's unprocessed input and returns
        it; C{protocol.clearLineBuffer} by default.
    @param discipline: times the handshake (C{protocol.discipline} by
        default); without one the handshake has no deadline of its own.
    @return: the discarded bytes (for tests; they are logged by length only).
    """
    clear = clearBuffer if clearBuffer is not None else protocol.clearLineBuffer
    discarded: bytes = clear()
    transport = protocol.transport
    if discarded:
        log.warn(
            "discarded {length} bytes pipelined after the TLS command by {peer}",
            length=len(discarded),
            peer=str(transport.getPeer()),
        )
    if reply:
        transport.write(reply)
    transport.startTLS(contextFactory)
    if discipline is None:
        discipline = getattr(protocol, "discipline", None)
    if discipline is not None:
        timeout = getattr(contextFactory, "handshakeTimeout", DEFAULT_HANDSHAKE_TIMEOUT)
        discipline.callLater(timeout, _abortUnlessShaken, transport, timeout)
    return discarded


def _abortUnlessShaken(transport: Any, timeout: float) -> None:
    """
    Abort C{transport} if its TLS handshake has not finished.
    """
    if getattr(transport, "disconnected", False) or handshakeDone(transport):
        return
    log.info(
        "TLS handshake after STARTTLS from {peer} not finished in {timeout:g} s;"
        " aborting",
        peer=str(transport.getPeer()),
        timeout=timeout,
    )
    transport.abortConnection()
