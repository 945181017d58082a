"""
The smarthost relay of np-smtp: how the relay queue
(L{netplugins.mail.smtp.queue}) hands authenticated users' mail for foreign
domains to one upstream server, with Twisted's ESMTP client (STARTTLS when
offered, the certificate checked).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from twisted.internet.defer import Deferred

#: Sends a message on: C{relay(sender, recipients, message) -> Deferred}, which
#: fires with Twisted's C{(numOk, [(address, code, reply), ...])} or fails
#: (C{SMTPDeliveryError} carries the replies); cancelling it drops the
#: connection.
Relay = Callable[[str, list[str], bytes], Deferred[Any]]

#: Seconds to connect, and to wait for each reply of the smarthost.
RELAY_TIMEOUT = 300.0


def smarthostRelay(
    smarthost: str,
    hostname: str = "localhost",
    reactor: Any = None,
    *,
    caFile: str | None = None,
    timeout: float = RELAY_TIMEOUT,
) -> Relay:
    """
    A relay that hands messages to C{smarthost} (C{host} or C{host:port},
    port 25 by default) with Twisted's ESMTP client: STARTTLS when offered,
    its certificate checked against C{caFile} (else the system's CAs), read
    once, at the first message.

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
        context = tssl.optionsForClientTLS(host, trustRoot=_trust(caFile))
        result: Deferred[Any] = Deferred()
        factory = ESMTPSenderFactory(
            None,
            None,
            sender,
            recipients,
            # Twisted's client turns LF into CRLF itself.
            BytesIO(message.replace(b"\r\n", b"\n")),
            result,
            retries=0,
            timeout=timeout,
            contextFactory=context,
            requireAuthentication=False,
            requireTransportSecurity=False,
            hostname=host,
        )
        factory.protocol = _relaySender()
        factory.domain = hostname.encode("ascii", "replace")
        connector = reactor.connectTCP(host, int(port), factory, timeout=timeout)

        def cancel(d: Deferred[Any]) -> None:
            # The factory must not report the lost connection to a Deferred
            # already cancelled.
            factory.sendFinished = True
            connector.disconnect()

        done: Deferred[Any] = Deferred(cancel)
        result.addBoth(lambda outcome: None if done.called else done.callback(outcome))
        return done

    return relay


@cache
def _trust(caFile: str | None) -> Any:
    """
    The certificate of C{caFile} (C{None}: the system's CAs).
    """
    if caFile is None:
        return None
    from twisted.internet import ssl as tssl

    with open(caFile, "rb") as f:
        return tssl.Certificate.loadPEM(f.read())


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
