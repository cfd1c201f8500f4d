"""One request/response on a client connection: everything the ALB learns about it, for the
relay and for its access-log entry and metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .desync import Verdict
    from .runtime import Member, TargetGroupRuntime
    from .upstream import UpstreamConnection


class Exchange:
    """One request/response on a client connection.

    Immutable defaults live on the class, so creating one (per request) sets only the few mutable
    fields; no __slots__, for the same reason."""

    method = b""
    version = "1.1"
    keep_alive = True
    chunked_in = False
    content_length: bytes | None = None
    has_body = False
    body_buffered = 0
    body_done = False
    reject: tuple[int, str] | None = None
    url_len = 0
    header_bytes = 0
    received_bytes = 0
    sent_bytes = 0
    upstream: UpstreamConnection | None = None
    finished = False
    response_started = False
    resp_chunked = False
    elb_status: int | None = None
    target_status: int | None = None
    target: str | None = None
    group: TargetGroupRuntime | None = None
    priority: int | None = None
    actions: tuple[str, ...] = ()
    trace: str | None = None
    redirect_url: str | None = None
    error_reason: str | None = None
    t_pick = 0.0
    t_sent = 0.0
    t_head = 0.0
    reused = False
    retried = False
    head = b""
    pending_head = b""
    host = ""
    uri = "/"
    user_agent: str | None = None
    member: Member | None = None
    cookies: list[tuple[bytes, bytes]] | None = None
    app_cookie: bytes | None = None  # app_cookie stickiness starts if the response sets this cookie
    trace_in: str | None = None  # the first X-Amzn-Trace-Id line received
    verdict: Verdict | None = None  # desync classification; None = Compliant
    close_target = False  # desync mitigation: do not reuse the target connection

    def __init__(self, created: float, t0: float) -> None:
        self.created, self.t0 = created, t0
        self.url: list[bytes] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self.body_buf: list[bytes] = []
        self.xff_lines: list[str] = []  # X-Forwarded-For lines as received, in order
