"""
Helpers shared by the test modules.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport


class WatermarkTransport(StringTransport):
    """
    A L{StringTransport} that pauses its streaming producer, as a real one
    does, once more than C{watermark} bytes wait unsent (never, for C{None}),
    and resumes it when the test calls L{drain}.

    @ivar TLS: claims TLS once C{startTLS} was called.
    @ivar aborted: whether C{abortConnection} was called.
    """

    TLS = False
    tlsStarted: Any = None

    def __init__(self, watermark: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.watermark = watermark
        self.aborted = False
        self.producerPaused = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self._check()

    def writeSequence(self, data: Any) -> None:
        super().writeSequence(data)
        self._check()

    def _check(self) -> None:
        if (
            self.producer is not None
            and self.watermark is not None
            and not self.producerPaused
            and len(self.io.getvalue()) > self.watermark
        ):
            self.producerPaused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """
        The peer read everything: return it and resume the producer.
        """
        data = self.value()
        self.clear()
        if self.producerPaused and self.producer is not None:
            self.producerPaused = False
            self.producer.resumeProducing()
        return data

    def startTLS(self, contextFactory: Any) -> None:
        self.tlsStarted = contextFactory
        self.TLS = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()
