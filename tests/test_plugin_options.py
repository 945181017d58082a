"""
Every plugin's command line stays what it is while the service layer is
reshaped: the option names, their short forms and their defaults are compared
with a snapshot (C{tests/data/plugin-options.json}), so that a reshaping
cannot drop, rename or change the default of an option unnoticed.  A change
that means to alter the command line regenerates the snapshot with
C{python -m tests.test_plugin_options} and shows the difference in its commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

SNAPSHOT = Path(__file__).resolve().parent / "data" / "plugin-options.json"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


def describeOptions() -> dict[str, dict[str, Any]]:
    """
    For each netplugins plugin: its options (long name to short form and
    default, flags marked) as a fresh C{Options} instance holds them, and the
    shared settings an empty command line gives (or its usage error).
    """
    described: dict[str, dict[str, Any]] = {}
    for maker in getPlugins(IServiceMaker):
        if not maker.tapname.startswith("np-"):
            continue
        options = maker.options()
        shorts = {
            long: short
            for short, long in options.synonyms.items()
            if len(short) == 1 and short != long
        }
        entries: dict[str, Any] = {}
        for long in sorted(set(options.synonyms.values())):
            if long in options.defaults:
                entries[long] = {
                    "short": shorts.get(long),
                    "default": _jsonable(options.defaults[long]),
                }
            else:
                entries[long] = {"short": shorts.get(long), "flag-or-method": True}
        parsed = maker.options()
        try:
            parsed.parseOptions([])
        except Exception as e:
            entries["(no arguments)"] = f"{type(e).__name__}: {e}"
        else:
            common = parsed.common
            entries["(no arguments)"] = {
                "limits": repr(common.limits),
                "listen": list(common.listen),
                "listenTLS": list(common.listenTLS),
                "stateDir": common.stateDir,
                "workers": common.workers,
            }
        described[maker.tapname] = entries
    return dict(sorted(described.items()))


class SnapshotTests(SynchronousTestCase):
    """
    The plugins' options against the snapshot.
    """

    def test_unchanged(self) -> None:
        """Every plugin has the options and defaults of the snapshot."""
        expected = json.loads(SNAPSHOT.read_text())
        actual = json.loads(json.dumps(describeOptions()))
        self.assertEqual(sorted(actual), sorted(expected))
        for tapname in expected:
            self.assertEqual(actual[tapname], expected[tapname], tapname)


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(describeOptions(), indent=1, sort_keys=True) + "\n")
    sys.stdout.write(f"wrote {SNAPSHOT}\n")
