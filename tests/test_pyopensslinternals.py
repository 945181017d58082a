"""
Tests for L{netplugins.pyopensslinternals}: the private pyOpenSSL names
netplugins relies on still exist and behave as it relies on, and no other
netplugins module reaches them.

Run them first on a new pyOpenSSL release: a failure names the private, the
pyOpenSSL version and what netplugins does with it.
"""

from __future__ import annotations

import ast
import os

import trustme
from OpenSSL import SSL, version
from twisted.trial.unittest import SynchronousTestCase

import netplugins
from netplugins.pyopensslinternals import (
    sameSession,
    sessionReused,
    setContextNumTickets,
    setNumTickets,
)

PYOPENSSL = version.__version__


def serverContext(ca: trustme.CA) -> SSL.Context:
    """
    A TLS 1.2 server context with a server-side session cache, as np-ftp's.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_TICKET)
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    context.set_session_id(b"pin")
    ca.issue_cert("localhost").configure_cert(context)
    return context


def handshake(
    clients: SSL.Context, server: SSL.Context, session: SSL.Session | None = None
) -> tuple[SSL.Connection, SSL.Connection]:
    """
    A client and a server connection over memory BIOs, handshaken; the
    client offers C{session}.
    """
    client = SSL.Connection(clients, None)
    client.set_connect_state()
    if session is not None:
        client.set_session(session)
    accepted = SSL.Connection(server, None)
    accepted.set_accept_state()
    done: set[int] = set()
    for _ in range(20):
        for number, (this, other) in enumerate(
            ((client, accepted), (accepted, client))
        ):
            try:
                this.do_handshake()
                done.add(number)
            except SSL.WantReadError:
                pass
            try:
                other.bio_write(this.bio_read(1 << 16))
            except SSL.WantReadError:
                pass
        if done == {0, 1}:
            return client, accepted
    raise AssertionError("the in-memory handshake did not finish")


class SessionTests(SynchronousTestCase):
    """
    C{Connection._ssl} with C{OpenSSL._util.lib.SSL_session_reused}, and
    C{Session._session}: np-ftp's C{--tls-session-reuse required}
    (L{netplugins.ftp.tls.resumes}).
    """

    def test_resumption(self) -> None:
        """A resumed handshake is told apart, its session the very one cached."""
        context, clients = serverContext(trustme.CA()), SSL.Context(SSL.TLS_METHOD)
        client, first = handshake(clients, context)
        self.assertFalse(sessionReused(first), f"pyOpenSSL {PYOPENSSL}")
        _, resumed = handshake(clients, context, client.get_session())
        _, fresh = handshake(clients, context)
        sessions = [c.get_session() for c in (first, resumed, fresh)]
        self.assertEqual(
            (
                sessionReused(resumed),
                sessionReused(fresh),
                sameSession(sessions[1], sessions[0]),  # type: ignore[arg-type]
                sameSession(sessions[2], sessions[0]),  # type: ignore[arg-type]
            ),
            (True, False, True, False),
            f"pyOpenSSL {PYOPENSSL}: Connection._ssl, Session._session or "
            "lib.SSL_session_reused changed; np-ftp's session reuse check "
            "(netplugins/ftp/tls.py) depends on them",
        )

    def test_onlyHere(self) -> None:
        """No other netplugins module imports OpenSSL._util or reads Connection._ssl."""
        root = os.path.dirname(netplugins.__file__)
        found = []
        for directory, _, names in os.walk(root):
            for name in sorted(names):
                path = os.path.join(directory, name)
                module = os.path.relpath(path, root)
                if not name.endswith(".py") or module == "pyopensslinternals.py":
                    continue
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    if (
                        isinstance(node, ast.ImportFrom)
                        and node.module == "OpenSSL._util"
                    ):
                        found.append(f"netplugins/{module}:{node.lineno}")
                    elif isinstance(node, ast.Attribute) and node.attr in (
                        "_ssl",
                        "SSL_session_reused",
                    ):
                        found.append(f"netplugins/{module}:{node.lineno}: {node.attr}")
        self.assertEqual(found, [], "route these through netplugins.pyopensslinternals")


class TicketTests(SynchronousTestCase):
    """
    C{SSL_set_num_tickets}, found in cryptography's extension: np-ftp's data
    connections send no TLS 1.3 session tickets (L{netplugins.ftp.tls}).
    """

    def setUp(self) -> None:
        self.clients = SSL.Context(SSL.TLS_METHOD)
        self.clients.set_min_proto_version(SSL.TLS1_3_VERSION)

    def handshake(
        self,
        server: SSL.Context,
        tickets: int | None,
    ) -> tuple[SSL.Connection, bool, bytes]:
        """
        A TLS 1.3 handshake over memory BIOs, the server sending C{tickets}
        session tickets (C{None}: the context's): the client, whether the
        server resumed, and what the server wrote once its handshake was
        done (its tickets, nothing else).
        """
        client = SSL.Connection(self.clients, None)
        client.set_connect_state()
        accepted = SSL.Connection(server, None)
        accepted.set_accept_state()
        if tickets is not None:
            self.assertTrue(
                setNumTickets(accepted, tickets),
                f"SSL_set_num_tickets not found in cryptography's extension "
                f"(pyOpenSSL {PYOPENSSL}): np-ftp caps FTPS at TLS 1.2",
            )
        for _ in range(20):
            try:
                client.do_handshake()
            except SSL.WantReadError:
                pass
            accepted.bio_write(client.bio_read(1 << 16))
            try:
                accepted.do_handshake()
            except SSL.WantReadError:
                client.bio_write(accepted.bio_read(1 << 16))
                continue
            try:
                last = accepted.bio_read(1 << 16)
            except SSL.WantReadError:
                return client, sessionReused(accepted), b""
            client.bio_write(last)
            with self.assertRaises(SSL.WantReadError):
                client.recv(1)  # takes the tickets in
            return client, sessionReused(accepted), last
        raise AssertionError("the in-memory handshake did not finish")

    def test_noTickets(self) -> None:
        """A connection set to send no tickets sends none; by default it sends some."""
        server = serverContext(trustme.CA())
        server.set_max_proto_version(SSL.TLS1_3_VERSION)
        _, _, tickets = self.handshake(server, None)
        _, _, none = self.handshake(server, 0)
        self.assertEqual(
            (bool(tickets), none),
            (True, b""),
            f"pyOpenSSL {PYOPENSSL}: SSL_set_num_tickets(0) did not stop TLS "
            "1.3 tickets (np-ftp's data connections, netplugins/ftp/tls.py)",
        )

    def test_context(self) -> None:
        """A context set to send no tickets makes connections that send none."""
        server = serverContext(trustme.CA())
        server.set_max_proto_version(SSL.TLS1_3_VERSION)
        self.assertTrue(setContextNumTickets(server, 0))
        _, _, none = self.handshake(server, None)
        self.assertEqual(none, b"", f"pyOpenSSL {PYOPENSSL}: SSL_CTX_set_num_tickets")
