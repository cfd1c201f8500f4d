"""One request/response on a client connection: everything the ALB learns about it, for the
relay and for its access-log entry and metrics. Slots: one is created per request."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .desync import Verdict
    from .runtime import Member, TargetGroupRuntime
    from .upstream import UpstreamConnection


class Exchange:
    """One request/response on a client connection."""

    __slots__ = (
        "created", "t0", "method", "url", "version", "headers", "keep_alive", "chunked_in",
        "content_length", "has_body", "body_buf", "body_buffered", "body_done", "reject", "url_len",
        "header_bytes", "received_bytes", "sent_bytes", "upstream", "finished", "response_started",
        "resp_chunked", "elb_status", "target_status", "target", "group", "priority", "actions",
        "trace", "redirect_url", "error_reason", "t_pick", "t_sent", "t_head", "reused", "retried", "head", "pending_head",
        "host", "uri", "user_agent", "member", "cookies", "app_cookie", "xff_lines", "trace_in", "verdict",
        "close_target",
    )

    def __init__(self, created: float, t0: float) -> None:
        self.created, self.t0 = created, t0
        self.method = b""
        self.url: list[bytes] = []
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.chunked_in = False
        self.content_length: bytes | None = None
        self.has_body = False
        self.body_buf: list[bytes] = []
        self.body_buffered = 0
        self.body_done = False
        self.reject: tuple[int, str] | None = None
        self.url_len = self.header_bytes = self.received_bytes = self.sent_bytes = 0
        self.upstream: UpstreamConnection | None = None
        self.finished = self.response_started = self.resp_chunked = False
        self.elb_status: int | None = None
        self.target_status: int | None = None
        self.target: str | None = None
        self.group: TargetGroupRuntime | None = None
        self.priority: int | None = None
        self.actions: tuple[str, ...] = ()
        self.trace: str | None = None
        self.redirect_url: str | None = None
        self.error_reason: str | None = None
        self.t_pick = self.t_sent = self.t_head = 0.0
        self.reused = self.retried = False
        self.head = self.pending_head = b""
        self.host = ""
        self.uri = "/"
        self.user_agent: str | None = None
        self.member: Member | None = None
        self.cookies: list[tuple[bytes, bytes]] | None = None
        self.app_cookie: bytes | None = None  # app_cookie stickiness starts if the response sets this cookie
        self.xff_lines: list[str] = []  # X-Forwarded-For lines as received, in order
        self.trace_in: str | None = None  # the first X-Amzn-Trace-Id line received
        self.verdict: Verdict | None = None  # desync classification; None = Compliant
        self.close_target = False  # desync mitigation: do not reuse the target connection
