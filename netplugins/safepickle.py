"""
Unpickling data from peers that are not trusted: plain data only.

C{pickle.loads} runs whatever a pickle names, so a peer that can send one can
run code (C{os.system}, C{builtins.eval}, ...).  L{safeLoads} refuses every
global except the few plain data types in L{ALLOWED_GLOBALS}; containers,
strings, bytes, numbers, C{None} and booleans have opcodes of their own and need
no global at all.  There is no wildcard: allowing all of C{builtins} would allow
C{eval}, C{getattr} and C{__import__}, which is the whole attack.

Three more traps are closed:

  - The C unpickler grows its memo to twice the largest index a C{PUT} names,
    and clears every slot: a 7-byte pickle naming index 2**31 touches 32 GiB.
    The pure-Python unpickler keeps its memo in a dict, so L{SafeUnpickler}
    builds on it.
  - Hashing a tuple recurses into its items without a recursion check, so a dict
    key nested 10**6 tuples deep crashes the interpreter while the pickle is
    still being read.  Tuples are checked for depth as they are built, and the
    finished object for nesting of any container (cycles count as too deep).
  - A memo reference is a pointer: 30 levels of tuples each holding the level
    below twice is a few hundred bytes, yet hashing it (as a dict key, a set
    member, or by whoever uses the result) walks 2**30 items, since tuples do
    not cache their hash.  So the work a pickle causes is bounded: every
    reference to a tuple counts the tuple's full size, every constructor call
    the items and characters it reads, and the finished object the size it has
    when walked as a tree.  Beyond L{DEFAULT_MAX_EXPANSION} objects more than
    the pickle has bytes (which no pickle without shared parts can reach), it
    is refused.  Integers of more than L{MAX_INT_BITS} bits are refused as
    constructor arguments: C{Decimal} converts them in quadratic time.
"""

from __future__ import annotations

import datetime
import decimal
import io
import pickle
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

DEFAULT_MAX_NESTING = 100
#: How many objects more than its length in bytes a pickle may expand to.
DEFAULT_MAX_EXPANSION = 2**20
#: The size of the integers Python converts to and from text (4300 digits).
MAX_INT_BITS = 14_285


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


def checkNesting(obj: Any, maxNesting: int, maxSize: int | None = None) -> None:
    """
    Refuse C{obj} if containers nest more than C{maxNesting} deep in it or,
    given C{maxSize}, if walking it as a tree (each shared part walked again
    wherever it is referred to, as hashing, printing or encoding it do) meets
    more than C{maxSize} objects.

    Iterative, so a deep object cannot exhaust the stack here; shared parts are
    measured once, so the cost stays linear even when a pickle's memo makes a
    structure exponentially large to walk naively.

    @raise RefusedPickleError: when too deep, cyclic or too large.
    """
    if not isinstance(obj, _CONTAINERS):
        return
    # id -> (height, size as a tree) of each container measured.
    measured: dict[int, tuple[int, int]] = {}
    # Each frame: the container, its remaining children, the tallest child so
    # far, its size so far.
    frames: list[list[Any]] = [[obj, _children(obj), 0, 1]]
    onPath = {id(obj)}
    keepAlive = [obj]
    while frames:
        frame = frames[-1]
        for child in frame[1]:
            if not isinstance(child, _CONTAINERS):
                frame[3] += 1
                continue
            known = measured.get(id(child))
            if known is not None:
                frame[2] = max(frame[2], known[0])
                frame[3] += known[1]
                if maxSize is not None and frame[3] > maxSize:
                    raise RefusedPickleError(f"expands to more than {maxSize} objects")
                continue
            if id(child) in onPath or len(frames) >= maxNesting:
                raise RefusedPickleError(f"nested more than {maxNesting} deep")
            frames.append([child, _children(child), 0, 1])
            onPath.add(id(child))
            keepAlive.append(child)
            break
        else:
            frames.pop()
            onPath.discard(id(frame[0]))
            height, size = frame[2] + 1, frame[3]
            if maxSize is not None and size > maxSize:
                raise RefusedPickleError(f"expands to more than {maxSize} objects")
            measured[id(frame[0])] = (height, size)
            if frames:
                frames[-1][2] = max(frames[-1][2], height)
                frames[-1][3] += size
    if measured[id(obj)][0] > maxNesting:
        raise RefusedPickleError(f"nested more than {maxNesting} deep")


class SafeUnpickler(pickle._Unpickler):
    """
    An unpickler for peer data: L{ALLOWED_GLOBALS} only, no persistent IDs, no
    extension registry, tuples at most C{maxNesting} deep, and at most
    C{maxWork} objects hashed, copied or read by constructors (see the module
    docstring for how they are counted).
    """

    dispatch: ClassVar[dict[int, Callable[..., None]]] = dict(
        pickle._Unpickler.dispatch  # type: ignore[attr-defined]
    )

    def __init__(
        self,
        file: Any,
        *,
        maxNesting: int = DEFAULT_MAX_NESTING,
        maxWork: int = DEFAULT_MAX_EXPANSION,
    ) -> None:
        super().__init__(file)
        self.maxNesting = maxNesting
        self.maxWork = maxWork
        self._work = 0
        # id -> (tuple, depth, size as a tree); the tuple is kept so that its
        # id is not reused.
        self._tuples: dict[int, tuple[tuple[Any, ...], int, int]] = {}

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

    def charge(self, work: int) -> None:
        """
        Count C{work} more objects against C{maxWork}.

        @raise RefusedPickleError: once past it.
        """
        self._work += work
        if self._work > self.maxWork:
            raise RefusedPickleError(f"expands to more than {self.maxWork} objects")

    def treeSize(self, obj: Any) -> int:
        """
        How many items hashing C{obj} walks: a tuple's size as a tree (up to
        its first unhashable item), 1 for anything else.
        """
        known = self._tuples.get(id(obj))
        return 1 if known is None else known[2]

    def chargeArguments(self, arguments: Iterable[Any]) -> None:
        """
        Count what a constructor called with C{arguments} reads: the characters
        of strings, the items of containers (C{set} and C{frozenset} hash each),
        tuples as trees.

        @raise RefusedPickleError: past C{maxWork}, or for a huge integer.
        """
        for argument in arguments:
            if type(argument) is int and argument.bit_length() > MAX_INT_BITS:
                raise RefusedPickleError(
                    f"refused an integer argument over {MAX_INT_BITS} bits"
                )
            if isinstance(argument, str | bytes | bytearray):
                self.charge(1 + len(argument))
            elif isinstance(argument, list | set | frozenset | dict):
                self.charge(1)
                for item in argument:
                    self.charge(self.treeSize(item))
            else:
                self.charge(self.treeSize(argument))

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        # INST and OBJ, the protocol 0 and 1 calls.
        self.chargeArguments(args)
        super()._instantiate(klass, args)  # type: ignore[misc]

    def _checkTuple(self) -> None:
        built = self.stack[-1]  # type: ignore[attr-defined]
        depth = 1
        size = 1
        for item in built:
            known = self._tuples.get(id(item))
            if known is None:
                size += 1
            else:
                depth = max(depth, 1 + known[1])
                size += known[2]
            if type(item) is tuple:
                depth = max(depth, 2)
        if depth > self.maxNesting:
            raise RefusedPickleError(f"tuples nested more than {self.maxNesting} deep")
        self._tuples[id(built)] = (built, depth, size)


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


def _chargingReferences(load: Callable[[SafeUnpickler], None]) -> Callable[..., None]:
    # A memo reference or a DUP pushes an object again: a tuple counts its
    # whole tree once more, as hashing it would walk it again.
    def loadAndCharge(self: SafeUnpickler) -> None:
        load(self)
        self.charge(self.treeSize(self.stack[-1]))  # type: ignore[attr-defined]

    return loadAndCharge


def _chargingCalls(
    load: Callable[[SafeUnpickler], None], argumentSlots: int
) -> Callable[..., None]:
    # REDUCE and NEWOBJ take the arguments from the top of the stack,
    # NEWOBJ_EX its keyword arguments from there and the positional ones
    # below.
    def loadAndCharge(self: SafeUnpickler) -> None:
        stack = self.stack  # type: ignore[attr-defined]
        for slot in stack[-argumentSlots:]:
            self.chargeArguments(slot.values() if isinstance(slot, dict) else slot)
        load(self)

    return loadAndCharge


def _refusing(what: str) -> Callable[..., None]:
    def refuse(self: SafeUnpickler) -> None:
        raise RefusedPickleError(f"refused {what}")

    return refuse


for _opcode in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3):
    SafeUnpickler.dispatch[_opcode[0]] = _checkingTuples(
        SafeUnpickler.dispatch[_opcode[0]]
    )
for _opcode in (pickle.GET, pickle.BINGET, pickle.LONG_BINGET, pickle.DUP):
    SafeUnpickler.dispatch[_opcode[0]] = _chargingReferences(
        SafeUnpickler.dispatch[_opcode[0]]
    )
for _opcode, _slots in ((pickle.REDUCE, 1), (pickle.NEWOBJ, 1), (pickle.NEWOBJ_EX, 2)):
    SafeUnpickler.dispatch[_opcode[0]] = _chargingCalls(
        SafeUnpickler.dispatch[_opcode[0]], _slots
    )
SafeUnpickler.dispatch[pickle.BYTEARRAY8[0]] = _loadBytearray8
for _opcode in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
    SafeUnpickler.dispatch[_opcode[0]] = _refusing("extension code")
for _opcode in (pickle.PERSID, pickle.BINPERSID):
    SafeUnpickler.dispatch[_opcode[0]] = _refusing("persistent id")


def safeLoads(
    data: bytes,
    *,
    maxNesting: int = DEFAULT_MAX_NESTING,
    maxExpansion: int = DEFAULT_MAX_EXPANSION,
) -> Any:
    """
    Unpickle C{data} from an untrusted peer.

    @param maxExpansion: how many objects more than C{len(data)} the result
        may have when walked as a tree, and loading it may hash or read.
    @raise RefusedPickleError: for anything outside plain data, too deeply
        nested, expanding too far, or malformed (every error the unpickler can
        raise is turned into this one, so callers need one C{except}).
    """
    limit = len(data) + maxExpansion
    try:
        obj = SafeUnpickler(
            io.BytesIO(data), maxNesting=maxNesting, maxWork=limit
        ).load()
    except RefusedPickleError:
        raise
    except RecursionError:
        raise RefusedPickleError("nested too deeply") from None
    except Exception as e:
        raise RefusedPickleError(f"malformed pickle ({type(e).__name__})") from None
    checkNesting(obj, maxNesting, limit)
    return obj
