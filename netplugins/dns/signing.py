# -*- test-case-name: tests.test_dns_signing -*-
"""
Signing zones at load (C{--dnssec-key}): keys in BIND's private-key format
(what C{ldns-keygen} and C{dnssec-keygen} write), read from files or made
in the state directory when missing, and a zone signed with dnspython's
L{dns.dnssec.sign_zone}: the keys' DNSKEY records added, every
authoritative RRset given an RRSIG, an NSEC chain.
"""

from __future__ import annotations

import base64
import binascii
import glob
import os
import time
from collections.abc import Sequence

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
from attrs import frozen
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from dns.dnssectypes import Algorithm
from dns.name import Name
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from twisted.logger import Logger

log = Logger()

#: How long signatures are valid: they are made again well before (see
#: L{RESIGN_INTERVAL}).
SIGNATURE_LIFETIME = 14 * 86400

#: How far in the past signatures start, for validators whose clocks are
#: behind ours.
INCEPTION_SKEW = 3600

#: Seconds between two signings of an unchanged zone: signatures served
#: always have more than 10 of their 14 days left.
RESIGN_INTERVAL = SIGNATURE_LIFETIME // 4

#: The algorithms signed with.
ALGORITHMS = {
    Algorithm.ECDSAP256SHA256: "ECDSAP256SHA256",
    Algorithm.ED25519: "ED25519",
}

#: DNSKEY flags: a zone key with the SEP bit (a key signing key, or the one
#: key of a zone signing everything).
KSK_FLAGS = 257

#: The records signing makes, dropped from a file before it is signed again.
_SIGNING_TYPES = {
    dns.rdatatype.RRSIG,
    dns.rdatatype.NSEC,
    dns.rdatatype.NSEC3,
    dns.rdatatype.NSEC3PARAM,
}

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@frozen
class ZoneKey:
    """
    A private key and its DNSKEY record.
    """

    private: PrivateKey
    dnskey: DNSKEY
    path: str

    @property
    def tag(self) -> int:
        return dns.dnssec.key_id(self.dnskey)


def _privateKey(algorithm: int, raw: bytes) -> PrivateKey:
    if algorithm == Algorithm.ECDSAP256SHA256:
        if len(raw) != 32:
            raise ValueError("an ECDSAP256SHA256 key has 32 bytes")
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.from_private_bytes(raw)


def readKey(origin: Name, path: str) -> ZoneKey:
    """
    The key in the BIND private-key file C{path}; its flags from the C{.key}
    file beside it if there is one (257, a key signing everything, if not).

    @raise ValueError: for a file that cannot be read or used.
    """
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except (OSError, UnicodeError) as e:
        raise ValueError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
    fields = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields[name.strip()] = value.strip()
    try:
        algorithm = int(fields["Algorithm"].split()[0])
        raw = base64.b64decode(fields["PrivateKey"], validate=True)
    except (KeyError, IndexError, ValueError, binascii.Error):
        raise ValueError(
            f"{path}: not a private-key file (Algorithm and PrivateKey lines)"
        ) from None
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"{path}: algorithm {algorithm}; keys must be"
            f" {' or '.join(ALGORITHMS.values())}"
        )
    try:
        private = _privateKey(algorithm, raw)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    dnskey = dns.dnssec.make_dnskey(private.public_key(), algorithm, KSK_FLAGS)
    public = path.removesuffix(".private") + ".key"
    if public != path and os.path.exists(public):
        dnskey = _publicFlags(public, dnskey)
    return ZoneKey(private, dnskey, path)


def _publicFlags(path: str, dnskey: DNSKEY) -> DNSKEY:
    """
    C{dnskey} with the flags the DNSKEY record in the file C{path} gives it.
    """
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                fields = line.split(";", 1)[0].split()
                if "DNSKEY" not in fields:
                    continue
                rdata = " ".join(fields[fields.index("DNSKEY") + 1 :])
                found = dns.rdata.from_text(
                    dns.rdataclass.IN, dns.rdatatype.DNSKEY, rdata
                )
                assert isinstance(found, DNSKEY)
                if found.key == dnskey.key and found.algorithm == dnskey.algorithm:
                    flagged = dnskey.replace(flags=found.flags)
                    assert isinstance(flagged, DNSKEY)
                    return flagged
    except (OSError, UnicodeError, dns.exception.DNSException, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    raise ValueError(f"{path}: holds no DNSKEY for the private key beside it")


def stateKeys(origin: Name, stateDir: str) -> list[ZoneKey]:
    """
    The keys of C{origin} in C{stateDir} (files named as BIND and ldns name
    them, C{K<origin>.+<alg>+<tag>.private}); one made when there is none,
    its DS record logged for the parent zone.
    """
    pattern = os.path.join(
        glob.escape(stateDir), f"K{glob.escape(origin.to_text())}+*.private"
    )
    paths = sorted(glob.glob(pattern))
    if paths:
        return [readKey(origin, path) for path in paths]
    return [makeKey(origin, stateDir)]


def makeKey(
    origin: Name, directory: str, algorithm: int = Algorithm.ECDSAP256SHA256
) -> ZoneKey:
    """
    Make a key for C{origin} and write it to C{directory} as
    C{dnssec-keygen} would (C{.private}, mode 0600, and C{.key}).
    """
    private: PrivateKey
    if algorithm == Algorithm.ECDSAP256SHA256:
        private = ec.generate_private_key(ec.SECP256R1())
        raw = private.private_numbers().private_value.to_bytes(32, "big")
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        raw = private.private_bytes_raw()
    dnskey = dns.dnssec.make_dnskey(private.public_key(), algorithm, KSK_FLAGS)
    tag = dns.dnssec.key_id(dnskey)
    base = os.path.join(directory, f"K{origin.to_text()}+{algorithm:03d}+{tag:05d}")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(base + ".private", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(
            "Private-key-format: v1.3\n"
            f"Algorithm: {algorithm} ({ALGORITHMS[Algorithm(algorithm)]})\n"
            f"PrivateKey: {base64.b64encode(raw).decode('ascii')}\n"
        )
    with open(base + ".key", "w", encoding="ascii") as f:
        f.write(f"{origin} IN DNSKEY {dnskey.to_text()}\n")
    key = ZoneKey(private, dnskey, base + ".private")
    log.info(
        "DNSSEC key made for {origin} in {path}; give the parent zone its DS: {ds}",
        origin=origin.to_text(),
        path=key.path,
        ds=dsText(origin, dnskey),
    )
    return key


def dsText(origin: Name, dnskey: DNSKEY) -> str:
    """
    The DS record (SHA-256) of C{dnskey} as a zone file line.
    """
    ds = dns.dnssec.make_ds(origin, dnskey, "SHA256")
    return f"{origin} IN DS {ds.to_text()}"


def signZone(
    zone: dns.zone.Zone, keys: Sequence[ZoneKey], now: float | None = None
) -> None:
    """
    Sign C{zone} in place with C{keys}: signatures made by any earlier
    signer (RRSIG, NSEC, NSEC3) dropped, the keys' DNSKEYs added, every
    RRset signed (valid from an hour ago for L{SIGNATURE_LIFETIME}), an NSEC
    chain made.  Blocking: call it in a thread.
    """
    if now is None:
        now = time.time()
    with zone.writer() as txn:
        for name, rdataset in list(txn.iterate_rdatasets()):
            if rdataset.rdtype in _SIGNING_TYPES:
                txn.delete(name, rdataset.rdtype, rdataset.covers)
        dns.dnssec.sign_zone(
            zone,
            txn,
            keys=[(key.private, key.dnskey) for key in keys],
            inception=int(now) - INCEPTION_SKEW,
            expiration=int(now) + SIGNATURE_LIFETIME,
        )
