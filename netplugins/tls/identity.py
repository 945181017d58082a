# -*- test-case-name: tests.test_tls -*-
"""
What server TLS is made from: the settings, and loading certificate chains,
keys and CA files into checked values with one-line errors.
"""

from __future__ import annotations

import os
import re
from typing import Any

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization


@frozen
class TLSSettings:
    """
    What a server's TLS is made from (the C{--tls-*} options).

    @ivar certificates: (certificate with chain, private key) PEM path pairs;
        the first is the default for unknown or missing SNI names.
    @ivar directory: a directory of C{*.pem} files, each holding a key, its
        certificate and chain, as Twisted's C{tls:} endpoint reads; a file
        serves the names in its certificate and its own basename.
    @ivar clientCA: verify client certificates against the CAs in this PEM.
    @ivar clientCert: C{"optional"} or C{"required"}, with C{clientCA}.
    @ivar minVersion: C{"1.2"} or C{"1.3"}.
    @ivar stateDir: where a development certificate is made when no
        certificate and no directory is given.
    @ivar handshakeTimeout: seconds a handshake may take, on a TLS listener
        or after STARTTLS.
    """

    certificates: tuple[tuple[str, str], ...] = ()
    directory: str | None = None
    clientCA: str | None = None
    clientCert: str | None = None
    minVersion: str = "1.2"
    stateDir: str = "var"
    handshakeTimeout: float = 10.0


class TLSConfigurationError(ValueError):
    """
    A certificate, key or CA file cannot be used; the message is one line.
    """


@frozen
class Identity:
    """
    One certificate chain and its key, loaded and checked.
    """

    source: str
    names: tuple[str, ...]
    chain: tuple[x509.Certificate, ...]
    key: Any


_PRIVATE_KEY = re.compile(
    rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.+?-----END \1-----",
    re.DOTALL,
)


def readFile(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigurationError(f"cannot read {path}: {e.strerror}") from None


def certificateNames(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower().rstrip(".") for name in san.get_values_for_type(x509.DNSName)]


def _loadKey(pem: bytes, path: str) -> Any:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise TLSConfigurationError(f"unusable private key in {path}: {e}") from None


def loadIdentity(
    certPath: str, keyPath: str, extraNames: tuple[str, ...] = ()
) -> Identity:
    """
    Load a certificate chain and its key, refusing a key that does not match.

    @raise TLSConfigurationError: for anything unusable.
    """
    certData = readFile(certPath)
    keyData = certData if keyPath == certPath else readFile(keyPath)
    try:
        chain = tuple(x509.load_pem_x509_certificates(certData))
    except ValueError:
        raise TLSConfigurationError(f"no PEM certificate in {certPath}") from None
    match = _PRIVATE_KEY.search(keyData)
    if match is None:
        raise TLSConfigurationError(f"no PEM private key in {keyPath}")
    key = _loadKey(match.group(0), keyPath)
    if key.public_key() != chain[0].public_key():
        raise TLSConfigurationError(
            f"the key in {keyPath} does not match the certificate in {certPath}"
        )
    names = tuple(dict.fromkeys(certificateNames(chain[0]) + list(extraNames)))
    return Identity(certPath, names, chain, key)


def directoryFiles(directory: str) -> list[str]:
    """
    The C{*.pem} files under C{directory} and its subdirectories, sorted.
    """
    if not os.path.isdir(directory):
        raise TLSConfigurationError(f"cannot read {directory}: not a directory")
    found: list[str] = []
    for parent, subdirectories, names in os.walk(directory):
        subdirectories.sort()
        found.extend(
            os.path.join(parent, name)
            for name in names
            if name.endswith(".pem") and os.path.isfile(os.path.join(parent, name))
        )
    return sorted(found)


def loadDirectory(directory: str) -> tuple[list[Identity], list[str]]:
    """
    Load a directory the way Twisted's C{tls:} endpoint
    (C{twisted.protocols._sni.PEMObjects}) reads it: every C{*.pem} file is a
    pile of keys and certificates in any order; each key serves the
    certificate with its public key, chained through the other certificates
    by issuer.  A key is also served under its file's name (C{host.pem}).

    @return: the identities, in file order, and one message per key without
        a certificate (skipped, as Twisted does).
    @raise TLSConfigurationError: for an unreadable file or key, or when no
        key has a certificate.
    """
    keys: list[tuple[str, Any]] = []
    certificates: list[tuple[str, x509.Certificate]] = []
    for path in directoryFiles(directory):
        data = readFile(path)
        if b"-----BEGIN CERTIFICATE-----" in data:
            try:
                certificates.extend(
                    (path, c) for c in x509.load_pem_x509_certificates(data)
                )
            except ValueError:
                raise TLSConfigurationError(f"bad PEM certificate in {path}") from None
        for match in _PRIVATE_KEY.finditer(data):
            keys.append((path, _loadKey(match.group(0), path)))
    identities = []
    unused = []
    withKeys = set()
    for path, key in keys:
        # Prefer a certificate from the key's own file.
        candidates = sorted(certificates, key=lambda pc: pc[0] != path)
        for _, certificate in candidates:
            if certificate.public_key() == key.public_key():
                withKeys.add(certificate)
                break
        else:
            unused.append(f"{path}: a private key without its certificate")
            continue
        identities.append((path, key, certificate))
    intermediates = {c.subject: c for _, c in certificates if c not in withKeys}
    loaded = []
    for path, key, leaf in identities:
        chain = [leaf]
        while (
            chain[-1].issuer != chain[-1].subject
            and chain[-1].issuer in intermediates
            and intermediates[chain[-1].issuer] not in chain
        ):
            chain.append(intermediates[chain[-1].issuer])
        stem = os.path.basename(path)[: -len(".pem")].lower()
        names = tuple(dict.fromkeys([*certificateNames(leaf), stem]))
        loaded.append(Identity(path, names, tuple(chain), key))
    if not loaded:
        raise TLSConfigurationError(
            f"no private key with its certificate in *.pem files under {directory}"
        )
    return loaded, unused


def loadCAs(path: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(readFile(path))
    except ValueError:
        raise TLSConfigurationError(f"no PEM CA certificate in {path}") from None


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()
