"""
What contenders need before they can start, made once under C{bench/out/}
and used as the contenders' probes (exit status 0: ready):

    python -m bench.prepare venv NAME     # a peer's own virtualenv
    python -m bench.prepare tls           # one RSA-2048 certificate for all
    python -m bench.prepare tool NAME     # a program on PATH (wrk, ...)
    python -m bench.prepare mpconn-key    # the authkey file
    python -m bench.prepare mail          # users, Maildirs of 1,000 messages
    python -m bench.prepare ftp           # the FTP root (and the certificate)
    python -m bench.prepare ssh           # the SFTP keys and home

Peers that pin their own dependencies (httpbin pins Flask and Werkzeug) get a
virtualenv each under C{bench/out/venvs/}, so the development one is left
alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

from bench.loadgen import OUT

VENVS = {
    "httpbin": ("httpbin", "gunicorn"),
    "wsgi": ("flask", "gunicorn"),
    "aiohttp": ("aiohttp", "uvloop"),
    "aiosmtpd": ("aiosmtpd",),
    # pyftpdlib's TLS_FTPHandler needs pyOpenSSL.
    "pyftpdlib": ("pyftpdlib", "pyopenssl"),
}

TLS = OUT / "tls"
MPCONN_KEY = OUT / "mpconn.key"
MAIL = OUT / "mail"
FTP = OUT / "ftp"
SSH = OUT / "ssh"

# The mail benchmarks' user: password, Maildir, 1,000 messages in INBOX.
MAIL_USER = "bench"
MAIL_PASSWORD = "bench-password"
MAIL_MESSAGES = 1000

# The FTP benchmarks' user.
FTP_USER = "bench"
FTP_PASSWORD = "bench-password"


def venv(name: str) -> Path:
    """
    The virtualenv C{bench/out/venvs/NAME} with its packages installed.
    """
    path = OUT.resolve() / "venvs" / name
    ready = path / ".ready"
    if not ready.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
        subprocess.run(
            [str(path / "bin" / "pip"), "install", "-q", *VENVS[name]], check=True
        )
        ready.write_text(" ".join(VENVS[name]) + "\n")
    return path


def tls() -> Path:
    """
    C{bench/out/tls/cert.pem} and C{key.pem}: self-signed RSA-2048 for
    127.0.0.1, shared by every TLS contender so the key type is the same.
    """
    cert = TLS / "cert.pem"
    if not cert.exists():
        TLS.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(TLS / "key.pem"),
                "-out",
                str(TLS / ".cert.pem"),
                "-days",
                "3650",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
        (TLS / ".cert.pem").replace(cert)
    return cert


def mpconnKey() -> Path:
    """
    The authkey file both multiprocessing.connection servers read.
    """
    if not MPCONN_KEY.exists():
        MPCONN_KEY.parent.mkdir(parents=True, exist_ok=True)
        MPCONN_KEY.write_bytes(b"bench-authkey")
    return MPCONN_KEY


def message(number: int) -> bytes:
    """
    Test message C{number}: headers and about 2 KiB of body, CRLF ends.
    """
    mail = EmailMessage()
    mail["From"] = "sender@localhost"
    mail["To"] = f"{MAIL_USER}@localhost"
    mail["Subject"] = f"bench message {number}"
    mail["Message-ID"] = f"<bench-{number}@localhost>"
    mail.set_content(f"line of text in message {number}\n" * 75)
    return bytes(mail).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def mail() -> Path:
    """
    C{bench/out/mail/}: an htpasswd file (np-imap, np-smtp) and two copies
    of a Maildir of L{MAIL_MESSAGES} messages: C{home/bench/Maildir}
    (Dovecot's) and C{root/bench} (np-imap's C{--maildir-root}).
    """
    # What the SMTP contenders delivered last time goes: each run starts
    # from empty Maildirs.
    for delivered in ("smtp", "aiosmtpd"):
        shutil.rmtree(MAIL / delivered, ignore_errors=True)
    done = MAIL / ".ready"
    if done.exists():
        return MAIL
    from netplugins.cred.htpasswd import hashPassword

    shutil.rmtree(MAIL, ignore_errors=True)
    maildir = MAIL / "home" / MAIL_USER / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for number in range(1, MAIL_MESSAGES + 1):
        (maildir / "cur" / f"1700000000.{number:05d}.bench:2,S").write_bytes(
            message(number)
        )
    # np-imap's copy: each server keeps its own index files beside the mail.
    shutil.copytree(maildir, MAIL / "root" / MAIL_USER)
    (MAIL / "htpasswd").write_text(f"{MAIL_USER}:{hashPassword(MAIL_PASSWORD)}\n")
    done.write_text(f"{MAIL_MESSAGES}\n")
    return MAIL


def ftp() -> Path:
    """
    C{bench/out/ftp/root}, the directory both FTP servers serve (the load
    client uploads what it downloads), C{passwd} (the user's password in
    the clear, for np-ftp's C{file:} checker) and the shared certificate.
    """
    tls()
    (FTP / "root").mkdir(parents=True, exist_ok=True)
    (FTP / "passwd").write_text(f"{FTP_USER}:{FTP_PASSWORD}\n")
    return FTP


def ssh() -> Path:
    """
    C{bench/out/ssh}: the client's key C{id_ed25519}, the host key both
    SSH servers use, C{keys/USER} (the user running the suite: OpenSSH's
    sshd logs in OS accounts) authorizing the client's key for both, and
    C{home}, the directory both serve, with C{session.bin} (1 KiB), which
    the sessions case fetches.
    """
    import getpass

    user = getpass.getuser()
    for key in ("id_ed25519", "host_ed25519_key"):
        if not (SSH / key).exists():
            SSH.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(SSH / key)],
                check=True,
            )
    (SSH / "keys").mkdir(exist_ok=True)
    (SSH / "keys" / user).write_bytes((SSH / "id_ed25519.pub").read_bytes())
    (SSH / "home").mkdir(exist_ok=True)
    session = SSH / "home" / "session.bin"
    if not session.exists() or session.stat().st_size != 1024:
        session.write_bytes(bytes(range(256)) * 4)
    return SSH


def main(argv: list[str]) -> int:
    what, *rest = argv or ["help"]
    if what == "venv" and rest:
        venv(rest[0])
    elif what == "tls":
        tls()
    elif what == "tool" and rest:
        if shutil.which(rest[0]) is None:
            print(f"{rest[0]} is not installed", file=sys.stderr)
            return 1
    elif what == "mpconn-key":
        mpconnKey()
    elif what == "mail":
        mail()
    elif what == "ftp":
        ftp()
    elif what == "ssh":
        ssh()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
