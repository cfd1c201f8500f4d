"""Connections from the ALB to its targets: a keep-alive pool of bare asyncio Protocols.

HTTPS to targets does not verify certificates (like AWS). A connection serves one request at a
time; when the response is complete and both sides allow keep-alive it goes back to the pool
(LIFO, so the warmest connection is reused first) and is closed after the idle timeout.
Errors are reported as `UpstreamError` with the status the ALB answers (502/504).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Callable, ClassVar

import httptools

from .limits import MAX_RESPONSE_HEADERS, TARGET_CONNECT_TIMEOUT

PoolKey = tuple[str, int, bool]  # (ip, port, tls)


class UpstreamError(Exception):
    """A target failure; `status` is what the ALB answers if no response was relayed yet."""

    def __init__(self, kind: str, status: int, detail: str = "", *, retryable: bool = False) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.status = status
        self.retryable = retryable  # nothing was received: a fresh connection may succeed


class ResponseSink(asyncio.Protocol):
    """Where a target's response goes: the base class of the ALB's client sides (frontend.FrontEnd,
    whose subclasses are server.py's HTTP/1.1 connection and h2front.py's HTTP/2 stream). A base
    class here rather than a typing.Protocol: the compiled build then calls these methods directly
    (decisions.md #57) instead of looking them up by name on every response."""

    def on_upstream_interim(self, status: int, text: bytes) -> None:
        raise NotImplementedError

    def on_upstream_head(self, status: int, text: bytes, headers: list[tuple[bytes, bytes]],
                         content_length: bytes | None, chunked: bool) -> None:
        raise NotImplementedError

    def on_upstream_body(self, data: bytes) -> None:
        raise NotImplementedError

    def on_upstream_data_end(self) -> None:
        raise NotImplementedError

    def on_upstream_complete(self, reusable: bool) -> None:
        raise NotImplementedError

    def on_upstream_error(self, error: UpstreamError) -> None:
        raise NotImplementedError

    def on_upstream_pause_writing(self) -> None:
        raise NotImplementedError

    def on_upstream_resume_writing(self) -> None:
        raise NotImplementedError


def client_tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: "UpstreamPool", key: PoolKey) -> None:
        self.pool = pool
        self.key = key
        self.loop = pool.loop
        self.now: Callable[[], float] = self.loop.time  # bound once: called on every response
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.handler: ResponseSink | None = None  # the client side the response goes to
        self.closed = False
        self.last_activity = 0.0
        self.idle_since = 0.0
        self.reading_paused = False
        self._reset_message()

    def _reset_message(self) -> None:
        self._status_text = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._head_seen = False
        self._interim = False
        self._keep_alive = False
        self._framed = False
        self._head_only = False
        self._received_any = False

    # --- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transports are not subclasses
        self.pool.live.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.now()
        if self.handler is None:
            self.close()  # unsolicited bytes on an idle connection: never reuse it
            return
        self._received_any = True
        try:
            self.parser.feed_data(data)
            handler = self.current_handler()  # the parser's callbacks may have finished the response
            if handler is not None:
                handler.on_upstream_data_end()
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, UpstreamError) else
                       UpstreamError("bad_response", 502, f"callback error: {cause!r}"))
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:  # Upgrade is no subclass
            self._fail(UpstreamError("bad_response", 502, repr(exc)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        self.pool.live.discard(self)
        if self.handler is None:
            return
        if self._head_seen and not self._framed and not self._interim:
            self._complete(reusable=False)  # close-delimited body ends here
            return
        detail = f"target closed the connection ({exc!r})" if exc else "target closed the connection"
        self._fail(UpstreamError("reset", 502, detail, retryable=not self._received_any))

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.on_upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.on_upstream_resume_writing()

    # --- httptools callbacks ----------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self._status_text += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_RESPONSE_HEADERS:
            raise UpstreamError("bad_response", 502, "response header larger than 32K")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self._keep_alive = self.parser.should_keep_alive()  # only valid in this callback
        handler = self.handler
        assert handler is not None
        if not 100 <= status <= 599:  # llhttp takes any three digits (decisions.md #59)
            raise UpstreamError("bad_response", 502, f"status code {status:03d} is outside 100-599")
        content_length = None
        chunked = False
        framed = False
        for name, value in self._headers:
            lname = name.lower()
            if lname == b"content-length":
                content_length = value.strip()
            elif lname == b"transfer-encoding":
                framed = True
                chunked = chunked or b"chunked" in value.lower()
        if status < 200:
            if status == 101:  # the ALB drops Upgrade (hop-by-hop): there is nothing to switch to
                raise UpstreamError("bad_response", 502, "101 Switching Protocols to a request without Upgrade")
            if framed or content_length is not None:  # llhttp would read a body into it (decisions.md #59)
                raise UpstreamError("bad_response", 502, f"{status} interim response with Content-Length or "
                                    "Transfer-Encoding")
            self._interim = True
            handler.on_upstream_interim(status, self._status_text)
            return
        self._framed = chunked or content_length is not None or status in (204, 304) or self._head_only
        self._head_seen = True
        handler.on_upstream_head(status, self._status_text, self._headers, content_length, chunked)
        if self._head_only and self.current_handler() is not None:
            # httptools cannot be told a HEAD response has no body: finish here, never reuse.
            self._complete(reusable=False)

    def on_body(self, body: bytes) -> None:
        if self._interim:  # a 1xx has no content: never relay bytes as if it had
            raise UpstreamError("bad_response", 502, "body bytes in an interim (1xx) response")
        if self.handler is not None:
            self.handler.on_upstream_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._reset_message()
            self._received_any = True
            return
        if self.handler is not None:
            self._complete(reusable=self._keep_alive)

    # --- used by the ALB request path ------------------------------------------------
    def current_handler(self) -> ResponseSink | None:
        """`self.handler` read afresh. After a call that may have changed it, use this: the compiled
        build keeps mypy's narrowing of `self.handler` across calls and would reject a None."""
        return self.handler

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def start(self, handler: ResponseSink, head: bytes, *, head_only: bool, now: float) -> None:
        assert self.transport is not None
        self.handler = handler
        self._reset_message()
        self._head_only = head_only
        self.last_activity = now  # the pool's sweep times the response out from here
        self.transport.write(head)

    def send_body(self, data: bytes, chunked: bool) -> None:
        if self.transport is None or self.closed or not data:
            return
        if chunked:
            self.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.transport.write(data)

    def send_body_end(self, chunked: bool) -> None:
        if chunked and self.transport is not None and not self.closed:
            self.transport.write(b"0\r\n\r\n")

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.handler = None
        if self.transport is not None and not self.closed:
            self.transport.abort()

    # --- internals ----------------------------------------------------------------------
    def _complete(self, reusable: bool) -> None:
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.on_upstream_complete(reusable)  # pool.release checks the transport

    def _fail(self, error: UpstreamError) -> None:
        handler, self.handler = self.handler, None
        self.close()
        if handler is not None:
            handler.on_upstream_error(error)

    def check_timeout(self, now: float) -> None:
        """Called by the pool's sweep: a request waiting longer than the idle timeout fails (504)."""
        if self.handler is not None and now - self.last_activity >= self.pool.idle_timeout:
            self._fail(UpstreamError("response_timeout", 504, "no response within the idle timeout"))


class UpstreamPool:
    """One ALB node's connections to targets: idle keep-alive connections per (ip, port, tls),
    all made from `source` (the node's address; None: the kernel's choice)."""

    MAX_IDLE_PER_KEY: ClassVar[int] = 256
    # One periodic sweep times out waiting requests and closes idle connections: a timer per
    # request cost more CPU than the whole rest of the relay (measured with bench/alb.py).
    SWEEP_SECONDS: ClassVar[float] = 0.5

    def __init__(self, loop: asyncio.AbstractEventLoop, idle_timeout: float,
                 connect_timeout: float = TARGET_CONNECT_TIMEOUT, *, source: str | None = None) -> None:
        self.loop = loop
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.tls = client_tls_context()
        self.idle: dict[PoolKey, deque[UpstreamConnection]] = {}
        self.opened = 0  # connections opened so far (for tests and the admin API)
        self._tasks: set[asyncio.Task[None]] = set()
        self.local_addr = (source, 0) if source else None
        self.retired = False  # the node's address is about to disappear: never reuse a connection
        self.live: set[UpstreamConnection] = set()
        self._sweeper = loop.call_later(self.SWEEP_SECONDS, self._sweep)

    def take_idle(self, key: PoolKey) -> UpstreamConnection | None:
        """The most recently released usable connection for `key`, if any."""
        conns = self.idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.usable:
                return conn
        return None

    def connect(self, key: PoolKey, on_ready: Callable[[UpstreamConnection], None],
                on_error: Callable[[UpstreamError], None]) -> None:
        """Open a new connection; later call `on_ready(conn)` or `on_error(error)`."""
        task = self.loop.create_task(self._connect(key, on_ready, on_error))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, key: PoolKey, on_ready: Callable[[UpstreamConnection], None],
                       on_error: Callable[[UpstreamError], None]) -> None:
        ip, port, tls = key
        try:
            _, conn = await asyncio.wait_for(self.loop.create_connection(
                lambda: UpstreamConnection(self, key), ip, port,
                ssl=self.tls if tls else None, server_hostname="" if tls else None,
                ssl_handshake_timeout=self.connect_timeout if tls else None,
                local_addr=self.local_addr), self.connect_timeout)
        except asyncio.TimeoutError:
            on_error(UpstreamError("connect_timeout", 504, f"connect to {ip}:{port} not done within "
                                   f"{self.connect_timeout:g} s"))
            return
        except ssl.SSLError as exc:
            on_error(UpstreamError("tls", 502, f"TLS handshake with {ip}:{port} failed: {exc}"))
            return
        except OSError as exc:
            on_error(UpstreamError("connect", 502, f"connect to {ip}:{port} failed: {exc.strerror or exc}"))
            return
        self.opened += 1
        on_ready(conn)

    def release(self, conn: UpstreamConnection) -> None:
        if not conn.usable:
            return
        if conn.reading_paused:  # paused for a slow client while the rest of its response was already read
            conn.resume_reading()
        if self.retired:
            conn.close()
            return
        conns = self.idle.get(conn.key)
        if conns is None:
            conns = self.idle[conn.key] = deque()
        if len(conns) >= self.MAX_IDLE_PER_KEY:
            conn.close()
            return
        # A connection that carried a response is released as its last bytes arrived.
        conn.idle_since = conn.last_activity if conn.last_activity else self.loop.time()
        conns.append(conn)

    def retire(self) -> int:
        """The node is going away: idle connections close now, busy ones when released.
        Returns how many are still busy."""
        self.retired = True
        for conns in self.idle.values():
            for conn in list(conns):
                conn.close()
            conns.clear()
        return sum(1 for c in self.live if not c.closed)

    def fail_requests_to(self, ip: str, port: int, error: UpstreamError) -> None:
        """Every request waiting on a connection to (ip, port) fails with `error` (its connection closes)."""
        for conn in [c for c in self.live if c.handler is not None and c.key[0] == ip and c.key[1] == port]:
            conn._fail(error)

    def forget(self, conn: UpstreamConnection) -> None:
        conns = self.idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)

    def _sweep(self) -> None:
        now = self.loop.time()
        self._sweeper = self.loop.call_at(now + self.SWEEP_SECONDS, self._sweep)
        for conns in self.idle.values():  # oldest first: released connections are appended
            while conns and now - conns[0].idle_since >= self.idle_timeout:
                conns.popleft().close()
        for conn in [c for c in self.live if c.handler is not None]:
            conn.check_timeout(now)

    def close(self) -> None:
        self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        for conns in self.idle.values():
            for conn in list(conns):
                conn.close()
        self.idle.clear()
        for conn in list(self.live):  # a retired node's last busy ones (after the grace time)
            conn.close()
