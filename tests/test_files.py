"""
Tests for L{netplugins.files}: replacing a file whole or not at all.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from netplugins.files import NEW_FILE_MODE, writeAtomically


class WriteAtomicallyTests(SynchronousTestCase):
    """
    L{writeAtomically} replaces a file by renaming a complete copy over it.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.path = self.directory / "secret"

    def mode(self, path: Path) -> int:
        """
        C{path}'s permission bits.
        """
        return stat.S_IMODE(path.stat().st_mode)

    def test_newFile(self) -> None:
        """A new file holds the data, is 0600 under a lax umask, and is alone."""
        self.addCleanup(os.umask, os.umask(0))
        writeAtomically(str(self.path), b"one")
        self.assertEqual(
            (self.path.read_bytes(), self.mode(self.path), os.listdir(self.directory)),
            (b"one", 0o600, ["secret"]),
        )
        self.assertEqual(NEW_FILE_MODE, 0o600)

    def test_newFileMode(self) -> None:
        """A mode given is the new file's mode."""
        writeAtomically(str(self.path), b"one", mode=0o640)
        self.assertEqual(self.mode(self.path), 0o640)

    def test_keepsMode(self) -> None:
        """An existing file's contents are replaced and its mode kept."""
        self.path.write_bytes(b"old contents")
        self.path.chmod(0o644)
        writeAtomically(str(self.path), b"new")
        self.assertEqual(
            (self.path.read_bytes(), self.mode(self.path), os.listdir(self.directory)),
            (b"new", 0o644, ["secret"]),
        )

    def test_modeOverridesExisting(self) -> None:
        """A mode given replaces an existing file's mode."""
        self.path.write_bytes(b"old")
        self.path.chmod(0o644)
        writeAtomically(str(self.path), b"new", mode=0o600)
        self.assertEqual(self.mode(self.path), 0o600)

    def test_keepsOwner(self) -> None:
        """Where permitted (root), an existing file keeps its owner and group."""
        if os.geteuid() != 0:
            raise SkipTest("only root can give a file away")
        self.path.write_bytes(b"old")
        os.chown(self.path, 1234, 5678)
        writeAtomically(str(self.path), b"new")
        info = self.path.stat()
        self.assertEqual((info.st_uid, info.st_gid), (1234, 5678))

    def test_readerKeepsOldContents(self) -> None:
        """A reader that opened the file before still reads the old contents whole."""
        self.path.write_bytes(b"old contents")
        with self.path.open("rb") as reader:
            writeAtomically(str(self.path), b"new")
            self.assertEqual(reader.read(), b"old contents")
        self.assertEqual(self.path.read_bytes(), b"new")

    def test_symlinkTarget(self) -> None:
        """Through a symlink, the target is replaced and the link stays a link."""
        target = self.directory / "target"
        target.write_bytes(b"old")
        self.path.symlink_to("target")
        writeAtomically(str(self.path), b"new")
        self.assertEqual(
            (os.readlink(self.path), target.read_bytes()), ("target", b"new")
        )
        self.assertEqual(sorted(os.listdir(self.directory)), ["secret", "target"])

    def test_failureLeavesOldFile(self) -> None:
        """A write that fails leaves the old file as it was and no temporary file."""
        self.path.write_bytes(b"old")

        def fsync(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        self.patch(os, "fsync", fsync)
        error = self.assertRaises(OSError, writeAtomically, str(self.path), b"new")
        self.assertEqual(error.errno, errno.EIO)
        self.assertEqual(
            (self.path.read_bytes(), os.listdir(self.directory)), (b"old", ["secret"])
        )
