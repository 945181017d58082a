# -*- test-case-name: tests.test_tls -*-
"""
The self-signed development certificate used when TLS is asked for without a
certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.logger import Logger

from netplugins.files import writeAtomically
from netplugins.tls.identity import TLSConfigurationError, fingerprint, loadIdentity

_log = Logger(namespace="netplugins.tls")


def ensureDevelopmentCertificate(stateDir: str) -> tuple[str, str]:
    """
    Make (once) and return a self-signed certificate for C{localhost},
    C{127.0.0.1} and C{::1} under C{stateDir/tls/}, logging a warning with its
    SHA-256 fingerprint every time it is used.  An existing certificate is
    reused while it has more than a day left and matches its key.

    @return: (certificate, key) paths; the key file is mode 0600.
    """
    directory = os.path.join(stateDir, "tls")
    certPath = os.path.join(directory, "development-cert.pem")
    keyPath = os.path.join(directory, "development-key.pem")
    certificate = None
    try:
        identity = loadIdentity(certPath, keyPath)
    except TLSConfigurationError:
        pass
    else:
        left = identity.chain[0].not_valid_after_utc - datetime.datetime.now(
            datetime.UTC
        )
        if left > datetime.timedelta(days=1):
            certificate = identity.chain[0]
    if certificate is None:
        certificate = _writeDevelopmentCertificate(directory, certPath, keyPath)
    _log.warn(
        "Using the self-signed DEVELOPMENT certificate {path} (SHA-256 "
        "{fingerprint}); clients cannot verify it, give --tls-cert/--tls-key "
        "for real use",
        path=certPath,
        fingerprint=fingerprint(certificate),
    )
    return certPath, keyPath


def _writeDevelopmentCertificate(
    directory: str, certPath: str, keyPath: str
) -> x509.Certificate:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "netplugins development")]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first, created 0600 from the start: it is never readable by others,
    # not even for a moment under a lax umask.
    writeAtomically(keyPath, keyPEM, 0o600)
    writeAtomically(
        certPath, certificate.public_bytes(serialization.Encoding.PEM), 0o644
    )
    return certificate
