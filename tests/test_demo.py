"""
The demo composition (C{tac/demo.tac}) starts every service and each answers a
real client.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import ssl
from multiprocessing.connection import Client
from typing import Any
from xmlrpc.client import ServerProxy

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from netplugins.demo import DEMO_PORTS, demoFiles, demoService, zmqDevices
from netplugins.service import listeningPorts


def _exchange(address: tuple[str, int], data: bytes, until: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(data)
        received = b""
        while not received.endswith(until):
            chunk = s.recv(4096)
            if not chunk:
                break
            received += chunk
        return received


class DemoTests(TestCase):
    """
    Start the demo on free ports and talk to each service.
    """

    def setUp(self) -> None:
        self.stateDir = self.mktemp()
        os.makedirs(self.stateDir)
        self.service = demoService(
            stateDir=self.stateDir, ports=dict.fromkeys(DEMO_PORTS, 0)
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.ports: dict[tuple[str, str], Any] = {}
        for name, address, what in listeningPorts(self.service):
            self.ports[(name, what.split(":")[0])] = address

    def port(self, name: str, kind: str) -> tuple[str, int]:
        address = self.ports[(name, kind)]
        return (address.host, address.port)

    def test_everyServiceListens(self) -> None:
        """Each service has its listeners: plain, UNIX, hmac, UDP."""
        names = sorted(
            {
                (name, what.split(":")[0])
                for name, _, what in listeningPorts(self.service)
            }
        )
        self.assertEqual(
            names,
            [
                ("np-daytime", "tcp"),
                ("np-daytime", "udp"),
                ("np-dns", "tcp"),
                ("np-dns", "udp"),
                ("np-echo", "TLS tcp"),
                ("np-echo", "hmac"),
                ("np-echo", "tcp"),
                ("np-echo", "unix"),
                ("np-ftp", "TLS tcp"),
                ("np-ftp", "tcp"),
                ("np-httpbin", "TLS tcp"),
                ("np-httpbin", "tcp"),
                ("np-imap", "TLS tcp"),
                ("np-imap", "tcp"),
                ("np-kv", "tcp"),
                ("np-memcache", "TLS tcp"),
                ("np-memcache", "tcp"),
                ("np-mpconn", "tcp"),
                ("np-pop3", "TLS tcp"),
                ("np-pop3", "tcp"),
                ("np-rpc", "tcp"),
                ("np-rpyc", "tcp"),
                ("np-smtp", "tcp"),
                ("np-smtp submission", "TLS tcp"),
                ("np-smtp submission", "tcp"),
                ("np-ssh", "tcp"),
                ("np-ssh telnet", "tcp"),
                ("np-wsgi", "TLS tcp"),
                ("np-wsgi", "tcp"),
                ("np-zen", "TLS tcp"),
                ("np-zen", "tcp"),
            ],
        )

    @inlineCallbacks
    def test_echoZenDaytime(self) -> Any:
        """Echo, zen and daytime (TCP and UDP) answer stdlib clients."""
        echo = yield deferToThread(
            _exchange, self.port("np-echo", "tcp"), b"hello", b"hello"
        )
        zen = yield deferToThread(
            _exchange, self.port("np-zen", "tcp"), b"Beautiful is better than?", b"."
        )
        daytime = yield deferToThread(
            _exchange, self.port("np-daytime", "tcp"), b"", b"\r\n"
        )

        def udp() -> bytes:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(10)
                s.sendto(b"", self.port("np-daytime", "udp"))
                return s.recvfrom(128)[0]

        udpTime = yield deferToThread(udp)
        self.assertEqual(
            (
                echo,
                zen,
                daytime.endswith(b"\r\n"),
                udpTime == daytime or udpTime.endswith(b"\r\n"),
            ),
            (b"hello", b"Ugly.", True, True),
        )

    @inlineCallbacks
    def test_hmacEcho(self) -> Any:
        """The hmac: echo listener accepts the Cookbook 11.9 client with the key."""
        files = demoFiles(self.stateDir)
        with open(files["hmackeys"]) as f:
            key = bytes.fromhex(f.read().split(":hex:")[1].strip())

        def client() -> bytes:
            with socket.create_connection(self.port("np-echo", "hmac"), 10) as s:
                challenge = s.recv(32)
                s.sendall(hmac.new(key, challenge, hashlib.sha256).digest())
                s.sendall(b"over hmac")
                return s.recv(64)

        self.assertEqual((yield deferToThread(client)), b"over hmac")

    @inlineCallbacks
    def test_mpconn(self) -> Any:
        """multiprocessing.connection.Client echoes through np-mpconn."""
        files = demoFiles(self.stateDir)
        with open(files["authkey"], "rb") as f:
            authkey = f.read().rstrip(b"\n")

        def client() -> object:
            with Client(self.port("np-mpconn", "tcp"), authkey=authkey) as c:
                c.send({"x": [1, 2.5, "three"]})
                return c.recv()

        self.assertEqual((yield deferToThread(client)), {"x": [1, 2.5, "three"]})

    @inlineCallbacks
    def test_kv(self) -> Any:
        """The Cookbook 11.6 XML-RPC client sets and gets through np-kv."""
        host, port = self.port("np-kv", "tcp")

        def client() -> tuple[object, ...]:
            s = ServerProxy(f"http://{host}:{port}", allow_none=True)
            s.set("foo", "bar")
            s.set("spam", [1, 2, 3])
            return (s.keys(), s.get("foo"), s.get("spam"), s.exists("nope"))

        self.assertEqual(
            (yield deferToThread(client)),
            (["foo", "spam"], "bar", [1, 2, 3], False),
        )

    @inlineCallbacks
    def test_rpc(self) -> Any:
        """np-rpc serves the book's functions to xmlrpc.client and jsonrpclib."""
        import jsonrpclib  # type: ignore[import-untyped]

        host, port = self.port("np-rpc", "tcp")

        def client() -> tuple[object, ...]:
            xml = ServerProxy(f"http://{host}:{port}/RPC2")
            json = jsonrpclib.Server(f"http://{host}:{port}/jsonrpc")
            return (xml.addtogether(1, 2), json.lengths([1]))

        self.assertEqual((yield deferToThread(client)), (3, [[1, [1]]]))

    @inlineCallbacks
    def test_ftp(self) -> Any:
        """ftplib's FTP_TLS logs a demo user in, uploads, lists and downloads."""
        import ftplib
        import io

        host, port = self.port("np-ftp", "tcp")
        context = ssl.create_default_context(
            cafile=os.path.join(self.stateDir, "tls", "development-cert.pem")
        )
        context.check_hostname = False

        def client() -> tuple[list[str], bytes]:
            with ftplib.FTP_TLS(context=context, timeout=10) as ftp:
                ftp.connect(host, port)
                ftp.login("alice", "alice-password")
                ftp.prot_p()
                ftp.storbinary("STOR hello.txt", io.BytesIO(b"hello, ftp\n"))
                got = io.BytesIO()
                ftp.retrbinary("RETR hello.txt", got.write)
                return ftp.nlst(), got.getvalue()

        self.assertEqual(
            (yield deferToThread(client)), (["hello.txt"], b"hello, ftp\n")
        )

    @inlineCallbacks
    def test_rpyc(self) -> Any:
        """rpyc.connect counts lines through the book's service on np-rpyc."""
        import io

        import rpyc

        host, port = self.port("np-rpyc", "tcp")

        def client() -> tuple[object, list[str]]:
            seen: list[str] = []
            connection = rpyc.connect(host, port, config={"allow_public_attrs": True})
            try:
                count = connection.root.line_counter(
                    io.StringIO("one\ntwo\n"), seen.append
                )
            finally:
                connection.close()
            return count, seen

        self.assertEqual((yield deferToThread(client)), (2, ["one\n", "two\n"]))

    @inlineCallbacks
    def test_dns(self) -> Any:
        """dnspython gets the demo zone's CNAME chain over UDP and TCP, with AA."""
        import dns.flags
        import dns.message
        import dns.query

        def ask(query: Any, kind: str) -> tuple[object, ...]:
            host, port = self.port("np-dns", kind)
            send = dns.query.udp if kind == "udp" else dns.query.tcp
            answer = send(query, host, port=port, timeout=10)
            return (
                answer.rcode(),
                bool(answer.flags & dns.flags.AA),
                [rrset.to_text() for rrset in answer.answer],
            )

        query = dns.message.make_query("www.demo.test", "A")
        udp = yield deferToThread(ask, query, "udp")
        tcp = yield deferToThread(ask, query, "tcp")
        expected = (
            0,
            True,
            [
                "www.demo.test. 300 IN CNAME mail.demo.test.",
                "mail.demo.test. 300 IN A 127.0.0.1",
            ],
        )
        self.assertEqual((udp, tcp), (expected, expected))

    @inlineCallbacks
    def test_ssh(self) -> Any:
        """paramiko runs a command and reads back an SFTP upload as a demo user."""
        import io

        import paramiko

        host, port = self.port("np-ssh", "tcp")

        def client() -> tuple[bytes, bytes]:
            ssh = paramiko.SSHClient()
            ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            ssh.connect(
                host,
                port,
                "alice",
                "alice-password",
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
            )
            try:
                _, stdout, _ = ssh.exec_command("echo hello from np-ssh")
                said = stdout.read()
                sftp = ssh.open_sftp()
                sftp.putfo(io.BytesIO(b"over sftp\n"), "note.txt")
                back = io.BytesIO()
                sftp.getfo("note.txt", back)
                sftp.close()
                return said, back.getvalue()
            finally:
                ssh.close()

        self.assertEqual(
            (yield deferToThread(client)), (b"hello from np-ssh\n", b"over sftp\n")
        )

    @inlineCallbacks
    def test_memcache(self) -> Any:
        """pymemcache sets and gets through np-memcache, in the clear and over TLS."""
        from pymemcache.client.base import Client as MemcacheClient

        context = ssl.create_default_context(
            cafile=os.path.join(self.stateDir, "tls", "development-cert.pem")
        )
        context.check_hostname = False

        def client() -> list[object]:
            got = []
            for kind, tlsContext, key in (
                ("tcp", None, "k-plain"),
                ("TLS tcp", context, "k-tls"),
            ):
                memcache = MemcacheClient(
                    self.port("np-memcache", kind), timeout=10, tls_context=tlsContext
                )
                try:
                    memcache.set(key, b"v")
                    got.append(memcache.get(key))
                finally:
                    memcache.close()
            return got

        self.assertEqual((yield deferToThread(client)), [b"v", b"v"])

    @inlineCallbacks
    def test_zmq(self) -> Any:
        """A pyzmq REQ client reaches a REP worker through the np-zmq queue."""
        import zmq

        [device] = zmqDevices(self.service)

        def roundTrip() -> tuple[bytes, bytes]:
            context = zmq.Context()
            try:
                worker = context.socket(zmq.REP)
                client = context.socket(zmq.REQ)
                for s in (worker, client):
                    s.setsockopt(zmq.LINGER, 0)
                    s.setsockopt(zmq.RCVTIMEO, 10000)
                worker.connect(device.backendEndpoint)
                client.connect(device.frontendEndpoint)
                client.send(b"ping")
                request = worker.recv()
                worker.send(b"pong")
                return request, client.recv()
            finally:
                context.destroy(linger=0)

        self.assertEqual((yield deferToThread(roundTrip)), (b"ping", b"pong"))

    @inlineCallbacks
    def test_tls(self) -> Any:
        """The TLS listeners serve the development certificate over TLS 1.2+."""
        tlsPorts = [
            address for (_, kind), address in self.ports.items() if kind == "TLS tcp"
        ]
        context = ssl.create_default_context(
            cafile=os.path.join(self.stateDir, "tls", "development-cert.pem")
        )
        context.check_hostname = False

        def client(address: Any) -> str | None:
            with socket.create_connection((address.host, address.port), 10) as raw:
                try:
                    with context.wrap_socket(raw, server_hostname="localhost") as s:
                        return s.version()
                except ssl.SSLError:
                    return None

        versions = []
        for address in tlsPorts:
            versions.append((yield deferToThread(client, address)))
        self.assertEqual(versions, ["TLSv1.3"] * 9)

    @inlineCallbacks
    def test_wsgi(self) -> Any:
        """np-wsgi serves the Cookbook's PathDispatcher hello app."""
        import requests

        host, port = self.port("np-wsgi", "tcp")

        def client() -> tuple[int, str]:
            answer = requests.get(f"http://{host}:{port}/hello?name=Guido", timeout=10)
            return (answer.status_code, answer.text)

        status, text = yield deferToThread(client)
        self.assertEqual((status, "Hello Guido" in text), (200, True), text)

    @inlineCallbacks
    def test_httpbin(self) -> Any:
        """httpbin answers /get, and /protected takes a demo user over TLS."""
        import requests

        host, port = self.port("np-httpbin", "tcp")
        _, tlsPort = self.port("np-httpbin", "TLS tcp")
        cert = os.path.join(self.stateDir, "tls", "development-cert.pem")

        def client() -> tuple[object, ...]:
            got = requests.get(f"http://{host}:{port}/get?a=1", timeout=10).json()
            protected = f"https://localhost:{tlsPort}/protected"
            ok = requests.get(
                protected, auth=("alice", "alice-password"), verify=cert, timeout=10
            )
            wrong = requests.get(
                protected, auth=("alice", "nope"), verify=cert, timeout=10
            )
            return (got["args"], ok.status_code, wrong.status_code)

        self.assertEqual((yield deferToThread(client)), ({"a": "1"}, 200, 401))

    @inlineCallbacks
    def test_mail(self) -> Any:
        """Mail submitted over STARTTLS by alice reaches bob's IMAPS and POP3S."""
        import imaplib
        import poplib
        import smtplib
        from email.message import EmailMessage

        cert = os.path.join(self.stateDir, "tls", "development-cert.pem")
        context = ssl.create_default_context(cafile=cert)

        def client() -> tuple[object, ...]:
            message = EmailMessage()
            message["From"] = "alice@localhost"
            message["To"] = "bob@localhost"
            message["Subject"] = "demo"
            message.set_content("hello bob\n")
            _, port = self.port("np-smtp submission", "tcp")
            with smtplib.SMTP("localhost", port, timeout=10) as smtp:
                smtp.starttls(context=context)
                smtp.login("alice", "alice-password")
                smtp.send_message(message)
            _, imapsPort = self.port("np-imap", "TLS tcp")
            with imaplib.IMAP4_SSL("localhost", imapsPort, ssl_context=context) as imap:
                imap.login("bob", "bob-password")
                imap.select("INBOX", readonly=True)
                _, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                entry = data[0]
                assert isinstance(entry, tuple)
                subject = entry[1].strip()
            _, popsPort = self.port("np-pop3", "TLS tcp")
            pop = poplib.POP3_SSL("localhost", popsPort, context=context, timeout=10)
            try:
                pop.user("bob")
                pop.pass_("bob-password")
                count = pop.stat()[0]
            finally:
                pop.quit()
            return (subject, count)

        self.assertEqual((yield deferToThread(client)), (b"Subject: demo", 1))
