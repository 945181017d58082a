"""
A private OpenLDAP C{slapd} for tests: free loopback ports, a generated
C{slapd.conf}, an mdb directory in a temporary folder, TLS from a throwaway CA
(C{ldaps://} on one port, StartTLS on the C{ldap://} one), the memberof overlay and
a small seeded directory.

L{sharedSlapd} starts one per test process on first use and stops it at exit;
tests that must kill their server start their own L{Slapd}.  A missing C{slapd}
is a failure, not a skip: C{scripts/test} installs it.
"""

from __future__ import annotations

import atexit
import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import trustme

# tests/abuse.py and tests/dovecot.py (and a few test modules) still import
# these two from here.
from tests.support import dieWithParent, freePort

BASE_DN = "dc=example,dc=org"
PEOPLE = f"ou=people,{BASE_DN}"
GROUPS = f"ou=groups,{BASE_DN}"
ROOT_DN = f"cn=admin,{BASE_DN}"
ROOT_PASSWORD = "root-secret"
SERVICE_DN = f"cn=reader,{BASE_DN}"
SERVICE_PASSWORD = "reader-secret"
STAFF_GROUP = f"cn=staff,{GROUPS}"
ADMINS_GROUP = f"cn=admins,{GROUPS}"
WEIRD_UID = "zoë*(=,x)"
DOTTED_UID = "dana"
DOTTED_PASSWORD = "dana-pw"
DOTTED_MAIL = ("dana.smith@ex.org", "D.Smith@ex.org")

# uid -> password for the ordinary people entries.
PASSWORDS = {
    "alice": "alice-pw",
    "bob": "bob-pw",
    "carol": "carol-pw",
    WEIRD_UID: "zoë-pw",
}

_SCHEMAS = ("core", "cosine", "inetorgperson", "nis")

#: OpenSSH's LPK schema (openssh-lpk), which Debian's slapd does not ship:
#: the auxiliary class ldapPublicKey and its sshPublicKey values, one
#: authorized_keys line each (np-ssh reads them).  Written beside slapd.conf.
LPK_SCHEMA = """\
attributetype ( 1.3.6.1.4.1.24552.500.1.1.1.13 NAME 'sshPublicKey'
    DESC 'OpenSSH public key'
    EQUALITY octetStringMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 )

objectclass ( 1.3.6.1.4.1.24552.500.1.1.2.0 NAME 'ldapPublicKey'
    DESC 'OpenSSH LPK objectclass'
    SUP top AUXILIARY
    MAY ( sshPublicKey $ uid ) )
"""
_SCHEMA_DIR = Path("/etc/ldap/schema")
_MODULE_DIR = Path("/usr/lib/ldap")


def _binary(name: str) -> str:
    for directory in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"{name} is not installed: run scripts/test, which installs slapd and "
            "ldap-utils (listed in scripts/debian-packages.txt)"
        )
    return found


def _ldifValue(attribute: str, value: str) -> str:
    # LDIF (RFC 2849) carries non-ASCII and unsafe leading characters in base64.
    if value.isascii() and value[:1] not in (" ", ":", "<") and value.isprintable():
        return f"{attribute}: {value}"
    return f"{attribute}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}"


def _entry(dn: str, *pairs: tuple[str, str]) -> str:
    return "\n".join([_ldifValue("dn", dn)] + [_ldifValue(a, v) for a, v in pairs])


def userDN(uid: str, ou: str = PEOPLE) -> str:
    """
    The DN of the seeded person C{uid}, escaped as RFC 4514 requires.
    """
    escaped = "".join("\\" + c if c in ',+"\\<>;=' else c for c in uid)
    return f"uid={escaped},{ou}"


def _person(
    uid: str, password: str, ou: str = PEOPLE, mail: tuple[str, ...] = ()
) -> str:
    # mail is IA5 (ASCII) in the schema.
    mail = mail or ("".join(c for c in uid if c.isascii() and c.isalnum()) + "@ex.org",)
    return _entry(
        userDN(uid, ou),
        ("objectClass", "inetOrgPerson"),
        ("uid", uid),
        ("cn", uid),
        ("sn", uid),
        *(("mail", address) for address in mail),
        ("userPassword", password),
    )


def seedLDIF(port: int) -> str:
    """
    The test directory: people, groups, a service account, duplicate uids and
    referrals back to this server's C{ou=people}, where a client that followed
    them would find the users.
    """
    people = f"ldap://127.0.0.1:{port}/{PEOPLE}"
    entries = [
        _entry(
            BASE_DN,
            ("objectClass", "dcObject"),
            ("objectClass", "organization"),
            ("dc", "example"),
            ("o", "Example"),
        ),
        _entry(PEOPLE, ("objectClass", "organizationalUnit"), ("ou", "people")),
        _entry(
            f"ou=contractors,{BASE_DN}",
            ("objectClass", "organizationalUnit"),
            ("ou", "contractors"),
        ),
        _entry(GROUPS, ("objectClass", "organizationalUnit"), ("ou", "groups")),
        _entry(
            SERVICE_DN,
            ("objectClass", "organizationalRole"),
            ("objectClass", "simpleSecurityObject"),
            ("cn", "reader"),
            ("userPassword", SERVICE_PASSWORD),
        ),
        *(_person(uid, password) for uid, password in PASSWORDS.items()),
        # A person whose mail addresses are not their uid (mail lookups).
        _person(DOTTED_UID, DOTTED_PASSWORD, mail=DOTTED_MAIL),
        # Two entries with one uid: "exactly one entry" must refuse both.
        _person("twin", "twin-pw"),
        _person("twin", "twin-pw", f"ou=contractors,{BASE_DN}"),
        # A person who is only a referral elsewhere, and a referred subtree.
        _entry(
            userDN("mallory"),
            ("objectClass", "referral"),
            ("objectClass", "extensibleObject"),
            ("uid", "mallory"),
            ("ref", people),
        ),
        _entry(
            f"ou=elsewhere,{BASE_DN}",
            ("objectClass", "referral"),
            ("objectClass", "extensibleObject"),
            ("ou", "elsewhere"),
            ("ref", people),
        ),
        _entry(
            STAFF_GROUP,
            ("objectClass", "groupOfNames"),
            ("cn", "staff"),
            ("member", userDN("alice")),
            ("member", userDN(WEIRD_UID)),
        ),
        _entry(
            ADMINS_GROUP,
            ("objectClass", "groupOfUniqueNames"),
            ("cn", "admins"),
            ("uniqueMember", userDN("bob")),
        ),
    ]
    return "\n\n".join(entries) + "\n"


def _config(work: Path) -> str:
    lines = [f"include {_SCHEMA_DIR / name}.schema" for name in _SCHEMAS]
    lines.append(f"include {work / 'openssh-lpk.schema'}")
    lines += [
        f"modulepath {_MODULE_DIR}",
        "moduleload back_mdb",
        "moduleload memberof",
        f"pidfile {work / 'slapd.pid'}",
        f"argsfile {work / 'slapd.args'}",
        f"TLSCACertificateFile {work / 'ca.pem'}",
        f"TLSCertificateFile {work / 'server.pem'}",
        f"TLSCertificateKeyFile {work / 'server.key'}",
        "TLSProtocolMin 3.3",
        "database mdb",
        f"suffix {BASE_DN}",
        f"rootdn {ROOT_DN}",
        f"rootpw {ROOT_PASSWORD}",
        f"directory {work / 'db'}",
        "maxsize 33554432",
        "overlay memberof",
        "access to attrs=userPassword",
        "    by self write",
        "    by anonymous auth",
        "    by * none",
        "access to *",
        "    by * read",
    ]
    return "\n".join(lines) + "\n"


class Slapd:
    """
    One private slapd.

    @ivar port: the C{ldap://} (and StartTLS) port on 127.0.0.1.
    @ivar tlsPort: the C{ldaps://} port on 127.0.0.1.
    @ivar caFile: the CA that signed slapd's certificate (for localhost and
        127.0.0.1; slapd listens on L{otherHost} too, a name it lacks).
    @ivar wrongCAFile: an unrelated CA, which must not be trusted for slapd.
    """

    host = "127.0.0.1"
    # Also loopback, but not a name in slapd's certificate.
    otherHost = "127.0.0.2"

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="np-slapd-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.tlsPort = 0
        self.caFile = str(self.work / "ca.pem")
        self.wrongCAFile = str(self.work / "wrong-ca.pem")

    def _writeFiles(self) -> None:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(self.caFile)
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        leaf.private_key_pem.write_to_path(str(self.work / "server.key"))
        leaf.cert_chain_pems[0].write_to_path(str(self.work / "server.pem"))
        for extra in leaf.cert_chain_pems[1:]:
            extra.write_to_path(str(self.work / "server.pem"), append=True)
        trustme.CA().cert_pem.write_to_path(self.wrongCAFile)
        (self.work / "db").mkdir()
        (self.work / "openssh-lpk.schema").write_text(LPK_SCHEMA)
        (self.work / "slapd.conf").write_text(_config(self.work))

    def start(self, timeout: float = 15.0) -> Slapd:
        """
        Start slapd and seed the directory; raises if it does not come up.
        """
        slapd = _binary("slapd")
        _binary("ldapadd")
        self._writeFiles()
        deadline = time.monotonic() + timeout
        lastError = ""
        while time.monotonic() < deadline:
            self.port, self.tlsPort = freePort(), freePort()
            urls = " ".join(
                f"{scheme}://{host}:{port}/"
                for host in (self.host, self.otherHost)
                for scheme, port in (("ldap", self.port), ("ldaps", self.tlsPort))
            )
            log = (self.work / "slapd.log").open("wb")
            # -d keeps slapd in the foreground, so this Popen is the daemon itself.
            self.process = subprocess.Popen(
                [slapd, "-f", str(self.work / "slapd.conf"), "-h", urls, "-d", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=dieWithParent,
            )
            log.close()
            if self._waitListening(deadline):
                self._add(seedLDIF(self.port))
                return self
            lastError = (self.work / "slapd.log").read_text(errors="replace")
            self.stop(remove=False)
        self.stop()
        raise RuntimeError(f"slapd did not start:\n{lastError}")

    def _waitListening(self, deadline: float) -> bool:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    with socket.create_connection((self.host, self.tlsPort), 0.5):
                        return True
            except OSError:
                time.sleep(0.02)
        return False

    def url(self, tls: bool = False, host: str | None = None) -> str:
        """
        C{ldap://127.0.0.1:PORT} or C{ldaps://127.0.0.1:TLSPORT}, no trailing slash.
        """
        host = host or self.host
        if tls:
            return f"ldaps://{host}:{self.tlsPort}"
        return f"ldap://{host}:{self.port}"

    def _ldap(self, tool: str, *args: str, stdin: str = "") -> None:
        result = subprocess.run(
            [
                _binary(tool),
                "-x",
                "-H",
                self.url(),
                "-D",
                ROOT_DN,
                "-w",
                ROOT_PASSWORD,
                *args,
            ],
            input=stdin.encode("utf-8"),
            capture_output=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace')}"
            )

    def _add(self, ldif: str) -> None:
        self._ldap("ldapadd", stdin=ldif)

    def modify(self, ldif: str) -> None:
        """
        Apply an LDIF change record as the rootdn, with the stock C{ldapmodify}.
        """
        self._ldap("ldapmodify", stdin=ldif)

    def addPublicKey(self, dn: str, key: str) -> None:
        """
        Give C{dn} the C{ldapPublicKey} class (once) and the C{sshPublicKey}
        C{key} (an authorized_keys line).
        """
        self.modify(
            f"{_ldifValue('dn', dn)}\nchangetype: modify\n"
            "add: objectClass\nobjectClass: ldapPublicKey\n-\n"
            f"add: sshPublicKey\n{_ldifValue('sshPublicKey', key)}\n"
        )

    def setPassword(self, dn: str, password: str) -> None:
        """
        Replace C{dn}'s C{userPassword}.
        """
        self.modify(
            _entry(
                dn,
                ("changetype", "modify"),
                ("replace", "userPassword"),
                ("userPassword", password),
            )
            + "\n"
        )

    def kill(self) -> None:
        """
        SIGKILL slapd: connections drop without a goodbye.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, remove: bool = True) -> None:
        """
        Stop slapd (TERM, then KILL) and, unless told not to, remove its files.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None
        if remove:
            shutil.rmtree(self.work, ignore_errors=True)


_shared: Slapd | None = None


def sharedSlapd() -> Slapd:
    """
    The process-wide slapd, started on first use and stopped when Python exits.
    Tests that change it must restore what they change.
    """
    global _shared
    if _shared is None or _shared.process is None or _shared.process.poll() is not None:
        server = Slapd()
        atexit.register(server.stop)
        _shared = server.start()
    return _shared


def startedSlapd() -> Slapd:
    """
    A slapd of one's own (to kill, say); the caller stops it.
    """
    server = Slapd()
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise


if __name__ == "__main__":
    # Handy by hand: start one, print where, wait for ^C.
    server = sharedSlapd()
    print(server.url(), server.url(tls=True), server.caFile, os.getpid())
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
