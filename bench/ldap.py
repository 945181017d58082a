"""
LDAP logins per second and latency: the C{ldap:} checker three ways against a
loop of the stock C{ldapwhoami}, side by side, on one private slapd
(L{tests.slapd}: free loopback port, seeded directory).

    .venv/bin/python -m bench.ldap                 # 5 s per contender
    .venv/bin/python -m bench.ldap --quick         # 1 s, a smoke run

Contenders, each driven by C{--concurrency} clients logging in back to back
(alice, bob and carol in turn) for C{--duration} seconds after a warm-up:

 - C{ldapwhoami}: one C{ldapwhoami -x -D DN -w PASSWORD} process per login
   (connect, simple bind, Who-am-I, unbind): what a shell script can do;
 - C{direct}: C{bind_dn_template}, a fresh connection and bind per login,
   no search;
 - C{pooled}: search with a pooled service-account connection, then bind as
   the user on a fresh connection (the recommended configuration);
 - C{cached}: as C{pooled} with C{cache_ttl = 300}: after the first login of
   each user, answers come from the positive cache.

The checkers run as in a service: C{requestAvatarId} on the reactor, ldap3 in
the checker's bounded pool (C{pool_size} = concurrency).  Latency is measured
from the call to the Deferred firing.  Writes C{results.json} and C{ldap.md}
(a section for C{docs/benchmarks.md}) under C{--output}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attrs import asdict, frozen
from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.task import deferLater, react
from twisted.internet.threads import deferToThread

from bench.processes import ROOT

USERS = (("alice", "alice-pw"), ("bob", "bob-pw"), ("carol", "carol-pw"))
OUT = ROOT / "bench" / "out" / "ldap"


@frozen
class Result:
    """
    One contender's figures.

    @ivar logins: logins completed in the measured window.
    @ivar errors: logins refused or failed (all should succeed).
    """

    name: str
    label: str
    logins: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def perSecond(self) -> float:
        """
        Logins per second over the measured window.
        """
        return self.logins / self.seconds


def summarise(
    name: str, label: str, latencies: list[float], errors: int, seconds: float
) -> Result:
    """
    Count and percentiles of C{latencies} (seconds) into a L{Result}.
    """
    ordered = sorted(latencies) or [0.0]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return Result(
        name,
        label,
        len(latencies),
        errors,
        seconds,
        round(statistics.median(ordered) * 1000, 3),
        round(p99 * 1000, 3),
    )


class Window:
    """
    The measured window: samples taken before C{start} are warm-up.
    """

    def __init__(self, warmup: float, duration: float) -> None:
        self.start = time.monotonic() + warmup
        self.end = self.start + duration
        self.latencies: list[float] = []
        self.errors = 0

    def record(self, began: float, ok: bool) -> None:
        finished = time.monotonic()
        if self.start <= began and finished <= self.end:
            if ok:
                self.latencies.append(finished - began)
            else:
                self.errors += 1

    @property
    def open(self) -> bool:
        return time.monotonic() < self.end


def whoamiLoop(server: Any, window: Window, worker: int) -> None:
    """
    Log in with C{ldapwhoami} processes back to back until the window closes.
    Blocking: runs in a thread.
    """
    from tests.slapd import userDN

    index = worker
    while window.open:
        user, password = USERS[index % len(USERS)]
        index += 1
        began = time.monotonic()
        done = subprocess.run(
            [
                "ldapwhoami",
                "-x",
                "-H",
                server.url(),
                "-D",
                userDN(user),
                "-w",
                password,
            ],
            capture_output=True,
            check=False,
        )
        window.record(began, done.returncode == 0)


async def checkerLoop(checker: Any, window: Window, worker: int) -> None:
    """
    Log in through C{checker} back to back until the window closes.
    """
    index = worker
    while window.open:
        user, password = USERS[index % len(USERS)]
        index += 1
        began = time.monotonic()
        try:
            credentials = UsernamePassword(user.encode(), password.encode())
            await checker.requestAvatarId(credentials)
        except Exception:
            window.record(began, False)
        else:
            window.record(began, True)


def checkerConfigs(server: Any, work: Path, concurrency: int) -> dict[str, Any]:
    """
    The C{[ldap]} settings of the three checker contenders.
    """
    from tests.slapd import PEOPLE, SERVICE_DN, SERVICE_PASSWORD

    secret = work / "reader.secret"
    secret.write_text(SERVICE_PASSWORD + "\n")
    base = {"url": f"{server.url()}/{PEOPLE}?uid?sub", "pool_size": str(concurrency)}
    pooled = {**base, "bind_dn": SERVICE_DN, "bind_password_file": str(secret)}
    return {
        "direct": {**base, "bind_dn_template": f"uid={{user}},{PEOPLE}"},
        "pooled": pooled,
        "cached": {**pooled, "cache_ttl": "300"},
    }


LABELS = {
    "ldapwhoami": "ldapwhoami loop (a process per login)",
    "direct": "ldap: direct bind (bind_dn_template)",
    "pooled": "ldap: search (pooled service account) + bind",
    "cached": "ldap: pooled + cache_ttl = 300",
}


async def measureAll(reactor: Any, args: argparse.Namespace) -> list[Result]:
    """
    Start slapd, measure every contender in turn, stop slapd.
    """
    from netplugins.cred.ldap.checker import LDAPChecker
    from netplugins.cred.ldap.config import configFromMapping
    from tests.slapd import startedSlapd

    server = startedSlapd()
    results = []
    try:
        window = Window(args.warmup, args.duration)
        await gatherResults(
            [
                deferToThread(whoamiLoop, server, window, n)
                for n in range(args.concurrency)
            ]
        )
        results.append(
            summarise(
                "ldapwhoami",
                LABELS["ldapwhoami"],
                window.latencies,
                window.errors,
                args.duration,
            )
        )
        for name, section in checkerConfigs(
            server, server.work, args.concurrency
        ).items():
            checker = LDAPChecker(configFromMapping(section), reactor=reactor)
            window = Window(args.warmup, args.duration)
            await gatherResults(
                [
                    ensureDeferred(checkerLoop(checker, window, n))
                    for n in range(args.concurrency)
                ]
            )
            await checker.close()
            results.append(
                summarise(
                    name, LABELS[name], window.latencies, window.errors, args.duration
                )
            )
            # Let slapd and the pool settle between contenders.
            await deferLater(reactor, 0.2, lambda: None)
    finally:
        server.stop()
    return results


def markdown(results: list[Result], args: argparse.Namespace) -> str:
    """
    The report section: method and one table.
    """
    whoami = results[0].perSecond or 1.0
    lines = [
        "## LDAP logins: the `ldap:` checker against `ldapwhoami`",
        "",
        f"{args.concurrency} clients log in back to back for {args.duration:g} s "
        f"(after {args.warmup:g} s of warm-up) against one private OpenLDAP "
        "slapd on 127.0.0.1 (mdb backend), as alice, bob and carol in turn; "
        f"{os.cpu_count()} CPUs shared by slapd, the clients and the checker. "
        "The `ldapwhoami` loop starts one process per login; the checkers run "
        "as in a service (ldap3 in their pool of `pool_size` = clients). "
        "Produced by `python -m bench.ldap`.",
        "",
        "| contender | logins/s | vs ldapwhoami | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.label} | {r.perSecond:.0f} | {r.perSecond / whoami:.2f}x "
            f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |"
        )
    return "\n".join(lines) + "\n"


def parseArguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ldap",
        description=(
            "LDAP logins per second: the ldap: checker against an ldapwhoami loop"
        ),
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--quick", action="store_true", help="1 s per contender, 0.3 s warm-up"
    )
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 1.0, 0.3
    return args


def main(argv: list[str] | None = None, exit: Callable[..., Any] = react) -> None:
    args = parseArguments(argv)

    async def run(reactor: Any) -> None:
        results = await measureAll(reactor, args)
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "results.json").write_text(
            json.dumps(
                [{**asdict(r), "per_second": r.perSecond} for r in results], indent=2
            )
            + "\n"
        )
        text = markdown(results, args)
        (args.output / "ldap.md").write_text(text)
        print(text)

    exit(lambda reactor: Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main()
