"""
The smarthost relay of np-smtp (L{netplugins.mail.smtp.server}): authenticated users'
mail for foreign domains, handed to one upstream server with Twisted's ESMTP
client (STARTTLS when offered, the certificate checked).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from twisted.internet.defer import Deferred

#: Sends a message on: C{relay(sender, recipients, message) -> Deferred}.
Relay = Callable[[str, list[str], bytes], Deferred[Any]]


def smarthostRelay(
    smarthost: str,
    hostname: str = "localhost",
    reactor: Any = None,
    *,
    caFile: str | None = None,
) -> Relay:
    """
    A relay that hands messages to C{smarthost} (C{host} or C{host:port},
    port 25 by default) with Twisted's ESMTP client: STARTTLS when offered,
    its certificate checked against C{caFile} (else the system's CAs).

    @raise ValueError: for a malformed C{smarthost}.
    """
    host, port = smarthost, "25"
    if ":" in smarthost:
        host, _, port = smarthost.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--smarthost must be HOST or HOST:PORT, not {smarthost!r}")

    def relay(sender: str, recipients: list[str], message: bytes) -> Deferred[Any]:
        from io import BytesIO

        from twisted.internet import ssl as tssl
        from twisted.mail.smtp import ESMTPSenderFactory

        nonlocal reactor
        if reactor is None:
            from twisted.internet import reactor
        trust = None
        if caFile is not None:
            with open(caFile, "rb") as f:
                trust = tssl.Certificate.loadPEM(f.read())
        context = tssl.optionsForClientTLS(host, trustRoot=trust)
        done: Deferred[Any] = Deferred()
        factory = ESMTPSenderFactory(
            None,
            None,
            sender,
            recipients,
            # Twisted's client turns LF into CRLF itself.
            BytesIO(message.replace(b"\r\n", b"\n")),
            done,
            retries=0,
            contextFactory=context,
            requireAuthentication=False,
            requireTransportSecurity=False,
            hostname=host,
        )
        factory.protocol = _relaySender()
        factory.domain = hostname.encode("ascii", "replace")
        reactor.connectTCP(host, int(port), factory)
        return done

    return relay


@cache
def _relaySender() -> Any:
    # twisted.mail.smtp imports the global reactor: import it only when used.
    from twisted.mail.smtp import ESMTPSender

    class RelaySender(ESMTPSender):  # type: ignore[misc]
        """
        Twisted's sender stuffs dots only after a CRLF inside one chunk: a line
        starting with a dot at a chunk boundary (or at the very start) would go
        out unstuffed, and a lone C{.} would end the message early.
        """

        _lastByte = b"\n"

        def transformChunk(self, chunk: bytes) -> bytes:
            if self._lastByte == b"\n" and chunk.startswith(b"."):
                chunk = b"." + chunk
            self._lastByte = chunk[-1:] or self._lastByte
            return bytes(super().transformChunk(chunk))

    return RelaySender
