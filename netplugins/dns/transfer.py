# -*- test-case-name: tests.test_dns_transfer -*-
"""
Zone transfers out (AXFR, RFC 5936; IXFR, RFC 1995, answered with the whole
zone or, when the client is current, its SOA alone) to the C{--allow-transfer}
networks with a TSIG key, and NOTIFY (RFC 1996) sent to the C{--notify}
secondaries when a zone is reloaded.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
from dns.rrset import RRset
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from netplugins.dns.zone import Zone

if TYPE_CHECKING:
    from netplugins.dns.server import Engine, Send

#: Bytes of records per transfer message (the limit is 65535; smaller
#: messages let the client's TSIG and parsing work in steps).
MESSAGE_BYTES = 16000

#: NOTIFY is sent this many times, a few seconds apart, until answered.
NOTIFY_TRIES = 5
NOTIFY_INTERVAL = 2.0


def _serialNewer(a: int, b: int) -> bool:
    """
    Whether serial C{a} is after C{b} in RFC 1982 arithmetic.
    """
    return a != b and ((a - b) % 2**32) < 2**31


class Transfers:
    """
    Answers AXFR and IXFR questions for an L{Engine}.
    """

    log = Logger()

    def transfer(
        self,
        query: dns.message.Message,
        host: str,
        tcp: bool,
        send: Send,
        engine: Engine,
    ) -> None:
        """
        Send the zone C{query} asks for, or a refusal.
        """
        from netplugins.dns.server import inNetworks

        question = query.question[0]
        why = None
        if not tcp:
            why = "over UDP"
        elif not inNetworks(host, engine.transferNetworks):
            why = "not in --allow-transfer"
        elif not query.had_tsig:
            why = "not signed with a --tsig-key"
        if why is not None:
            self.log.info(
                "Refused {kind} of {zone} to {peer}: {why}",
                kind=dns.rdatatype.to_text(question.rdtype),
                zone=str(question.name),
                peer=host,
                why=why,
            )
            send(engine.reply(query, dns.rcode.REFUSED, tcp))
            return
        zone = engine.zones.get(question.name)
        if zone is None:
            send(engine.reply(query, dns.rcode.NOTAUTH, tcp))
            return
        if question.rdtype == dns.rdatatype.IXFR:
            theirs = [r for r in query.authority if r.rdtype == dns.rdatatype.SOA]
            if theirs and not _serialNewer(zone.serial, theirs[0][0].serial):  # type: ignore[attr-defined]
                response = engine.response(query, dns.rcode.NOERROR)
                response.flags |= dns.flags.AA
                response.answer = [zone.soa]
                send(response.to_wire(max_size=65535))
                return
        self.log.info(
            "{kind} of {zone} serial {serial} to {peer}",
            kind=dns.rdatatype.to_text(question.rdtype),
            zone=str(zone.origin),
            serial=zone.serial,
            peer=host,
        )
        for message in axfrMessages(zone, query, engine):
            send(message)


def _batches(zone: Zone) -> list[list[RRset]]:
    """
    The zone's RRsets, SOA first and last, in groups of about
    L{MESSAGE_BYTES}.
    """
    batches: list[list[RRset]] = [[]]
    size = 0
    for rrset in [*zone.rrsets(), zone.soa]:
        buffer = io.BytesIO()
        rrset.to_wire(buffer)
        length = len(buffer.getvalue())
        if batches[-1] and size + length > MESSAGE_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(rrset)
        size += length
    return batches


def axfrMessages(zone: Zone, query: dns.message.Message, engine: Engine) -> list[bytes]:
    """
    The AXFR answer to C{query}: the messages in wire form, TSIG-signed as
    one stream when the query was signed.
    """
    messages = []
    context: Any = None
    for i, batch in enumerate(_batches(zone)):
        response = engine.response(query, dns.rcode.NOERROR)
        response.flags |= dns.flags.AA
        if i:
            response.question = []
        response.answer = batch
        messages.append(response.to_wire(max_size=65535, multi=True, tsig_ctx=context))
        context = response.tsig_ctx
    return messages


class _NotifyProtocol(DatagramProtocol):
    def __init__(self, notifier: Notifier):
        self.notifier = notifier

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.notifier.answered(datagram, addr)


class Notifier(Service):
    """
    Sends NOTIFY for a zone to each secondary, again every
    L{NOTIFY_INTERVAL} seconds until it answers (L{NOTIFY_TRIES} in all);
    stops when the service stops.
    """

    log = Logger()

    def __init__(
        self,
        secondaries: Sequence[tuple[str, int]],
        reactor: Any,
        key: dns.tsig.Key | None = None,
    ):
        self.secondaries = list(secondaries)
        self.reactor = reactor
        self.key = key
        self._port: Any = None
        self._pending: dict[tuple[int, str, int], IDelayedCall] = {}

    def _listening(self) -> Any:
        if self._port is None:
            self._port = self.reactor.listenUDP(0, _NotifyProtocol(self))
        return self._port

    def stopService(self) -> None:
        Service.stopService(self)
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        if self._port is not None:
            self._port.stopListening()
            self._port = None

    def notify(self, zone: Zone) -> None:
        """
        Tell every secondary that C{zone} changed.
        """
        for host, port in self.secondaries:
            message = dns.message.make_query(
                zone.origin, dns.rdatatype.SOA, use_edns=False
            )
            message.set_opcode(dns.opcode.NOTIFY)
            message.flags = dns.flags.AA | (message.flags & ~dns.flags.RD)
            message.answer = [zone.soa]
            if self.key is not None:
                message.use_tsig({self.key.name: self.key}, self.key.name)
            self._send(message.to_wire(), message.id, host, port, NOTIFY_TRIES, zone)

    def _send(
        self, wire: bytes, ident: int, host: str, port: int, tries: int, zone: Zone
    ) -> None:
        key = (ident, host, port)
        self._pending.pop(key, None)
        if not tries:
            self.log.warn(
                "No answer to NOTIFY for {zone} from {host}:{port}",
                zone=str(zone.origin),
                host=host,
                port=port,
            )
            return
        self._listening().write(wire, (host, port))
        self._pending[key] = self.reactor.callLater(
            NOTIFY_INTERVAL, self._send, wire, ident, host, port, tries - 1, zone
        )

    def answered(self, datagram: bytes, addr: Any) -> None:
        """
        A secondary answered: stop sending to it.
        """
        if len(datagram) < 2:
            return
        ident = int.from_bytes(datagram[:2], "big")
        call = self._pending.pop((ident, addr[0], addr[1]), None)
        if call is not None and call.active():
            call.cancel()
            self.log.info(
                "NOTIFY answered by {host}:{port}", host=addr[0], port=addr[1]
            )
