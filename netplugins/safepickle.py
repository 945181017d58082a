"""
Unpickling data from peers that are not trusted: plain data only.

C{pickle.loads} runs whatever a pickle names, so a peer that can send one can
run code (C{os.system}, C{builtins.eval}, ...).  L{safeLoads} refuses every
global except the few plain data types in L{ALLOWED_GLOBALS}; containers,
strings, bytes, numbers, C{None} and booleans have opcodes of their own and need
no global at all.  There is no wildcard: allowing all of C{builtins} would allow
C{eval}, C{getattr} and C{__import__}, which is the whole attack.

Two more traps are closed:

  - The C unpickler grows its memo to twice the largest index a C{PUT} names,
    and clears every slot: a 7-byte pickle naming index 2**31 touches 32 GiB.
    The pure-Python unpickler keeps its memo in a dict, so L{SafeUnpickler}
    builds on it.
  - Hashing a tuple recurses into its items without a recursion check, so a dict
    key nested 10**6 tuples deep crashes the interpreter while the pickle is
    still being read.  Tuples are checked for depth as they are built, and the
    finished object for nesting of any container (cycles count as too deep).
"""

from __future__ import annotations

import datetime
import decimal
import io
import pickle
import struct
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

DEFAULT_MAX_NESTING = 100


class RefusedPickleError(Exception):
    """
    A pickle from a peer was refused: it names a global outside the allowlist,
    nests too deeply, or is malformed.  The message says which, in one line.
    """


def _bytearrayFromData(*args: Any) -> bytearray:
    # What bytearray.__reduce_ex__ writes: (bytes,) since protocol 3,
    # (str, "latin-1") before; never a size.
    if not args:
        return bytearray()
    if len(args) == 1 and type(args[0]) is bytes:
        return bytearray(args[0])
    if len(args) == 2 and type(args[0]) is str and args[1] == "latin-1":
        return bytearray(args[0], "latin-1")
    raise RefusedPickleError("refused bytearray from anything but its data")


#: The globals a pickle from a peer may name, each a plain value type whose
#: constructor only builds a value from the arguments it is given.  Protocol 4
#: and 5 pickles (the default since Python 3.8) use these for sets made with
#: protocol 2 or 3, frozensets, complex numbers, dates and decimals.
#: C{bytearray} is only built from the bytes given: C{bytearray(2**40)} would
#: allocate.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("builtins", "bytearray"): _bytearrayFromData,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("decimal", "Decimal"): decimal.Decimal,
}

_CONTAINERS = (list, tuple, dict, set, frozenset)


def _children(obj: Any) -> Iterator[Any]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield value
    else:
        yield from obj


def checkNesting(obj: Any, maxNesting: int) -> None:
    """
    Refuse C{obj} if containers nest more than C{maxNesting} deep in it.

    Iterative, so a deep object cannot exhaust the stack here; shared parts are
    measured once, so the cost stays linear even when a pickle's memo makes a
    structure exponentially large to walk naively.

    @raise RefusedPickleError: when too deep or cyclic.
    """
    if not isinstance(obj, _CONTAINERS):
        return
    heights: dict[int, int] = {}
    # Each frame: the container, its remaining children, the tallest child so far.
    frames: list[list[Any]] = [[obj, _children(obj), 0]]
    onPath = {id(obj)}
    keepAlive = [obj]
    while frames:
        frame = frames[-1]
        for child in frame[1]:
            if not isinstance(child, _CONTAINERS):
                continue
            known = heights.get(id(child))
            if known is not None:
                frame[2] = max(frame[2], known)
                continue
            if id(child) in onPath or len(frames) >= maxNesting:
                raise RefusedPickleError(f"nested more than {maxNesting} deep")
            frames.append([child, _children(child), 0])
            onPath.add(id(child))
            keepAlive.append(child)
            break
        else:
            frames.pop()
            onPath.discard(id(frame[0]))
            height = frame[2] + 1
            heights[id(frame[0])] = height
            if frames:
                frames[-1][2] = max(frames[-1][2], height)
    if heights[id(obj)] > maxNesting:
        raise RefusedPickleError(f"nested more than {maxNesting} deep")


class SafeUnpickler(pickle._Unpickler):
    """
    An unpickler for peer data: L{ALLOWED_GLOBALS} only, no persistent IDs, no
    extension registry, tuples at most C{maxNesting} deep.
    """

    dispatch: ClassVar[dict[int, Callable[..., None]]] = dict(
        pickle._Unpickler.dispatch  # type: ignore[attr-defined]
    )

    def __init__(self, file: Any, *, maxNesting: int = DEFAULT_MAX_NESTING) -> None:
        super().__init__(file)
        self.maxNesting = maxNesting
        # id -> (tuple, depth); the tuple is kept so that its id is not reused.
        self._tupleDepths: dict[int, tuple[tuple[Any, ...], int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":
            # Protocol 2 pickles name Python 2's module.
            module = "builtins"
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise RefusedPickleError(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickleError("refused persistent id")

    def _checkTuple(self) -> None:
        built = self.stack[-1]  # type: ignore[attr-defined]
        depth = 1
        for item in built:
            if type(item) is tuple:
                known = self._tupleDepths.get(id(item))
                depth = max(depth, 1 + (known[1] if known else 1))
        if depth > self.maxNesting:
            raise RefusedPickleError(f"tuples nested more than {self.maxNesting} deep")
        self._tupleDepths[id(built)] = (built, depth)


def _loadBytearray8(self: SafeUnpickler) -> None:
    # The stock loader allocates the declared length before reading: 20 bytes
    # could ask for 2**62.  Read first; the data bounds the allocation.
    (size,) = struct.unpack("<Q", self.read(8))  # type: ignore[attr-defined]
    data = self.read(size)  # type: ignore[attr-defined]
    if len(data) != size:
        raise RefusedPickleError("truncated bytearray")
    self.append(bytearray(data))  # type: ignore[attr-defined]


def _checkingTuples(load: Callable[[SafeUnpickler], None]) -> Callable[..., None]:
    def loadAndCheck(self: SafeUnpickler) -> None:
        load(self)
        self._checkTuple()

    return loadAndCheck


def _refusing(what: str) -> Callable[..., None]:
    def refuse(self: SafeUnpickler) -> None:
        raise RefusedPickleError(f"refused {what}")

    return refuse


for _opcode in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3):
    SafeUnpickler.dispatch[_opcode[0]] = _checkingTuples(
        SafeUnpickler.dispatch[_opcode[0]]
    )
SafeUnpickler.dispatch[pickle.BYTEARRAY8[0]] = _loadBytearray8
for _opcode in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
    SafeUnpickler.dispatch[_opcode[0]] = _refusing("extension code")
for _opcode in (pickle.PERSID, pickle.BINPERSID):
    SafeUnpickler.dispatch[_opcode[0]] = _refusing("persistent id")


def safeLoads(data: bytes, *, maxNesting: int = DEFAULT_MAX_NESTING) -> Any:
    """
    Unpickle C{data} from an untrusted peer.

    @raise RefusedPickleError: for anything outside plain data, too deeply nested,
        or malformed (every error the unpickler can raise is turned into this
        one, so callers need one C{except}).
    """
    try:
        obj = SafeUnpickler(io.BytesIO(data), maxNesting=maxNesting).load()
    except RefusedPickleError:
        raise
    except RecursionError:
        raise RefusedPickleError("nested too deeply") from None
    except Exception as e:
        raise RefusedPickleError(f"malformed pickle ({type(e).__name__})") from None
    checkNesting(obj, maxNesting)
    return obj
