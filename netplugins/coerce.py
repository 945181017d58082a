"""
Coercers for C{usage.Options} parameters, and L{importNamed} for the options
that name a Python object.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def choice(*values: str, name: str | None = None) -> Callable[[str], str]:
    """
    A coercer accepting exactly one of C{values}; its C{coerceDoc} lists them
    in C{--help}.

    @param name: the option, as error messages name it (C{"--mode"}).

    @raise ValueError: (from the coercer) naming the choices, which
        C{usage.Options} reports as a one-line usage error.
    """
    allowed = ", ".join(values)
    prefix = f"{name} " if name else ""

    def coerce(value: str) -> str:
        if value not in values:
            raise ValueError(f"{prefix}must be one of {allowed}, not {value!r}")
        return value

    coerce.coerceDoc = f"One of: {allowed}."  # type: ignore[attr-defined]
    return coerce


def importNamed(spec: str, option: str, what: str) -> Any:
    """
    The object C{package.module:attribute} names (the attribute may be
    dotted, C{module:app.wsgi_app}).

    @param option: the option, as error messages name it (C{"--app"}).
    @param what: what the attribute should be, as the usage error says it
        (C{"callable"}).
    @raise ValueError: with a one-line message, if C{spec} is malformed or
        names nothing importable.
    """
    moduleName, colon, attribute = spec.partition(":")
    if not colon or not moduleName or not attribute:
        raise ValueError(f"{option} wants package.module:{what}, not {spec!r}")
    try:
        found: Any = importlib.import_module(moduleName)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load {option} {spec!r}: {e}") from None
    return found


def hostPort(text: str) -> str:
    """
    Check a C{HOST:PORT} (an IPv6 host in brackets).
    """
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, not {text!r}")
    return text


def splitHostPort(text: str) -> tuple[str, int]:
    """
    C{HOST:PORT} as a (host, port) pair.
    """
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)
