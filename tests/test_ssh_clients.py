"""
np-ssh against clients nobody here wrote, over real sockets: OpenSSH's
C{ssh} (exec, a C{-tt} shell, every cipher and key exchange it shares with
np-ssh), C{sftp -b}, C{scp} (SFTP underneath, in OpenSSH 9), paramiko
running the book's chapter 16 programs exactly as printed, asyncssh, and
C{ssh-audit}.

The book's programs connect to port 22 of the host named on their command
line, as the user named there, by key (C{client.connect(hostname,
username=username)}: paramiko looks for C{~/.ssh/id_*}).  The tests give
them what they take without editing them: np-ssh listens on port 22 of a
loopback address of its own (127.x.y.z, all of them reach the loopback
interface on Linux; binding port 22 needs root, which the test machines
have), C{HOME} is a directory whose C{.ssh/id_ed25519} is alice's key
(listed in the server's C{--authorized-keys-dir}), and no agent is set.
"""

from __future__ import annotations

import ftplib
import io
import json
import os
import random
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.slapd import PEOPLE, startedSlapd, userDN
from tests.sshsupport import PASSWORD, USER, SSHServer, openssh, startSSH
from tests.support import freePort, runTwistd, waitForPort

#: Foundations of Python Network Programming, 3rd ed., py3/chapter16/ssh_simple.py,
#: as printed.
SSH_SIMPLE = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter16/ssh_simple.py
# Using SSH like Telnet: connecting and running two commands

import argparse, paramiko, sys

class AllowAnythingPolicy(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        return

def main(hostname, username):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(AllowAnythingPolicy())
    client.connect(hostname, username=username)  # password='')

    channel = client.invoke_shell()
    stdin = channel.makefile('wb')
    stdout = channel.makefile('rb')

    stdin.write(b'echo Hello, world\rexit\r')
    output = stdout.read()
    client.close()

    sys.stdout.buffer.write(output)

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='Connect over SSH')
    parser.add_argument('hostname', help='Remote machine name')
    parser.add_argument('username', help='Username on the remote machine')
    args = parser.parse_args()
    main(args.hostname, args.username)
"""

#: Foundations of Python Network Programming, 3rd ed., py3/chapter16/ssh_commands.py,
#: as printed.
SSH_COMMANDS = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter16/ssh_commands.py
# Running three separate commands, and reading three separate outputs

import argparse, paramiko

class AllowAnythingPolicy(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        return

def main(hostname, username):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(AllowAnythingPolicy())
    client.connect(hostname, username=username)  # password='')

    for command in 'echo "Hello, world!"', 'uname', 'uptime':
        stdin, stdout, stderr = client.exec_command(command)
        stdin.close()
        print(repr(stdout.read()))
        stdout.close()
        stderr.close()

    client.close()

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='Connect over SSH')
    parser.add_argument('hostname', help='Remote machine name')
    parser.add_argument('username', help='Username on the remote machine')
    args = parser.parse_args()
    main(args.hostname, args.username)
"""

#: Foundations of Python Network Programming, 3rd ed., py3/chapter16/ssh_threads.py,
#: as printed.
SSH_THREADS = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter16/ssh_threads.py
# Running two remote commands simultaneously in different channels

import argparse, paramiko, threading

class AllowAnythingPolicy(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        return

def main(hostname, username):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(AllowAnythingPolicy())
    client.connect(hostname, username=username)  # password='')

    def read_until_EOF(fileobj):
        s = fileobj.readline()
        while s:
            print(s.strip())
            s = fileobj.readline()

    ioe1 = client.exec_command('echo One;sleep 2;echo Two;sleep 1;echo Three')
    ioe2 = client.exec_command('echo A;sleep 1;echo B;sleep 2;echo C')
    thread1 = threading.Thread(target=read_until_EOF, args=(ioe1[1],))
    thread2 = threading.Thread(target=read_until_EOF, args=(ioe2[1],))
    thread1.start()
    thread2.start()
    thread1.join()
    thread2.join()

    client.close()

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='Connect over SSH')
    parser.add_argument('hostname', help='Remote machine name')
    parser.add_argument('username', help='Username on the remote machine')
    args = parser.parse_args()
    main(args.hostname, args.username)
"""

#: Foundations of Python Network Programming, 3rd ed., py3/chapter16/sftp_get.py,
#: as printed.
SFTP_GET = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter16/sftp_get.py
# Fetching files with SFTP

import argparse, functools, paramiko

class AllowAnythingPolicy(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        return

def main(hostname, username, filenames):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(AllowAnythingPolicy())
    client.connect(hostname, username=username)  # password='')

    def print_status(filename, bytes_so_far, bytes_total):
        percent = 100. * bytes_so_far / bytes_total
        print('Transfer of %r is at %d/%d bytes (%.1f%%)' % (
            filename, bytes_so_far, bytes_total, percent))

    sftp = client.open_sftp()
    for filename in filenames:
        if filename.endswith('.copy'):
            continue
        callback = functools.partial(print_status, filename)
        sftp.get(filename, filename + '.copy', callback=callback)
    client.close()

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='Copy files over SSH')
    parser.add_argument('hostname', help='Remote machine name')
    parser.add_argument('username', help='Username on the remote machine')
    parser.add_argument('filename', nargs='+', help='Filenames to fetch')
    args = parser.parse_args()
    main(args.hostname, args.username, args.filename)
"""

#: Foundations of Python Network Programming, 3rd ed., py3/chapter16/telnet_login.py,
#: as printed.
TELNET_LOGIN = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter16/telnet_login.py
# Connect to localhost, watch for a login prompt, and try logging in

import argparse, getpass, telnetlib

def main(hostname, username, password):
    t = telnetlib.Telnet(hostname)
    # t.set_debuglevel(1)        # uncomment to get debug messages
    t.read_until(b'login:')
    t.write(username.encode('utf-8'))
    t.write(b'\r')
    t.read_until(b'assword:')    # first letter might be 'p' or 'P'
    t.write(password.encode('utf-8'))
    t.write(b'\r')
    n, match, previous_text = t.expect([br'Login incorrect', br'\$'], 10)
    if n == 0:
        print('Username and password failed - giving up')
    else:
        t.write(b'exec uptime\r')
        print(t.read_all().decode('utf-8'))  # read until socket closes

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='Use Telnet to log in')
    parser.add_argument('hostname', help='Remote host to telnet to')
    parser.add_argument('username', help='Remote username')
    args = parser.parse_args()
    password = getpass.getpass('Password: ')
    main(args.hostname, args.username, password)
"""

#: Foundations of Python Network Programming, 3rd ed., py3/chapter16/telnet_codes.py,
#: as printed.
TELNET_CODES = r"""#!/usr/bin/env python3
# Foundations of Python Network Programming, Third Edition
# https://github.com/brandon-rhodes/fopnp/blob/m/py3/chapter16/telnet_codes.py
# How your code might look if you intercept Telnet options yourself

import argparse, getpass
from telnetlib import Telnet, IAC, DO, DONT, WILL, WONT, SB, SE, TTYPE

def process_option(tsocket, command, option):
    if command == DO and option == TTYPE:
        tsocket.sendall(IAC + WILL + TTYPE)
        print('Sending terminal type "mypython"')
        tsocket.sendall(IAC + SB + TTYPE + b'\0' + b'mypython' + IAC + SE)
    elif command in (DO, DONT):
        print('Will not', ord(option))
        tsocket.sendall(IAC + WONT + option)
    elif command in (WILL, WONT):
        print('Do not', ord(option))
        tsocket.sendall(IAC + DONT + option)

def main(hostname, username, password):
    t = Telnet(hostname)
    # t.set_debuglevel(1)        # uncomment to get debug messages
    t.set_option_negotiation_callback(process_option)
    t.read_until(b'login:', 10)
    t.write(username.encode('utf-8') + b'\r')
    t.read_until(b'assword:', 10)    # first letter might be 'p' or 'P'
    t.write(password.encode('utf-8') + b'\r')
    n, match, previous_text = t.expect([br'Login incorrect', br'\$'], 10)
    if n == 0:
        print("Username and password failed - giving up")
    else:
        t.write(b'exec echo My terminal type is $TERM\n')
        print(t.read_all().decode('ascii'))

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='Use Telnet to log in')
    parser.add_argument('hostname', help='Remote host to telnet to')
    parser.add_argument('username', help='Remote username')
    args = parser.parse_args()
    password = getpass.getpass()
    main(args.hostname, args.username, password)
"""

ASYNCSSH_CLIENT = """
import asyncio, sys
import asyncssh

async def main(port, password):
    async with asyncssh.connect(
        "127.0.0.1", port, username="alice", password=password,
        known_hosts=None, client_keys=None, agent_path=None,
        # OpenSSH 9.2 lacks the post-quantum hybrid; asyncssh has it.
        kex_algs=["mlkem768x25519-sha256"],
        encryption_algs=["chacha20-poly1305@openssh.com"],
    ) as conn:
        result = await conn.run('echo "$USER" says hi; whoami', check=True)
        print(result.stdout, end="")
        async with conn.start_sftp_client() as sftp:
            print(sorted(await sftp.listdir(".")))
            print(await sftp.realpath(".."))

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""

#: paramiko's SFTP client: hardlink@openssh.com (sent by hand: paramiko has
#: no method for it), chmod (SETSTAT) and statvfs@openssh.com, each
#: attempt's outcome printed.
PARAMIKO_LINKS = r"""
import struct, sys
import paramiko
from paramiko.sftp import CMD_EXTENDED

c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect("127.0.0.1", int(sys.argv[1]), username="alice", password=sys.argv[2],
          look_for_keys=False, allow_agent=False)
sftp = c.open_sftp()
def attempt(label, f, *args):
    try:
        result = f(*args)
    except IOError:
        print(label, "IOError")
    else:
        print(label, "ok", *([] if result is None else [result]))
def link(old, new):
    sftp._request(CMD_EXTENDED, "hardlink@openssh.com", old, new)
attempt("link mine.txt copy.txt", link, "mine.txt", "copy.txt")
attempt("link ../secret.txt a", link, "../secret.txt", "a")
attempt("link link b", link, "link", "b")
attempt("link mine.txt up/up/planted.txt", link, "mine.txt", "up/up/planted.txt")
attempt("link up", link, "up", "c")
def chmod(path, mode):
    sftp.chmod(path, mode)
    return oct(sftp.stat(path).st_mode)
attempt("chmod copy.txt", chmod, "copy.txt", 0o4640)
attempt("chmod link", chmod, "link", 0o777)
attempt("chmod ../secret.txt", chmod, "../secret.txt", 0o777)
attempt("chmod /", chmod, "/", 0o700)
t, msg = sftp._request(CMD_EXTENDED, "statvfs@openssh.com", "/")
fields = struct.unpack(">11Q", msg.get_remainder()[:88])
print("statvfs", fields[2] > 0 and fields[10] > 0)
"""

TIMEOUT = 30
TIMEOUT = 30


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=TIMEOUT, **kwargs)  # type: ignore[call-overload, no-any-return]


class OpenSSHTests(TestCase):
    """
    OpenSSH's clients against twistd np-ssh.
    """

    def ssh(
        self, server: SSHServer, *args: str, stdin: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        return run(
            [openssh("ssh"), *server.openssh(), f"{USER}@127.0.0.1", *args], input=stdin
        )

    def test_exec(self) -> None:
        """ssh runs a command line in the built-in shell and gets its exit status."""
        server = startSSH(self, "--shell", "builtin")
        result = self.ssh(
            server, 'echo "Hello, world!"; whoami; pwd; echo $USER; exit 3'
        )
        self.assertEqual(
            (result.stdout, result.returncode), (b"Hello, world!\nalice\n/\nalice\n", 3)
        )

    def test_everyAlgorithm(self) -> None:
        """Each cipher, MAC and key exchange OpenSSH 9.2 shares with np-ssh works."""
        server = startSSH(self, "--shell", "builtin")
        choices = [
            ("Ciphers", "chacha20-poly1305@openssh.com"),
            ("Ciphers", "aes256-gcm@openssh.com"),
            ("Ciphers", "aes128-gcm@openssh.com"),
            ("Ciphers", "aes256-ctr"),
            ("Ciphers", "aes128-ctr"),
            ("MACs", "hmac-sha2-512-etm@openssh.com"),
            ("MACs", "hmac-sha2-256-etm@openssh.com"),
            ("KexAlgorithms", "curve25519-sha256"),
            ("KexAlgorithms", "curve25519-sha256@libssh.org"),
            ("KexAlgorithms", "diffie-hellman-group16-sha512"),
            ("KexAlgorithms", "diffie-hellman-group18-sha512"),
            ("HostKeyAlgorithms", "ssh-ed25519"),
            ("HostKeyAlgorithms", "rsa-sha2-512"),
            ("HostKeyAlgorithms", "rsa-sha2-256"),
        ]
        outputs = []
        for option, name in choices:
            extra = ["-o", f"{option}={name}"]
            if option == "MACs":
                extra += ["-o", "Ciphers=aes256-ctr"]
            result = run(
                [
                    openssh("ssh"),
                    *server.openssh(*extra),
                    f"{USER}@127.0.0.1",
                    "echo",
                    name,
                ]
            )
            outputs.append(result.stdout.decode() + result.stderr.decode())
        self.assertEqual(outputs, [name + "\n" for _, name in choices])

    def test_legacyRefused(self) -> None:
        """SHA-1 host key signatures, CBC, plain MACs and SHA-1/NIST kex are refused."""
        server = startSSH(self, "--shell", "builtin")
        refused = [
            ("HostKeyAlgorithms", "ssh-rsa"),
            ("Ciphers", "aes128-cbc"),
            ("MACs", "hmac-sha1"),
            ("MACs", "hmac-sha2-256"),
            ("KexAlgorithms", "diffie-hellman-group14-sha1"),
            ("KexAlgorithms", "ecdh-sha2-nistp256"),
        ]
        codes = []
        for option, name in refused:
            extra = ["-o", f"{option}={name}"]
            if option == "MACs":
                extra += ["-o", "Ciphers=aes128-ctr"]
            codes.append(
                run(
                    [
                        openssh("ssh"),
                        *server.openssh(*extra),
                        f"{USER}@127.0.0.1",
                        "true",
                    ]
                ).returncode
            )
        self.assertEqual(codes, [255] * len(refused))

    def test_ttyShell(self) -> None:
        """ssh -tt gets a prompt, the typed line echoed and CR LF line ends."""
        server = startSSH(self, "--shell", "builtin")
        result = self.ssh(server, "-tt", stdin=b"echo 'one  two' $HOME\rexit 5\r")
        self.assertEqual(
            (result.stdout, result.returncode),
            (b"$ echo 'one  two' $HOME\r\none  two /\r\n$ exit 5\r\n", 5),
        )

    def test_shellOffByDefault(self) -> None:
        """Without --shell builtin, exec and shell requests are refused."""
        server = startSSH(self)
        result = self.ssh(server, "echo", "hi")
        self.assertEqual((result.stdout, result.returncode), (b"", 255))
        self.assertIn(b"failed", result.stderr)

    def test_forceCommand(self) -> None:
        """--force-command replaces the command, given as SSH_ORIGINAL_COMMAND."""
        server = startSSH(
            self, "--force-command", 'echo "forced: $SSH_ORIGINAL_COMMAND"; exit 7'
        )
        result = self.ssh(server, "rm", "-rf", "/")
        self.assertEqual((result.stdout, result.returncode), (b"forced: rm -rf /\n", 7))

    def test_noForwarding(self) -> None:
        """Local port forwarding is refused while the session goes on."""
        server = startSSH(self, "--shell", "builtin")
        result = run(
            [
                openssh("ssh"),
                *server.openssh(
                    "-o", "ExitOnForwardFailure=yes", "-L", f"0:127.0.0.1:{server.port}"
                ),
                f"{USER}@127.0.0.1",
                "echo",
                "session",
            ]
        )
        self.assertEqual(result.returncode, 255)
        result = run(
            [
                openssh("ssh"),
                *server.openssh("-W", f"127.0.0.1:{server.port}"),
                f"{USER}@127.0.0.1",
            ]
        )
        self.assertIn(b"stdio forwarding failed", result.stderr + result.stdout)

    def test_sftpBatch(self) -> None:
        """sftp -b uploads, renames and downloads in the home, which it sees as /."""
        server = startSSH(self)
        client = server.directory / "client"
        data = os.urandom(3 * 1024 * 1024 + 17)
        (client / "big.bin").write_bytes(data)
        batch = client / "batch"
        batch.write_text(
            "put big.bin\nmkdir d\nrename big.bin d/moved.bin\nls d\npwd\n"
            "get d/moved.bin back.bin\ndf\n"
        )
        result = run(
            [
                openssh("sftp"),
                *server.openssh("-b", str(batch), port="-P"),
                f"{USER}@127.0.0.1",
            ],
            cwd=client,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"Remote working directory: /\n", result.stdout)
        self.assertEqual((client / "back.bin").read_bytes(), data)
        self.assertEqual((server.home / "d" / "moved.bin").read_bytes(), data)

    def test_jailEscapes(self) -> None:
        """..; absolute paths, links, a rename and an upload out stay in the home."""
        server = startSSH(self)
        outside = server.directory / "secret.txt"
        outside.write_text("secret")
        (server.home / "mine.txt").write_text("mine")
        os.symlink(str(outside), server.home / "link")
        os.symlink("../../secret.txt", server.home / "relative")
        client = server.directory / "client"
        (client / "upload.txt").write_text("upload")
        before = sorted(p.name for p in server.directory.iterdir())
        attempts = [
            "get ../secret.txt a",
            "get ../../secret.txt a",
            f"get {outside} a",
            "get link a",
            "get relative a",
            "symlink ../../secret.txt made",
            # These succeed, inside the home: .. stops at its top.
            "rename mine.txt ../../moved.txt",
            "put upload.txt ../../uploaded.txt",
        ]
        codes = []
        for attempt in attempts:
            batch = client / "batch"
            batch.write_text(attempt + "\n")
            result = run(
                [
                    openssh("sftp"),
                    *server.openssh("-b", str(batch), port="-P"),
                    f"{USER}@127.0.0.1",
                ],
                cwd=client,
            )
            codes.append(result.returncode)
        self.assertEqual(
            (
                codes,
                sorted(p.name for p in server.directory.iterdir()),
                sorted(p.name for p in server.home.iterdir()),
                outside.read_text(),
                (client / "a").exists(),
            ),
            (
                [1, 1, 1, 1, 1, 1, 0, 0],
                before,
                ["link", "moved.txt", "relative", "uploaded.txt"],
                "secret",
                False,
            ),
        )

    def sftpBatch(
        self, server: SSHServer, commands: str
    ) -> subprocess.CompletedProcess[bytes]:
        client = server.directory / "client"
        batch = client / "batch"
        batch.write_text(commands)
        return run(
            [
                openssh("sftp"),
                *server.openssh("-b", str(batch), port="-P"),
                f"{USER}@127.0.0.1",
            ],
            cwd=client,
        )

    def test_hardlinksOffByDefault(self) -> None:
        """Without --allow-hardlinks, sftp's ln finds no hardlink extension."""
        server = startSSH(self)
        (server.home / "mine.txt").write_text("mine")
        result = self.sftpBatch(server, "ln mine.txt other.txt\n")
        self.assertEqual(
            (result.returncode, sorted(p.name for p in server.home.iterdir())),
            (1, ["mine.txt"]),
        )
        self.assertIn(b"does not support hardlink", result.stderr)

    def test_lnChmodDf(self) -> None:
        """sftp -b: ln makes a hard link, chmod sets permission bits, df answers."""
        server = startSSH(self, "--allow-hardlinks")
        (server.home / "mine.txt").write_text("mine")
        (server.home / "d").mkdir()
        result = self.sftpBatch(
            server,
            "ln mine.txt d/again.txt\nchmod 4640 mine.txt\nchmod 2700 d\n"
            "chmod -h 600 d/again.txt\ndf\ndf -i d\n",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        mine = (server.home / "mine.txt").stat()
        self.assertEqual(
            (
                mine.st_nlink,
                os.path.samestat(mine, (server.home / "d" / "again.txt").stat()),
                oct(mine.st_mode & 0o7777),
                oct((server.home / "d").stat().st_mode & 0o7777),
            ),
            (2, True, oct(0o600), oct(0o700)),
        )
        lines = result.stdout.decode().splitlines()
        self.assertEqual(
            [
                line.split()[0]
                for line in lines
                if line.split()[:1] in (["Size"], ["Inodes"])
            ],
            ["Size", "Inodes"],
            result.stdout,
        )

    def test_lnChmodEscapes(self) -> None:
        """ln and chmod through .., absolute paths and links never reach outside."""
        server = startSSH(self, "--allow-hardlinks")
        outside = server.directory / "secret.txt"
        outside.write_text("secret")
        outside.chmod(0o600)
        (server.home / "mine.txt").write_text("mine")
        os.symlink(str(outside), server.home / "link")
        os.symlink("../../secret.txt", server.home / "relative")
        os.symlink(str(server.directory), server.home / "out")
        before = sorted(p.name for p in server.directory.iterdir())
        # "-": sftp goes on after a failed command.
        result = self.sftpBatch(
            server,
            "-ln ../secret.txt a\n"
            f"-ln {outside} b\n"
            "-ln link c\n"
            "-ln relative d\n"
            "-ln mine.txt out/planted.txt\n"
            "-chmod 777 ../secret.txt\n"
            f"-chmod 777 {outside}\n"
            "-chmod 777 link\n"
            "-chmod 777 relative\n"
            "-chmod 777 /\n"
            "-chmod 777 ..\n"
            # Inside the home: .. stops at its top.
            "ln mine.txt ../../inside.txt\n",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            (
                sorted(p.name for p in server.directory.iterdir()),
                sorted(p.name for p in server.home.iterdir()),
                outside.stat().st_nlink,
                oct(outside.stat().st_mode & 0o7777),
                oct(server.home.stat().st_mode & 0o7777),
            ),
            (
                before,
                ["inside.txt", "link", "mine.txt", "out", "relative"],
                1,
                oct(0o600),
                oct(0o755),
            ),
        )

    def test_sharedDefaultHomes(self) -> None:
        """Without --root, np-ftp and np-ssh on one state dir share the homes."""
        server = startSSH(self, root=False)
        state = server.directory / "state"
        ftpPort = freePort()
        ftp = runTwistd(
            self,
            "np-ftp",
            "--listen",
            f"tcp:{ftpPort}:interface=127.0.0.1",
            "--auth",
            f"htpasswd:{server.directory / 'users'}",
            "--state-dir",
            str(state),
            # ftplib cannot resume the control connection's TLS session.
            "--tls-session-reuse",
            "optional",
        )
        waitForPort(ftpPort, ftp)
        client = server.directory / "client"
        (client / "by-sftp.txt").write_text("sftp upload")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with ftplib.FTP_TLS(context=context, timeout=TIMEOUT) as session:
            session.connect("127.0.0.1", ftpPort)
            session.login(USER, PASSWORD)
            session.prot_p()
            session.storbinary("STOR by-ftp.txt", io.BytesIO(b"ftp upload"))
            result = self.sftpBatch(server, "get by-ftp.txt\nput by-sftp.txt\n")
            received = io.BytesIO()
            session.retrbinary("RETR by-sftp.txt", received.write)
        self.assertEqual(
            (
                result.returncode,
                (client / "by-ftp.txt").read_text(),
                received.getvalue(),
                sorted(p.name for p in (state / "homes" / USER).iterdir()),
            ),
            (0, "ftp upload", b"sftp upload", ["by-ftp.txt", "by-sftp.txt"]),
            result.stderr,
        )

    def test_realpathNeverShowsHost(self) -> None:
        """realpath of .. answers a path inside the home, never the host's."""
        server = startSSH(self)
        (server.home / "d").mkdir()
        batch = server.directory / "client" / "batch"
        batch.write_text("cd ..\npwd\ncd d\ncd ../../..\npwd\n")
        result = run(
            [
                openssh("sftp"),
                *server.openssh("-b", str(batch), port="-P"),
                f"{USER}@127.0.0.1",
            ]
        )
        self.assertEqual(
            result.stdout.count(b"Remote working directory: /\n"), 2, result.stdout
        )
        self.assertNotIn(str(server.home).encode(), result.stdout + result.stderr)

    def test_scp(self) -> None:
        """scp copies a file up (with -p) and back (SFTP underneath)."""
        server = startSSH(self)
        client = server.directory / "client"
        data = os.urandom(1024 * 1024 + 3)
        (client / "up.bin").write_bytes(data)
        os.utime(client / "up.bin", (1_000_000_000, 1_000_000_000))
        up = run(
            [
                openssh("scp"),
                *server.openssh(port="-P"),
                "-p",
                "up.bin",
                f"{USER}@127.0.0.1:copy.bin",
            ],
            cwd=client,
        )
        down = run(
            [
                openssh("scp"),
                *server.openssh(port="-P"),
                f"{USER}@127.0.0.1:copy.bin",
                "down.bin",
            ],
            cwd=client,
        )
        self.assertEqual(
            (
                up.returncode,
                down.returncode,
                (client / "down.bin").read_bytes() == data,
                (server.home / "copy.bin").stat().st_mtime,
            ),
            (0, 0, True, 1_000_000_000),
            up.stderr + down.stderr,
        )

    def test_passwordLogin(self) -> None:
        """OpenSSH logs in with a password over keyboard-interactive (SSH_ASKPASS)."""
        server = startSSH(self, "--shell", "builtin")
        askpass = server.directory / "askpass"
        askpass.write_text(f"#!/bin/sh\necho '{PASSWORD}'\n")
        askpass.chmod(0o700)
        argv = [openssh("ssh"), *server.openssh(), f"{USER}@127.0.0.1", "whoami"]
        argv[argv.index("BatchMode=yes")] = "BatchMode=no"
        argv[argv.index("IdentitiesOnly=yes")] = "PubkeyAuthentication=no"
        result = run(
            argv,
            env={
                **os.environ,
                "SSH_ASKPASS": str(askpass),
                "SSH_ASKPASS_REQUIRE": "force",
                "DISPLAY": ":0",
            },
            stdin=subprocess.DEVNULL,
        )
        self.assertEqual(
            (result.stdout, result.returncode), (b"alice\n", 0), result.stderr
        )


class LDAPPublicKeyTests(TestCase):
    """
    Public keys from a real slapd's sshPublicKey values (the openssh-lpk
    schema, loaded by tests/slapd.py), through an ldap: checker.
    """

    def test_loginByLDAPKey(self) -> None:
        """OpenSSH's ssh logs in by the key in alice's entry, not by another."""
        slapd = startedSlapd()
        self.addCleanup(slapd.stop)
        server = startSSH(
            self,
            "--shell",
            "builtin",
            "--auth",
            f"ldap:{slapd.url()}/{PEOPLE}?uid,sshPublicKey?sub",
            authorizedKeys=False,
        )
        other = server.directory / "other"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
            check=True,
        )

        def whoami(key: Path) -> subprocess.CompletedProcess[bytes]:
            options = server.openssh()
            options[options.index("-i") + 1] = str(key)
            return run([openssh("ssh"), *options, f"{USER}@127.0.0.1", "whoami"])

        before = whoami(Path(server.key))
        slapd.addPublicKey(userDN(USER), Path(server.key + ".pub").read_text().strip())
        after = whoami(Path(server.key))
        wrong = whoami(other)
        self.assertEqual(
            [
                (r.returncode, r.stdout, b"Permission denied" in r.stderr)
                for r in (before, after, wrong)
            ],
            [(255, b"", True), (0, b"alice\n", False), (255, b"", True)],
            server.log()[-3000:],
        )


class HostKeyReloadTests(TestCase):
    """
    Host keys on SIGHUP, seen by ssh-keyscan.
    """

    def test_sighup(self) -> None:
        """After SIGHUP new connections see the replaced host key."""
        keys = Path(self.mktemp()).resolve()
        keys.mkdir()
        key = keys / "host_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
        server = startSSH(self, hostKeys=[str(key)])

        def scanned() -> bytes:
            result = run(
                [
                    openssh("ssh-keyscan"),
                    "-t",
                    "ed25519",
                    "-p",
                    str(server.port),
                    "127.0.0.1",
                ]
            )
            return result.stdout.split()[-1]

        before = scanned()
        key.unlink()
        key.with_suffix(".pub").unlink()
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        after = scanned()
        while after == before and time.monotonic() < deadline:
            time.sleep(0.1)
            after = scanned()
        self.assertEqual(
            (before == after, after),
            (False, key.with_suffix(".pub").read_bytes().split()[1]),
        )


class AuditTests(TestCase):
    """
    ssh-audit's view of np-ssh's algorithms.
    """

    def test_audit(self) -> None:
        """ssh-audit: no failure, no warning but non-PQ kex ones, strict kex."""
        server = startSSH(self)
        result = run(
            [
                sys.executable,
                "-m",
                "ssh_audit",
                "--skip-rate-test",
                "-j",
                "-p",
                str(server.port),
                "127.0.0.1",
            ]
        )
        report = json.loads(result.stdout)
        failures = []
        warnings = []
        for section in ("kex", "key", "enc", "mac"):
            for entry in report[section]:
                notes = entry.get("notes", {})
                failures += [(entry["algorithm"], n) for n in notes.get("fail", [])]
                warnings += [
                    (entry["algorithm"], n)
                    for n in notes.get("warn", [])
                    if "post-quantum" not in n
                ]
        kex = [entry["algorithm"] for entry in report["kex"]]
        self.assertEqual(
            (failures, warnings, "kex-strict-s-v00@openssh.com" in kex, kex[0]),
            ([], [], True, "mlkem768x25519-sha256"),
        )
        self.assertEqual(
            sorted(entry["algorithm"] for entry in report["enc"]),
            [
                "aes128-ctr",
                "aes128-gcm@openssh.com",
                "aes192-ctr",
                "aes256-ctr",
                "aes256-gcm@openssh.com",
                "chacha20-poly1305@openssh.com",
            ],
        )


class PythonClientTests(TestCase):
    """
    paramiko (the book's programs) and asyncssh against twistd np-ssh.
    """

    def bookServer(self, telnet: bool = False) -> tuple[SSHServer, dict[str, str]]:
        """
        np-ssh on port 22 (and telnet on 23) of a loopback address of its
        own, and an environment whose HOME holds alice's key as
        ~/.ssh/id_ed25519.
        """
        for _ in range(5):
            octets = [random.randint(1, 254) for _ in range(3)]
            host = "127.{}.{}.{}".format(*octets)
            extra = ["--telnet", f"tcp:23:interface={host}"] if telnet else []
            try:
                server = startSSH(
                    self, "--shell", "builtin", *extra, host=host, port=22
                )
            except AssertionError:
                continue
            break
        else:
            raise AssertionError(
                "np-ssh could not listen on port 22 of a loopback address"
            )
        home = server.directory / "home"
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "id_ed25519").write_bytes(Path(server.key).read_bytes())
        (home / ".ssh" / "id_ed25519").chmod(0o600)
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        env["HOME"] = str(home)
        return server, env

    def book(
        self, program: str, env: dict[str, str], *args: str, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return run([sys.executable, "-c", program, *args], env=env, cwd=cwd)

    def test_bookPrograms(self) -> None:
        """ssh_simple, ssh_commands, ssh_threads and sftp_get run as printed."""
        server, env = self.bookServer()
        simple = self.book(SSH_SIMPLE, env, server.host, USER)
        commands = self.book(SSH_COMMANDS, env, server.host, USER)
        started = time.monotonic()
        threads = self.book(SSH_THREADS, env, server.host, USER)
        elapsed = time.monotonic() - started
        data = os.urandom(300_000)
        (server.home / "remote.bin").write_bytes(data)
        (server.home / "note.txt").write_text("note\n")
        client = server.directory / "client"
        sftp = self.book(
            SFTP_GET, env, server.host, USER, "remote.bin", "note.txt", cwd=client
        )
        self.assertEqual(
            simple.stdout,
            b"$ echo Hello, world\r\nHello, world\r\n$ exit\r\n",
            simple.stderr,
        )
        lines = commands.stdout.decode().splitlines()
        self.assertEqual(
            lines[:2],
            ["b'Hello, world!\\n'", f"b'{os.uname().sysname}\\n'"],
            commands.stderr,
        )
        self.assertRegex(lines[2], r"^b' \d\d:\d\d:\d\d up .*load average: .*\\n'$")
        # Both commands' output arrives as produced, interleaved by their
        # sleeps (lines due at the same second may come in either order, and
        # the book's two threads print without a lock: "C" and "Three" can
        # share a line).
        words = re.findall(r"One|Two|Three|[ABC]", threads.stdout.decode())
        self.assertEqual(
            (
                sorted(words),
                [w for w in words if w in ("One", "Two", "Three")],
                [w for w in words if w in ("A", "B", "C")],
                words.index("B") < words.index("Two"),
            ),
            (
                sorted(["One", "Two", "Three", "A", "B", "C"]),
                ["One", "Two", "Three"],
                ["A", "B", "C"],
                True,
            ),
            threads.stderr,
        )
        self.assertLess(elapsed, 10)
        self.assertEqual(
            (
                (client / "remote.bin.copy").read_bytes() == data,
                (client / "note.txt.copy").read_text(),
            ),
            (True, "note\n"),
            sftp.stderr,
        )
        self.assertIn(
            b"Transfer of 'remote.bin' is at 300000/300000 bytes (100.0%)", sftp.stdout
        )

    def test_bookTelnet(self) -> None:
        """telnet_login.py and telnet_codes.py run as printed against --telnet."""
        server, env = self.bookServer(telnet=True)

        def book(program: str, password: str) -> subprocess.CompletedProcess[bytes]:
            # getpass reads standard input when there is no terminal.
            return run(
                [sys.executable, "-W", "ignore", "-c", program, server.host, USER],
                input=password.encode() + b"\n",
                env=env,
                start_new_session=True,
            )

        login = book(TELNET_LOGIN, PASSWORD)
        codes = book(TELNET_CODES, PASSWORD)
        wrong = book(TELNET_LOGIN, "wrong")
        self.assertRegex(
            login.stdout.decode(), r"^ *\d\d:\d\d:\d\d up .*load average: .*\n\n$"
        )
        self.assertEqual(
            (codes.stdout.decode().splitlines(), wrong.stdout),
            (
                [
                    'Sending terminal type "mypython"',
                    "Do not 1",
                    " My terminal type is mypython",
                    "",
                ],
                b"Username and password failed - giving up\n",
            ),
            codes.stderr,
        )

    def test_asyncssh(self) -> None:
        """asyncssh (ML-KEM kex) logs in by password, runs a command, uses SFTP."""
        server = startSSH(self, "--shell", "builtin")
        (server.home / "file.txt").write_text("x")
        result = run(
            [sys.executable, "-c", ASYNCSSH_CLIENT, str(server.port), PASSWORD]
        )
        self.assertEqual(
            result.stdout.decode(),
            "alice says hi\nalice\n['file.txt']\n/\n",
            result.stderr,
        )

    def test_paramikoLinkChmodStatvfs(self) -> None:
        """paramiko: hardlink, chmod and statvfs work inside, fail for escapes."""
        server = startSSH(self, "--allow-hardlinks")
        outside = server.directory / "secret.txt"
        outside.write_text("secret")
        outside.chmod(0o600)
        (server.home / "mine.txt").write_text("mine")
        os.symlink(str(outside), server.home / "link")
        os.symlink("../..", server.home / "up")
        result = run([sys.executable, "-c", PARAMIKO_LINKS, str(server.port), PASSWORD])
        self.assertEqual(
            result.stdout.decode().splitlines(),
            [
                "link mine.txt copy.txt ok",
                "link ../secret.txt a IOError",
                "link link b IOError",
                "link mine.txt up/up/planted.txt ok",
                "link up IOError",
                "chmod copy.txt ok 0o100640",
                "chmod link IOError",
                "chmod ../secret.txt IOError",
                "chmod / IOError",
                "statvfs True",
            ],
            result.stderr,
        )
        self.assertEqual(
            (
                sorted(p.name for p in server.home.iterdir()),
                (server.home / "mine.txt").stat().st_nlink,
                outside.stat().st_nlink,
                oct(outside.stat().st_mode & 0o7777),
            ),
            (["copy.txt", "link", "mine.txt", "planted.txt", "up"], 3, 1, oct(0o600)),
        )

    def test_paramikoAlgorithms(self) -> None:
        """paramiko negotiates strict kex and an encrypt-then-MAC or AEAD mode."""
        server = startSSH(self, "--shell", "builtin")
        program = (
            "import paramiko, sys\n"
            "c = paramiko.SSHClient()\n"
            "c.set_missing_host_key_policy(paramiko.AutoAddPolicy())\n"
            "c.connect('127.0.0.1', int(sys.argv[1]), username='alice',"
            " password=sys.argv[2],"
            " look_for_keys=False, allow_agent=False)\n"
            "t = c.get_transport()\n"
            "print(t.agreed_on_strict_kex, t.remote_cipher, t.host_key_type)\n"
            "print(c.exec_command('whoami')[1].read())\n"
        )
        result = run([sys.executable, "-c", program, str(server.port), PASSWORD])
        self.assertEqual(
            result.stdout.decode().splitlines(),
            ["True aes128-ctr ssh-ed25519", "b'alice\\n'"],
            result.stderr,
        )
