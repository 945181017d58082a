"""
Tests for L{netplugins.homes}: the file services' user store and its jail.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from twisted.internet.defer import succeed
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netplugins.homes import (
    Home,
    HomeStore,
    Jail,
    NoHomeError,
    checkRootTemplate,
    userSegment,
    virtualPath,
)


class VirtualPathTests(SynchronousTestCase):
    """
    L{virtualPath} normalises client paths lexically, never above C{/}.
    """

    def test_relative(self) -> None:
        """A relative path is joined to the working directory."""
        self.assertEqual(virtualPath("b/c", "/a"), "/a/b/c")

    def test_dotDotStopsAtRoot(self) -> None:
        """C{..} never climbs above the root."""
        self.assertEqual(virtualPath("../../../etc/passwd", "/a"), "/etc/passwd")

    def test_absolute(self) -> None:
        """An absolute path ignores the working directory."""
        self.assertEqual(virtualPath("/x/./y//", "/a"), "/x/y")

    def test_bytes(self) -> None:
        """Bytes paths (SFTP) are accepted, undecodable bytes kept."""
        self.assertEqual(virtualPath(b"/caf\xe9"), "/caf\udce9")

    def test_nul(self) -> None:
        """A NUL byte is refused with EINVAL."""
        e = self.assertRaises(OSError, virtualPath, "a\x00b")
        self.assertEqual(e.errno, errno.EINVAL)

    def test_tooLong(self) -> None:
        """A path past the limit is refused with ENAMETOOLONG."""
        e = self.assertRaises(OSError, virtualPath, "a/" * 3000)
        self.assertEqual(e.errno, errno.ENAMETOOLONG)


class TemplateTests(SynchronousTestCase):
    """
    Home templates and the user names put in them.
    """

    def test_good(self) -> None:
        """A template with {user} is accepted as it is."""
        self.assertEqual(checkRootTemplate("/srv/ftp/{user}"), "/srv/ftp/{user}")

    def test_unknownPlaceholder(self) -> None:
        """An unknown placeholder is refused naming it."""
        e = self.assertRaises(ValueError, checkRootTemplate, "/srv/{uid}")
        self.assertIn("{uid}", str(e))

    def test_relative(self) -> None:
        """A relative template is refused."""
        self.assertRaises(ValueError, checkRootTemplate, "srv/{user}")

    def test_badNames(self) -> None:
        """Names that could name another directory are refused."""
        for name in ("..", ".", "a/b", "", "a\x00", "a\nb", b"\xff"):
            self.assertRaises(NoHomeError, userSegment, name)

    def test_goodName(self) -> None:
        """A UTF-8 name is a segment."""
        self.assertEqual(userSegment("zoë".encode()), "zoë")


class _LDAPUser:
    def __init__(self, attributes: dict[str, tuple[str, ...]]) -> None:
        self.attributes = attributes


class _LDAPChecker:
    def __init__(self, attributes: dict[str, tuple[str, ...]] | None) -> None:
        self.answer = None if attributes is None else _LDAPUser(attributes)

    def lookupAttributes(self, avatarId: str) -> Any:
        return succeed(self.answer)


class _Throttled:
    def __init__(self, checker: Any) -> None:
        self.checker = checker


class HomeStoreTests(TestCase):
    """
    L{HomeStore} gives each user a home and a jail.
    """

    def test_template(self) -> None:
        """{user} is replaced by the avatar ID."""
        store = HomeStore("/srv/ftp/{user}")
        home = self.successResultOf(store.homeFor(b"alice"))
        self.assertEqual(home, Home("alice", "/srv/ftp/alice", True, None))

    def test_traversalName(self) -> None:
        """An avatar ID like ../root gets no home."""
        store = HomeStore("/srv/ftp/{user}")
        self.failureResultOf(store.homeFor("../root"), NoHomeError)

    def test_readOnlyAndQuota(self) -> None:
        """Read-only users and the quota reach the home."""
        store = HomeStore("/h/{user}", readOnlyUsers={"bob"}, quota=10)
        home = self.successResultOf(store.homeFor("bob"))
        self.assertEqual((home.writable, home.quota), (False, 10))

    def test_ldapHomeDirectory(self) -> None:
        """{homeDirectory} comes from an ldap: checker, even a wrapped one."""
        checker = _Throttled(_LDAPChecker({"homedirectory": ("/home/alice",)}))
        store = HomeStore("{homeDirectory}/ftp", checkers=[checker])
        home = self.successResultOf(store.homeFor("alice"))
        self.assertEqual(home.path, "/home/alice/ftp")

    def test_ldapNoHomeDirectory(self) -> None:
        """A user without a usable homeDirectory gets no home."""
        choices: list[dict[str, tuple[str, ...]] | None] = [
            {},
            {"homedirectory": ("../x",)},
            None,
        ]
        for attributes in choices:
            store = HomeStore("{homeDirectory}", checkers=[_LDAPChecker(attributes)])
            self.failureResultOf(store.homeFor("alice"), NoHomeError)

    def test_noLDAPChecker(self) -> None:
        """{homeDirectory} without a checker that knows it gives no home."""
        store = HomeStore("{homeDirectory}", checkers=[object()])
        self.failureResultOf(store.homeFor("alice"), NoHomeError)

    def test_anonymous(self) -> None:
        """Anonymous access exists only with its root, read-only."""
        self.assertIsNone(HomeStore("/h/{user}").anonymousHome())
        home = HomeStore("/h/{user}", anonymousRoot="/pub").anonymousHome()
        self.assertEqual(home, Home("anonymous", "/pub", writable=False))

    def test_createHomes(self) -> Any:
        """createHomes makes a missing home, mode 0700, in the pool."""
        root = os.path.abspath(self.mktemp())
        from twisted.internet import reactor

        store = HomeStore(root + "/{user}", createHomes=True, reactor=reactor)
        d = store.jailFor("carol")

        def check(jail: Jail) -> None:
            path = os.path.join(root, "carol")
            self.assertEqual(jail.home.path, os.path.abspath(path))
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700)

        return d.addCallback(check)


class JailTests(SynchronousTestCase):
    """
    L{Jail} keeps every path inside the home.
    """

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        self.home = os.path.join(base, "home")
        os.makedirs(os.path.join(self.home, "sub"))
        with open(os.path.join(base, "secret"), "w") as f:
            f.write("outside")
        with open(os.path.join(self.home, "sub", "file.txt"), "wb") as f:
            f.write(b"inside")
        self.base = base
        self.jail = Jail(Home("alice", self.home))

    def read(self, path: str, cwd: str = "/") -> bytes:
        with self.jail.openRead(path, cwd) as f:
            return f.read()

    def assertErrno(self, code: int, f: Any, *args: Any, **kwargs: Any) -> None:
        e = self.assertRaises(OSError, f, *args, **kwargs)
        self.assertEqual(e.errno, code)

    def test_read(self) -> None:
        """A file in the home reads, relative to the working directory too."""
        self.assertEqual(self.read("/sub/file.txt"), b"inside")
        self.assertEqual(self.read("file.txt", "/sub"), b"inside")

    def test_dotDot(self) -> None:
        """../secret from the home is the home's own /secret, missing."""
        self.assertErrno(errno.ENOENT, self.read, "../secret")
        self.assertErrno(errno.ENOENT, self.read, "../../secret", "/sub")

    def test_absoluteSymlink(self) -> None:
        """An absolute link target starts at the home, not at /."""
        os.symlink(os.path.join(self.base, "secret"), os.path.join(self.home, "s"))
        os.symlink("/", os.path.join(self.home, "top"))
        self.assertErrno(errno.ENOENT, self.read, "s")
        self.assertEqual(self.read("/top/sub/file.txt"), b"inside")
        self.assertEqual(self.jail.realPath("top/sub"), "/sub")

    def test_relativeSymlinkOut(self) -> None:
        """A relative link climbing out stops at the home."""
        os.symlink("../../secret", os.path.join(self.home, "sub", "s"))
        os.symlink("../..", os.path.join(self.home, "sub", "up"))
        self.assertErrno(errno.ENOENT, self.read, "/sub/s")
        self.assertEqual(self.jail.realPath("/sub/up"), "/")
        names = [n for n, _ in self.jail.listDirectory("/sub/up")[0]]
        self.assertEqual(names, ["sub"])

    def test_symlinkInside(self) -> None:
        """A link to a file inside the home is followed."""
        os.symlink("sub/file.txt", os.path.join(self.home, "link"))
        self.assertEqual(self.read("link"), b"inside")
        self.assertEqual(self.jail.stat("link").st_size, 6)
        self.assertTrue(stat.S_ISLNK(self.jail.lstat("link").st_mode))

    def test_symlinkLoop(self) -> None:
        """A link loop ends in ELOOP."""
        os.symlink("b", os.path.join(self.home, "a"))
        os.symlink("a", os.path.join(self.home, "b"))
        self.assertErrno(errno.ELOOP, self.read, "a")

    def test_writeThroughOutsideLink(self) -> None:
        """Writing through a link that points out stays inside the home."""
        os.symlink(os.path.join(self.base, "secret"), os.path.join(self.home, "s"))
        os.symlink("/secret", os.path.join(self.home, "t"))
        self.assertErrno(errno.ENOENT, self.jail.openWrite, "s")
        with self.jail.openWrite("t") as f:
            f.write(b"x")
        with open(os.path.join(self.base, "secret")) as outside:
            self.assertEqual(outside.read(), "outside")
        self.assertEqual(self.read("/secret"), b"x")

    def test_removeLinkNotTarget(self) -> None:
        """Removing a link removes the link, not its target."""
        os.symlink("sub/file.txt", os.path.join(self.home, "link"))
        self.jail.removeFile("link")
        self.assertFalse(os.path.lexists(os.path.join(self.home, "link")))
        self.assertTrue(os.path.exists(os.path.join(self.home, "sub", "file.txt")))

    def test_fifoRefused(self) -> None:
        """A FIFO is not opened (nor waited on)."""
        os.mkfifo(os.path.join(self.home, "fifo"))
        self.assertErrno(errno.EACCES, self.read, "fifo")

    def test_directoryNotOpened(self) -> None:
        """Opening a directory as a file gives EISDIR."""
        self.assertErrno(errno.EISDIR, self.read, "sub")
        self.assertErrno(errno.EISDIR, self.read, "/")

    def test_nul(self) -> None:
        """A NUL in a path is EINVAL."""
        self.assertErrno(errno.EINVAL, self.read, "sub\x00/file.txt")

    def test_changes(self) -> None:
        """mkdir, write, append, rename, rmdir and remove work inside."""
        jail = self.jail
        self.assertEqual(jail.makeDirectory("new", "/sub"), "/sub/new")
        with jail.openWrite("/sub/new/a") as f:
            f.write(b"abc")
        with jail.openWrite("/sub/new/a", append=True) as f:
            f.write(b"def")
        with jail.openWrite("/sub/new/a", offset=1) as f:
            f.write(b"X")
        self.assertEqual(self.read("/sub/new/a"), b"aXcdef")
        jail.rename("/sub/new/a", "/b")
        self.assertEqual(self.read("/b"), b"aXcdef")
        self.assertErrno(errno.EEXIST, jail.openWrite, "/b", exclusive=True)
        jail.removeFile("/b")
        jail.removeDirectory("/sub/new")
        self.assertEqual(os.listdir(self.home), ["sub"])

    def test_rootProtected(self) -> None:
        """The home itself cannot be removed or renamed."""
        self.assertErrno(errno.EBUSY, self.jail.removeDirectory, "/")
        self.assertErrno(errno.EBUSY, self.jail.rename, "/", "/x")

    def test_readOnly(self) -> None:
        """A read-only user reads but every change is EACCES."""
        jail = Jail(Home("bob", self.home, writable=False))
        with jail.openRead("/sub/file.txt") as f:
            self.assertEqual(f.read(), b"inside")
        self.assertErrno(errno.EACCES, jail.openWrite, "x")
        self.assertErrno(errno.EACCES, jail.makeDirectory, "d")
        self.assertErrno(errno.EACCES, jail.removeFile, "/sub/file.txt")
        self.assertErrno(errno.EACCES, jail.rename, "/sub", "/x")

    def test_listingBounded(self) -> None:
        """A listing stops at its limit and says so."""
        for i in range(5):
            open(os.path.join(self.home, f"f{i}"), "w").close()
        entries, truncated = self.jail.listDirectory("/", limit=3)
        self.assertEqual((len(entries), truncated), (3, True))
        entries, truncated = self.jail.listDirectory("/")
        self.assertEqual((len(entries), truncated), (6, False))
        self.assertEqual(entries[-1][0], "sub")

    def test_quota(self) -> None:
        """Writes past the quota fail with EDQUOT; removals free space."""
        store = HomeStore(self.home, quota=10)
        jail = store.jail(Home("alice", self.home, quota=10))
        self.assertEqual(jail.usage(), 6)
        with jail.openWrite("a") as f:
            f.write(b"1234")
            e = self.assertRaises(OSError, f.write, b"5")
            self.assertEqual(e.errno, errno.EDQUOT)
        jail.removeFile("/sub/file.txt")
        self.assertEqual(jail.usage(), 4)
        other = store.jail(Home("alice", self.home, quota=10))
        self.assertEqual(other.usage(), 4)

    def test_swappedDirectoryNotFollowed(self) -> None:
        """A directory replaced by an outside link mid-walk is not entered."""
        jail = self.jail
        real = os.stat
        sub = os.path.join(self.home, "sub")

        def swapping(*args: Any, **kwargs: Any) -> os.stat_result:
            result = real(*args, **kwargs)
            if args[0] == "sub" and os.path.isdir(sub) and not os.path.islink(sub):
                os.rename(sub, sub + ".old")
                os.symlink(self.base, sub)
            return result

        self.patch(os, "stat", swapping)
        e = self.assertRaises(OSError, jail.openRead, "/sub/secret")
        self.assertIn(e.errno, (errno.ELOOP, errno.ENOTDIR))


class JailLinkModeStatvfsTests(SynchronousTestCase):
    """
    L{Jail.link}, L{Jail.setMode} and L{Jail.statvfs} resolve as every other
    operation does: nothing outside the home is linked, changed or looked at.
    """

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        self.home = os.path.join(base, "home")
        os.makedirs(os.path.join(self.home, "sub"))
        self.secret = os.path.join(base, "secret")
        with open(self.secret, "w") as f:
            f.write("outside")
        os.chmod(self.secret, 0o600)
        with open(os.path.join(self.home, "sub", "file.txt"), "wb") as f:
            f.write(b"inside")
        self.base = base
        self.jail = Jail(Home("alice", self.home))

    def assertErrno(self, code: int, f: Any, *args: Any, **kwargs: Any) -> None:
        e = self.assertRaises(OSError, f, *args, **kwargs)
        self.assertEqual(e.errno, code)

    def assertOutsideUntouched(self) -> None:
        self.assertEqual(sorted(os.listdir(self.base)), ["home", "secret"])
        st = os.stat(self.secret)
        self.assertEqual((st.st_nlink, stat.S_IMODE(st.st_mode)), (1, 0o600))

    def test_link(self) -> None:
        """A hard link to a file, relative to the working directory too."""
        self.jail.link("file.txt", "/again", "/sub")
        os.symlink("sub/file.txt", os.path.join(self.home, "soft"))
        self.jail.link("/soft", "sub/third")
        st = os.stat(os.path.join(self.home, "again"))
        self.assertEqual(st.st_nlink, 3)
        self.assertTrue(os.path.samestat(st, self.jail.stat("/sub/third")))

    def test_linkRefused(self) -> None:
        """Directories, FIFOs, the home and existing targets are refused."""
        os.mkfifo(os.path.join(self.home, "fifo"))
        self.assertErrno(errno.EPERM, self.jail.link, "/sub", "/d")
        self.assertErrno(errno.EPERM, self.jail.link, "/", "/d")
        self.assertErrno(errno.EACCES, self.jail.link, "/fifo", "/f")
        self.assertErrno(errno.EEXIST, self.jail.link, "/sub/file.txt", "/sub")
        self.assertErrno(errno.EEXIST, self.jail.link, "/sub/file.txt", "/")
        self.assertErrno(errno.ENOENT, self.jail.link, "/missing", "/m")
        readOnly = Jail(Home("bob", self.home, writable=False))
        self.assertErrno(errno.EACCES, readOnly.link, "/sub/file.txt", "/x")

    def test_linkEscapes(self) -> None:
        """Sources and targets through .., absolute paths or links stay inside."""
        os.symlink(self.secret, os.path.join(self.home, "s"))
        os.symlink("../../secret", os.path.join(self.home, "sub", "rel"))
        os.symlink(self.base, os.path.join(self.home, "out"))
        os.symlink("../..", os.path.join(self.home, "sub", "up"))
        self.assertErrno(errno.ENOENT, self.jail.link, "/s", "/stolen")
        self.assertErrno(errno.ENOENT, self.jail.link, "/sub/rel", "/stolen")
        self.assertErrno(errno.ENOENT, self.jail.link, "../secret", "/stolen")
        self.assertErrno(errno.ENOENT, self.jail.link, self.secret, "/stolen")
        self.assertErrno(errno.ENOENT, self.jail.link, "/sub/file.txt", "/out/x")
        self.jail.link("/sub/file.txt", "../../planted")
        self.jail.link("/sub/file.txt", "/sub/up/planted2")
        self.assertEqual(
            sorted(os.listdir(self.home)),
            ["out", "planted", "planted2", "s", "sub"],
        )
        self.assertOutsideUntouched()

    def test_setMode(self) -> None:
        """Permission bits change; setuid, setgid and sticky do not."""
        path = os.path.join(self.home, "sub", "file.txt")
        self.jail.setMode("file.txt", 0o7640, "/sub")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o640)
        os.symlink("sub/file.txt", os.path.join(self.home, "soft"))
        self.jail.setMode("/soft", 0o100604)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o604)
        self.jail.setMode("/sub", 0o2750)
        self.assertEqual(
            stat.S_IMODE(os.stat(os.path.join(self.home, "sub")).st_mode), 0o750
        )

    def test_setModeRefused(self) -> None:
        """The home, a link itself and read-only users are refused."""
        os.symlink("sub/file.txt", os.path.join(self.home, "soft"))
        self.assertErrno(errno.EBUSY, self.jail.setMode, "/", 0o700)
        self.assertErrno(errno.EBUSY, self.jail.setMode, "/sub/..", 0o700)
        self.assertErrno(
            errno.EOPNOTSUPP, self.jail.setMode, "/soft", 0o600, "/", False
        )
        self.assertErrno(errno.ENOENT, self.jail.setMode, "/missing", 0o600)
        readOnly = Jail(Home("bob", self.home, writable=False))
        self.assertErrno(errno.EACCES, readOnly.setMode, "/sub/file.txt", 0o600)

    def test_setModeEscapes(self) -> None:
        """No mode changes outside the home, through links or ..."""
        os.symlink(self.secret, os.path.join(self.home, "s"))
        os.symlink("../../secret", os.path.join(self.home, "sub", "rel"))
        os.symlink("../..", os.path.join(self.home, "sub", "up"))
        for path in ("/s", "/sub/rel", "../secret", self.secret, "/sub/up/secret"):
            self.assertErrno(errno.ENOENT, self.jail.setMode, path, 0o777)
        self.assertErrno(errno.EBUSY, self.jail.setMode, "/sub/up", 0o777)
        self.assertOutsideUntouched()

    def test_statvfs(self) -> None:
        """statvfs answers for the home's filesystem, for directories and files."""
        expected = os.statvfs(self.home)
        for path in ("/", "/sub", "/sub/file.txt", "../.."):
            st = self.jail.statvfs(path)
            self.assertEqual(
                (st.f_fsid, st.f_bsize, st.f_namemax),
                (expected.f_fsid, expected.f_bsize, expected.f_namemax),
            )
        self.assertErrno(errno.ENOENT, self.jail.statvfs, "/missing")
        os.symlink(self.base, os.path.join(self.home, "out"))
        self.assertErrno(errno.ENOENT, self.jail.statvfs, "/out/secret")
