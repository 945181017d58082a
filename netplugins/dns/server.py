# -*- test-case-name: tests.test_dns -*-
"""
The DNS server: L{Engine} turns a query's bytes into the reply's bytes,
L{DNSDatagram} speaks UDP and L{DNSStream} TCP (RFC 7766: two-byte length
prefixes, pipelined queries answered as they come).

Bad input never raises: fewer than 12 bytes or a response is dropped, a
message dnspython cannot parse (compression loops, long labels, trailing
junk, QDCOUNT other than 1) gets FORMERR, an unknown opcode NOTIMP, an EDNS
version other than 0 BADVERS, a name outside our zones REFUSED (unless the
client may recurse).

Answers from the zones depend only on the query's bytes, so the engine keeps
the last ones it made by query bytes (less the ID): a repeated question costs
one dictionary look-up.  The cache is emptied when a zone changes.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct
from collections.abc import Callable, Sequence
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
from dns.name import Name
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import (
    DatagramProtocol,
    Factory,
    Protocol,
    connectionDone,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from netplugins.dns.answer import Answer, answer, findZone
from netplugins.dns.fastpath import FastPath
from netplugins.dns.rrl import DROP, SLIP, ResponseRateLimiter
from netplugins.dns.wire import Renderer, optRecord, recordBytes
from netplugins.dns.zone import Zone
from netplugins.limits.settings import IPNetwork
from netplugins.session import CLOSE_GRACE, Discipline, cancelCall
from netplugins.twistedinternals import datagramSender

#: The EDNS payload we advertise and the most we send over UDP (the DNS flag
#: day 2020 value): more risks IP fragmentation.
DEFAULT_PAYLOAD = 1232

#: A UDP answer to a query without EDNS is at most this long (RFC 1035).
CLASSIC_PAYLOAD = 512

#: Seconds a TCP client has to send a whole message once it began it.
MESSAGE_TIMEOUT = 10.0

#: The most answers the engine remembers by query bytes.
CACHE_SIZE = 10000

#: Queries longer than this are never cached (a question is short).
_CACHEABLE_QUERY = 512

#: Nor replies longer than this (big TCP answers): so the cache holds at
#: most CACHE_SIZE times this and the query.
_CACHEABLE_REPLY = DEFAULT_PAYLOAD

_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000
_TC = 0x0200
_AA = 0x0400
_RD_CD = 0x0100 | 0x0010
_OPCODE = 0x7800

Send = Callable[[bytes], None]


def errorReply(data: bytes, rcode: int) -> bytes:
    """
    A bare reply (header only) to the query C{data}: for messages too broken
    to answer with their question.
    """
    ident, flags = struct.unpack_from("!HH", data)
    flags = _QR | (flags & (_OPCODE | 0x0100)) | (rcode & 0xF)
    return _HEADER.pack(ident, flags, 0, 0, 0, 0)


def truncatedReply(reply: bytes) -> bytes:
    """
    C{reply} cut down to its header and question, with TC set: what a rate
    limited client gets instead of the answer (so it retries over TCP).
    """
    ident, flags, qdcount, _, _, _ = _HEADER.unpack_from(reply)
    end = _HEADER.size
    if qdcount:
        # The question's name is the first one of the message: never
        # compressed, so it ends at its first zero length byte.
        while end < len(reply) and reply[end] != 0:
            end += reply[end] + 1
        end += 5
    return (
        _HEADER.pack(ident, flags | _TC, min(qdcount, 1), 0, 0, 0)
        + reply[_HEADER.size : end]
    )


def inNetworks(host: str, networks: Sequence[IPNetwork]) -> bool:
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class Engine:
    """
    Answers queries from the zones it holds.

    @ivar zones: origin to L{Zone}; replace it with L{setZone}.
    @ivar nsid: the NSID (RFC 5001) sent to clients that ask, if any.
    @ivar payload: the EDNS payload size advertised and the UDP maximum.
    @ivar keyring: TSIG key name to L{dns.tsig.Key}.
    @ivar transferNetworks: who may transfer zones (with a TSIG key).
    @ivar recursionNetworks: who may have questions outside our zones
        forwarded.
    @ivar forwarder: does the forwarding, when set.
    @ivar transfers: answers AXFR and IXFR, when set.
    @ivar secondary: takes NOTIFY messages for zones served as a secondary.
    @param fast: whether common queries take L{FastPath}, which gives the
        same bytes.
    """

    log = Logger()

    def __init__(
        self,
        zones: dict[Name, Zone] | None = None,
        *,
        nsid: bytes | None = None,
        payload: int = DEFAULT_PAYLOAD,
        keyring: dict[Name, dns.tsig.Key] | None = None,
        transferNetworks: Sequence[IPNetwork] = (),
        recursionNetworks: Sequence[IPNetwork] = (),
        forwarder: Any = None,
        transfers: Any = None,
        secondary: Any = None,
        fast: bool = True,
    ):
        self.zones: dict[Name, Zone] = dict(zones or {})
        self.nsid = nsid
        self.payload = payload
        self.keyring = dict(keyring or {})
        self.transferNetworks = tuple(transferNetworks)
        self.recursionNetworks = tuple(recursionNetworks)
        self.forwarder = forwarder
        self.transfers = transfers
        self.secondary = secondary
        self._cache: dict[bytes, bytes] = {}
        self._fast: FastPath | None = None
        if fast:
            self._fast = FastPath(payload, self._template)
            for zone in self.zones.values():
                self._fast.setZone(zone)

    def setZone(self, zone: Zone) -> None:
        """
        Serve C{zone} (replacing the one with its origin).
        """
        self.zones[zone.origin] = zone
        if self._fast is not None:
            self._fast.setZone(zone)
        self._cache.clear()

    def handle(self, data: bytes, host: str, tcp: bool, send: Send) -> None:
        """
        Answer the query C{data} from C{host}: call C{send} with each reply
        message (none for a message not to be answered, several for a zone
        transfer, later for a forwarded question).
        """
        if len(data) < _HEADER.size:
            return
        key = data[2:] + (b"T" if tcp else b"U")
        cached = self._cache.get(key)
        if cached is not None:
            send(data[:2] + cached)
            return
        if data[2] & 0x80:
            return  # a response: answering it could start a loop
        try:
            reply = None if self._fast is None else self._fast.reply(data, tcp)
            if reply is not None:
                cacheable = True
            else:
                reply, cacheable = self._answer(data, host, tcp, send)
        except Exception:
            self.log.failure("Query from {peer} failed", peer=host)
            reply, cacheable = errorReply(data, dns.rcode.SERVFAIL), False
        if reply is None:
            return
        if (
            cacheable
            and len(data) <= _CACHEABLE_QUERY
            and len(reply) <= _CACHEABLE_REPLY
        ):
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = reply[2:]
        send(reply)

    def _answer(
        self, data: bytes, host: str, tcp: bool, send: Send
    ) -> tuple[bytes | None, bool]:
        """
        The reply to C{data} and whether it may be cached by query bytes.
        """
        try:
            query = dns.message.from_wire(
                data, keyring=self.keyring or None, continue_on_error=False
            )
        except dns.message.UnknownTSIGKey:
            return errorReply(data, dns.rcode.NOTAUTH), False
        except dns.tsig.PeerError:
            return errorReply(data, dns.rcode.NOTAUTH), False
        except (dns.exception.DNSException, ValueError, IndexError, struct.error):
            return errorReply(data, dns.rcode.FORMERR), False
        opcode = query.opcode()
        if len(query.question) != 1:
            return errorReply(data, dns.rcode.FORMERR), False
        if opcode == dns.opcode.NOTIFY:
            return self._notify(query, host), False
        if opcode != dns.opcode.QUERY:
            return self.reply(query, dns.rcode.NOTIMP, tcp), False
        if query.edns > 0:
            return self.reply(query, dns.rcode.BADVERS, tcp), False
        question = query.question[0]
        qtype = question.rdtype
        if qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            self._transfer(query, host, tcp, send)
            return None, False
        if qtype in (dns.rdatatype.OPT, dns.rdatatype.TSIG, dns.rdatatype.TKEY):
            return self.reply(query, dns.rcode.FORMERR, tcp), False
        zone = None
        if question.rdclass == dns.rdataclass.IN:
            zone = findZone(self.zones, question.name, qtype)
        if zone is None:
            if self.forwarder is not None and inNetworks(host, self.recursionNetworks):
                self.forwarder.forward(query, tcp, send, self)
                return None, False
            return self.reply(query, dns.rcode.REFUSED, tcp), (
                not self.recursionNetworks and not query.had_tsig
            )
        dnssec = bool(query.ednsflags & dns.flags.DO)
        found = answer(zone, question.name, qtype, dnssec)
        if not query.had_tsig and found.rcode < 16:
            return self._renderAnswer(data, query, zone, found, tcp), True
        response = self.response(query, found.rcode)
        if found.aa:
            response.flags |= dns.flags.AA
        response.answer = found.answer
        response.authority = found.authority
        response.additional = found.additional
        return self.render(response, query, tcp), not query.had_tsig

    def response(
        self, query: dns.message.Message, rcode: dns.rcode.Rcode
    ) -> dns.message.Message:
        """
        The skeleton of the reply to C{query}: its question, RD and CD
        copied, C{rcode}, and EDNS (our payload, DO copied, NSID) if the
        query had it.
        """
        if query.had_tsig:
            # make_response sets the reply up to be signed with the query's key.
            response = dns.message.make_response(query, our_payload=self.payload)
        else:
            response = dns.message.Message(id=query.id)
            response.flags = dns.flags.QR | (query.flags & dns.flags.RD)
            response.set_opcode(query.opcode())
            response.question = list(query.question)
        response.flags |= query.flags & dns.flags.CD
        if query.edns >= 0:
            response.use_edns(
                0,
                query.ednsflags & dns.flags.DO,
                self.payload,
                query.payload,
                options=self._options(query),
            )
        # After use_edns, which would clear an extended RCODE's upper bits.
        response.set_rcode(rcode)
        return response

    def _renderAnswer(
        self,
        data: bytes,
        query: dns.message.Message,
        zone: Zone,
        found: Answer,
        tcp: bool,
    ) -> bytes:
        """
        The reply carrying C{found}, rendered by L{netplugins.dns.wire}: as
        L{render} would, in a fraction of the time.
        """
        reply, _ = self._renderFound(data, query, zone, found, self._limit(query, tcp))
        return reply

    def _template(
        self, data: bytes, zone: Zone
    ) -> tuple[bytes, list[int], bool, Answer, Name] | None:
        """
        For L{FastPath}: the whole reply to C{data} (a query of its shape)
        from C{zone}, the offsets of its compression pointers, whether an
        RRset was left out, the answer and the name asked; C{None} when the
        reply is not from C{zone}'s records.
        """
        try:
            query = dns.message.from_wire(data, continue_on_error=False)
        except (dns.exception.DNSException, ValueError, IndexError, struct.error):
            return None
        question = query.question[0]
        if findZone(self.zones, question.name, question.rdtype) is not zone:
            return None
        found = answer(
            zone, question.name, question.rdtype, bool(query.ednsflags & dns.flags.DO)
        )
        if found.rcode >= 16:
            return None
        reply, renderer = self._renderFound(data, query, zone, found, 65535)
        return reply, renderer.pointers, renderer.dropped, found, question.name

    def _renderFound(
        self,
        data: bytes,
        query: dns.message.Message,
        zone: Zone,
        found: Answer,
        limit: int,
    ) -> tuple[bytes, Renderer]:
        """
        The reply carrying C{found}, no longer than C{limit}, and the
        L{Renderer} that made it.
        """
        (flags,) = struct.unpack_from("!H", data, 2)
        flags = _QR | (flags & (_OPCODE | _RD_CD)) | found.rcode
        if found.aa:
            flags |= _AA
        question = query.question[0]
        qname = question.name.to_wire()
        assert qname is not None
        renderer = Renderer(
            data[:2] + struct.pack("!H", flags) + bytes(8),
            qname + struct.pack("!HH", question.rdtype, question.rdclass),
            question.name,
        )
        opt = None
        if query.edns >= 0:
            options = b""
            if self.nsid is not None and any(
                o.otype == dns.edns.NSID for o in query.options
            ):
                options = struct.pack("!HH", dns.edns.NSID, len(self.nsid)) + self.nsid
            opt = optRecord(self.payload, query.ednsflags & dns.flags.DO, options)
        limit -= 0 if opt is None else len(opt)
        wire = zone.wire
        for section, rrset in itertools.chain(
            ((1, rrset) for rrset in found.answer),
            ((2, rrset) for rrset in found.authority),
            ((3, rrset) for rrset in found.additional),
        ):
            records = wire.get(id(rrset))
            if records is None:
                records = recordBytes(rrset)
            if not renderer.add(section, rrset, records, limit):
                break
        return renderer.finish(opt), renderer

    def _options(self, query: dns.message.Message) -> list[dns.edns.Option]:
        options: list[dns.edns.Option] = []
        if self.nsid is not None and any(
            o.otype == dns.edns.NSID for o in query.options
        ):
            options.append(dns.edns.NSIDOption(self.nsid))
        return options

    def reply(
        self, query: dns.message.Message, rcode: dns.rcode.Rcode, tcp: bool
    ) -> bytes:
        """
        A reply to C{query} with C{rcode} and no records, in wire form.
        """
        return self.render(self.response(query, rcode), query, tcp)

    def render(
        self, response: dns.message.Message, query: dns.message.Message, tcp: bool
    ) -> bytes:
        """
        C{response} in wire form: over UDP no longer than the client's EDNS
        payload (512 without EDNS) nor ours, whole RRsets dropped with TC set
        past that.
        """
        return response.to_wire(
            max_size=self._limit(query, tcp), prefer_truncation=True
        )

    def _limit(self, query: dns.message.Message, tcp: bool) -> int:
        """
        The most bytes a reply to C{query} may have.
        """
        if tcp:
            return 65535
        if query.edns >= 0:
            return max(CLASSIC_PAYLOAD, min(query.payload, self.payload))
        return CLASSIC_PAYLOAD

    def _notify(self, query: dns.message.Message, host: str) -> bytes | None:
        if self.secondary is not None:
            return self.secondary.notified(query, host, self)  # type: ignore[no-any-return]
        return self.reply(query, dns.rcode.REFUSED, True)

    def _transfer(
        self, query: dns.message.Message, host: str, tcp: bool, send: Send
    ) -> None:
        if self.transfers is None:
            send(self.reply(query, dns.rcode.REFUSED, tcp))
            return
        self.transfers.transfer(query, host, tcp, send, self)


class DNSDatagram(DatagramProtocol):
    """
    DNS over UDP: one reply datagram per query, rate limited per source
    network when C{rrl} is set.
    """

    log = Logger()

    def __init__(self, engine: Engine, rrl: ResponseRateLimiter | None = None):
        self.engine = engine
        self.rrl = rrl
        self._sendto: Callable[[bytes, Any], Any] | None = None

    def startProtocol(self) -> None:
        # The port's socket: a reply goes back to the address recvfrom gave,
        # so Port.write's address checks are only cost.
        self._sendto = datagramSender(self.transport)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        host = addr[0]
        verdict = 0 if self.rrl is None else self.rrl.check(host)
        if verdict == DROP:
            return
        write = self._write

        def send(reply: bytes) -> None:
            if verdict == SLIP:
                reply = truncatedReply(reply)
            write(reply, addr)

        self.engine.handle(datagram, host, False, send)

    def _write(self, reply: bytes, addr: Any) -> None:
        sendto = self._sendto
        if sendto is None:
            assert self.transport is not None
            self.transport.write(reply, addr)
            return
        try:
            sendto(reply, addr)
        except (BlockingIOError, ConnectionRefusedError):
            # The socket's buffer is full (the reply is lost, as a datagram
            # may be), or an ICMP error from an earlier one, which Port.write
            # ignores too.
            pass


class DNSStream(Protocol):
    """
    DNS over TCP (RFC 7766): length-prefixed queries, pipelined, answered in
    the order they arrive (forwarded ones when their answer comes).  Reading
    stops while the replies already queued are over the transport's
    watermark, so a client that never reads holds at most one message it
    sent plus the replies queued.
    """

    factory: DNSStreamFactory

    def __init__(self) -> None:
        self._buffer = b""
        self._host = ""
        self._deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        peer = self.transport.getPeer()
        self._host = getattr(peer, "host", "")
        self.discipline = Discipline(
            self.transport,
            self.factory.clock,
            pause=self.transport.pauseProducing,  # type: ignore[attr-defined]
            resume=self._resume,
            grace=self.factory.closeGrace,
        )

    def _resume(self) -> None:
        assert self.transport is not None
        self.transport.resumeProducing()  # type: ignore[attr-defined]
        self._process()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        self._process()

    def _process(self) -> None:
        while self.discipline.reading and len(self._buffer) >= 2:
            (length,) = struct.unpack_from("!H", self._buffer)
            if len(self._buffer) < 2 + length:
                break
            message = self._buffer[2 : 2 + length]
            self._buffer = self._buffer[2 + length :]
            self.factory.engine.handle(message, self._host, True, self._send)
        # A message must arrive whole within the deadline of its first byte:
        # the idle timeout alone would let a client trickle a byte at a time.
        if not self._buffer:
            cancelCall(self._deadline)
            self._deadline = None
        elif self._deadline is None or not self._deadline.active():
            self._deadline = self.factory.clock.callLater(
                self.factory.messageTimeout, self._late
            )

    def _late(self) -> None:
        self.discipline.close(
            f"no whole message within {self.factory.messageTimeout:g} s"
        )

    def _send(self, reply: bytes) -> None:
        if self.transport is not None and not self.discipline.closing:
            self.transport.write(struct.pack("!H", len(reply)) + reply)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        cancelCall(self._deadline)
        self.discipline.lost()


class DNSStreamFactory(Factory):
    """
    Builds L{DNSStream}s answering from C{engine}.

    @ivar messageTimeout: seconds from a message's first byte to its last.
    """

    closeGrace = CLOSE_GRACE
    messageTimeout = MESSAGE_TIMEOUT

    def __init__(self, engine: Engine, clock: Any = None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.engine = engine
        self.clock = clock

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        protocol = DNSStream()
        protocol.factory = self
        return protocol
