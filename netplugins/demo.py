"""
The demo composition: every netplugins service on 127.0.0.1 with embedded defaults,
as C{tac/demo.tac} starts it.

State lives under one directory (C{var} by default): the development certificate
the shared TLS generates, a demo password file, an HMAC key file and the mpconn
authkey, each made on first start and kept after.  Once everything listens, one
log event lists what listens where.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.logger import Logger

from netplugins.addresses import describe
from netplugins.service import listeningPorts
from netplugins.tls.identity import TLSSettings
from netplugins.tls.server import ServerTLS

log = Logger()

DEMO_USERS = {"alice": "alice-password", "bob": "bob-password"}

#: The zone np-dns serves in the demo.
DEMO_ZONE = """\
$ORIGIN demo.test.
$TTL 300
@      IN SOA   ns hostmaster 1 7200 3600 1209600 300
       IN NS    ns
       IN MX    10 mail
ns     IN A     127.0.0.1
mail   IN A     127.0.0.1
www    IN CNAME mail
*.wild IN TXT   "wildcard"
"""

#: Where the demo listens on 127.0.0.1; tests pass 0s for free ports.
DEMO_PORTS = {
    "echo": 7007,
    "echo-tls": 7008,
    "echo-hmac": 7009,
    "daytime": 1313,
    "zen": 1060,
    "zen-tls": 1061,
    "mpconn": 25000,
    "kv": 15000,
    "rpc": 17001,
    "httpbin": 8000,
    "httpbin-tls": 8443,
    "wsgi": 8080,
    "wsgi-tls": 8444,
    "smtp": 8025,
    "submission": 8587,
    "smtps": 8465,
    "pop3": 8110,
    "pop3s": 8995,
    "imap": 8143,
    "imaps": 8993,
    "ftp": 2121,
    "ftps": 9990,
    "rpyc": 18861,
    "dns": 5353,
    "memcache": 11211,
    "memcache-tls": 11212,
    "ssh": 8022,
    "telnet": 8023,
    "zmq-frontend": 5559,
    "zmq-backend": 5560,
}


def _writeOnce(path: str, make: Any) -> str:
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(make())
    return path


def demoFiles(stateDir: str) -> dict[str, str]:
    """
    Make (once) the demo's password file, HMAC key file, DNS zone file and
    mpconn authkey.

    @return: their paths by name: C{htpasswd}, C{hmackeys}, C{zone},
        C{authkey}.
    """
    from netplugins.cred.htpasswd import hashPassword

    os.makedirs(stateDir, mode=0o700, exist_ok=True)

    def htpasswd() -> bytes:
        return "".join(
            f"{user}:{hashPassword(password, cost=10)}\n"
            for user, password in DEMO_USERS.items()
        ).encode()

    return {
        "htpasswd": _writeOnce(os.path.join(stateDir, "demo.htpasswd"), htpasswd),
        "hmackeys": _writeOnce(
            os.path.join(stateDir, "demo.hmackeys"),
            lambda: f"demo:hex:{secrets.token_hex(32)}\n".encode(),
        ),
        "zone": _writeOnce(
            os.path.join(stateDir, "demo.test.zone"), lambda: DEMO_ZONE.encode()
        ),
        "authkey": _writeOnce(
            os.path.join(stateDir, "mpconn.authkey"),
            lambda: secrets.token_hex(32).encode() + b"\n",
        ),
    }


def _where(address: Any) -> str:
    return f"{getattr(address, 'type', 'UNIX'):<4} {describe(address)}"


def zmqDevices(root: IService) -> list[Any]:
    """
    The np-zmq devices under C{root}: ZeroMQ binds their endpoints, not
    Twisted, so L{listeningPorts} does not list them.
    """
    from netplugins.zmq.device import Device

    found, stack = [], [root]
    while stack:
        service = stack.pop()
        if isinstance(service, Device):
            found.append(service)
        stack.extend(getattr(service, "services", []))
    return found


class _Announcer(MultiService):
    """
    Starts its children, then logs one table of every listening port.
    """

    def startService(self) -> None:
        super().startService()
        rows = [
            (name, _where(address), what)
            for name, address, what in listeningPorts(self)
        ]
        for device in zmqDevices(self):
            rows.append((f"np-zmq {device.kind}", "ZMQ", device.frontendEndpoint))
            rows.append((f"np-zmq {device.kind}", "ZMQ", device.backendEndpoint))
        width = max((len(name) for name, _, _ in rows), default=0)
        table = "\n".join(
            f"  {name:<{width}}  {where:<22}  {what}" for name, where, what in rows
        )
        log.info("netplugins demo listening:\n{table}", table=table, rows=rows)


def demoService(
    stateDir: str = "var",
    ports: dict[str, int] | None = None,
    reactor: Any = None,
) -> MultiService:
    """
    Every service on 127.0.0.1, plain and TLS listeners sharing one certificate.

    @param ports: overrides L{DEMO_PORTS}.
    """
    port = {**DEMO_PORTS, **(ports or {})}

    def tcp(name: str) -> str:
        return f"tcp:{port[name]}:interface=127.0.0.1"

    def zmqTCP(name: str) -> str:
        return f"tcp://127.0.0.1:{port[name] or '*'}"

    from netplugins.tap.daytime import DaytimeSettings, daytimeService
    from netplugins.tap.dns import DNSSettings, dnsService
    from netplugins.tap.echo import EchoSettings, echoService
    from netplugins.tap.ftp import FTPSettings, ftpService
    from netplugins.tap.httpbin import HTTPBinSettings, httpbinService
    from netplugins.tap.kv import KVSettings, kvService
    from netplugins.tap.mail import MailHostSettings, mailService
    from netplugins.tap.memcache import MemcacheSettings, memcacheService
    from netplugins.tap.mpconn import MPConnSettings, mpconnService
    from netplugins.tap.rpc import RPCSettings, rpcService
    from netplugins.tap.rpyc import RPyCSettings, rpycService
    from netplugins.tap.ssh import SSHSettings, sshService
    from netplugins.tap.wsgi import WSGISettings, wsgiService
    from netplugins.tap.zen import ZenSettings, zenService
    from netplugins.tap.zmq import ZMQSettings, zmqService

    files = demoFiles(stateDir)
    tls = ServerTLS(TLSSettings(stateDir=stateDir), reactor=reactor)
    with open(files["authkey"], "rb") as f:
        authkey = f.read().rstrip(b"\n")
    top = _Announcer()
    for service in [
        echoService(
            EchoSettings(
                listen=(
                    tcp("echo"),
                    "unix:" + os.path.join(stateDir, "echo.sock"),
                    f"hmac:keyfile={files['hmackeys']}:{tcp('echo-hmac')}",
                ),
                listenTLS=(tcp("echo-tls"),),
                tls=tls,
                stateDir=stateDir,
            ),
            reactor=reactor,
        ),
        daytimeService(
            DaytimeSettings(
                listen=(tcp("daytime"), f"udp:{port['daytime']}:interface=127.0.0.1"),
                tls=tls,
                stateDir=stateDir,
            ),
            reactor=reactor,
        ),
        zenService(
            ZenSettings(
                listen=(tcp("zen"),),
                listenTLS=(tcp("zen-tls"),),
                tls=tls,
                stateDir=stateDir,
            ),
            reactor=reactor,
        ),
        mpconnService(
            MPConnSettings(
                authkey=authkey,
                mode="echo",
                listen=(tcp("mpconn"),),
                tls=tls,
                stateDir=stateDir,
            ),
            reactor=reactor,
        ),
        kvService(
            KVSettings(listen=(tcp("kv"),), tls=tls, stateDir=stateDir),
            reactor=reactor,
        ),
        # Foundations ch. 18's functions (addtogether, quadratic, remote_repr,
        # lengths) over XML-RPC (/RPC2) and JSON-RPC 2.0 (/jsonrpc).
        rpcService(
            RPCSettings(listen=(tcp("rpc"),), tls=tls, stateDir=stateDir),
            reactor=reactor,
        ),
        # /protected takes the demo users (over TLS; Basic auth in the clear is
        # refused).
        httpbinService(
            HTTPBinSettings(
                listen=(tcp("httpbin"),),
                listenTLS=(tcp("httpbin-tls"),),
                auth=(f"htpasswd:{files['htpasswd']}",),
                tls=tls,
                stateDir=stateDir,
            ),
            reactor=reactor,
        ),
        # The Python Cookbook's PathDispatcher app (11.5): /hello?name=, /localtime.
        wsgiService(
            WSGISettings(
                app="netplugins.examples.pathdispatch:app",
                listen=(tcp("wsgi"),),
                listenTLS=(tcp("wsgi-tls"),),
                tls=tls,
                stateDir=stateDir,
            ),
            reactor=reactor,
        ),
        # Mail for alice@localhost and bob@localhost, in Maildirs under the
        # state dir; logins over TLS (STARTTLS or implicit) with the demo users.
        mailService(
            MailHostSettings(
                domains=("localhost",),
                hostname="localhost",
                smtp=(tcp("smtp"),),
                submission=(tcp("submission"),),
                smtps=(tcp("smtps"),),
                pop3=(tcp("pop3"),),
                pop3s=(tcp("pop3s"),),
                imap=(tcp("imap"),),
                imaps=(tcp("imaps"),),
                auth=(f"htpasswd:{files['htpasswd']}",),
                tls=tls,
                stateDir=stateDir,
            ),
            reactor=reactor,
        ),
        # Foundations ch. 18's RPyC line counter, where its rpyc_client.py
        # connects (RPyC's own port).
        rpycService(
            RPyCSettings(
                service="netplugins.examples.bookrpyc:LineCounterService",
                listen=(tcp("rpyc"),),
                tls=tls,
                stateDir=stateDir,
            ),
            reactor=reactor,
        ),
        # FTP for the demo users, each jailed in a home under the state dir
        # (made at their first login); passwords only after AUTH TLS (or on
        # the implicit-TLS port). Python's ftplib cannot resume the control
        # connection's TLS session on data connections: reuse is optional.
        ftpService(
            FTPSettings(
                listen=(tcp("ftp"),),
                listenTLS=(tcp("ftps"),),
                auth=(f"htpasswd:{files['htpasswd']}",),
                tlsSessionReuse="optional",
                tls=tls,
                stateDir=stateDir,
            ),
            reactor=reactor,
        ),
        # SSH for the demo users (password or keyboard-interactive): SFTP
        # in their home under the state dir, the restricted shell, and the
        # same shell behind telnet on loopback; host keys made on first start.
        sshService(
            SSHSettings(  # noqa: S604 (np-ssh's built-in shell runs no program)
                listen=(tcp("ssh"),),
                auth=(f"htpasswd:{files['htpasswd']}",),
                shell="builtin",
                telnet=tcp("telnet"),
                stateDir=stateDir,
            ),
            reactor=reactor,
        ),
        # Authoritative DNS for demo.test (www is a CNAME to mail, *.wild a
        # wildcard), UDP and TCP on one port.
        dnsService(
            DNSSettings(
                zone=(f"demo.test={files['zone']}",),
                listen=(
                    f"udp:{port['dns']}:interface=127.0.0.1",
                    tcp("dns"),
                ),
                stateDir=stateDir,
            ),
            reactor=reactor,
        ),
        # memcached's text and meta protocols in 64 MiB, on the port the
        # book's squares.py has built in.
        memcacheService(
            MemcacheSettings(
                listen=(tcp("memcache"),),
                listenTLS=(tcp("memcache-tls"),),
                memoryLimit=64 * 1024 * 1024,
                tls=tls,
                stateDir=stateDir,
            ),
            reactor=reactor,
        ),
        # A ZeroMQ queue device (ROUTER/DEALER): REQ clients on 5559, REP
        # workers on 5560, in the clear on loopback.
        zmqService(
            ZMQSettings(
                device="queue",
                frontend=zmqTCP("zmq-frontend"),
                backend=zmqTCP("zmq-backend"),
                stateDir=stateDir,
            ),
            reactor=reactor,
        ),
    ]:
        service.setServiceParent(top)
    return top
