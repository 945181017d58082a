"""
Clients the RPC tests (np-kv, np-rpc) share: curl posting a body, and
programs in other languages (Perl, Ruby) or Python run from their text.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any


def xmlrpcCall(url: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    """
    POST C{body} with curl; return (HTTP status, body).  A server that does
    not answer within 10 seconds fails the call.
    """
    args = ["curl", "-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}"]
    args += ["--data-binary", "@-", url]
    for name, value in (headers or {}).items():
        args[1:1] = ["-H", f"{name}: {value}"]
    out = subprocess.run(args, input=body, capture_output=True, check=True).stdout
    body, _, code = out.rpartition(b"\n")
    return int(code), body


def runScript(directory: str, name: str, source: str, *args: str) -> Any:
    """
    Run C{source} as the program C{name} in C{directory}; return (stdout,
    last line of stderr, exit code).
    """
    path = os.path.abspath(os.path.join(directory, name))
    with open(path, "w", encoding="utf-8") as f:
        f.write(source)
    interpreter = {".py": sys.executable, ".pl": "perl", ".rb": "ruby"}
    done = subprocess.run(
        [interpreter[os.path.splitext(name)[1]], path, *args],
        capture_output=True,
        timeout=60,
        cwd=directory,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    errors = done.stderr.decode("utf-8").strip().splitlines()
    return done.stdout.decode("utf-8"), errors[-1] if errors else "", done.returncode
