"""
The wheel installs into a fresh virtualenv and its dropins work from outside the
checkout (running from the repo root would hide packaging bugs).
"""

from __future__ import annotations

import ast
import atexit
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parent.parent
CHECKERS = ("htpasswd", "ldap", "hmac")


def _dropinNames(constructor: str, position: int) -> tuple[str, ...]:
    """
    The names given to C{constructor} (C{ServiceMaker}'s tapname, C{Reactor}'s
    shortcut) in every C{twisted/plugins/netplugins_*.py}, read from the source
    so that a new dropin cannot be left out of these tests.
    """
    names = []
    for path in sorted((ROOT / "twisted" / "plugins").glob("netplugins_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == constructor
            ):
                argument = node.args[position]
                assert isinstance(argument, ast.Constant), ast.dump(argument)
                names.append(str(argument.value))
    return tuple(names)


PLUGINS = _dropinNames("ServiceMaker", 3)
REACTORS = _dropinNames("Reactor", 0)


def _run(*argv: str | Path, cwd: Path, timeout: float = 600) -> str:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    result = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout + result.stderr


class _Install:
    """
    The wheel, built once per test run and installed into a fresh venv (trial
    runs no setUpClass, so the first test to ask builds it).
    """

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="np-wheel-"))
        atexit.register(shutil.rmtree, self.work, ignore_errors=True)
        dist = self.work / "dist"
        # pip builds in the tree's build/: one build at a time (trial -j).
        with open(Path(tempfile.gettempdir()) / "np-wheel.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _run(
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "-q",
                "-w",
                dist,
                ROOT,
                cwd=self.work,
            )
        self.wheel = next(dist.glob("netplugins-*.whl"))
        venv = self.work / "venv"
        _run(sys.executable, "-m", "venv", venv, cwd=self.work)
        self.bin = venv / "bin"
        _run(
            self.bin / "python",
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            self.wheel,
            cwd=self.work,
        )
        self.outside = self.work / "elsewhere"
        self.outside.mkdir()


_installs: list[_Install] = []


class WheelTests(TestCase):
    """
    Install the wheel into a fresh venv, then look at it from elsewhere.
    """

    timeout = 900

    def setUp(self) -> None:
        if not _installs:
            _installs.append(_Install())
        install = _installs[0]
        self.wheel, self.bin, self.outside = (
            install.wheel,
            install.bin,
            install.outside,
        )

    def test_noPluginPackageInit(self) -> None:
        """The wheel ships the dropins but no twisted/plugins/__init__.py."""
        names = zipfile.ZipFile(self.wheel).namelist()
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertIn("twisted/plugins/netplugins_echo.py", names)

    def test_dropinsRead(self) -> None:
        """The dropin scan finds the services and the reactor known today."""
        known = {"np-echo", "np-daytime", "np-zen", "np-mpconn", "np-kv", "np-wsgi"}
        self.assertEqual(known - set(PLUGINS), set())
        known = {"np-httpbin", "np-smtp", "np-pop3", "np-imap", "np-mail"}
        self.assertEqual(known - set(PLUGINS), set())
        self.assertEqual(REACTORS, ("np-epoll",))

    def test_twistdHelpListsPlugins(self) -> None:
        """twistd --help run from another directory lists every np- plugin."""
        out = _run(self.bin / "twistd", "--help", cwd=self.outside)
        missing = [name for name in PLUGINS if f"    {name} " not in out]
        self.assertEqual(missing, [], out)

    def test_checkersListed(self) -> None:
        """--help-auth lists the htpasswd, ldap and hmac checkers."""
        out = _run(self.bin / "twistd", "np-echo", "--help-auth", cwd=self.outside)
        self.assertEqual([name for name in CHECKERS if f"  {name}" not in out], [], out)

    def test_checkerHelp(self) -> None:
        """--help-auth-type works for each of the checkers."""
        for name in CHECKERS:
            out = _run(
                self.bin / "twistd",
                "np-echo",
                "--help-auth-type",
                name,
                cwd=self.outside,
            )
            self.assertIn(f"Usage: --auth {name}", out)

    def test_reactorsListed(self) -> None:
        """twistd --help-reactors lists every netplugins reactor."""
        out = _run(self.bin / "twistd", "--help-reactors", cwd=self.outside)
        self.assertEqual([name for name in REACTORS if name not in out], [], out)

    def test_pluginHelp(self) -> None:
        """Each plugin's --help works in the installed wheel."""
        for name in PLUGINS:
            out = _run(self.bin / "twistd", name, "--help", cwd=self.outside)
            self.assertIn("--listen", out)

    def test_badOptionIsOneLine(self) -> None:
        """A bad endpoint is a one-line usage error, not a traceback."""
        result = subprocess.run(
            [str(self.bin / "twistd"), "-n", "np-echo", "--listen", "bogus:1"],
            cwd=self.outside,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertIn("bogus:1", result.stdout + result.stderr)
