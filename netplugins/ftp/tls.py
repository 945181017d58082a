"""
The FTPS contexts: the shared TLS profile (L{netplugins.tls.server}) with a
server-side session cache, so that data connections can resume the control
connection's session (RFC 4217 section 10.2; vsftpd and FileZilla Server
require it, so that a data connection cannot be taken over by another
client).

Data connections must not carry TLS 1.3 session tickets: a client that only
writes (an upload) leaves the ticket unread, and closing a socket with unread
data sends a reset that truncates the upload on the server (Debian's lftp
4.9.2; OpenSSL issue 7948), and a TLS 1.3 resumption always sends one.
OpenSSL's answer, C{SSL_set_num_tickets(0)}, is wrapped by neither pyOpenSSL
nor cryptography's bindings; L{netplugins.pyopensslinternals} reaches it, and
data connections are wrapped with L{FTPServerTLS.wrapDataFactory}, which
sends none.  Control connections send OpenSSL's two tickets, which the data
connections resume with.  Where the function cannot be reached, np-ftp's
contexts stop at TLS 1.2, where C{OP_NO_TICKET} means no ticket at all and
sessions resume by ID from the cache (C{--tls-min-version 1.3} then lifts
the cap and data connections carry one ticket each).
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from OpenSSL import SSL
from twisted.internet.interfaces import IProtocolFactory

from netplugins.pyopensslinternals import (
    numTicketsSettable,
    sameSession,
    sessionReused,
    setContextNumTickets,
)
from netplugins.tls.identity import Identity
from netplugins.tls.server import ServerTLS

#: The session ID context of np-ftp's sessions: resumed only by np-ftp.
SESSION_CONTEXT = b"np-ftp"
#: TLS 1.3 session tickets a control connection sends (OpenSSL's default).
CONTROL_TICKETS = 2


class FTPServerTLS(ServerTLS):
    """
    L{ServerTLS} for FTPS: a server-side session cache; data connections
    without TLS 1.3 session tickets, or TLS 1.2 at most unless the minimum
    is 1.3 where that cannot be done.
    """

    #: Whether data connections can be kept from sending tickets.
    dataTicketsOff = numTicketsSettable()

    def _makeContext(
        self, identity: Identity, clientCAs: list[x509.Certificate]
    ) -> SSL.Context:
        context = super()._makeContext(identity, clientCAs)
        context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
        context.set_session_id(SESSION_CONTEXT)
        if self.dataTicketsOff:
            setContextNumTickets(context, CONTROL_TICKETS)
        elif self.settings.minVersion != "1.3":
            context.set_max_proto_version(SSL.TLS1_2_VERSION)
        return context

    def wrapDataFactory(
        self, factory: IProtocolFactory, reactor: Any = None
    ) -> IProtocolFactory:
        """
        Wrap a data connection's C{factory} in TLS: no session tickets.
        """
        if not self.dataTicketsOff:
            return self.wrapFactory(factory, reactor)
        return self.wrapFactory(factory, reactor, sessionTickets=0)


def resumes(data: SSL.Connection, control: SSL.Connection) -> bool:
    """
    Whether the data connection C{data} resumed the TLS session of the
    control connection C{control}: with TLS 1.2, the very session (by
    identity in the cache); with TLS 1.3, a resumption (its new session
    cannot be compared with the control connection's).

    pyOpenSSL has no public way to tell (L{netplugins.pyopensslinternals});
    if its privates go, every resumption looks missing and
    C{--tls-session-reuse required} refuses every protected transfer, which
    C{tests/test_pyopensslinternals.py} and C{tests/test_ftp.py} catch.
    """
    if not sessionReused(data):
        return False
    if data.get_protocol_version_name() != "TLSv1.2":
        return True
    mine, theirs = data.get_session(), control.get_session()
    if mine is None or theirs is None:
        return False
    return sameSession(mine, theirs)
