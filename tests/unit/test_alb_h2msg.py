"""HTTP/2 header blocks <-> the HTTP/1.1 pipeline's request and response fields (services/alb_sim/h2msg.py)."""

from __future__ import annotations

import pytest

from services.alb_sim.config import ConfigError, load_config
from services.alb_sim.h2msg import fields_size, local_response_fields, parse_request, response_fields
from services.alb_sim.runtime import alpn_protocols
from tests.unit.test_alb_config import mutate

BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"www.lab.test"), (b":path", b"/api/x?y=1")]


def test_request_fields_for_the_pipeline() -> None:
    req = parse_request(BASE + [(b"user-agent", b"curl/8.0"), (b"x-forwarded-for", b"1.2.3.4"),
                                (b"x-forwarded-for", b"5.6.7.8"), (b"x-amzn-trace-id", b"Root=1-a-b"),
                                (b"x-amzn-trace-id", b"Root=1-c-d"), (b"content-length", b" 12 "),
                                (b"cookie", b"a=1; AWSALB=x"), (b"x-custom", b"v")])
    assert (req.method, req.path, req.authority) == (b"GET", b"/api/x?y=1", "www.lab.test")
    assert req.headers == [(b"user-agent", b"curl/8.0"), (b"x-forwarded-for", b"1.2.3.4"),
                           (b"x-forwarded-for", b"5.6.7.8"), (b"x-amzn-trace-id", b"Root=1-a-b"),
                           (b"x-amzn-trace-id", b"Root=1-c-d"), (b"content-length", b" 12 "),
                           (b"cookie", b"a=1; AWSALB=x"), (b"x-custom", b"v")]
    assert req.user_agent == "curl/8.0" and req.xff_lines == ["1.2.3.4", "5.6.7.8"]
    assert req.trace_in == "Root=1-a-b" and req.content_length == b"12" and req.reject is None
    assert req.header_bytes == sum(len(n) + len(v) + 4 for n, v in BASE) + sum(
        len(n) + len(v) + 4 for n, v in req.headers)


def test_authority_wins_over_host_and_host_is_the_fallback() -> None:
    assert parse_request(BASE + [(b"host", b"other.test")]).authority == "www.lab.test"
    no_authority = [f for f in BASE if f[0] != b":authority"]
    assert parse_request(no_authority + [(b"host", b"other.test:8443")]).authority == "other.test:8443"


@pytest.mark.parametrize("fields, status, reason", [
    ([f for f in BASE if f[0] != b":authority"], 400, "HTTP/2 request without :authority or Host"),
    ([(b":method", b"TRACE")] + BASE[1:], 405, "TRACE is not allowed"),
    ([(b":method", b"CONNECT"), (b":authority", b"x.test:443")], 405, "CONNECT is not supported"),
    (BASE[:3] + [(b":path", b"/" + b"a" * 8192)], 400, "HTTP/2 request line larger than 8K"),
    (BASE + [(b"x-big", b"v" * 8190)], 400, "HTTP/2 header b'x-big' larger than 8K"),
    (BASE + [(b"x-h%d" % i, b"v" * 8000) for i in range(9)], 400, "HTTP/2 request headers larger than 64K"),
])
def test_requests_the_alb_answers_itself(fields, status: int, reason: str) -> None:
    assert parse_request(fields).reject == (status, reason)


def test_limits_are_inclusive() -> None:
    assert parse_request(BASE + [(b"x-big", b"v" * (8192 - 9))]).reject is None  # 5 + 8183 + 4 = 8K exactly
    assert parse_request(BASE[:3] + [(b":path", b"/" + b"a" * (8192 - 14))]).reject is None


def test_response_fields_drop_hop_by_hop_and_lower_case_names() -> None:
    headers = [(b"Content-Type", b"text/plain"), (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"),
               (b"Keep-Alive", b"timeout=5"), (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"99"),
               (b"Set-Cookie", b"a=1"), (b"Upgrade", b"h2c")]
    assert response_fields(200, headers, content_length=None) == [
        (b":status", b"200"), (b"content-type", b"text/plain"), (b"set-cookie", b"a=1")]
    assert response_fields(204, [(b"Content-Length", b"0")], content_length=b"0",
                           extra=[(b"Set-Cookie", b"AWSALB=x")]) == [
        (b":status", b"204"), (b"content-length", b"0"), (b"set-cookie", b"AWSALB=x")]


def test_local_response_fields() -> None:
    fields = local_response_fields(301, date="Thu, 01 Jan 2026 00:00:00 GMT", content_type="text/html", length=134,
                                   extra=[("Location", "https://www.lab.test:443/")])
    assert fields == [(b":status", b"301"), (b"server", b"awselb/2.0"), (b"date", b"Thu, 01 Jan 2026 00:00:00 GMT"),
                      (b"content-type", b"text/html"), (b"content-length", b"134"),
                      (b"location", b"https://www.lab.test:443/")]
    assert fields_size([(b":status", b"200"), (b"a", b"bc")]) == (7 + 3 + 4) + (1 + 2 + 4) + 2


def test_routing_http2_enabled_attribute() -> None:
    assert load_config(mutate(lambda d: None)).attributes.http2 is True  # AWS default
    off = load_config(mutate(lambda d: d["attributes"].update({"routing.http2.enabled": "false"})))
    assert off.attributes.http2 is False
    assert (alpn_protocols(True), alpn_protocols(False)) == (["h2", "http/1.1"], ["http/1.1"])
    with pytest.raises(ConfigError) as info:
        load_config(mutate(lambda d: d["attributes"].update({"routing.http2.enabled": "on"})))
    assert str(info.value) == ("attributes.routing.http2.enabled: ValidationError: Load balancer attribute "
                               "'routing.http2.enabled' value 'on' is not valid: must be one of true, false")
