"""What the ALB decides about a request, with no I/O: request head in, decision out.

Both front ends (server.py for HTTP/1.1, h2front.py for HTTP/2) parse a request head into an
`Exchange` and hand it here; what comes back says what to do, and the front end only does it:
- `screen`: the checks AWS makes on an HTTP/1.x head before routing it: 505 for another
  version, 405 for TRACE, 400 without Host, and desync classification with the
  `routing.http.desync_mitigation_mode`'s answer (block: 400; close after the response).
- `Pipeline.decide`: an answer the ALB gives itself (an earlier rejection, 463 for too many
  X-Forwarded-For addresses, 503 when the target group has no target to take it), a redirect or
  fixed-response action, or forward: to this member of this target group, with this request
  head for it (X-Forwarded-For/-Proto/-Port, X-Amzn-Trace-Id, Host) and these stickiness
  cookies to set on the response. The access-log fields that follow from the decision (matched
  rule priority, actions executed, redirect URL, error reason, trace id) come with it.

The ALB's run-time state comes in through two `Protocol`s (`Balancer`, `Listening`, which
runtime.AlbRuntime and runtime.ListenerRuntime satisfy), so this module imports none of the
asyncio side. Compiled by mypyc (decisions.md #57): one `Decision` (a plain class, #69) per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Final, Protocol

from . import desync, httpmsg, stickiness
from .httpmsg import HEADER_TOO_LARGE, Reject
from .limits import MAX_REQUEST_HEADERS, MAX_REQUEST_LINE, MAX_SINGLE_HEADER
from .model import FixedResponseAction, ForwardAction, RedirectAction
from .redirect import RedirectRequest, build_location, redirect_status
from .rules import LatinHeaders, RequestView, RuleTable, host_without_port
from .xff import process_xff

if TYPE_CHECKING:
    from random import Random

    from .exchange import Exchange
    from .model import AlbConfig, Attributes, Listener
    from .runtime import Member, TargetGroupRuntime
    from .trace_id import TraceIdGenerator
    from .stickiness import StickyCodec

# Decision.kind
FORWARD: Final = 0         # relay to `member` of `group` with `head`
RESPOND: Final = 1         # the ALB answers `status` itself (its error page)
REDIRECT: Final = 2        # redirect action: `status`, Location in `extra`
FIXED_RESPONSE: Final = 3  # fixed-response action: `status`, `body`, `content_type`


class Balancer(Protocol):
    """The ALB-wide state a decision reads (runtime.AlbRuntime)."""

    config: AlbConfig
    attributes: Attributes
    groups: dict[str, TargetGroupRuntime]
    trace: TraceIdGenerator
    sticky: StickyCodec
    clock: Callable[[], float]
    rng: Random  # weighted forward actions draw from it


class Listening(Protocol):
    """One listener as bound on one node (runtime.ListenerRuntime): rules may be replaced at run time."""

    listener: Listener
    rules: RuleTable

    @property
    def draining(self) -> bool: ...


class Decision:
    """What to do with one request, and the access-log fields that come with it."""

    __slots__ = ("kind", "status", "body", "content_type", "extra", "error", "close", "uri", "host", "trace",
                 "priority", "actions", "redirect_url", "error_reason", "group", "member", "head", "cookies",
                 "app_cookie")

    def __init__(self, uri: str, host: str, close: bool) -> None:
        self.kind = RESPOND
        self.status = 0
        self.body: bytes | None = None  # None: the ALB's page for `status`
        self.content_type = "text/html"
        self.extra: tuple[tuple[str, str], ...] = ()
        self.error: str | None = None  # why the ALB answered itself (event log for 5xx)
        self.close = close  # answer with `Connection: close` (a draining node)
        self.uri = uri  # the request target as logged
        self.host = host  # Host, or the absolute-form URL's authority
        self.trace: str | None = None  # X-Amzn-Trace-Id sent upstream and logged
        self.priority: int | None = None
        self.actions: tuple[str, ...] = ()
        self.redirect_url: str | None = None
        self.error_reason: str | None = None
        self.group: TargetGroupRuntime | None = None
        self.member: Member | None = None
        self.head = b""  # the request head for the target
        self.cookies: list[tuple[bytes, bytes]] | None = None  # Set-Cookie headers for the response
        self.app_cookie: bytes | None = None  # app_cookie stickiness starts if the response sets this cookie

    def respond(self, status: int, error: str) -> Decision:
        self.kind, self.status, self.error = RESPOND, status, error
        return self


def check_url(url_len: int) -> None:
    """While an HTTP/1.x request line is read: the URL is what makes it long, 414 (decisions.md #45)."""
    if url_len > MAX_REQUEST_LINE:
        raise Reject(414, "request line larger than 16K")


def check_header(size: int, total: int) -> None:
    """While HTTP/1.x headers are read (`size` of this line, `total` so far): 400 with AWS's page."""
    if size > MAX_SINGLE_HEADER or total > MAX_REQUEST_HEADERS:
        raise Reject(400, "request header larger than 16K / headers larger than 64K", HEADER_TOO_LARGE)


def check_transfer_encoding(value: bytes) -> None:
    """A Transfer-Encoding other than chunked (or identity) is not supported: 501."""
    if httpmsg.bad_transfer_encoding(value):
        raise Reject(501, f"Transfer-Encoding {value!r} is not supported", verdict=desync.verdict("BadTransferEncoding"))


def screen(ex: Exchange, desync_mode: str) -> bool:
    """An HTTP/1.x request head as read (`ex.method`, `ex.version`, `ex.headers`): takes the headers
    the ALB acts on (Host, Content-Length, Transfer-Encoding, User-Agent, X-Forwarded-For,
    X-Amzn-Trace-Id) into `ex`, raises `Reject` for a Transfer-Encoding it does not support (501),
    sets `ex.reject` for another version (505), TRACE (405) or HTTP/1.1 without Host (400), and
    classifies a request the cheap checks flag (odd bytes or names; a GET or HEAD with a body
    header) with the `routing.http.desync_mitigation_mode`'s answer (decisions.md #43, #46):
    block (400), or close after the response. True if it is not RFC 7230 compliant (counted)."""
    suspect = False  # worth a desync classification (desync.py); most requests are not
    te = False
    for name, value in ex.headers:
        lname = name.lower()
        if not value or not value.isascii():
            suspect = True
        if lname == b"transfer-encoding":
            check_transfer_encoding(value)
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
    if not (suspect or ((te or ex.content_length is not None) and ex.method in (b"GET", b"HEAD"))):
        return False
    if ex.verdict is not None:  # read by fallback.py, classified (and mitigated) from its raw head
        return False
    v = ex.verdict = desync.classify(ex.method, ex.headers)
    if v is None:
        return False
    action = desync.mitigation(desync_mode, v)
    if action == desync.BLOCK and ex.reject is None:
        ex.reject = (400, f"desync mitigation blocked a {v.classification} request ({v.reason})")
    elif action == desync.CLOSE:  # routed, then client and target connections closed
        ex.keep_alive, ex.close_target = False, True
    return True


# upstream_failure()
ABORT: Final = 0    # part of the response went out: cut the client connection
RETRY: Final = 1    # one fresh connection to the same target
ANSWER: Final = 2   # the ALB answers the error's status (502, 504) itself


def upstream_failure(ex: Exchange, retryable: bool) -> int:
    """A target connection failed for request `ex` (`retryable`: nothing was received on it)."""
    if ex.response_started:
        return ABORT
    if retryable and ex.reused and not ex.has_body and not ex.retried and ex.group is not None:
        return RETRY  # a pooled connection the target had closed
    return ANSWER


def choose_group(action: ForwardAction, groups: dict[str, TargetGroupRuntime], rng: Random) -> TargetGroupRuntime:
    """The target group of a forward action: the only one, or one drawn by weight."""
    weighted = action.target_groups
    if len(weighted) == 1:
        return groups[weighted[0].name]
    total = sum(g.weight for g in weighted)
    if total <= 0:
        return groups[weighted[0].name]
    point = rng.uniform(0, total)
    for g in weighted:
        point -= g.weight
        if point <= 0 and g.weight > 0:
            return groups[g.name]
    return groups[weighted[-1].name]


class Pipeline:
    """The decisions for the requests of one client connection (either front end makes one).

    Keeps the Host it last worked out, since the requests of one keep-alive connection nearly
    always carry the same one."""

    def __init__(self, alb: Balancer, lr: Listening, client_ip: str, client_port: int) -> None:
        self.alb = alb  # read per request: its attributes (ModifyLoadBalancerAttributes replaces them)
        self.lr = lr  # read per request: its rules and listener (ModifyRule and friends replace them)
        # Fixed for the ALB's life: held here, so a request does not look them up through the Protocols.
        self.groups = alb.groups
        self.trace = alb.trace
        self.sticky = alb.sticky
        self.clock = alb.clock
        self.rng = alb.rng
        self.dns_name = alb.config.dns_name
        self.scheme = "https" if lr.listener.protocol == "HTTPS" else "http"
        self.client_ip = client_ip
        self.client_port = client_port
        # Host-derived values of this connection's last request: the Host received and sent upstream
        # (recomputed whenever the Host or routing.http.preserve_host_header changes).
        self._host_in: str | None = None
        self._host_preserved = False
        self._host_out = ""

    def decide(self, ex: Exchange) -> Decision:
        """Route one request whose head `ex` holds (method, url, version, headers as received)."""
        lr, alb = self.lr, self.alb
        target = httpmsg.parse_target(b"".join(ex.url))
        d = Decision(target.uri, target.authority or ex.host, lr.draining)
        if ex.reject is not None:
            return d.respond(ex.reject[0], ex.reject[1])
        attrs = alb.attributes
        xff = process_xff(ex.xff_lines, mode=attrs.xff_mode, client_ip=self.client_ip,
                          client_port=self.client_port, client_port_enabled=attrs.xff_client_port)
        if xff.too_many:
            return d.respond(463, f"X-Forwarded-For has {xff.address_count} addresses")
        d.trace = self.trace.process(ex.trace_in)
        method = ex.method.decode("latin-1")
        host = d.host
        rules = lr.rules
        match = rules.lookup(method, target.path, host)
        if match is None:
            match = rules.match(RequestView(method, target.path, target.query, host, LatinHeaders(ex.headers),
                                            self.client_ip))
        d.priority = match.priority
        action = match.actions[0]
        listener = lr.listener
        if isinstance(action, RedirectAction):
            loc = build_location(action, RedirectRequest(listener.protocol, host_without_port(host), listener.port,
                                                         target.path, target.query))
            d.kind, d.status, d.actions, d.redirect_url = REDIRECT, redirect_status(action), ("redirect",), loc
            d.extra = (("Location", loc),)
            return d
        if isinstance(action, FixedResponseAction):
            d.kind, d.status, d.actions = FIXED_RESPONSE, int(action.status_code), ("fixed-response",)
            d.body, d.content_type = action.message_body.encode(), action.content_type
            return d
        assert isinstance(action, ForwardAction)
        d.actions = ("forward",)
        group = self._group(ex, d, action)
        d.group = group
        member = self._sticky_member(ex, d, group) if group.attributes.stickiness else group.pick()
        if member is None:
            return d.respond(503, "target group has no registered targets")
        d.kind, d.member = FORWARD, member
        if target.authority is None and host == self._host_in and attrs.preserve_host == self._host_preserved:
            upstream_host = self._host_out  # the same Host as this connection's last request (usual on keep-alive)
        else:
            upstream_host = httpmsg.upstream_host(host or None, listener_port=listener.port,
                                                  preserve=attrs.preserve_host, absolute_authority=target.authority,
                                                  dns_name=self.dns_name)
            if target.authority is None:
                self._host_in, self._host_preserved, self._host_out = host, attrs.preserve_host, upstream_host
        framing = (b"Transfer-Encoding: chunked" if ex.chunked_in else
                   httpmsg.content_length_line(ex.content_length) if ex.content_length is not None else None)
        d.head = httpmsg.build_upstream_head(ex.method, target.origin_form, ex.headers, host=upstream_host,
                                             xff=xff.value, proto=self.scheme, port=listener.port,
                                             trace_id=d.trace, framing=framing)
        return d

    def _group(self, ex: Exchange, d: Decision, action: ForwardAction) -> TargetGroupRuntime:
        """The action's target group: the one a valid AWSALBTG cookie names (target group
        stickiness), else a weighted choice; with stickiness on, the cookie to set."""
        if not action.stickiness_seconds:
            return choose_group(action, self.groups, self.rng)
        group = None
        now = self.clock()
        cookie = stickiness.cookie_value(ex.headers, stickiness.GROUP_COOKIE)
        name = self.sticky.decode(cookie, "#group", now) if cookie else None
        if name in {g.name for g in action.target_groups if g.weight > 0}:
            group = self.groups[name]
        elif cookie is not None and (name is not None or not self.sticky.authentic(cookie)):
            d.error_reason = "AWSALBTGCookieInvalid"  # forged, damaged, URL-encoded or another rule's
        if group is None:
            group = choose_group(action, self.groups, self.rng)
        d.cookies = stickiness.set_cookie_headers(
            self.sticky.encode("#group", group.tg.name, now + action.stickiness_seconds), now,
            (stickiness.GROUP_COOKIE, stickiness.GROUP_CORS_COOKIE))
        return group

    def _sticky_member(self, ex: Exchange, d: Decision, group: TargetGroupRuntime) -> Member | None:
        """Target group stickiness (lb_cookie or app_cookie): the cookie's target if it may still take
        requests, else the algorithm's pick; the ALB's Set-Cookie headers go on `d`."""
        attrs, codec, now = group.attributes, self.sticky, self.clock()
        if attrs.stickiness_type == "app_cookie":
            app = stickiness.cookie_value(ex.headers, attrs.app_cookie_name) is not None
            cookie = stickiness.cookie_value(ex.headers, stickiness.APP_COOKIES[0]) if app else None
            stuck = codec.decode(cookie, group.app_key, now) if cookie else None
            member = group.sticky_member(stuck) or group.pick()
            if member is None:
                return None
            if stuck is not None:  # sticky, or stuck to a new target now: expiry reset on this response
                d.cookies = (d.cookies or []) + stickiness.app_set_cookie_headers(
                    codec.encode(group.app_key, member.addr, now + attrs.app_cookie_seconds), now)
            else:  # sticky from the response that sets the application cookie on
                d.app_cookie = attrs.app_cookie_name.encode()
            return member
        cookie = stickiness.cookie_value(ex.headers, stickiness.COOKIE)
        member = group.sticky_member(codec.decode(cookie, group.tg.name, now) if cookie else None) or group.pick()
        if member is not None:  # expiry reset on every request, as AWS does
            d.cookies = (d.cookies or []) + stickiness.set_cookie_headers(
                codec.encode(group.tg.name, member.addr, now + attrs.stickiness_seconds), now)
        return member

    def response_cookies(self, ex: Exchange, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]] | None:
        """The Set-Cookie headers for a target's response head `headers`: the request's, plus
        AWSALBAPP when app_cookie stickiness starts with this response (it sets the application cookie)."""
        group = ex.group
        if ex.app_cookie is not None and group is not None and stickiness.app_cookie_set(headers, ex.app_cookie):
            now = self.clock()
            return (ex.cookies or []) + stickiness.app_set_cookie_headers(self.sticky.encode(
                group.app_key, ex.target or "", now + group.attributes.app_cookie_seconds), now)
        return ex.cookies
