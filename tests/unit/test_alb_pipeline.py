"""The ALB's decisions, playbook style: request heads, attributes and target health in, decisions
out (services/alb_sim/pipeline.py), without sockets or an event loop.

What stays in the asyncio shells and is tested there (test_alb_server, test_alb_h2): 408 (the
idle timer), 460 (the client left before the answer), the 502/504 a target's failure turns into
(here: only whether the front end retries, answers or cuts the connection)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from services.alb_sim import pipeline
from services.alb_sim.config import Listener, load_config
from services.alb_sim.desync import Verdict
from services.alb_sim.exchange import Exchange
from services.alb_sim.health import CheckResult
from services.alb_sim.httpmsg import HEADER_TOO_LARGE, Reject
from services.alb_sim.pipeline import FIXED_RESPONSE, FORWARD, REDIRECT, RESPOND, Decision, Pipeline
from services.alb_sim.rules import RuleTable
from services.alb_sim.runtime import TargetGroupRuntime
from services.alb_sim.stickiness import StickyCodec
from services.alb_sim.trace_id import TraceIdGenerator

NOW = 1_800_000_000.0
ARN = "arn:aws:elasticloadbalancing:eu-west-2:123456789012:targetgroup/{}/73e2d6bc24d8a067"
HC = {"protocol": "HTTP", "port": "traffic-port", "path": "/healthz", "interval_seconds": 5,
      "timeout_seconds": 2, "healthy_threshold": 2, "unhealthy_threshold": 2, "matcher": "200"}


def tg(name: str, *ports: int, **attributes: str) -> dict[str, Any]:
    return {"name": name, "arn": ARN.format(name), "protocol": "HTTP", "port": 8080, "health_check": HC,
            "targets": [{"id": f"web-{name}-{p}", "ip": "10.0.1.10", "port": p, "az": "a"} for p in ports],
            "attributes": dict(attributes)}


def config(attributes: dict[str, str] | None = None) -> Any:
    return load_config({
        "name": "web-app",
        "arn": "arn:aws:elasticloadbalancing:eu-west-2:123456789012:loadbalancer/app/web-app/50dc6c495c0c9188",
        "dns_name": "web-app.alb.lab.internal",
        "nodes": [{"name": "alb-a", "az": "a", "address": "10.0.0.5"}],
        "attributes": attributes or {},
        "listeners": [{
            "protocol": "HTTP", "port": 80,
            "rules": [
                {"priority": 10, "conditions": [{"field": "path-pattern", "values": ["/api/*"]}],
                 "actions": [{"type": "forward", "target_group": "api"}]},
                {"priority": 20, "conditions": [{"field": "path-pattern", "values": ["/empty/*"]}],
                 "actions": [{"type": "forward", "target_group": "empty"}]},
                {"priority": 30, "conditions": [{"field": "path-pattern", "values": ["/fixed"]}],
                 "actions": [{"type": "fixed-response", "status_code": "418", "content_type": "text/plain",
                              "message_body": "teapot"}]},
                {"priority": 40, "conditions": [{"field": "path-pattern", "values": ["/old/*"]}],
                 "actions": [{"type": "redirect", "redirect": {
                     "protocol": "HTTPS", "port": "443", "host": "#{host}", "path": "/new/#{path}",
                     "query": "#{query}", "status_code": "HTTP_301"}}]},
                {"priority": 50, "conditions": [{"field": "path-pattern", "values": ["/sticky/*"]}],
                 "actions": [{"type": "forward", "target_group": "sticky"}]},
                {"priority": 60, "conditions": [{"field": "query-string", "values": [{"key": "v", "value": "2"}]}],
                 "actions": [{"type": "forward", "target_group": "api"}]},
            ],
            "default_actions": [{"type": "forward", "target_group": "frontend"}]}],
        "target_groups": [tg("api", 8080), tg("frontend", 8081, 8082), tg("empty"),
                          tg("sticky", 8083, 8084, **{"stickiness.enabled": "true",
                                                      "stickiness.type": "lb_cookie"})],
        "log_dir": "/nonexistent",
    })


class Alb:
    """The ALB-wide state pipeline.Balancer asks for: the real collaborators, a fixed clock."""

    def __init__(self, cfg: Any) -> None:
        self.config = cfg
        self.attributes = cfg.attributes
        self.groups = {g.name: TargetGroupRuntime(g) for g in cfg.target_groups}
        self.rng = random.Random(7)
        self.now = NOW
        self.clock = lambda: self.now
        self.trace = TraceIdGenerator(self.clock, random.Random(1))
        self.sticky = StickyCodec(b"k" * 32)


class Bound:
    """One listener on one node (pipeline.Listening)."""

    def __init__(self, cfg: Any, draining: bool = False, listener: Listener | None = None) -> None:
        self.listener: Listener = listener or cfg.listeners[0]
        self.rules = RuleTable(self.listener)
        self.draining = draining


def request(url: bytes = b"/", *headers: tuple[bytes, bytes], method: bytes = b"GET", version: str = "1.1",
            host: bytes | None = b"www.lab.test") -> Exchange:
    """A request head as the HTTP/1.1 front end has read it."""
    ex = Exchange(NOW, 0.0)
    ex.method, ex.version = method, version
    ex.url, ex.url_len = [url], len(url)
    ex.headers = ([(b"Host", host)] if host is not None else []) + list(headers)
    ex.header_bytes = sum(len(n) + len(v) + 4 for n, v in ex.headers)
    return ex


def decide(ex: Exchange, alb: Alb | None = None, *, mode: str = "defensive", bound: Bound | None = None,
           peer: tuple[str, int] = ("198.51.100.7", 40001)) -> Decision:
    alb = alb or Alb(config())
    pipeline.screen(ex, mode)
    return Pipeline(alb, bound or Bound(alb.config), *peer).decide(ex)


def head_lines(d: Decision) -> list[str]:
    return d.head.decode("latin-1").split("\r\n")


def header(d: Decision, name: str) -> list[str]:
    prefix = name.lower() + ":"
    return [line.split(":", 1)[1].strip() for line in head_lines(d) if line.lower().startswith(prefix)]


# --- actions -------------------------------------------------------------------------------
def test_default_action_forwards_with_the_albs_headers() -> None:
    d = decide(request(b"/index.html?a=1", (b"User-Agent", b"curl/8"), (b"Connection", b"keep-alive")))
    assert d.kind == FORWARD and d.priority == 0 and d.actions == ("forward",)
    assert d.group is not None and d.group.tg.name == "frontend"
    assert d.member is not None and d.member.addr == "10.0.1.10:8081"
    assert head_lines(d)[0] == "GET /index.html?a=1 HTTP/1.1"
    assert header(d, "X-Forwarded-For") == ["198.51.100.7"]
    assert header(d, "X-Forwarded-Proto") == ["http"] and header(d, "X-Forwarded-Port") == ["80"]
    assert header(d, "Host") == ["www.lab.test"]
    assert header(d, "X-Amzn-Trace-Id") == [d.trace] and d.trace is not None and d.trace.startswith("Root=1-")
    assert header(d, "User-Agent") == ["curl/8"] and header(d, "Connection") == []  # hop-by-hop dropped
    assert d.uri == "/index.html?a=1" and d.host == "www.lab.test" and not d.close
    assert d.cookies is None and d.error_reason is None and d.redirect_url is None


def test_round_robin_over_the_group_and_a_rule_by_priority() -> None:
    alb = Alb(config())
    bound = Bound(alb.config)
    conn = Pipeline(alb, bound, "198.51.100.7", 40001)
    picks = []
    for _ in range(4):
        ex = request(b"/")
        pipeline.screen(ex, "defensive")
        d = conn.decide(ex)
        assert d.member is not None
        picks.append(d.member.addr)
    assert picks == ["10.0.1.10:8081", "10.0.1.10:8082"] * 2
    d = decide(request(b"/api/items"), alb)
    assert (d.kind, d.priority, d.group and d.group.tg.name) == (FORWARD, 10, "api")
    d = decide(request(b"/other?v=2"), alb)  # a rule that needs the query string
    assert (d.kind, d.priority, d.group and d.group.tg.name) == (FORWARD, 60, "api")


def test_redirect_action() -> None:
    d = decide(request(b"/old/page?x=1", host=b"www.lab.test:80"))
    assert (d.kind, d.status, d.priority, d.actions) == (REDIRECT, 301, 40, ("redirect",))
    assert d.redirect_url == "https://www.lab.test:443/new/old/page?x=1"
    assert d.extra == (("Location", d.redirect_url),)
    assert d.member is None and d.head == b""


def test_fixed_response_action() -> None:
    d = decide(request(b"/fixed"))
    assert (d.kind, d.status, d.priority, d.actions) == (FIXED_RESPONSE, 418, 30, ("fixed-response",))
    assert (d.body, d.content_type) == (b"teapot", "text/plain")


def test_503_when_the_group_has_no_target_that_may_take_the_request() -> None:
    d = decide(request(b"/empty/x"))
    assert (d.kind, d.status, d.error) == (RESPOND, 503, "target group has no registered targets")
    assert d.group is not None and d.group.tg.arn == ARN.format("empty")  # logged with the group's ARN
    assert d.actions == ("forward",) and d.priority == 20
    alb = Alb(config())
    alb.groups["api"].deregister([("10.0.1.10", 8080)])  # no event loop: gone at once
    assert decide(request(b"/api/x"), alb).status == 503


def test_unhealthy_targets_fail_open_and_a_healthy_one_takes_every_request() -> None:
    alb = Alb(config())
    group = alb.groups["frontend"]
    for member in group.members:  # both unhealthy: AWS routes to all of them (fail open)
        for _ in range(2):
            member.health.record(CheckResult.failed())
    assert {decide(request(b"/"), alb).member.addr for _ in range(4)} == {"10.0.1.10:8081", "10.0.1.10:8082"}  # type: ignore[union-attr]
    for _ in range(2):
        group.members[1].health.record(CheckResult.passed())
    assert {decide(request(b"/"), alb).member.addr for _ in range(4)} == {"10.0.1.10:8082"}  # type: ignore[union-attr]


def test_a_draining_node_answers_with_connection_close() -> None:
    alb = Alb(config())
    assert decide(request(b"/"), alb, bound=Bound(alb.config, draining=True)).close is True
    assert decide(request(b"/fixed"), alb, bound=Bound(alb.config, draining=True)).close is True


def test_https_listener_sets_x_forwarded_proto() -> None:
    alb = Alb(config())
    https = dataclasses.replace(alb.config.listeners[0], protocol="HTTPS", port=443)
    d = decide(request(b"/"), alb, bound=Bound(alb.config, listener=https))
    assert header(d, "X-Forwarded-Proto") == ["https"] and header(d, "X-Forwarded-Port") == ["443"]


def test_host_sent_upstream_and_preserve_host_header() -> None:
    assert header(decide(request(b"/", host=b"www.lab.test:8080")), "Host") == ["www.lab.test:8080"]
    assert header(decide(request(b"/", host=b"www.lab.test:80")), "Host") == ["www.lab.test"]
    alb = Alb(config({"routing.http.preserve_host_header.enabled": "true"}))
    assert header(decide(request(b"/", host=b"www.lab.test:80"), alb), "Host") == ["www.lab.test:80"]
    # HTTP/1.0 without Host: the load balancer's DNS name
    assert header(decide(request(b"/", version="1.0", host=None)), "Host") == ["web-app.alb.lab.internal"]
    # absolute form: the URL's authority wins over Host
    d = decide(request(b"http://api.lab.test/x", host=b"www.lab.test"))
    assert d.host == "api.lab.test" and header(d, "Host") == ["api.lab.test"] and head_lines(d)[0] == "GET /x HTTP/1.1"


def test_one_connection_keeps_the_upstream_host_in_step_with_each_request() -> None:
    alb = Alb(config())
    conn = Pipeline(alb, Bound(alb.config), "198.51.100.7", 40001)
    sent = []
    for host in (b"a.lab.test", b"a.lab.test", b"b.lab.test:80", b"a.lab.test"):
        ex = request(b"/", host=host)
        pipeline.screen(ex, "defensive")
        sent.append(header(conn.decide(ex), "Host"))
    assert sent == [["a.lab.test"], ["a.lab.test"], ["b.lab.test"], ["a.lab.test"]]


def test_request_body_framing_goes_upstream() -> None:
    d = decide(request(b"/api/x", (b"Content-Length", b" 5 "), method=b"POST"))
    assert header(d, "Content-Length") == ["5"] and header(d, "Transfer-Encoding") == []
    d = decide(request(b"/api/x", (b"Transfer-Encoding", b"chunked"), method=b"POST"))
    assert header(d, "Transfer-Encoding") == ["chunked"] and header(d, "Content-Length") == []


# --- trace id ------------------------------------------------------------------------------
def test_trace_id_kept_with_self_added_or_a_new_root() -> None:
    d = decide(request(b"/", (b"X-Amzn-Trace-Id", b"Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")))
    assert d.trace is not None and d.trace.startswith("Self=1-")
    assert d.trace.endswith(";Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
    d = decide(request(b"/", (b"X-Amzn-Trace-Id", b"Sampled=1")))
    assert d.trace is not None and d.trace.startswith("Root=1-") and d.trace.endswith(";Sampled=1")


# --- X-Forwarded-For -----------------------------------------------------------------------
@pytest.mark.parametrize("attributes,received,expected", [
    ({}, [], ["198.51.100.7"]),
    ({}, [b"203.0.113.9"], ["203.0.113.9, 198.51.100.7"]),
    ({}, [b"203.0.113.9", b"10.1.1.1"], ["203.0.113.9, 10.1.1.1, 198.51.100.7"]),
    ({"routing.http.xff_client_port.enabled": "true"}, [b"203.0.113.9"], ["203.0.113.9, 198.51.100.7:40001"]),
    ({"routing.http.xff_header_processing.mode": "preserve"}, [b"203.0.113.9"], ["203.0.113.9"]),
    ({"routing.http.xff_header_processing.mode": "preserve"}, [], []),
    ({"routing.http.xff_header_processing.mode": "remove"}, [b"203.0.113.9"], []),
])
def test_xff_modes(attributes: dict[str, str], received: list[bytes], expected: list[str]) -> None:
    ex = request(b"/", *((b"X-Forwarded-For", v) for v in received))
    assert header(decide(ex, Alb(config(attributes))), "X-Forwarded-For") == expected


def test_463_for_more_than_30_x_forwarded_for_addresses() -> None:
    many = ", ".join(f"10.0.0.{i}" for i in range(30)).encode()
    assert decide(request(b"/", (b"X-Forwarded-For", many))).kind == FORWARD  # 30 + the client's own: allowed
    d = decide(request(b"/", (b"X-Forwarded-For", many + b", 10.0.0.30")))
    assert (d.kind, d.status, d.error) == (RESPOND, 463, "X-Forwarded-For has 31 addresses")
    assert d.trace is None and d.priority is None  # not routed


# --- what the ALB answers itself -----------------------------------------------------------
@pytest.mark.parametrize("ex,status,error,keep_alive", [
    (request(b"/", version="1.1", host=None), 400, "HTTP/1.1 request without Host", False),
    (request(b"/", method=b"TRACE"), 405, "TRACE is not allowed", True),
    (request(b"/", version="2.0"), 505, "HTTP/2.0 on an HTTP/1 listener", False),
])
def test_heads_the_alb_refuses_before_routing(ex: Exchange, status: int, error: str, keep_alive: bool) -> None:
    d = decide(ex)
    assert (d.kind, d.status, d.error) == (RESPOND, status, error)
    assert ex.keep_alive is keep_alive and d.priority is None and d.trace is None


def test_http_10_without_host_is_routed() -> None:
    assert decide(request(b"/", version="1.0", host=None)).kind == FORWARD


def test_414_for_a_url_over_16k_and_400_for_oversized_headers() -> None:
    pipeline.check_url(16 * 1024)
    with pytest.raises(Reject) as url:
        pipeline.check_url(16 * 1024 + 1)
    assert (url.value.status, str(url.value), url.value.page) == (414, "request line larger than 16K", None)
    pipeline.check_header(16 * 1024, 64 * 1024)
    for size, total in ((16 * 1024 + 1, 20_000), (100, 64 * 1024 + 1)):
        with pytest.raises(Reject) as big:
            pipeline.check_header(size, total)
        assert (big.value.status, big.value.page) == (400, HEADER_TOO_LARGE)


@pytest.mark.parametrize("value,refused", [
    (b"chunked", False), (b"identity", False), (b"gzip", True), (b"gzip, chunked", True)])
def test_501_for_a_transfer_encoding_other_than_chunked(value: bytes, refused: bool) -> None:
    ex = request(b"/api/x", (b"Transfer-Encoding", value), method=b"POST")
    if not refused:
        assert pipeline.screen(ex, "defensive") is False and ex.reject is None
        return
    with pytest.raises(Reject) as exc:
        pipeline.screen(ex, "defensive")
    assert exc.value.status == 501 and exc.value.verdict == Verdict("Severe", "BadTransferEncoding")


# --- desync mitigation ---------------------------------------------------------------------
ACCEPTABLE = (b"X", b"caf\xc3\xa9")                  # NonCompliantHeader
AMBIGUOUS = (b"Transfer_Encoding", b"chunked")       # SuspiciousHeader
SEVERE = (b"Content-Length", b"1x")                  # BadContentLength (on a GET: worth classifying)


@pytest.mark.parametrize("mode,head,verdict,routed,closes", [
    ("monitor", ACCEPTABLE, Verdict("Acceptable", "NonCompliantHeader"), True, False),
    ("monitor", AMBIGUOUS, Verdict("Ambiguous", "SuspiciousHeader"), True, False),
    ("monitor", SEVERE, Verdict("Severe", "BadContentLength"), True, False),
    ("defensive", ACCEPTABLE, Verdict("Acceptable", "NonCompliantHeader"), True, False),
    ("defensive", AMBIGUOUS, Verdict("Ambiguous", "SuspiciousHeader"), True, True),
    ("defensive", SEVERE, Verdict("Severe", "BadContentLength"), False, True),
    ("strictest", ACCEPTABLE, Verdict("Acceptable", "NonCompliantHeader"), False, False),
    ("strictest", AMBIGUOUS, Verdict("Ambiguous", "SuspiciousHeader"), False, False),
    ("strictest", SEVERE, Verdict("Severe", "BadContentLength"), False, False),
])
def test_desync_classification_and_mitigation(mode: str, head: tuple[bytes, bytes], verdict: Verdict,
                                              routed: bool, closes: bool) -> None:
    ex = request(b"/", head)
    assert pipeline.screen(ex, mode) is True  # counted as non-compliant whatever the mode does
    assert ex.verdict == verdict
    d = Pipeline(Alb(config()), Bound(config()), "198.51.100.7", 40001).decide(ex)
    if routed:
        assert d.kind == FORWARD and ex.reject is None
    else:
        assert (d.kind, d.status) == (RESPOND, 400)
        assert d.error == f"desync mitigation blocked a {verdict.classification} request ({verdict.reason})"
    # defensive mode closes the client and target connections after an Ambiguous request (a
    # Severe one is blocked, and a 400 always closes: the front end sees to that)
    assert ex.close_target is (closes and routed)
    assert ex.keep_alive is not (closes and routed)


def test_compliant_requests_are_not_classified() -> None:
    for ex in (request(b"/"), request(b"/api/x", (b"Content-Length", b"3"), method=b"POST"),
               request(b"/", (b"Accept-Encoding", b"gzip"))):
        assert pipeline.screen(ex, "strictest") is False and ex.verdict is None and ex.reject is None


def test_a_get_with_a_body_header_is_classified() -> None:
    ex = request(b"/", (b"Content-Length", b"0"))
    assert pipeline.screen(ex, "defensive") is True
    assert ex.verdict == Verdict("Acceptable", "GetHeadZeroContentLength") and ex.reject is None
    ex = request(b"/", (b"Content-Length", b"5"), method=b"HEAD")
    assert pipeline.screen(ex, "defensive") is True
    assert ex.verdict == Verdict("Ambiguous", "UndefinedContentLengthSemantics") and ex.close_target


# --- stickiness ----------------------------------------------------------------------------
def test_lb_cookie_stickiness_sets_awsalb_and_follows_it() -> None:
    alb = Alb(config())
    first = decide(request(b"/sticky/a"), alb)
    assert first.kind == FORWARD and first.member is not None and first.cookies is not None
    values = [v.decode() for _, v in first.cookies]
    assert values[0].startswith("AWSALB=") and values[1].startswith("AWSALBCORS=")
    assert values[1].endswith("; Path=/; SameSite=None; Secure")
    cookie = values[0].split(";", 1)[0]
    for _ in range(3):  # round robin would alternate; the cookie holds the target
        d = decide(request(b"/sticky/a", (b"Cookie", cookie.encode())), alb)
        assert d.member is first.member
    alb.groups["sticky"].deregister([(first.member.target.ip, first.member.target.port)])
    moved = decide(request(b"/sticky/a", (b"Cookie", cookie.encode())), alb)
    assert moved.member is not None and moved.member is not first.member and moved.cookies


def test_app_cookie_stickiness_starts_with_the_response_that_sets_the_application_cookie() -> None:
    cfg = config()
    alb = Alb(cfg)
    sticky = alb.groups["sticky"]
    sticky.attributes = dataclasses.replace(sticky.attributes, stickiness_type="app_cookie", app_cookie_name="SESSIONID")
    conn = Pipeline(alb, Bound(cfg), "198.51.100.7", 40001)
    ex = request(b"/sticky/a")
    pipeline.screen(ex, "defensive")
    d = conn.decide(ex)
    assert d.kind == FORWARD and d.cookies is None and d.app_cookie == b"SESSIONID"
    ex.group, ex.target, ex.cookies, ex.app_cookie = d.group, d.member.addr if d.member else None, d.cookies, d.app_cookie
    assert conn.response_cookies(ex, [(b"Content-Type", b"text/plain")]) is None
    cookies = conn.response_cookies(ex, [(b"Set-Cookie", b"SESSIONID=s-1; Path=/")])
    assert cookies is not None and [v.split(b"=")[0] for _, v in cookies] == [
        b"AWSALBAPP-0", b"AWSALBAPP-1", b"AWSALBAPP-2", b"AWSALBAPP-3"]


def test_weighted_forward_with_group_stickiness() -> None:
    weighted = {"type": "forward", "target_groups": [{"name": "api", "weight": 1}, {"name": "frontend", "weight": 3}],
                "stickiness": {"enabled": True, "duration_seconds": 600}}
    cfg = load_config({**raw_config(), "listeners": [{**raw_listener(), "default_actions": [weighted]}]})
    alb = Alb(cfg)
    d = decide(request(b"/x"), alb)
    assert d.kind == FORWARD and d.cookies is not None
    tg_cookie = d.cookies[0][1].decode().split(";", 1)[0]
    assert tg_cookie.startswith("AWSALBTG=") and d.cookies[1][1].startswith(b"AWSALBTGCORS=")
    chosen = d.group
    assert all(decide(request(b"/x", (b"Cookie", tg_cookie.encode())), alb).group is chosen for _ in range(8))
    forged = decide(request(b"/x", (b"Cookie", b"AWSALBTG=forged")), alb)
    assert forged.kind == FORWARD and forged.error_reason == "AWSALBTGCookieInvalid"


def raw_listener() -> dict[str, Any]:
    return {"protocol": "HTTP", "port": 80, "rules": [], "default_actions": []}


def raw_config() -> dict[str, Any]:
    return {"name": "web-app",
            "arn": "arn:aws:elasticloadbalancing:eu-west-2:123456789012:loadbalancer/app/web-app/50dc6c495c0c9188",
            "dns_name": "web-app.alb.lab.internal", "nodes": [{"name": "alb-a", "az": "a", "address": "10.0.0.5"}],
            "target_groups": [tg("api", 8080), tg("frontend", 8081)], "log_dir": "/nonexistent"}


def test_weighted_choice_follows_the_weights() -> None:
    cfg = load_config({**raw_config(), "listeners": [{**raw_listener(), "default_actions": [
        {"type": "forward", "target_groups": [{"name": "api", "weight": 1}, {"name": "frontend", "weight": 3}]}]}]})
    alb = Alb(cfg)
    names = [decide(request(b"/"), alb).group.tg.name for _ in range(400)]  # type: ignore[union-attr]
    assert 60 < names.count("api") < 140 and names.count("api") + names.count("frontend") == 400
    zero = load_config({**raw_config(), "listeners": [{**raw_listener(), "default_actions": [
        {"type": "forward", "target_groups": [{"name": "api", "weight": 0}, {"name": "frontend", "weight": 1}]}]}]})
    alb = Alb(zero)
    assert {decide(request(b"/"), alb).group.tg.name for _ in range(50)} == {"frontend"}  # type: ignore[union-attr]


# --- a target connection fails ---------------------------------------------------------------
@pytest.mark.parametrize("started,retryable,reused,has_body,retried,expected", [
    (True, True, True, False, False, pipeline.ABORT),     # part of the response went out
    (False, True, True, False, False, pipeline.RETRY),    # a pooled connection the target had closed
    (False, True, False, False, False, pipeline.ANSWER),  # a fresh connection failed: 502
    (False, True, True, True, False, pipeline.ANSWER),    # the body may be gone: not resent
    (False, True, True, False, True, pipeline.ANSWER),    # retried once already
    (False, False, True, False, False, pipeline.ANSWER),  # the target had answered something (or timed out: 504)
])
def test_what_a_failed_target_connection_leads_to(started: bool, retryable: bool, reused: bool, has_body: bool,
                                                  retried: bool, expected: int) -> None:
    ex = request(b"/api/x")
    ex.response_started, ex.reused, ex.has_body, ex.retried = started, reused, has_body, retried
    ex.group = TargetGroupRuntime(config().target_groups[0])
    assert pipeline.upstream_failure(ex, retryable) == expected
