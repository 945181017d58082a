"""
np-ssh's parts in memory: the packet codecs, the built-in shell, host
keys, authorized keys files and the command line.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netplugins.ssh.auth import authorizedBlobs, userName
from netplugins.ssh.hostkeys import HostKeys, generatedPaths, loadHostKeys
from netplugins.ssh.packets import CIPHERS, MACS, makeCodec, padded, validLength
from netplugins.ssh.shell import (
    ExitShell,
    InteractiveShell,
    Shell,
    ShellSyntaxError,
    parse,
)
from netplugins.tap.ssh import Options, SSHSettings


class PacketTests(SynchronousTestCase):
    """
    Each cipher and MAC seals packets its peer opens, and refuses altered ones.
    """

    def pairs(self) -> list[tuple[bytes, bytes, Any, Any]]:
        keys = (os.urandom(64), os.urandom(64), os.urandom(64))
        result = []
        for cipher in CIPHERS:
            for mac in MACS:
                sender = makeCodec(cipher, mac, *keys)
                receiver = makeCodec(cipher, mac, *keys)
                result.append((cipher, mac, sender, receiver))
        return result

    def test_roundTrip(self) -> None:
        """Three packets in a row come out as they went in, lengths aligned."""
        for cipher, mac, sender, receiver in self.pairs():
            for sequence, payload in enumerate([b"\x05hello", b"", os.urandom(1000)]):
                body = padded(b"\x02" + payload, sender)
                wire = sender.seal(sequence, body)
                length = receiver.length(sequence, wire[:4])
                self.assertEqual(
                    (
                        validLength(length, receiver),
                        len(wire),
                        receiver.open(sequence, wire),
                    ),
                    (True, 4 + length + receiver.macSize, body),
                    (cipher, mac),
                )

    def test_tampered(self) -> None:
        """A flipped bit after the length, or a replayed packet, fails."""
        for cipher in CIPHERS:
            mac = b"hmac-sha2-256-etm@openssh.com"
            keys = (os.urandom(64), os.urandom(64), os.urandom(64))
            wire = makeCodec(cipher, mac, *keys).seal(
                7, padded(b"\x02data", makeCodec(cipher, mac, *keys))
            )
            results: list[object] = []
            for position in (5, len(wire) - 1):
                altered = bytearray(wire)
                altered[position] ^= 1
                results.append(makeCodec(cipher, mac, *keys).open(7, bytes(altered)))
            # Replayed as the next packet: the sequence number (or GCM's
            # invocation counter) has moved on.
            receiver = makeCodec(cipher, mac, *keys)
            results.append(receiver.open(7, wire) is not None)
            results.append(receiver.open(8, wire))
            self.assertEqual(results, [None, None, True, None], cipher)

    def test_tooLong(self) -> None:
        """Lengths over 256 KiB or out of alignment are refused."""
        codec = makeCodec(
            b"aes128-ctr", b"hmac-sha2-256-etm@openssh.com", *[b"k" * 64] * 3
        )
        self.assertEqual(
            [validLength(n, codec) for n in (16, 17, 256 * 1024, 256 * 1024 + 16)],
            [True, False, True, False],
        )


class Output:
    def __init__(self) -> None:
        self.out = b""
        self.err = b""

    def write(self, data: bytes) -> None:
        self.out += data

    def writeError(self, data: bytes) -> None:
        self.err += data


class ShellTests(SynchronousTestCase):
    """
    The built-in shell's language and commands.
    """

    def shell(self) -> tuple[Shell, Output, Clock]:
        output = Output()
        clock = Clock()
        return Shell("alice", output, clock), output, clock

    def test_parse(self) -> None:
        """; splits commands; quotes group words; $VAR expands outside single quotes."""
        variables = {"USER": "alice", "?": "3"}
        self.assertEqual(
            parse(
                """echo "Hello, $USER!" 'it''s $USER';uname ;  x\\ y ${USER}$?""",
                variables,
            ),
            [["echo", "Hello, alice!", "its $USER"], ["uname"], ["x y", "alice3"]],
        )
        self.assertRaises(ShellSyntaxError, parse, "echo 'open", variables)

    def test_commands(self) -> None:
        """Commands run in order; unknown ones fail with 127 on standard error."""
        shell, output, _ = self.shell()
        results: list[int] = []
        shell.run("echo -n one; whoami; pwd; nosuch arg; echo $?").addCallback(
            results.append
        )
        self.assertEqual(
            (results, output.out, output.err),
            ([0], b"onealice\n/\n127\n", b"sh: nosuch: command not found\n"),
        )

    def test_sleepStreams(self) -> None:
        """Output before a sleep is written at once, the rest after it."""
        shell, output, clock = self.shell()
        results: list[int] = []
        shell.run("echo One; sleep 2; echo Two").addCallback(results.append)
        self.assertEqual(output.out, b"One\n")
        clock.advance(2)
        self.assertEqual((output.out, results), (b"One\nTwo\n", [0]))

    def test_exitAndExec(self) -> None:
        """exit N and exec CMD end the shell with that status."""
        for line, status in (("exit 4; echo no", 4), ("exec nosuch", 127)):
            shell, output, _ = self.shell()
            failures: list[Any] = []
            shell.run(line).addErrback(failures.append)
            self.assertEqual(failures[0].trap(ExitShell), ExitShell)
            self.assertEqual(failures[0].value.status, status)
            self.assertNotIn(b"no", output.out)

    def test_terminal(self) -> None:
        """On a pty: prompt, echo, CR ends a line, DEL erases, output LF is CR LF."""
        shell, output, _ = self.shell()
        ended: list[int] = []
        interactive = InteractiveShell(shell, True, ended.append)
        interactive.dataReceived(b"echo hix\x7f\r")
        interactive.start()
        interactive.dataReceived(b"exit 2\r")
        self.assertEqual((output.out, ended), (b"$ echo hi\r\nhi\r\n$ exit 2\r\n", [2]))

    def test_noTerminal(self) -> None:
        """Without a pty: no prompt, no echo; end of input ends the shell."""
        shell, output, _ = self.shell()
        ended: list[int] = []
        interactive = InteractiveShell(shell, False, ended.append)
        interactive.start()
        interactive.dataReceived(b"echo hi\n")
        interactive.eofReceived()
        self.assertEqual((output.out, ended), (b"hi\n", [0]))


def keygen(path: Path, *args: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-f", str(path), *args], check=True)
    return path


class HostKeyTests(SynchronousTestCase):
    """
    Host keys: generated once, strong ones only, reloaded.
    """

    def test_generated(self) -> None:
        """Without --host-key, ed25519 and RSA-3072 keys are made once, mode 0600."""
        state = self.mktemp()
        first = generatedPaths(state)
        contents = [Path(p).read_bytes() for p in first]
        second = generatedPaths(state)
        keys = loadHostKeys(second)
        self.assertEqual(
            (
                [Path(p).read_bytes() for p in second] == contents,
                sorted(keys.private),
                keys.private[b"ssh-rsa"].size(),
                {stat.S_IMODE(os.stat(p).st_mode) for p in first},
            ),
            (True, [b"ssh-ed25519", b"ssh-rsa"], 3072, {0o600}),
        )

    def test_weakRefused(self) -> None:
        """Weak, ECDSA, public and non-key files are refused in one line, unquoted."""
        directory = Path(self.mktemp())
        directory.mkdir()
        weak = keygen(directory / "rsa", "-t", "rsa", "-b", "2048")
        ecdsa = keygen(directory / "ecdsa", "-t", "ecdsa")
        secret = directory / "secret"
        secret.write_text("password: hunter2\n")
        for path in (weak, ecdsa, weak.with_suffix(".pub"), secret):
            error = self.assertRaises(ValueError, loadHostKeys, [str(path)])
            self.assertNotIn("\n", str(error))
            self.assertNotIn("hunter2", str(error))

    def test_reload(self) -> None:
        """reload reads the new key; a bad file keeps the old one."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = keygen(directory / "key", "-t", "ed25519")
        keys = HostKeys([str(path)], str(directory))
        old = keys.current.private[b"ssh-ed25519"]
        path.write_text("garbage")
        keys.reload()
        kept = keys.current.private[b"ssh-ed25519"]
        path.unlink()
        path.with_suffix(".pub").unlink()
        keygen(path, "-t", "ed25519")
        keys.reload()
        self.assertEqual(
            (kept == old, keys.current.private[b"ssh-ed25519"] == old), (True, False)
        )


class AuthorizedKeysTests(SynchronousTestCase):
    """
    authorized_keys files and the user names that may name them.
    """

    def test_lines(self) -> None:
        """Options before the type are skipped; comments and bad lines ignored."""
        directory = Path(self.mktemp())
        directory.mkdir()
        key = keygen(directory / "k", "-t", "ed25519").with_suffix(".pub").read_bytes()
        blob64 = key.split()[1]
        text = b"\n".join(
            [
                b"# comment",
                b'from="10.0.0.1",no-pty ' + key,
                b"ssh-ed25519 !!notbase64",
                b"ssh-rsa " + blob64,
                b"",
            ]
        )
        import base64

        self.assertEqual(authorizedBlobs(text), {base64.b64decode(blob64)})

    def test_userNames(self) -> None:
        """Names with /, a leading dot, NUL or bad UTF-8 name no file."""
        self.assertEqual(
            [userName(n) for n in (b"alice", b"../x", b".ssh", b"a\0b", b"\xff", b"")],
            ["alice", None, None, None, None, None],
        )


class OptionsTests(SynchronousTestCase):
    """
    twistd np-ssh's command line.
    """

    def test_parsed(self) -> None:
        """The service's options become its settings."""
        options = Options()
        options.parseOptions(
            [
                "--root",
                "/srv/sftp/{user}",
                "--shell",
                "builtin",
                "--force-command",
                "date",
                "--preauth-timeout",
                "30",
                "--telnet",
                "tcp:2323:interface=127.0.0.1",
                "--allow-hardlinks",
            ]
        )
        self.assertEqual(
            options.settings,
            SSHSettings(
                root="/srv/sftp/{user}",
                shell="builtin",
                forceCommand="date",
                preAuthTimeout=30.0,
                telnet="tcp:2323:interface=127.0.0.1",
                allowHardlinks=True,
            ),
        )

    def test_refused(self) -> None:
        """Bad values are one-line usage errors."""
        for argv in (
            ["--shell", "bash"],
            ["--root", "relative/{user}"],
            ["--host-key", "/nonexistent"],
            ["--shell", "builtin", "--telnet", "tcp:2323"],
            ["--shell", "builtin", "--telnet", "tcp:2323:interface=0.0.0.0"],
            ["--telnet", "tcp:2323:interface=127.0.0.1"],
            ["--authorized-keys-dir", "/nonexistent"],
        ):
            error = self.assertRaises(usage.UsageError, Options().parseOptions, argv)
            self.assertNotIn("\n", str(error), argv)


class PublicKeyCheckerTests(SynchronousTestCase):
    """
    Public keys from the keys directory and from ldap: checkers' entries.
    """

    def setUp(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ed25519
        from twisted.conch.ssh.keys import Key

        self.key = Key(ed25519.Ed25519PrivateKey.generate())
        self.other = Key(ed25519.Ed25519PrivateKey.generate())

    def credentials(self, key: Any, signed: bool) -> Any:
        from twisted.cred.credentials import SSHPrivateKey

        data = b"session and request"
        return SSHPrivateKey(
            b"alice",
            b"ssh-ed25519",
            key.public().blob(),
            data if signed else None,
            key.sign(data) if signed else None,
        )

    def outcome(self, checker: Any, credentials: Any) -> object:
        from twisted.conch.error import ValidPublicKey
        from twisted.cred.error import UnauthorizedLogin

        results: list[object] = []
        d = checker.requestAvatarId(credentials)
        d.addCallbacks(
            results.append,
            lambda f: results.append(f.trap(ValidPublicKey, UnauthorizedLogin)),
        )
        return results[0]

    def test_ldapKeys(self) -> None:
        """An ldap: checker's sshPublicKey values authorize keys; others are refused."""
        from twisted.conch.error import ValidPublicKey
        from twisted.cred.error import UnauthorizedLogin
        from twisted.internet.defer import succeed

        from netplugins.cred.ldap.directory import LDAPUser
        from netplugins.ssh.auth import PublicKeyChecker, directoryCheckers, keysInLDAP

        line = self.key.public().toString("openssh").decode()
        asked: list[str] = []

        class Directory:
            def lookupAttributes(self, name: str) -> Any:
                asked.append(name)
                return succeed(
                    LDAPUser(
                        name, f"uid={name}", {"sshpublickey": (line + " alice@x",)}
                    )
                )

        class Wrapper:
            checker = Directory()

        [found] = directoryCheckers([object(), Wrapper()])
        checker = PublicKeyChecker([keysInLDAP(found)])
        self.assertEqual(
            (
                self.outcome(checker, self.credentials(self.key, False)),
                self.outcome(checker, self.credentials(self.key, True)),
                self.outcome(checker, self.credentials(self.other, True)),
                asked,
            ),
            (ValidPublicKey, "alice", UnauthorizedLogin, ["alice"] * 3),
        )
