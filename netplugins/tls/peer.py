# -*- test-case-name: tests.test_tls -*-
"""
Who the peer is, from the certificate it presented.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL


def tlsConnection(transport: Any) -> SSL.Connection | None:
    """
    The pyOpenSSL connection under C{transport}, or C{None} in the clear.

    @param transport: a protocol's transport (TLS-wrapped, or after
        C{startTLS}).
    """
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    try:
        handle = getHandle()
    except Exception:
        return None
    return handle if isinstance(handle, SSL.Connection) else None


def peerIdentity(transport: Any) -> str | None:
    """
    The identity in the certificate the peer presented and that verified: its
    subject common name, else its first subject alternative name.

    @param transport: a protocol's transport (TLS-wrapped, or after
        C{startTLS}).
    @return: C{None} without TLS, without a peer certificate, or when this side
        did not verify peer certificates.
    """
    handle = tlsConnection(transport)
    if handle is None:
        return None
    # With VERIFY_PEER a certificate that fails verification fails the
    # handshake, so any certificate present here has been verified.
    if not handle.get_verify_mode() & SSL.VERIFY_PEER:
        return None
    certificate = handle.get_peer_certificate(as_cryptography=True)
    if certificate is None:
        return None
    return certificateIdentity(certificate)


def certificateIdentity(certificate: x509.Certificate) -> str | None:
    """
    A certificate's subject common name, else its first subject alternative
    name (DNS name, e-mail address, URI or IP address).
    """
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")
    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        return None
    for general in san:
        if isinstance(
            general,
            (
                x509.DNSName,
                x509.RFC822Name,
                x509.UniformResourceIdentifier,
                x509.IPAddress,
            ),
        ):
            return str(general.value)
    return None
