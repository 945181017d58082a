# -*- test-case-name: tests.test_tls -*-
"""
Client-side TLS that always verifies the peer.
"""

from __future__ import annotations

import ssl
from typing import Any

from cryptography.hazmat.primitives import serialization

from netplugins.tls.identity import loadCAs, loadIdentity


def clientCreator(
    hostname: str,
    caFile: str | None = None,
    clientCertificate: tuple[str, str] | None = None,
    minVersion: str = "1.2",
) -> Any:
    """
    Client TLS options that verify the server's certificate chain and that it
    is valid for C{hostname}.

    @param caFile: trust only the CAs in this PEM; the platform's when C{None}.
    @param clientCertificate: (certificate, key) PEM paths to present.
    @return: an C{IOpenSSLClientConnectionCreator}.
    """
    from twisted.internet.ssl import (
        Certificate,
        PrivateCertificate,
        TLSVersion,
        optionsForClientTLS,
        trustRootFromCertificates,
    )

    trustRoot = None
    if caFile is not None:
        trustRoot = trustRootFromCertificates(
            [
                Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM))
                for c in loadCAs(caFile)
            ]
        )
    private = None
    if clientCertificate is not None:
        certPath, keyPath = clientCertificate
        identity = loadIdentity(certPath, keyPath)
        private = PrivateCertificate.loadPEM(
            identity.chain[0].public_bytes(serialization.Encoding.PEM)
            + identity.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    extra = {"raiseMinimumTo": TLSVersion.TLSv1_3} if minVersion == "1.3" else {}
    return optionsForClientTLS(
        hostname,
        trustRoot=trustRoot,
        clientCertificate=private,
        extraCertificateOptions=extra,
    )


def clientSSLContext(
    caFile: str | None = None, minVersion: str = "1.2"
) -> ssl.SSLContext:
    """
    A stdlib C{ssl.SSLContext} for clients (ldap3, smtplib, ...): certificate
    and hostname verification on, TLS 1.2 or newer.

    @param caFile: trust only the CAs in this PEM; the platform's when C{None}.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=caFile)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if minVersion == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    return context
