"""
Tests for L{netplugins.kv} and L{netplugins.tap.kv}.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import signal
import socket
import ssl
import sys
import time
import xmlrpc.client
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.cred.htpasswd import hashPassword
from netplugins.cred.throttle import LoginThrottle
from netplugins.kv.store import (
    KeyMissingError,
    MemoryStore,
    RedisStore,
    SQLiteStore,
    parseStore,
)
from netplugins.kv.web import kvSite
from netplugins.options import ServiceSettings
from netplugins.rpc.web import MAX_NESTING
from netplugins.service import ListeningService
from netplugins.tap.kv import KVSettings, Options, kvService
from tests.pki import PKI
from tests.rpcclients import runScript, xmlrpcCall
from tests.support import freePort, runTwistd, startProcess, waitForPort


class MemoryStoreTests(SynchronousTestCase):
    """
    The in-memory store, with TTLs on a fake clock.
    """

    def test_ttl(self) -> None:
        """A key with a TTL is there until the TTL passes, then gone."""
        clock = Clock()
        store = MemoryStore(clock)
        store.set("k", "v", ttl=10)
        clock.advance(9.9)
        self.assertEqual(self.successResultOf(store.get("k")), "v")
        clock.advance(0.1)
        self.failureResultOf(store.get("k"), KeyMissingError)
        self.assertEqual(
            (
                self.successResultOf(store.exists("k")),
                self.successResultOf(store.keys()),
            ),
            (False, []),
        )

    def test_deleteMissing(self) -> None:
        """Deleting a missing key fails with KeyMissingError."""
        self.failureResultOf(MemoryStore(Clock()).delete("k"), KeyMissingError)


class ParseStoreTests(SynchronousTestCase):
    """
    C{--store} descriptions.
    """

    def test_kinds(self) -> None:
        """memory, sqlite:PATH, redis:// and the default SQLite in the state dir."""
        self.assertEqual(
            [
                parseStore(d, "var")
                for d in ["", "memory", "sqlite:/x/db", "redis://h:6379/2"]
            ],
            [
                ("sqlite", os.path.join("var", "np-kv.sqlite3")),
                ("memory", ""),
                ("sqlite", "/x/db"),
                ("redis", "redis://h:6379/2"),
            ],
        )

    def test_bad(self) -> None:
        """Bad descriptions are one-line ValueErrors."""
        for description in ["mem", "sqlite:", "redis://h:99999/0", "redis://h:1/x"]:
            self.assertRaises(ValueError, parseStore, description, "var")


class OptionsTests(SynchronousTestCase):
    """
    C{twistd np-kv}'s command line gives its settings class.
    """

    def test_settings(self) -> None:
        """Every np-kv option lands in its field of KVSettings."""
        config = Options()
        config.parseOptions(
            [
                "--store",
                "memory",
                "--max-body-size",
                "1024",
                "--max-nesting",
                "7",
                "--max-batch",
                "3",
                "--allow-plaintext-auth",
                "--listen",
                "tcp:0",
            ]
        )
        self.assertEqual(
            config.settings,
            KVSettings(
                store="memory",
                maxBodySize=1024,
                maxNesting=7,
                maxBatch=3,
                allowPlaintextAuth=True,
                listen=("tcp:0",),
            ),
        )

    def test_nestingMessage(self) -> None:
        """Too deep a nesting is one line, the same in Python and argv."""
        message = (
            f"maximum nesting must be at most {MAX_NESTING} (deeper values could "
            f"not be read back), not {MAX_NESTING + 1}"
        )
        error = self.assertRaises(ValueError, KVSettings, maxNesting=MAX_NESTING + 1)
        usageError = self.assertRaises(
            usage.UsageError,
            Options().parseOptions,
            ["--max-nesting", str(MAX_NESTING + 1)],
        )
        self.assertEqual(
            (str(error), str(usageError)),
            (
                f"--max-nesting: {message}",
                f"Parameter type enforcement failed: {message}",
            ),
        )


class SQLiteStoreTests(TestCase):
    """
    The SQLite store, in its one-thread pool.
    """

    @inlineCallbacks
    def test_roundTrip(self) -> Any:
        """Values of every XML-RPC type come back equal; TTLs expire."""
        now = [1000.0]
        store = SQLiteStore(os.path.abspath(self.mktemp()), now=lambda: now[0])
        self.addCleanup(store.close)
        value = {"s": "x", "i": 2**40, "f": 1.5, "b": b"\x00", "n": None, "l": [True]}
        yield store.set("a", value)
        yield store.set("t", 1, ttl=5)
        self.assertEqual((yield store.get("a")), value)
        self.assertEqual((yield store.keys()), ["a", "t"])
        now[0] += 5
        self.assertEqual((yield store.exists("t")), False)
        yield self.assertFailure(store.get("t"), KeyMissingError)
        yield store.delete("a")
        yield self.assertFailure(store.delete("a"), KeyMissingError)

    @inlineCallbacks
    def test_walAndFull(self) -> Any:
        """The database runs in WAL mode with synchronous=FULL."""
        path = os.path.abspath(self.mktemp())
        store = SQLiteStore(path)
        self.addCleanup(store.close)
        yield store.set("a", 1)
        modes = yield store._run(
            lambda: [
                store._connection().execute(f"PRAGMA {p}").fetchone()[0]
                for p in ("journal_mode", "synchronous")
            ]
        )
        self.assertEqual(modes, ["wal", 2])


COOKBOOK_SESSION = """
from xmlrpc.client import ServerProxy
s = ServerProxy(URL, allow_none=True)
s.set('foo', 'bar')
s.set('spam', [1, 2, 3])
print(sorted(s.keys()))
print(s.get('foo'))
print(s.get('spam'))
s.delete('spam')
print(s.exists('spam'))
"""


class ServiceTests(TestCase):
    """
    The service over real sockets, with clients nobody here wrote.
    """

    def listen(self, **kwargs: Any) -> str:
        """
        Start np-kv; return its base URL.
        """
        kwargs.setdefault("store", "memory")
        service = kvService(KVSettings(listen=("tcp:0:interface=127.0.0.1",), **kwargs))
        service.startService()
        self.addCleanup(service.stopService)
        (child, _) = service.services
        return f"http://127.0.0.1:{child.port.getHost().port}"  # type: ignore[attr-defined]

    def test_cookbookSession(self) -> Deferred[Any]:
        """The Cookbook 11.6 session, verbatim, through xmlrpc.client."""
        url = self.listen()
        script = "URL = " + repr(url) + "\n" + COOKBOOK_SESSION
        d = getProcessOutputAndValue(sys.executable, ["-c", script], env=os.environ)
        return d.addCallback(
            self.assertEqual, (b"['foo', 'spam']\nbar\n[1, 2, 3]\nFalse\n", b"", 0)
        )

    def test_xmlrpcExtras(self) -> Deferred[Any]:
        """Missing-key faults, Binary, None, TTL, introspection and multicall."""
        url = self.listen()

        def session() -> list[Any]:
            s: Any = xmlrpc.client.ServerProxy(url, allow_none=True)
            out: list[Any] = []
            try:
                s.get("nope")
            except xmlrpc.client.Fault as f:
                out.append((f.faultCode, f.faultString))
            s.set("b", xmlrpc.client.Binary(b"\x00\xff"))
            s.set("n", None)
            s.set("t", 1, 3600)
            out.append((s.get("b").data, s.get("n"), s.get("t")))
            out.append(s.system.listMethods())
            out.append(s.system.methodSignature("exists"))
            m = xmlrpc.client.MultiCall(s)
            m.set("m", 1)
            m.get("m")
            m.get("nope")
            results = m()
            out.append(results[1])
            try:
                results[2]
            except xmlrpc.client.Fault as f:
                out.append(f.faultCode)
            return out

        return deferToThread(session).addCallback(
            self.assertEqual,
            [
                (-32001, "no such key: 'nope'"),
                (b"\x00\xff", None, 1),
                [
                    "delete",
                    "exists",
                    "get",
                    "keys",
                    "set",
                    "system.listMethods",
                    "system.methodHelp",
                    "system.methodSignature",
                    "system.multicall",
                ],
                [["boolean", "string"]],
                1,
                -32001,
            ],
        )

    def test_jsonrpclib(self) -> Deferred[Any]:
        """jsonrpclib-pelix sets and gets; a missing key is error -32001."""
        url = self.listen()

        def session() -> list[Any]:
            import jsonrpclib  # type: ignore[import-untyped]

            s = jsonrpclib.ServerProxy(url + "/jsonrpc")
            s.set("foo", "bar")
            s.set("bytes", {"$base64": "AP8="})
            out = [s.get("foo"), sorted(s.keys()), s.exists("foo")]
            try:
                s.get("nope")
            except jsonrpclib.ProtocolError as e:
                out.append(e.args[0][0])
            return out

        return deferToThread(session).addCallback(
            self.assertEqual, ["bar", ["bytes", "foo"], True, -32001]
        )

    def test_curlJSONBatch(self) -> Deferred[Any]:
        """A curl batch: answers in order, notifications silent, errors standard."""
        url = self.listen() + "/jsonrpc"
        batch = [
            {"jsonrpc": "2.0", "method": "set", "params": ["k", 1]},
            {"jsonrpc": "2.0", "method": "get", "params": {"key": "k"}, "id": 1},
            {"jsonrpc": "2.0", "method": "nope", "id": 2},
            {"jsonrpc": "2.0", "method": "get", "params": [], "id": 3},
            {"method": "get", "id": 4},
        ]

        def run() -> Any:
            code, body = xmlrpcCall(url, json.dumps(batch).encode())
            return code, [
                (r.get("result"), r.get("error", {}).get("code"))
                for r in json.loads(body)
            ]

        return deferToThread(run).addCallback(
            self.assertEqual,
            (200, [(1, None), (None, -32601), (None, -32602), (None, -32600)]),
        )

    def test_jsonHostile(self) -> Deferred[Any]:
        """[ x 10**5, a 5000-digit int and NaN are -32700; a 10**6 batch is -32600."""
        url = self.listen() + "/jsonrpc"
        bodies = [
            b"[" * 10**5,
            b'{"jsonrpc": "2.0", "method": "set", "params": ["k", '
            + b"9" * 5000
            + b'], "id": 1}',
            b'{"jsonrpc": "2.0", "method": "set", "params": ["k", NaN], "id": 1}',
            b"[" + b"1," * (10**6 - 1) + b"1]",
        ]

        def run() -> list[Any]:
            out = []
            for body in bodies:
                code, answer = xmlrpcCall(url, body)
                out.append((code, json.loads(answer)["error"]["code"]))
            return out

        return deferToThread(run).addCallback(
            self.assertEqual,
            [(200, -32700), (200, -32700), (200, -32700), (200, -32600)],
        )

    def test_jsonUnrepresentable(self) -> Deferred[Any]:
        """
        A struct stored over XML-RPC with a base64 key is a JSON-RPC error for
        that call, answered; the rest of the batch is answered as usual.
        """
        base = self.listen()
        setCall = (
            b"<methodCall><methodName>set</methodName><params>"
            b"<param><value><string>k</string></value></param>"
            b"<param><value><struct><member><value><base64>AA==</base64></value>"
            b"<value><int>1</int></value></member></struct></value></param>"
            b"</params></methodCall>"
        )
        batch = [
            {"jsonrpc": "2.0", "method": "get", "params": ["k"], "id": 1},
            {"jsonrpc": "2.0", "method": "exists", "params": ["k"], "id": 2},
        ]

        def run() -> list[Any]:
            xmlrpcCall(base + "/RPC2", setCall)
            code, body = xmlrpcCall(base + "/jsonrpc", json.dumps(batch).encode())
            return [code, json.loads(body)]

        return deferToThread(run).addCallback(
            self.assertEqual,
            [
                200,
                [
                    {
                        "jsonrpc": "2.0",
                        "error": {
                            "code": -32603,
                            "message": "the value cannot be sent as JSON",
                        },
                        "id": 1,
                    },
                    {"jsonrpc": "2.0", "result": True, "id": 2},
                ],
            ],
        )

    def test_jsonRequestIDs(self) -> Deferred[Any]:
        """
        String, integer and float ids are answered as sent; an object, array,
        boolean or infinite id is an invalid request (id null), not run.
        """
        url = self.listen() + "/jsonrpc"
        ids = [
            '"s"',
            "7",
            "1.5",
            "-2.25e-3",
            "null",
            '{"a": 1}',
            "[1]",
            "true",
            "1e400",
        ]
        batch = ",".join(
            f'{{"jsonrpc": "2.0", "method": "set", "params": ["k{i}", 1], "id": {rid}}}'
            for i, rid in enumerate(ids)
        )
        keys = json.dumps({"jsonrpc": "2.0", "method": "keys", "id": 0}).encode()

        def run() -> list[Any]:
            code, body = xmlrpcCall(url, b"[" + batch.encode() + b"]")
            answers = [
                (a["id"], a.get("error", {}).get("code")) for a in json.loads(body)
            ]
            return [code, answers, json.loads(xmlrpcCall(url, keys)[1])["result"]]

        return deferToThread(run).addCallback(
            self.assertEqual,
            [
                200,
                [("s", None), (7, None), (1.5, None), (-2.25e-3, None), (None, None)]
                + [(None, -32600)] * 4,
                ["k0", "k1", "k2", "k3", "k4"],
            ],
        )

    def test_xmlHostile(self) -> Deferred[Any]:
        """Billion laughs, XXE and 50k nesting are faults; nothing is expanded."""
        url = self.listen() + "/RPC2"
        laughs = (
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            b"<methodCall><methodName>get</methodName><params><param><value>"
            b"<string>&b;</string></value></param></params></methodCall>"
        )
        xxe = (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b"<methodCall><methodName>get</methodName><params><param><value>"
            b"<string>&e;</string></value></param></params></methodCall>"
        )
        deep = (
            b"<methodCall><methodName>set</methodName><params><param><value>"
            b"<string>k</string></value></param><param>"
            + b"<value><array><data>" * 50000
            + b"</data></array></value>" * 50000
            + b"</param></params></methodCall>"
        )

        def run() -> list[Any]:
            out = []
            for body in [laughs, xxe, deep]:
                code, answer = xmlrpcCall(url, body)
                try:
                    xmlrpc.client.loads(answer)
                except xmlrpc.client.Fault as f:
                    out.append((code, f.faultCode, b"passwd" in answer))
            return out

        return deferToThread(run).addCallback(
            self.assertEqual,
            [(200, -32700, False), (200, -32700, False), (200, -32600, False)],
        )

    def test_bodyLimits(self) -> Deferred[Any]:
        """A 100 MB body and a gzip bomb get 413; an unknown encoding 415."""
        url = self.listen(maxBodySize=1024 * 1024) + "/RPC2"
        bomb = gzip.compress(b"\x00" * (64 * 1024 * 1024))
        call = xmlrpc.client.dumps(("k",), "get").encode()

        def run() -> list[Any]:
            with socket.create_connection(
                ("127.0.0.1", int(url.split(":")[2].split("/")[0]))
            ) as s:
                s.sendall(
                    b"POST /RPC2 HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 100000000\r\n\r\n"
                )
                status = s.recv(100).split(b"\r\n")[0]
            return [
                status,
                xmlrpcCall(url, bomb, {"Content-Encoding": "gzip"})[0],
                xmlrpcCall(url, gzip.compress(call), {"Content-Encoding": "gzip"})[0],
                xmlrpcCall(url, call, {"Content-Encoding": "br"})[0],
            ]

        return deferToThread(run).addCallback(
            self.assertEqual, [b"HTTP/1.1 413 Content Too Large", 413, 200, 415]
        )

    def test_basicAuth(self) -> Deferred[Any]:
        """With checkers, no credentials is 401, wrong is 401, right works."""
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        base = self.listen(checkers=[checker], allowPlaintextAuth=True)

        def run() -> list[Any]:
            out = []
            for userinfo in ["", "alice:wrong@", "alice:secret@"]:
                url = base.replace("http://", f"http://{userinfo}")
                s = xmlrpc.client.ServerProxy(url, allow_none=True)
                try:
                    out.append(s.exists("k"))
                except xmlrpc.client.ProtocolError as e:
                    out.append(e.errcode)
            return out

        return deferToThread(run).addCallback(self.assertEqual, [401, 401, False])

    def test_basicAuthThrottled(self) -> Deferred[Any]:
        """
        Wrong passwords on one keep-alive connection wait longer each time, the
        sixth closes it, and the next login, from a new connection, still waits.
        """
        from twisted.internet import reactor as _reactor

        reactor: Any = _reactor
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        site = kvSite(
            MemoryStore(),
            checkers=(checker,),
            allowPlaintextAuth=True,
            throttle=LoginThrottle(reactor, baseDelay=0.02),
        )
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        call = xmlrpc.client.dumps(("k",), "exists").encode()

        def session() -> list[Any]:
            connection = http.client.HTTPConnection(
                "127.0.0.1", port.getHost().port, timeout=10
            )
            out: list[Any] = []
            sockets = set()
            for attempt in range(7):
                password = "secret" if attempt == 6 else "wrong"
                token = base64.b64encode(f"alice:{password}".encode()).decode()
                started = time.monotonic()
                connection.request(
                    "POST", "/RPC2", call, {"Authorization": f"Basic {token}"}
                )
                sockets.add(id(connection.sock))
                response = connection.getresponse()
                response.read()
                elapsed = time.monotonic() - started
                # Attempt n waits 0.02 * 2 ** (n - 2) seconds; half of it is
                # well above a round trip without throttling.
                waited = attempt == 0 or elapsed >= 0.01 * 2 ** (attempt - 1)
                out.append((response.status, waited, response.getheader("Connection")))
                if attempt == 5:
                    out.append(len(sockets))
            connection.close()
            return out

        return deferToThread(session).addCallback(
            self.assertEqual,
            [(401, True, None)] * 5 + [(401, True, "close"), 1, (200, True, None)],
        )

    def test_plaintextAuthRefused(self) -> None:
        """Checkers on a cleartext listener need the explicit opt-out."""
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        self.assertRaises(
            ValueError,
            kvService,
            KVSettings(
                store="memory",
                checkers=(checker,),
                listen=("tcp:0:interface=127.0.0.1",),
            ),
        )
        with self.assertRaises(usage.UsageError):
            Options().parseOptions(
                ["--auth", "memory:alice:secret", "--store", "memory"]
            )

    def test_i8(self) -> Deferred[Any]:
        """<i8> and big JSON integers read back as <i8>; past 64 bits, set is -32602."""
        base = self.listen()
        setI8 = (
            b"<methodCall><methodName>set</methodName><params>"
            b"<param><value><string>x</string></value></param>"
            b"<param><value><i8>1099511627776</i8></value></param>"
            b"</params></methodCall>"
        )
        get = xmlrpc.client.dumps(("x",), "get").encode()

        def jsonCall(method: str, *params: Any) -> Any:
            request = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
            answer = xmlrpcCall(base + "/jsonrpc", json.dumps(request).encode())[1]
            return json.loads(answer)

        def run() -> list[Any]:
            xmlrpcCall(base + "/RPC2", setI8)
            first = xmlrpcCall(base + "/RPC2", get)[1]
            out: list[Any] = [b"<i8>1099511627776</i8>" in first]
            out.append(jsonCall("get", "x")["result"])
            jsonCall("set", "x", -(2**63))
            out.append(xmlrpc.client.loads(xmlrpcCall(base + "/RPC2", get)[1])[0])
            out.append(jsonCall("set", "y", [2**64])["error"]["code"])
            out.append(jsonCall("exists", "y")["result"])
            return out

        return deferToThread(run).addCallback(
            self.assertEqual, [True, 2**40, (-(2**63),), -32602, False]
        )

    def test_noNil(self) -> Deferred[Any]:
        """set/delete answer nil, or true with noNil (a stored None then a fault)."""
        plain, strict = self.listen(), self.listen(noNil=True)

        def run() -> list[Any]:
            out: list[Any] = []
            for url in [plain, strict]:
                s: Any = xmlrpc.client.ServerProxy(url, allow_none=True)
                out += [s.set("k", None), s.delete("k"), s.set("n", None)]
                try:
                    out.append(s.get("n"))
                except xmlrpc.client.Fault as f:
                    out.append(f.faultCode)
                request: dict[str, Any] = {"jsonrpc": "2.0", "id": 1}
                request.update(method="set", params=["k", 1])
                answer = xmlrpcCall(url + "/jsonrpc", json.dumps(request).encode())
                out.append(json.loads(answer[1])["result"])
            return out

        return deferToThread(run).addCallback(
            self.assertEqual,
            [None, None, None, None, None, True, True, True, -32603, None],
        )

    def test_jsonInvalidRequest(self) -> Deferred[Any]:
        """method 1, with or without id: -32600 id null (not 204), nothing run."""
        url = self.listen() + "/jsonrpc"
        invalid = {
            "jsonrpc": "2.0",
            "error": {"code": -32600, "message": "Invalid Request"},
            "id": None,
        }
        bodies = [
            b'{"jsonrpc": "2.0", "method": 1, "id": 1}',
            b'{"jsonrpc": "2.0", "method": 1, "params": "bar"}',
            b'{"jsonrpc": "2.0", "method": "set", "params": ["o", 1], "id": {}}',
        ]
        keys = b'{"jsonrpc": "2.0", "method": "keys", "id": 2}'

        def run() -> list[Any]:
            out: list[Any] = []
            for body in bodies:
                code, answer = xmlrpcCall(url, body)
                out.append((code, json.loads(answer)))
            out.append(json.loads(xmlrpcCall(url, keys)[1])["result"])
            return out

        return deferToThread(run).addCallback(
            self.assertEqual, [(200, invalid)] * 3 + [[]]
        )

    def test_perlAndRuby(self) -> Deferred[Any]:
        """Perl RPC::XML stores and reads an <i8>; Ruby's client works with noNil."""
        plain, strict = self.listen(), self.listen(noNil=True)
        directory = self.mktemp()
        os.makedirs(directory)
        perl = PERL_KV.replace("URL", plain + "/RPC2")
        ruby = RUBY_KV.replace("URL", strict + "/RPC2")

        def run() -> list[Any]:
            return [
                runScript(directory, "kv.pl", perl),
                runScript(directory, "kv.rb", ruby),
            ]

        return deferToThread(run).addCallback(
            self.assertEqual,
            [
                ("i8 1099511627776\nbar\nfoo\n-32001\n", "", 0),
                ('true\n{"a"=>[1, 2.5]}\ntrue\ntrue\nfalse\n[]\n', "", 0),
            ],
        )


PERL_KV = """\
use strict;
use warnings;
use RPC::XML;
use RPC::XML::Client;

my $client = RPC::XML::Client->new('URL');
$client->send_request('set', 'big', RPC::XML::i8->new('1099511627776'));
my $r = $client->send_request('get', 'big');
print $r->type, ' ', $r->value, "\\n";
$client->send_request('set', 'foo', 'bar');
print $client->send_request('get', 'foo')->value, "\\n";
print join(',', @{$client->send_request('keys')->value}) =~ s/big,//r, "\\n";
$r = $client->send_request('get', 'nope');
print $r->code, "\\n";
"""

RUBY_KV = """\
require "xmlrpc/client"

server = XMLRPC::Client.new2("URL")
p server.call("set", "k", {"a" => [1, 2.5]})
p server.call("get", "k")
p server.call("exists", "k")
p server.call("delete", "k")
p server.call("exists", "k")
p server.call("keys")
"""


class NestingTests(TestCase):
    """
    Values as deep as C{--max-nesting} allows are read back, by both faces,
    from every kind of store.
    """

    @inlineCallbacks
    def test_deepestReadBack(self) -> Any:
        """At MAX_NESTING, what XML-RPC and JSON-RPC set, both get back."""
        for store in ["memory", f"sqlite:{os.path.abspath(self.mktemp())}"]:
            service = kvService(
                KVSettings(
                    store=store,
                    maxNesting=MAX_NESTING,
                    listen=("tcp:0:interface=127.0.0.1",),
                )
            )
            service.startService()
            self.addCleanup(service.stopService)
            listening: Any = service.services[0]
            base = f"http://127.0.0.1:{listening.port.getHost().port}"
            results = yield deferToThread(self.roundTrip, base)
            deepest = [nested(MAX_NESTING - 1), nested(MAX_NESTING)]
            self.assertEqual(results, [None, None, *deepest, *deepest], store)

    def roundTrip(self, base: str) -> list[Any]:
        """
        Set the deepest values each face accepts; get both over both faces.
        """
        proxy: Any = xmlrpc.client.ServerProxy(base, allow_none=True)
        url = base + "/jsonrpc"

        def jsonCall(method: str, *params: Any) -> Any:
            request = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
            answer = json.loads(xmlrpcCall(url, json.dumps(request).encode())[1])
            return answer.get("result", answer.get("error"))

        # The call's parameter array is one level of XML-RPC's nesting.
        return [
            proxy.set("x", nested(MAX_NESTING - 1)),
            jsonCall("set", "j", nested(MAX_NESTING)),
            proxy.get("x"),
            proxy.get("j"),
            jsonCall("get", "x"),
            jsonCall("get", "j"),
        ]

    def test_deeperRefused(self) -> None:
        """Nesting above MAX_NESTING, which could not be read back, is refused."""
        self.assertRaises(
            ValueError, KVSettings, store="memory", maxNesting=MAX_NESTING + 1
        )
        with self.assertRaises(usage.UsageError):
            Options().parseOptions(
                ["--store", "memory", "--max-nesting", str(MAX_NESTING + 1)]
            )


def nested(depth: int) -> Any:
    """
    C{1} inside C{depth} lists.
    """
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


class TLSServiceTests(TestCase):
    """
    np-kv on C{listenTLS}, through C{xmlrpc.client} trusting the test CA.
    """

    def listenTLS(self, **kwargs: Any) -> tuple[str, ssl.SSLContext]:
        """
        Start np-kv on a TLS listener; return its base URL and a client context.
        """
        pki = PKI(os.path.abspath(self.mktemp()))
        cert, key = pki.serverCertificate("localhost", "127.0.0.1")
        service = kvService(
            KVSettings(
                store="memory",
                listenTLS=("tcp:0:interface=127.0.0.1",),
                tlsCert=(cert,),
                tlsKey=(key,),
                **kwargs,
            )
        )
        service.startService()
        self.addCleanup(service.stopService)
        listening: Any = next(s for s in service if isinstance(s, ListeningService))
        return (
            f"https://localhost:{listening.port.getHost().port}",
            ssl.create_default_context(cafile=pki.caPath),
        )

    def test_setGet(self) -> Deferred[Any]:
        """set then get over HTTPS, the certificate verified against the CA."""
        base, context = self.listenTLS()

        def session() -> list[Any]:
            s: Any = xmlrpc.client.ServerProxy(
                base + "/RPC2", allow_none=True, context=context
            )
            s.set("foo", "bar")
            return [s.get("foo"), s.keys()]

        return deferToThread(session).addCallback(self.assertEqual, ["bar", ["foo"]])

    def test_htpasswdBasicAuth(self) -> Deferred[Any]:
        """htpasswd: over TLS: no or wrong credentials are 401, right ones work."""
        users = self.mktemp()
        with open(users, "w") as f:
            f.write(f"alice:{hashPassword('alice-pw', cost=4)}\n")
        base, context = self.listenTLS(auth=[f"htpasswd:{users}"])

        def session() -> list[Any]:
            out = []
            for userinfo in ["", "alice:wrong@", "alice:alice-pw@"]:
                url = base.replace("https://", f"https://{userinfo}") + "/RPC2"
                s: Any = xmlrpc.client.ServerProxy(
                    url, allow_none=True, context=context
                )
                try:
                    s.set("k", 1)
                    out.append(s.get("k"))
                except xmlrpc.client.ProtocolError as e:
                    out.append(e.errcode)
            return out

        return deferToThread(session).addCallback(self.assertEqual, [401, 401, 1])

    def test_cleartextAuthForbidden(self) -> Deferred[Any]:
        """
        Right credentials over cleartext HTTP get 403; np-kv refuses to build one.
        """
        users = self.mktemp()
        with open(users, "w") as f:
            f.write(f"alice:{hashPassword('alice-pw', cost=4)}\n")
        self.assertRaises(
            ValueError,
            kvService,
            KVSettings(
                store="memory",
                auth=(f"htpasswd:{users}",),
                listen=("tcp:0:interface=127.0.0.1",),
                listenTLS=("tcp:0:interface=127.0.0.1",),
            ),
        )
        # Below the service's startup check, the site itself still refuses
        # credentials that did not arrive over TLS.
        from twisted.internet import reactor as _reactor

        reactor: Any = _reactor
        common = ServiceSettings(auth=[f"htpasswd:{users}"]).common()
        site = kvSite(MemoryStore(), checkers=common.checkers)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://alice:alice-pw@127.0.0.1:{port.getHost().port}/RPC2"

        def session() -> Any:
            try:
                xmlrpc.client.ServerProxy(url, allow_none=True).exists("k")
            except xmlrpc.client.ProtocolError as e:
                return e.errcode

        return deferToThread(session).addCallback(self.assertEqual, 403)


class DurabilityTests(TestCase):
    """
    An acknowledged set survives C{kill -9} of C{twistd -n np-kv}.
    """

    @inlineCallbacks
    def test_killed(self) -> Any:
        """Values set before SIGKILL are read back from the SQLite file."""
        path = os.path.abspath(self.mktemp())
        port = freePort()
        process = runTwistd(
            self,
            "np-kv",
            "--store",
            f"sqlite:{path}",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        )

        def run() -> None:
            try:
                waitForPort(port, process)
                s = xmlrpc.client.ServerProxy(
                    f"http://127.0.0.1:{port}", allow_none=True
                )
                for i in range(20):
                    s.set(f"k{i}", [i, b"x"])
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait()

        yield deferToThread(run)
        store = SQLiteStore(path)
        self.addCleanup(store.close)
        keys = yield store.keys()
        value = yield store.get("k19")
        self.assertEqual((len(keys), value), (20, [19, b"x"]))


class RedisTests(TestCase):
    """
    The Redis store against a real redis-server on a free loopback port.
    """

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        port = freePort()
        self.url = f"redis://127.0.0.1:{port}/0"
        process = startProcess(
            self,
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                os.path.abspath("."),
            ],
            name="redis",
        )
        return deferToThread(waitForPort, port, process)

    def test_sharedBetweenServices(self) -> Deferred[Any]:
        """Two np-kv services on one Redis see each other's writes; TTLs reach Redis."""
        urls = []
        for _ in range(2):
            service = kvService(
                KVSettings(store=self.url, listen=("tcp:0:interface=127.0.0.1",))
            )
            service.startService()
            self.addCleanup(service.stopService)
            urls.append(f"http://127.0.0.1:{service.services[0].port.getHost().port}")  # type: ignore[attr-defined]

        def run() -> list[Any]:
            import redis

            a: Any = xmlrpc.client.ServerProxy(urls[0], allow_none=True)
            b: Any = xmlrpc.client.ServerProxy(urls[1], allow_none=True)
            a.set("foo", "bar")
            a.set("t", 1, 60)
            out = [b.get("foo"), sorted(b.keys()), b.exists("t")]
            b.delete("foo")
            out.append(a.exists("foo"))
            pttl = redis.Redis.from_url(self.url).pttl("np-kv:t")
            out.append(0 < pttl <= 60000)
            return out

        return deferToThread(run).addCallback(
            self.assertEqual, ["bar", ["foo", "t"], True, False, True]
        )

    @inlineCallbacks
    def test_poisonedValue(self) -> Any:
        """A pickle planted in Redis by someone else is refused, not run."""
        import redis

        marker = os.path.abspath(self.mktemp())
        planted = (
            b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c"
            + bytes([len(f"touch {marker}")])
            + f"touch {marker}".encode()
            + b"\x85R."
        )
        yield deferToThread(redis.Redis.from_url(self.url).set, "np-kv:evil", planted)
        store = RedisStore(self.url)
        self.addCleanup(store.close)
        yield self.assertFailure(store.get("evil"), Exception)
        self.assertFalse(os.path.exists(marker))
