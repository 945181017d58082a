"""
Tests for the SFTP benchmark (bench/ssh.py): short real measurements of
each case's kind through the runner against C{twistd np-ssh} and against
the private OpenSSH sshd, both serving the same home.
"""

from __future__ import annotations

import getpass
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench import prepare
from bench.run import Sample, Settings, measure
from bench.suite import BENCHMARKS, Case
from bench.targets import TARGETS

# By name from the suite's table: bench.ssh is imported by bench.suite.
SSH = next(b for b in BENCHMARKS if b.name == "ssh")
SMALL = 256 * 1024


class SSHBenchmarkTests(SynchronousTestCase):
    """
    np-ssh and OpenSSH's sshd under the SFTP load client, a fresh server
    each time.
    """

    def setUp(self) -> None:
        prepare.ssh()
        self.settings = Settings(
            warmup=0,
            duration=1.0,
            serverCPU=None,
            loadgenCPU=None,
            out=Path(self.mktemp()),
        )

    def measured(self, contender: str, case: Case) -> Sample:
        """
        Measure C{contender} on C{case}: sessions counted without errors,
        every one moving the whole file.
        """
        sample = measure(SSH, SSH.contender(contender), case, self.settings, 1)
        self.assertEqual(sample.errors, 0)
        self.assertGreater(sample.requests, 0)
        self.assertGreater(sample.serverCPU, 0)
        self.assertEqual(sample.bytes, sample.requests * case.size)
        return sample

    def test_npSSH(self) -> None:
        """np-ssh's get, put and concurrent sessions are counted."""
        for mode in ("get", "put"):
            self.measured("np-ssh", Case(SMALL, connections=1, framing=mode))
        self.measured("np-ssh", Case(1024, connections=4, framing="session"))

    def test_openSSH(self) -> None:
        """The private sshd serves the same client the same way."""
        for mode in ("get", "put"):
            self.measured("openssh", Case(SMALL, connections=1, framing=mode))

    def test_sameHome(self) -> None:
        """Both servers serve prepare's home; the suite's user's key is authorized."""
        directory = prepare.ssh()
        self.assertTrue((directory / "home").is_dir())
        self.assertEqual(
            (directory / "keys" / getpass.getuser()).read_bytes(),
            (directory / "id_ed25519.pub").read_bytes(),
        )
        np = SSH.contender("np-ssh").command
        self.assertEqual(np[np.index("--root") + 1], "{out}/ssh/home")

    def test_casesAndTargets(self) -> None:
        """Issue 15's cases, with a 0.5x OpenSSH target for get and put."""
        self.assertEqual(
            [(c.framing, c.connections) for c in SSH.cases],
            [("get", 1), ("put", 1), ("session", 100)],
        )
        self.assertEqual(
            sorted((t.case, t.peer, t.goal) for t in TARGETS if t.benchmark == "ssh"),
            [
                ("get 32 MiB x 1", "openssh", 0.5),
                ("put 32 MiB x 1", "openssh", 0.5),
            ],
        )
        titles = {c.title for c in SSH.cases}
        self.assertTrue({"get 32 MiB x 1", "put 32 MiB x 1"} <= titles)
