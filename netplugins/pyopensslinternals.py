"""
The private pyOpenSSL names netplugins relies on, all here, each pinned by
C{tests/test_pyopensslinternals.py} (run it first on a new pyOpenSSL).

pyOpenSSL wraps neither OpenSSL's C{SSL_session_reused} nor a way to tell
whether two L{SSL.Session} objects are the same session, which np-ftp needs
to require that a data connection resumes its control connection's TLS
session (L{netplugins.ftp.tls.resumes}).  Both are reached through
pyOpenSSL's privates: C{Connection._ssl} (the C{SSL *}), C{Session._session}
(the C{SSL_SESSION *}) and C{OpenSSL._util.lib} (cryptography's bindings).

Nor does either wrap C{SSL_set_num_tickets} or C{SSL_CTX_set_num_tickets},
OpenSSL's way to send no TLS 1.3 session tickets, which np-ftp's data
connections need (L{netplugins.ftp.tls}) and contexts without a session
cache should use (L{netplugins.tls.server}).  cryptography's wheels link
OpenSSL statically into its C{_rust} extension without exporting it, but
keep the extension's symbol table: L{setNumTickets} finds the functions
there, checks that the table's addresses agree with those of the loaded
code (its entry point and the function cffi calls for C{SSL_new}), and
calls them with C{ctypes}.  Where that cannot be done (a stripped build,
another layout) they return C{False} and the caller falls back.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from collections.abc import Callable, Iterable
from functools import cache

from OpenSSL import SSL
from OpenSSL._util import ffi, lib


def sessionReused(connection: SSL.Connection) -> bool:
    """
    Whether C{connection}'s handshake resumed a session
    (C{SSL_session_reused}).
    """
    return bool(lib.SSL_session_reused(connection._ssl))  # type: ignore[attr-defined]


def sameSession(a: SSL.Session, b: SSL.Session) -> bool:
    """
    Whether C{a} and C{b} wrap the very same C{SSL_SESSION} (a TLS 1.2
    resumption by ID hands the cached session itself to the new connection).
    """
    return bool(a._session == b._session)  # type: ignore[attr-defined]


def setNumTickets(connection: SSL.Connection, count: int) -> bool:
    """
    Have C{connection} (a server, before its handshake) send C{count} TLS
    1.3 session tickets after its handshake (C{SSL_set_num_tickets}).

    @return: C{False} if OpenSSL's function cannot be reached here, and
        nothing was done.
    """
    setter = _function("SSL_set_num_tickets")
    if setter is None:
        return False
    return bool(setter(int(ffi.cast("uintptr_t", connection._ssl)), count))  # type: ignore[attr-defined]


def numTicketsSettable() -> bool:
    """
    Whether L{setNumTickets} and L{setContextNumTickets} work here.
    """
    return (
        _function("SSL_set_num_tickets") is not None
        and _function("SSL_CTX_set_num_tickets") is not None
    )


def setContextNumTickets(context: SSL.Context, count: int) -> bool:
    """
    Have the connections of C{context} send C{count} TLS 1.3 session
    tickets (C{SSL_CTX_set_num_tickets}); see L{setNumTickets}.
    """
    setter = _function("SSL_CTX_set_num_tickets")
    if setter is None:
        return False
    return bool(setter(int(ffi.cast("uintptr_t", context._context)), count))  # type: ignore[attr-defined]


@cache
def _function(name: str) -> Callable[[int, int], int] | None:
    """
    The OpenSSL function C{int name(void *, size_t)} that pyOpenSSL's
    OpenSSL has but does not bind, or C{None}.
    """
    from cryptography.hazmat.bindings import _rust

    path = _rust.__file__
    if path is None:
        return None
    try:
        library = ctypes.CDLL(path)
    except OSError:
        return None
    # An OpenSSL linked dynamically exports it: dlsym finds it.
    address = _exported(library, name)
    if address is None:
        names = (name, "_cffi_d_SSL_new", "PyInit__rust")
        try:
            found = _elfSymbols(path, names)
        except (OSError, ValueError, struct.error):
            return None
        exported = _exported(library, "PyInit__rust")
        if len(found) != len(names) or exported is None:
            return None
        # Where the extension was loaded, twice: from its exported entry
        # point and from what cffi calls for lib.SSL_new.  They agree only
        # if this symbol table is that of the code pyOpenSSL runs.
        base = exported - found["PyInit__rust"]
        cffi = int(ffi.cast("uintptr_t", ffi.cast("void *", lib.SSL_new)))
        if cffi - found["_cffi_d_SSL_new"] != base:
            return None
        address = base + found[name]
    return ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)(address)


def _exported(library: ctypes.CDLL, name: str) -> int | None:
    try:
        function = getattr(library, name)
    except AttributeError:
        return None
    return ctypes.cast(function, ctypes.c_void_p).value


#: ELF64 little-endian section header and symbol.
_SECTION = struct.Struct("<IIQQQQIIQQ")
_SYMBOL = struct.Struct("<IBBHQQ")
_SHT_SYMTAB = 2
#: A symbol defined by the object itself (not undefined, absolute...).
_STT_FUNC = 2


def _elfSymbols(path: str, names: Iterable[str]) -> dict[str, int]:
    """
    The addresses (relative to the load address) of the functions C{names}
    in the symbol table of the ELF64 little-endian shared object C{path}.
    """
    with (
        open(path, "rb") as f,
        mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data,
    ):
        if data[:6] != b"\x7fELF\x02\x01":
            raise ValueError("not an ELF64 little-endian object")
        (sectionsAt,) = struct.unpack_from("<Q", data, 0x28)
        size, count = struct.unpack_from("<HH", data, 0x3A)
        sections = [
            _SECTION.unpack_from(data, sectionsAt + index * size)
            for index in range(count)
        ]
        found: dict[str, int] = {}
        for section in sections:
            if section[1] != _SHT_SYMTAB:
                continue
            strings = sections[section[6]]
            table = data[strings[4] : strings[4] + strings[5]]
            wanted = {}
            for name in names:
                at = table.find(b"\0" + name.encode("ascii") + b"\0")
                if at >= 0:
                    wanted[at + 1] = name
            start, length = section[4], section[5]
            for nameAt, info, _, index, value, _ in _SYMBOL.iter_unpack(
                data[start : start + length]
            ):
                if nameAt in wanted and info & 0xF == _STT_FUNC and index and value:
                    found[wanted[nameAt]] = value
        return found
