"""
The line-counter service of Foundations of Python Network Programming,
chapter 18 (C{rpyc_server.py}): the client hands over a file and a function,
and the service calls the function with each of the file's lines, then
answers how many there were.  Serve it with::

    twistd -n np-rpyc --service netplugins.examples.bookrpyc:LineCounterService

where the book's C{rpyc_client.py} connects (127.0.0.1:18861, np-rpyc's
default).  The book's service prints that it was called; this one logs it.
It reads the file and calls the function through the client's connection:
the client must allow its public attributes (the book's does,
C{allow_public_attrs}).  An empty file counts 0 lines (the book's version
fails on one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rpyc
from twisted.logger import Logger


class LineCounterService(rpyc.Service):  # type: ignore[misc]
    """
    Exposes C{line_counter(fileobj, function)}.
    """

    log = Logger()

    def exposed_line_counter(self, fileobj: Any, function: Callable[[str], Any]) -> int:
        """
        Call C{function} with each line of C{fileobj}; the number of lines.
        """
        self.log.info("Client has invoked exposed_line_counter()")
        count = 0
        for line in fileobj.readlines():
            function(line)
            count += 1
        return count
