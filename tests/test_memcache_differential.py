"""
The differential test: the same command scripts sent to memcached (Debian's,
started privately on a loopback port) and to C{twistd np-memcache} get
byte-identical replies, apart from the version string and the values of
C{stats}.

Each script runs on a new connection, in the same order against both servers
from their start, so CAS values agree too.  Left out, because np-memcache
differs on purpose: keys with control characters (memcached takes them;
np-memcache refuses them) and several bad commands pipelined in one write
(memcached then drops some of the earlier replies it had queued).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.mailfixtures import PASSWORDS, writeHtpasswd
from tests.support import LoggedProcess, freePort, runTwistd, startProcess, waitForPort

#: Ends every script: its reply marks the end of the answers.
SENTINEL = b"mn\r\n"

K251 = b"k" * 251
MiB = 1024 * 1024

SCRIPTS: list[bytes] = [
    # storage, CAS, append/prepend
    b"flush_all\r\nset a 0 0 1\r\nx\r\ngets a\r\nappend a 0 0 2\r\nyz\r\ngets a\r\n"
    b"prepend a 0 0 1\r\nw\r\ngets a\r\ncas a 1 0 1 4\r\nq\r\ncas a 1 0 1 999\r\n"
    b"q\r\ngets a\r\n",
    b"flush_all\r\nadd a 0 0 1\r\nx\r\nadd a 0 0 1\r\ny\r\nreplace a 0 0 1\r\nz\r\n"
    b"replace b 0 0 1\r\nz\r\nget a b\r\ndelete a\r\ndelete a\r\ndelete b 0\r\n"
    b"delete b 1\r\ndelete b 0 noreply\r\ndelete\r\n",
    b"append nokey 0 0 1\r\ny\r\nprepend nokey 0 0 1\r\nz\r\ncas nokey 0 0 1 1\r\n"
    b"z\r\nset f 4294967295 0 1\r\nx\r\nset g 4294967296 0 1\r\nx\r\nget f g\r\n",
    # arithmetic: 64-bit wrap, floor at 0, padding, errors
    b"flush_all\r\nset n 5 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\n"
    b"incr n 18446744073709551615\r\ngets n\r\ndecr n 1\r\ngets n\r\n"
    b"incr n abc\r\nincr n -1\r\nincr n 1 noreply\r\nget n\r\n",
    b"flush_all\r\nset n 0 0 20\r\n18446744073709551614\r\nincr n 3\r\nget n\r\n"
    b"touch n 100\r\ngat 0 n\r\ngats 0 n nope\r\nset s 0 0 2\r\nab\r\nincr s 1\r\n"
    b"set e 0 0 0\r\n\r\nincr e 1\r\nincr missing 1\r\n",
    # noreply everywhere
    b"set a 0 0 1 noreply\r\nx\r\nadd a 0 0 1 noreply\r\ny\r\nget a\r\n"
    b"incr a 1 noreply\r\nincr zz 1 noreply\r\ntouch a 10 noreply\r\n"
    b"delete a noreply\r\nget a\r\nverbosity 1 noreply\r\nflush_all noreply\r\n",
    # expiry: negative, relative up to 30 days, absolute beyond, in the past
    b"set e 0 -1 1\r\nx\r\nget e\r\nset e 0 2592000 1\r\nx\r\nget e\r\n"
    b"set e 0 2592001 1\r\nx\r\nget e\r\nset e 0 4000000000 1\r\nx\r\nget e\r\n",
    # whole-server commands and errors
    b"version\r\nverbosity\r\nverbosity 1\r\nverbosity a\r\nverbosity 1 2 3\r\n",
    b"flush_all abc\r\nflush_all 0\r\nstats bogus\r\nstats detail\r\n"
    b"stats detail on\r\nstats detail off\r\nstats sizes\r\nstats reset\r\n",
    b"bogus\r\n\r\nGET a\r\nmx\r\nmz a\r\nslabs\r\nshutdown\r\nget\r\ngat 10\r\n",
    b"set a 0 0 1 2 3\r\nx\r\ncas a 0 0 1\r\nx\r\ncas a 0 0 1 abc noreply\r\nx\r\n",
    # bad input: keys, lengths, data chunks, sizes
    b"set " + K251 + b" 0 0 1\r\nx\r\n",
    b"get " + K251 + b"\r\n",
    b"get " + b"k" * 250 + b"\r\nincr " + K251 + b" 1\r\n",
    b"set a 0 0 -1\r\nx\r\n",
    b"set a 0 0 abc\r\nx\r\nset a -1 0 1\r\nx\r\nset a 0 abc 1\r\nx\r\n",
    b"set a 0 0 4294967297\r\nx\r\nget a\r\n",
    b"set a 0 0 3\r\nabcdef\r\nget a\r\n",
    b"set big 0 0 1048577\r\n" + b"x" * (MiB + 1) + b"\r\nget big\r\n",
    b"set big 0 0 1048516\r\n" + b"x" * 1048516 + b"\r\n"
    b"set big2 0 0 1048517\r\n" + b"x" * 1048517 + b"\r\n"
    b"set big3 1 0 1048513\r\n" + b"x" * 1048513 + b"\r\n"
    b"set big4 1 0 1048512\r\n" + b"x" * 1048512 + b"\r\nget big4\r\n",
    # meta: mg/ms flags, quiet mode, opaque, base64 keys
    b"flush_all\r\nms a 2 T0 F5 c k O9\r\nhi\r\nmg a v f h l\r\nmg a h\r\n"
    b"mg a s v t f c k O123 q\r\nmg zz v q\r\nmg zz v k O1\r\n",
    b"flush_all\r\nma cnt\r\nma cnt N0 J10 v\r\nma cnt v MD D3\r\nma cnt q\r\n"
    b"ma cnt v c\r\nma cnt MI D18446744073709551615 v\r\nma cnt M+ v\r\n",
    b"flush_all\r\nset a 0 0 1\r\nx\r\nmd a q\r\nmd a q\r\nmd a O5 k\r\nmd a C1\r\n",
    b"mg a b\r\nmg YQ== b v k\r\nmg !!! b\r\nmg a zz\r\nmg a v v\r\nmg a T\r\n"
    b"mg a O" + b"x" * 40 + b"\r\nmg\r\n",
    b"mg a " + b" ".join(b"%d" % i for i in range(20)) + b"\r\n",
    b"flush_all\r\nms YmluYXJ5 3 b k c\r\nabc\r\nmg YmluYXJ5 b k v\r\n"
    b"me YmluYXJ5 b\r\nmg binary v\r\n",
    b"ms a 2 MX\r\nhi\r\nms a 2 Mxx\r\nhi\r\nms a\r\nms a abc\r\nms a -1\r\n"
    b"ms a 2 MR\r\nhi\r\nms a 2 ME\r\nhi\r\nms a 2 ME q\r\nhi\r\nms a 2 MA\r\nyo\r\n"
    b"mg a v\r\nms a 2 MP q\r\nxx\r\nmg a v\r\nms nokey 2 MA\r\nxx\r\n",
    b"ms a 2 q\r\nhi\r\nms a 2 C99\r\nhi\r\nms a 3\r\nhiXX\r\nmg a v\r\n"
    b"ms a 2 F\r\nhi\r\n",
    # meta: stale-while-revalidate, vivify, md stale, CAS on md/ma
    b"flush_all\r\nms s 3 T100\r\nold\r\nmd s I T30\r\nmg s v c t\r\nmg s v c t\r\n"
    b"ms s 3 C1 I\r\nnew\r\nmg s v\r\n",
    b"flush_all\r\nmg viv N30 t v\r\nmg viv N30 t v\r\nms viv 1\r\nx\r\nmg viv v c\r\n",
    b"flush_all\r\nset c 0 0 1\r\n5\r\nmg c c\r\nma c C1 v\r\nmd c C1\r\nmd c q k\r\n",
    b"flush_all\r\nset a 0 0 1\r\nx\r\nme a\r\nme zz\r\nme\r\nmg a h l t\r\n",
]


def _exchange(port: int, script: bytes) -> bytes:
    """
    Send C{script} and the sentinel on a new connection; return the replies
    up to the sentinel's (or everything until the server closes).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(script + SENTINEL)
        data = b""
        while not data.endswith(b"MN\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _closedAfter(port: int, data: bytes) -> bytes:
    """
    Send C{data} and read until the server closes; what it sent back.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
        return received


def _withoutVersion(reply: bytes) -> bytes:
    return b"\r\n".join(
        b"VERSION" if line.startswith(b"VERSION ") else line
        for line in reply.split(b"\r\n")
    )


class DifferentialTests(SynchronousTestCase):
    """
    memcached and np-memcache, side by side.
    """

    def setUp(self) -> None:
        memcached = shutil.which("memcached")
        if memcached is None:
            self.fail("memcached (Debian package memcached) not found")
        self.memcachedPort = freePort()
        self.memcached: LoggedProcess = startProcess(
            self,
            [
                memcached,
                "-l",
                "127.0.0.1",
                "-p",
                str(self.memcachedPort),
                "-U",
                "0",
                "-t",
                "1",
                "-u",
                "nobody",
            ],
            name="memcached",
        )
        self.port = freePort()
        self.twistd = runTwistd(
            self,
            "np-memcache",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--state-dir",
            self.mktemp(),
        )
        waitForPort(self.memcachedPort, self.memcached)
        waitForPort(self.port, self.twistd)

    def test_scripts(self) -> None:
        """Every script gets the same bytes back from both servers."""
        differences = []
        for script in SCRIPTS:
            expected = _withoutVersion(_exchange(self.memcachedPort, script))
            got = _withoutVersion(_exchange(self.port, script))
            if got != expected:
                differences.append(
                    f"{script[:120]!r}\n  memcached:   {expected[:600]!r}\n"
                    f"  np-memcache: {got[:600]!r}"
                )
        self.assertEqual(differences, [], "\n".join(differences))

    def test_longLineClosed(self) -> None:
        """4 KiB without a newline: both close the connection, answering
        nothing."""
        line = b"x" * 4096
        self.assertEqual(
            (_closedAfter(self.memcachedPort, line), _closedAfter(self.port, line)),
            (b"", b""),
        )

    def test_httpClosed(self) -> None:
        """An HTTP request line: both close the connection without a reply."""
        request = b"GET / HTTP/1.1\r\n"
        self.assertEqual(
            (
                _closedAfter(self.memcachedPort, request),
                _closedAfter(self.port, request),
            ),
            (b"", b""),
        )

    def test_quit(self) -> None:
        """quit closes, whatever follows it."""
        script = b"set a 0 0 1\r\nx\r\nquit\r\nget a\r\n"
        self.assertEqual(
            _closedAfter(self.port, script), _closedAfter(self.memcachedPort, script)
        )

    def test_statsNames(self) -> None:
        """stats, stats settings, items and slabs: STAT lines ending in END,
        each name np-memcache reports also reported by memcached."""
        _exchange(self.port, b"set a 0 0 1\r\nx\r\n")
        _exchange(self.memcachedPort, b"set a 0 0 1\r\nx\r\n")
        for command in [b"stats", b"stats settings", b"stats items", b"stats slabs"]:
            ours = _statNames(_exchange(self.port, command + b"\r\n"))
            theirs = _statNames(_exchange(self.memcachedPort, command + b"\r\n"))
            self.assertTrue(ours, command)
            self.assertEqual(ours - theirs, set(), command)


def _statNames(reply: bytes) -> set[bytes]:
    lines = reply.split(b"\r\n")
    assert lines[-3:] == [b"END", b"MN", b""], reply
    names = set()
    for line in lines[:-3]:
        assert line.startswith(b"STAT "), reply
        names.add(line.split(b" ")[1])
    return names


#: Conversations with servers requiring memcached's ASCII authentication: a
#: step is sent once the previous one's one-line reply came (memcached keeps
#: only the last reply of several refused in one read); each ends logged in
#: (as alice), with commands ended by the sentinel.
AUTH_SCRIPTS: list[list[bytes]] = [
    [
        b"get a\r\n",
        b"set x 0 0 20\r\nalice alice-password\r\n",
        b"set a 0 0 1\r\nx\r\n",
    ],
    [
        b"set x 0 0 5\r\nalice\r\n",
        b"bogus\r\n",
        b"set x 0 0 1\r\nabc",
        b"set x 0 0 20\r\nalice alice-password\r\n",
        b"get a\r\n",
    ],
    [b"set x 0 0 9\r\nalice bad\r\n", b"set x 0 0 20\r\nalice alice-password\r\n"],
]


def _converse(port: int, steps: list[bytes]) -> list[bytes]:
    """
    Send each of C{steps} after the previous one's reply line; the last one
    with the sentinel, read up to its reply.
    """
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            s.sendall(step + (SENTINEL if last else b""))
            end = b"MN\r\n" if last else b"\r\n"
            data = b""
            while not data.endswith(end):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            replies.append(data)
    return replies


class AuthenticationDifferentialTests(SynchronousTestCase):
    """
    memcached with C{-Y} (ASCII authentication) and np-memcache with C{--auth}.
    """

    def test_scripts(self) -> None:
        """Logins, refusals and errors before login get the same bytes."""
        memcached = shutil.which("memcached")
        if memcached is None:
            self.fail("memcached (Debian package memcached) not found")
        # memcached reads it after dropping privileges to nobody.
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        os.chmod(directory, 0o755)
        authfile = os.path.join(directory, "authfile")
        with open(authfile, "w") as f:
            f.write(f"alice:{PASSWORDS['alice']}\n")
        os.chmod(authfile, 0o644)
        memcachedPort, port = freePort(), freePort()
        process = startProcess(
            self,
            [
                *(memcached, "-l", "127.0.0.1", "-p", str(memcachedPort)),
                *("-U", "0", "-t", "1", "-u", "nobody", "-Y", authfile),
            ],
            name="memcached",
        )
        twistd = runTwistd(
            self,
            "np-memcache",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--auth",
            f"htpasswd:{writeHtpasswd(directory)}",
            "--allow-plaintext-auth",
            "--state-dir",
            self.mktemp(),
        )
        waitForPort(memcachedPort, process)
        waitForPort(port, twistd)
        for steps in AUTH_SCRIPTS:
            self.assertEqual(_converse(port, steps), _converse(memcachedPort, steps))
