"""
Zones for the np-dns tests, signed with ldns-signzone, and a private NSD
serving the same zones on a loopback port for differential tests.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.support import LoggedProcess, freePort, startProcess, waitForPort

#: One zone exercising RFC 1034 section 4.3.2: CNAME chains (in and out of
#: the zone, dangling), wildcards (RFC 4592, one with a CNAME), an empty
#: non-terminal, delegations (one with a DS), a DNAME, MX and SRV with
#: in-zone targets.  Written relative, so it serves under any origin.
ZONE_TEMPLATE = """\
$TTL 3600
@       IN SOA ns1 hostmaster ( {serial} 7200 3600 1209600 300 )
        IN NS  ns1
        IN NS  ns2
        IN MX  10 mail
        IN MX  20 mx.elsewhere.net.
        IN A   192.0.2.1
        IN AAAA 2001:db8::1
ns1     IN A   192.0.2.53
ns2     IN A   192.0.2.54
mail    IN A   192.0.2.25
        IN AAAA 2001:db8::25
www     IN CNAME web
web     IN CNAME host1
host1   IN A   192.0.2.10
alias   IN CNAME nothere
out     IN CNAME www.elsewhere.net.
*.wild  IN A   192.0.2.99
        IN TXT "wildcard"
*.wc    IN CNAME host1
a.b.c.ent IN A 192.0.2.77
sub     IN NS  ns.sub
        IN NS  ns.elsewhere.net.
ns.sub  IN A   192.0.2.200
secure  IN NS  ns.secure
        IN DS  12345 13 2 ( 0123456789abcdef0123456789abcdef
                            0123456789abcdef0123456789abcdef )
ns.secure IN A 192.0.2.201
dn      IN DNAME example.net.
_sip._tcp IN SRV 0 5 5060 host1
txt     IN TXT "hello" "world"
big     IN TXT "{filler}"
        IN TXT "{filler}x"
        IN TXT "{filler}y"
        IN TXT "{filler}z"
        IN TXT "{filler}w"
"""

#: The unsigned zone, the NSEC-signed one and the NSEC3-signed one.
PLAIN = "example.org"
SIGNED = "signed.example"
NSEC3 = "nsec3.example"
ORIGINS = (PLAIN, SIGNED, NSEC3)

#: Names asked about in each zone (PLAIN's, renamed for the others).
NAMES = (
    "example.org",
    "www.example.org",
    "web.example.org",
    "alias.example.org",
    "out.example.org",
    "x.wild.example.org",
    "a.b.wild.example.org",
    "wild.example.org",
    "*.wild.example.org",
    "y.wc.example.org",
    "ent.example.org",
    "c.ent.example.org",
    "a.b.c.ent.example.org",
    "nope.example.org",
    "sub.example.org",
    "foo.sub.example.org",
    "secure.example.org",
    "a.secure.example.org",
    "dn.example.org",
    "x.dn.example.org",
    "_sip._tcp.example.org",
    "_tcp.example.org",
    "mail.example.org",
    "WwW.ExAmPlE.oRg",
)

TYPES = (
    "A",
    "AAAA",
    "MX",
    "NS",
    "SOA",
    "TXT",
    "CNAME",
    "SRV",
    "DS",
    "ANY",
    "TYPE65534",
    "DNAME",
    "RRSIG",
    "NSEC",
)

#: Each TXT string of the big RRset: the five of them overflow 512 bytes.
FILLER = "f" * 200


def need(program: str) -> str:
    """
    The path of C{program}, or an AssertionError naming the Debian package
    to install (a missing peer is a failure, not a skip).
    """
    path = shutil.which(program)
    if path is None:
        raise AssertionError(
            f"{program} is not installed (scripts/debian-packages.txt lists it)"
        )
    return path


def zoneText(origin: str, serial: int = 2024010101) -> str:
    """
    The test zone under C{origin}.
    """
    return f"$ORIGIN {origin}.\n" + ZONE_TEMPLATE.format(serial=serial, filler=FILLER)


def questions() -> list[tuple[str, str]]:
    """
    The differential corpus: every name of L{NAMES} in every zone with every
    type of L{TYPES}.
    """
    return [
        (name.replace("example.org", origin).replace("ExAmPlE.oRg", origin.upper()), t)
        for origin in ORIGINS
        for name in NAMES
        for t in TYPES
    ]


def writeZones(directory: Path) -> dict[str, Path]:
    """
    Write the three test zones into C{directory}, signing two of them with
    fresh ECDSA keys (ldns-keygen, ldns-signzone: NSEC, and NSEC3 with salt
    abcd and no extra iterations).

    @return: origin to zone file.
    """
    keygen, signzone = need("ldns-keygen"), need("ldns-signzone")
    files = {}
    for origin in ORIGINS:
        path = directory / f"{origin}.zone"
        path.write_text(zoneText(origin))
        if origin == PLAIN:
            files[origin] = path
            continue
        keys = []
        for extra in (["-k"], []):
            keys.append(
                subprocess.run(
                    [keygen, "-a", "ECDSAP256SHA256", *extra, origin],
                    cwd=directory,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
            )
        signed = directory / f"{origin}.signed"
        nsec3 = ["-n", "-s", "abcd", "-t", "0"] if origin == NSEC3 else []
        subprocess.run(
            [signzone, *nsec3, "-o", origin, "-f", str(signed), str(path), *keys],
            cwd=directory,
            check=True,
            capture_output=True,
        )
        files[origin] = signed
    return files


NSD_CONF = """\
server:
  ip-address: 127.0.0.1@{port}
  zonesdir: "{dir}"
  pidfile: "{dir}/nsd.pid"
  database: ""
  zonelistfile: "{dir}/zone.list"
  xfrdfile: "{dir}/xfrd.state"
  xfrdir: "{dir}"
  username: ""
  chroot: ""
  logfile: "{dir}/nsd.log"
  server-count: 1
  verbosity: 1
  rrl-ratelimit: 0
  hide-version: yes
remote-control:
  control-enable: no
{extra}
"""


def startNSD(
    testCase: Any,
    zones: dict[str, Path],
    directory: Path,
    extra: str = "",
    port: int | None = None,
) -> tuple[LoggedProcess, int]:
    """
    Start NSD in the foreground on a free loopback port serving C{zones}
    (stopped at cleanup).

    @param extra: more nsd.conf text (keys, zone options).
    @param port: the port, by default a free one.
    @return: the process and its port.
    """
    nsd = need("nsd")
    if port is None:
        port = freePort()
    zoneText = "".join(
        f'zone:\n  name: {origin}\n  zonefile: "{path}"\n'
        for origin, path in zones.items()
    )
    conf = directory / "nsd.conf"
    conf.write_text(
        NSD_CONF.format(port=port, dir=directory, extra=extra + "\n" + zoneText)
    )
    process = startProcess(testCase, [nsd, "-d", "-c", str(conf)], name="nsd")
    waitForPort(port, process)
    return process, port
