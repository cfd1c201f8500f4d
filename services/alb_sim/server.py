"""The ALB's client side: one bare asyncio Protocol per client connection (httptools parser).

Per request: limits and AWS's 4xx/5xx checks, rule evaluation, then the action: redirect and
fixed-response are answered here; forward picks a target and relays over a pooled upstream
connection (upstream.py), streaming bodies both ways with flow control. Requests on one
connection are answered in order (pipelined requests wait in a queue). One access-log entry
per request.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Callable, Final

import httptools

from . import desync, httpmsg
from .access_log import (AccessLogEntry, ConnectionPart, connection_part_of, format_entry,
                         malformed_request_field, quoted, relayed_line, request_field)
from .limits import MAX_PIPELINED_REQUESTS
from .pipeline import ABORT, FORWARD, RESPOND, RETRY, Pipeline, check_header, check_url, screen, upstream_failure
from .rules import host_without_port
from .runtime import ListenerRuntime, TargetGroupRuntime, log_event
from .upstream import UpstreamConnection, UpstreamError
from .exchange import Exchange
from .fallback import fall_back
from .frontend import NO_TLS, TlsFields, idle_timer_expired, tls_fields
from .httpmsg import Reject

# The HTTP/2 front end's constructor, passed in (h2front.py builds on this module).
H2Front = Callable[[ListenerRuntime], asyncio.Protocol]

BODY_BUFFER_LIMIT: Final = 1 << 20  # pause reading the client beyond this much unsent request body



class ClientConnection(asyncio.Protocol):
    parser: httptools.HttpRequestParser

    def __init__(self, lr: ListenerRuntime, *, parse: bool = True, h2: H2Front | None = None,
                 pipeline: Pipeline | None = None) -> None:
        self.lr = lr
        self.h2 = h2  # takes over a connection that negotiated h2 in ALPN (h2front.H2ClientConnection)
        self.alb = lr.alb
        self.pool = lr.state.pool  # this node's connections to targets, from its own address
        self.loop = lr.alb.loop
        self.now: Callable[[], float] = self.loop.time  # bound once: called several times per request
        self.idle_timeout = lr.alb.attributes.idle_timeout
        if parse:  # an HTTP/2 stream (h2front) gets its request already parsed
            self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[Exchange] = deque()
        self.current: Exchange | None = None
        self.closing = False
        self.first_data = True
        self.reading_paused = False
        self.last_activity = self.now()
        self.idle_timer: asyncio.TimerHandle | None = None
        self.client_ip = "-"
        self.client_port = 0
        self.tls: TlsFields = NO_TLS
        self.log_part: ConnectionPart | None = None  # the access-log fields fixed for this connection
        self._ua_raw: str | None = None  # the last User-Agent logged, and its quoted field
        self._ua_field = '"-"'
        # What to do with each request (the peer is set on connecting; an HTTP/2 stream shares its connection's).
        self.pipeline = pipeline if pipeline is not None else Pipeline(lr.alb, lr, "-", 0)
        # The Host of this connection's last request logged, and its log form.
        self._log_host_in: str | None = None
        self._log_host = ""
        self.log_type = lr.scheme  # access-log `type`: http | https (h2 on HTTP/2 streams)

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_obj = transport.get_extra_info("ssl_object")
        if self.h2 is not None and ssl_obj is not None and ssl_obj.selected_alpn_protocol() == "h2":
            h2 = self.h2(self.lr)
            transport.set_protocol(h2)
            h2.connection_made(transport)
            return
        self.transport = transport  # type: ignore[assignment]  # uvloop transports are not subclasses
        self.lr.state.connections.add(self)
        self.alb.metrics.connection_opened()
        peer = transport.get_extra_info("peername") or ("-", 0)
        self.client_ip, self.client_port = peer[0], peer[1]
        self.pipeline.client_ip, self.pipeline.client_port = self.client_ip, self.client_port
        if ssl_obj is not None:
            self.tls = tls_fields(ssl_obj, self.lr)
        self.arm_idle()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.now()
        if self.closing:
            return
        if self.first_data:
            self.first_data = False
            if data.startswith(b"PRI * HTTP/2.0"):
                self.protocol_error(505, "HTTP/2 connection preface on an HTTP/1 connection")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Reject):
                self.protocol_error(cause.status, str(cause), cause.page, cause.verdict)
            else:
                log_event("error", where="request callback", error=repr(cause))
                self.protocol_error(400, f"internal error: {cause!r}")
        except httptools.HttpParserUpgrade:
            if self.queue:  # upgrade is not supported: answer the request, then close
                self.queue[-1].keep_alive = False
        except httptools.HttpParserError as exc:  # read it as AWS would (fallback.py, decisions.md #43, #46)
            fall_back(self, data, exc)
        except Exception as exc:  # bad bytes must never take the process down
            log_event("error", where="data_received", error=repr(exc))
            self.protocol_error(400, f"internal error: {exc!r}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.lr.state.connections.discard(self)
        if self.transport is not None:
            self.alb.metrics.connection_closed()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        while self.queue:
            ex = self.queue.popleft()
            if ex.upstream is not None:
                ex.upstream.close()
                ex.upstream = None
            if not ex.finished:
                if ex.elb_status is None:
                    ex.elb_status = 460  # client closed before the ALB could answer
                self._release(ex)
                self._log(ex)
                ex.finished = True

    def pause_writing(self) -> None:
        ex = self.queue[0] if self.queue else None
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause_reading()

    def resume_writing(self) -> None:
        ex = self.queue[0] if self.queue else None
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume_reading()

    # --- httptools callbacks (the request being parsed is self.current) -----------------
    def on_message_begin(self) -> None:
        self.current = Exchange(self.alb.clock(), self.last_activity)  # set as these bytes arrived

    def on_url(self, url: bytes) -> None:
        ex = self.current
        assert ex is not None
        ex.url_len += len(url)
        check_url(ex.url_len)
        ex.url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.current
        assert ex is not None
        size = len(name) + len(value) + 4
        ex.header_bytes += size
        check_header(size, ex.header_bytes)
        ex.headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.current
        assert ex is not None
        p = self.parser
        ex.method = p.get_method()
        ex.version = p.get_http_version()
        ex.keep_alive = p.should_keep_alive()  # only valid inside this callback
        if screen(ex, self.alb.attributes.desync_mode):  # limits, 505/405/400, desync classification
            self.alb.metrics.desync_noncompliant()
        if self.closing:
            return
        self.queue.append(ex)
        if len(self.queue) == 1:
            self._start(ex)
        elif len(self.queue) >= MAX_PIPELINED_REQUESTS:  # read on as responses catch up (decisions.md #60)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        ex = self.current
        assert ex is not None
        ex.received_bytes += len(body)
        if ex.finished:
            return
        if ex.upstream is not None:
            ex.upstream.send_body(body, ex.chunked_in)
            return
        ex.body_buf.append(body)
        ex.body_buffered += len(body)
        if ex.body_buffered > BODY_BUFFER_LIMIT:
            self._pause_reading()

    def on_message_complete(self) -> None:
        ex, self.current = self.current, None
        assert ex is not None
        ex.body_done = True
        if ex.upstream is not None and not ex.finished:
            ex.upstream.send_body_end(ex.chunked_in)

    # --- request handling ---------------------------------------------------------------
    def close_if_idle(self) -> bool:
        """A retiring node closes connections between requests; busy ones close after their response."""
        if self.closing:
            return True
        if not self.queue and self.current is None:
            self._close()
            return True
        if self.queue:
            self.queue[-1].keep_alive = False
        return False

    def _start(self, ex: Exchange) -> None:
        """Do what the pipeline decides for the request at the head of the queue."""
        d = self.pipeline.decide(ex)
        if d.close:
            ex.keep_alive = False  # a draining node answers with `Connection: close`
        ex.uri, ex.host, ex.trace, ex.priority, ex.actions = d.uri, d.host, d.trace, d.priority, d.actions
        ex.redirect_url, ex.error_reason, ex.group = d.redirect_url, d.error_reason, d.group
        ex.cookies, ex.app_cookie = d.cookies, d.app_cookie
        kind = d.kind
        if kind == FORWARD:
            member, group = d.member, d.group
            assert member is not None and group is not None
            member.inflight += 1
            ex.member, ex.target, ex.head = member, member.addr, d.head
            ex.t_pick = self.now()
            self._acquire(ex, (member.target.ip, member.target.port, group.tls), fresh=False)
        elif kind == RESPOND:
            self._respond_local(ex, d.status, error=d.error)
        else:  # redirect, fixed-response
            self._respond_local(ex, d.status, body=d.body, content_type=d.content_type, extra=d.extra)

    def _acquire(self, ex: Exchange, key: tuple[str, int, bool], fresh: bool) -> None:
        conn = None if fresh else self.pool.take_idle(key)
        if conn is not None:
            self._dispatch(ex, conn, True)
            return

        def connected(conn: UpstreamConnection) -> None:
            if self.closing or ex.finished or not self.queue or self.queue[0] is not ex:
                self.pool.release(conn)
            else:
                self._dispatch(ex, conn, False)

        def failed(error: UpstreamError) -> None:
            if not self.closing and not ex.finished and self.queue and self.queue[0] is ex:
                self._upstream_failed(ex, error)

        self.pool.connect(key, connected, failed)

    def _dispatch(self, ex: Exchange, conn: UpstreamConnection, reused: bool) -> None:
        ex.upstream, ex.reused = conn, reused
        ex.t_sent = ex.t_pick if reused else self.now()  # a pooled connection: sent as it was picked
        conn.start(self, ex.head, head_only=ex.method == b"HEAD", now=ex.t_sent)
        if ex.body_buf:
            for chunk in ex.body_buf:
                conn.send_body(chunk, ex.chunked_in)
            ex.body_buf.clear()
            ex.body_buffered = 0
        if ex.body_done:
            conn.send_body_end(ex.chunked_in)
        if self.reading_paused:
            self._resume_reading()

    # --- upstream events (always for self.queue[0]) -----------------------------------
    def on_upstream_interim(self, status: int, text: bytes) -> None:
        ex = self.queue[0]
        if ex.version == "1.1" and self.transport is not None:
            self._write(ex, b"HTTP/1.1 %d %s\r\n\r\n" % (status, text))

    def on_upstream_head(self, status: int, text: bytes, headers: list[tuple[bytes, bytes]],
                         content_length: bytes | None, chunked: bool) -> None:
        ex = self.queue[0]
        ex.t_head = ex.upstream.last_activity if ex.upstream is not None else self.now()  # as the head arrived
        ex.target_status = status
        no_body = ex.method == b"HEAD" or status in (204, 304)
        if no_body:
            framing = httpmsg.content_length_line(content_length) if content_length is not None else None
        elif content_length is not None and not chunked:
            framing = httpmsg.content_length_line(content_length)
        elif ex.version == "1.1":
            framing, ex.resp_chunked = b"Transfer-Encoding: chunked", True
        else:
            framing, ex.keep_alive = None, False  # HTTP/1.0 client: close-delimited body
        if not ex.body_done:
            ex.keep_alive = False  # answered before the request body ended: do not reuse
        ex.response_started = True
        if ex.app_cookie is not None:  # app_cookie stickiness may start with this response
            ex.cookies = self.pipeline.response_cookies(ex, headers)
        # Held back so the head and the first body bytes leave in one TLS record / one send.
        if ex.cookies:
            headers = headers + ex.cookies
        ex.pending_head = httpmsg.build_response_head(status, text, headers, framing=framing,
                                                      keep_alive=ex.keep_alive, http10_client=ex.version == "1.0")

    def on_upstream_body(self, data: bytes) -> None:
        ex = self.queue[0]
        head, ex.pending_head = ex.pending_head, b""
        if ex.resp_chunked:
            self._write(ex, b"".join((head, b"%x\r\n" % len(data), data, b"\r\n")))
        else:
            self._write(ex, b"".join((head, data)) if head else data)

    def on_upstream_complete(self, reusable: bool) -> None:
        ex = self.queue[0]
        head, ex.pending_head = ex.pending_head, b""
        if ex.resp_chunked or head:
            self._write(ex, b"".join((head, b"0\r\n\r\n")) if ex.resp_chunked else head)
        conn, ex.upstream = ex.upstream, None
        if conn is not None:
            if reusable and ex.body_done and not ex.close_target:
                self.pool.release(conn)
            else:
                conn.close()
        ex.elb_status = ex.target_status
        self._finish(ex)

    def on_upstream_data_end(self) -> None:
        """End of one upstream read: a head still held back goes out now."""
        ex = self.queue[0]
        if ex.pending_head:
            self._write(ex, ex.pending_head)
            ex.pending_head = b""

    def on_upstream_error(self, error: UpstreamError) -> None:
        ex = self.queue[0]
        ex.upstream = None
        self._upstream_failed(ex, error)

    def on_upstream_pause_writing(self) -> None:
        self._pause_reading()

    def on_upstream_resume_writing(self) -> None:
        self._resume_reading()

    def _upstream_failed(self, ex: Exchange, error: UpstreamError) -> None:
        if ex.pending_head:
            self._write(ex, ex.pending_head)
            ex.pending_head = b""
        outcome = upstream_failure(ex, error.retryable)
        if outcome == ABORT:
            ex.elb_status = ex.target_status
            ex.keep_alive = False
            self._finish(ex, abort=True)
            return
        if outcome == RETRY and ex.group is not None:
            ex.retried = True  # a pooled connection the target had closed: one fresh attempt
            ip, _, port = ex.target.rpartition(":") if ex.target else ("", "", "0")
            self._acquire(ex, (ip, int(port), ex.group.tls), fresh=True)
            return
        ex.target_status = None
        if not ex.body_done:
            ex.keep_alive = False
        self._respond_local(ex, error.status, error=str(error))

    # --- responses, logging, connection state ---------------------------------------------
    def _respond_local(self, ex: Exchange, status: int, *, body: bytes | None = None,
                       content_type: str = "text/html", extra: tuple[tuple[str, str], ...] = (),
                       error: str | None = None) -> None:
        if error and status >= 500:
            log_event("error", node=self.lr.node.name, status=status, client=f"{self.client_ip}:{self.client_port}",
                      target=ex.target, detail=error)
        if status in (400, 501, 505):
            ex.keep_alive = False
        ex.elb_status = status
        self._send_local(ex, status, httpmsg.error_body(status) if body is None else body, content_type, extra)
        self._finish(ex)

    def _send_local(self, ex: Exchange, status: int, body: bytes, content_type: str,
                    extra: tuple[tuple[str, str], ...]) -> None:
        """Write a response the ALB generates itself (the HTTP/2 front end writes it as frames)."""
        self._write(ex, httpmsg.alb_response(status, date=self.alb.http_date(), body=body, content_type=content_type,
                                             keep_alive=ex.keep_alive, extra=extra, head_only=ex.method == b"HEAD"))

    def _release(self, ex: Exchange) -> None:
        member, ex.member = ex.member, None
        if member is not None and ex.group is not None:
            ex.group.request_done(member)

    def _finish(self, ex: Exchange, abort: bool = False) -> None:
        ex.finished = True
        self._release(ex)
        self._log(ex)
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
        if ex.upstream is not None:
            ex.upstream.close()
            ex.upstream = None
        if abort and self.transport is not None:
            self.closing = True
            self.transport.abort()
            return
        if not ex.keep_alive:
            self._close()
            return
        self._resume_reading()
        if self.queue:
            self._start(self.queue[0])
        else:
            self.last_activity = self.now()

    def _log(self, ex: Exchange) -> None:
        group = ex.group
        if (ex.t_head and ex.t_sent > 0 and group is not None and ex.target is not None and ex.priority is not None
                and ex.elb_status is not None and ex.elb_status == ex.target_status and ex.redirect_url is None):
            self._log_relayed(ex, group)
        else:
            self._log_entry(ex)

    def _log_relayed(self, ex: Exchange, group: TargetGroupRuntime) -> None:
        """The common entry, a response relayed in full, without building an AccessLogEntry."""
        ua = ex.user_agent
        if ua != self._ua_raw:  # one client connection usually sends one User-Agent
            self._ua_raw, self._ua_field = ua, quoted(ua[:8192] if ua else None)
        target_time = ex.t_head - ex.t_sent
        status = ex.elb_status
        assert status is not None and ex.target is not None and ex.priority is not None
        self.lr.log.write(relayed_line(
            self._connection_part(), self.alb.clock(), ex.target, ex.t_sent - ex.t0, target_time, status,
            ex.received_bytes, ex.sent_bytes, self._request_field(ex), self._ua_field, group.tg.arn,
            quoted(ex.trace) if ex.trace_in is not None else f'"{ex.trace}"', ex.priority, ex.created,
            '"forward"' if ex.actions == ("forward",) else quoted(",".join(ex.actions)),
            '"-"' if ex.error_reason is None else quoted(ex.error_reason),
            '"-" "-"' if ex.verdict is None else f"{quoted(ex.verdict[0])} {quoted(ex.verdict[1])}"))
        self.alb.metrics.request(target_group=group.tg.name, elb_status=status, target_status=status,
                                 target_time=target_time, received=ex.received_bytes, sent=ex.sent_bytes)

    def _connection_part(self) -> ConnectionPart:
        """The access-log fields fixed for this connection, rendered on first use."""
        if self.log_part is None:
            cipher, protocol, sni, cert_arn = self.tls
            self.log_part = connection_part_of(self.log_type, self.alb.config.lb_id,
                                               f"{self.client_ip}:{self.client_port}", cipher, protocol, sni, cert_arn)
        return self.log_part

    def _request_field(self, ex: Exchange) -> str:
        """Access-log `request` of a request that was routed: Host without its port (else the node's
        address), the request target as forwarded."""
        lr = self.lr
        if ex.host != self._log_host_in:  # else the same Host as this connection's last request
            self._log_host_in = ex.host
            self._log_host = host_without_port(ex.host) if ex.host else lr.node.address
        return request_field(ex.method.decode("latin-1"), lr.scheme, self._log_host, lr.listener.port,
                             ex.uri, f"HTTP/{ex.version}")

    def _log_entry(self, ex: Exchange) -> None:
        dispatched = ex.t_sent > 0
        ssl_cipher, ssl_protocol, sni, cert_arn = self.tls
        entry = AccessLogEntry(
            type=self.log_type, time=self.alb.clock(), elb=self.alb.config.lb_id,
            client=f"{self.client_ip}:{self.client_port}", request_creation_time=ex.created,
            elb_status_code=ex.elb_status, target=ex.target,
            request_processing_time=((ex.t_sent or ex.t_pick) - ex.t0) if ex.t_pick else None,
            target_processing_time=(ex.t_head - ex.t_sent) if dispatched and ex.t_head else None,
            response_processing_time=0.0 if dispatched and ex.t_head else None,
            target_status_code=ex.target_status if dispatched else None,
            received_bytes=ex.received_bytes, sent_bytes=ex.sent_bytes,
            request=self._request_field(ex),
            user_agent=ex.user_agent, ssl_cipher=ssl_cipher, ssl_protocol=ssl_protocol,
            target_group_arn=ex.group.tg.arn if ex.group else None, trace_id=ex.trace, domain_name=sni,
            chosen_cert_arn=cert_arn, matched_rule_priority=ex.priority, actions_executed=ex.actions,
            redirect_url=ex.redirect_url, error_reason=ex.error_reason,
        )
        if ex.verdict is not None:
            entry.classification, entry.classification_reason = ex.verdict
        self.lr.log.write(format_entry(entry, self._connection_part()))
        self.alb.metrics.request(target_group=ex.group.tg.name if ex.group else None, elb_status=ex.elb_status,
                                 target_status=entry.target_status_code, target_time=entry.target_processing_time,
                                 received=ex.received_bytes, sent=ex.sent_bytes)

    def protocol_error(self, status: int, detail: str, page: str | None = None,
                        verdict: desync.Verdict | None = None) -> None:
        """The client sent bytes we cannot parse: answer (after earlier requests), log, close."""
        if self.closing or self.transport is None:
            return
        ex = self.current or Exchange(self.alb.clock(), self.now())
        self.current = None
        self._pause_reading()
        if self.queue:  # earlier pipelined requests are still being answered: close after them
            self.queue[-1].keep_alive = False
            return
        ex.keep_alive = False
        ex.elb_status = status
        method = ex.method.decode("latin-1") if ex.method else ""
        payload = httpmsg.alb_response(status, date=self.alb.http_date(), body=httpmsg.error_body(status, page),
                                       keep_alive=False)
        self._write(ex, payload)
        ssl_cipher, ssl_protocol, sni, cert_arn = self.tls
        entry = AccessLogEntry(
            type=self.lr.scheme, time=self.alb.clock(), elb=self.alb.config.lb_id,
            client=f"{self.client_ip}:{self.client_port}", request_creation_time=ex.created,
            elb_status_code=status, received_bytes=ex.received_bytes, sent_bytes=ex.sent_bytes,
            request=(malformed_request_field(self.lr.scheme, self.lr.node.address, self.lr.listener.port)
                     if status in (400, 414) or not method else
                     request_field(method, self.lr.scheme, host_without_port(ex.host) or self.lr.node.address,
                                   self.lr.listener.port, b"".join(ex.url).decode("latin-1"), f"HTTP/{ex.version}")),
            user_agent=ex.user_agent, ssl_cipher=ssl_cipher, ssl_protocol=ssl_protocol, domain_name=sni,
            chosen_cert_arn=cert_arn, classification=verdict.classification if verdict else None,
            classification_reason=verdict.reason if verdict else None,
        )
        if verdict is not None:
            self.alb.metrics.desync_noncompliant()
        self.lr.log.write(format_entry(entry, self._connection_part()))
        self.alb.metrics.request(target_group=None, elb_status=status, target_status=None, target_time=None,
                                 received=ex.received_bytes, sent=ex.sent_bytes)
        if status >= 500:
            log_event("error", node=self.lr.node.name, status=status, client=f"{self.client_ip}:{self.client_port}",
                      detail=detail)
        self._close()

    def _write(self, ex: Exchange, data: bytes) -> None:
        ex.sent_bytes += len(data)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if (self.reading_paused and not self.closing and self.transport is not None
                and len(self.queue) < MAX_PIPELINED_REQUESTS):
            self.reading_paused = False
            self.transport.resume_reading()

    def arm_idle(self) -> None:
        self.idle_timer = self.loop.call_at(self.last_activity + self.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        if not idle_timer_expired(self, busy=bool(self.queue)):
            return
        if self.current is not None:  # a request was started but never finished
            ex = self.current
            self.current = None
            ex.keep_alive = False
            ex.elb_status = 408
            self._write(ex, httpmsg.alb_response(408, date=self.alb.http_date(), body=httpmsg.error_body(408),
                                                 keep_alive=False))
        self._close()


def ssl_error_is_noise(context: dict[str, object]) -> bool:
    """TLS handshake failures from clients are peers' mistakes, not ours."""
    exc = context.get("exception")
    return isinstance(exc, (ssl.SSLError, ConnectionResetError, BrokenPipeError))
