"""Desync mitigation: AWS's classification of requests, what each mode does, the access-log fields
classification / classification_reason and error_reason (AWSALBTGCookieInvalid)."""

from __future__ import annotations

import dataclasses
import http.client
import re
import socket
from pathlib import Path
from typing import Iterator

import pytest

from services.alb_sim.config import ForwardAction, Rule, WeightedTargetGroup
from services.alb_sim.config import Condition
from services.alb_sim.desync import (ALLOW, BLOCK, CLOSE, Verdict, classify, classify_head, mitigation,
                                     suspicious_name)
from tests.unit.test_alb_server import Lab, log_entry, read_response, wait_for

H = b"Host: a\r\n"


@pytest.mark.parametrize("head,expected", [
    (b"GET / HTTP/1.1\r\n" + H, None),
    (b"POST /x?a=1 HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n", None),
    (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n", None),
    (b"GET / HTTP/1.1\r\n" + H + b"X: a\x01b\r\n", Verdict("Acceptable", "NonCompliantHeader")),
    (b"GET / HTTP/1.1\r\n" + H + b"X: caf\xc3\xa9\r\n", Verdict("Acceptable", "NonCompliantHeader")),
    (b"GET /a b HTTP/1.1\r\n" + H, Verdict("Acceptable", "SpaceInUri")),
    (b"GET / HTTP/1.2\r\n" + H, Verdict("Acceptable", "NonCompliantVersion")),
    (b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n", Verdict("Acceptable", "GetHeadZeroContentLength")),
    (b"GET / HTTP/1.1\r\n" + H + b"X:\r\n", Verdict("Ambiguous", "EmptyHeader")),
    (b"GET / HTTP/1.1\r\n" + H + b"   \r\n", Verdict("Ambiguous", "EmptyHeader")),
    (b"GET /a\x01b HTTP/1.1\r\n" + H, Verdict("Ambiguous", "AmbiguousUri")),
    (b"HEAD / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n", Verdict("Ambiguous", "UndefinedContentLengthSemantics")),
    (b"GET / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n",
     Verdict("Ambiguous", "UndefinedTransferEncodingSemantics")),
    (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 1\r\n",
     Verdict("Ambiguous", "DuplicateContentLength")),
    (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
     Verdict("Ambiguous", "BothTeClPresent")),
    (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n", Verdict("Ambiguous", "SuspiciousHeader")),
    (b"POST / HTTP/1.1\r\n" + H + b"Content_Length: 3\r\n", Verdict("Ambiguous", "SuspiciousHeader")),
    (b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n", Verdict("Severe", "BadHeader")),
    (b"GET /a\x00 HTTP/1.1\r\n" + H, Verdict("Severe", "BadUri")),
    (b"G(T / HTTP/1.1\r\n" + H, Verdict("Severe", "BadMethod")),
    (b"GET / HTTPS/1.1\r\n" + H, Verdict("Severe", "BadVersion")),
    (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1x\r\n", Verdict("Severe", "BadContentLength")),
    (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n",
     Verdict("Severe", "MultipleContentLength")),
    (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
     Verdict("Severe", "MultipleTransferEncodingChunked")),
    (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n", Verdict("Severe", "BadTransferEncoding")),
    # the most severe finding wins: a non-compliant header does not hide a bad Content-Length
    (b"POST / HTTP/1.1\r\n" + H + b"X: a\x01\r\nContent-Length: 1000\x11\r\n", Verdict("Severe", "BadContentLength")),
])
def test_classify_head(head: bytes, expected: Verdict | None) -> None:
    assert classify_head(head + b"\r\nbody") == expected


def test_classify_parsed_headers() -> None:
    assert classify(b"GET", [(b"Host", b"a"), (b"Accept-Encoding", b"gzip")]) is None
    assert classify(b"POST", [(b"Host", b"a"), (b"Content-Length", b"0")]) is None
    assert classify(b"GET", [(b"Host", b"a"), (b"Content-Length", b"0")]) == ("Acceptable", "GetHeadZeroContentLength")
    assert classify(b"GET", [(b"Host", b"a"), (b"transfer_encoding", b"chunked")]) == ("Ambiguous", "SuspiciousHeader")


@pytest.mark.parametrize("name,expected", [
    (b"content_length", True), (b"transfer-encoding.", True), (b"content-length-", True),
    (b"content-length", False), (b"transfer-encoding", False), (b"accept-encoding", False), (b"x-length", False),
])
def test_suspicious_name(name: bytes, expected: bool) -> None:
    assert suspicious_name(name) is expected


@pytest.mark.parametrize("classification,modes", [
    ("Acceptable", {"monitor": ALLOW, "defensive": ALLOW, "strictest": BLOCK}),
    ("Ambiguous", {"monitor": ALLOW, "defensive": CLOSE, "strictest": BLOCK}),
    ("Severe", {"monitor": ALLOW, "defensive": BLOCK, "strictest": BLOCK}),
])
def test_mitigation_table(classification: str, modes: dict[str, str]) -> None:
    for mode, action in modes.items():
        assert mitigation(mode, Verdict(classification, "x")) == action
        assert mitigation(mode, None) == ALLOW


# --- through the simulator on loopback -----------------------------------------------------------

def lab_with(tmp: Path, mode: str | None) -> Lab:
    lab = Lab(tmp, {"routing.http.desync_mitigation_mode": mode} if mode else None)
    sticky_forward = ForwardAction(target_groups=(WeightedTargetGroup("api", 1), WeightedTargetGroup("frontend", 1)),
                                   stickiness_seconds=60)
    https = lab.config.listeners[0]
    https = dataclasses.replace(https, rules=(*https.rules, Rule(50, (Condition("path-pattern", ("/tg/*",)),),
                                                                  (sticky_forward,))))
    lab.config = dataclasses.replace(lab.config, listeners=(https, *lab.config.listeners[1:]))
    return lab


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Lab]]:
    """One simulator per desync mitigation mode (no attribute: the default, defensive)."""
    started = {mode: lab_with(tmp_path_factory.mktemp(mode), None if mode == "defensive" else mode)
               for mode in ("defensive", "strictest", "monitor")}
    for lab in started.values():
        lab.start()
    yield started
    for lab in started.values():
        lab.stop()


@pytest.fixture(scope="module")
def dlab(labs: dict[str, Lab]) -> Lab:
    return labs["defensive"]


@pytest.fixture(scope="module")
def strict(labs: dict[str, Lab]) -> Lab:
    return labs["strictest"]


@pytest.fixture(scope="module")
def monitor(labs: dict[str, Lab]) -> Lab:
    return labs["monitor"]


def exchange(lab: Lab, raw: bytes) -> tuple[bytes, bool]:
    """Send one raw request; the response head and whether the ALB closed the connection after it."""
    sock = lab.raw_tls()
    sock.settimeout(10)
    sock.sendall(raw)
    response, _ = read_response(sock)
    sock.settimeout(2)
    try:
        closed = sock.recv(1) == b""
    except (TimeoutError, socket.timeout):
        closed = False
    sock.close()
    return response.partition(b"\r\n\r\n")[0], closed


def last_fields(lab: Lab, before: int) -> list[str]:
    assert wait_for(lambda: len(lab.log_lines()) > before)
    return re.findall(r'"[^"]*"|\S+', lab.log_lines()[before])


GET_CL0 = b"GET /api/cl0 HTTP/1.1\r\nHost: www.lab.test\r\nContent-Length: 0\r\n\r\n"
GET_CL5 = b"GET /api/cl5 HTTP/1.1\r\nHost: www.lab.test\r\nContent-Length: 5\r\n\r\nhello"
BAD_CL = b"POST /api/x HTTP/1.1\r\nHost: www.lab.test\r\nContent-Length: 1x\r\n\r\nx"


def test_compliant_request_logs_dashes(dlab: Lab) -> None:
    before = len(dlab.log_lines())
    assert dlab.get("/api/plain", {"Host": "www.lab.test"})[0] == 200
    fields = last_fields(dlab, before)
    assert fields[24:29] == ['"-"', f'"127.0.0.1:{dlab.api_port}"', '"200"', '"-"', '"-"']


def test_defensive_allows_acceptable_and_keeps_the_connection(dlab: Lab) -> None:
    before = len(dlab.log_lines())
    head, closed = exchange(dlab, GET_CL0)
    assert head.startswith(b"HTTP/1.1 200 OK") and not closed
    assert last_fields(dlab, before)[27:29] == ['"Acceptable"', '"GetHeadZeroContentLength"']


def test_defensive_routes_ambiguous_then_closes(dlab: Lab) -> None:
    before = len(dlab.log_lines())
    head, closed = exchange(dlab, GET_CL5)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head and closed
    fields = last_fields(dlab, before)
    assert fields[8:10] == ["200", "200"] and fields[27:29] == ['"Ambiguous"', '"UndefinedContentLengthSemantics"']


def test_non_ascii_header_value_is_acceptable(dlab: Lab) -> None:
    before = len(dlab.log_lines())
    head, closed = exchange(dlab, b"GET /api/u HTTP/1.1\r\nHost: www.lab.test\r\nX-Name: caf\xc3\xa9\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and not closed
    assert last_fields(dlab, before)[27:29] == ['"Acceptable"', '"NonCompliantHeader"']


def test_severe_is_blocked_with_400_and_logged(dlab: Lab) -> None:
    before = len(dlab.log_lines())
    head, closed = exchange(dlab, BAD_CL)
    assert head.startswith(b"HTTP/1.1 400 Bad Request") and closed
    fields = last_fields(dlab, before)
    assert fields[8] == "400" and fields[27:29] == ['"Severe"', '"BadContentLength"']


def test_unsupported_transfer_encoding_is_501_and_classified(dlab: Lab) -> None:
    before = len(dlab.log_lines())
    head, closed = exchange(dlab, b"POST /api/x HTTP/1.1\r\nHost: www.lab.test\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501 Not Implemented") and closed
    assert last_fields(dlab, before)[27:29] == ['"Severe"', '"BadTransferEncoding"']


def test_strictest_blocks_acceptable_requests(strict: Lab) -> None:
    before = len(strict.log_lines())
    head, closed = exchange(strict, GET_CL0)
    assert head.startswith(b"HTTP/1.1 400 Bad Request") and closed
    fields = last_fields(strict, before)
    assert fields[4] == "-" and fields[8] == "400" and fields[27:29] == ['"Acceptable"', '"GetHeadZeroContentLength"']
    assert strict.get("/api/plain", {"Host": "www.lab.test"})[0] == 200  # compliant requests still pass


def test_monitor_allows_ambiguous_and_keeps_the_connection(monitor: Lab) -> None:
    before = len(monitor.log_lines())
    head, closed = exchange(monitor, GET_CL5)
    assert head.startswith(b"HTTP/1.1 200 OK") and not closed
    assert last_fields(monitor, before)[27:29] == ['"Ambiguous"', '"UndefinedContentLengthSemantics"']


def test_noncompliant_requests_are_counted(dlab: Lab) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", dlab.admin_port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    line = next(l for l in text.splitlines() if l.startswith("DesyncMitigationMode_NonCompliant_Request_Count{"))
    assert float(line.rsplit(" ", 1)[1]) >= 5  # every non-compliant request of the tests above


def test_invalid_awsalbtg_cookie_is_logged_as_error_reason(dlab: Lab) -> None:
    status, headers, _ = dlab.get("/tg/first", {"Host": "www.lab.test"})
    good = headers.get_all("Set-Cookie")[0].split("=", 1)[1].split(";", 1)[0]
    for n, (cookie, reason) in enumerate((
            (good, "-"), (good.replace("-", "%2D").replace("_", "%5F") + "%3D", "AWSALBTGCookieInvalid"),
            ("garbage", "AWSALBTGCookieInvalid"))):
        status, headers, _ = dlab.get(f"/tg/again-{n}", {"Host": "www.lab.test", "Cookie": f"AWSALBTG={cookie}"})
        assert status == 200 and headers.get_all("Set-Cookie")[0].startswith("AWSALBTG=")  # routed, cookie renewed
        assert log_entry(dlab, f"/tg/again-{n} HTTP/", 5.0)[24] == f'"{reason}"'
