"""
C{twistd np-dns}: the DNS server's settings, its command line and its keyword
twin.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import dns.name
import dns.tsig
from attrs import frozen
from twisted.application.service import MultiService
from twisted.python import usage

from netplugins.coerce import hostPort, splitHostPort
from netplugins.dns.forward import Forwarder
from netplugins.dns.rrl import DEFAULT_RATE, ResponseRateLimiter
from netplugins.dns.secondary import Secondaries
from netplugins.dns.server import DNSDatagram, DNSStreamFactory, Engine
from netplugins.dns.signing import ZoneKey, readKey, stateKeys
from netplugins.dns.transfer import Notifier, Transfers
from netplugins.dns.zone import ZoneError
from netplugins.dns.zonefiles import ZoneFile, ZoneFiles
from netplugins.limits.settings import parseNetwork
from netplugins.options import ServiceOptions, ServiceSettings, limitInt, network
from netplugins.service import served
from netplugins.settings import override, repeated, setting

DEFAULT_LISTEN = ("udp:5353:interface=127.0.0.1", "tcp:5353:interface=127.0.0.1")

#: TSIG algorithms accepted (names as BIND and NSD write them).
TSIG_ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
}

#: Seconds an idle TCP connection stays open (RFC 7766 section 6.2.3 asks
#: for seconds, not minutes).
DEFAULT_IDLE_TIMEOUT = 10.0

#: The shared per-source datagram limit lets this many queries a second
#: through: more than one process answers, so RRL (per /24 or /56, with
#: slip) is np-dns's limit.  At 100,000 a second a benchmark's single source
#: lost queries whenever the answers outran the limit.
DATAGRAM_RATE = 1_000_000.0


def _originName(text: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as e:
        raise ValueError(f"bad zone origin {text!r}: {e}") from None


def zoneSpec(text: str) -> str:
    """
    Check a C{--zone ORIGIN=PATH}.
    """
    origin, eq, path = text.partition("=")
    if not eq or not origin or not path:
        raise ValueError(f"--zone wants ORIGIN=PATH, not {text!r}")
    _originName(origin)
    return text


def tsigSpec(text: str) -> str:
    """
    Check a C{--tsig-key NAME:ALG:SECRET-FILE} (the file is read later).
    """
    parts = text.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"--tsig-key wants NAME:ALGORITHM:SECRET-FILE, not {text!r}")
    _originName(parts[0])
    if parts[1].lower() not in TSIG_ALGORITHMS:
        raise ValueError(
            f"--tsig-key algorithm must be one of {', '.join(TSIG_ALGORITHMS)},"
            f" not {parts[1]!r}"
        )
    return text


def secondarySpec(text: str) -> str:
    """
    Check a C{--secondary ORIGIN=PRIMARY} (PRIMARY is HOST:PORT).
    """
    origin, eq, primary = text.partition("=")
    if not eq:
        raise ValueError(f"--secondary wants ORIGIN=HOST:PORT, not {text!r}")
    _originName(origin)
    hostPort(primary)
    return text


def dnssecKeySpec(text: str) -> str:
    """
    Check a C{--dnssec-key ORIGIN[=PRIVATE-KEY-FILE]} (the file is read
    later).
    """
    origin, eq, path = text.partition("=")
    if not origin or (eq and not path):
        raise ValueError(
            f"--dnssec-key wants ORIGIN or ORIGIN=PRIVATE-KEY-FILE, not {text!r}"
        )
    _originName(origin)
    return text


def zoneKeys(specs: Sequence[str], stateDir: str) -> dict[dns.name.Name, list[ZoneKey]]:
    """
    The keys C{--dnssec-key} options give, by zone: read from the files
    named, or from C{stateDir} (made there when missing) for an origin
    alone.

    @raise ValueError: for a key file that cannot be read or used.
    """
    keys: dict[dns.name.Name, list[ZoneKey]] = {}
    for spec in specs:
        text, _, path = spec.partition("=")
        origin = _originName(text)
        try:
            if path:
                found = [readKey(origin, path)]
            else:
                found = stateKeys(origin, stateDir)
        except OSError as e:
            raise ValueError(f"--dnssec-key {text}: {e}") from None
        except ValueError as e:
            raise ValueError(f"--dnssec-key: {e}") from None
        keys.setdefault(origin, []).extend(found)
    return keys


def readTSIGKey(text: str) -> dns.tsig.Key:
    """
    The key a C{--tsig-key NAME:ALG:SECRET-FILE} names, its secret read from
    the file (base64, one trailing newline ignored).

    @raise ValueError: for an unreadable file or a secret that is not base64.
    """
    name, algorithm, path = text.split(":", 2)
    try:
        with open(path, "rb") as f:
            encoded = f.read()
    except OSError as e:
        raise ValueError(
            f"--tsig-key {name}: cannot read {path}: {e.strerror}"
        ) from None
    if encoded.endswith(b"\n"):
        encoded = encoded[:-1]
    try:
        secret = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError(f"--tsig-key {name}: {path} does not hold base64") from None
    if not secret:
        raise ValueError(f"--tsig-key {name}: {path} holds an empty secret")
    return dns.tsig.Key(name, secret, TSIG_ALGORITHMS[algorithm.lower()])


@frozen(kw_only=True)
class DNSSettings(ServiceSettings):
    """
    What np-dns is told: the shared settings, its zones, who may transfer
    them or recurse, and its rate limit.
    """

    defaultListen: ClassVar[tuple[str, ...]] = DEFAULT_LISTEN

    zone: tuple[str, ...] = repeated(
        "Serve the zone ORIGIN from the BIND zone file PATH (ORIGIN=PATH); "
        "repeatable.  Reloaded on SIGHUP and when the file's SOA serial changes.",
        zoneSpec,
    )
    allowTransfer: tuple[str, ...] = repeated(
        "Let this network (CIDR) transfer the zones (AXFR, IXFR) with a "
        "--tsig-key; repeatable.  Nobody may by default.",
        network,
    )
    tsigKey: tuple[str, ...] = repeated(
        "A TSIG key NAME:ALGORITHM:SECRET-FILE (the file holds the base64 "
        "secret); repeatable.  Transfers and NOTIFY are signed with it.",
        tsigSpec,
    )
    dnssecKey: tuple[str, ...] = repeated(
        "Sign the --zone ORIGIN at each load with this key (ORIGIN=FILE, a "
        "BIND private-key file, ECDSAP256SHA256 or ED25519), or with the "
        "keys in the state directory, made when missing (ORIGIN alone); "
        "repeatable.  NSEC denial; signatures for 14 days, renewed every 3.5.",
        dnssecKeySpec,
    )
    notify: tuple[str, ...] = repeated(
        "Send NOTIFY to this secondary (HOST:PORT) when a zone is reloaded; "
        "repeatable.",
        hostPort,
    )
    secondary: tuple[str, ...] = repeated(
        "Serve the zone ORIGIN as a secondary of PRIMARY (ORIGIN=HOST:PORT); "
        "repeatable.",
        secondarySpec,
    )
    forward: tuple[str, ...] = repeated(
        "Forward questions outside our zones from --recursion-allow clients to "
        "this server (HOST:PORT); repeatable.",
        hostPort,
    )
    recursionAllow: tuple[str, ...] = repeated(
        "Clients in this network (CIDR) may have questions forwarded; "
        "repeatable.  Everyone else gets REFUSED outside our zones.",
        network,
    )
    rrl: int = setting(
        DEFAULT_RATE,
        "Response rate limit: UDP answers a second to one /24 or /56 (every "
        "2nd answer over it goes out truncated, the others are dropped); 0 "
        "turns it off.",
        limitInt,
    )
    nsid: str | None = setting(
        None, "The name server identifier (RFC 5001) sent to clients asking for it."
    )
    idleTimeout: float | None = override(
        ServiceSettings, "idleTimeout", DEFAULT_IDLE_TIMEOUT
    )


class Options(ServiceOptions):
    """
    Options for C{twistd np-dns}.
    """

    settingsType = DNSSettings
    synopsis = "[options]"
    longdesc = (
        "An authoritative DNS server for BIND zone files, over UDP and TCP "
        "(--listen udp:5353 --listen tcp:5353): wildcards, empty non-terminals, "
        "CNAME and DNAME chains, delegations with glue, EDNS(0) with truncation, "
        "DNSSEC (pre-signed zones, or signed at load), AXFR/IXFR to listed "
        "networks with TSIG, NOTIFY, "
        "response rate limiting, and a forwarder for listed clients."
    )
    tapname = "np-dns"
    speaksUDP = True


def dnsService(
    settings: DNSSettings = DNSSettings(), *, reactor: Any = None
) -> MultiService:
    """
    The DNS service: the keyword twin of C{twistd np-dns} is
    C{dnsService(DNSSettings(zone=("example.org=example.org.zone",), ...))}.

    @raise ValueError: for a bad value or a zone file that does not load.
    """
    if reactor is None:
        from twisted.internet import reactor
    common = settings.common()
    common = attrs.evolve(
        common,
        limits=attrs.evolve(
            common.limits, datagramRate=DATAGRAM_RATE, datagramBurst=int(DATAGRAM_RATE)
        ),
    )
    if settings.recursionAllow and not settings.forward:
        raise ValueError("--recursion-allow needs a --forward upstream")
    forwarder = None
    if settings.forward:
        forwarder = Forwarder([splitHostPort(f) for f in settings.forward], reactor)
    keyring = {}
    for spec in settings.tsigKey:
        key = readTSIGKey(spec)
        keyring[key.name] = key
    engine = Engine(
        nsid=None if settings.nsid is None else settings.nsid.encode("utf-8"),
        keyring=keyring,
        transferNetworks=[parseNetwork(n) for n in settings.allowTransfer],
        recursionNetworks=[parseNetwork(n) for n in settings.recursionAllow],
        transfers=Transfers(),
        forwarder=forwarder,
    )
    keys = zoneKeys(settings.dnssecKey, settings.stateDir)
    files = []
    for spec in settings.zone:
        origin, _, path = spec.partition("=")
        name = _originName(origin)
        files.append(ZoneFile(name, path, tuple(keys.pop(name, ()))))
    for name in keys:
        raise ValueError(f"--dnssec-key {name}: no --zone {name}")
    zoneFiles = ZoneFiles(files, engine.setZone, reactor)
    try:
        zoneFiles.loadNow()
    except ZoneError as e:
        raise ValueError(f"--zone: {e}") from None
    secondaries = []
    for spec in settings.secondary:
        origin, _, primary = spec.partition("=")
        name = _originName(origin)
        if any(f.origin == name for f in files):
            raise ValueError(f"{origin} is given by both --zone and --secondary")
        secondaries.append((name, *splitHostPort(primary)))
    if secondaries:
        engine.secondary = Secondaries(
            secondaries, engine, reactor, next(iter(keyring.values()), None)
        )
    rrl = None
    if settings.rrl:
        rrl = ResponseRateLimiter(settings.rrl, reactor)
    factory = DNSStreamFactory(engine, reactor)
    factory.closeGrace = common.limits.closeGrace
    if common.limits.idleTimeout is not None:
        factory.messageTimeout = common.limits.idleTimeout
    children: list[Any] = [zoneFiles]
    if engine.secondary is not None:
        children.append(engine.secondary)
    if settings.notify:
        notifier = Notifier(
            [splitHostPort(n) for n in settings.notify],
            reactor,
            next(iter(keyring.values()), None),
        )
        zoneFiles.installed.append(notifier.notify)
        children.append(notifier)
    return served(
        common,
        factory,
        name="np-dns",
        defaultListen=settings.defaultListen,
        datagram=lambda: DNSDatagram(engine, rrl),
        children=children,
        reactor=reactor,
    )


def makeService(config: Options, reactor: Any = None) -> MultiService:
    """
    The DNS service configured by a parsed command line.
    """
    try:
        return dnsService(config.settings, reactor=reactor)
    except ValueError as e:
        raise usage.UsageError(str(e)) from None
