"""The ALB's HTTP/1.x client side: one bare asyncio Protocol per client connection (httptools parser).

It reads requests (pipelined ones wait in the queue, answered in order), checks their heads as
they arrive (pipeline.py: 414, 400, 501, 505, 405, desync classification), writes the ALB's own
answers and relays the target's responses (chunked to HTTP/1.1 clients when the target does not
frame them; the head held back to leave with the first body bytes). What is decided for each
request, its relay and its access log are frontend.FrontEnd's, shared with HTTP/2. A connection
that negotiates h2 in ALPN is handed to the HTTP/2 front end it was given.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Callable

import httptools

from . import desync, httpmsg
from .access_log import AccessLogEntry, format_entry, malformed_request_field, request_field
from .exchange import Exchange
from .fallback import fall_back
from .frontend import FrontEnd, idle_timer_expired, tls_fields
from .httpmsg import Reject
from .limits import MAX_PIPELINED_REQUESTS
from .pipeline import check_header, check_url, screen
from .rules import host_without_port
from .runtime import ListenerRuntime, log_event

# The HTTP/2 front end's constructor, passed in (h2front.py builds on this module).
H2Front = Callable[[ListenerRuntime], asyncio.Protocol]


class ClientConnection(FrontEnd):
    parser: httptools.HttpRequestParser

    def __init__(self, lr: ListenerRuntime, *, h2: H2Front | None = None) -> None:
        super().__init__(lr)
        self.h2 = h2  # takes over a connection that negotiated h2 in ALPN (h2front.H2ClientConnection)
        self.idle_timeout = lr.alb.attributes.idle_timeout
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.first_data = True
        self.last_activity = self.now()
        self.idle_timer: asyncio.TimerHandle | None = None

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
        self._abandon()

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

    def on_upstream_data_end(self) -> None:
        """End of one upstream read: a head still held back goes out now."""
        ex = self.queue[0]
        if ex.pending_head:
            self._write(ex, ex.pending_head)
            ex.pending_head = b""

    # --- responses, logging, connection state ---------------------------------------------
    def _send_local(self, ex: Exchange, status: int, body: bytes, content_type: str,
                    extra: tuple[tuple[str, str], ...]) -> None:
        """Write a response the ALB generates itself (the HTTP/2 front end writes it as frames)."""
        self._write(ex, httpmsg.alb_response(status, date=self.alb.http_date(), body=body, content_type=content_type,
                                             keep_alive=ex.keep_alive, extra=extra, head_only=ex.method == b"HEAD"))

    def _finished(self, ex: Exchange, abort: bool) -> None:
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
