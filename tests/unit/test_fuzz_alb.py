"""Property tests: mutated and random bytes at the ALB simulator's HTTP/1.1 and HTTP/2 front ends,
and from its targets.

A real simulator runs in-process (the `Lab` of test_alb_server). Whatever arrives, it must answer with
an HTTP status or close the connection; no handler may fail (its error log and the event loop's
exception handler stay empty) and a valid request on a new connection is still served."""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, Callable

import h2.connection
import httptools
import h2.config
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.alb_sim import app, fallback, frontend, h2front, server

from .test_alb_h2 import H2ClientContext
from .test_alb_server import Lab

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
STATUS_OK = {200, 301, 400, 403, 404, 405, 408, 411, 413, 414, 417, 418, 431, 460, 463, 500, 501, 502, 503, 504, 505}


class Recorder:
    """Handler failures: `error` log events from a catch-all or the loop's exception handler (they carry `where`)."""

    def __init__(self) -> None:
        self.errors: list[Any] = []

    def log_event(self, event: str, **fields: object) -> None:
        if event == "error" and "where" in fields:
            self.errors.append(fields)


@pytest.fixture(scope="module")
def fuzz_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Recorder]]:
    rec = Recorder()
    mp = pytest.MonkeyPatch()
    for module in (app, server, h2front, fallback, frontend):  # app's loop exception handler logs `where="event loop"`
        mp.setattr(module, "log_event", rec.log_event)
    lab = Lab(tmp_path_factory.mktemp("albfuzz"))
    lab.start()
    yield lab, rec
    lab.stop()
    mp.undo()


def exchange(port: int, chunks: list[bytes], tls: ssl.SSLContext | None = None, alpn: list[str] | None = None,
             wait: float = 0.2) -> bytes:
    """Send `chunks` as separate writes, then read until the ALB closes or is quiet for `wait` s.

    No half-close: the ALB takes a client's FIN as the client going away (460), so a request
    still waiting for its bytes is simply left open, as a real client would."""
    raw = socket.create_connection(("127.0.0.1", port), 5)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock: socket.socket = raw
    if tls is not None:
        if alpn:
            tls.set_alpn_protocols(alpn)
        sock = tls.wrap_socket(raw, server_hostname="www.lab.test")
    out = b""
    with sock:
        try:
            for chunk in chunks:
                if chunk:
                    sock.sendall(chunk)
            sock.settimeout(wait)
            while data := sock.recv(65536):
                out += data
        except (TimeoutError, OSError):  # quiet (waiting for more of a request), reset or already closed
            pass
    return out


def assert_http_answer(out: bytes) -> None:
    """Every response in `out` (pipelined ones too) starts with a status line of a documented status."""
    if not out:
        return  # closed without answering (e.g. nothing that looked like a request)
    assert out.startswith(b"HTTP/1.1 "), out[:200]
    status = int(out[9:12])
    assert status in STATUS_OK, out[:300]


def assert_still_serving(lab: Lab) -> None:
    out = exchange(lab.http_port, [b"GET /plain/ok HTTP/1.1\r\nHost: www.lab.test\r\nConnection: close\r\n\r\n"],
                   wait=10)
    assert out.startswith(b"HTTP/1.1 200 "), out[:300]


# --- HTTP/1.1 --------------------------------------------------------------------------------

VALID = [
    b"GET /plain/a?x=1 HTTP/1.1\r\nHost: www.lab.test\r\nUser-Agent: fuzz\r\n\r\n",
    b"POST /plain/p HTTP/1.1\r\nHost: www.lab.test\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /plain/c HTTP/1.1\r\nHost: www.lab.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /redirect/me HTTP/1.1\r\nHost: www.lab.test\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    b"HEAD /plain/h HTTP/1.0\r\n\r\n",
    b"GET http://other.test/plain/abs HTTP/1.1\r\nHost: www.lab.test\r\nX-Amzn-Trace-Id: Root=1-x\r\n\r\n",
]

header_lines = st.sampled_from([
    b"Content-Length: 0", b"Content-Length: -1", b"Content-Length: 99999999999999999999999", b"Content-Length: 5",
    b"Content-Length: 5, 5", b"Content-Length:", b"Content-Length: 0x10", b"Content-Length: 3\r\nContent-Length: 4",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: chunked, chunked",
    b"Transfer-Encoding : chunked", b"Transfer-Encoding:\tchunked", b"Transfer-Encoding: identity",
    b"Host:", b"Host: [::1", b"Host: a:b:c", b"Host: \xff\xfe", b"X-Forwarded-For: ,,,", b"X-Forwarded-For: \xe9",
    b"X-Amzn-Trace-Id: Self=;Root=", b"Connection: upgrade\r\nUpgrade: websocket", b"Expect: 100-continue",
    b"Cookie: AWSALBTG=%%%", b"X: " + b"a" * 17000, b"\x00: y", b" folded", b"Bad Header: x", b"X:\x01\x7f",
])
bodies = st.sampled_from([b"", b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"ffffffffffffffffff\r\nx",
                          b"5;ext=\"\x00\"\r\nhello\r\n0\r\n\r\n", b"1\r\nab\r\n", b"0\r\nTrailer: x\r\n\r\n",
                          b"-1\r\n", b"5\r\nhel"])


Mutation = Callable[[st.DrawFn, bytearray, int], bytearray]


def mutate(draw: st.DrawFn, valid: list[bytes], headers: st.SearchStrategy[bytes],
           special: dict[str, Mutation]) -> bytes:
    """0-3 mutations of one of `valid`: bytes inserted, flipped or deleted, a line from `headers`
    after the start line, or one of the message type's own (`special`, each given the position)."""
    msg = bytearray(draw(st.sampled_from(valid)))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["insert", "flip", "delete", "header", *special]))
        pos = draw(st.integers(0, len(msg)))
        if kind == "insert":
            msg[pos:pos] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"\r\n", b"\n", b" ", b"\x00"]))
        elif kind == "flip":
            if msg:
                msg[pos % len(msg)] ^= 1 << draw(st.integers(0, 7))
        elif kind == "delete":
            del msg[pos:pos + draw(st.integers(1, 6))]
        elif kind == "header":
            end = msg.find(b"\r\n")
            if end != -1:
                msg[end + 2:end + 2] = draw(headers) + b"\r\n"
        else:
            msg = special[kind](draw, msg, pos)
    return bytes(msg)


def _new_method(draw: st.DrawFn, req: bytearray, pos: int) -> bytearray:
    req[:req.find(b" ") + 1 if b" " in req else 0] = draw(
        st.sampled_from([b"TRACE ", b"CONNECT ", b"PRI ", b"get ", b"", b"G\x00T ", b"X" * 40 + b" "]))
    return req


REQUEST_MUTATIONS: dict[str, Mutation] = {
    "body": lambda draw, req, pos: req + draw(bodies),
    "pipeline": lambda draw, req, pos: req + draw(st.sampled_from(VALID)),
    "method": _new_method,
    "version": lambda draw, req, pos: req.replace(b"HTTP/1.1\r\n", draw(st.sampled_from(
        [b"HTTP/2.0\r\n", b"HTTP/0.9\r\n", b"HTTP/1.2\r\n", b"HTTP/1.1 \r\n", b"HTTP/11\r\n", b"\r\n"])), 1),
}


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    return mutate(draw, VALID, header_lines, REQUEST_MUTATIONS)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@FUZZ
@given(mutated_requests(), st.lists(st.integers(0, 10_000), max_size=4))
def test_http1_mutated_requests_get_a_status_or_a_close(fuzz_lab: tuple[Lab, Recorder], req: bytes,
                                                        cuts: list[int]) -> None:
    lab, rec = fuzz_lab
    assert_http_answer(exchange(lab.http_port, split(req, cuts)))
    assert rec.errors == []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_http1_random_bytes_get_a_status_or_a_close(fuzz_lab: tuple[Lab, Recorder], data: bytes) -> None:
    lab, rec = fuzz_lab
    assert_http_answer(exchange(lab.http_port, [data]))
    assert rec.errors == []


def test_http1_still_serving_after_fuzzing(fuzz_lab: tuple[Lab, Recorder]) -> None:
    assert_still_serving(fuzz_lab[0])
    assert fuzz_lab[1].errors == []


# --- HTTP/2 ------------------------------------------------------------------------------------

def frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack("!I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack("!I", stream) + payload


def h2_request_frames(path: bytes = b"/fixed") -> bytes:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(b":method", b"GET"), (b":path", path), (b":scheme", b"https"),
                          (b":authority", b"www.lab.test")], end_stream=True)
    return conn.data_to_send()


random_frame = st.builds(frame, st.integers(0, 12), st.integers(0, 255), st.sampled_from([0, 1, 2, 3, 5, 0x7FFFFFFF]),
                         st.binary(max_size=40))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(random_frame, min_size=1, max_size=6), st.booleans())
def test_h2_random_frames_after_preface(fuzz_lab: tuple[Lab, Recorder], frames: list[bytes], valid_first: bool) -> None:
    lab, rec = fuzz_lab
    start = h2_request_frames() if valid_first else b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")
    exchange(lab.https_port, [start, *frames], tls=lab.client_ctx(), alpn=["h2"], wait=0.1)
    assert rec.errors == []


def test_h2_still_serving_after_fuzzing(fuzz_lab: tuple[Lab, Recorder]) -> None:
    lab, rec = fuzz_lab
    with H2ClientContext(lab) as client:
        assert client.get("/fixed").status == 418
    assert rec.errors == []


# --- target responses --------------------------------------------------------------------------

VALID_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nclose-delimited body",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 302 Found\r\nLocation: /x\r\nSet-Cookie: a=b\r\nConnection: keep-alive, x\r\nContent-Length: 0\r\n\r\n",
]

response_header_lines = st.sampled_from([
    b"Content-Length: 99", b"Content-Length: -1", b"Content-Length: 1, 2", b"Content-Length: 99999999999999999999999",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip", b"Connection: close", b"Upgrade: h2c",
    b"Set-Cookie: AWSALB=forged", b"X: " + b"a" * 33000, b"Bad Header: x", b"\x00: y", b" folded", b"X:\x01\x7f",
])


def _status(draw: st.DrawFn, resp: bytearray, pos: int) -> bytearray:
    resp[9:12] = draw(st.sampled_from([b"101", b"199", b"099", b"600", b"999", b"2x0", b"", b"2000"]))
    return resp


def _version(draw: st.DrawFn, resp: bytearray, pos: int) -> bytearray:
    resp[:8] = draw(st.sampled_from([b"HTTP/2.0", b"HTTP/0.9", b"ICY", b"http/1.1", b"HTTP/1.1 "]))
    return resp


RESPONSE_MUTATIONS: dict[str, Mutation] = {
    "truncate": lambda draw, resp, pos: resp[:pos], "status": _status, "version": _version}


@st.composite
def mutated_responses(draw: st.DrawFn) -> bytes:
    return mutate(draw, VALID_RESPONSES, response_header_lines, RESPONSE_MUTATIONS)


@FUZZ
@given(mutated_responses() | st.binary(max_size=200))
def test_mutated_target_responses_are_relayed_or_answered_502(fuzz_lab: tuple[Lab, Recorder], reply: bytes) -> None:
    """Whatever a target answers (then closing its connection), the client gets one status line:
    the target's, relayed, or the ALB's own 502; the simulator's handlers never fail."""
    lab, rec = fuzz_lab
    lab.front.raw_reply = reply
    out = exchange(lab.http_port, [b"GET /plain/raw HTTP/1.1\r\nHost: www.lab.test\r\nConnection: close\r\n\r\n"],
                   wait=2)
    assert out.startswith(b"HTTP/1.1 ") and out[9:12].isdigit() and 100 <= int(out[9:12]) <= 599, out[:300]
    assert out[12:13] == b" ", out[:300]
    # Well-formed responses (interim ones first), perhaps cut short where the target failed mid-body.
    httptools.HttpResponseParser(SimpleNamespace()).feed_data(out)
    assert rec.errors == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated_responses())
def test_mutated_target_responses_over_http2(fuzz_lab: tuple[Lab, Recorder], reply: bytes) -> None:
    """The same through the HTTP/2 front end: a response with a valid :status, or the stream reset."""
    lab, rec = fuzz_lab
    lab.front.raw_reply = reply
    with H2ClientContext(lab) as client:
        r = client.get("/raw")
    if r.reset is None:
        assert r.headers is not None and 100 <= int(dict(r.headers)[b":status"]) <= 599, r.headers
    assert rec.errors == []


def test_still_serving_after_fuzzed_target_responses(fuzz_lab: tuple[Lab, Recorder]) -> None:
    assert_still_serving(fuzz_lab[0])
    assert fuzz_lab[1].errors == []
