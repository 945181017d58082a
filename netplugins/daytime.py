"""
Daytime: the current time, once per connection (TCP: send, then close) or per
datagram (UDP: any datagram, even an empty one, gets one datagram back).

Formats:
  - C{ctime}: RFC 867 daytime, C{time.ctime()}'s layout in UTC plus CRLF,
    e.g. C{b"Mon Jan  1 00:00:00 2024\\r\\n"};
  - C{rfc3339}: C{b"2024-01-01T00:00:00Z\\r\\n"};
  - C{rfc868}: RFC 868 time, 4 bytes: seconds since 1900-01-01 00:00 UTC,
    big-endian, wrapping modulo 2**32 as the RFC's 32-bit field must.

A reply is at most 26 bytes whatever the request, so the UDP side amplifies
little; rate limits and allow/deny for it come from the shared layer.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import (
    DatagramProtocol,
    Factory,
    Protocol,
    connectionDone,
)
from twisted.python.failure import Failure

from netplugins.session import CLOSE_GRACE, cancelCall, closeWithin

FORMATS = ("ctime", "rfc3339", "rfc868")

# Seconds from 1900-01-01 (RFC 868's epoch) to 1970-01-01 (POSIX's).
RFC868_OFFSET = 2208988800
_RFC868 = struct.Struct("!I")


def timeString(format: str, seconds: float) -> bytes:
    """
    Render C{seconds} since the POSIX epoch in C{format}.

    @param format: one of L{FORMATS}.
    @raise ValueError: for an unknown format.
    """
    if format == "rfc868":
        return _RFC868.pack((int(seconds) + RFC868_OFFSET) % 2**32)
    utc = time.gmtime(seconds)
    if format == "ctime":
        return time.asctime(utc).encode("ascii") + b"\r\n"
    if format == "rfc3339":
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", utc).encode("ascii") + b"\r\n"
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")


def _checkFormat(format: str) -> str:
    timeString(format, 0)
    return format


class Daytime(Protocol):
    """
    Send the time and close; a connection still open C{factory.closeGrace}
    seconds later is aborted (a TLS close waits for the peer's close_notify,
    which a client that does not read never sends).

    @ivar now: makes the reply.
    """

    factory: DaytimeFactory
    _closing: IDelayedCall | None = None

    def __init__(self, now: Callable[[], bytes]):
        self.now = now

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.now())
        self._closing = closeWithin(
            self.transport, self.factory.closeGrace, self.factory.reactor
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        cancelCall(self._closing)


class DaytimeFactory(Factory):
    """
    Builds L{Daytime} protocols.

    @ivar format: one of L{FORMATS}.
    @ivar seconds: the clock, seconds since the POSIX epoch.
    @ivar closeGrace: seconds a connection gets to close before it is aborted.
    @ivar reactor: times that grace (the global reactor when C{None}).
    """

    closeGrace = CLOSE_GRACE
    reactor: Any = None

    def __init__(self, format: str = "ctime", seconds: Callable[[], float] = time.time):
        self.format = _checkFormat(format)
        self.seconds = seconds

    def now(self) -> bytes:
        """
        The current time in this factory's format.
        """
        return timeString(self.format, self.seconds())

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        protocol = Daytime(self.now)
        protocol.factory = self
        return protocol


class DaytimeDatagram(DatagramProtocol):
    """
    Answer every datagram, whatever it holds, with one datagram of the time.
    """

    def __init__(self, format: str = "ctime", seconds: Callable[[], float] = time.time):
        self.format = _checkFormat(format)
        self.seconds = seconds

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        assert self.transport is not None
        self.transport.write(timeString(self.format, self.seconds()), addr)
