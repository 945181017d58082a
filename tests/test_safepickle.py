"""
Tests for L{netplugins.safepickle}: the bound on the work a pickle causes.

The allowlist, memo and nesting checks are pinned in L{tests.test_mpconn}.
"""

from __future__ import annotations

import decimal
import pickle
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from netplugins.safepickle import (
    DEFAULT_MAX_EXPANSION,
    MAX_INT_BITS,
    RefusedPickleError,
    checkNesting,
    safeLoads,
)


def sharedTuples(levels: int) -> bytes:
    """
    Protocol 4 opcodes leaving on the stack tuple C{levels}, where tuple 0 is
    C{1} and tuple i is C{(tuple i - 1, tuple i - 1)}: memo index i holds
    level i, so the pickle is 6 bytes a level and the tree 2**levels leaves.
    """
    ops = [b"\x80\x04K\x01\x94"]
    for i in range(1, levels + 1):
        ops.append(b"h%ch%c\x86\x94" % (i - 1, i - 1))
    return b"".join(ops)


def sharedLists(levels: int) -> bytes:
    """
    Like L{sharedTuples}, with lists: list i is C{[list i - 1, list i - 1]}.
    """
    ops = [b"\x80\x04K\x01\x94"]
    for i in range(1, levels + 1):
        ops.append(b"](h%ch%ce\x94" % (i - 1, i - 1))
    return b"".join(ops)


class ExpansionTests(SynchronousTestCase):
    """
    Shared memo entries cannot make loading, or using the result, explode.
    """

    def assertRefusedQuickly(self, data: bytes, **kwargs: Any) -> str:
        """
        Assert that C{safeLoads(data)} is refused within a second; return why.
        """
        started = time.monotonic()
        with self.assertRaises(RefusedPickleError) as caught:
            safeLoads(data, **kwargs)
        self.assertLess(time.monotonic() - started, 1)
        return str(caught.exception)

    def test_sharedTuplesInSet(self) -> None:
        """Tuples 29 levels deep through the memo, added to a set: refused in < 1 s."""
        data = sharedTuples(29) + b"\x8f(h\x1d\x90."
        self.assertEqual(len(data), 185)
        self.assertEqual(
            self.assertRefusedQuickly(data),
            f"expands to more than {len(data) + DEFAULT_MAX_EXPANSION} objects",
        )

    def test_sharedTuplesAsKey(self) -> None:
        """The same tuples as a dict key are refused before being hashed."""
        self.assertRefusedQuickly(sharedTuples(29) + b"}h\x1dK\x01s.")

    def test_sharedTuplesReturned(self) -> None:
        """Shared tuples only returned are refused too: the caller may hash them."""
        self.assertRefusedQuickly(sharedTuples(60) + b".")

    def test_sharedListsReturned(self) -> None:
        """Lists 60 levels of shared halves are refused: walking them never ends."""
        data = sharedLists(60) + b"."
        self.assertRefusedQuickly(data, maxNesting=100)

    def test_repeatedSetCalls(self) -> None:
        """set(L) called again and again on one memo list is refused, not quadratic."""
        items = b"".join(b"M%c%c" % (i % 256, i // 256) for i in range(20000))
        call = b"h\x00h\x01\x85R0"
        data = (
            (b"\x80\x04\x8c\x08builtins\x8c\x03set\x93\x94](" + items + b"e\x94")
            + call * 20000
            + b"N."
        )
        self.assertIn("expands to more than", self.assertRefusedQuickly(data))

    def test_decimalFromHugeInteger(self) -> None:
        """Decimal of a 2 * 10**6-bit integer (seconds to convert) is refused."""
        number = (2**2_000_000).to_bytes(250_001, "little")
        data = (
            b"\x80\x04\x8c\x07decimal\x8c\x07Decimal\x93\x8b"
            + len(number).to_bytes(4, "little")
            + number
            + b"\x85R."
        )
        self.assertEqual(
            self.assertRefusedQuickly(data),
            f"refused an integer argument over {MAX_INT_BITS} bits",
        )
        small = pickle.dumps(decimal.Decimal(2**100))
        self.assertEqual(safeLoads(small), decimal.Decimal(2**100))

    def test_unsharedNeedsNoExpansion(self) -> None:
        """Pickles without shared parts load with no expansion allowed at all."""
        values = [
            [list(range(1000)), {"k": (1, (2, 3))}],
            {1, 2},
            frozenset([(1, 2)]),
            bytearray(b"ab"),
            1 + 2j,
            decimal.Decimal("1.10"),
        ]
        for protocol in (3, 4, 5):
            for value in values:
                loaded = safeLoads(pickle.dumps(value, protocol), maxExpansion=0)
                self.assertEqual((loaded, type(loaded)), (value, type(value)))

    def test_sharingWithinTheBound(self) -> None:
        """Shared parts load while their expansion stays within maxExpansion."""
        shared = (1, "x", (2.5, b"y"))
        value = [shared] * 100
        data = pickle.dumps(value, 4)
        # As a tree: the list, and 100 times the tuple's 6 objects.
        self.assertEqual(safeLoads(data, maxExpansion=601 - len(data)), value)
        self.assertRaises(
            RefusedPickleError, safeLoads, data, maxExpansion=600 - len(data)
        )

    def test_cookbookRPC(self) -> None:
        """Recipe 11.8's (name, args, kwargs) with typical arguments loads."""
        request = (
            "store",
            (1, 2.5, "text", b"\x00\xff", [1, [2, [3]]], {"a": (1, 2)}),
            {"options": {"tags": ["x", "y"], "limit": 10, "ratio": 0.5}},
        )
        for protocol in (3, 4, 5):
            self.assertEqual(safeLoads(pickle.dumps(request, protocol)), request)

    def test_oldCallsCharged(self) -> None:
        """INST, the protocol 0 call, is charged like REDUCE."""
        # set(L) by INST, 300 times over one memo list of 100 items.
        items = b"".join(b"I%d\n" % i for i in range(100))
        data = (
            b"(l"
            + items.replace(b"\n", b"\na")
            + b"p0\n"
            + (b"(g0\nibuiltins\nset\n0" * 300)
            + b"N."
        )
        self.assertEqual(safeLoads(data, maxExpansion=30_000), None)
        self.assertRaises(RefusedPickleError, safeLoads, data, maxExpansion=20_000)


class CheckNestingSizeTests(SynchronousTestCase):
    """
    L{checkNesting} measures size as a tree when asked to.
    """

    def test_treeSize(self) -> None:
        """Shared parts count each time they are referred to."""
        leaf = [1, 2]
        value = [leaf, leaf, (leaf, 3)]
        checkNesting(value, 10, 12)
        self.assertRaises(RefusedPickleError, checkNesting, value, 10, 11)

    def test_sizeUnbounded(self) -> None:
        """Without maxSize, 2**60 paths are fine; with it, refused quickly."""
        value: list[Any] = []
        for _ in range(60):
            value = [value, value]
        started = time.monotonic()
        checkNesting(value, 100)
        self.assertRaises(RefusedPickleError, checkNesting, value, 100, 10**6)
        self.assertLess(time.monotonic() - started, 1)
