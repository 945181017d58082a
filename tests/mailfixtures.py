"""
Shared fixtures for the mail tests: a store, users in an htpasswd file, a
portal, and transports that record STARTTLS.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from netplugins.cred.htpasswd import HtpasswdChecker, hashPassword
from netplugins.cred.throttle import LoginThrottle
from netplugins.mail.maildir.store import MaildirStore
from netplugins.mail.users import LocalUsers, MailRealm
from tests.support import WatermarkTransport

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
DOMAIN = "example.org"


def inline(f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
    """
    Run a blocking call at once (C{runBlocking} for synchronous tests).
    """
    return maybeDeferred(f, *args, **kwargs)


def writeHtpasswd(directory: str) -> str:
    """
    An htpasswd file of L{PASSWORDS} (cheap bcrypt) in C{directory}.
    """
    path = os.path.join(directory, "users.htpasswd")
    with open(path, "w") as f:
        for name, password in PASSWORDS.items():
            f.write(f"{name}:{hashPassword(password, cost=4)}\n")
    return path


class MailWorld:
    """
    A store, users, portal and throttle on a L{Clock}, all synchronous.
    """

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.clock = Clock()
        self.htpasswd = writeHtpasswd(directory)
        self.checker = HtpasswdChecker(self.htpasswd, runBlocking=inline)
        self.root = os.path.join(directory, "mail")
        self.store = MaildirStore(self.root, runBlocking=inline, hostname="test")
        self.users = LocalUsers([DOMAIN], [self.checker])
        self.portal = Portal(MailRealm(self.users), [self.checker])
        self.throttle = LoginThrottle(self.clock)

    def newMessages(self, user: str) -> list[bytes]:
        """
        The messages in C{user}'s new/, oldest first.
        """
        directory = os.path.join(self.root, user, "new")
        if not os.path.isdir(directory):
            return []
        out = []
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), "rb") as f:
                out.append(f.read())
        return out


#: A L{StringTransport} that records C{startTLS} (and then claims TLS).
TLSStringTransport = WatermarkTransport


def waitForSessions(testCase: Any, protocolClass: Any) -> None:
    """
    Track live C{protocolClass} sessions from now on; at cleanup, wait (on
    the real reactor, at most 10 s) until every one has seen connectionLost,
    so that servers closing after QUIT leave the reactor clean.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    live: set[Any] = set()
    made, lost = protocolClass.connectionMade, protocolClass.connectionLost

    def connectionMade(self: Any) -> None:
        live.add(self)
        made(self)

    def connectionLost(self: Any, reason: Any = None) -> None:
        live.discard(self)
        lost(self, reason)

    testCase.patch(protocolClass, "connectionMade", connectionMade)
    testCase.patch(protocolClass, "connectionLost", connectionLost)

    def drained(waited: float = 0.0) -> Deferred[None] | None:
        if not live or waited > 10:
            return None
        return deferLater(reactor, 0.02, drained, waited + 0.02)  # type: ignore[arg-type]

    testCase.addCleanup(drained)
