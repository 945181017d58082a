"""
Tests for L{netplugins.rpc}, L{netplugins.examples.bookrpc} and
L{netplugins.tap.rpc}: the functions host, with the book's ch. 18 programs as
printed, Perl RPC::XML, Ruby's xmlrpc client, xmlrpc.client, jsonrpclib and
curl.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.examples import bookrpc
from netplugins.mpconn import blocking
from netplugins.rpc.methods import RPCError
from netplugins.rpc.web import MAX_NESTING
from netplugins.tap.rpc import Options, RPCSettings, rpcService
from tests.rpcclients import runScript, xmlrpcCall

# Foundations of Python Network Programming, 3rd ed., py3/chapter18, as
# printed.
BOOK_XMLRPC_CLIENT = """\
#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter18/xmlrpc_client.py
# XML-RPC client

import xmlrpc.client

def main():
    proxy = xmlrpc.client.ServerProxy('http://127.0.0.1:7001')
    print(proxy.addtogether('x', 'ÿ', 'z'))
    print(proxy.addtogether(20, 30, 4, 1))
    print(proxy.quadratic(2, -4, 0))
    print(proxy.quadratic(1, 2, 1))
    print(proxy.remote_repr((1, 2.0, 'three')))
    print(proxy.remote_repr([1, 2.0, 'three']))
    print(proxy.remote_repr({'name': 'Arthur',
                             'data': {'age': 42, 'sex': 'M'}}))
    print(proxy.quadratic(1, 0, 1))

if __name__ == '__main__':
    main()
"""

BOOK_XMLRPC_MULTICALL = """\
#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter18/xmlrpc_multicall.py
# XML-RPC client performing a multicall

import xmlrpc.client

def main():
    proxy = xmlrpc.client.ServerProxy('http://127.0.0.1:7001')
    multicall = xmlrpc.client.MultiCall(proxy)
    multicall.addtogether('a', 'b', 'c')
    multicall.quadratic(2, -4, 0)
    multicall.remote_repr([1, 2.0, 'three'])
    for answer in multicall():
        print(answer)

if __name__ == '__main__':
    main()
"""

BOOK_XMLRPC_INTROSPECT = """\
#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter18/xmlrpc_introspect.py
# XML-RPC client

import xmlrpc.client

def main():
    proxy = xmlrpc.client.ServerProxy('http://127.0.0.1:7001')

    print('Here are the functions supported by this server:')
    for method_name in proxy.system.listMethods():

        if method_name.startswith('system.'):
            continue

        signatures = proxy.system.methodSignature(method_name)
        if isinstance(signatures, list) and signatures:
            for signature in signatures:
                print('%s(%s)' % (method_name, signature))
        else:
            print('%s(...)' % (method_name,))

        method_help = proxy.system.methodHelp(method_name)
        if method_help:
            print('  ', method_help)

if __name__ == '__main__':
    main()
"""

BOOK_JSONRPC_CLIENT = """\
#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter18/jsonrpc_client.py
# JSON-RPC client needing "pip install jsonrpclib-pelix"

from jsonrpclib import Server

def main():
    proxy = Server('http://localhost:7002')
    print(proxy.lengths((1,2,3), 27, {'Sirius': -1.46, 'Rigel': 0.12}))

if __name__ == '__main__':
    main()
"""

#: What the book's programs print against its own servers (xmlrpc_server.py
#: and jsonrpc_server.py, run once to record it), but for lengths, which
#: np-rpc serves on both faces.
BOOK_OUTPUTS = {
    "xmlrpc_client.py": (
        "xÿz\n55\n[0.0, 8.0]\n[-1.0]\n[1, 2.0, 'three']\n[1, 2.0, 'three']\n"
        "{'name': 'Arthur', 'data': {'age': 42, 'sex': 'M'}}\n",
        "xmlrpc.client.Fault: <Fault 1: \"<class 'ValueError'>:math domain error\">",
        1,
    ),
    "xmlrpc_multicall.py": ("abc\n[0.0, 8.0]\n[1, 2.0, 'three']\n", "", 0),
    "xmlrpc_introspect.py": (
        "Here are the functions supported by this server:\n"
        "addtogether(...)\n"
        "   Add together everything in the list `things`.\n"
        "lengths(...)\n"
        "   Measure the length of each input argument.\n\n"
        "Given N arguments, this function returns a list of N smaller\n"
        "lists of the form [len(arg), arg] that each state the length of\n"
        "an input argument and also echo back the argument itself.\n"
        "quadratic(...)\n"
        "   Determine `x` values satisfying: `a` * x*x + `b` * x + c == 0\n"
        "remote_repr(...)\n"
        "   Return the `repr()` rendering of the supplied `arg`.\n",
        "",
        0,
    ),
    "jsonrpc_client.py": (
        "[[3, [1, 2, 3]], [None, 27], [2, {'Sirius': -1.46, 'Rigel': 0.12}]]\n",
        "",
        0,
    ),
}

#: The book's ports, which its programs hardcode.
BOOK_PORTS = (7001, 7002)

#: Calls L{record} saw.
RECORDED: list[Any] = []


def onReactor() -> bool:
    """
    Whether this runs on the reactor (main) thread.
    """
    return threading.current_thread() is threading.main_thread()


@blocking
def blockingOnReactor() -> bool:
    """
    L{onReactor}, marked blocking.
    """
    return onReactor()


def nothing() -> None:
    """
    Return None, as a procedure does.
    """


def nestedNothing() -> list[None]:
    """
    A value with None inside.
    """
    return [None]


def later(value: Any) -> Deferred[Any]:
    """
    C{value}, through a Deferred.
    """
    return succeed(value)


async def awaited(value: Any) -> Any:
    """
    C{value}, from a coroutine.
    """
    await asyncio.sleep(0)
    return value


def record(value: Any) -> int:
    """
    Record C{value}; return how many were recorded.
    """
    RECORDED.append(value)
    return len(RECORDED)


def refuse() -> None:
    """
    Raise an RPCError of our own.
    """
    raise RPCError(-32042, "refused on purpose")


def aSet() -> set[int]:
    """
    A value neither protocol carries.
    """
    return {1}


#: The test registry: the book's functions and the ones above.
testFunctions: dict[str, Callable[..., Any]] = {
    **bookrpc.functions,
    "onReactor": onReactor,
    "blockingOnReactor": blockingOnReactor,
    "nothing": nothing,
    "nestedNothing": nestedNothing,
    "later": later,
    "awaited": awaited,
    "record": record,
    "refuse": refuse,
    "aSet": aSet,
}


class BookFunctionsTests(SynchronousTestCase):
    """
    The example registry behaves as the book's functions.
    """

    def test_functions(self) -> None:
        """The book's answers, lengths included, and its math domain error."""
        f = bookrpc.functions
        self.assertEqual(
            [
                f["addtogether"]("x", "ÿ", "z"),
                f["quadratic"](2, -4, 0),
                f["remote_repr"]((1, 2.0)),
                f["lengths"]([1, 2, 3], 27),
            ],
            ["xÿz", [0.0, 8.0], (1, 2.0), [(3, [1, 2, 3]), (None, 27)]],
        )
        self.assertRaises(ValueError, f["quadratic"], 1, 0, 1)


class OptionsTests(SynchronousTestCase):
    """
    C{twistd np-rpc}'s command line gives its settings class.
    """

    def test_settings(self) -> None:
        """Every np-rpc option lands in its field; --functions is loaded."""
        config = Options()
        config.parseOptions(
            [
                "--functions",
                "tests.test_rpc:testFunctions",
                "--no-nil",
                "--max-nesting",
                "7",
                "--max-batch",
                "3",
                "--threads",
                "2",
                "--listen",
                "tcp:0",
            ]
        )
        self.assertEqual(
            config.settings,
            RPCSettings(
                functions=testFunctions,
                noNil=True,
                maxNesting=7,
                maxBatch=3,
                threads=2,
                listen=("tcp:0",),
            ),
        )

    def test_defaults(self) -> None:
        """Without options: the book's functions, on the book's ports."""
        config = Options()
        config.parseOptions([])
        self.assertEqual(
            (config.settings.functions, RPCSettings.defaultListen),
            (
                bookrpc.functions,
                (
                    "tcp:7001:interface=127.0.0.1",
                    "tcp:7002:interface=127.0.0.1",
                ),
            ),
        )

    def test_bad(self) -> None:
        """A bad registry, nesting or cleartext --auth is a one-line usage error."""
        messages = []
        for argv in [
            ["--functions", "tests.test_rpc:nope"],
            ["--functions", "tests.test_rpc:onReactor"],
            ["--max-nesting", str(MAX_NESTING + 1)],
            ["--auth", "memory:alice:secret"],
        ]:
            error = self.assertRaises(usage.UsageError, Options().parseOptions, argv)
            messages.append("\n" in str(error))
        self.assertEqual(messages, [False] * 4)


class _Served:
    """
    Start np-rpc in the test's reactor.
    """

    def listen(self: Any, **kwargs: Any) -> str:
        """
        Start np-rpc (on a free port unless C{listen} is given); return its
        first base URL.
        """
        kwargs.setdefault("functions", testFunctions)
        kwargs.setdefault("listen", ("tcp:0:interface=127.0.0.1",))
        kwargs.setdefault("accessLog", None)
        service = rpcService(RPCSettings(**kwargs))
        service.startService()
        self.addCleanup(service.stopService)
        child = service.services[0]
        return f"http://127.0.0.1:{child.port.getHost().port}"  # type: ignore[attr-defined]


def _portFree(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class BookProgramTests(_Served, TestCase):
    """
    The book's ch. 18 clients, exactly as printed, against np-rpc serving the
    example registry on the ports they hardcode (7001 and 7002 on
    127.0.0.1: the test waits up to 10 seconds for them to be free, and
    fails if they are not).
    """

    def setUp(self) -> None:
        deadline = time.monotonic() + 10
        while not all(_portFree(p) for p in BOOK_PORTS):
            if time.monotonic() > deadline:
                self.fail(f"ports {BOOK_PORTS} busy: the book's programs need them")
            time.sleep(0.2)
        self.listen(
            functions=bookrpc.functions,
            listen=tuple(f"tcp:{p}:interface=127.0.0.1" for p in BOOK_PORTS),
        )

    def test_programs(self) -> Deferred[Any]:
        """xmlrpc_client, xmlrpc_multicall, xmlrpc_introspect and jsonrpc_client."""
        directory = self.mktemp()
        os.makedirs(directory)
        programs = {
            "xmlrpc_client.py": BOOK_XMLRPC_CLIENT,
            "xmlrpc_multicall.py": BOOK_XMLRPC_MULTICALL,
            "xmlrpc_introspect.py": BOOK_XMLRPC_INTROSPECT,
            "jsonrpc_client.py": BOOK_JSONRPC_CLIENT,
        }

        def run() -> dict[str, Any]:
            return {
                name: runScript(directory, name, source)
                for name, source in programs.items()
            }

        return deferToThread(run).addCallback(self.assertEqual, BOOK_OUTPUTS)


PERL_CLIENT = """\
use strict;
use warnings;
use RPC::XML;
use RPC::XML::Client;

my $client = RPC::XML::Client->new($ARGV[0]);
my $r = $client->send_request('addtogether', 20, 30, 4, 1);
print $r->value, "\\n";
$r = $client->send_request('remote_repr', RPC::XML::i8->new('1099511627776'));
print $r->type, ' ', $r->value, "\\n";
$r = $client->send_request('remote_repr', {name => 'Arthur', data => [1, 2.5]});
print join(',', map { "$_" } sort keys %{$r->value}), "\\n";
$r = $client->send_request('quadratic', 1, 0, 1);
print $r->code, ' ', $r->string, "\\n";
$r = $client->send_request('system.multicall', [
    {methodName => 'addtogether', params => [1, 2]},
    {methodName => 'nope', params => []},
]);
print $r->value->[0][0], ' ', $r->value->[1]{faultCode}, "\\n";
$r = $client->send_request('nothing');
print $r->type, "\\n";
"""

RUBY_CLIENT = """\
require "xmlrpc/client"

server = XMLRPC::Client.new2(ARGV[0])
p server.call("addtogether", 20, 30, 4, 1)
p server.call("addtogether", 2**30, 2**30, 2**30)
p server.call("remote_repr", {"name" => "Arthur", "data" => [1, 2.5]})
begin
  server.call("quadratic", 1, 0, 1)
rescue XMLRPC::FaultException => e
  p [e.faultCode, e.faultString]
end
begin
  p server.call("nothing")
rescue RuntimeError => e
  p e.message
end
"""


class ServiceTests(_Served, TestCase):
    """
    np-rpc over real sockets, with clients nobody here wrote.
    """

    def test_faults(self) -> Deferred[Any]:
        """An exception is fault 1 / -32000 (SimpleXMLRPCServer); others keep codes."""
        url = self.listen()

        def run() -> list[Any]:
            proxy: Any = xmlrpc.client.ServerProxy(url)
            out: list[Any] = []
            for name, args in [
                ("quadratic", (1, 0, 1)),
                ("quadratic", (1,)),
                ("nope", ()),
                ("refuse", ()),
                ("aSet", ()),
            ]:
                try:
                    getattr(proxy, name)(*args)
                except xmlrpc.client.Fault as f:
                    out.append((f.faultCode, f.faultString))
                request = {"jsonrpc": "2.0", "method": name, "params": args, "id": 1}
                _, body = xmlrpcCall(url + "/jsonrpc", json.dumps(request).encode())
                error = json.loads(body)["error"]
                out.append((error["code"], error["message"]))
            return out

        domain = "<class 'ValueError'>:math domain error"
        arity = "quadratic: missing a required argument: 'b'"
        return deferToThread(run).addCallback(
            self.assertEqual,
            [
                (1, domain),
                (-32000, domain),
                (-32602, arity),
                (-32602, arity),
                (-32601, "no such method: 'nope'"),
                (-32601, "no such method: 'nope'"),
                (-32042, "refused on purpose"),
                (-32042, "refused on purpose"),
                (
                    -32603,
                    "the value cannot be sent over XML-RPC: "
                    "cannot marshal <class 'set'> objects",
                ),
                (-32603, "the value cannot be sent as JSON"),
            ],
        )

    def test_threadsAndDeferreds(self) -> Deferred[Any]:
        """Blocking functions run in the pool; Deferreds and coroutines work."""
        url = self.listen()

        def run() -> list[Any]:
            proxy: Any = xmlrpc.client.ServerProxy(url)
            return [
                proxy.onReactor(),
                proxy.blockingOnReactor(),
                proxy.later(1),
                proxy.awaited("a"),
            ]

        return deferToThread(run).addCallback(self.assertEqual, [True, False, 1, "a"])

    def test_nil(self) -> Deferred[Any]:
        """None is <nil/>; with noNil a None result is true, a nested one a fault."""
        plain, strict = self.listen(), self.listen(noNil=True)

        def run() -> list[Any]:
            out: list[Any] = []
            for url in [plain, strict]:
                proxy: Any = xmlrpc.client.ServerProxy(url, allow_none=True)
                out.append(proxy.nothing())
                try:
                    out.append(proxy.nestedNothing())
                except xmlrpc.client.Fault as f:
                    out.append(f.faultCode)
                multicall = xmlrpc.client.MultiCall(proxy)
                multicall.nothing()
                out.append([multicall()[0]])
                request = {"jsonrpc": "2.0", "method": "nothing", "id": 1}
                _, body = xmlrpcCall(url + "/jsonrpc", json.dumps(request).encode())
                out.append(json.loads(body)["result"])
            return out

        return deferToThread(run).addCallback(
            self.assertEqual,
            [None, [None], [None], None, True, -32603, [True], None],
        )

    def test_i8(self) -> Deferred[Any]:
        """Integers past 32 bits answer <i8>; past 64, a fault (XML), exact (JSON)."""
        url = self.listen()

        def call(value: str) -> bytes:
            body = (
                "<methodCall><methodName>remote_repr</methodName><params><param>"
                f"<value>{value}</value></param></params></methodCall>"
            )
            return xmlrpcCall(url + "/RPC2", body.encode())[1]

        def run() -> list[Any]:
            big = call("<i8>1099511627776</i8>")
            small = call("<i4>7</i4>")
            huge = call(f"<int>{2**70}</int>")
            request: dict[str, Any] = {"jsonrpc": "2.0", "id": 1}
            request.update(method="remote_repr", params=[2**70])
            _, body = xmlrpcCall(url + "/jsonrpc", json.dumps(request).encode())
            return [
                b"<i8>1099511627776</i8>" in big,
                xmlrpc.client.loads(big)[0][0],
                b"<int>7</int>" in small,
                b"int exceeds XML-RPC limits" in huge,
                json.loads(body)["result"] == 2**70,
            ]

        return deferToThread(run).addCallback(
            self.assertEqual, [True, 2**40, True, True, True]
        )

    def test_jsonRequests(self) -> Deferred[Any]:
        """Invalid Requests: -32600 id null, unrun; id 1.5 echoed; notifications run."""
        url = self.listen() + "/jsonrpc"
        del RECORDED[:]
        bodies = [
            {"jsonrpc": "2.0", "method": 1, "id": 1},
            {"jsonrpc": "2.0", "method": 1, "params": "bar"},
            {"jsonrpc": "2.0", "method": "record", "params": [1], "id": {"a": 1}},
            {"jsonrpc": "2.0", "method": "remote_repr", "params": [7], "id": 1.5},
            [1, 2],
            {"jsonrpc": "2.0", "method": "record", "params": [2]},
            [
                {"jsonrpc": "2.0", "method": "record", "params": [3]},
                {"jsonrpc": "2.0", "method": "nope"},
            ],
            {
                "jsonrpc": "2.0",
                "method": "quadratic",
                "params": {"a": 2, "b": -4, "c": 0},
                "id": 2,
            },
        ]
        invalid = {
            "jsonrpc": "2.0",
            "error": {"code": -32600, "message": "Invalid Request"},
            "id": None,
        }

        def run() -> list[Any]:
            out: list[Any] = []
            for body in bodies:
                code, answer = xmlrpcCall(url, json.dumps(body).encode())
                out.append((code, json.loads(answer) if answer else None))
            out.append(list(RECORDED))
            return out

        return deferToThread(run).addCallback(
            self.assertEqual,
            [
                (200, invalid),
                (200, invalid),
                (200, invalid),
                (200, {"jsonrpc": "2.0", "result": 7, "id": 1.5}),
                (200, [invalid, invalid]),
                (204, None),
                (204, None),
                (200, {"jsonrpc": "2.0", "result": [0.0, 8.0], "id": 2}),
                [2, 3],
            ],
        )

    def test_rootByContentType(self) -> Deferred[Any]:
        """/ answers JSON-RPC to a JSON body, XML-RPC to anything else."""
        url = self.listen() + "/"
        jsonCall: dict[str, Any] = {"jsonrpc": "2.0", "id": "x"}
        jsonCall.update(method="addtogether", params=[1, 2])
        xmlCall = xmlrpc.client.dumps((1, 2), "addtogether").encode()

        def run() -> list[Any]:
            _, jsonAnswer = xmlrpcCall(
                url,
                json.dumps(jsonCall).encode(),
                {"Content-Type": "application/json-rpc"},
            )
            _, xmlAnswer = xmlrpcCall(url, xmlCall, {"Content-Type": "text/xml"})
            return [json.loads(jsonAnswer)["result"], xmlrpc.client.loads(xmlAnswer)]

        return deferToThread(run).addCallback(self.assertEqual, [3, ((3,), None)])

    def test_perl(self) -> Deferred[Any]:
        """Perl RPC::XML: ints, <i8>, structs, faults, multicall and nil."""
        url = self.listen() + "/RPC2"
        directory = self.mktemp()
        os.makedirs(directory)
        return deferToThread(
            runScript, directory, "client.pl", PERL_CLIENT, url
        ).addCallback(
            self.assertEqual,
            (
                "55\ni8 1099511627776\ndata,name\n"
                "1 <class 'ValueError'>:math domain error\n3 -32601\nnil\n",
                "",
                0,
            ),
        )

    def test_ruby(self) -> Deferred[Any]:
        """Ruby reads <i8>, structs and faults; refuses <nil/>; noNil sends true."""
        plain, strict = self.listen(), self.listen(noNil=True)
        directory = self.mktemp()
        os.makedirs(directory)

        def run() -> list[Any]:
            return [
                runScript(directory, "client.rb", RUBY_CLIENT, url + "/RPC2")
                for url in [plain, strict]
            ]

        common = (
            '55\n3221225472\n{"name"=>"Arthur", "data"=>[1, 2.5]}\n'
            "[1, \"<class 'ValueError'>:math domain error\"]\n"
        )
        return deferToThread(run).addCallback(
            self.assertEqual,
            [
                (common + "\"wrong/unknown XML-RPC type 'nil'\"\n", "", 0),
                (common + "true\n", "", 0),
            ],
        )

    def test_basicAuth(self) -> Deferred[Any]:
        """With checkers, no credentials is 401, wrong is 401, right works."""
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        base = self.listen(checkers=(checker,), allowPlaintextAuth=True)

        def run() -> list[Any]:
            out = []
            for userinfo in ["", "alice:wrong@", "alice:secret@"]:
                url = base.replace("http://", f"http://{userinfo}")
                proxy: Any = xmlrpc.client.ServerProxy(url)
                try:
                    out.append(proxy.addtogether(1, 2))
                except xmlrpc.client.ProtocolError as e:
                    out.append(e.errcode)
            return out

        return deferToThread(run).addCallback(self.assertEqual, [401, 401, 3])
