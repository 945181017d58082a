# -*- test-case-name: tests.test_twistedinternals -*-
"""
Every private Twisted name netplugins relies on, in one place.

Twisted's compatibility policy covers its public API only: an underscore name,
a private module or a name-mangled attribute may change in any release without
a deprecation.  netplugins needs a few of them to do what the public API
cannot (write-through transports, the lean reactor, HTTP limits Twisted lacks,
TLS handshake deadlines).  Each is reached here, and only here, under a
documented public name whose docstring says what it is, why netplugins needs
it and what breaks if it goes.  C{tests/test_twistedinternals.py} pins each
one (existence, signature where netplugins overrides, the behaviour relied
on), and its failures name the private and the Twisted version.  C{setup.cfg}
claims only the Twisted releases those tests passed on: to move its bound, run
them on the new release and route or replace whatever they report.

Methods overridden in subclasses cannot be reached through a function, so the
two classes here (L{ChunkedDecoder}, L{HookedHTTPChannel}) turn Twisted's
private hook methods into public ones that netplugins overrides instead.

Twisted conch's are in L{netplugins.twistedinternals.conch}, imported by
np-ssh alone: C{twisted.conch.ssh.userauth} installs the default reactor.

One reliance is not a name and stays where it is:
C{netplugins/cred/aio.py} calls C{super(AsyncioSelectorReactor, self).crash()},
skipping the asyncio reactor's own C{crash}; it relies on that class's place
in the reactor's MRO.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import _newtls, abstract, posixbase, tcp, unix
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IPushProducer
from twisted.protocols.basic import IntNStringReceiver, LineReceiver
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web import http

# Streams and transports: twisted.internet.abstract, tcp, unix, _newtls.

#: C{twisted.internet.abstract._dataMustBeBytes}: raises C{TypeError("Data
#: must be bytes")} for anything but C{bytes}.  The write-through transports
#: check their data with it so that a wrong type fails exactly as on Twisted's
#: transports.  If it goes, this module no longer imports: write the two-line
#: check here instead.
dataMustBeBytes = abstract._dataMustBeBytes


def outputIdle(transport: abstract.FileDescriptor) -> bool:
    """
    Whether a stream transport (a L{tcp.Connection} or L{unix.Server}) is
    open for writing with nothing waiting in Twisted's write buffers.

    Reads C{FileDescriptor._tempDataLen} (bytes queued by C{write} since the
    last C{doWrite}) and C{dataBuffer}, C{FileDescriptor._writeDisconnected}
    (the write side was shut down) and C{tcp._AbortingMixin._aborting}
    (C{abortConnection} was called).  The write-through transports send at
    once only when this is true; if Twisted renames or stops maintaining these
    attributes, bytes could be sent ahead of buffered ones (reordering) or
    after a close, so the tests check each one.
    """
    t: Any = transport
    return not (t._tempDataLen or t.dataBuffer or t._writeDisconnected or t._aborting)


def writesShut(transport: abstract.FileDescriptor) -> bool:
    """
    Whether writes to a stream transport are to be dropped: its write side
    was shut down (C{FileDescriptor._writeDisconnected}) or it is being
    aborted (C{tcp._AbortingMixin._aborting}).

    Twisted's own C{write} drops data after a half-close; the write-through
    transports also drop it while aborting, rather than buffer it and ask the
    reactor for a write event on a connection about to go.
    """
    t: Any = transport
    return bool(t._writeDisconnected or t._aborting)


def queuedFileDescriptors(transport: unix.Server) -> int:
    """
    How many file descriptors a UNIX transport has queued by
    C{sendFileDescriptor} and not sent yet (C{unix._SendmsgMixin._sendmsgQueue}).

    The write-through UNIX transport keeps Twisted's buffered path while any
    wait, because a descriptor travels with the next byte written after it;
    without this, bytes written after C{sendFileDescriptor} could leave
    without their descriptor.
    """
    return len(transport._sendmsgQueue)  # type: ignore[attr-defined]


#: C{twisted.internet._newtls.startTLS(transport, contextFactory, normal,
#: bypass)}: puts a C{TLSMemoryBIOProtocol} between a connection and its
#: protocol, sets C{transport.TLS} and makes C{transport.protocol} the TLS
#: protocol (so C{transport.write} must go to C{transport.protocol.write}), and
#: has the TLS layer send its records through C{bypass}, a class whose
#: L{TLS_BYPASS_METHODS} are called with the transport first.  The
#: write-through transports call it with a bypass that sends at once; Twisted's
#: public C{startTLS} would send every TLS record through the reactor's buffer.
#: If it goes, C{startTLS} on the write-through transports breaks (STARTTLS in
#: np-smtp, np-imap, np-pop3).
startTLSWithBypass = _newtls.startTLS

#: The methods C{_newtls._BypassTLS} forwards to the C{bypass} class given to
#: L{startTLSWithBypass}: a bypass class must provide each, taking the
#: transport as first argument.  Should a Twisted release forward another
#: one, the write-through bypass would lack it and TLS on those transports
#: would fail with C{AttributeError}; the tests compare this set with
#: C{_BypassTLS}'s.
TLS_BYPASS_METHODS = frozenset(
    [
        "write",
        "writeSequence",
        "loseConnection",
        "registerProducer",
        "unregisterProducer",
    ]
)


def setReusePort(port: tcp.Port) -> None:
    """
    Make a TCP port bind with C{SO_REUSEPORT} (C{tcp.Port._reusePort}, which
    C{createInternetSocket} reads), so that several worker processes listen
    on one address; without it C{--workers} fails with C{EADDRINUSE}.
    (Twisted 26.10's C{tcp.makeBinding(reusePort=True)} sets it too when
    given as a port's number, but is documented for client bindings only.)
    """
    port._reusePort = True  # type: ignore[attr-defined]


def markPortTLS(port: tcp.Port) -> None:
    """
    Have a TCP port call itself C{TLS} in its log lines (C{tcp.Port._type}),
    as Twisted's C{listenSSL} does for the ports it makes; only log lines
    depend on it.
    """
    port._type = "TLS"


def tcpPortFromDescriptor(
    portClass: type[tcp.Port],
    reactor: Any,
    fileDescriptor: int,
    addressFamily: int,
    factory: IProtocolFactory,
) -> tcp.Port:
    """
    A C{portClass} (a L{tcp.Port} subclass) listening on an inherited,
    listening, non-blocking socket, not yet started: Twisted's
    C{tcp.Port._fromListeningDescriptor}, what C{reactor.adoptStreamPort}
    calls.  The descriptor is duplicated.  The write-through transports adopt
    C{systemd:} sockets with it; without it those listeners fail.
    """
    return portClass._fromListeningDescriptor(  # type: ignore[no-any-return]
        reactor, fileDescriptor, addressFamily, factory
    )


def unixPortFromDescriptor(
    portClass: type[unix.Port],
    reactor: Any,
    fileDescriptor: int,
    factory: IProtocolFactory,
) -> unix.Port:
    """
    As L{tcpPortFromDescriptor}, for a L{unix.Port} subclass
    (C{unix.Port._fromListeningDescriptor}, which takes no address family).
    """
    return portClass._fromListeningDescriptor(  # type: ignore[no-any-return]
        reactor, fileDescriptor, factory
    )


# The lean epoll reactor: twisted.internet.epollreactor, posixbase.


def epollOf(reactor: Any) -> Any:
    """
    An C{EPollReactor}'s C{select.epoll} object (C{EPollReactor._poller}).
    The lean reactor's C{doPoll} replaces Twisted's and polls it itself;
    without it that reactor cannot run.
    """
    return reactor._poller


def selectablesOf(reactor: Any) -> dict[int, Any]:
    """
    An C{EPollReactor}'s map of file descriptor to selectable
    (C{EPollReactor._selectables}), which the lean reactor's C{doPoll}
    dispatches events through; without it that reactor cannot run.
    """
    return reactor._selectables  # type: ignore[no-any-return]


def doReadOrWrite(reactor: Any, selectable: Any, fd: int, event: int) -> None:
    """
    Serve one poll event as Twisted's poll-like reactors do
    (C{posixbase._PollLikeMixin._doReadOrWrite}): hang-ups, writes, errors
    logged and turned into disconnection.  The lean reactor inlines only the
    plain read event and hands every other one to this.
    """
    reactor._doReadOrWrite(selectable, fd, event)


def disconnectSelectable(reactor: Any, selectable: Any, why: Any, isRead: bool) -> None:
    """
    Disconnect C{selectable} for the reason C{why} returned by (or raised
    from) its C{doRead}, with half-close support
    (C{posixbase._DisconnectSelectableMixin._disconnectSelectable}).  The
    lean reactor's inlined read path ends connections through it, as
    C{_doReadOrWrite} does.
    """
    reactor._disconnectSelectable(selectable, why, isRead)


#: C{twisted.internet.posixbase._NO_FILEDESC}: the
#: C{ConnectionFdescWentAway} a reactor disconnects a selectable with when its
#: C{fileno()} is -1.  The lean reactor's inlined read path uses the same one,
#: so that protocols see the same reason as on Twisted's reactor.
NO_FILE_DESCRIPTOR = posixbase._NO_FILEDESC


# TLS: twisted.protocols.tls.


def tlsHandshakeDone(candidate: object) -> bool | None:
    """
    Whether the TLS handshake of C{candidate} (a C{TLSMemoryBIOProtocol})
    has finished (C{TLSMemoryBIOProtocol._handshakeDone}), or C{None} when
    C{candidate} is no TLS protocol.

    Twisted tells only the wrapped protocol, and only if it provides
    C{IHandshakeListener}, that a handshake finished; the handshake deadlines
    (implicit TLS and STARTTLS) and the sessions' write gate need to know from
    outside.  If it goes, every handshake looks unfinished: the deadlines
    abort good connections.
    """
    done = getattr(candidate, "_handshakeDone", None)
    return None if done is None else bool(done)


def tlsFailure(protocol: Any) -> Failure | None:
    """
    The failure (an C{OpenSSL.SSL.Error}, usually) that ended a
    C{TLSMemoryBIOProtocol}'s connection, kept until its C{connectionLost}
    runs (C{TLSMemoryBIOProtocol._reason}); C{None} if none.

    Read from an overriding C{connectionLost} before Twisted's, to log why a
    handshake failed (OpenSSL's reason, not "connection lost").  If it goes,
    those log lines lose their reason.
    """
    return protocol._reason  # type: ignore[no-any-return]


# HTTP: twisted.web.http, twisted.protocols.basic.

#: C{twisted.web.http._MalformedChunkedDataError}: what a chunked decoder
#: raises for a malformed body; C{HTTPChannel} answers it with
#: C{_respondToBadRequestAndDisconnect} (L{HookedHTTPChannel.badRequest}).
#: L{ChunkedDecoder} hooks raise it for what Twisted accepts but RFC 9112
#: does not.
MalformedChunkedData = http._MalformedChunkedDataError


class ChunkedDecoder(http._ChunkedTransferDecoder):  # type: ignore[misc]
    """
    Twisted's decoder for C{Transfer-Encoding: chunked} request bodies
    (C{twisted.web.http._ChunkedTransferDecoder(dataCallback,
    finishCallback)}), with two public hooks over its private state methods
    C{_dataReceived_CHUNK_LENGTH} and C{_dataReceived_TRAILER}.

    The hardened HTTP channel installs a subclass through
    L{setTransferDecoder} to refuse a chunk whose size passes the body limit
    before reading it, and bare LF in trailers.  If those methods go or
    change, the hooks stop being called: the tests say so.
    """

    def chunkSizeReceived(self, size: int) -> None:
        """
        Called with each chunk's size (0 for the last) once its size line is
        parsed, before any of its data; raise to refuse the body
        (L{MalformedChunkedData} for a 400).
        """

    def trailerDataReceived(self, buffered: bytearray) -> None:
        """
        Called before Twisted looks for the end of a trailer line, with what
        is buffered from the start of that line (the final empty line
        included): the decoder's own buffer, not a copy (trailers arrive a
        byte at a time from a slow peer), so read it without changing it.
        Raise to refuse the body.
        """

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        done: bool = super()._dataReceived_CHUNK_LENGTH()
        if done:
            self.chunkSizeReceived(self.length)
        return done

    def _dataReceived_TRAILER(self) -> bool:
        self.trailerDataReceived(self._buffer)
        return super()._dataReceived_TRAILER()  # type: ignore[no-any-return]


class HookedHTTPChannel(http.HTTPChannel):
    """
    Twisted's C{HTTPChannel}, with two of its private methods turned into
    public hooks: C{_maybeChooseTransferDecoder} (L{chooseTransferDecoder})
    and C{_respondToBadRequestAndDisconnect} (L{badRequest}).

    The hardened channel overrides them to refuse transfer codings RFC 9112
    no longer knows, to put its own chunked decoder in place, and to answer a
    malformed request with its own 400 and deadline.  If Twisted stops calling
    them, those refusals go back to Twisted's behaviour: the tests say so.
    """

    def chooseTransferDecoder(self, header: bytes, value: bytes) -> bool:
        """
        Called for every request header, its name canonicalized
        (C{b"Transfer-Encoding"}): choose the body decoder when it is
        C{Content-Length} or C{Transfer-Encoding}.  Return C{False} to stop
        the request (after answering it).  Twisted's choice by default.
        """
        return http.HTTPChannel._maybeChooseTransferDecoder(  # type: ignore[no-any-return]
            self, header, value
        )

    def badRequest(self) -> None:
        """
        Called when Twisted finds the request malformed (a bad request line,
        header, length or chunk).  Twisted's bare 400 and close by default.
        """
        http.HTTPChannel._respondToBadRequestAndDisconnect(self)

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        return self.chooseTransferDecoder(header, data)

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.badRequest()


def inRequestLine(channel: http.HTTPChannel) -> bool:
    """
    Whether an C{HTTPChannel} is waiting for a request line (rather than
    reading headers): C{HTTPChannel.__first_line}, name-mangled to
    C{_HTTPChannel__first_line}.  The hardened channel tells 414 from 431 and
    starts its header deadline with it; if it goes, every request fails with
    C{AttributeError}.
    """
    return bool(channel._HTTPChannel__first_line)  # type: ignore[attr-defined]


def requestVersion(channel: http.HTTPChannel) -> bytes:
    """
    The HTTP version of the request whose headers an C{HTTPChannel} is
    reading (C{HTTPChannel._version}, set from the request line and deleted
    when the request is handed over).  Read in C{allHeadersReceived} to
    require C{Host} on HTTP/1.1.
    """
    return channel._version  # type: ignore[attr-defined,no-any-return]


def receivedHeaderSize(channel: http.HTTPChannel) -> int:
    """
    The bytes of request line and headers an C{HTTPChannel} has counted so
    far for the current request (C{HTTPChannel._receivedHeaderSize}), checked
    before each line to answer 431 rather than Twisted's 400.
    """
    return channel._receivedHeaderSize  # type: ignore[no-any-return]


def transferDecoder(channel: http.HTTPChannel) -> Any:
    """
    The body decoder an C{HTTPChannel} chose for the current request, or
    C{None} (C{HTTPChannel._transferDecoder}).
    """
    return channel._transferDecoder  # type: ignore[attr-defined]


def setTransferDecoder(channel: http.HTTPChannel, decoder: Any) -> None:
    """
    Replace the body decoder an C{HTTPChannel} chose
    (C{HTTPChannel._transferDecoder}): the hardened channel puts its limited
    L{ChunkedDecoder} in place of Twisted's.  If Twisted stops reading the
    attribute, chunked bodies escape the body limit: the tests say so.
    """
    channel._transferDecoder = decoder  # type: ignore[attr-defined]


def networkProducer(channel: http.HTTPChannel) -> IPushProducer:
    """
    What an C{HTTPChannel} pauses to stop reading from the network
    (C{HTTPChannel._networkProducer}: the transport, or a stand-in).  The
    hardened channel pauses it while a pipelined request waits for the
    output to drain; Twisted resumes it when the next request is handled.
    """
    return channel._networkProducer  # type: ignore[attr-defined,no-any-return]


def lineBuffer(receiver: LineReceiver) -> bytes:
    """
    The bytes a C{LineReceiver} holds after its last complete line
    (C{LineReceiver._buffer}); Twisted's C{clearLineBuffer} empties it,
    nothing reads it.  The hardened HTTP channel looks in it for a bare LF
    and for the start of a request head.
    """
    return receiver._buffer  # type: ignore[attr-defined,no-any-return]


def setLineBuffer(receiver: LineReceiver, data: bytes) -> None:
    """
    Put C{data} back as what a C{LineReceiver} holds after its last complete
    line (C{LineReceiver._buffer}), to be parsed when it next reads.  np-smtp
    hands back the bytes that followed a message's terminating dot, once the
    message is delivered; the public C{setLineMode(extra)} would parse them at
    once, before the delivery's answer.
    """
    receiver._buffer = data  # type: ignore[attr-defined]


def coerceDoc(options: usage.Options, name: str) -> str | None:
    """
    The text C{usage.Options} appends to parameter C{name}'s help for its
    coercer (from C{usage.Options._dispatch}, which maps names to their
    handlers), or C{None}: the plugins' C{--help} tidies the sentence before
    it.
    """
    dispatch = options._dispatch.get(name)  # type: ignore[attr-defined]
    if isinstance(dispatch, usage.CoerceParameter) and dispatch.doc:
        return str(dispatch.doc)
    return None


def raiseListenFailures(service: StreamServerEndpointService) -> None:
    """
    Make C{service} raise from C{privilegedStartService} when it cannot
    listen (C{StreamServerEndpointService._raiseSynchronously}), so that
    C{twistd} stops with the error instead of logging it and running on
    without the port.
    """
    service._raiseSynchronously = True


def whenListening(service: StreamServerEndpointService) -> Deferred[Any]:
    """
    The Deferred that fires with C{service}'s listening port once it listens
    (C{StreamServerEndpointService._waitingForPort}, set by
    C{privilegedStartService}); the listening log line and C{listeningPorts}
    read the port from it.
    """
    waiting = service._waitingForPort
    assert waiting is not None, "privilegedStartService has not run"
    return waiting


def requestDisconnected(request: http.Request) -> bool:
    """
    Whether the connection of a C{Request} was lost before it finished
    (C{Request._disconnected}).  A response computed off the request's
    thread of events (a thread, a database) is dropped when it is true:
    writing to such a request raises.
    """
    return bool(request._disconnected)


def discardUnparsed(receiver: IntNStringReceiver) -> None:
    """
    Drop the bytes an C{IntNStringReceiver} has received but not parsed
    (C{IntNStringReceiver._unprocessed}).  np-echo's block framing calls it
    on a refused length prefix: a later C{resumeProducing} would otherwise
    parse the same prefix again and refuse it twice.
    """
    receiver._unprocessed = b""


# WSGI: twisted.web.wsgi.


def wsgiResponse(reactor: Any, threadpool: Any, application: Any, request: Any) -> Any:
    """
    Twisted's driver of one WSGI call (C{twisted.web.wsgi._WSGIResponse}):
    its C{environ} is the request's PEP 3333 environment, C{start()} runs the
    application in C{threadpool}.  np-wsgi makes it itself, as
    C{WSGIResource.render} does, to add C{REMOTE_USER} and
    C{wsgi.input_terminated} to the environment before the application runs;
    without it np-wsgi serves nothing.
    """
    from twisted.web.wsgi import _WSGIResponse

    return _WSGIResponse(reactor, threadpool, application, request)


# Datagrams: twisted.internet.udp.


def datagramSender(transport: object) -> Callable[[bytes, Any], Any] | None:
    """
    The C{sendto} of a listening UDP port's socket (C{udp.Port.socket}, an
    attribute no interface declares), or C{None} for any other transport.
    np-dns answers each query to the address C{recvfrom} gave it, so it
    skips C{udp.Port.write}'s checks that the address is an IP address of
    the port's family (more than half the cost of a C{write}); if the
    attribute goes, np-dns writes through C{transport.write} again, slower.
    """
    from twisted.internet import udp

    if not isinstance(transport, udp.Port):
        return None
    sock = getattr(transport, "socket", None)
    return None if sock is None else sock.sendto  # type: ignore[no-any-return]
