"""What the ALB's two client-side front ends share: HTTP/1.1 (server.py) and HTTP/2 (h2front.py).

`FrontEnd` is the part of a client side that answers its requests in order: it carries out what
pipeline.py decides for each (an answer of the ALB's own, or the relay to a target over the node's
upstream pool, with one retry on a pooled connection the target had closed, 502/504 on failure),
streams request bodies on, and writes each request's access-log entry and metrics. How bytes
reach the client is the front end's: an HTTP/1.1 connection (server.ClientConnection) writes them
to its socket, an HTTP/2 stream (h2front.H2Stream) as frames; each provides the hooks below
(`_send_local`, `_write`, `_finished`, `_pause_reading`, `_resume_reading`) and its own handling
of the target's response head and body (`on_upstream_interim/head/body/data_end`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Callable, Final, Protocol

from . import httpmsg
from .access_log import AccessLogEntry, ConnectionPart, connection_part_of, format_entry, quoted, relayed_line, request_field
from .exchange import Exchange
from .pipeline import ABORT, FORWARD, RESPOND, RETRY, Pipeline, upstream_failure
from .rules import host_without_port
from .runtime import ListenerRuntime, TargetGroupRuntime, log_event
from .upstream import ResponseSink, UpstreamConnection, UpstreamError

BODY_BUFFER_LIMIT: Final = 1 << 20  # pause reading the client beyond this much unsent request body

TlsFields = tuple[str | None, str | None, str | None, str | None]  # cipher, protocol, SNI, certificate ARN
NO_TLS: TlsFields = (None, None, None, None)


class IdleTimed(Protocol):
    """A client connection with an idle timer (either front end)."""

    closing: bool
    last_activity: float
    idle_timeout: float
    idle_timer: asyncio.TimerHandle | None
    loop: asyncio.AbstractEventLoop

    def arm_idle(self) -> None: ...


def idle_timer_expired(conn: IdleTimed, busy: bool) -> bool:
    """The idle timer of a client connection went off: True if the connection really was idle for
    the idle timeout, else the timer is re-armed. A connection with requests in flight counts as
    active (the upstream side times those requests out)."""
    conn.idle_timer = None
    if conn.closing:
        return False
    if busy or conn.loop.time() - conn.last_activity < conn.idle_timeout:
        if busy:
            conn.last_activity = conn.loop.time()
        conn.arm_idle()
        return False
    return True


def tls_fields(ssl_obj: ssl.SSLObject, lr: ListenerRuntime) -> TlsFields:
    """Access-log ssl_cipher, ssl_protocol, domain_name (SNI) and chosen_cert_arn of a TLS connection."""
    cipher = ssl_obj.cipher()
    cert = lr.listener.certificate
    chosen = "session-reused" if ssl_obj.session_reused else (
        getattr(ssl_obj, "alb_cert", None) or (cert.arn if cert else None))
    return cipher[0] if cipher else None, ssl_obj.version(), getattr(ssl_obj, "alb_sni", None), chosen


class FrontEnd(ResponseSink):
    """The requests of one client side, answered in order (see the module's docstring)."""

    def __init__(self, lr: ListenerRuntime, pipeline: Pipeline | None = None) -> None:
        self.lr = lr
        self.alb = lr.alb
        self.pool = lr.state.pool  # this node's connections to targets, from its own address
        self.loop = lr.alb.loop
        self.now: Callable[[], float] = self.loop.time  # bound once: called several times per request
        self.queue: deque[Exchange] = deque()
        self.current: Exchange | None = None  # the request whose head or body is being read
        self.closing = False
        self.reading_paused = False
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

    # --- what each front end provides ----------------------------------------------------------
    def _send_local(self, ex: Exchange, status: int, body: bytes, content_type: str,
                    extra: tuple[tuple[str, str], ...]) -> None:
        """Write a response the ALB generates itself."""
        raise NotImplementedError

    def _write(self, ex: Exchange, data: bytes) -> None:
        """Write bytes of the target's response held back so far (a head, a last chunk)."""
        raise NotImplementedError

    def _finished(self, ex: Exchange, abort: bool) -> None:
        """`ex` is done and logged: close, cut (`abort`), or go on with the next request."""
        raise NotImplementedError

    def _pause_reading(self) -> None:
        raise NotImplementedError

    def _resume_reading(self) -> None:
        raise NotImplementedError

    # --- the request's body, from the client ------------------------------------------------
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

    # --- carrying out the pipeline's decision -----------------------------------------------
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

    def _release(self, ex: Exchange) -> None:
        member, ex.member = ex.member, None
        if member is not None and ex.group is not None:
            ex.group.request_done(member)

    def _finish(self, ex: Exchange, abort: bool = False) -> None:
        """`ex` is answered (or, `abort`, cut short): logged, its target released; then the front end goes on."""
        ex.finished = True
        self._release(ex)
        self._log(ex)
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
        if ex.upstream is not None:
            ex.upstream.close()
            ex.upstream = None
        self._finished(ex, abort)

    # --- the access log ------------------------------------------------------------------------
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


    def _abandon(self) -> None:
        """The client is gone: requests not answered yet are logged 460, their targets released."""
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
