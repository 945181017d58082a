"""
The load generators: small C programs (one C{NAME.c} per protocol) built at
run time with the machine's C compiler into C{bench/out/}, so the load side
costs a fraction of what the Python servers under test do.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import processes

SOURCES = Path(__file__).parent
OUT = SOURCES.parent / "out"


def build(name: str = "echo", out: Path = OUT, compiler: str = "cc") -> Path:
    """
    Compile C{bench/loadgen/NAME.c} into C{out/NAME} unless that is newer than
    its source, and return the program's path.

    @raise subprocess.CalledProcessError: if the compiler fails.
    """
    source = SOURCES / f"{name}.c"
    out = out.resolve()
    program = out / name
    if program.exists() and program.stat().st_mtime >= source.stat().st_mtime:
        return program
    out.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name so a concurrent run never executes a
    # half-written program.
    partial = out / f".{name}.partial"
    subprocess.run(
        [compiler, "-O2", "-Wall", "-Wextra", "-o", str(partial), str(source)],
        check=True,
        timeout=120,
    )
    partial.replace(program)
    return program


def run(
    argv: Sequence[str],
    log: Path,
    timeout: float,
    onMeasuring: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """
    Run a load generator to the end and return its C{result} object.

    C{onMeasuring} is called when the generator says its measured window has
    opened, so the caller can take its readings over that same window.

    @param timeout: seconds the whole run may take, warm-up included.
    @raise processes.ProcessError: if it fails, stalls or says nothing sane.
    """
    process = processes.start(argv, log, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            event = json.loads(processes.readLine(process, deadline))
            if event.get("event") == "measuring":
                onMeasuring()
            elif event.get("event") == "result":
                return dict(event)
    except (ValueError, processes.ProcessError) as e:
        raise processes.ProcessError(f"load generator: {e} (see {log})") from None
    finally:
        processes.stop(process)
