"""
np-ssh's host keys: read from C{--host-key} files, or generated in the
state directory on first start (ed25519 and RSA-3072, OpenSSH's private key
format, mode 0600, with a C{.pub} beside each); fingerprints logged; read
again on SIGHUP, keeping the old keys when the new files are bad.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from attrs import frozen
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.conch.ssh.keys import (
    BadKeyError,
    EncryptedKeyError,
    FingerprintFormats,
    Key,
)
from twisted.logger import Logger

from netplugins.files import writeAtomically

#: The smallest RSA host key accepted, in bits.
MIN_RSA_BITS = 3072

#: The files generated in the state directory, by key type.
GENERATED = {"ed25519": "ssh_host_ed25519_key", "rsa": "ssh_host_rsa_key"}

log = Logger()


@frozen
class HostKeySet:
    """
    Loaded host keys by SSH key type (C{b"ssh-ed25519"}, C{b"ssh-rsa"}), as
    conch's C{SSHFactory.publicKeys} and C{privateKeys} want them.
    """

    private: dict[bytes, Key]

    @property
    def public(self) -> dict[bytes, Key]:
        return {kind: key.public() for kind, key in self.private.items()}


def fingerprint(key: Key) -> str:
    """
    C{key}'s fingerprint as OpenSSH shows it (C{SHA256:...}).
    """
    return "SHA256:" + key.fingerprint(FingerprintFormats.SHA256_BASE64).rstrip("=")


def checkHostKey(key: Key, path: str) -> bytes:
    """
    The SSH type of a usable host key.

    @raise ValueError: for a public key, a DSA or ECDSA key, or RSA under
        L{MIN_RSA_BITS} bits.
    """
    if key.isPublic():
        raise ValueError(f"{path}: not a private key")
    kind = key.sshType()
    if kind == b"ssh-rsa" and key.size() < MIN_RSA_BITS:
        raise ValueError(f"{path}: RSA host keys need {MIN_RSA_BITS} bits at least")
    if kind not in (b"ssh-ed25519", b"ssh-rsa"):
        raise ValueError(f"{path}: host keys are ed25519 or RSA, not {kind.decode()}")
    return kind


def loadHostKeys(paths: Sequence[str]) -> HostKeySet:
    """
    Read private host keys, one type each.

    @raise ValueError: with a one-line message, for a missing, unreadable,
        weak or duplicated key.
    """
    private: dict[bytes, Key] = {}
    for path in paths:
        try:
            key = Key.fromFile(path)
        except OSError as e:
            raise ValueError(f"host key {path}: {e.strerror or e}") from None
        except EncryptedKeyError:
            raise ValueError(f"host key {path}: encrypted with a passphrase") from None
        except (BadKeyError, ValueError):
            # Conch's message quotes the file: never show a secret's bytes.
            raise ValueError(f"host key {path}: not a private key file") from None
        kind = checkHostKey(key, path)
        if kind in private:
            raise ValueError(f"{path}: a second {kind.decode()} host key")
        private[kind] = key
    if not private:
        raise ValueError("no host keys")
    return HostKeySet(private)


def generatedPaths(stateDir: str) -> list[str]:
    """
    The host key files np-ssh generates in C{stateDir}, making any missing.
    """
    directory = os.path.join(stateDir, "ssh")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    paths = []
    for kind, name in GENERATED.items():
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            generated = (
                ed25519.Ed25519PrivateKey.generate()
                if kind == "ed25519"
                else rsa.generate_private_key(65537, MIN_RSA_BITS)
            )
            key = Key(generated)
            writeAtomically(path, key.toString("openssh"), 0o600)
            writeAtomically(
                path + ".pub", key.public().toString("openssh") + b"\n", 0o644
            )
            log.warn(
                "generated the SSH {kind} host key {path} ({fingerprint})",
                kind=kind,
                path=path,
                fingerprint=fingerprint(key),
            )
        paths.append(path)
    return paths


class HostKeys:
    """
    The host keys a server uses now, re-read by L{reload}.
    """

    def __init__(self, paths: Sequence[str], stateDir: str) -> None:
        self._paths = tuple(paths)
        self._stateDir = stateDir
        self.current = self._load()

    def _load(self) -> HostKeySet:
        paths = self._paths or generatedPaths(self._stateDir)
        keys = loadHostKeys(paths)
        for kind, key in keys.private.items():
            log.info(
                "SSH host key {kind}: {fingerprint}",
                kind=kind.decode(),
                fingerprint=fingerprint(key),
            )
        return keys

    def reload(self) -> None:
        """
        Read the host keys again; on a bad file, log it and keep the old ones.
        """
        try:
            self.current = self._load()
        except ValueError as e:
            log.error("SSH host keys not reloaded, keeping the old ones: {why}", why=e)
