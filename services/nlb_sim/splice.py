"""Zero-copy relay for plain TCP flows: bytes move socket -> pipe -> socket with ``os.splice`` and
never enter Python (notes/performance.md: 2.3-2.7 GB/s here, on par with HAProxy's splice).

Used for flows whose listener and target group are plain TCP without PROXY v2 (the listener's
``splice_eligible``); everything else goes through ``relay.Flow``. A ``SpliceFlow`` offers the same
surface the listener needs (``target``, ``idle_check``, ``reset_both``, ``abort``) and writes the
same flow-log records.

Driving: every spliced socket is registered once, edge-triggered for reading and writing, in one
epoll set (``SplicePoller``) that the event loop watches as a single reader. No readers/writers are
added or removed per flow: that churn (uvloop poll handles: ioctl + epoll_ctl each time) cost
more than the relay itself when every flow is short (bench/nlb.py, new connections per second).
Per direction one non-blocking pipe (``PIPE_SIZE``); a readable source is spliced into the pipe, the
pipe into the destination; if the destination is full, reading stops until the destination's
next writable edge (backpressure, no buffering in Python). EOF becomes ``shutdown(SHUT_WR)`` on the
other socket once the pipe is empty; a reset on one side becomes a reset (SO_LINGER 0) on the other.
"""

from __future__ import annotations

import _socket
import functools
import asyncio
import errno
import fcntl
import os
import select
import socket
import struct
import time
from typing import Any, Callable

from .config import Target
from .idle import idle_step, peer_step
from .upstream import bind_source, describe, tcp_counters

PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031
_FLAGS = 0x01 | 0x02  # SPLICE_F_MOVE | SPLICE_F_NONBLOCK
_MAX_ROUNDS = 16  # splice rounds per readiness callback (fairness between flows)
_EDGE = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
_READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_WRITABLE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
_FAILED = select.EPOLLHUP | select.EPOLLERR
_POLL_BATCH = 256
_DRAIN = select.EPOLLRDHUP  # as an `events` argument: read until EAGAIN or EOF, whatever was read
_SMALL_READ = 16384  # a read this short, without a hang-up reported, emptied the socket (see on_readable)
_LINGER_RST = struct.pack("ii", 1, 0)
HAVE_SPLICE = hasattr(os, "splice")


def make_pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size for this user: keep the default 64 KiB
    return r, w


class PipePool:
    """Empty pipes kept for the next flows: saves pipe2 + fcntl + 2 close per direction per flow."""

    __slots__ = ("free", "limit")

    def __init__(self, limit: int = 256) -> None:
        self.free: list[tuple[int, int]] = []
        self.limit = limit

    def get(self) -> tuple[int, int]:
        return self.free.pop() if self.free else make_pipe()

    def put(self, pipe: tuple[int, int], empty: bool) -> None:
        if empty and len(self.free) < self.limit:
            self.free.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])


class SplicePoller:
    """One edge-triggered epoll set for all spliced sockets of an event loop.

    ``register(fd, handler)`` once per socket; ``forget(fd)`` before closing it (the kernel drops a
    closed socket from the set by itself, so no epoll_ctl is spent on the way out). Events already
    fetched for a socket forgotten earlier in the same batch are dropped: its number may have been
    reused by a socket registered since."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ep = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self._forgotten: set[int] = set()
        loop.add_reader(self.ep.fileno(), self._poll)

    def register(self, fd: int, handler: Callable[[int], None]) -> None:
        self.handlers[fd] = handler
        self.ep.register(fd, _EDGE)

    def forget(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            self._forgotten.add(fd)

    def _poll(self) -> None:
        forgotten = self._forgotten
        forgotten.clear()
        handlers = self.handlers
        for fd, events in self.ep.poll(0, _POLL_BATCH):
            if fd in forgotten:
                continue
            handler = handlers.get(fd)
            if handler is not None:
                handler(events)
        forgotten.clear()

    def close(self) -> None:
        self.loop.remove_reader(self.ep.fileno())
        self.ep.close()
        self.handlers.clear()


class _Direction:
    __slots__ = ("flow", "src", "dst", "src_fd", "dst_fd", "pr", "pw", "pending", "nbytes", "eof",
                 "done", "reading", "writing")

    def __init__(self, flow: SpliceFlow, src: _socket.socket, dst: _socket.socket) -> None:
        self.flow = flow
        self.src, self.dst = src, dst
        self.src_fd, self.dst_fd = src.fileno(), dst.fileno()
        self.pr, self.pw = flow.pipes.get()
        self.pending = 0  # bytes in the pipe
        self.nbytes = 0
        self.eof = False
        self.done = False
        self.reading = False
        self.writing = False

    def start(self, events: int | None) -> None:
        """Start relaying; `events`: what the source reported while the flow was connecting
        (None: nothing, its next edge will come)."""
        self.reading = True
        if events is not None:
            self.on_readable(events)

    def on_readable(self, events: int = _DRAIN) -> None:
        """Splice what the source has into the pipe and on. Edge-triggered, so normally read until
        EAGAIN; one shortcut saves that last empty read on short flows: a read shorter than
        _SMALL_READ took everything queued (the pipe, empty before it, has room for 256 buffers),
        and anything arriving later (more data, a FIN) raises a new edge, unless the hang-up was
        already reported in `events`, in which case reading goes on to the EOF."""
        if not self.reading:  # waiting for the destination, or at EOF
            return
        src_fd, pw = self.src_fd, self.pw
        drain = events & (select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR)
        try:
            for _ in range(_MAX_ROUNDS):
                n = os.splice(src_fd, pw, PIPE_SIZE, flags=_FLAGS)
                if n == 0:
                    self.eof = True
                    self.reading = False
                    break
                self.pending += n
                self.nbytes += n
                if not self._flush():
                    self.reading = False
                    self.writing = True
                    return
                if n < _SMALL_READ and not drain:
                    return
            else:  # not drained: no new edge will come for what is left, so come back soon
                self.flow.loop.call_soon(self.on_readable)
                return
        except BlockingIOError:
            pass
        except OSError as exc:
            self.flow.failed(self, exc)
            return
        if self.eof and self.pending == 0:
            self._finish_direction()

    def on_writable(self) -> None:
        if not self.writing:
            return
        try:
            if not self._flush():
                return
        except OSError as exc:
            self.flow.failed(self, exc)
            return
        self.writing = False
        if self.eof:
            self._finish_direction()
        else:
            self.reading = True
            self.on_readable()  # bytes that arrived meanwhile raised no new edge

    def _flush(self) -> bool:
        """Move the pipe into the destination; False when the destination is full."""
        dst_fd, pr = self.dst_fd, self.pr
        while self.pending:
            try:
                n = os.splice(pr, dst_fd, self.pending, flags=_FLAGS)
            except BlockingIOError:
                return False
            self.pending -= n
        return True

    def _finish_direction(self) -> None:
        if self.done:
            return
        self.done = True
        other = self.flow.down if self is self.flow.up else self.flow.up
        if other is None or not other.done:  # the last direction to end: close() sends the FIN
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self.flow.direction_done()

    def close(self) -> None:
        if self.pr < 0:
            return
        self.reading = self.writing = False
        self.flow.pipes.put((self.pr, self.pw), self.pending == 0)
        self.pr = self.pw = -1


class SpliceFlow:
    """One client connection relayed with splice. ``ctx`` is the ``ListenerRuntime``."""

    __slots__ = ("ctx", "loop", "client", "target_sock", "client_addr", "local_addr", "started",
                 "target", "source_seen", "end", "finished", "up", "down", "seen_bytes",
                 "last_active", "expired", "connecting", "pipes", "poller", "client_events", "log_fields",
                 "peer_segs", "peer_at")

    def __init__(self, ctx: Any, loop: asyncio.AbstractEventLoop, client: _socket.socket,
                 client_addr: tuple[str, int]) -> None:
        self.ctx = ctx
        self.loop = loop
        self.client = client
        self.target_sock: _socket.socket | None = None
        self.client_addr = client_addr
        self.local_addr: tuple[str, int] = ctx.listen_addr  # accepted on the node's own address
        self.started = time.monotonic()
        self.target: Target | None = None
        self.source_seen: tuple[str, int] | None = None  # the address the target sees
        self.end: str | None = None
        self.finished = False
        self.up: _Direction | None = None
        self.down: _Direction | None = None
        self.seen_bytes = 0
        self.last_active = loop.time()
        self.peer_segs: tuple[int, ...] | None = None  # both sockets' tcpi_segs_in at peer_at
        self.peer_at = 0.0
        self.expired = False
        self.connecting = True
        self.pipes: PipePool = ctx.pipes
        self.poller: SplicePoller = ctx.poller
        self.client_events: int | None = None  # edges seen on the client before the target connected
        self.log_fields: str | None = None  # the flow-log fields, fixed at the open line
        self.poller.register(client.fileno(), self._client_event)
        ctx.flow_started(self)

    # --- setup ---
    def connect(self) -> None:
        """Pick a target and start a non-blocking connect (no coroutine: this is the accept path)."""
        target = self.ctx.pick(self.client_addr, self.local_addr)
        if target is None:
            self._abort_with("error: no target in the node's Availability Zone")
            return
        self.target = target
        # The C socket type: socket.socket's Python-level wrapper costs more than the syscalls here.
        sock = _socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            source, transparent = self.ctx.bind_source(self.client_addr)
            bind_source(sock, source, transparent, defer_port=True)
            err = sock.connect_ex((target.ip, target.port))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
        except OSError as exc:
            sock.close()
            self._abort_with(f"error: connect {target.ip}:{target.port}: {describe(exc)}")
            return
        self.target_sock = sock
        # Registered after connect(): the set then reports the connection's real state, never
        # the HUP of a socket that has not started connecting.
        self.poller.register(sock.fileno(), self._target_event)
        if err == 0:  # connected at once (loopback, same host): no need to wait for writability
            self._connected(0)

    def _connected(self, events: int) -> None:
        """The connect finished; ``events``: the edge that said so (0: connect() itself did).
        Only an edge with an error or hang-up needs SO_ERROR read: a plain EPOLLOUT is success."""
        sock = self.target_sock
        assert sock is not None and self.target is not None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if events & _FAILED else 0
        if err:
            self._abort_with(f"error: connect {self.target.ip}:{self.target.port}: {os.strerror(err)}")
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.source_seen = sock.getsockname()[:2]
        self.connecting = False
        self.ctx.flowlog.opened(self, False)
        self.up = _Direction(self, self.client, sock)
        self.down = _Direction(self, sock, self.client)
        self.up.start(self.client_events)  # the client has usually sent its first bytes already
        self.down.start(events if events & _READABLE else None)

    # --- socket events (edge-triggered, from the poller) ---
    def _client_event(self, events: int) -> None:
        if self.up is None or self.down is None:
            # Still connecting: the up direction reads what came when it starts.
            self.client_events = (self.client_events or 0) | events
            return
        if events & _READABLE:
            self.up.on_readable(events)
        if events & select.EPOLLOUT:
            self.down.on_writable()

    def _target_event(self, events: int) -> None:
        if self.connecting:
            if events & _WRITABLE and not self.finished:
                self._connected(events)
            return
        if self.up is None or self.down is None:
            return
        if events & _READABLE:
            self.down.on_readable(events)
        if events & select.EPOLLOUT:
            self.up.on_writable()

    # --- events from the directions ---
    def direction_done(self) -> None:
        if self.up is not None and self.down is not None and self.up.done and self.down.done:
            self._close(rst=False)

    def failed(self, direction: _Direction, exc: OSError) -> None:
        if isinstance(exc, ConnectionResetError):
            from_client = direction is self.up
            self.ctx.metrics.inc("TCP_Client_Reset_Count" if from_client else "TCP_Target_Reset_Count")
            self.end = self.end or "rst"
        else:
            self.end = self.end or f"error: {describe(exc)}"
        self._close(rst=True)

    # --- what the listener asks for ---
    @property
    def nbytes(self) -> int:
        return (self.up.nbytes if self.up else 0) + (self.down.nbytes if self.down else 0)

    def idle_check(self, now: float, idle_timeout: float) -> bool:
        """Idle timeout (no payload and no TCP keep-alive from either side for ``idle_timeout``):
        the NLB forgets the flow (logged now); whichever socket speaks next (data or FIN) gets a
        RST, the other hears nothing until it speaks too."""
        if self.expired or self.connecting or self.finished:
            return False
        moved = self.nbytes
        spoke = False
        if moved == self.seen_bytes:  # a peer's TCP keep-alive restarts the clock too (idle)
            samples = tuple(f for f in (tcp_counters(self.client), tcp_counters(self.target_sock)) if f is not None)
            self.peer_segs, spoke = peer_step(self.peer_segs, self.peer_at, samples, now)
            self.peer_at = now
        else:
            self.peer_segs = None  # the ACKs of these bytes are not keep-alives
        self.seen_bytes, self.last_active, idle = idle_step(
            self.seen_bytes, self.last_active, moved, now, idle_timeout, spoke)
        if not idle:
            return False
        self.expired = True
        self.finished = True
        self.end = "idle timeout"
        for d in (self.up, self.down):
            if d is not None:
                d.close()
        self._log_close()
        for sock in (self.client, self.target_sock):
            if sock is not None:
                self.poller.handlers[sock.fileno()] = functools.partial(self._rst_if_readable, sock)
        return True

    def _rst_if_readable(self, sock: _socket.socket, events: int) -> None:
        if events & _READABLE:
            self._rst_speaker(sock)

    def _rst_speaker(self, sock: _socket.socket) -> None:
        self.poller.forget(sock.fileno())
        self.ctx.metrics.inc("TCP_ELB_Reset_Count")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass
        sock.close()

    def reset_both(self, why: str) -> None:
        if self.end is None:
            self.end = f"rst by nlb: {why}"
        self._close(rst=True)

    def abort(self) -> None:
        self._close(rst=True)

    # --- teardown ---
    def _abort_with(self, end: str) -> None:
        self.end = end
        self._close(rst=True)

    def _close(self, rst: bool) -> None:
        if self.finished:
            return
        self.finished = True
        for d in (self.up, self.down):
            if d is not None:
                d.close()
        for sock in (self.client, self.target_sock):
            if sock is None:
                continue
            self.poller.forget(sock.fileno())
            if rst:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                except OSError:
                    pass
            sock.close()
        self._log_close()

    def _log_close(self) -> None:
        ctx = self.ctx
        ctx.flowlog.closed(self, False, self.up.nbytes if self.up else 0,
                           self.down.nbytes if self.down else 0, ctx.listen_addr)
        ctx.flow_ended(self)
