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

from . import desync, httpmsg, stickiness
from .access_log import (AccessLogEntry, ConnectionPart, connection_part_of, format_entry,
                         malformed_request_field, quoted, relayed_line, request_field)
from .config import FixedResponseAction, ForwardAction, RedirectAction
from .limits import MAX_PIPELINED_REQUESTS, MAX_REQUEST_HEADERS, MAX_REQUEST_LINE, MAX_SINGLE_HEADER
from .redirect import RedirectRequest, build_location, redirect_status
from .rules import LatinHeaders, RequestView, host_without_port
from .runtime import ListenerRuntime, Member, TargetGroupRuntime, log_event
from .upstream import UpstreamConnection, UpstreamError
from .exchange import Exchange
from .fallback import fall_back
from .frontend import NO_TLS, TlsFields, idle_timer_expired, tls_fields
from .httpmsg import HEADER_TOO_LARGE, Reject
from .xff import process_xff

# The HTTP/2 front end's constructor, passed in (h2front.py builds on this module).
H2Front = Callable[[ListenerRuntime], asyncio.Protocol]

BODY_BUFFER_LIMIT: Final = 1 << 20  # pause reading the client beyond this much unsent request body



class ClientConnection(asyncio.Protocol):
    parser: httptools.HttpRequestParser

    def __init__(self, lr: ListenerRuntime, *, parse: bool = True, h2: H2Front | None = None) -> None:
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
        # Host-derived values of this connection's last request: the Host received, sent upstream,
        # and logged (recomputed whenever the Host or routing.http.preserve_host_header changes).
        self._host_in: str | None = None
        self._host_preserved = False
        self._host_out = ""
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
        if ex.url_len > MAX_REQUEST_LINE:  # the URL is what makes a request line long: 414 (decisions.md #45)
            raise Reject(414, "request line larger than 16K")
        ex.url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.current
        assert ex is not None
        size = len(name) + len(value) + 4
        ex.header_bytes += size
        if size > MAX_SINGLE_HEADER or ex.header_bytes > MAX_REQUEST_HEADERS:
            raise Reject(400, "request header larger than 16K / headers larger than 64K", HEADER_TOO_LARGE)
        ex.headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.current
        assert ex is not None
        p = self.parser
        ex.method = p.get_method()
        ex.version = p.get_http_version()
        ex.keep_alive = p.should_keep_alive()  # only valid inside this callback
        suspect = False  # worth a desync classification (desync.py); most requests are not
        te = False
        for name, value in ex.headers:
            lname = name.lower()
            if not value or not value.isascii():
                suspect = True
            if lname == b"transfer-encoding":
                if httpmsg.bad_transfer_encoding(value):
                    raise Reject(501, f"Transfer-Encoding {value!r} is not supported",
                                 verdict=desync.verdict("BadTransferEncoding"))
                te = True
                ex.chunked_in = ex.chunked_in or b"chunked" in value.lower()
            elif lname == b"content-length":
                ex.content_length = value.strip()
            elif lname == b"host":
                ex.host = value.decode("latin-1")
            elif lname == b"user-agent":
                ex.user_agent = value.decode("latin-1")
            elif lname == b"x-forwarded-for":
                ex.xff_lines.append(value.decode("latin-1"))
            elif lname == b"x-amzn-trace-id" and ex.trace_in is None:
                ex.trace_in = value.decode("latin-1")
            elif len(lname) >= 13 and desync.suspicious_name(lname):
                suspect = True
        ex.has_body = ex.chunked_in or (ex.content_length not in (None, b"0"))
        ex.received_bytes = len(ex.method) + ex.url_len + 13 + ex.header_bytes
        if ex.version not in ("1.0", "1.1"):
            ex.reject, ex.keep_alive = (505, f"HTTP/{ex.version} on an HTTP/1 listener"), False
        elif ex.method == b"TRACE":
            ex.reject = (405, "TRACE is not allowed")
        elif ex.version == "1.1" and not ex.host:
            ex.reject, ex.keep_alive = (400, "HTTP/1.1 request without Host"), False
        if suspect or ((te or ex.content_length is not None) and ex.method in (b"GET", b"HEAD")):
            self._mitigate_desync(ex)
        if self.closing:
            return
        self.queue.append(ex)
        if len(self.queue) == 1:
            self._start(ex)
        elif len(self.queue) >= MAX_PIPELINED_REQUESTS:  # read on as responses catch up (decisions.md #60)
            self._pause_reading()

    def _mitigate_desync(self, ex: Exchange) -> None:
        """Classify a request the cheap checks flagged; block it or close after it per the mode."""
        if ex.verdict is not None:  # read by fallback.py, classified (and mitigated) from its raw head
            return
        v = ex.verdict = desync.classify(ex.method, ex.headers)
        if v is None:
            return
        self.alb.metrics.desync_noncompliant()
        action = desync.mitigation(self.alb.attributes.desync_mode, v)
        if action == desync.BLOCK and ex.reject is None:
            ex.reject = (400, f"desync mitigation blocked a {v.classification} request ({v.reason})")
        elif action == desync.CLOSE:  # routed, then client and target connections closed
            ex.keep_alive, ex.close_target = False, True

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
        if self.lr.state.draining:
            ex.keep_alive = False  # a draining node answers with `Connection: close`
        url = b"".join(ex.url)
        target = httpmsg.parse_target(url)
        ex.uri = target.uri
        if target.authority:
            ex.host = target.authority
        if ex.reject is not None:
            self._respond_local(ex, ex.reject[0], error=ex.reject[1])
            return
        attrs = self.alb.attributes
        xff = process_xff(ex.xff_lines, mode=attrs.xff_mode, client_ip=self.client_ip,
                          client_port=self.client_port, client_port_enabled=attrs.xff_client_port)
        if xff.too_many:
            self._respond_local(ex, 463, error=f"X-Forwarded-For has {xff.address_count} addresses")
            return
        ex.trace = self.alb.trace.process(ex.trace_in)
        method = ex.method.decode("latin-1")
        match = self.lr.rules.lookup(method, target.path, ex.host)
        if match is None:
            match = self.lr.rules.match(RequestView(method, target.path, target.query, ex.host,
                                                    LatinHeaders(ex.headers), self.client_ip))
        ex.priority = match.priority
        action = match.actions[0]
        if isinstance(action, RedirectAction):
            loc = build_location(action, RedirectRequest(self.lr.listener.protocol, host_without_port(ex.host),
                                                         self.lr.listener.port, target.path, target.query))
            ex.actions, ex.redirect_url = ("redirect",), loc
            self._respond_local(ex, redirect_status(action), extra=(("Location", loc),))
            return
        if isinstance(action, FixedResponseAction):
            ex.actions = ("fixed-response",)
            self._respond_local(ex, int(action.status_code), body=action.message_body.encode(),
                                content_type=action.content_type)
            return
        assert isinstance(action, ForwardAction)
        ex.actions = ("forward",)
        group = None
        if action.stickiness_seconds:  # target group stickiness: AWSALBTG names the group
            now = self.alb.clock()
            cookie = stickiness.cookie_value(ex.headers, stickiness.GROUP_COOKIE)
            name = self.alb.sticky.decode(cookie, "#group", now) if cookie else None
            if name in {g.name for g in action.target_groups if g.weight > 0}:
                group = self.alb.groups[name]
            elif cookie is not None and (name is not None or not self.alb.sticky.authentic(cookie)):
                ex.error_reason = "AWSALBTGCookieInvalid"  # forged, damaged, URL-encoded or another rule's
        if group is None:
            group = self.alb.choose_group(action)
        if action.stickiness_seconds:
            ex.cookies = stickiness.set_cookie_headers(
                self.alb.sticky.encode("#group", group.tg.name, now + action.stickiness_seconds), now,
                (stickiness.GROUP_COOKIE, stickiness.GROUP_CORS_COOKIE))
        ex.group = group
        member = self._sticky_member(ex, group) if group.attributes.stickiness else group.pick()
        if member is None:
            self._respond_local(ex, 503, error="target group has no registered targets")
            return
        chosen = member.target
        member.inflight += 1
        ex.member = member
        ex.target = member.addr
        ex.t_pick = self.now()
        if target.authority is None and ex.host == self._host_in and attrs.preserve_host == self._host_preserved:
            host = self._host_out  # the same Host as this connection's last request (usual on keep-alive)
        else:
            host = httpmsg.upstream_host(ex.host or None, listener_port=self.lr.listener.port,
                                         preserve=attrs.preserve_host, absolute_authority=target.authority,
                                         dns_name=self.alb.config.dns_name)
            if target.authority is None:
                self._host_in, self._host_preserved, self._host_out = ex.host, attrs.preserve_host, host
        framing = (b"Transfer-Encoding: chunked" if ex.chunked_in else
                   httpmsg.content_length_line(ex.content_length) if ex.content_length is not None else None)
        ex.head = httpmsg.build_upstream_head(ex.method, target.origin_form, ex.headers, host=host, xff=xff.value,
                                              proto=self.lr.scheme, port=self.lr.listener.port,
                                              trace_id=ex.trace, framing=framing)
        self._acquire(ex, (chosen.ip, chosen.port, group.tls), fresh=False)

    def _sticky_member(self, ex: Exchange, group: TargetGroupRuntime) -> Member | None:
        """Target group stickiness (lb_cookie or app_cookie): the cookie's target if it may still take
        requests, else the algorithm's pick; queues the ALB's Set-Cookie headers on `ex`."""
        attrs, codec, now = group.attributes, self.alb.sticky, self.alb.clock()
        if attrs.stickiness_type == "app_cookie":
            app = stickiness.cookie_value(ex.headers, attrs.app_cookie_name) is not None
            cookie = stickiness.cookie_value(ex.headers, stickiness.APP_COOKIES[0]) if app else None
            stuck = codec.decode(cookie, group.app_key, now) if cookie else None
            member = group.sticky_member(stuck) or group.pick()
            if member is None:
                return None
            if stuck is not None:  # sticky, or stuck to a new target now: expiry reset on this response
                ex.cookies = (ex.cookies or []) + stickiness.app_set_cookie_headers(
                    codec.encode(group.app_key, member.addr, now + attrs.app_cookie_seconds), now)
            else:  # sticky from the response that sets the application cookie on
                ex.app_cookie = attrs.app_cookie_name.encode()
            return member
        cookie = stickiness.cookie_value(ex.headers, stickiness.COOKIE)
        member = group.sticky_member(codec.decode(cookie, group.tg.name, now) if cookie else None) or group.pick()
        if member is not None:  # expiry reset on every request, as AWS does
            ex.cookies = (ex.cookies or []) + stickiness.set_cookie_headers(
                codec.encode(group.tg.name, member.addr, now + attrs.stickiness_seconds), now)
        return member

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
        if ex.app_cookie is not None and ex.group is not None and stickiness.app_cookie_set(headers, ex.app_cookie):
            group, now = ex.group, self.alb.clock()
            ex.cookies = (ex.cookies or []) + stickiness.app_set_cookie_headers(self.alb.sticky.encode(
                group.app_key, ex.target or "", now + group.attributes.app_cookie_seconds), now)
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
        if ex.response_started:
            ex.elb_status = ex.target_status
            ex.keep_alive = False
            self._finish(ex, abort=True)
            return
        if error.retryable and ex.reused and not ex.has_body and not ex.retried and ex.group is not None:
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
