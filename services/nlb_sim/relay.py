"""The byte relay: one ``Flow`` per client connection, two bare asyncio Protocols (hot path).

- Flow control: each side's transport has a write-buffer high-water mark; when it is crossed the
  transport calls ``pause_writing`` on that side's protocol, which pauses reading from the other
  side; ``resume_writing`` (drained below the low-water mark) resumes it. No per-chunk work
  beyond ``transport.write``.
- Half-close: a FIN from one side becomes ``write_eof`` on the other; the flow closes when both
  directions are done. TLS transports cannot half-close (asyncio shuts TLS down on close_notify),
  so an EOF towards a TLS side closes it (close_notify + FIN after the buffer drains).
- Resets: a side that dies with an error (RST, TLS error) gets the other side reset
  (SO_LINGER 0 + abort), so neither connection leaks.
- Seam for zero-copy: ``ClientSide``/``TargetSide`` are the only readers; a plain TCP->TCP
  listener without PROXY v2 can later hand both raw sockets to an ``os.splice`` pump instead of
  calling ``Flow.attach`` (see ``FlowContext.splice_eligible``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, Protocol as TypingProtocol

from .config import Node, Target
from .idle import idle_step, peer_step
from .proxy_v2 import encode_v2_proxy
from .upstream import connect_target, describe, keep_alive, reset, tcp_counters

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
TARGET_CONNECT_TIMEOUT = 10.0
TARGET_TLS_HANDSHAKE_TIMEOUT = 10.0
# A TLS listener that hears a TCP keep-alive from the client or the target sends its own to both,
# every 20 seconds (NLB-LB23; decisions #76).
TLS_KEEPALIVE_SECONDS = 20.0


class FlowContext(TypingProtocol):
    """What a flow needs from its listener (implemented by ``listeners.ListenerRuntime``)."""

    node: Node
    label: str  # "TLS:443"
    proxy_protocol_v2: bool
    connect_on_payload: bool  # PROXY v2 placement on_first_ack_with_payload
    target_ssl: ssl.SSLContext | None
    splice_eligible: bool
    vpce_id: str | None  # PrivateLink endpoint id for the 0xEA TLV (None: no TLV)
    keepalive_seconds: float | None  # TLS listeners: the NLB's own keep-alive interval; None: none
    metrics: Any  # metrics.Metrics

    def pick(self, client: tuple[str, int], local: tuple[str, int]) -> Target | None: ...
    def target_ssl_for(self, alpn: str | None) -> ssl.SSLContext | None: ...
    def bind_source(self, client: tuple[str, int]) -> tuple[tuple[str, int] | None, bool]: ...
    def spawn(self, coro: Any) -> asyncio.Task[None]: ...
    flowlog: Any  # flowlog.FlowLog
    listen_addr: tuple[str, int]  # the node's Elastic IP and the listener port
    def flow_started(self, flow: Flow) -> None: ...
    def flow_ended(self, flow: Flow) -> None: ...
    def tls_started(self, transport: Any) -> tuple[str | None, float | None, str | None]: ...
    def tls_ended(self, flow: Flow, duration: float, received: int, sent: int) -> None: ...


class _Half(asyncio.Protocol):
    __slots__ = ("flow", "transport", "peer", "nbytes", "read_eof", "closed", "paused_writing",
                 "lost_exc", "expired")

    def __init__(self, flow: Flow | None) -> None:
        self.flow = flow
        self.transport: Any = None
        self.peer: _Half | None = None
        self.nbytes = 0
        self.read_eof = False
        self.closed = False
        self.paused_writing = False
        self.lost_exc: BaseException | None = None
        self.expired = False  # the NLB dropped this flow (idle timeout): next packet gets a RST

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, data: bytes) -> None:
        if self.expired:
            self.flow.rst_expired(self)  # type: ignore[union-attr]
            return
        self.nbytes += len(data)
        self.peer.transport.write(data)  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        self.paused_writing = True
        peer = self.peer
        if peer is not None and not peer.closed:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused_writing = False
        peer = self.peer
        if peer is not None and not peer.closed:
            peer.transport.resume_reading()

    def eof_received(self) -> bool:
        if self.expired:
            self.flow.rst_expired(self)  # type: ignore[union-attr]
            return False
        return self.flow.on_eof(self)  # type: ignore[union-attr]

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.flow is not None:
            self.flow.on_lost(self, exc)


class TargetSide(_Half):
    __slots__ = ()


class ClientSide(_Half):
    """Accepted connection. Until the target is attached, bytes are held in ``Flow.pending``."""

    __slots__ = ("ctx",)

    def __init__(self, ctx: FlowContext) -> None:
        super().__init__(None)
        self.ctx = ctx

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.flow = Flow(self.ctx, self)

    def data_received(self, data: bytes) -> None:
        if self.expired:
            self.flow.rst_expired(self)  # type: ignore[union-attr]
            return
        self.nbytes += len(data)
        peer = self.peer
        if peer is not None:
            peer.transport.write(data)
        else:
            self.flow.early_data(data)  # type: ignore[union-attr]


class Flow:
    __slots__ = ("ctx", "client", "target_half", "client_addr", "local_addr", "started", "pending",
                 "client_eof_early", "task", "connecting", "target", "source_seen", "end",
                 "finished", "seen_bytes", "last_active", "expired", "tls", "log_fields",
                 "alpn_be", "peer_segs", "peer_at", "keepalive")

    def __init__(self, ctx: FlowContext, client: ClientSide) -> None:
        self.ctx = ctx
        self.client = client
        self.target_half: TargetSide | None = None
        peer = client.transport.get_extra_info("peername")
        local = client.transport.get_extra_info("sockname")
        self.client_addr: tuple[str, int] = (peer[0], peer[1])
        self.local_addr: tuple[str, int] = (local[0], local[1])
        self.started = time.monotonic()
        self.pending: list[bytes] = []
        self.client_eof_early = False
        self.task: asyncio.Task[None] | None = None
        self.connecting = False
        self.target: Target | None = None
        self.source_seen: tuple[str, int] | None = None  # the address the target sees
        self.log_fields: str | None = None  # the flow-log fields, fixed at the open line
        self.alpn_be: str | None = None  # ALPN protocol the TLS target selected
        self.end: str | None = None
        self.finished = False
        self.seen_bytes = 0
        self.last_active = asyncio.get_running_loop().time()
        self.peer_segs: tuple[int, ...] | None = None  # both sockets' tcpi_segs_in at peer_at
        self.peer_at = 0.0
        self.keepalive = False  # the NLB sends its own keep-alives on both sides
        self.expired = False
        # (SNI, handshake seconds, chosen certificate ARN, cipher, TLS version, ALPN)
        self.tls: tuple[str | None, float | None, str | None, str | None, str | None, str | None] | None = None
        ssl_object = client.transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            sni, handshake, cert_arn = ctx.tls_started(client.transport)
            cipher = ssl_object.cipher()
            self.tls = (sni, handshake, cert_arn, cipher[0] if cipher else None, ssl_object.version(),
                        ssl_object.selected_alpn_protocol())
        ctx.flow_started(self)
        if not ctx.connect_on_payload:
            client.transport.pause_reading()
            self._start_connect()

    # --- connecting ---
    def early_data(self, data: bytes) -> None:
        self.pending.append(data)
        self.client.transport.pause_reading()
        if self.task is None:
            self._start_connect()

    def _start_connect(self) -> None:
        self.connecting = True
        self.task = self.ctx.spawn(self._connect())

    async def _connect(self) -> None:
        ctx = self.ctx
        target = ctx.pick(self.client_addr, self.local_addr)
        if target is None:
            self._fail("error: no target in the node's Availability Zone")
            return
        self.target = target
        half = TargetSide(self)
        half.peer = self.client
        loop = asyncio.get_running_loop()
        transport: Any = None
        addr = f"{target.ip}:{target.port}"
        try:
            source, transparent = ctx.bind_source(self.client_addr)
            sock = await connect_target(loop, (target.ip, target.port), source=source,
                                        transparent=transparent, timeout=TARGET_CONNECT_TIMEOUT)
            self.source_seen = sock.getsockname()[:2]
            try:
                transport, _ = await loop.create_connection(lambda: half, sock=sock)
            except BaseException:
                sock.close()
                raise
            if ctx.proxy_protocol_v2:
                transport.write(encode_v2_proxy(self.client_addr[0], self.client_addr[1],
                                                self.local_addr[0], self.local_addr[1], ctx.vpce_id))
            target_ssl = ctx.target_ssl_for(self.tls[5] if self.tls else None)  # None: a TCP target group
            if target_ssl is not None:
                transport = await loop.start_tls(
                    transport, half, target_ssl,
                    server_hostname=None, ssl_handshake_timeout=TARGET_TLS_HANDSHAKE_TIMEOUT)
                half.transport = transport
                self.alpn_be = transport.get_extra_info("ssl_object").selected_alpn_protocol()
                transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        except asyncio.CancelledError:
            if transport is not None:
                transport.abort()
            raise
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError, RuntimeError) as exc:
            if transport is not None:
                transport.abort()
            what = "TLS handshake with" if transport is not None and ctx.target_ssl else "connect"
            self._fail(f"error: {what} {addr}: {describe(exc)}")
            return
        self.connecting = False
        self._attach(half)

    def _fail(self, end: str) -> None:
        self.connecting = False
        if self.end is None:
            self.end = end
        if not self.client.closed:
            reset(self.client.transport)  # AWS: the client sees a reset
        else:
            self._finish()

    def _attach(self, half: TargetSide) -> None:
        client = self.client
        self.target_half = half
        self.ctx.flowlog.opened(self, self.ctx.proxy_protocol_v2)
        if half.closed:  # the target went away before we were ready
            self._lost(half, half.lost_exc)
            return
        client.peer = half
        for chunk in self.pending:
            half.transport.write(chunk)
        self.pending.clear()
        if client.read_eof:
            self._send_eof(half)
        elif not half.paused_writing and not client.closed:
            client.transport.resume_reading()

    # --- relay events ---
    def on_eof(self, half: _Half) -> bool:
        half.read_eof = True
        keep_open = bool(half.transport.can_write_eof())
        if half is self.client and self.target_half is None:
            if self.connecting:
                return keep_open  # EOF is passed on once the target is attached
            return False  # no payload ever (first-ack placement): no target connection at all
        # The target side's peer is always the client (even before it is attached).
        other = self.target_half if half is self.client else half.peer
        if other is None or other.closed:
            return False
        if other.read_eof:
            half.transport.close()
            other.transport.close()
            return False
        self._send_eof(other)
        return keep_open

    @staticmethod
    def _send_eof(half: _Half) -> None:
        if half.closed:
            return
        if half.transport.can_write_eof():
            half.transport.write_eof()
        else:
            half.transport.close()

    def on_lost(self, half: _Half, exc: BaseException | None) -> None:
        if half.closed:
            return
        half.closed = True
        half.lost_exc = exc
        if half is not self.client and half is not self.target_half:
            return  # target lost during setup: _connect / _attach handle it
        self._lost(half, exc)

    def _lost(self, half: _Half, exc: BaseException | None) -> None:
        if self.expired:  # the NLB forgot this flow: nothing is passed on to the other side
            if all(h is None or h.closed for h in (self.client, self.target_half)):
                self._finish()
            return
        if isinstance(exc, ConnectionResetError):
            self.ctx.metrics.inc("TCP_Client_Reset_Count" if half is self.client
                                 else "TCP_Target_Reset_Count")
        if exc is not None and self.end is None:
            self.end = "rst" if isinstance(exc, (ConnectionResetError, BrokenPipeError)) \
                else f"error: {describe(exc)}"
        other = self.target_half if half is self.client else self.client
        if other is None:  # client gone before a target was attached
            if self.task is not None and self.connecting:
                self.task.cancel()
            self._finish()
            return
        if not other.closed:
            if exc is not None:
                reset(other.transport)
            else:
                other.transport.close()
            return
        self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.pending.clear()
        ctx = self.ctx
        received = self.client.nbytes
        sent = self.target_half.nbytes if self.target_half is not None else 0
        ctx.flowlog.closed(self, ctx.proxy_protocol_v2, received, sent, ctx.listen_addr)
        if self.tls is not None:
            ctx.tls_ended(self, time.monotonic() - self.started, received, sent)
        self.ctx.flow_ended(self)

    # --- idle timeout and resets the NLB generates ---
    def idle_check(self, now: float, idle_timeout: float) -> bool:
        """Called about once a second; True when the flow has just expired. Payload or a peer's
        TCP keep-alive since the last call restarts the clock (``idle``)."""
        if self.expired or self.target_half is None or self.connecting:
            return False
        moved = self.client.nbytes + self.target_half.nbytes
        spoke = False
        if moved == self.seen_bytes:
            spoke = self._peers_spoke(now)
        else:
            self.peer_segs = None  # the ACKs of these bytes are not keep-alives
        self.seen_bytes, self.last_active, idle = idle_step(
            self.seen_bytes, self.last_active, moved, now, idle_timeout, spoke)
        if not idle:
            return False
        self.expired = True
        self.end = "idle timeout"
        for half in (self.client, self.target_half):
            half.expired = True
            if not half.closed:
                if self.keepalive:  # the NLB forgot the flow: it sends nothing more
                    keep_alive(half.transport.get_extra_info("socket"), None)
                half.transport.resume_reading()  # so the next packet is seen (and answered by RST)
        self._finish()  # the NLB's flow ends now; the sockets stay only to answer with a RST
        return True

    def _peers_spoke(self, now: float) -> bool:
        """Whether the client or the target sent a TCP keep-alive (a segment of its own, without
        payload) since the previous look; a TLS listener then starts its own keep-alives."""
        samples = []
        halves = (self.client, self.target_half)
        for half in halves:
            fields = None if half is None or half.closed else tcp_counters(half.transport.get_extra_info("socket"))
            if fields is not None:
                samples.append(fields)
        self.peer_segs, spoke = peer_step(self.peer_segs, self.peer_at, tuple(samples), now)
        self.peer_at = now
        seconds = self.ctx.keepalive_seconds
        if spoke and seconds is not None and not self.keepalive:
            self.keepalive = True
            for half in halves:
                if half is not None and not half.closed:
                    keep_alive(half.transport.get_extra_info("socket"), seconds)
        return spoke

    def rst_expired(self, half: _Half) -> None:
        """A side spoke after the idle timeout: it gets a TCP RST; the other side hears nothing."""
        self.ctx.metrics.inc("TCP_ELB_Reset_Count")
        if not half.closed and half.transport is not None:
            reset(half.transport)

    def reset_both(self, why: str) -> None:
        """The NLB ends the flow with a RST to both sides (deregistration, unhealthy target)."""
        if self.end is None:
            self.end = f"rst by nlb: {why}"
        self.abort()

    def abort(self) -> None:
        """Shutdown: reset both sides now."""
        if self.task is not None and self.connecting:
            self.task.cancel()
        for half in (self.client, self.target_half):
            if half is not None and not half.closed and half.transport is not None:
                reset(half.transport)
