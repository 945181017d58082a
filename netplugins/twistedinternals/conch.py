"""
The private names of Twisted conch that np-ssh (L{netplugins.ssh}) relies on,
each pinned by C{tests/test_twistedinternals.py}; part of
L{netplugins.twistedinternals}, apart because C{twisted.conch.ssh.userauth}
installs the default reactor when imported, which only np-ssh may do (a
C{twistd --reactor ...} run of any other service must still choose its own).
"""

from __future__ import annotations

from typing import Any

from twisted.conch.ssh.filetransfer import FileTransferServer
from twisted.conch.ssh.transport import SSHServerTransport
from twisted.conch.ssh.userauth import SSHUserAuthServer
from twisted.python.failure import Failure

# SSH: twisted.conch.ssh._kex, transport, userauth and filetransfer.


def addFixedGroupKeyExchange(
    name: bytes, generator: int, prime: int, hashProcessor: Any
) -> None:
    """
    Teach conch a fixed-group Diffie-Hellman key exchange (RFC 8268's
    diffie-hellman-group16-sha512 and group18-sha512, which conch lacks):
    an entry in C{twisted.conch.ssh._kex._kexAlgorithms} providing
    C{_kex._IFixedGroupKexAlgorithm} (C{generator}, C{prime},
    C{hashProcessor}, C{preference}).  Conch's server transport then runs
    it as it runs group14 (C{_kex.isFixedGroup}, C{getDHGeneratorAndPrime},
    C{getHashProcessor}); a transport offers it only if it lists the name in
    its C{supportedKeyExchanges}.  If the registry goes, np-ssh loses these
    two key exchanges (clients still have curve25519 and ML-KEM).
    """
    from twisted.conch.ssh import _kex

    group: Any = _FixedGroup()
    group.generator = generator
    group.prime = prime
    group.hashProcessor = hashProcessor
    _kex._kexAlgorithms.setdefault(name, group)


class _FixedGroup:
    preference = 100
    generator: int
    prime: int
    hashProcessor: Any


def _declareFixedGroup() -> None:
    from twisted.conch.ssh import _kex
    from zope.interface import classImplements

    classImplements(_FixedGroup, _kex._IFixedGroupKexAlgorithm)


_declareFixedGroup()


class HookedSSHServerTransport(SSHServerTransport):
    """
    Conch's server transport with public names for the key exchange state
    np-ssh's own packet layer needs (C{netplugins.ssh.transport} replaces
    C{sendPacket} and must hold messages during a key exchange as conch's
    does): C{SSHTransportBase._keyExchangeState} and
    C{_KEY_EXCHANGE_NONE}, C{_allowedKeyExchangeMessageType},
    C{_blockedByKeyExchange} (flushed by C{_newKeys}).  If they change,
    np-ssh could send a message in the middle of a key exchange (a protocol
    error the client disconnects on) or never switch to the new keys.
    """

    def keyExchangeHolds(self, messageType: int) -> bool:
        """
        Whether a message of C{messageType} must wait for the key exchange
        in progress.
        """
        return bool(
            self._keyExchangeState != self._KEY_EXCHANGE_NONE
            and not self._allowedKeyExchangeMessageType(messageType)
        )

    def holdForKeyExchange(self, messageType: int, payload: bytes) -> None:
        """
        Queue a message until the key exchange ends; L{adoptNewKeys} sends it.
        """
        self._blockedByKeyExchange.append((messageType, payload))

    def adoptNewKeys(self) -> None:
        """
        The peer's NEWKEYS arrived: conch's end of a key exchange
        (C{_newKeys}: current algorithms, state back to none, held
        messages sent).
        """
        self._newKeys()


class HookedUserAuthServer(SSHUserAuthServer):
    """
    Conch's ssh-userauth server with public names for what np-ssh changes:
    its own login timer (C{_cancelLoginTimeout}, set by C{serviceStarted}:
    10 hours, which np-ssh replaces with the transport's login window) and
    the final errback of every attempt (C{_ebBadAuth}, which np-ssh extends
    to disconnect when the throttle says the attempts are used up).
    """

    def cancelConchLoginTimeout(self) -> None:
        """
        Cancel conch's own login timer.
        """
        call: Any = self._cancelLoginTimeout
        self._cancelLoginTimeout = None  # type: ignore[assignment]
        if call is not None and call.active():
            call.cancel()

    def _ebBadAuth(self, reason: Failure) -> None:
        self.authenticationFailed(reason)

    def authenticationFailed(self, reason: Failure) -> None:
        """
        An attempt failed: send USERAUTH_FAILURE (conch's C{_ebBadAuth}).
        Override and call up to add to it.
        """
        SSHUserAuthServer._ebBadAuth(self, reason)


class HookedFileTransferServer(FileTransferServer):
    """
    Conch's SFTP server with public names for its helpers
    (C{_sendStatus}, C{_packAttributes}, C{_parseAttributes}) and its
    error reply (C{_ebStatus}, which np-ssh extends to map more errno
    values to SFTP codes).  If they change, np-ssh's SFTP extensions and
    error replies break.
    """

    def sendStatus(self, requestId: bytes, code: int, message: bytes) -> None:
        """
        Send an SSH_FXP_STATUS reply.
        """
        self._sendStatus(requestId, code, message)

    def packAttributes(self, attrs: dict[str, Any]) -> bytes:
        """
        SFTP version 3 attributes on the wire.
        """
        return bytes(self._packAttributes(attrs))

    def parseAttributes(self, data: bytes) -> tuple[dict[str, Any], bytes]:
        """
        SFTP version 3 attributes from the wire, and what follows them.
        """
        attrs, rest = self._parseAttributes(data)
        return attrs, rest

    def _ebStatus(
        self, reason: Failure, requestId: bytes, msg: bytes = b"request failed"
    ) -> None:
        self.requestFailed(reason, requestId, msg)

    def requestFailed(self, reason: Failure, requestId: bytes, msg: bytes) -> None:
        """
        A request failed: send the status conch's C{_ebStatus} maps the
        failure to.  Override and call up to map more.
        """
        FileTransferServer._ebStatus(self, reason, requestId, msg)
