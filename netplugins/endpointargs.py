"""
Endpoint description strings put back together.
"""

from __future__ import annotations

from collections.abc import Mapping


def unparse(args: tuple[object, ...], kwargs: Mapping[str, object]) -> str:
    """
    The endpoint description left once a wrapping endpoint (C{hmac:},
    C{nptls:}) has taken its own keywords out, quoted again so that
    C{serverFromString} reads the same arguments back.
    """
    # Twisted's haproxy parser has the same helper, in a private module.
    from twisted.internet.endpoints import quoteStringArgument

    return ":".join(
        [quoteStringArgument(str(arg)) for arg in args]
        + [
            f"{quoteStringArgument(str(key))}={quoteStringArgument(str(value))}"
            for key, value in kwargs.items()
        ]
    )
