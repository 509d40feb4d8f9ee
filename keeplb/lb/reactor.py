"""The relay's sockets: one epoll set for every relayed connection, watched by
the asyncio loop as a single reader.

Why not uvloop's transports: setting one up (accept or create_connection,
a libuv handle, a Task for the connect) costs about as much CPU as the
whole TCP handshake, which capped new connections near 0.55x of haproxy
(measured with bench/connbench.py). Here a connection is a non-blocking
socket registered in a private epoll set, and the asyncio loop sees only
that set's file descriptor: when it is readable, dispatch() handles every
ready socket in one pass. The loop keeps running timers, checks, the stats
socket and signals as before.

`Stream` offers the part of asyncio.Transport the relay uses (write,
write_eof, close, abort, pause/resume_reading, write buffer limits) and
calls a StreamProtocol with asyncio.Protocol's method names, so the session
code reads like asyncio code. One difference: data_received() is given a memoryview of a
shared read buffer, valid only during the call (a protocol that keeps the
bytes must copy them); it saves an allocation per read on the bulk path.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import select
import socket
from collections.abc import Callable
from typing import Any, Final

from keeplb.lb import fdsock

_log = logging.getLogger("keeplb.lb")

EPOLLIN: Final = select.EPOLLIN
EPOLLOUT: Final = select.EPOLLOUT
EPOLLERR: Final = select.EPOLLERR
EPOLLHUP: Final = select.EPOLLHUP
EPOLLET: Final = select.EPOLLET
EPOLLRDHUP: Final = select.EPOLLRDHUP
# Plain ints: socket's flags are IntFlag members, and `a | b` on those runs
# enum code (microseconds per connection).
MSG_MORE: Final = int(socket.MSG_MORE)
MSG_DONTWAIT: Final = int(socket.MSG_DONTWAIT)
_EAGAIN: Final = -errno.EAGAIN
_EINTR: Final = -errno.EINTR
# EPOLLRDHUP: a short read drains the data but not a FIN that came with it,
# and edge-triggered epoll reports that FIN only once.
EDGE_IN: Final = EPOLLIN | EPOLLRDHUP | EPOLLET
EDGE: Final = EDGE_IN | EPOLLOUT

# The socket calls, bound once: compiled, a call through the module attribute
# costs a dict lookup and a getattr on top of the call.
_accept: Final = fdsock.accept
_close: Final = fdsock.close
_connect: Final = fdsock.connect
_getpeername: Final = fdsock.getpeername
_getsockname: Final = fdsock.getsockname
_recv_into: Final = fdsock.recv_into
_send: Final = fdsock.send
_set_nodelay: Final = fdsock.set_nodelay
_shutdown_wr: Final = fdsock.shutdown_wr
_so_error: Final = fdsock.so_error

READ_SIZE: Final = 256 * 1024
READS_PER_EVENT: Final = 4  # then other sockets get their turn
# Zero-copy for bulk transfers (`option splice-auto/-request/-response`): a
# direction allowed to splice whose read filled the whole buffer moves on
# through a pipe with splice(2), socket -> pipe -> socket, the bytes never
# copied to Python.
PIPE_SIZE: Final = 256 * 1024  # F_SETPIPE_SZ; the kernel may give less
MAX_PIPES: Final = 1024  # pipes held at once by one process (haproxy: tune.maxpipes)
_SPLICE_FLAGS: Final = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_F_SETPIPE_SZ: Final = getattr(fcntl, "F_SETPIPE_SZ", 1031)
MAX_EVENTS: Final = 512
DEFAULT_HIGH_WATER: Final = 256 * 1024
DEFAULT_LOW_WATER: Final = 64 * 1024
# accept() errors that concern one connection only; others (EMFILE...) pause
# accepting for a moment instead of spinning on a socket that stays readable.
_ACCEPT_RETRY: Final = frozenset({-errno.ECONNABORTED, -errno.EPROTO, -errno.EPERM, -errno.EINTR})
_TRANSIENT: Final = (BlockingIOError, InterruptedError)


def os_error(neg_errno: int) -> OSError:
    """The OSError for a -errno result of keeplb.lb.fdsock."""
    err = -neg_errno
    return OSError(err, os.strerror(err))


class Watcher:
    """What the Reactor calls for a registered fd. A class (not a Protocol): compiled,
    the dispatch loop then calls its subclasses' methods directly, not by name."""

    def on_events(self, events: int) -> None:
        raise NotImplementedError

    def on_error(self, exc: BaseException) -> None:
        pass


class Reactor:
    """A private epoll set of relayed sockets, driven by one loop reader."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.epoll = select.epoll()
        self.watchers: dict[int, Watcher] = {}
        self.rbuf = bytearray(READ_SIZE)
        self.rview = memoryview(self.rbuf)
        self._later: list[tuple[Callable[[Any], None], Any]] = []
        # While a read that a FIN follows is handed over, writes are sent with
        # MSG_MORE so that the peer's data and FIN leave in one segment
        # (haproxy does the same; two packets fewer per short connection).
        self.more = 0
        self.corked: list[Stream] = []
        self.pipes = 0  # splice pipes open
        self.spliced = 0  # bytes moved by splice(2), all connections
        self._dispatching = False
        self._drain_scheduled = False
        self.closed = False
        loop.add_reader(self.epoll.fileno(), self.dispatch)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.remove_reader(self.epoll.fileno())
        except (RuntimeError, ValueError, OSError):
            pass  # the loop is already closed
        self.epoll.close()
        self.watchers.clear()

    # -- registration ---------------------------------------------------------

    def add(self, fd: int, w: Watcher, mask: int) -> None:
        self.watchers[fd] = w
        self.epoll.register(fd, mask)

    def uncork(self) -> None:
        """Push corked data that no FIN or close followed (TCP_NODELAY flushes)."""
        corked, self.corked = self.corked, []
        for st in corked:
            if not st.closed and not st.want_eof:
                _set_nodelay(st.fd)

    def forget(self, fd: int) -> None:
        """`fd` is about to be closed, which takes it out of the epoll set."""
        self.watchers.pop(fd, None)

    def remove(self, fd: int) -> None:
        if self.watchers.pop(fd, None) is not None and not self.closed:
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    # -- running ----------------------------------------------------------------

    def defer(self, cb: Callable[[Any], None], arg: Any) -> None:
        """Run cb(arg) after the current batch of events (asyncio calls
        connection_lost soon, never from inside close())."""
        self._later.append((cb, arg))
        if not self._dispatching and not self._drain_scheduled:
            self._drain_scheduled = True
            self.loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        while self._later:
            batch, self._later = self._later, []
            for cb, arg in batch:
                try:
                    cb(arg)
                except Exception:
                    _log.exception("internal error in a deferred relay callback")

    def dispatch(self) -> None:
        if self.closed:
            return
        self._dispatching = True
        try:
            try:
                ready = self.epoll.poll(0, MAX_EVENTS)
            except InterruptedError:
                return
            watchers = self.watchers
            for fd, ev in ready:
                w = watchers.get(fd)  # compiled: a native dict lookup, no bound method
                if w is None:
                    continue
                try:
                    w.on_events(ev)
                except Exception as exc:  # a bug costs one connection, not the process
                    _log.exception("internal error on a relayed connection")
                    w.on_error(exc)
        finally:
            self._dispatching = False
        if self._later:
            self._drain()


def reactor_of(loop: asyncio.AbstractEventLoop) -> Reactor:
    """The loop's Reactor, created on first use."""
    r: Reactor | None = getattr(loop, "_keeplb_reactor", None)
    if r is None or r.closed:
        r = Reactor(loop)
        loop._keeplb_reactor = r  # type: ignore[attr-defined]
    return r


class StreamProtocol:
    """What a Stream calls, named as asyncio.Protocol's methods. A class of
    its own (not asyncio.Protocol) so that compiled, these are native calls."""

    __slots__ = ()

    def connection_made(self, transport: Stream) -> None:
        pass

    def data_received(self, data: memoryview) -> None:
        """`data` is a view of the Reactor's read buffer, valid during the call."""

    def data_moved(self, n: int) -> None:
        """`n` bytes went on to the peer by splice(2), without data_received()."""

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


class Stream(Watcher):
    """A connected (or connecting) non-blocking socket with the methods of
    asyncio.Transport that the relay uses, calling a StreamProtocol.

    Registered once, edge-triggered, for both directions: no epoll_ctl per
    pause, resume or partial write (three of them per connection saved
    against level-triggered use). Edge-triggered means a readiness is
    reported once, so `readable` remembers it until a read comes back short
    (the queue was drained), and resume_reading() reads what arrived while
    paused. Closing the socket removes it from the epoll set.
    """

    __slots__ = ("reactor", "fd", "protocol", "wbuf", "high", "low", "reading",
                 "readable", "hup", "err", "out", "eof", "closing", "closed", "want_eof", "paused", "peer",
                 "on_connect", "lost", "splice_to", "pipe_r", "pipe_w", "piped", "feeder")

    def __init__(self, reactor: Reactor, fd: int,
                 protocol: StreamProtocol | None, peer: Any = None) -> None:
        self.reactor = reactor
        self.fd = fd
        self.protocol = protocol
        self.wbuf = bytearray()
        self.high = DEFAULT_HIGH_WATER
        self.low = DEFAULT_LOW_WATER
        self.reading = True  # not paused by the protocol
        self.readable = False  # data (or EOF) may be waiting: an edge not drained yet
        self.hup = False  # the peer's FIN arrived: a short read is the end
        self.err = False  # an error is pending: read on until recv() says so
        self.out = False  # EPOLLOUT is watched (while connecting or a write waits)
        self.eof = False  # the peer's FIN was read
        self.closing = False
        self.closed = False
        self.want_eof = False  # write_eof() once the buffer is sent
        self.paused = False  # pause_writing() was called
        self.peer = peer
        self.on_connect: Callable[[Stream, OSError | None], None] | None = None
        self.lost: Exception | None = None  # what connection_lost() is given
        # Splicing: where this stream's bytes may be spliced to (set by the
        # relay once both sides are connected); a destination holds the pipe
        # (its write buffer for spliced bytes) and the stream that feeds it.
        self.splice_to: Stream | None = None
        self.pipe_r = -1
        self.pipe_w = -1
        self.piped = 0  # bytes in the pipe, not yet sent
        self.feeder: Stream | None = None

    def start(self) -> None:
        """Start watching the socket (once the protocol is set). EPOLLOUT is
        only watched once a write has to wait: a writable socket would
        otherwise report one useless event right away."""
        self.out = self.on_connect is not None
        self.reactor.add(self.fd, self, EDGE if self.out else EDGE_IN)

    def read_now(self) -> None:
        """Read before the first event: a client usually sends at once, so its
        first bytes are there at accept time (haproxy reads them the same way)."""
        self._read()

    def _watch_out(self) -> None:
        self.out = True
        try:
            self.reactor.epoll.modify(self.fd, EDGE)
        except (OSError, ValueError) as exc:
            self._fatal(exc if isinstance(exc, OSError) else None)

    # -- asyncio.Transport ------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """'peername' and 'sockname' (a bare descriptor: no 'socket')."""
        if name == "peername":
            if self.peer is None and not self.closed:
                self.peer = _getpeername(self.fd)
            return self.peer if self.peer is not None else default
        if name == "sockname" and not self.closed:
            local = _getsockname(self.fd)
            return local if local is not None else default
        return default

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        if not self.reading:
            self.reading = True
            if self.readable and not self.eof and not self.closing:
                self.reactor.defer(Stream._read, self)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = DEFAULT_HIGH_WATER if high is None else high
        self.low = min(self.high, self.high // 4 if low is None else low)

    def get_write_buffer_size(self) -> int:
        return len(self.wbuf) + self.piped

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or self.want_eof:
            return  # as asyncio: writing after close() or write_eof() is dropped
        wbuf = self.wbuf
        if not wbuf and not self.piped:
            more = self.reactor.more
            if more:
                self.reactor.corked.append(self)
            n = _send(self.fd, data, more | MSG_DONTWAIT)
            if n < 0:
                if n != _EAGAIN and n != _EINTR:
                    self._fatal(os_error(n))
                    return
                n = 0
            if n == len(data):
                return
            wbuf += data[n:]  # the rest goes out on the next EPOLLOUT edge
            if not self.out:
                self._watch_out()
        else:
            wbuf += data
        if len(wbuf) > self.high and not self.paused and self.protocol is not None:
            self.paused = True
            self.protocol.pause_writing()

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def write_eof(self) -> None:
        if self.closing or self.want_eof:
            return
        self.want_eof = True
        if not self.wbuf and not self.piped:
            self._shutdown_wr()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if not self.wbuf and not self.piped:
            self._teardown(None)
        # else: _flush() tears down once the buffer is sent

    def abort(self) -> None:
        self.closing = True
        self._teardown(None)

    # -- events -------------------------------------------------------------------

    def on_events(self, ev: int) -> None:
        if self.on_connect is not None and not self._connected(ev):
            return
        if ev & EPOLLOUT and (self.wbuf or self.piped):
            self._flush()
        if self.closed:
            return
        if ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR):
            self.readable = True
            if ev & (EPOLLRDHUP | EPOLLHUP):
                self.hup = True
            if ev & EPOLLERR:
                self.err = True
            if self.reading and not self.eof and not self.closing:
                self._read()
            elif ev & EPOLLERR:
                err = _so_error(self.fd)
                if err:
                    self._fatal(os_error(-err))

    def on_error(self, exc: BaseException) -> None:
        self._teardown(exc if isinstance(exc, Exception) else None)

    def _read(self) -> None:
        if self.closed or not self.reading or self.eof:
            return
        dest = self.splice_to
        if dest is not None and dest.pipe_w >= 0:
            self._splice_in(dest)
            return
        r = self.reactor
        fd, rbuf, rview = self.fd, r.rbuf, r.rview
        proto = self.protocol
        assert proto is not None
        for _ in range(READS_PER_EVENT):
            n = _recv_into(fd, rbuf, MSG_DONTWAIT)
            if n <= 0:
                if n == _EAGAIN or n == _EINTR:
                    self.readable = False
                elif n:
                    self._fatal(os_error(n))
                else:
                    self._got_eof()
                return
            if n < READ_SIZE:
                if not self.hup:
                    self.readable = False  # a short read: the queue is drained
                    proto.data_received(rview[:n])
                    return
                # All the data, and the FIN is next: cork what this produces
                # so that the peer gets data and FIN in one segment.
                r.more = MSG_MORE
                try:
                    proto.data_received(rview[:n])
                finally:
                    r.more = 0
                if self.err:
                    continue  # let recv() report the error
                if self.closing or not self.reading:
                    if r.corked:
                        r.uncork()  # no FIN follows at once: send what was held
                    return  # the FIN is read on resume_reading()
                self._got_eof()  # drained up to the FIN: no recv() needed for it
                return
            proto.data_received(rview[:n])
            if self.closing or not self.reading:
                return
            if dest is not None and dest.open_pipe():
                self._splice_in(dest)  # a bulk transfer: zero-copy from now on
                return
        r.defer(Stream._read, self)  # more: after the others had their turn

    # -- splicing -------------------------------------------------------------

    def open_pipe(self) -> bool:
        """Start taking spliced bytes (True), if nothing waits in the write
        buffer (order) and a pipe is to be had."""
        if self.pipe_w >= 0:
            return True
        r = self.reactor
        if self.wbuf or self.closing or self.want_eof or self.closed or r.pipes >= MAX_PIPES:
            return False
        try:
            self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        r.pipes += 1
        try:
            fcntl.fcntl(self.pipe_w, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # the default 64 kB still works
        return True

    def _close_pipe(self) -> None:
        if self.pipe_w >= 0:
            os.close(self.pipe_r)
            os.close(self.pipe_w)
            self.pipe_r = self.pipe_w = -1
            self.piped = 0
            self.reactor.pipes -= 1

    def _splice_in(self, dest: Stream) -> None:
        """Move what the socket has into dest's pipe, and on to dest's socket."""
        proto = self.protocol
        assert proto is not None
        for _ in range(READS_PER_EVENT):
            if dest.piped:
                dest.feeder = self  # dest reads us again once its pipe is empty
                return
            if dest.closed or dest.pipe_w < 0:
                return
            try:
                n = os.splice(self.fd, dest.pipe_w, PIPE_SIZE, flags=_SPLICE_FLAGS)
            except _TRANSIENT:
                self.readable = False
                return
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    self.readable = False
                    return
                self._fatal(exc)
                return
            if not n:
                self._got_eof()
                return
            dest.piped += n
            self.reactor.spliced += n
            proto.data_moved(n)
            dest._flush()
            if self.closed or self.closing or not self.reading:
                return
        self.reactor.defer(Stream._read, self)

    def _flush_pipe(self) -> bool:
        """Send what the pipe holds; False if the stream failed meanwhile."""
        try:
            m = os.splice(self.pipe_r, self.fd, self.piped, flags=_SPLICE_FLAGS)
        except _TRANSIENT:
            return True
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return True
            self._fatal(exc)
            return False
        self.piped -= m
        if not self.piped and self.feeder is not None:
            feeder, self.feeder = self.feeder, None
            if feeder.readable:
                self.reactor.defer(Stream._read, feeder)
        return True

    def _got_eof(self) -> None:
        self.readable = False
        self.eof = True
        proto = self.protocol
        assert proto is not None
        if not proto.eof_received():
            self.close()
        if self.reactor.corked:
            self.reactor.uncork()

    def _flush(self) -> None:
        if self.piped:  # spliced bytes came before anything in wbuf
            if not self._flush_pipe():
                return
            if self.piped:
                if not self.out:
                    self._watch_out()
                return
        wbuf = self.wbuf
        if wbuf:
            n = _send(self.fd, wbuf, MSG_DONTWAIT)
            if n < 0:
                if n != _EAGAIN and n != _EINTR:
                    self._fatal(os_error(n))
                return
            del wbuf[:n]
        if self.paused and len(wbuf) <= self.low and self.protocol is not None:
            self.paused = False
            self.protocol.resume_writing()
            if self.closed:
                return
        if not wbuf and not self.piped:
            if self.closing:
                self._teardown(None)
            elif self.want_eof:
                self._shutdown_wr()

    def _shutdown_wr(self) -> None:
        _shutdown_wr(self.fd)  # an error: not connected any more, the read side reports it

    def _fatal(self, exc: OSError | None) -> None:
        self.closing = True
        self._teardown(exc)

    def _teardown(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = self.closing = True
        self.reactor.forget(self.fd)
        _close(self.fd)  # also takes it out of the epoll set
        self.wbuf = bytearray()
        self._close_pipe()
        self.splice_to = self.feeder = None
        cb = self.on_connect
        if cb is not None:
            self.on_connect = None
            self.reactor.defer(lambda s: cb(s, OSError(errno.ECONNABORTED,
                                                            "connection aborted")), self)
            return
        if self.protocol is not None:
            self.lost = exc
            self.reactor.defer(Stream._deliver_lost, self)

    def _deliver_lost(self) -> None:
        # Dropping the protocol breaks the stream <-> protocol cycle, so that a
        # finished connection is freed by reference counting, not by the GC.
        proto, self.protocol = self.protocol, None
        if proto is not None:
            proto.connection_lost(self.lost)

    # -- connecting -------------------------------------------------------------

    def _connected(self, ev: int) -> bool:
        """The first event of a connecting socket: True if it is connected.
        A plain EPOLLOUT means connected; only an error or hang-up needs
        SO_ERROR (a getsockopt saved per connection)."""
        cb = self.on_connect
        assert cb is not None
        self.on_connect = None
        err = 0
        if ev & (EPOLLERR | EPOLLHUP):
            err = _so_error(self.fd) or errno.ECONNREFUSED
        if err:
            self._discard()
            cb(self, os_error(-err))
            return False
        cb(self, None)
        return not self.closed

    def cancel_connect(self) -> None:
        """Give up a connect in progress, without calling its callback."""
        if self.on_connect is not None:
            self.on_connect = None
            self._discard()

    def _discard(self) -> None:
        """Close a socket that never got a protocol: nothing to tell anyone."""
        self.closed = self.closing = True
        self.reactor.forget(self.fd)
        _close(self.fd)


def open_connection(reactor: Reactor, family: int, host: str, port: int,
                    on_connect: Callable[[Stream, OSError | None], None],
                    early: bytes = b"", scope_id: int = 0) -> tuple[Stream, int]:
    """Start a non-blocking connect to a numeric address (or a path for
    AF_UNIX); on_connect(stream, None) once connected (set stream.protocol
    and call connection_made there), on_connect(stream, error) on failure.
    Raises OSError when the attempt fails at once.

    `early`: bytes to send at once. A connection to a near server is often
    established before connect() returns; if sending succeeds the stream is
    connected, on_connect is not called, and the count sent is returned
    (else -1): no wait for an EPOLLOUT event."""
    fd = _connect(family, host, port, scope_id)
    if fd < 0:
        raise os_error(fd)
    st = Stream(reactor, fd, None)
    if early:
        sent = _send(fd, early, MSG_DONTWAIT)
        # < 0: still connecting, or refused (the first event reports it)
        if sent >= 0:
            st.start()
            return st, sent
    st.on_connect = on_connect
    st.start()  # the first EPOLLOUT edge says the connect is done
    return st, -1


class Acceptor(Watcher):
    """Accepts on one listening socket; pause() leaves the socket listening, so
    further clients wait in the kernel backlog (haproxy's maxconn)."""

    def __init__(self, reactor: Reactor, sock: socket.socket,
                 on_accept: Callable[[int, Any], None],
                 on_failure: Callable[[OSError], None], batch: int = 64) -> None:
        self.reactor = reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.on_accept = on_accept
        self.on_failure = on_failure
        self.batch = batch
        self.active = False

    def start(self) -> None:
        if not self.active and not self.reactor.closed:
            self.active = True
            # Not EPOLLEXCLUSIVE: it wakes the first idle worker every time, so
            # one of nbthread workers took every connection of a slow arrival
            # (test_nbthread); woken together, they race for accept() and share
            # (no measurable cost with 2 workers: bench/lbbench.py --threads 2).
            self.reactor.add(self.fd, self, EPOLLIN)

    def pause(self) -> None:
        if self.active:
            self.active = False
            self.reactor.remove(self.fd)

    def on_error(self, exc: BaseException) -> None:
        pass

    def on_events(self, ev: int) -> None:
        lfd = self.fd
        on_accept = self.on_accept
        for _ in range(self.batch):
            if not self.active:
                return
            fd, addr = _accept(lfd)
            if fd < 0:
                if fd == _EAGAIN:
                    return
                if fd in _ACCEPT_RETRY:
                    continue
                self.pause()
                self.on_failure(os_error(fd))
                return
            on_accept(fd, addr)
