# -*- test-case-name: tests.test_aio -*-
"""
netplugins' credential checkers from asyncio programs, through txaio.

The checkers are Twisted L{ICredentialsChecker}s: C{requestAvatarId} returns a
L{Deferred}; the blocking work (bcrypt, argon2, ldap3) runs in the thread pools of
L{netplugins.threads}, whose results come back through the reactor's
C{callFromThread}; the C{ldap:} checker's login deadline and the throttle's delays
are reactor timers; the pools stop, and LDAP connections unbind, when the reactor
shuts down.  A plain asyncio program has no Twisted reactor running, so the
checkers need one, and the program needs awaitables.  This module provides both:

  1. L{install} puts a Twisted reactor on the program's own asyncio loop:
     Twisted's C{AsyncioSelectorReactor}, as a guest (L{GuestReactor}), started
     without signal handlers and never stopping the loop, which stays the
     program's.  Deferreds then fire on the loop's thread, reactor timers are
     loop timers, and results from the pools arrive by C{call_soon_threadsafe}.
     Every checker works unchanged: ours, made by C{strcred.makeChecker} exactly
     as C{twistd --auth} makes them, and Twisted's own.
  2. L{check} runs one check (optionally under a L{LoginThrottle}) and hands
     back a txaio future: an asyncio C{Future} after C{txaio.use_asyncio()}
     (which L{install} calls), a L{Deferred} under C{txaio.use_twisted()}.  Code
     written against txaio, as Autobahn's is, checks passwords the same way on
     either framework; L{checkPassword} is the C{async def} for asyncio code.
     Cancelling the future (its task was cancelled) cancels the Deferred.
  3. L{shutdown} runs Twisted's shutdown triggers on the loop: LDAP search
     connections are unbound and the pools stopped.  The pools' threads are not
     daemons; without this the interpreter waits for them at exit.

Why not an asyncio executor (C{loop.run_in_executor}) handed to each checker
instead of a reactor?  The checkers would need a second set of bounded pools
and a second code path each (the LDAP checker's deadline and cache clock, the
htpasswd reload hop and the throttle's delays are all reactor timers), and
checkers written for Twisted alone would still need a reactor.  One guest
reactor on the loop serves all of them with the code that runs under twistd.

Usage::

    async def main():
        reactor = aio.install()                 # first, before makeChecker
        checker = strcred.makeChecker("htpasswd:users")
        try:
            avatarId = await aio.checkPassword(checker, "alice", "secret")
        except UnauthorizedLogin:
            ...
        await aio.shutdown()
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import txaio as _txaio
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from netplugins.cred.throttle import LoginAttempts, LoginThrottle

log = Logger()
# txaio binds its API when a framework is chosen, out of a type checker's sight.
txaio: Any = _txaio


class GuestReactor(AsyncioSelectorReactor):
    """
    Twisted's asyncio reactor as a guest on a loop the program runs itself: its
    shutdown runs Twisted's triggers but leaves the loop running.

    @ivar loop: the asyncio loop it runs on.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        super().__init__(loop)

    def crash(self) -> None:
        # AsyncioSelectorReactor.crash stops the loop, which is not ours: skip
        # that and only reset the reactor's own state.
        super(AsyncioSelectorReactor, self).crash()


def _installedReactor() -> Any:
    if "twisted.internet.reactor" not in sys.modules:
        return None
    from twisted.internet import reactor

    return reactor


def install(loop: asyncio.AbstractEventLoop | None = None) -> GuestReactor:
    """
    Make C{loop} (the running loop by default) the home of Twisted's global
    reactor, and switch txaio to asyncio on it.  Call it before making any
    checker; calling it again with the same loop returns the same reactor.

    @raise RuntimeError: if another reactor is already installed (something
        imported C{twisted.internet.reactor} first), or with no running loop.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    current = _installedReactor()
    if current is not None and not (
        isinstance(current, GuestReactor) and current.loop is loop
    ):
        raise RuntimeError(
            f"a Twisted reactor ({type(current).__name__}) is already installed: "
            "call netplugins.cred.aio.install() before anything imports "
            "twisted.internet.reactor"
        )
    txaio.use_asyncio()
    txaio.config.loop = loop
    if current is not None:
        return current
    from twisted.internet.main import installReactor

    reactor = GuestReactor(loop)
    installReactor(reactor)
    # No signal handlers: SIGINT and SIGTERM stay the asyncio program's.
    reactor.startRunning(installSignalHandlers=False)
    return reactor


def addressOf(peername: Any) -> IPv4Address | IPv6Address | None:
    """
    The Twisted address for an asyncio transport's C{peername} extra info (a
    C{(host, port)} or C{(host, port, flowinfo, scopeid)} tuple), or C{None}
    for peers without one (UNIX sockets).
    """
    if not isinstance(peername, tuple) or len(peername) < 2:
        return None
    host, port = peername[0], peername[1]
    if len(peername) == 4 or ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


def _requestAvatarId(checker: Any, credentials: UsernamePassword) -> Deferred[Any]:
    return maybeDeferred(checker.requestAvatarId, credentials)


def check(
    checker: Any,
    username: str | bytes,
    password: str | bytes,
    *,
    throttle: LoginThrottle | None = None,
    peer: IPv4Address | IPv6Address | None = None,
    attempts: LoginAttempts | None = None,
) -> Any:
    """
    Check C{username} and C{password} with C{checker} (any Twisted
    L{ICredentialsChecker} for L{IUsernamePassword}).

    @param throttle: if given, the check runs under it, keyed by C{username}
        and C{peer}, counting against C{attempts} (from
        C{throttle.connection()}).
    @return: a txaio future resolving to the avatar ID (C{bytes} if
        C{username} was C{bytes}) or rejected with L{UnauthorizedLogin} (which
        includes the throttle's L{TooManyAttempts}).  A checker error of any
        other kind is logged and becomes L{UnauthorizedLogin}: never a success.
    """
    credentials = UsernamePassword(username, password)  # type: ignore[arg-type]
    if throttle is None:
        d = _requestAvatarId(checker, credentials)
    else:
        d = throttle.attempt(
            lambda: _requestAvatarId(checker, credentials),
            username=username,
            peer=peer,
            connection=attempts,
        )
    future = txaio.create_future(canceller=lambda _: d.cancel())

    def succeeded(avatarId: Any) -> None:
        if not txaio.is_called(future):
            txaio.resolve(future, avatarId)

    def failed(reason: Failure) -> None:
        if txaio.is_called(future):
            # Cancelled by the caller, who no longer listens.
            return
        if not reason.check(UnauthorizedLogin):
            log.failure("checker {checker!r} failed", reason, checker=checker)
            reason = Failure(UnauthorizedLogin())
        txaio.reject(future, reason.value)

    d.addCallbacks(succeeded, failed)
    return future


async def checkPassword(
    checker: Any,
    username: str | bytes,
    password: str | bytes,
    **throttling: Any,
) -> str | bytes:
    """
    C{await} twin of L{check}: the avatar ID, or L{UnauthorizedLogin} raised.
    """
    result: str | bytes = await check(checker, username, password, **throttling)
    return result


async def shutdown() -> None:
    """
    Shut the guest reactor down: run Twisted's shutdown triggers (LDAP search
    connections unbound, thread pools stopped) and return once they are done;
    the asyncio loop keeps running.  Nothing to do if L{install} was not called.
    """
    reactor = _installedReactor()
    if not isinstance(reactor, GuestReactor) or not reactor.running:
        return
    done = reactor.loop.create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    reactor.addSystemEventTrigger("after", "shutdown", finished)
    reactor.stop()
    await done
