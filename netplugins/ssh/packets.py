"""
SSH binary packets sealed and opened with the modern algorithms only: the
AEAD ciphers chacha20-poly1305@openssh.com and aes128/256-gcm@openssh.com
(RFC 5647 as OpenSSH does it), and AES-CTR with the encrypt-then-MAC
HMACs hmac-sha2-256/512-etm@openssh.com.  Conch's own packet layer knows
only MAC-then-encrypt, which leaks the length and invites padding oracles;
here every mode leaves the length as associated data (or encrypts it with
its own key, for ChaCha20) and authenticates the ciphertext before anything
is decrypted.

A L{PacketCodec} is one direction of one set of keys: L{seal} turns a
packet body (padding length, payload, padding) into wire bytes, L{length}
reads the body's length from the first four wire bytes, L{open}
authenticates and decrypts a whole wire packet.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable
from hashlib import sha256, sha512
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.poly1305 import Poly1305

#: The largest packet body accepted (OpenSSH's PACKET_MAX_SIZE).
MAX_PACKET = 256 * 1024

CHACHA20 = b"chacha20-poly1305@openssh.com"
AES256_GCM = b"aes256-gcm@openssh.com"
AES128_GCM = b"aes128-gcm@openssh.com"

#: Cipher names in order of preference, with their key sizes.
CIPHERS: dict[bytes, int] = {
    CHACHA20: 64,
    AES256_GCM: 32,
    AES128_GCM: 16,
    b"aes256-ctr": 32,
    b"aes192-ctr": 24,
    b"aes128-ctr": 16,
}

#: The AEAD ciphers, which ignore the negotiated MAC.
AEAD = frozenset([CHACHA20, AES256_GCM, AES128_GCM])

#: MAC names in order of preference, with their hashes.
MACS: dict[bytes, Callable[..., Any]] = {
    b"hmac-sha2-512-etm@openssh.com": sha512,
    b"hmac-sha2-256-etm@openssh.com": sha256,
}

_SEQUENCE = 0xFFFFFFFF


class PacketCodec(Protocol):
    """
    One direction of an SSH connection's packet protection.

    @ivar blockSize: the body's length is a multiple of this.
    @ivar macSize: bytes of MAC or tag after the packet.
    @ivar lengthInBlocks: whether the 4-byte length counts in the block
        alignment (only without encryption).
    """

    blockSize: int
    macSize: int
    lengthInBlocks: bool

    def seal(self, sequence: int, body: bytes) -> bytes: ...

    def length(self, sequence: int, head: bytes) -> int: ...

    def open(self, sequence: int, packet: bytes) -> bytes | None: ...


def padded(payload: bytes, codec: PacketCodec) -> bytes:
    """
    C{payload} as a packet body for C{codec}: padding length, payload and
    at least four bytes of random padding, aligned to its block size.
    """
    size = 1 + len(payload) + (4 if codec.lengthInBlocks else 0)
    padding = codec.blockSize - size % codec.blockSize
    if padding < 4:
        padding += codec.blockSize
    return bytes((padding,)) + payload + os.urandom(padding)


def validLength(length: int, codec: PacketCodec) -> bool:
    """
    Whether a body of C{length} bytes may follow: bounded and aligned.
    """
    aligned = length + (4 if codec.lengthInBlocks else 0)
    return 8 <= length <= MAX_PACKET and aligned % codec.blockSize == 0


class Plain:
    """
    The packets before the first key exchange ends: no encryption, no MAC.
    """

    blockSize = 8
    macSize = 0
    lengthInBlocks = True

    def seal(self, sequence: int, body: bytes) -> bytes:
        return struct.pack(">L", len(body)) + body

    def length(self, sequence: int, head: bytes) -> int:
        return int(struct.unpack(">L", head)[0])

    def open(self, sequence: int, packet: bytes) -> bytes | None:
        return packet[4:]


class CounterEtM:
    """
    AES-CTR with an encrypt-then-MAC HMAC over the sequence number, the
    clear length and the ciphertext.
    """

    blockSize = 16
    lengthInBlocks = False

    def __init__(
        self, hashType: Callable[..., Any], key: bytes, iv: bytes, macKey: bytes
    ):
        self._cipher = Cipher(algorithms.AES(key), modes.CTR(iv[:16]))
        self._stream: Any = None
        self._hash = hashType
        self.macSize = hashType().digest_size
        self._macKey = macKey[: self.macSize]

    def _update(self, data: bytes) -> bytes:
        if self._stream is None:
            # CTR encrypts and decrypts alike; each codec is one direction.
            self._stream = self._cipher.encryptor()
        return bytes(self._stream.update(data))

    def _mac(self, sequence: int, data: bytes) -> bytes:
        message = struct.pack(">L", sequence & _SEQUENCE) + data
        return hmac.digest(self._macKey, message, self._hash)

    def seal(self, sequence: int, body: bytes) -> bytes:
        packet = struct.pack(">L", len(body)) + self._update(body)
        return packet + self._mac(sequence, packet)

    def length(self, sequence: int, head: bytes) -> int:
        return int(struct.unpack(">L", head)[0])

    def open(self, sequence: int, packet: bytes) -> bytes | None:
        data, mac = packet[: -self.macSize], packet[-self.macSize :]
        if not hmac.compare_digest(mac, self._mac(sequence, data)):
            return None
        return self._update(data[4:])


class GCM:
    """
    AES-GCM as OpenSSH's aes128/256-gcm@openssh.com: the clear length is the
    associated data, the 12-byte nonce's last 8 bytes count packets.
    """

    blockSize = 16
    macSize = 16
    lengthInBlocks = False

    def __init__(self, key: bytes, iv: bytes):
        self._aead = AESGCM(key)
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:12], "big")

    def _nonce(self) -> bytes:
        nonce = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & 0xFFFFFFFFFFFFFFFF
        return nonce

    def seal(self, sequence: int, body: bytes) -> bytes:
        head = struct.pack(">L", len(body))
        return head + self._aead.encrypt(self._nonce(), body, head)

    def length(self, sequence: int, head: bytes) -> int:
        return int(struct.unpack(">L", head)[0])

    def open(self, sequence: int, packet: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(self._nonce(), packet[4:], packet[:4])
        except InvalidTag:
            return None


def _chacha(key: bytes, counter: int, sequence: int, data: bytes) -> bytes:
    # OpenSSH's ChaCha20 has a 64-bit block counter and a 64-bit nonce (the
    # sequence number); cryptography's takes them as one 16-byte value with
    # the counter first, little-endian.
    nonce = counter.to_bytes(8, "little") + (sequence & _SEQUENCE).to_bytes(8, "big")
    return bytes(Cipher(algorithms.ChaCha20(key, nonce), None).encryptor().update(data))


class ChaCha20Poly1305:
    """
    chacha20-poly1305@openssh.com: the length encrypted with the second
    key, the body with the first from block 1, a Poly1305 tag keyed by the
    first key's block 0 over both.
    """

    blockSize = 8
    macSize = 16
    lengthInBlocks = False

    def __init__(self, key: bytes):
        self._main, self._header = key[:32], key[32:64]

    def _tag(self, sequence: int, data: bytes) -> bytes:
        polyKey = _chacha(self._main, 0, sequence, b"\0" * 32)
        return bytes(Poly1305.generate_tag(polyKey, data))

    def seal(self, sequence: int, body: bytes) -> bytes:
        head = _chacha(self._header, 0, sequence, struct.pack(">L", len(body)))
        data = head + _chacha(self._main, 1, sequence, body)
        return data + self._tag(sequence, data)

    def length(self, sequence: int, head: bytes) -> int:
        return int(struct.unpack(">L", _chacha(self._header, 0, sequence, head))[0])

    def open(self, sequence: int, packet: bytes) -> bytes | None:
        data, tag = packet[:-16], packet[-16:]
        if not hmac.compare_digest(tag, self._tag(sequence, data)):
            return None
        return _chacha(self._main, 1, sequence, data[4:])


def makeCodec(
    cipher: bytes, mac: bytes, iv: bytes, key: bytes, macKey: bytes
) -> PacketCodec:
    """
    The codec for a negotiated cipher and MAC with keys derived for one
    direction.

    @raise KeyError: for a name this module does not implement.
    """
    keySize = CIPHERS[cipher]
    if cipher == CHACHA20:
        return ChaCha20Poly1305(key[:keySize])
    if cipher in AEAD:
        return GCM(key[:keySize], iv)
    return CounterEtM(MACS[mac], key[:keySize], iv, macKey)
