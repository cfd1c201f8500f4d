"""The ALB's HTTP/2 front end: HTTPS connections that negotiated `h2` in ALPN.

A thin adapter. The `h2` library is the protocol core (bytes in, events out, bytes to send:
framing, HPACK, flow-control accounting, RFC 9113 validation, GOAWAY / RST_STREAM on bad input).
`H2ClientConnection` feeds it and writes what it produces; each request stream becomes an
`H2Stream`, a `frontend.FrontEnd` with one request, as an HTTP/1.1 connection (server.py) is one
with many: the pipeline's decisions (rules, X-Forwarded-*, X-Amzn-Trace-Id, stickiness, target
choice), the upstream pool (HTTP/1.1 to targets), metrics and the access log run the same code
as for HTTP/1.1, and the log says type `h2`, request `GET https://host:443/path HTTP/2.0`.

Flow control both ways: request DATA is handed back to the client's window only as it is sent
on to the target (or buffered up to frontend.BODY_BUFFER_LIMIT before a target is connected);
response bytes wait for the client's window, and the target is paused while more than
OUT_BUFFER_LIMIT waits. What the lab chooses where AWS is silent: docs/decisions.md #50-#54.
"""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from . import h2msg, httpmsg
from .exchange import Exchange
from .frontend import NO_TLS, FrontEnd, TlsFields, idle_timer_expired, tls_fields
from .pipeline import Pipeline
from .runtime import ListenerRuntime, log_event

OUT_BUFFER_LIMIT = 256 * 1024  # response bytes held for one stream before its target is paused

_CONFIG = h2.config.H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=True,
                                    normalize_inbound_headers=True, validate_outbound_headers=True,
                                    normalize_outbound_headers=True, split_outbound_cookies=False)
_STREAM_GONE = (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError)


class H2Stream(FrontEnd):
    """One HTTP/2 request stream: a front end with one request (frontend.FrontEnd carries out the
    pipeline's decision, relays to the target, logs; an unanswered request is logged 460). Its
    own: reading the request from h2's events and writing the answer as HEADERS and DATA frames."""

    def __init__(self, front: H2ClientConnection, stream_id: int) -> None:
        super().__init__(front.lr, front.pipeline)
        self.front = front
        self.stream_id = stream_id
        self.client_ip, self.client_port, self.tls = front.client_ip, front.client_port, front.tls
        self.log_type = "h2"
        self.out = bytearray()  # response DATA waiting for the client's flow-control window
        self.out_end = False    # END_STREAM goes with the last of `out`
        self.ended = False      # END_STREAM or RST_STREAM sent: nothing more goes out
        self.request_ended = False
        self.unacked = 0        # request DATA not yet handed back to the client's window
        self.target_paused = False

    # --- from the client (H2ClientConnection's events) -----------------------------------
    def begin(self, req: h2msg.H2Request, ended: bool) -> None:
        ex = Exchange(self.alb.clock(), self.now())
        ex.method, ex.version, ex.host = req.method, "2.0", req.authority
        ex.url.append(req.path)
        ex.url_len = len(req.path)
        ex.headers, ex.header_bytes, ex.received_bytes = req.headers, req.header_bytes, req.header_bytes
        ex.content_length, ex.user_agent = req.content_length, req.user_agent
        ex.xff_lines, ex.trace_in, ex.reject = req.xff_lines, req.trace_in, req.reject
        # An HTTP/1.1 target needs body framing: the client's content-length, else chunked.
        ex.chunked_in = not ended and req.content_length is None
        ex.has_body = not ended and req.content_length != b"0"
        self.current = ex  # the request whose body is still arriving (on_body/on_message_complete)
        if ended:
            self.on_message_complete()
            self.request_ended = True
        self.queue.append(ex)
        if self.ended:  # never to be answered (the client's GOAWAY came with it): only logged, 460
            ex.uri = httpmsg.parse_target(req.path).uri
            return
        self._start(ex)

    def on_data(self, data: bytes, flow_controlled: int) -> None:
        self.unacked += flow_controlled
        if self.current is not None:
            self.on_body(data)  # to the target, or buffered until it is connected
        if not self.reading_paused:
            self._ack()

    def on_end(self) -> None:
        self.request_ended = True
        if self.current is not None:
            self.on_message_complete()
        if self.ended:
            self.front.stream_closed(self)

    def on_reset(self) -> None:
        """RST_STREAM from the client, or the connection is gone."""
        self.ended = True
        self.out.clear()
        self.closing = True
        self._abandon()

    # --- the target's response -------------------------------------------------------------
    def on_upstream_interim(self, status: int, text: bytes) -> None:
        self._send_head([(b":status", b"%d" % status)])

    def on_upstream_head(self, status: int, text: bytes, headers: list[tuple[bytes, bytes]],
                         content_length: bytes | None, chunked: bool) -> None:
        ex = self.queue[0]
        ex.t_head = ex.upstream.last_activity if ex.upstream is not None else self.now()  # as the head arrived
        ex.target_status = status
        ex.response_started = True
        # 204/304 have no content: their content-length (allowed on a 304) would make strict HTTP/2
        # clients (python's h2, so httpx) expect DATA that never comes (decisions.md #62)
        length = None if chunked or status in (204, 304) else content_length
        fields = h2msg.response_fields(status, headers, content_length=length,
                                       extra=ex.cookies or ())
        ex.sent_bytes += h2msg.fields_size(fields)
        self._send_head(fields)

    def on_upstream_body(self, data: bytes) -> None:
        self.queue[0].sent_bytes += len(data)
        self.out += data
        self.drain()

    def on_upstream_data_end(self) -> None:
        self.front.flush()

    def pause_writing(self) -> None:
        self._throttle()

    def resume_writing(self) -> None:
        self._throttle()

    # --- the hooks frontend.FrontEnd calls -----------------------------------------------------
    def _send_local(self, ex: Exchange, status: int, body: bytes, content_type: str,
                    extra: tuple[tuple[str, str], ...]) -> None:
        fields = h2msg.local_response_fields(status, date=self.alb.http_date(), content_type=content_type,
                                             length=len(body), extra=extra)
        ex.sent_bytes += h2msg.fields_size(fields)
        self._send_head(fields)
        if ex.method != b"HEAD":
            ex.sent_bytes += len(body)
            self.out += body  # leaves with END_STREAM when _finish ends the stream

    def _write(self, ex: Exchange, data: bytes) -> None:
        """Never called with bytes to send: a response relayed over HTTP/2 holds back no head and
        is not chunked (on_upstream_head sends HEADERS at once); counted, as before."""
        ex.sent_bytes += len(data)

    def _finished(self, ex: Exchange, abort: bool) -> None:
        if ex.keep_alive:  # the request's window back before the stream's last frames, as HTTP/1.1 resumes reading
            self._resume_reading()
        if abort:  # the target failed mid-response: the client must not take it as complete
            self._reset(ErrorCodes.INTERNAL_ERROR)
        else:
            self.out_end = True
            self.drain()
        self._resume_reading()  # give back what was held, or the connection's window shrinks for good
        if self.lr.state.draining:
            self.front.close_if_idle()
        self.front.flush()

    def _pause_reading(self) -> None:
        self.reading_paused = True

    def _resume_reading(self) -> None:
        self.reading_paused = False
        self._ack()

    # --- internals ---------------------------------------------------------------------------
    def _ack(self) -> None:
        if self.unacked:
            self.front.conn.acknowledge_received_data(self.unacked, self.stream_id)
            self.unacked = 0

    def _send_head(self, fields: list[tuple[bytes, bytes]]) -> None:
        if self.ended:
            return
        try:
            self.front.conn.send_headers(self.stream_id, fields)
        except h2.exceptions.StreamClosedError:
            # The client's RST_STREAM came in the same read as the request (h2 applies a whole read
            # before handing out its events): nothing can be sent; that StreamReset event,
            # next in line, ends the stream. Logged as what it is: the client left before the answer.
            if self.queue:
                self.queue[0].elb_status = 460
            self.out.clear()
            self.ended = True
        except _STREAM_GONE as exc:
            log_event("error", where="h2 send_headers", stream=self.stream_id, error=repr(exc))
            self._reset(ErrorCodes.INTERNAL_ERROR)

    def drain(self) -> None:
        """Send what the client's windows allow; END_STREAM with the last byte once the response is done."""
        if self.ended:
            return
        conn = self.front.conn
        sid = self.stream_id
        try:
            while self.out:
                n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(self.out))
                if n <= 0:
                    break
                last = self.out_end and n == len(self.out)
                conn.send_data(sid, bytes(self.out[:n]), end_stream=last)
                del self.out[:n]
                if last:
                    self._ended()
                    return
            if self.out_end and not self.out:
                conn.end_stream(sid)
                self._ended()
                return
        except _STREAM_GONE:
            self.out.clear()
            self._ended()
            return
        self._throttle()

    def _ended(self) -> None:
        self.ended = True
        if not self.request_ended:  # complete response before the complete request: RFC 9113 §8.1
            try:
                self.front.conn.reset_stream(self.stream_id, ErrorCodes.NO_ERROR)
            except _STREAM_GONE:
                pass
            self.request_ended = True
        self.front.stream_closed(self)

    def _reset(self, code: ErrorCodes) -> None:
        if not self.ended:
            try:
                self.front.conn.reset_stream(self.stream_id, code)
            except _STREAM_GONE:
                pass
        self.request_ended = True
        self.out.clear()
        self._ended()

    def _throttle(self) -> None:
        """Pause the target while the client cannot take more (window shut or socket buffer full)."""
        ex = self.queue[0] if self.queue else None
        if ex is None or ex.upstream is None:
            return
        blocked = self.front.write_paused or len(self.out) > OUT_BUFFER_LIMIT
        if blocked != self.target_paused:
            self.target_paused = blocked
            if blocked:
                ex.upstream.pause_reading()
            else:
                ex.upstream.resume_reading()


class H2ClientConnection(asyncio.Protocol):
    """One client connection speaking HTTP/2 (taken over from ClientConnection after ALPN)."""

    def __init__(self, lr: ListenerRuntime) -> None:
        self.lr = lr
        self.alb = lr.alb
        self.loop = lr.alb.loop
        self.idle_timeout = lr.alb.attributes.idle_timeout
        self.conn = h2.connection.H2Connection(config=_CONFIG)
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: h2msg.MAX_CONCURRENT_STREAMS,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: h2msg.MAX_REQUEST_HEADERS,
        })
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.requests = 0
        self.closing = False
        self.write_paused = False
        self.dispatching = False  # inside data_received: one write at the end
        self.goaway_last: int | None = None  # set on GOAWAY: streams above this are refused
        self.last_activity = self.loop.time()
        self.idle_timer: asyncio.TimerHandle | None = None
        self.client_ip = "-"
        self.client_port = 0
        self.tls: TlsFields = NO_TLS
        self.pipeline = Pipeline(lr.alb, lr, "-", 0)  # shared by this connection's streams

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.lr.state.connections.add(self)
        self.alb.metrics.connection_opened()
        peer = transport.get_extra_info("peername") or ("-", 0)
        self.client_ip, self.client_port = peer[0], peer[1]
        self.pipeline.client_ip, self.pipeline.client_port = self.client_ip, self.client_port
        ssl_obj = transport.get_extra_info("ssl_object")
        if ssl_obj is not None:
            self.tls = tls_fields(ssl_obj, self.lr)
        self.conn.initiate_connection()
        self.flush()
        self.arm_idle()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        if self.closing:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:  # GOAWAY with h2's error code
            self._fatal(f"HTTP/2 protocol error: {exc!r}", exc.error_code)
            return
        except Exception as exc:  # bad bytes must never take the process down
            self._fatal(f"HTTP/2 input error: {exc!r}", ErrorCodes.INTERNAL_ERROR)
            return
        self.dispatching = True
        try:
            for event in events:
                try:
                    self._event(event)
                except Exception as exc:
                    sid = getattr(event, "stream_id", 0)
                    log_event("error", where="h2 event", h2_event=type(event).__name__, stream=sid, error=repr(exc))
                    stream = self.streams.pop(sid, None)
                    if stream is None:
                        raise
                    stream._reset(ErrorCodes.INTERNAL_ERROR)
                    stream.on_reset()  # release its target connection and log it
        except Exception as exc:
            self.dispatching = False
            self._fatal(f"HTTP/2 connection error: {exc!r}", ErrorCodes.INTERNAL_ERROR)
            return
        self.dispatching = False
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.lr.state.connections.discard(self)
        self.alb.metrics.connection_closed()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self._end_streams()

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in list(self.streams.values()):
            stream.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream.resume_writing()

    # --- h2 events ----------------------------------------------------------------------------
    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.on_data(event.data, event.flow_controlled_length)
            else:  # a stream already answered and reset: keep the connection's window open
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.on_end()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.on_reset()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            sid = getattr(event, "stream_id", 0)
            for stream in list(self.streams.values()) if not sid else filter(None, [self.streams.get(sid)]):
                stream.drain()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The client's GOAWAY. h2 accepts no frame from us after it, so open streams end here.
            self._close()

    def _request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        if self.goaway_last is not None and sid > self.goaway_last:
            self.conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        self.requests += 1
        stream = H2Stream(self, sid)
        if self.conn.state_machine.state is h2.connection.ConnectionState.CLOSED:
            # The client's GOAWAY came in the same read: h2 takes no frame from us after it, so this
            # request can never be answered. Like the streams open at that moment it is logged 460
            # (client gone before the answer) and not forwarded.
            stream.ended = True
            stream.begin(h2msg.parse_request(event.headers), ended=event.stream_ended is not None)
            stream.on_reset()
            return
        self.streams[sid] = stream
        if self.requests >= h2msg.MAX_REQUESTS_PER_CONNECTION:
            self._goaway(last=sid)  # this stream is still answered
        stream.begin(h2msg.parse_request(event.headers), ended=event.stream_ended is not None)

    # --- used by streams and the node manager ---------------------------------------------------
    def flush(self) -> None:
        if self.dispatching or self.transport is None:
            return
        data = self.conn.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def stream_closed(self, stream: H2Stream) -> None:
        """END_STREAM or RST_STREAM sent; forgotten once the request side is over too."""
        if stream.request_ended and self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
            self.last_activity = self.loop.time()
            if self.goaway_last is not None and not self.streams:
                self._goaway()

    def close_if_idle(self) -> bool:
        """A retiring node: GOAWAY now (no new streams), close once the open streams are done."""
        if self.closing:
            return True
        self._goaway()
        return self.closing

    # --- internals -----------------------------------------------------------------------------
    def _goaway(self, last: int | None = None) -> None:
        """Graceful shutdown: new streams are refused (REFUSED_STREAM, safe to retry) at once; the
        GOAWAY (NO_ERROR, last stream id) and the close follow when the open streams are answered.
        h2 - on both ends - takes no frame for open streams after a GOAWAY (decisions.md #53)."""
        if self.goaway_last is None:
            self.goaway_last = self.conn.highest_inbound_stream_id if last is None else last
        if self.streams or self.closing:
            return
        try:
            self.conn.close_connection(ErrorCodes.NO_ERROR, last_stream_id=self.goaway_last)
        except h2.exceptions.ProtocolError:
            pass
        self._close()

    def _fatal(self, detail: str, code: ErrorCodes) -> None:
        """A connection error: GOAWAY (unless h2 queued one already, as it does for most), then close."""
        log_event("h2_connection_error", node=self.lr.node.name, client=f"{self.client_ip}:{self.client_port}",
                  detail=detail)
        if self.conn.state_machine.state is not h2.connection.ConnectionState.CLOSED:
            self.conn.close_connection(code)
        self._close()

    def _close(self) -> None:
        if self.closing:
            return
        self.flush()
        self.closing = True
        self._end_streams()  # h2 takes no frame after the GOAWAY: a target answering later has no stream
        if self.transport is not None:
            self.transport.close()

    def _end_streams(self) -> None:
        """Streams still open when the connection ends are never answered: each is logged 460."""
        streams, self.streams = list(self.streams.values()), {}
        for stream in streams:
            stream.on_reset()

    def arm_idle(self) -> None:
        self.idle_timer = self.loop.call_at(self.last_activity + self.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        if idle_timer_expired(self, busy=bool(self.streams)):
            self._goaway()
