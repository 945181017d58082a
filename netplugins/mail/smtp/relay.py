"""
The relays of np-smtp: how the relay queue (L{netplugins.mail.smtp.queue})
hands authenticated users' mail for foreign domains on, with Twisted's ESMTP
client: to one smarthost (L{smarthostRelay}: STARTTLS when offered, the
certificate checked) or to each recipient domain's MX hosts
(L{mxRelay}: RFC 5321 section 5, STARTTLS when offered, unverified, as
Postfix's C{smtp_tls_security_level = may}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, cast

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

#: Sends a message on: C{relay(sender, recipients, message) -> Deferred}, which
#: fires with Twisted's C{(numOk, [(address, code, reply), ...])} or fails
#: (C{SMTPDeliveryError} carries the replies); cancelling it drops the
#: connection.  An entry may carry a fourth item, C{False}, when the reply is
#: the relay's own (a failed MX lookup, no host answering), code 0 for "try
#: again later".
Relay = Callable[[str, list[str], bytes], Deferred[Any]]

#: Seconds to connect, and to wait for each reply of the smarthost.
RELAY_TIMEOUT = 300.0
#: The SMTP port of MX hosts.
MX_PORT = 25


def smarthostRelay(
    smarthost: str,
    hostname: str = "localhost",
    reactor: Any = None,
    *,
    caFile: str | None = None,
    timeout: float = RELAY_TIMEOUT,
) -> Relay:
    """
    A relay that hands messages to C{smarthost} (C{host} or C{host:port},
    port 25 by default) with Twisted's ESMTP client: STARTTLS when offered,
    its certificate checked against C{caFile} (else the system's CAs), read
    once, at the first message.

    @raise ValueError: for a malformed C{smarthost}.
    """
    host, port = smarthost, "25"
    if ":" in smarthost:
        host, _, port = smarthost.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--smarthost must be HOST or HOST:PORT, not {smarthost!r}")

    def relay(sender: str, recipients: list[str], message: bytes) -> Deferred[Any]:
        from twisted.internet import ssl as tssl

        context = tssl.optionsForClientTLS(host, trustRoot=_trust(caFile))
        return _send(
            host,
            int(port),
            context,
            host,
            sender,
            recipients,
            message,
            hostname=hostname,
            reactor=reactor,
            timeout=timeout,
        )

    return relay


def _send(
    address: str,
    port: int,
    context: Any,
    tlsName: str,
    sender: str,
    recipients: list[str],
    message: bytes,
    *,
    hostname: str,
    reactor: Any,
    timeout: float,
) -> Deferred[Any]:
    """
    One SMTP transaction with the server at C{address}:C{port}, as
    L{Relay} describes its result; STARTTLS with C{context} when offered.
    """
    from io import BytesIO

    from twisted.mail.smtp import ESMTPSenderFactory

    if reactor is None:
        from twisted.internet import reactor
    result: Deferred[Any] = Deferred()
    factory = ESMTPSenderFactory(
        None,
        None,
        sender,
        recipients,
        # Twisted's client turns LF into CRLF itself.
        BytesIO(message.replace(b"\r\n", b"\n")),
        result,
        retries=0,
        timeout=timeout,
        contextFactory=context,
        requireAuthentication=False,
        requireTransportSecurity=False,
        hostname=tlsName,
    )
    factory.protocol = _relaySender()
    factory.domain = hostname.encode("ascii", "replace")
    connector = reactor.connectTCP(address, port, factory, timeout=timeout)

    def cancel(d: Deferred[Any]) -> None:
        # The factory must not report the lost connection to a Deferred
        # already cancelled.
        factory.sendFinished = True
        connector.disconnect()

    done: Deferred[Any] = Deferred(cancel)
    result.addBoth(lambda outcome: None if done.called else done.callback(outcome))
    return done


def mxRelay(
    hostname: str = "localhost",
    reactor: Any = None,
    *,
    nameservers: Sequence[tuple[str, int]] = (),
    timeout: float = RELAY_TIMEOUT,
    port: int = MX_PORT,
) -> Relay:
    """
    A relay that hands each recipient domain's share of a message to that
    domain's MX hosts (RFC 5321 section 5.1): by preference, the next host
    when one cannot be reached; the domain itself when it has no MX; a null
    MX (RFC 7505) or a domain that does not exist fails its recipients for
    good; a lookup that fails otherwise defers them.  Names are looked up
    with Twisted's DNS client, asking C{nameservers} (else those of
    C{/etc/resolv.conf}); STARTTLS is used when offered, without checking
    the certificate (Postfix's C{smtp_tls_security_level = may}).
    """
    resolvers: list[Any] = []

    def resolver() -> Any:
        if not resolvers:
            from twisted.names import client

            if nameservers:
                made = client.Resolver(servers=list(nameservers), reactor=reactor)
            else:
                made = client.Resolver(resolv="/etc/resolv.conf", reactor=reactor)
            resolvers.append(made)
        return resolvers[0]

    def relay(sender: str, recipients: list[str], message: bytes) -> Deferred[Any]:
        domains: dict[str, list[str]] = {}
        for recipient in recipients:
            domain = recipient.rpartition("@")[2].rstrip(".").lower()
            domains.setdefault(domain, []).append(recipient)
        attempts = [
            _toDomain(
                resolver(), domain, each, sender, message,
                hostname=hostname, reactor=reactor, timeout=timeout, port=port,
            )
            for domain, each in domains.items()
        ]  # fmt: skip

        def combine(results: list[list[tuple[Any, ...]]]) -> tuple[int, list[Any]]:
            entries = [entry for result in results for entry in result]
            return sum(1 for e in entries if 200 <= e[1] < 300), entries

        cancelled: list[bool] = []

        def cancel(d: Deferred[Any]) -> None:
            # Cancelled (the queue stopping): the attempts' own outcomes,
            # "deferred" for all, must not stand for the CancelledError.
            cancelled.append(True)
            for attempt in attempts:
                attempt.cancel()

        done: Deferred[Any] = Deferred(cancel)
        gathered = gatherResults(attempts, consumeErrors=True)
        gathered.addCallback(combine)
        gathered.addBoth(
            lambda outcome: None if done.called or cancelled else done.callback(outcome)
        )
        return done

    return relay


def _toDomain(
    resolver: Any,
    domain: str,
    recipients: list[str],
    sender: str,
    message: bytes,
    *,
    hostname: str,
    reactor: Any,
    timeout: float,
    port: int,
) -> Deferred[list[tuple[Any, ...]]]:
    """
    Deliver to C{recipients}, all of C{domain}, through its MX hosts: one
    L{Relay} entry per recipient.
    """
    from twisted.internet import ssl as tssl
    from twisted.names import dns, error

    def ours(code: int, text: str) -> list[tuple[Any, ...]]:
        return [(r.encode(), code, text.encode(), False) for r in recipients]

    def exchanges(result: tuple[list[Any], list[Any], list[Any]]) -> Any:
        answers = [
            r for r in result[0] if r.type == dns.MX and str(r.name).lower() == domain
        ]
        records = sorted((r.payload.preference, str(r.payload.name)) for r in answers)
        if len(records) == 1 and records[0][1] in ("", "."):
            return ours(556, "5.1.10 Recipient address has null MX")
        hosts = [name for _, name in records] or [domain]
        return tryHost(hosts, None)

    def lookupFailed(reason: Failure) -> list[tuple[Any, ...]]:
        if reason.check(error.DomainError, error.AuthoritativeDomainError):
            return ours(550, f"5.1.2 Host or domain name not found: {domain}")
        return ours(0, f"4.4.3 MX lookup for {domain} failed: {reason.value!r}")

    def tryHost(hosts: list[str], last: Failure | None) -> Any:
        if not hosts:
            why = last.getErrorMessage() if last is not None else "no address"
            return ours(0, f"4.4.1 No MX host of {domain} answered: {why}")
        host, rest = hosts[0], hosts[1:]
        d = _addresses(resolver, host)
        d.addCallback(lambda addresses: tryAddress(host, addresses, rest, last))
        return d

    def tryAddress(
        host: str, addresses: list[str], rest: list[str], last: Failure | None
    ) -> Any:
        if not addresses:
            return tryHost(rest, last)
        address, others = addresses[0], addresses[1:]
        context = tssl.CertificateOptions(verify=False)
        d = _send(
            address, port, context, host, sender, recipients, message,
            hostname=hostname, reactor=reactor, timeout=timeout,
        )  # fmt: skip

        def sent(result: Any) -> Any:
            from twisted.mail.smtp import SMTPDeliveryError

            if isinstance(result, Failure) and (
                not result.check(SMTPDeliveryError)
                # No greeting, or a greeting that refused.
                or getattr(result.value, "code", 0) in (-1, 421)
            ):
                log.info(
                    "np-smtp: MX host {host} ({address}) of {domain}: {why}; "
                    "trying the next",
                    host=host,
                    address=address,
                    domain=domain,
                    why=result.getErrorMessage(),
                )
                return tryAddress(host, others, rest, result)
            return [
                (r.encode(), *outcome)
                for r, outcome in zip(
                    recipients, _entries(result, recipients), strict=True
                )
            ]

        return d.addBoth(sent)

    d = resolver.lookupMailExchange(domain)
    d.addCallbacks(exchanges, lookupFailed)
    return cast("Deferred[list[tuple[Any, ...]]]", d)


def _addresses(resolver: Any, host: str) -> Deferred[list[str]]:
    """
    The IPv4 then the IPv6 addresses of C{host} (none for a name that has
    none or cannot be looked up).
    """
    import socket

    from twisted.names import dns

    def found(kind: int, result: tuple[list[Any], list[Any], list[Any]]) -> list[str]:
        if kind == dns.A:
            return [r.payload.dottedQuad() for r in result[0] if r.type == dns.A]
        return [
            socket.inet_ntop(socket.AF_INET6, r.payload.address)
            for r in result[0]
            if r.type == dns.AAAA
        ]

    lookups = []
    for kind, lookup in (
        (dns.A, resolver.lookupAddress),
        (dns.AAAA, resolver.lookupIPV6Address),
    ):
        d = lookup(host)
        d.addCallback(lambda result, kind=kind: found(kind, result))
        d.addErrback(lambda _: [])
        lookups.append(d)
    gathered = gatherResults(lookups)
    return gathered.addCallback(lambda each: [a for one in each for a in one])


def _entries(result: object, recipients: list[str]) -> list[tuple[int, bytes, bool]]:
    """
    C{result} of one SMTP transaction as (code, text, remote) per recipient.
    """
    outcome = replies(result, recipients)
    entries = []
    for recipient in recipients:
        code, text, remote = outcome[recipient]
        prefix = f"{code} "
        entries.append(
            (
                code,
                (text[len(prefix) :] if text.startswith(prefix) else text).encode(),
                remote,
            )
        )
    return entries


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def replies(
    result: object, recipients: Sequence[str]
) -> dict[str, tuple[int, str, bool]]:
    """
    Each recipient's outcome from what a relay's Deferred gave: (reply
    code, reply text, whether the remote server said it); code 0 when no
    reply speaks for it (the connection failed).
    """
    from twisted.mail.smtp import SMTPDeliveryError

    if isinstance(result, Failure):
        error = result.value
        if not isinstance(error, SMTPDeliveryError):
            why = _text(error) or type(error).__name__
            return {r: (0, why, False) for r in recipients}
        code, text, addresses = error.code, _text(error.resp), error.addresses
    else:
        code, text, addresses = 250, "", result[1]  # type: ignore[index]
    each: dict[str, tuple[int, str, bool]] = {}
    for entry in cast("list[tuple[Any, ...]]", addresses or ()):
        address, rcptCode, rcptText, *rest = entry
        each[_text(address)] = (
            rcptCode,
            _text(rcptText),
            bool(rest[0]) if rest else True,
        )
    out: dict[str, tuple[int, str, bool]] = {}
    for address in recipients:
        rcpt = each.get(address)
        if rcpt is None or (200 <= rcpt[0] < 300 and not 200 <= code < 300):
            # Refused before RCPT (MAIL), or accepted at RCPT and refused
            # after DATA.
            out[address] = (max(code, 0), f"{code} {text}", code > 0)
        elif not rcpt[2]:
            # The relay's own verdict (an MX lookup, no host answering).
            out[address] = (rcpt[0], rcpt[1], False)
        else:
            out[address] = (rcpt[0], f"{rcpt[0]} {rcpt[1]}", True)
    return out


@cache
def _trust(caFile: str | None) -> Any:
    """
    The certificate of C{caFile} (C{None}: the system's CAs).
    """
    if caFile is None:
        return None
    from twisted.internet import ssl as tssl

    with open(caFile, "rb") as f:
        return tssl.Certificate.loadPEM(f.read())


@cache
def _relaySender() -> Any:
    # twisted.mail.smtp imports the global reactor: import it only when used.
    from twisted.mail.smtp import ESMTPSender

    class RelaySender(ESMTPSender):  # type: ignore[misc]
        """
        Twisted's sender stuffs dots only after a CRLF inside one chunk: a line
        starting with a dot at a chunk boundary (or at the very start) would go
        out unstuffed, and a lone C{.} would end the message early.
        """

        _lastByte = b"\n"

        def transformChunk(self, chunk: bytes) -> bytes:
            if self._lastByte == b"\n" and chunk.startswith(b"."):
                chunk = b"." + chunk
            self._lastByte = chunk[-1:] or self._lastByte
            return bytes(super().transformChunk(chunk))

    return RelaySender
