"""
The np-ssh factory: conch's C{SSHFactory} with the modern transport, the
throttled user authentication, host keys that reload, and the login window.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.ssh.factory import SSHFactory
from twisted.cred.portal import Portal

from netplugins.cred.throttle import LoginThrottle
from netplugins.ssh.auth import UserAuthServer
from netplugins.ssh.hostkeys import HostKeys
from netplugins.ssh.session import SessionConnection
from netplugins.ssh.transport import HOST_KEY_ALGORITHMS, ModernServerTransport
from netplugins.twistedinternals.conch import addFixedGroupKeyExchange

#: Seconds a connection may take to log in unless told otherwise.
LOGIN_TIMEOUT = 120.0

_KEY_TYPES = {
    b"ssh-ed25519": b"ssh-ed25519",
    b"rsa-sha2-512": b"ssh-rsa",
    b"rsa-sha2-256": b"ssh-rsa",
}


def _registerGroups() -> None:
    from hashlib import sha512

    from netplugins.ssh.groups import GENERATOR, GROUP16_PRIME, GROUP18_PRIME

    addFixedGroupKeyExchange(
        b"diffie-hellman-group16-sha512", GENERATOR, GROUP16_PRIME, sha512
    )
    addFixedGroupKeyExchange(
        b"diffie-hellman-group18-sha512", GENERATOR, GROUP18_PRIME, sha512
    )


_registerGroups()


class SSHServerFactory(SSHFactory):
    """
    Makes L{ModernServerTransport}s sharing host keys, a portal and a
    login throttle.
    """

    protocol = ModernServerTransport
    services = {
        b"ssh-userauth": UserAuthServer,
        b"ssh-connection": SessionConnection,
    }

    def __init__(
        self,
        hostKeys: HostKeys,
        portal: Portal,
        throttle: LoginThrottle,
        *,
        loginTimeout: float = LOGIN_TIMEOUT,
        closeGrace: float = 2.0,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.hostKeys = hostKeys
        self.portal = portal
        self.throttle = throttle
        self.loginTimeout = loginTimeout
        self.closeGrace = closeGrace
        self.reactor = reactor
        self.primes = None

    @property  # type: ignore[override]
    def publicKeys(self) -> dict[bytes, Any]:
        return self.hostKeys.current.public

    @property  # type: ignore[override]
    def privateKeys(self) -> dict[bytes, Any]:
        return self.hostKeys.current.private

    def buildProtocol(self, addr: Any) -> ModernServerTransport:
        t = ModernServerTransport()
        t.factory = self
        available = self.privateKeys
        t.supportedPublicKeys = [
            name for name in HOST_KEY_ALGORITHMS if _KEY_TYPES[name] in available
        ]
        return t
