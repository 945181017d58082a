"""
NSD in the foreground on 127.0.0.1:PORT serving the benchmark's zones
(C{python -m bench.dnszones prepare}), configured as the np-dns tests configure
theirs (C{tests/dnsfixtures.py}'s nsd.conf: one server process, response
rate limiting off, no remote control), its state in C{ZONES/nsd-PORT/}.

    python -m bench.peers.nsd_server --port 5353 --zones bench/out/dns

The process becomes C{nsd -d} (exec), so the suite measures NSD's own
process tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from bench.dnszones import zoneFiles
from tests.dnsfixtures import NSD_CONF, need


def configure(port: int, zones: Path) -> Path:
    """
    Write C{nsd.conf} for C{port} into a fresh C{zones/nsd-PORT/}.
    """
    directory = zones.resolve() / f"nsd-{port}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    text = "".join(
        f'zone:\n  name: {origin}\n  zonefile: "{path}"\n'
        for origin, path in zoneFiles(zones.resolve()).items()
    )
    conf = directory / "nsd.conf"
    conf.write_text(NSD_CONF.format(port=port, dir=directory, extra=text))
    return conf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--zones", type=Path, required=True)
    options = parser.parse_args()
    nsd = need("nsd")
    conf = configure(options.port, options.zones)
    os.execv(nsd, [nsd, "-d", "-c", str(conf)])


if __name__ == "__main__":
    main()
