"""
Coercers for C{usage.Options} parameters.
"""

from __future__ import annotations

from collections.abc import Callable


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
