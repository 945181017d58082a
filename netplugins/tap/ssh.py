"""
C{twistd np-ssh}: the SSH service's settings, its command line and its
keyword twin.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import attrs
from attrs import evolve, field, frozen
from twisted.application.service import MultiService, Service
from twisted.python import usage

from netplugins.coerce import choice
from netplugins.cred.throttle import LoginThrottle
from netplugins.homes import DEFAULT_ROOT, HomeStore, checkRootTemplate
from netplugins.limits.tracker import ConnectionTracker
from netplugins.options import ServiceOptions, ServiceSettings
from netplugins.reload import onReload
from netplugins.service import listeningService, supervised
from netplugins.settings import flag, repeated, setting
from netplugins.ssh.telnet import checkTelnetEndpoint

DEFAULT_LISTEN = ("tcp:8022:interface=127.0.0.1",)
SHELLS = ("builtin", "none")

shellChoice = choice(*SHELLS, name="--shell")


def _hostKeyFile(path: str) -> str:
    from netplugins.ssh.hostkeys import loadHostKeys

    loadHostKeys([path])
    return path


_hostKeyFile.coerceDoc = "An OpenSSH private key file."  # type: ignore[attr-defined]


def _directory(path: str) -> str:
    if not os.path.isdir(path):
        raise ValueError(f"{path!r} is not a directory")
    return path


@frozen(kw_only=True)
class SSHSettings(ServiceSettings):
    """
    What np-ssh is told: the shared settings, the users' homes and keys,
    the host keys, and what sessions may run.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    root: str | None = setting(
        None,
        "TEMPLATE: each user's SFTP home, the user store np-ftp shares "
        "({user}, {homeDirectory} from an ldap: checker); default: "
        "<state-dir>/homes/{user} (np-ftp's too), made at first login.",
        checkRootTemplate,
    )
    authorizedKeysDir: str | None = setting(
        None,
        "A directory of OpenSSH authorized_keys files, one per user: DIR/USER. "
        "(ldap: checkers give keys too: their entries' sshPublicKey values, "
        "when their configuration fetches that attribute.)",
        _directory,
    )
    hostKey: tuple[str, ...] = repeated(
        "A private host key file (ed25519 or RSA of 3072 bits or more); "
        "repeatable.  Without any, ed25519 and RSA-3072 keys are generated "
        "in <state-dir>/ssh.",
        _hostKeyFile,
    )
    forceCommand: str | None = setting(
        None,
        "Run this program (with /bin/sh -c, SSH_ORIGINAL_COMMAND set) for every "
        "shell and exec request, as OpenSSH's ForceCommand.",
    )
    shell: str = setting(
        "none",
        "What shell and exec requests run: builtin (a restricted shell: echo, "
        "uname, uptime, date, whoami, pwd, ls, sleep, exit, exec) or none.",
        shellChoice,
    )
    telnet: str | None = setting(
        None,
        "ENDPOINT: serve the built-in shell over telnet too, with a login "
        "dialogue (for the book's telnet examples); a loopback, unix: or "
        "ssl:/tls: endpoint only, as passwords cross it in the clear.",
        checkTelnetEndpoint,
    )
    allowHardlinks: bool = flag(
        "Offer SFTP's hardlink@openssh.com: hard links of regular files, "
        "both names inside the user's home."
    )
    #: The login throttle (keyword twin only; tests pass short delays).
    throttle: LoginThrottle | None = field(default=None)

    @telnet.validator
    def _telnetShell(self, attribute: attrs.Attribute[Any], value: str | None) -> None:
        if value is not None and self.shell != "builtin":
            raise ValueError("--telnet serves the built-in shell: add --shell builtin")


class Options(ServiceOptions):
    """
    Options for C{twistd np-ssh}.
    """

    settingsType = SSHSettings
    usesCheckers = True
    synopsis = "[options]"
    longdesc = (
        "An SSH server for accounts that are not OS accounts: SFTP jailed in "
        "each user's home, and (when allowed) a built-in restricted shell or a "
        "forced command.  Modern algorithms only (curve25519, ML-KEM hybrid, "
        "ChaCha20-Poly1305, AES-GCM, encrypt-then-MAC, ed25519 and RSA-SHA2 "
        "host keys) with strict key exchange.  Users log in with --auth "
        "checkers (password, keyboard-interactive) or public keys from "
        "--authorized-keys-dir; no forwarding of any kind."
    )
    tapname = "np-ssh"

    compData = usage.Completions(optActions={"shell": usage.CompleteList(SHELLS)})


class _HostKeyReload(Service):
    """
    Reads the host keys again at every SIGHUP while running.
    """

    def __init__(self, hostKeys: Any) -> None:
        self.hostKeys = hostKeys
        self._remove: Any = None

    def startService(self) -> None:
        super().startService()
        self._remove = onReload(self.hostKeys.reload)

    def stopService(self) -> None:
        super().stopService()
        if self._remove is not None:
            self._remove()
            self._remove = None


def sshService(
    settings: SSHSettings = SSHSettings(), *, reactor: Any = None
) -> MultiService:
    """
    The SSH service: the keyword twin of C{twistd np-ssh} is
    C{sshService(SSHSettings(root=..., shell="builtin", ...))}.

    @raise ValueError: for a bad value.
    """
    if reactor is None:
        from twisted.internet import reactor
    from twisted.cred.portal import Portal

    from netplugins.ssh.auth import (
        PublicKeyChecker,
        directoryCheckers,
        keysInDirectory,
        keysInLDAP,
    )
    from netplugins.ssh.factory import LOGIN_TIMEOUT, SSHServerFactory
    from netplugins.ssh.hostkeys import HostKeys
    from netplugins.ssh.session import SessionPolicy, SSHRealm
    from netplugins.ssh.telnet import TelnetFactory

    common = settings.common()
    root = settings.root or os.path.join(os.path.abspath(common.stateDir), DEFAULT_ROOT)
    store = HomeStore(
        root,
        checkers=common.checkers,
        createHomes=settings.root is None,
        reactor=reactor,
    )
    policy = SessionPolicy(
        shell=settings.shell,
        forceCommand=settings.forceCommand,
        hardlinks=settings.allowHardlinks,
    )
    checkers = list(common.checkers)
    sources = [keysInLDAP(c) for c in directoryCheckers(common.checkers)]
    if settings.authorizedKeysDir is not None:
        sources.insert(0, keysInDirectory(settings.authorizedKeysDir))
    if sources:
        checkers.append(PublicKeyChecker(sources))
    portal = Portal(SSHRealm(store, policy, reactor), checkers)
    hostKeys = HostKeys(settings.hostKey, common.stateDir)
    factory = SSHServerFactory(
        hostKeys,
        portal,
        settings.throttle or LoginThrottle(reactor),
        loginTimeout=common.limits.preAuthTimeout or LOGIN_TIMEOUT,
        closeGrace=common.limits.closeGrace,
        reactor=reactor,
    )
    tracker = ConnectionTracker(common.limits, reactor=reactor)
    listeners = listeningService(
        common,
        factory,
        name="np-ssh",
        defaultListen=settings.defaultListen,
        reactor=reactor,
        tracker=tracker,
    )
    if settings.telnet is not None:
        telnet = TelnetFactory(
            portal,
            factory.throttle,
            loginTimeout=factory.loginTimeout,
            closeGrace=factory.closeGrace,
            reactor=reactor,
        )
        listeningService(
            evolve(common, listen=(settings.telnet,), listenTLS=(), tls=None),
            telnet,
            name="np-ssh telnet",
            reactor=reactor,
            tracker=tracker,
        ).setServiceParent(listeners)
    _HostKeyReload(hostKeys).setServiceParent(listeners)
    return supervised(listeners, common, name="np-ssh", reactor=reactor)


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The SSH service configured by a parsed command line.
    """
    return sshService(config.settings, reactor=reactor)
