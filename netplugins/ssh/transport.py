"""
np-ssh's SSH transport: Twisted conch's server transport with only modern
algorithms, its packet layer replaced (L{netplugins.ssh.packets}), strict
key exchange against the Terrapin attack, a login window counted from the
connection's first byte, and the session discipline (no reading while the
output is backed up).

Strict key exchange (OpenSSH's PROTOCOL, kex-strict-s-v00@openssh.com):
when the client offers kex-strict-c-v00@openssh.com in its first KEXINIT,
that KEXINIT must be its first packet, nothing but key exchange messages
may arrive until its NEWKEYS, and each direction's sequence number starts
again at 0 after its NEWKEYS, so a man in the middle cannot delete or
insert packets during the handshake.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.ssh import transport
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.transport import SSHCiphers, SSHTransportBase
from twisted.logger import Logger

from netplugins.addresses import describe
from netplugins.session import Discipline, cancelCall
from netplugins.ssh.packets import (
    AEAD,
    CIPHERS,
    MACS,
    PacketCodec,
    Plain,
    makeCodec,
    padded,
    validLength,
)
from netplugins.twistedinternals.conch import HookedSSHServerTransport

STRICT_SERVER = b"kex-strict-s-v00@openssh.com"
STRICT_CLIENT = b"kex-strict-c-v00@openssh.com"

#: Key exchanges in order of preference: ML-KEM only when the installed
#: cryptography has it (conch's own list says), the DH groups always (np-ssh
#: adds them to conch).
KEY_EXCHANGES = [
    name
    for name in [
        b"mlkem768x25519-sha256",
        b"curve25519-sha256",
        b"curve25519-sha256@libssh.org",
        b"diffie-hellman-group18-sha512",
        b"diffie-hellman-group16-sha512",
    ]
    if name in SSHTransportBase.supportedKeyExchanges or name.startswith(b"diffie-")
]

#: Host key signature algorithms, given keys of their types.
HOST_KEY_ALGORITHMS = [b"ssh-ed25519", b"rsa-sha2-512", b"rsa-sha2-256"]

#: The key exchange methods' own message numbers (RFC 4250 section 4.1.2).
KEX_MESSAGES = range(30, 50)

#: Messages allowed during a strict initial key exchange.
_STRICT_ALLOWED = frozenset(
    [
        transport.MSG_KEXINIT,
        transport.MSG_NEWKEYS,
        transport.MSG_DISCONNECT,
        *list(KEX_MESSAGES),
    ]
)


class Keys(SSHCiphers):
    """
    Conch's record of negotiated algorithms, making L{PacketCodec}s from the
    derived keys instead of conch's ciphers.
    """

    def setKeys(
        self,
        outIV: bytes,
        outKey: bytes,
        inIV: bytes,
        inKey: bytes,
        outInteg: bytes,
        inInteg: bytes,
    ) -> None:
        self.outCodec = makeCodec(
            self.outCipType, self.outMACType, outIV, outKey, outInteg
        )
        self.inCodec = makeCodec(self.inCipType, self.inMACType, inIV, inKey, inInteg)
        self.encBlockSize = self.outCodec.blockSize
        self.decBlockSize = self.inCodec.blockSize
        self.verifyDigestSize = self.inCodec.macSize


class ModernServerTransport(HookedSSHServerTransport):
    """
    The server side of an SSH connection with the algorithms above only.

    @ivar strict: whether the client agreed to strict key exchange.
    """

    log = Logger()
    transport: Any
    factory: Any
    nextEncryptions: Any
    supportedCiphers = list(CIPHERS)
    supportedMACs = list(MACS)
    supportedKeyExchanges = KEY_EXCHANGES
    supportedPublicKeys = HOST_KEY_ALGORITHMS
    supportedCompressions = [b"none"]

    strict = False
    _initialKex = True
    _broken = False
    _pendingLength: int | None = None
    _loginCall: Any = None
    discipline: Discipline | None = None

    def connectionMade(self) -> None:
        factory: Any = self.factory
        self._outCodec: PacketCodec = Plain()
        self._inCodec: PacketCodec = Plain()
        clock = factory.reactor
        self.discipline = Discipline(
            self.transport,
            clock,
            pause=self.transport.pauseProducing,
            resume=self.transport.resumeProducing,
            grace=factory.closeGrace,
        )
        self._loginCall = clock.callLater(factory.loginTimeout, self._loginExpired)
        # Counted here, not in the ssh-userauth service: a client may ask
        # for that service again (paramiko does before each method).
        self.loginAttempts = factory.throttle.connection()
        # Strict key exchange is offered in the first KEXINIT only.
        self.supportedKeyExchanges = [*self.supportedKeyExchanges, STRICT_SERVER]
        self.transport.write(self.ourVersionString + b"\r\n")
        self.currentEncryptions = Keys(b"none", b"none", b"none", b"none")
        self.sendKexInit()

    def connectionLost(self, reason: Any = None) -> None:
        cancelCall(self._loginCall)
        if self.discipline is not None:
            self.discipline.lost()
        super().connectionLost(reason)

    def _loginExpired(self) -> None:
        self._loginCall = None
        self.log.info(
            "closing SSH connection from {peer}: not logged in within {seconds:g} s",
            peer=describe(self.transport.getPeer()),
            seconds=self.factory.loginTimeout,
        )
        self.sendDisconnect(
            transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, b"login window over"
        )

    def loggedIn(self) -> None:
        """
        The user logged in: the login window no longer applies.
        """
        cancelCall(self._loginCall)
        self._loginCall = None

    # Packets

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        if self._broken:
            return
        if self.keyExchangeHolds(messageType):
            self.holdForKeyExchange(messageType, payload)
            return
        codec = self._outCodec
        body = padded(bytes((messageType,)) + payload, codec)
        self.transport.write(codec.seal(self.outgoingPacketSequence, body))
        self.outgoingPacketSequence = (self.outgoingPacketSequence + 1) & 0xFFFFFFFF
        if messageType == transport.MSG_NEWKEYS:
            self._outCodec = self.nextEncryptions.outCodec
            if self.strict:
                self.outgoingPacketSequence = 0

    def getPacket(self) -> bytes | None:
        if self._broken:
            return None
        codec = self._inCodec
        sequence = self.incomingPacketSequence
        if self._pendingLength is None:
            if len(self.buf) < 4:
                return None
            length = codec.length(sequence, self.buf[:4])
            if not validLength(length, codec):
                self._fail(transport.DISCONNECT_PROTOCOL_ERROR, b"bad packet length")
                return None
            self._pendingLength = length
        total = 4 + self._pendingLength + codec.macSize
        if len(self.buf) < total:
            return None
        packet, self.buf = self.buf[:total], self.buf[total:]
        self._pendingLength = None
        body = codec.open(sequence, packet)
        if body is None:
            self._fail(transport.DISCONNECT_MAC_ERROR, b"bad MAC")
            return None
        padding = body[0]
        if padding < 4 or padding + 2 > len(body):
            self._fail(transport.DISCONNECT_PROTOCOL_ERROR, b"bad padding")
            return None
        self.incomingPacketSequence = (sequence + 1) & 0xFFFFFFFF
        return body[1 : len(body) - padding]

    def _fail(self, reason: int, description: bytes) -> None:
        self.log.info(
            "closing SSH connection from {peer}: {why}",
            peer=describe(self.transport.getPeer()),
            why=description.decode("ascii", "replace"),
        )
        self.sendDisconnect(reason, description)

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        if self._broken:
            return
        super().sendDisconnect(reason, desc)
        self._broken = True
        self.buf = b""
        if self.discipline is not None:
            self.discipline.close("SSH disconnect")

    def dataReceived(self, data: bytes) -> None:
        if not self._broken:
            super().dataReceived(data)

    def dispatchMessage(self, messageNum: int, payload: bytes) -> None:
        if self.strict and self._initialKex and messageNum not in _STRICT_ALLOWED:
            self._fail(
                transport.DISCONNECT_PROTOCOL_ERROR,
                b"unexpected message during strict key exchange",
            )
            return
        try:
            super().dispatchMessage(messageNum, payload)
        except Exception as e:
            # Conch parses messages as it goes: a malformed one raises
            # (struct.error, IndexError, a key exchange's ValueError).  It
            # ends this connection with a log line, not the reactor's
            # traceback.
            self.log.info(
                "closing SSH connection from {peer}: malformed message {number} "
                "({error})",
                peer=describe(self.transport.getPeer()),
                number=messageNum,
                error=f"{type(e).__name__}: {e}"[:200],
            )
            self.sendDisconnect(transport.DISCONNECT_PROTOCOL_ERROR, b"bad message")

    # Key exchange

    def ssh_KEXINIT(self, packet: bytes) -> None:
        if self._initialKex and self.sessionID is None:
            try:
                offered = getNS(packet[16:])[0].split(b",")
            except Exception:
                self._fail(transport.DISCONNECT_PROTOCOL_ERROR, b"bad KEXINIT")
                return
            if STRICT_CLIENT in offered:
                self.strict = True
                if self.incomingPacketSequence != 1:
                    self._fail(
                        transport.DISCONNECT_PROTOCOL_ERROR,
                        b"strict key exchange: KEXINIT was not the first packet",
                    )
                    return
        super().ssh_KEXINIT(packet)
        self.supportedKeyExchanges = KEY_EXCHANGES
        if self._broken:
            return
        if self.kexAlg not in KEY_EXCHANGES:
            self._fail(
                transport.DISCONNECT_KEY_EXCHANGE_FAILED,
                b"couldn't match all kex parts",
            )
            return
        negotiated = self.nextEncryptions
        outMAC, inMAC = negotiated.outMACType, negotiated.inMACType
        # AEAD ciphers authenticate by themselves: the MAC names are unused.
        self.nextEncryptions = Keys(
            negotiated.outCipType,
            negotiated.inCipType,
            outMAC if negotiated.outCipType not in AEAD else b"aead",
            inMAC if negotiated.inCipType not in AEAD else b"aead",
        )

    def ssh_NEWKEYS(self, packet: bytes) -> None:
        if packet != b"":
            self._fail(transport.DISCONNECT_PROTOCOL_ERROR, b"NEWKEYS takes no data")
            return
        self._inCodec = self.nextEncryptions.inCodec
        if self.strict:
            self.incomingPacketSequence = 0
        self._initialKex = False
        self.adoptNewKeys()

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        # Conch logs every peer's DISCONNECT as an error, a client that
        # simply says goodbye included.
        self.log.info(
            "{peer} disconnected: {description} (code {code})",
            peer=describe(self.transport.getPeer()),
            description=description.decode("utf-8", "replace")[:200],
            code=reasonCode,
        )

    def setService(self, service: Any) -> None:
        super().setService(service)
        if service.name == b"ssh-connection":
            self.loggedIn()
