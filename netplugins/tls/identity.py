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
    """

    certificates: tuple[tuple[str, str], ...] = ()
    directory: str | None = None
    clientCA: str | None = None
    clientCert: str | None = None
    minVersion: str = "1.2"
    stateDir: str = "var"


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
    try:
        key = serialization.load_pem_private_key(match.group(0), password=None)
    except (ValueError, TypeError) as e:
        raise TLSConfigurationError(f"unusable private key in {keyPath}: {e}") from None
    if key.public_key() != chain[0].public_key():
        raise TLSConfigurationError(
            f"the key in {keyPath} does not match the certificate in {certPath}"
        )
    names = tuple(dict.fromkeys(certificateNames(chain[0]) + list(extraNames)))
    return Identity(certPath, names, chain, key)


def directoryFiles(directory: str) -> list[str]:
    try:
        entries = sorted(os.listdir(directory))
    except OSError as e:
        raise TLSConfigurationError(f"cannot read {directory}: {e.strerror}") from None
    return [
        os.path.join(directory, name)
        for name in entries
        if name.endswith(".pem") and os.path.isfile(os.path.join(directory, name))
    ]


def loadCAs(path: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(readFile(path))
    except ValueError:
        raise TLSConfigurationError(f"no PEM CA certificate in {path}") from None


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()
