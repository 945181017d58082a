"""
Tests for L{netplugins.memcache} and L{netplugins.tap.memcache}: the text and
meta protocols in memory, the store's limits, the session discipline and the
command line.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from netplugins.memcache.protocol import (
    MAX_LINE,
    WRITE_BATCH,
    MemcacheFactory,
    MemcacheProtocol,
)
from netplugins.memcache.store import (
    ITEM_OVERHEAD,
    RELATIVE_MAX,
    Store,
    strtol32,
    strtoull,
)
from netplugins.tap.memcache import (
    MemcacheSettings,
    Options,
    makeService,
    memcacheService,
)
from tests.support import WatermarkTransport

#: The clock's start: a Unix time well past 30 days.
T0 = 1_800_000_000


def connect(
    store: Store | None = None,
    watermark: int | None = None,
    checkers: tuple[Any, ...] = (),
) -> tuple[MemcacheProtocol, WatermarkTransport, Clock]:
    """
    A protocol on a fresh store (or C{store}), connected to a transport.
    """
    clock = Clock()
    clock.advance(T0)
    if store is None:
        store = Store(now=T0)
    factory = MemcacheFactory(store, clock=clock, checkers=checkers)
    protocol = factory.buildProtocol(None)
    assert isinstance(protocol, MemcacheProtocol)
    transport = WatermarkTransport(watermark)
    protocol.makeConnection(transport)
    return protocol, transport, clock


def exchange(protocol: MemcacheProtocol, transport: Any, data: bytes) -> bytes:
    """
    Send C{data}, return what came back.
    """
    transport.clear()
    protocol.dataReceived(data)
    return bytes(transport.value())


class NumberTests(SynchronousTestCase):
    """
    Numbers read as memcached's C{safe_strto*} read them.
    """

    def test_strtoull(self) -> None:
        """Unsigned 64-bit: digits, signs and trailing whitespace as in C."""
        self.assertEqual(
            [
                strtoull(t)
                for t in [b"0", b"18446744073709551615", b"18446744073709551616"]
            ],
            [0, 2**64 - 1, None],
        )
        self.assertEqual(
            [strtoull(t) for t in [b"-1", b"+5", b"5\t", b"5x", b"", b"-0"]],
            [None, 5, 5, None, None, 0],
        )

    def test_strtol32(self) -> None:
        """Signed numbers are truncated to 32 bits as memcached does."""
        self.assertEqual(
            [strtol32(t) for t in [b"-1", b"4294967297", b"2147483648", b"abc"]],
            [-1, 1, -(2**31), None],
        )


class TextProtocolTests(SynchronousTestCase):
    """
    The classic commands, reply for reply as memcached 1.6.
    """

    def test_setGet(self) -> None:
        """A stored value comes back with its flags."""
        protocol, transport, _ = connect()
        self.assertEqual(
            exchange(protocol, transport, b"set a 5 0 3\r\nabc\r\nget a b\r\n"),
            b"STORED\r\nVALUE a 5 3\r\nabc\r\nEND\r\n",
        )

    def test_pipelinedOneWrite(self) -> None:
        """Replies to the commands of one read go out in one write."""
        protocol, transport, _ = connect()
        writes: list[bytes] = []
        transport.write = writes.append  # type: ignore[method-assign,assignment]
        protocol.dataReceived(b"set a 0 0 1\r\nx\r\n" + b"get a\r\n" * 50)
        self.assertEqual(len(writes), 1)
        self.assertEqual(writes[0].count(b"VALUE a 0 1\r\n"), 50)

    def test_valueSplitAcrossReads(self) -> None:
        """A data block arriving byte by byte is stored whole."""
        protocol, transport, _ = connect()
        for byte in b"set a 0 0 5\r\nhello\r\n":
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(
            exchange(protocol, transport, b"get a\r\n"),
            b"VALUE a 0 5\r\nhello\r\nEND\r\n",
        )

    def test_badDataChunk(self) -> None:
        """A value longer than announced is refused; the rest is read as
        commands."""
        protocol, transport, _ = connect()
        self.assertEqual(
            exchange(protocol, transport, b"set a 0 0 2\r\nxyz\r\nget a\r\n"),
            b"CLIENT_ERROR bad data chunk\r\nERROR\r\nEND\r\n",
        )

    def test_badLengths(self) -> None:
        """Negative and non-numeric lengths are a bad command line format."""
        protocol, transport, _ = connect()
        self.assertEqual(
            exchange(protocol, transport, b"set a 0 0 -1\r\nset a 0 0 x\r\n"),
            b"CLIENT_ERROR bad command line format\r\n" * 2,
        )

    def test_tooLargeSwallowed(self) -> None:
        """An item over the size limit is refused and its data dropped,
        however it arrives."""
        store = Store(maxItemSize=1024, now=T0)
        protocol, transport, _ = connect(store)
        protocol.dataReceived(b"set a 0 0 1\r\nx\r\n")
        out = exchange(protocol, transport, b"set a 0 0 2000\r\n" + b"g" * 1000)
        self.assertEqual(out, b"SERVER_ERROR object too large for cache\r\n")
        self.assertEqual(
            exchange(protocol, transport, b"g" * 1000 + b"\r\nget a\r\n"), b"END\r\n"
        )
        self.assertEqual(store.stats["store_too_large"], 1)

    def test_itemLimitAsMemcached(self) -> None:
        """The largest value with a 1-byte key and no flags is 1048516 bytes,
        as in memcached 1.6."""
        protocol, transport, _ = connect()
        ok = b"set a 0 0 1048516\r\n" + b"x" * 1048516 + b"\r\n"
        big = b"set a 0 0 1048517\r\n" + b"x" * 1048517 + b"\r\n"
        self.assertEqual(exchange(protocol, transport, ok), b"STORED\r\n")
        self.assertEqual(
            exchange(protocol, transport, big),
            b"SERVER_ERROR object too large for cache\r\n",
        )

    def test_keys(self) -> None:
        """A 251-byte key or one with a control character is refused; 250
        bytes are fine."""
        protocol, transport, _ = connect()
        self.assertEqual(
            exchange(protocol, transport, b"get " + b"k" * 251 + b"\r\n"),
            b"CLIENT_ERROR bad command line format\r\n",
        )
        self.assertEqual(
            exchange(protocol, transport, b"get " + b"k" * 250 + b"\r\n"), b"END\r\n"
        )
        self.assertEqual(
            exchange(protocol, transport, b"set a\x01b 0 0 1\r\nx\r\nget a\x01b\r\n"),
            b"CLIENT_ERROR bad command line format\r\n"
            b"CLIENT_ERROR bad command line format\r\n",
        )

    def test_incrWraps(self) -> None:
        """incr wraps at 2**64; decr stops at 0; a shorter result keeps the
        length, padded with spaces."""
        protocol, transport, _ = connect()
        out = exchange(
            protocol,
            transport,
            b"set n 0 0 20\r\n18446744073709551615\r\nincr n 2\r\nget n\r\n"
            b"decr n 5\r\nincr x 1\r\nset s 0 0 1\r\na\r\nincr s 1\r\n",
        )
        self.assertEqual(
            out,
            b"STORED\r\n1\r\nVALUE n 0 20\r\n1" + b" " * 19 + b"\r\nEND\r\n"
            b"0\r\nNOT_FOUND\r\nSTORED\r\n"
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        )

    def test_casAndNoreply(self) -> None:
        """cas stores only with the current CAS value; noreply silences
        results."""
        protocol, transport, _ = connect()
        out = exchange(
            protocol,
            transport,
            b"set a 0 0 1 noreply\r\nx\r\ngets a\r\ncas a 0 0 1 99\r\ny\r\n"
            b"cas a 0 0 1 1\r\nz\r\ncas q 0 0 1 1\r\nz\r\nget a\r\n",
        )
        self.assertEqual(
            out,
            b"VALUE a 0 1 1\r\nx\r\nEND\r\nEXISTS\r\nSTORED\r\nNOT_FOUND\r\n"
            b"VALUE a 0 1\r\nz\r\nEND\r\n",
        )

    def test_expiry(self) -> None:
        """TTLs up to 30 days are relative, beyond that Unix times; negative
        means expired."""
        protocol, transport, clock = connect()
        protocol.dataReceived(
            b"set r 0 10 1\r\nx\r\nset u 0 %d 1\r\nx\r\nset n 0 -1 1\r\nx\r\n"
            % (T0 + 20)
        )
        self.assertEqual(
            exchange(protocol, transport, b"get r u n\r\n"),
            b"VALUE r 0 1\r\nx\r\nVALUE u 0 1\r\nx\r\nEND\r\n",
        )
        clock.advance(10)
        self.assertEqual(
            exchange(protocol, transport, b"get r u\r\n"),
            b"VALUE u 0 1\r\nx\r\nEND\r\n",
        )
        clock.advance(10)
        self.assertEqual(exchange(protocol, transport, b"get u\r\n"), b"END\r\n")
        self.assertGreater(T0, RELATIVE_MAX)

    def test_flushAllDelay(self) -> None:
        """flush_all N invalidates what was stored before N seconds pass."""
        protocol, transport, clock = connect()
        protocol.dataReceived(b"set a 0 0 1\r\nx\r\nflush_all 5\r\n")
        self.assertEqual(
            exchange(protocol, transport, b"get a\r\n"), b"VALUE a 0 1\r\nx\r\nEND\r\n"
        )
        clock.advance(5)
        self.assertEqual(exchange(protocol, transport, b"get a\r\n"), b"END\r\n")

    def test_errors(self) -> None:
        """Unknown commands and wrong arity answer ERROR; quit closes."""
        protocol, transport, _ = connect()
        self.assertEqual(
            exchange(protocol, transport, b"bogus\r\n\r\nGET a\r\nset a 0\r\n"),
            b"ERROR\r\n" * 4,
        )
        self.assertEqual(exchange(protocol, transport, b"quit\r\nget a\r\n"), b"")
        self.assertTrue(transport.disconnecting)

    def test_stats(self) -> None:
        """stats, stats settings/items/slabs answer STAT lines and END."""
        protocol, transport, _ = connect()
        protocol.dataReceived(b"set a 0 0 1\r\nx\r\nget a\r\n")
        out = exchange(protocol, transport, b"stats\r\n")
        self.assertIn(b"STAT get_hits 1\r\n", out)
        self.assertIn(b"STAT curr_items 1\r\n", out)
        self.assertTrue(out.endswith(b"END\r\n"))
        self.assertIn(
            b"STAT item_size_max 1048576\r\n",
            exchange(protocol, transport, b"stats settings\r\n"),
        )
        self.assertIn(
            b"STAT items:1:number 1\r\n",
            exchange(protocol, transport, b"stats items\r\n"),
        )
        self.assertEqual(exchange(protocol, transport, b"stats nope\r\n"), b"ERROR\r\n")


#: Steps of a script (bytes sent, or seconds the clock moves) whose commands
#: the fast path answers, and every way it must hand one to the general path.
FAST_SCRIPT: tuple[bytes | int, ...] = (
    b"get a\r\nmg a v\r\nmn\r\nset a 0 0 3\r\nabc\r\nget a\r\nmg a v\r\n",
    b"set b 7 10 2\r\nhi\r\nset c 0 %d 1\r\nx\r\nget b\r\nmg b v\r\n" % (T0 + 5),
    b"set n 0 -1 1\r\nx\r\nget n\r\nmg n v\r\n",
    6,
    b"get c\r\nmg c v\r\n",
    5,
    b"mg b v\r\nget b\r\n",
    # Bad keys, odd spacing, NUL, empty keys, uppercase: the general path's.
    b"get " + b"k" * 251 + b"\r\nmg " + b"k" * 251 + b" v\r\nget a\x01\r\n",
    b"get  a\r\nmg  a v\r\nget a\x00junk\r\nget \r\nmg  v\r\nGET a\r\n",
    b" get a\r\nget a\rb\r\nget a\r\r\nget a\n\n",
    b"set a:\xff 0 0 1\r\nx\r\nget a:\xff\r\nmg a:\xff v\r\nmg a:\x01 v\r\n",
    b"set a\x7f 0 0 1\r\nx\r\nmg a\x7f v\r\nset " + b"s" * 251 + b" 0 0 1\r\nx\r\n",
    # Sets the general path answers: bad chunk, noreply, too large, bad key.
    b"set d 0 0 2\r\nxyz\r\nset d 0 0 1 noreply\r\nq\r\nget d\r\n",
    b"set e 0 0 2000\r\n" + b"e" * 2002 + b"set f\x02 0 0 1\r\nx\r\n",
    b"set g 0 0 0\r\n\r\nset h 1 0 3\r\nabc\r\nget g\r\nget h\r\nmg h v\r\n",
    b"set 0 0 1\r\nx\r\nset i 0 0 01\r\ny\r\nset j 0 0 1\r\nzz",
    b"\r\nget j\r\nset k 00 00 2\r\nkk\r\nget k\r\n",
    # Stale items and the win token, a flush.
    b"md a I\r\nmg a v\r\nmg a v\r\nget a\r\nmg a v c\r\n",
    b"flush_all\r\nget b\r\nmg h v\r\nset b 0 0 1\r\n2\r\nget b\r\n",
    b"mn\r\nmn x\r\nstats detail dump\r\n",
    # A win token handed by recache (R) to an item that is not stale.
    b"set r 0 20 1\r\nr\r\nmg r v R30\r\nmg r v\r\nget r\r\n",
    # Access times move once a minute.
    b"set t 0 0 1\r\nt\r\nset u 0 0 1\r\nu\r\n",
    61,
    b"mg t v\r\nget u\r\nmg u v\r\nget t\r\n",
)


class FastPathTests(SynchronousTestCase):
    """
    The loop answering the commonest commands answers them as the general
    path does.
    """

    def script(
        self, fast: bool, byByte: bool
    ) -> tuple[bytes, dict[str, int], list[Any]]:
        store = Store(maxItemSize=1024, now=T0)
        protocol, transport, clock = connect(store)
        if not fast:
            protocol._fast = lambda buf, pos, out: pos  # type: ignore[method-assign]
        for step in FAST_SCRIPT:
            if isinstance(step, int):
                clock.advance(step)
            elif byByte:
                for byte in step:
                    protocol.dataReceived(bytes([byte]))
            else:
                protocol.dataReceived(step)
        items = [
            (it.key, it.data, it.flags, it.exptime, it.cas, it.time, it.fetched)
            for it in store.items.values()
        ]
        return bytes(transport.value()), dict(store.stats), items

    def test_sameAsGeneralPath(self) -> None:
        """Replies, counters and items (in LRU order) are the general path's,
        whole or byte by byte."""
        general = self.script(False, False)
        self.assertIn(b"VA 3 X W\r\nabc\r\n", general[0])
        self.assertEqual(self.script(True, False), general)
        self.assertEqual(self.script(True, True), general)
        self.assertEqual(self.script(False, True), general)

    def test_writeBatches(self) -> None:
        """Pipelined gets of large values are written in batches of
        WRITE_BATCH bytes, as by the general path."""
        sizes = []
        for fast in (False, True):
            protocol, transport, _ = connect(Store(now=T0))
            if not fast:
                protocol._fast = lambda buf, pos, out: pos  # type: ignore[method-assign]
            protocol.dataReceived(b"set a 0 0 20000\r\n" + b"x" * 20000 + b"\r\n")
            transport.clear()
            writes: list[int] = []
            sizes.append(writes)

            def write(data: bytes, writes: list[int] = writes) -> None:
                writes.append(len(data))

            transport.write = write  # type: ignore[method-assign]
            protocol.dataReceived(b"mg a v\r\nget a\r\n" * 10 + b"mn\r\n" * 600)
        self.assertEqual(sizes[0], sizes[1])
        self.assertGreater(len(sizes[0]), 1)


class MetaProtocolTests(SynchronousTestCase):
    """
    The meta commands and their flags.
    """

    def test_msMg(self) -> None:
        """ms stores with flags and TTL; mg returns the fields asked for, in
        order, with the opaque."""
        protocol, transport, _ = connect()
        out = exchange(
            protocol,
            transport,
            b"ms a 2 T0 F5 c k O9\r\nhi\r\nmg a v f s t O1 k\r\nmg zz v q\r\nmn\r\n",
        )
        self.assertEqual(
            out,
            b"HD c1 ka O9\r\nVA 2 f5 s2 t-1 O1 ka\r\nhi\r\nMN\r\n",
        )

    def test_base64Keys(self) -> None:
        """A base64 key is decoded, and k returns it encoded with b."""
        protocol, transport, _ = connect()
        out = exchange(
            protocol, transport, b"ms AAE= 1 b\r\nx\r\nmg AAE= b k v\r\nmg !! b\r\n"
        )
        self.assertEqual(
            out,
            b"HD\r\nVA 1 kAAE= b\r\nx\r\nCLIENT_ERROR error decoding key\r\n",
        )

    def test_staleWhileRevalidate(self) -> None:
        """md I marks an item stale: the first mg wins (W) the refresh, the
        next sees Z; an ms with I and an older CAS stays stale."""
        protocol, transport, _ = connect()
        out = exchange(
            protocol,
            transport,
            b"ms s 3 T100\r\nold\r\nmd s I T30\r\nmg s v c\r\nmg s v\r\n"
            b"ms s 3 C1 I\r\nnew\r\nmg s v\r\n",
        )
        self.assertEqual(
            out,
            b"HD\r\nHD\r\nVA 3 c2 X W\r\nold\r\nVA 3 Z X\r\nold\r\n"
            b"HD\r\nVA 3 Z X\r\nnew\r\n",
        )

    def test_vivifyAndArithmetic(self) -> None:
        """mg N creates a missing item and wins; ma counts, vivifies with J."""
        protocol, transport, _ = connect()
        out = exchange(
            protocol,
            transport,
            b"mg v N30 t\r\nmg v N30\r\nma c\r\nma c N0 J10 v\r\nma c MD D3 v\r\n"
            b"md c q\r\nmd c\r\nmx\r\n",
        )
        self.assertEqual(
            out,
            b"HD t30 W\r\nHD Z\r\nNF\r\nVA 2\r\n10\r\nVA 1\r\n7\r\nNF\r\nERROR\r\n",
        )

    def test_flagErrors(self) -> None:
        """Bad flags get memcached's errors; an ms refused has its data
        dropped."""
        protocol, transport, _ = connect()
        out = exchange(
            protocol,
            transport,
            b"mg a zz\r\nmg a v v\r\nmg a T\r\nms a 2 MX\r\nhi\r\nmd a zz\r\nmn\r\n",
        )
        self.assertEqual(
            out,
            b"CLIENT_ERROR invalid flag\r\nCLIENT_ERROR duplicate flag\r\n"
            b"CLIENT_ERROR bad token in command line format\r\n"
            b"CLIENT_ERROR invalid mode for ms M token\r\n"
            b"CLIENT_ERROR invalid or duplicate flag\r\nMN\r\n",
        )


class StoreTests(SynchronousTestCase):
    """
    The byte-accounted LRU.
    """

    def test_evictsLeastRecentlyUsed(self) -> None:
        """Beyond the memory limit the least recently used items go, counted."""
        store = Store(memoryLimit=10 * (ITEM_OVERHEAD + 110), now=T0)
        protocol, transport, _ = connect(store)
        value = b"v" * 100
        for i in range(10):
            protocol.dataReceived(b"set k%d 0 0 100\r\n%s\r\n" % (i, value))
        protocol.dataReceived(b"get k0\r\n")
        for i in range(10, 15):
            protocol.dataReceived(b"set k%d 0 0 100\r\n%s\r\n" % (i, value))
        self.assertLessEqual(store.used, store.memoryLimit)
        self.assertEqual(store.stats["evictions"], 5)
        self.assertIn(b"k0", store.items)
        self.assertNotIn(b"k1", store.items)
        stats = exchange(protocol, transport, b"stats\r\n")
        self.assertIn(b"STAT evictions 5\r\n", stats)


class SessionTests(SynchronousTestCase):
    """
    The session discipline: bounded reading, line limit, authentication.
    """

    def test_neverReadingStopsReading(self) -> None:
        """A client that pipelines gets and never reads stops being read."""
        protocol, transport, _ = connect(watermark=64 * 1024)
        protocol.dataReceived(b"set a 0 0 10000\r\n" + b"x" * 10000 + b"\r\n")
        protocol.dataReceived(b"get a\r\n" * 10000)
        self.assertTrue(transport.producerPaused)
        self.assertLess(len(transport.value()), 64 * 1024 + WRITE_BATCH + 20000)
        transport.drain()
        self.assertTrue(transport.producerPaused)
        for _ in range(2000):
            if not transport.producerPaused:
                break
            transport.drain()
        self.assertFalse(transport.producerPaused)

    def test_multiGetWaitsForReader(self) -> None:
        """A multi-get of large values stops between values while the client
        does not read, and its answer ends whole and in order once it does."""
        protocol, transport, _ = connect(watermark=64 * 1024)
        value = b"y" * 50_000
        for i in range(4):
            protocol.dataReceived(b"set k%d 0 0 50000\r\n%s\r\n" % (i, value))
        transport.drain()
        keys = b" ".join(b"k%d" % (i % 4) for i in range(40))
        protocol.dataReceived(b"get " + keys + b"\r\nmn\r\n")
        self.assertTrue(transport.producerPaused)
        self.assertLess(len(transport.value()), 64 * 1024 + WRITE_BATCH + 50_100)
        received = b""
        for _ in range(100):
            received += transport.drain()
            if received.endswith(b"MN\r\n"):
                break
        expected = b"".join(
            b"VALUE k%d 0 50000\r\n%s\r\n" % (i % 4, value) for i in range(40)
        )
        self.assertEqual(received, expected + b"END\r\nMN\r\n")

    def test_longLineCloses(self) -> None:
        """A command line with no newline after 2048 bytes closes the
        connection; a long get line is allowed."""
        protocol, transport, _ = connect()
        protocol.dataReceived(b"get " + b"k " * 2000)
        self.assertFalse(transport.disconnecting)
        protocol, transport, _ = connect()
        protocol.dataReceived(b"x" * (MAX_LINE + 1))
        self.assertTrue(transport.disconnecting)
        protocol, transport, _ = connect()
        protocol.dataReceived(b"x" * 1000)
        protocol.dataReceived(b"x" * 4096)
        self.assertTrue(transport.disconnecting)

    def test_asciiAuth(self) -> None:
        """With checkers, only the authentication set is taken first."""
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        protocol, transport, clock = connect(checkers=(checker,))
        self.assertEqual(
            exchange(protocol, transport, b"get a\r\nset a 0 0 9\r\nalice bad\r\n"),
            b"CLIENT_ERROR unauthenticated\r\nCLIENT_ERROR authentication failure\r\n",
        )
        transport.clear()
        protocol.dataReceived(b"set a 0 0 12\r\nalice secret\r\nget a\r\n")
        self.assertEqual(transport.value(), b"")
        clock.advance(60)
        self.assertEqual(transport.value(), b"STORED\r\nEND\r\n")


class CorkTests(SynchronousTestCase):
    """
    With C{cork}, as the service runs it, a read's replies are written when
    the reactor iteration ends, in order with everything else written.
    """

    def corked(
        self, count: int = 1, watermark: int | None = None
    ) -> tuple[list[MemcacheProtocol], list[WatermarkTransport], Clock]:
        clock = Clock()
        clock.advance(T0)
        factory = MemcacheFactory(Store(now=T0), clock=clock)
        factory.cork = True
        # Another connection, idle: one alone is answered at once.
        factory.connectionOpened()
        protocols, transports = [], []
        for _ in range(count):
            protocol = factory.buildProtocol(None)
            assert isinstance(protocol, MemcacheProtocol)
            transport = WatermarkTransport(watermark)
            protocol.makeConnection(transport)
            protocols.append(protocol)
            transports.append(transport)
        return protocols, transports, clock

    def test_writtenWhenIterationEnds(self) -> None:
        """Replies to several connections' reads wait for the end of the
        iteration, then go out in one write each."""
        protocols, transports, clock = self.corked(2)
        writes: list[bytes] = []
        for protocol, transport in zip(protocols, transports, strict=True):
            transport.write = writes.append  # type: ignore[method-assign,assignment]
            protocol.dataReceived(b"set a 0 0 1\r\nx\r\n")
            protocol.dataReceived(b"get a\r\nmn\r\n")
        self.assertEqual(writes, [])
        clock.advance(0)
        reply = b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\nMN\r\n"
        self.assertEqual(writes, [reply, reply])
        clock.advance(0)
        self.assertEqual(len(writes), 2)

    def test_aloneWritesAtOnce(self) -> None:
        """A connection alone is answered at once."""
        [protocol], [transport], _ = self.corked()
        protocol.factory.connectionClosed()
        self.assertEqual(exchange(protocol, transport, b"mn\r\n"), b"MN\r\n")

    def test_orderKept(self) -> None:
        """A batch written at once, a login's answer and a close first write
        what is held."""
        [protocol], [transport], clock = self.corked()
        big = b"b" * WRITE_BATCH
        protocol.dataReceived(b"set b 0 0 %d\r\n%s\r\n" % (len(big), big))
        protocol.dataReceived(b"get nope\r\nmg b v\r\nmn\r\n")
        self.assertEqual(
            transport.value(), b"STORED\r\nEND\r\nVA %d\r\n%s\r\n" % (len(big), big)
        )
        clock.advance(0)
        self.assertTrue(transport.value().endswith(b"\r\nMN\r\n"))
        transport.clear()
        protocol.dataReceived(b"get nope\r\nquit\r\n")
        self.assertEqual(transport.value(), b"END\r\n")
        self.assertTrue(transport.disconnecting)

    def test_lostConnectionDropsHeld(self) -> None:
        """What a lost connection held is not written."""
        [protocol], [transport], clock = self.corked()
        protocol.dataReceived(b"mn\r\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        clock.advance(0)
        self.assertEqual(transport.value(), b"")

    def test_neverReadingStopsReading(self) -> None:
        """A client that pipelines gets and never reads stops being read."""
        [protocol], [transport], clock = self.corked(watermark=64 * 1024)
        protocol.dataReceived(b"set a 0 0 10000\r\n" + b"x" * 10000 + b"\r\n")
        protocol.dataReceived(b"get a\r\n" * 10000)
        clock.advance(0)
        self.assertTrue(transport.producerPaused)
        self.assertLess(len(transport.value()), 64 * 1024 + WRITE_BATCH + 20000)


class OptionsTests(SynchronousTestCase):
    """
    The command line and keyword twin.
    """

    def test_options(self) -> None:
        """--memory-limit and --max-item-size reach the settings."""
        options = Options()
        options.parseOptions(["--memory-limit", "1000000", "--max-item-size", "2048"])
        self.assertEqual(
            (options.settings.memoryLimit, options.settings.maxItemSize),
            (1000000, 2048),
        )

    def test_workersRefused(self) -> None:
        """--workers 2 is refused, saying why."""
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--workers", "2"]
        )
        self.assertIn("would hold a different cache", str(error))

    def test_udpRefused(self) -> None:
        """No UDP listener, from the command line or the keyword twin."""
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--listen", "udp:11211"]
        )
        self.assertIn("does not speak UDP", str(error))
        self.assertRaises(
            ValueError,
            memcacheService,
            MemcacheSettings(listen=("udp:11211",)),
            reactor=MemoryReactorClock(),
        )

    def test_plaintextAuthRefused(self) -> None:
        """--auth over a cleartext listener is refused unless allowed."""
        error = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--auth", "memory:a:b"]
        )
        self.assertIn("--allow-plaintext-auth", str(error))
        options = Options()
        options.parseOptions(["--auth", "memory:a:b", "--allow-plaintext-auth"])
        self.assertTrue(options.settings.allowPlaintextAuth)

    def test_makeService(self) -> None:
        """The service listens on the default port."""
        reactor = MemoryReactorClock()
        options = Options()
        options.parseOptions([])
        makeService(options, reactor=reactor).startService()
        self.assertEqual(reactor.tcpServers[0][0], 11211)
        service = memcacheService(
            MemcacheSettings(listen=("tcp:0",), memoryLimit=5000), reactor=reactor
        )
        self.assertIsNotNone(service)
