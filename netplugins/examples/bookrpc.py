"""
The functions of Foundations of Python Network Programming's chapter 18
servers, as a registry for C{np-rpc} (and C{np-mpconn --mode rpc}):
C{addtogether}, C{quadratic} and C{remote_repr} from C{xmlrpc_server.py},
C{lengths} from C{jsonrpc_server.py}.  np-rpc serves them by default, on the
book's ports, so its C{xmlrpc_client.py}, C{xmlrpc_multicall.py},
C{xmlrpc_introspect.py} and C{jsonrpc_client.py} run unmodified::

    twistd -n np-rpc --functions netplugins.examples.bookrpc:functions

They behave as the book's do, bugs included: C{quadratic} divides by 2 then
multiplies by C{a}, as the printed formula reads, and C{remote_repr} returns
its argument rather than its C{repr()}.  The docstrings are the book's:
C{system.methodHelp} answers them.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from functools import reduce
from typing import Any


def addtogether(*things: Any) -> Any:
    """Add together everything in the list `things`."""
    return reduce(operator.add, things)


def quadratic(a: float, b: float, c: float) -> list[float]:
    """Determine `x` values satisfying: `a` * x*x + `b` * x + c == 0"""
    root = math.sqrt(b * b - 4.0 * a * c)
    return list({(-b - root) / 2.0 * a, (-b + root) / 2.0 * a})


def remote_repr(arg: Any) -> Any:
    """Return the `repr()` rendering of the supplied `arg`."""
    return arg


def lengths(*args: Any) -> list[tuple[int | None, Any]]:
    """Measure the length of each input argument.

    Given N arguments, this function returns a list of N smaller
    lists of the form [len(arg), arg] that each state the length of
    an input argument and also echo back the argument itself.

    """
    results: list[tuple[int | None, Any]] = []
    for arg in args:
        try:
            length: int | None = len(arg)
        except TypeError:
            length = None
        results.append((length, arg))
    return results


#: The registry: C{--functions netplugins.examples.bookrpc:functions}.
functions: dict[str, Callable[..., Any]] = {
    "addtogether": addtogether,
    "quadratic": quadratic,
    "remote_repr": remote_repr,
    "lengths": lengths,
}
