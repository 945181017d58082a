"""
Hostile clients against C{twistd np-ftp} (the abuse suite's machinery,
L{tests.abuse}, and its shared checks, L{tests.test_abuse}): memory stays
bounded and deadlines close the socket.
"""

from __future__ import annotations

import os
from typing import ClassVar

from tests import test_abuse
from tests.abuse import MiB


class FTPTests(test_abuse.MailTestCase):
    """
    C{twistd np-ftp}.
    """

    tapname = "np-ftp"
    greeting: ClassVar[bytes] = rb"^220 "
    # HELP's answer is many times its size: a flood backs the output up fast.
    floodsFast: ClassVar[bytes] = b"HELP\r\n"
    startTLS: ClassVar[list[tuple[bytes, bytes]]] = [(b"AUTH TLS\r\n", rb"^234 ")]

    def options(self) -> list[str]:
        homes = os.path.abspath(self.mktemp())
        os.makedirs(homes)
        return [*super().options(), "--root", os.path.join(homes, "{user}")]

    def test_neverReads(self) -> None:
        """Pipelined HELP and FEAT before login, never read: bounded."""
        self.neverReads(b"HELP\r\n", b"FEAT\r\n")

    def test_stalledTLS(self) -> None:
        """Implicit FTPS and AUTH TLS handshakes, silent or half-sent, are cut off."""
        self.stalledMailTLS()

    def test_longLineBeforeLogin(self) -> None:
        """A 64 MiB command line before login closes the connection, bounded."""
        port, server = self.servePlain()
        result, _ = self.assertOversizeBounded(
            port,
            server,
            b"USER ",
            b"x" * 65536,
            64 * MiB,
            warm=b"NOOP\r\n",
            greeting=self.greeting,
        )
        self.assertClosedByServer(result)

    def test_deadlines(self) -> None:
        """Short deadlines close idle and flooding sessions, socket and all."""
        self.deadlines(self.floodsFast)
