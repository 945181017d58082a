"""
The DNS benchmark's files (L{bench.dns}): the np-dns tests' zones
(C{tests/dnsfixtures.py}) and a dnsperf query file of their differential
corpus, made once under C{bench/out/dns/} by the contenders' probe:

    python -m bench.dnszones prepare    # also checks dnsperf and nsd are installed
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from bench.loadgen import OUT

#: Where the zones and the query file are made (C{{out}/dns} in templates).
DNS = OUT / "dns"
#: The query files, one per case (C{{out}/dns/{framing}.txt}): the tests'
#: corpus (C{plain} and C{dnssec} alike, the latter asked with DO) and
#: L{UNIQUE_NAMES} names asked once a pass.
QUERY_FILES = ("plain", "dnssec", "unique")
#: Distinct names per zone in C{unique.txt}: with three zones and two
#: questions each, six times np-dns's answer cache (10,000 replies).
UNIQUE_NAMES = 10_000
#: The zones' origins and their files in L{DNS}, as C{writeZones} names them.
ZONES = {
    "example.org": "example.org.zone",
    "signed.example": "signed.example.signed",
    "nsec3.example": "nsec3.example.signed",
}


def zoneFiles(directory: Path) -> dict[str, Path]:
    """
    Origin to zone file in C{directory}, made by L{prepare}.
    """
    return {origin: directory / name for origin, name in ZONES.items()}


def uniqueQuestions(origins: Iterable[str]) -> str:
    """
    dnsperf lines asking L{UNIQUE_NAMES} distinct names in each zone: one
    under its wildcard (C{*.wild}, synthesised) and one that does not exist
    (NXDOMAIN), interleaved across the zones.
    """
    return "".join(
        f"w{i}.wild.{origin} A\nn{i}.nope.{origin} A\n"
        for i in range(UNIQUE_NAMES)
        for origin in origins
    )


def prepare() -> Path:
    """
    C{bench/out/dns/}: the test zones (two signed with fresh keys) and the
    dnsperf query files of L{QUERY_FILES}.

    @raise AssertionError: if dnsperf or NSD is not installed.
    """
    # The tests' fixtures (and tests.support with them) are needed only here.
    from tests.dnsfixtures import PLAIN, need, questions, writeZones, zoneText

    need("dnsperf")
    need("nsd")
    # NSD's state from the last run (bench/peers/nsd_server.py).
    for stale in DNS.glob("nsd-*"):
        shutil.rmtree(stale, ignore_errors=True)
    corpus = "".join(f"{name} {qtype}\n" for name, qtype in questions())
    unique = uniqueQuestions(ZONES)
    # Made again when the tests' zone or a query file changes.
    stamp = hashlib.sha256((zoneText(PLAIN) + corpus + unique).encode()).hexdigest()
    ready = DNS / ".ready"
    if not ready.exists() or ready.read_text().strip() != stamp:
        shutil.rmtree(DNS, ignore_errors=True)
        DNS.mkdir(parents=True)
        made = writeZones(DNS)
        assert {o: p.name for o, p in made.items()} == ZONES, made
        for name, text in zip(QUERY_FILES, (corpus, corpus, unique), strict=True):
            (DNS / f"{name}.txt").write_text(text)
        ready.write_text(stamp)
    return DNS


def main(argv: list[str]) -> int:
    if argv != ["prepare"]:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        prepare()
    except AssertionError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
