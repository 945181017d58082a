"""
np-ftp against pyftpdlib (issue 14 item 7, pyftpdlib's C{ftpbench} cases):
300 concurrent logins (rate, latency and the server's peak RSS), RETR and
STOR of a 32 MiB file, in the clear (C{ftp}) and over C{AUTH TLS}
(C{ftps}), driven by C{bench/clients/ftp.py}.
"""

from __future__ import annotations

from bench.services import CERT, LISTEN, PREPARE, TWISTD, clients
from bench.suite import Benchmark, Case, Contender

FTP_LOGIN = ("--user", "bench", "--password", "bench-password")


def npFTP(name: str, label: str, *options: str) -> Contender:
    """
    C{twistd np-ftp} serving C{bench/out/ftp/root} to the load client's
    user, its password in the clear in a file (Twisted's C{file:} checker;
    pyftpdlib's C{DummyAuthorizer} holds it in memory).
    """
    return Contender(
        name,
        label,
        (
            *TWISTD,
            "np-ftp",
            *LISTEN,
            "--auth",
            "file:{out}/ftp/passwd",
            "--root",
            "{out}/ftp/root",
            "--state-dir",
            "{out}/ftp/state",
            # The 300 login clients all come from 127.0.0.1.
            "--max-connections-per-ip",
            "0",
            *CERT,
            *options,
        ),
        probe=(*PREPARE, "ftp"),
    )


def pyftpdlib(name: str, label: str, *options: str) -> Contender:
    """
    pyftpdlib in its virtualenv (bench/peers/pyftpdlib_server.py) serving the
    same root to the same user.
    """
    return Contender(
        name,
        label,
        (
            "{venvs}/pyftpdlib/bin/python",
            "-m",
            "bench.peers.pyftpdlib_server",
            "--port",
            "{port}",
            "--root",
            "{out}/ftp/root",
            *FTP_LOGIN,
            *options,
        ),
        probe=(*PREPARE, "venv", "pyftpdlib"),
    )


#: A large file: 32 MiB down and up.
FTP_FILE = 32 * 2**20
FTP_CASES = (
    Case(0, connections=300, framing="login", label="login + QUIT"),
    Case(FTP_FILE, connections=1, framing="retr", label="RETR 32 MiB"),
    Case(FTP_FILE, connections=1, framing="stor", label="STOR 32 MiB"),
)
FTP_NOTES = (
    "pyftpdlib's `ftpbench` cases, driven by Python's `ftplib`, one client "
    "process per connection (bench/clients/ftp.py): *login + QUIT*: 300 "
    "clients each connect, log in and quit, back to back, so a request is a "
    "whole session, p50 the time one takes with 300 at once, and *server peak "
    "RSS* the server's high-water mark; *RETR* and *STOR*: one client moves a "
    "32 MiB file (`TYPE I`, a fresh passive data connection each time) again "
    "and again, MiB/s being the throughput. Both servers serve the same "
    "directory to one user whose password is kept in the clear (np-ftp: "
    "Twisted's `file:` checker, which reads a one-line file at each login; "
    "pyftpdlib: its `DummyAuthorizer`, in memory; a bcrypt htpasswd would "
    "cost np-ftp about 0.25 s of CPU a login). pyftpdlib runs "
    "from its own virtualenv (bench/peers/pyftpdlib_server.py) with its "
    "defaults: `sendfile()` for plain downloads, its INFO log. "
)

FTP = Benchmark(
    name="ftp",
    title="FTP: np-ftp against pyftpdlib, logins, RETR and STOR in the clear",
    loadgen="",
    load=clients("ftp", "--mode", "{framing}"),
    primary="np-ftp",
    contenders=(
        npFTP("np-ftp", "netplugins np-ftp", "--tls-required", "none"),
        pyftpdlib("pyftpdlib", "pyftpdlib FTPHandler"),
    ),
    cases=FTP_CASES,
    notes=FTP_NOTES
    + "np-ftp runs with `--tls-required none` (its default refuses passwords "
    "before `AUTH TLS`).",
)

FTPS = Benchmark(
    name="ftps",
    title="FTPS: np-ftp against pyftpdlib, logins, RETR and STOR over AUTH TLS",
    loadgen="",
    load=clients("ftp", "--mode", "{framing}", "--tls"),
    primary="np-ftp-tls",
    contenders=(
        npFTP("np-ftp-tls", "netplugins np-ftp", "--tls-required", "all"),
        pyftpdlib(
            "pyftpdlib-tls",
            "pyftpdlib TLS_FTPHandler",
            "--cert",
            "{out}/tls/cert.pem",
            "--key",
            "{out}/tls/key.pem",
        ),
    ),
    cases=FTP_CASES,
    notes=FTP_NOTES + "Every session says `AUTH TLS` (so a login includes a full TLS "
    "handshake) and `PROT P`; both servers require both (`np-ftp "
    "--tls-required all`; pyftpdlib's `TLS_FTPHandler` with "
    "`tls_control_required` and `tls_data_required`) and use the suite's "
    "certificate. The client resumes the control connection's TLS session "
    "on each data connection, as curl and lftp do, which np-ftp's default "
    "`--tls-session-reuse required` asks for; both negotiate TLS 1.3.",
)

FTP_BENCHMARKS: tuple[Benchmark, ...] = (FTP, FTPS)
