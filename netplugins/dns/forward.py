# -*- test-case-name: tests.test_dns_forward -*-
"""
The forwarder: questions outside our zones from C{--recursion-allow}
clients go to the C{--forward} upstreams, each from a fresh UDP socket (a
random source port) with a random ID.  A reply counts only if it comes from
the upstream's address and port, carries the ID, and repeats the question
exactly (case included); only the records on the question's CNAME chain are
kept (what the question asked for is all a forwarder may believe), and they
are cached for their TTL, negative answers for the SOA's (RFC 2308), both
capped.  A truncated reply (TC) is asked again of the same upstream over
TCP (RFC 7766), with a fresh ID and under the same checks.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
from dns.name import Name
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ClientFactory, DatagramProtocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int16StringReceiver
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from netplugins.dns.server import Engine, Send

#: Seconds to wait for an upstream before trying the next one.
UPSTREAM_TIMEOUT = 2.0

#: Questions waiting for an upstream at once; more are answered SERVFAIL.
MAX_OUTSTANDING = 1000

#: Answers the cache holds; the least recently used goes first.
CACHE_SIZE = 10000

#: The longest a positive answer is cached, and a negative one (RFC 2308
#: suggests up to 3 hours).
MAX_TTL = 86400
MAX_NEGATIVE_TTL = 3600

_CacheKey = tuple[Name, int, int]


class _Entry:
    __slots__ = ("answer", "expires", "rcode", "stored")

    def __init__(
        self, rcode: int, answer: list[dns.rrset.RRset], stored: float, ttl: int
    ):
        self.rcode = rcode
        self.answer = answer
        self.stored = stored
        self.expires = stored + ttl


class _Outstanding(DatagramProtocol):
    """
    One question on its way to an upstream, from its own socket.
    """

    def __init__(
        self,
        forwarder: Forwarder,
        query: dns.message.Message,
        done: Any,
        upstreams: list[tuple[str, int]],
    ):
        self.forwarder = forwarder
        self.query = query
        self.done = done
        self.upstreams = upstreams
        self.upstream: tuple[str, int] | None = None
        self.ident = 0
        self.timeout: IDelayedCall | None = None
        self.port: Any = None
        #: The TCP connector while asking over TCP.
        self.tcp: Any = None

    def send(self) -> None:
        """
        Ask the next upstream over UDP, or give up if none is left.
        """
        self._cancelTimeout()
        self._dropTCP()
        if not self.upstreams:
            self.finish(None)
            return
        self.upstream = self.upstreams.pop(0)
        assert self.transport is not None
        self.transport.write(self._outgoing(), self.upstream)
        self.timeout = self.forwarder.reactor.callLater(
            UPSTREAM_TIMEOUT, self._timedOut
        )

    def _outgoing(self) -> bytes:
        """
        The question, with a fresh random ID.
        """
        self.ident = secrets.randbelow(65536)
        question = self.query.question[0]
        outgoing = dns.message.make_query(
            question.name, question.rdtype, question.rdclass, use_edns=0, payload=1232
        )
        outgoing.id = self.ident
        return outgoing.to_wire()

    def _timedOut(self) -> None:
        self.timeout = None
        self.forwarder.log.info(
            "No answer from upstream {host}:{port}{how}",
            host=self.upstream[0] if self.upstream else "",
            port=self.upstream[1] if self.upstream else 0,
            how=" over TCP" if self.tcp is not None else "",
        )
        self.send()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.upstream is None or (addr[0], addr[1]) != self.upstream:
            return  # not from where we asked: a forgery or a stray
        if self.tcp is not None:
            return  # asking over TCP now
        reply = self._accept(datagram)
        if reply is None:
            return
        if reply.flags & dns.flags.TC:
            self._overTCP()
            return
        self.finish(reply)

    def _accept(self, wire: bytes) -> dns.message.Message | None:
        """
        The reply in C{wire} if it answers our question (ID, QR, the
        question exactly), else C{None}.
        """
        try:
            reply = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError):
            return None
        question = self.query.question[0]
        if (
            reply.id != self.ident
            or not reply.flags & dns.flags.QR
            or len(reply.question) != 1
            or reply.question[0].name.to_wire() != question.name.to_wire()
            or reply.question[0].rdtype != question.rdtype
            or reply.question[0].rdclass != question.rdclass
        ):
            return None
        return reply

    def _overTCP(self) -> None:
        """
        Ask the same upstream again over TCP (the UDP reply was truncated).
        """
        self._cancelTimeout()
        assert self.upstream is not None
        host, port = self.upstream
        factory = _TCPQueryFactory(self, self._outgoing())
        self.tcp = self.forwarder.reactor.connectTCP(
            host, port, factory, timeout=UPSTREAM_TIMEOUT
        )
        self.timeout = self.forwarder.reactor.callLater(
            UPSTREAM_TIMEOUT, self._timedOut
        )

    def tcpReplyReceived(self, wire: bytes) -> None:
        """
        What the upstream answered over TCP: the answer, or on to the next
        upstream if it is not one (or is truncated still).
        """
        if self.tcp is None:
            return
        reply = self._accept(wire)
        if reply is None or reply.flags & dns.flags.TC:
            self.send()
            return
        self.finish(reply)

    def tcpFailed(self) -> None:
        """
        The TCP connection failed or closed before an answer: next upstream.
        """
        if self.tcp is not None:
            self.send()

    def _cancelTimeout(self) -> None:
        if self.timeout is not None and self.timeout.active():
            self.timeout.cancel()
        self.timeout = None

    def _dropTCP(self) -> None:
        tcp, self.tcp = self.tcp, None
        if tcp is not None:
            tcp.disconnect()

    def finish(self, reply: dns.message.Message | None) -> None:
        self._cancelTimeout()
        self._dropTCP()
        if self.port is not None:
            self.port.stopListening()
            self.port = None
        done, self.done = self.done, None
        if done is not None:
            done(reply)


class _TCPQuery(Int16StringReceiver):
    """
    One question over TCP: the two-octet length framing of RFC 1035
    section 4.2.2; the first message that comes back is the reply.
    """

    def __init__(self, outstanding: _Outstanding, query: bytes):
        self.outstanding = outstanding
        self.query = query
        self.answered = False

    def connectionMade(self) -> None:
        self.sendString(self.query)

    def stringReceived(self, string: bytes) -> None:
        if not self.answered:
            self.answered = True
            self.outstanding.tcpReplyReceived(string)
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.answered:
            self.outstanding.tcpFailed()


class _TCPQueryFactory(ClientFactory):
    noisy = False

    def __init__(self, outstanding: _Outstanding, query: bytes):
        self.outstanding = outstanding
        self.query = query

    def buildProtocol(self, addr: Any) -> _TCPQuery:
        return _TCPQuery(self.outstanding, self.query)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.outstanding.tcpFailed()


def _chain(
    question: dns.rrset.RRset | Any, answer: list[dns.rrset.RRset]
) -> list[dns.rrset.RRset]:
    """
    The RRsets of C{answer} on the question's CNAME chain, in chain order:
    anything else an upstream sends is not what was asked.
    """
    kept = []
    name = question.name
    for _ in range(16):
        found = [r for r in answer if r.name == name and r.rdclass == question.rdclass]
        cname = [r for r in found if r.rdtype == dns.rdatatype.CNAME]
        exact = [r for r in found if r.rdtype == question.rdtype]
        if exact:
            kept.extend(exact)
            break
        if not cname:
            break
        kept.extend(cname)
        name = cname[0][0].target  # type: ignore[attr-defined]
    return kept


class Forwarder:
    """
    Forwards questions to C{upstreams}, caching the answers.
    """

    log = Logger()

    def __init__(self, upstreams: Sequence[tuple[str, int]], reactor: Any):
        self.upstreams = list(upstreams)
        self.reactor = reactor
        self.outstanding = 0
        self._cache: OrderedDict[_CacheKey, _Entry] = OrderedDict()

    def forward(
        self, query: dns.message.Message, tcp: bool, send: Send, engine: Engine
    ) -> None:
        """
        Answer C{query} from the cache or an upstream, calling C{send} with
        the reply.
        """
        question = query.question[0]
        key = (question.name, question.rdtype, question.rdclass)
        now = self.reactor.seconds()
        entry = self._cache.get(key)
        if entry is not None and entry.expires > now:
            self._cache.move_to_end(key)
            send(self._reply(query, entry, now, tcp, engine))
            return
        if self.outstanding >= MAX_OUTSTANDING:
            send(engine.reply(query, dns.rcode.SERVFAIL, tcp))
            return

        def done(reply: dns.message.Message | None) -> None:
            self.outstanding -= 1
            if reply is None or reply.rcode() not in (
                dns.rcode.NOERROR,
                dns.rcode.NXDOMAIN,
            ):
                send(engine.reply(query, dns.rcode.SERVFAIL, tcp))
                return
            stored = self._store(key, question, reply)
            send(self._reply(query, stored, stored.stored, tcp, engine))

        self.outstanding += 1
        outstanding = _Outstanding(self, query, done, list(self.upstreams))
        outstanding.port = self.reactor.listenUDP(0, outstanding)
        outstanding.send()

    def _store(
        self, key: _CacheKey, question: Any, reply: dns.message.Message
    ) -> _Entry:
        answer = _chain(question, reply.answer)
        rcode = reply.rcode()
        ttls = [r.ttl for r in answer]
        if not answer or answer[-1].rdtype != question.rdtype:
            # Negative (NXDOMAIN or NODATA, maybe after a chain): the SOA's
            # TTL, capped by its MINIMUM (RFC 2308 section 5); without one,
            # not cached.
            soa = [r for r in reply.authority if r.rdtype == dns.rdatatype.SOA]
            minimum = soa[0][0].minimum if soa else 0  # type: ignore[attr-defined]
            ttls.append(min(soa[0].ttl, minimum, MAX_NEGATIVE_TTL) if soa else 0)
        ttl = min(*ttls, MAX_TTL)
        entry = _Entry(rcode, answer, self.reactor.seconds(), ttl)
        if ttl > 0:
            self._cache[key] = entry
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return entry

    def _reply(
        self,
        query: dns.message.Message,
        entry: _Entry,
        now: float,
        tcp: bool,
        engine: Engine,
    ) -> bytes:
        response = engine.response(query, dns.rcode.Rcode(entry.rcode))
        response.flags |= dns.flags.RA
        age = int(now - entry.stored)
        answer = []
        for rrset in entry.answer:
            copy = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype)
            copy.update(rrset)
            copy.ttl = max(0, rrset.ttl - age)
            answer.append(copy)
        response.answer = answer
        return engine.render(response, query, tcp)
