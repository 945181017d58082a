"""
The private pyOpenSSL names netplugins relies on, all here, each pinned by
C{tests/test_pyopensslinternals.py} (run it first on a new pyOpenSSL).

pyOpenSSL wraps neither OpenSSL's C{SSL_session_reused} nor a way to tell
whether two L{SSL.Session} objects are the same session, which np-ftp needs
to require that a data connection resumes its control connection's TLS
session (L{netplugins.ftp.tls.resumes}).  Both are reached through
pyOpenSSL's privates: C{Connection._ssl} (the C{SSL *}), C{Session._session}
(the C{SSL_SESSION *}) and C{OpenSSL._util.lib} (cryptography's bindings).
"""

from __future__ import annotations

from OpenSSL import SSL
from OpenSSL._util import lib


def sessionReused(connection: SSL.Connection) -> bool:
    """
    Whether C{connection}'s handshake resumed a session
    (C{SSL_session_reused}).
    """
    return bool(lib.SSL_session_reused(connection._ssl))  # type: ignore[attr-defined]


def sameSession(a: SSL.Session, b: SSL.Session) -> bool:
    """
    Whether C{a} and C{b} wrap the very same C{SSL_SESSION} (a TLS 1.2
    resumption by ID hands the cached session itself to the new connection).
    """
    return bool(a._session == b._session)  # type: ignore[attr-defined]
