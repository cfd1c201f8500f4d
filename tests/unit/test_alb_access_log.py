"""ALB access-log entries: field order and quoting exactly as AWS's example line."""

from __future__ import annotations

import calendar
import datetime
import re

from hypothesis import given, strategies as st

from services.alb_sim.access_log import (
    FIELD_NAMES, AccessLogEntry, connection_part, format_entry, iso_time, malformed_request_field, millis, quoted,
    relayed_line, request_field,
)

# AWS's example (ALB access-log docs, HTTP entry), fields 1-29.
AWS_EXAMPLE = (
    'http 2018-07-02T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 '
    '0.000 0.001 0.000 200 200 34 366 "GET http://www.example.com:80/ HTTP/1.1" "curl/7.46.0" - - '
    'arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 '
    '"Root=1-58337262-36d228ad5d99923122bbe354" "-" "-" 0 2018-07-02T22:22:48.364000Z "forward" "-" "-" '
    '"10.0.0.1:80" "200" "-" "-"'
)


def ts(text: str) -> float:
    base, frac = text.rstrip("Z").split(".")
    return calendar.timegm(tuple(int(x) for x in re.split(r"[-T:]", base)) + (0, 0, 0)) + int(frac) / 1e6  # type: ignore[arg-type]


def example_entry() -> AccessLogEntry:
    return AccessLogEntry(
        type="http", time=ts("2018-07-02T22:23:00.186641Z"), elb="app/my-loadbalancer/50dc6c495c0c9188",
        client="192.168.131.39:2817", target="10.0.0.1:80", request_processing_time=0.0,
        target_processing_time=0.001, response_processing_time=0.0, elb_status_code=200, target_status_code=200,
        received_bytes=34, sent_bytes=366,
        request=request_field("GET", "http", "www.example.com", 80, "/", "HTTP/1.1"), user_agent="curl/7.46.0",
        target_group_arn="arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067",
        trace_id="Root=1-58337262-36d228ad5d99923122bbe354", matched_rule_priority=0,
        request_creation_time=ts("2018-07-02T22:22:48.364000Z"), actions_executed=("forward",),
    )


def test_aws_example_line_reproduced_then_conn_trace_id() -> None:
    assert format_entry(example_entry()) == AWS_EXAMPLE + " -"
    entry = example_entry()
    entry.conn_trace_id = "TID_1234abcd"
    assert format_entry(entry) == AWS_EXAMPLE + " TID_1234abcd"


def test_field_count_matches_names() -> None:
    fields = re.findall(r'"[^"]*"|\S+', format_entry(example_entry()))
    assert len(fields) == len(FIELD_NAMES) == 30
    assert FIELD_NAMES[12] == "request" and FIELD_NAMES[20] == "matched_rule_priority"


def test_not_dispatched_conventions() -> None:
    entry = AccessLogEntry(type="https", time=0.0, elb="app/a/1", client="10.0.0.9:5000",
                           request_creation_time=0.0, elb_status_code=503, matched_rule_priority=10,
                           actions_executed=("forward",), request="GET https://h:443/x HTTP/1.1",
                           ssl_cipher="ECDHE-ECDSA-AES128-GCM-SHA256", ssl_protocol="TLSv1.2",
                           domain_name="h", chosen_cert_arn="arn:aws:acm:x")
    assert format_entry(entry) == (
        'https 1970-01-01T00:00:00.000000Z app/a/1 10.0.0.9:5000 - -1 -1 -1 503 - 0 0 '
        '"GET https://h:443/x HTTP/1.1" "-" ECDHE-ECDSA-AES128-GCM-SHA256 TLSv1.2 - "-" "h" "arn:aws:acm:x" 10 '
        '1970-01-01T00:00:00.000000Z "forward" "-" "-" "-" "-" "-" "-" -')


def test_malformed_request_and_unknown_priority() -> None:
    entry = AccessLogEntry(type="http", time=0.0, elb="app/a/1", client="1.2.3.4:1", request_creation_time=0.0,
                           elb_status_code=400, request=malformed_request_field("http", "10.20.1.30", 80))
    line = format_entry(entry)
    assert '"- http://10.20.1.30:80- -"' in line
    assert re.findall(r'"[^"]*"|\S+', line)[20] == "-"


def test_quotes_and_control_characters_are_escaped() -> None:
    entry = example_entry()
    entry.user_agent = 'evil "agent"\n\\x'
    line = format_entry(entry)
    assert '"evil \\"agent\\"\\x0a\\\\x"' in line
    assert "\n" not in line


def test_iso_time_has_microseconds() -> None:
    assert iso_time(1530570180.186641) == "2018-07-02T22:23:00.186641Z"
    assert iso_time(1530570180.9999996) == "2018-07-02T22:23:01.000000Z"  # rounds into the next second


@given(st.lists(st.floats(min_value=0, max_value=4102444800, allow_nan=False), max_size=20))
def test_iso_time_equals_datetime_whatever_order_seconds_come_in(epochs: list[float]) -> None:
    """The date part is remembered for the last second only; times from other seconds, before or
    after, must still be formatted from scratch."""
    for epoch in epochs:
        second = int(epoch // 1)
        micros = int(round((epoch - second) * 1_000_000))
        second, micros = (second + 1, micros - 1_000_000) if micros >= 1_000_000 else (second, micros)
        expected = datetime.datetime.fromtimestamp(second, tz=datetime.timezone.utc).replace(microsecond=micros)
        assert iso_time(epoch) == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_processing_times_have_millisecond_precision() -> None:
    assert [millis(s) for s in (0.0, 0.0004, 0.0005, 0.001, 0.0126, 1.0, 59.9996, 61.5, 3600.25)] == [
        "0.000", "0.000", "0.001", "0.001", "0.013", "1.000", "60.000", "61.500", "3600.250"]
    assert millis(-0.002) == "0.000"  # a clock step backwards is never logged as a negative time


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_millis_is_printf_3f_away_from_half_milliseconds(seconds: float) -> None:
    """The table-driven formatter writes what "%.3f" would (it rounds exact halves up, "%.3f" to even)."""
    if abs((seconds * 1000) % 1 - 0.5) > 1e-6:
        assert millis(seconds) == "%.3f" % seconds


text = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=30)
seconds = st.floats(min_value=-0.001, max_value=100.0, allow_nan=False)


@given(time=st.floats(min_value=1e9, max_value=2e9), request_time=seconds, target_time=seconds,
       status=st.integers(100, 599), received=st.integers(0, 10**9), sent=st.integers(0, 10**9),
       uri=text, user_agent=st.none() | text, trace=text, priority=st.integers(0, 50000),
       actions=st.sampled_from([("forward",), ("waf", "forward"), ("authenticate", "forward")]),
       error_reason=st.none() | text, verdict=st.none() | st.tuples(text, text),
       cipher=st.none() | text, sni=st.none() | text)
def test_relayed_line_is_format_entry_of_the_same_request(
        time: float, request_time: float, target_time: float, status: int, received: int, sent: int, uri: str,
        user_agent: str | None, trace: str, priority: int, actions: tuple[str, ...], error_reason: str | None,
        verdict: tuple[str, str] | None, cipher: str | None, sni: str | None) -> None:
    """The relay's fast formatter and the general one agree on every request relayed in full."""
    request = request_field("GET", "https", "www.example.com", 443, "/" + uri, "HTTP/1.1")
    entry = AccessLogEntry(
        type="https", time=time, elb="app/a/1", client="10.0.0.9:5000", request_creation_time=time - 1.5,
        elb_status_code=status, target="10.0.0.1:80", request_processing_time=request_time,
        target_processing_time=target_time, response_processing_time=0.0, target_status_code=status,
        received_bytes=received, sent_bytes=sent, request=request, user_agent=user_agent, ssl_cipher=cipher,
        ssl_protocol="TLSv1.3", target_group_arn="arn:aws:elasticloadbalancing:eu-west-2:1:targetgroup/t/1",
        trace_id=trace or None, domain_name=sni, chosen_cert_arn="arn:aws:acm:eu-west-2:1:certificate/c",
        matched_rule_priority=priority, actions_executed=actions, error_reason=error_reason,
        classification=verdict[0] if verdict else None, classification_reason=verdict[1] if verdict else None)
    part = connection_part(entry)
    line = relayed_line(
        part, time, "10.0.0.1:80", request_time, target_time, status, received, sent, request,
        quoted(user_agent[:8192] if user_agent else None), entry.target_group_arn or "", quoted(trace or None),
        priority, time - 1.5, quoted(",".join(actions)), quoted(error_reason),
        f"{quoted(verdict[0])} {quoted(verdict[1])}" if verdict else '"-" "-"')
    assert line == format_entry(entry, part)
