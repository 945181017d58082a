"""
Connections to the LDAP directory for the C{ldap:} checker
(L{netplugins.cred.ldap.checker}): opening one with a verifying TLS profile, binding,
unbinding whatever state it is in, and reusing bound search connections.

All of it blocks: it runs in the checker's C{netplugins-ldap} pool.
"""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import ldap3
from ldap3.core.exceptions import LDAPException

from netplugins.cred.ldap.config import LDAPConfig

_T = TypeVar("_T")


class RefusedError(Exception):
    """
    The directory answered, and the answer is no (wrong password, no such user,
    two users, a referral, not in the group).  Not a backend failure.
    """


def clientContext(caFile: str | None) -> ssl.SSLContext:
    """
    A TLS client context that verifies the certificate chain (against C{caFile},
    else the system store) and the host name, TLS 1.2 or later.
    """
    # One client TLS profile for every netplugins client side.
    from netplugins.tls.client import clientSSLContext

    return clientSSLContext(caFile=caFile, minVersion="1.2")


class VerifyingTls(ldap3.Tls):  # type: ignore[misc]
    """
    ldap3's C{Tls} with a real verifying context.

    ldap3 builds its own context with C{check_hostname = False} and then calls a
    matcher of its own; here the standard library checks chain and host name
    during the handshake (IP addresses included), for ldaps:// and StartTLS.
    """

    def __init__(self, context: ssl.SSLContext, caFile: str | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=caFile)
        self.context = context

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self.context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )


def describeError(error: BaseException) -> str:
    """
    One readable line for an ldap3 error, whose messages often arrive as the
    repr of a tuple wrapped in another.
    """
    text = str(error)
    while True:
        match = re.fullmatch(r"\(\s*(['\"])(.*)\1,?\)", text, re.DOTALL)
        if match is None:
            return " ".join(text.split())
        text = match.group(2).replace("\\'", "'")


def unbind(connection: Any) -> None:
    """
    Unbind C{connection}, or at least close its socket.
    """
    try:
        connection.unbind()
    except (LDAPException, OSError):
        # The connection is already broken; closing is all that is left.
        try:
            connection.strategy.close()
        except Exception:  # noqa: S110 - nothing more to do for a dead socket
            pass


def openConnection(
    config: LDAPConfig, tls: VerifyingTls | None, user: str | None, password: str | None
) -> Any:
    """
    Open a connection to the directory of C{config}, secure it (ldaps:// or
    StartTLS through C{tls}, never a cleartext fallback) and bind as C{user}
    (anonymously for C{None}).

    @raise RefusedError: when the bind is refused.
    @raise LDAPException: or C{OSError}, for a backend failure.
    """
    server = ldap3.Server(
        config.host,
        port=config.port,
        use_ssl=config.useSSL,
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=config.connectTimeout,
    )
    connection = ldap3.Connection(
        server,
        user=user,
        password=password,
        authentication=ldap3.SIMPLE if user is not None else ldap3.ANONYMOUS,
        client_strategy=ldap3.SYNC,
        auto_bind=ldap3.AUTO_BIND_NONE,
        auto_referrals=False,
        read_only=True,
        check_names=False,
        raise_exceptions=False,
        receive_timeout=config.receiveTimeout,
    )
    try:
        connection.open(read_server_info=False)
        if config.startTLS:
            # start_tls raises when the server refuses or the handshake
            # fails; the explicit check keeps a cleartext bind impossible
            # even if a future ldap3 merely returned False.
            if not connection.start_tls(read_server_info=False):
                raise LDAPException("StartTLS was not started")
            if not connection.tls_started:
                raise LDAPException("StartTLS was not started")
        if not connection.bind(read_server_info=False):
            result = connection.result or {}
            raise RefusedError(
                f"bind as {user or 'anonymous'!r} refused: "
                f"{result.get('description', 'no answer')}"
            )
    except BaseException:
        unbind(connection)
        raise
    return connection


class SearchConnections:
    """
    Bound connections for the search step (service account or anonymous),
    reused across logins; at most C{size} idle ones are kept.  Used only from
    pool threads.
    """

    def __init__(self, openConnection: Callable[[], Any], size: int) -> None:
        self._open = openConnection
        self._size = size
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        self.opened = 0

    def run(self, operation: Callable[[Any], _T]) -> _T:
        """
        Run C{operation(connection)} on a pooled connection; a reused one that
        turns out dead (not merely slow) is replaced once.
        """
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            reused = connection is not None
            if connection is None:
                connection = self._open()
                self.opened += 1
            try:
                result = operation(connection)
            except RefusedError:
                self._giveBack(connection)
                raise
            except (LDAPException, OSError) as e:
                unbind(connection)
                if reused and not isinstance(e, TimeoutError):
                    continue
                raise
            except BaseException:
                unbind(connection)
                raise
            self._giveBack(connection)
            return result

    def _giveBack(self, connection: Any) -> None:
        with self._lock:
            keep = not (self._closed or connection.closed)
            if keep and len(self._idle) < self._size:
                self._idle.append(connection)
                return
        unbind(connection)

    def close(self) -> None:
        """
        Unbind every idle connection, and any in use as it is given back.
        """
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            unbind(connection)
