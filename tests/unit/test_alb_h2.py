"""The ALB's HTTP/2 front end on loopback: the simulator in-process (tests/unit/test_alb_server.py's
Lab: HTTPS echo targets, real sockets), driven by a real `h2` client connection over TLS with ALPN h2."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterator

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame

from services.alb_sim import h2msg
from tests.unit.test_alb_server import TRACE_ROOT, Lab, header_values, log_entry, wait_for


@dataclass
class Response:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    interim: list[int] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: ErrorCodes | None = None

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


class H2Client:
    """A blocking HTTP/2 client: one TLS socket, one h2 client connection object."""

    def __init__(self, lab: Lab, *, validate: bool = True, alpn: tuple[str, ...] = ("h2", "http/1.1"),
                 preface: bool = True) -> None:
        ctx = lab.client_ctx()
        ctx.set_alpn_protocols(list(alpn))
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", lab.https_port), 15),
                                    server_hostname="www.lab.test")
        self.sock.settimeout(15)
        self.port = lab.https_port
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=validate,
            normalize_outbound_headers=validate))
        self.responses: dict[int, Response] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.conn.initiate_connection()
        if self.alpn == "h2" and preface:
            self.flush()

    @property
    def alpn(self) -> str | None:
        return self.sock.selected_alpn_protocol()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, *, method: str = "GET", headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
                body: bytes | None = None, end: bool = True, authority: str = "www.lab.test") -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "https"), (":authority", authority), (":path", path), *headers]
        self.conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in fields],
                               end_stream=body is None and end)
        self.responses[sid] = Response()
        self.flush()
        if body is not None:
            self.send_body(sid, body, end=end)
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True) -> None:
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.read_once()
                continue
            self.conn.send_data(sid, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def read_once(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(data):
            sid = getattr(event, "stream_id", 0)
            r = self.responses.get(sid)
            if isinstance(event, h2.events.ResponseReceived):
                r.headers = event.headers
            elif isinstance(event, h2.events.InformationalResponseReceived):
                r.interim.append(int(dict(event.headers)[b":status"]))
            elif isinstance(event, h2.events.DataReceived):
                r.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.StreamEnded):
                r.ended = True
            elif isinstance(event, h2.events.StreamReset):
                r.reset = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event
        self.flush()

    def wait(self, *sids: int) -> list[Response]:
        deadline = time.monotonic() + 15
        while not all(self.responses[s].ended or self.responses[s].reset is not None for s in sids):
            assert not self.closed, "the ALB closed the connection"
            assert time.monotonic() < deadline, "no complete response within 15 s"
            self.read_once()
        return [self.responses[s] for s in sids]

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.wait(self.request(path, **kwargs))[0]

    def read_until_closed(self) -> None:
        deadline = time.monotonic() + 15
        while not self.closed:
            assert time.monotonic() < deadline, "the ALB did not close the connection"
            try:
                self.read_once()
            except (ConnectionResetError, ssl.SSLError):
                self.closed = True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("alb-h2"))
    lab.start()
    yield lab
    lab.stop()


@pytest.fixture
def client(lab: Lab) -> Iterator[H2Client]:
    c = H2Client(lab)
    yield c
    c.close()


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_no_content_responses_carry_no_content_length(lab: Lab, client: H2Client, status: bytes) -> None:
    """Found by fuzzing target responses: a 304 with `Content-Length: 99` was relayed with that
    content-length and no DATA, which h2 (the library httpx uses) rejects (decisions.md #62)."""
    lab.front.raw_reply = b"HTTP/1.1 " + status + b"\r\nContent-Length: 99\r\nETag: x\r\n\r\n"
    try:
        r = client.get("/raw-no-content")
    finally:
        lab.front.raw_reply = b""
    assert r.headers is not None and r.ended and r.reset is None and r.body == b""
    fields = dict(r.headers)
    assert fields[b":status"] == status[:3] and b"content-length" not in fields
    assert status != b"304 Not Modified" or fields[b"etag"] == b"x"


def test_https_listener_negotiates_h2_and_still_http11(lab: Lab) -> None:
    h2c, h1 = H2Client(lab), H2Client(lab, alpn=("http/1.1",))
    assert (h2c.alpn, h1.alpn) == ("h2", "http/1.1")
    h2c.close()
    h1.close()


def test_request_reaches_target_as_http11_with_alb_headers(lab: Lab, client: H2Client) -> None:
    r = client.get("/api/h2?x=1", headers=[("x-forwarded-for", "1.2.3.4"), ("x-custom", "Value"),
                                           ("user-agent", "h2-test/1.0")])
    assert r.status == 200 and r.header(b"x-backend") == b"api" and r.header(b"content-type") == b"application/json"
    rec = r.json()
    assert rec["method"] == "GET" and rec["url"] == "/api/h2?x=1"
    # AWS: only the headers the ALB writes are re-cased for the HTTP/1.1 target; the rest stay lower case.
    names = [k for k, _ in rec["headers"]]
    assert names[:5] == ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Port", "Host", "X-Amzn-Trace-Id"]
    assert "x-custom" in names and "user-agent" in names
    assert header_values(rec, "X-Forwarded-For") == ["1.2.3.4, 127.0.0.1"]
    assert header_values(rec, "X-Forwarded-Proto") == ["https"]
    assert header_values(rec, "X-Forwarded-Port") == [str(lab.https_port)]
    assert header_values(rec, "Host") == [f"www.lab.test:{lab.https_port}"]
    (trace,) = header_values(rec, "X-Amzn-Trace-Id")
    assert TRACE_ROOT.match(trace)
    assert lab.api.requests[-1]["url"] == "/api/h2?x=1"


def test_concurrent_streams_on_one_connection(lab: Lab, client: H2Client) -> None:
    paths = [f"/api/c{i}" if i % 3 else f"/front{i}" for i in range(30)] + ["/fixed", "/empty/x"]
    sids = [client.request(p) for p in paths]  # all open before any answer is read
    responses = client.wait(*sids)
    for path, r in zip(paths, responses):
        if path == "/fixed":
            assert (r.status, bytes(r.body)) == (418, b"teapot")
        elif path == "/empty/x":
            assert r.status == 503
        else:
            assert r.status == 200 and r.json()["url"] == path
            assert r.json()["backend"] == ("api" if path.startswith("/api/") else "frontend")


def test_alb_errors_are_http2_responses(lab: Lab, client: H2Client) -> None:
    r = client.get("/empty/x")
    assert r.status == 503 and r.header(b"server") == b"awselb/2.0"
    assert b"<title>503 Service Temporarily Unavailable</title>" in r.body
    assert int(r.header(b"content-length")) == len(r.body)
    r = client.get("/dead/x")
    assert r.status == 502 and b"<title>502 Bad Gateway</title>" in r.body
    r = client.get("/api/x", method="TRACE")
    assert r.status == 405 and b"405 Method Not Allowed" in r.body
    r = client.get("/api/x", headers=[("x-forwarded-for", ", ".join(f"10.0.0.{i}" for i in range(31)))])
    assert r.status == 463 and r.header(b"server") == b"awselb/2.0"
    r = client.get("/fixed")
    assert (r.status, r.header(b"content-type"), bytes(r.body)) == (418, b"text/plain", b"teapot")
    r = client.get("/empty/x", method="HEAD")
    assert r.status == 503 and r.body == b"" and int(r.header(b"content-length")) > 0
    assert client.get("/api/still-open").status == 200  # errors end streams, not the connection


def test_request_bodies_with_and_without_content_length(lab: Lab, client: H2Client) -> None:
    payload = b"z" * (3 * 1024 * 1024 + 5)  # far beyond the initial 64K windows: flow control both ways
    r = client.get("/api/upload", method="POST", body=payload, headers=[("content-length", str(len(payload)))])
    assert r.status == 200 and r.json()["body_bytes"] == len(payload)
    assert header_values(r.json(), "Content-Length") == [str(len(payload))]
    r = client.get("/api/upload2", method="POST", body=payload)  # no content-length: chunked to the target
    assert r.status == 200 and r.json()["body_bytes"] == len(payload)
    assert header_values(r.json(), "Transfer-Encoding") == ["chunked"]


def test_large_download_respects_flow_control(lab: Lab, client: H2Client) -> None:
    size = 5 * 1024 * 1024
    r = client.get(f"/api/big?n={size}")
    assert r.status == 200 and len(r.body) == size and r.header(b"transfer-encoding") is None
    # The target was paused for the client's window while its whole response was read: the pooled
    # connection must come back readable.
    for i in range(4):
        assert client.get(f"/api/after-big{i}").status == 200


def test_access_log_entry_type_h2(lab: Lab, client: H2Client) -> None:
    marker = f"/api/log-{time.monotonic_ns()}"
    r = client.get(marker, headers=[("user-agent", "h2-test/1.0")])
    assert r.status == 200
    fields = log_entry(lab, marker)
    assert len(fields) == 30
    assert fields[0] == "h2" and fields[4] == f"127.0.0.1:{lab.api_port}" and fields[8:10] == ["200", "200"]
    assert fields[12] == f'"GET https://www.lab.test:{lab.https_port}{marker} HTTP/2.0"'
    assert fields[13] == '"h2-test/1.0"' and fields[20] == "10" and fields[22] == '"forward"'
    assert fields[15].startswith("TLSv1.2") and fields[18] == '"www.lab.test"'
    assert int(fields[10]) > len(marker) and int(fields[11]) > len(r.body)  # received / sent bytes
    assert fields[17] == f'"{r.json()["headers"][4][1]}"'  # the trace id the target received

    marker = f"/empty/log-{time.monotonic_ns()}"
    assert client.get(marker).status == 503
    fields = log_entry(lab, marker)
    assert fields[0] == "h2" and fields[4] == "-" and fields[8:10] == ["503", "-"]


def test_metrics_count_h2_requests(lab: Lab, client: H2Client) -> None:
    def count(name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{lab.admin_port}/metrics", timeout=5) as r:
            text = json.load(r) if r.headers.get_content_type() == "application/json" else r.read().decode()
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith(name + "{") and "TargetGroup" not in line]
        return values[0] if values else 0.0

    before_requests, before_5xx = count("RequestCount"), count("HTTPCode_ELB_5XX_Count")
    client.get("/api/m")
    client.get("/empty/m")
    assert count("RequestCount") - before_requests == 2
    assert count("HTTPCode_ELB_5XX_Count") - before_5xx == 1


def test_client_reset_stream_is_logged_460_and_connection_lives_on(lab: Lab, client: H2Client) -> None:
    marker = f"/api/slow-{time.monotonic_ns()}"
    sid = client.request(marker)
    assert wait_for(lambda: any(r["url"] == marker for r in lab.api.requests), 5.0)
    client.conn.reset_stream(sid, ErrorCodes.CANCEL)
    client.flush()
    fields = log_entry(lab, marker)
    assert fields[0] == "h2" and fields[8] == "460" and fields[4] == f"127.0.0.1:{lab.api_port}"
    assert client.get("/api/after-reset").status == 200


def test_garbage_instead_of_frames_gets_goaway_and_service_continues(lab: Lab) -> None:
    c = H2Client(lab)
    c.sock.sendall(b"\x00\x40\x01\x00\x00\x00\x00\x00\x01" + b"\xff" * 16385)  # DATA over the 16K frame size
    c.read_until_closed()
    assert c.goaway is not None and c.goaway.error_code == ErrorCodes.FRAME_SIZE_ERROR
    c.close()
    c = H2Client(lab, preface=False)
    c.sock.sendall(b"GET / HTTP/1.1\r\nHost: www.lab.test\r\n\r\n")  # no connection preface
    c.read_until_closed()
    assert c.goaway is not None and c.goaway.error_code == ErrorCodes.PROTOCOL_ERROR
    c.close()
    with H2ClientContext(lab) as c2:
        assert c2.get("/api/after-garbage").status == 200


def test_forbidden_connection_header_gets_protocol_error(lab: Lab) -> None:
    c = H2Client(lab, validate=False)
    c.request("/api/x", headers=[("connection", "keep-alive")])  # RFC 9113 §8.2.2: malformed
    c.read_until_closed()
    assert c.goaway is not None and c.goaway.error_code == ErrorCodes.PROTOCOL_ERROR
    c.close()


def test_data_on_a_closed_stream_is_a_stream_error_only(lab: Lab, client: H2Client) -> None:
    sid = client.request("/fixed")
    client.wait(sid)
    frame = DataFrame(sid, b"late", flags=["END_STREAM"])  # past h2's own client-side checks
    client.sock.sendall(frame.serialize())
    assert client.get("/api/after-late-data").status == 200
    assert client.goaway is None


def test_routing_http2_enabled_false_offers_only_http11(lab: Lab) -> None:
    def set_attribute(value: str) -> None:
        body = json.dumps({"Attributes": [{"Key": "routing.http2.enabled", "Value": value}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{lab.admin_port}/attributes", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200

    set_attribute("false")
    try:
        c = H2Client(lab)
        assert c.alpn == "http/1.1"
        c.close()
    finally:
        set_attribute("true")
    c = H2Client(lab)
    assert c.alpn == "h2"
    c.close()


def test_goaway_after_the_request_limit(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2msg, "MAX_REQUESTS_PER_CONNECTION", 3)  # AWS: 10,000
    c = H2Client(lab)
    sids = [c.request(f"/api/limit{i}") for i in range(3)]
    assert all(r.status == 200 for r in c.wait(*sids))  # the streams before GOAWAY are all answered
    c.read_until_closed()
    assert c.goaway is not None and c.goaway.error_code == ErrorCodes.NO_ERROR
    assert c.goaway.last_stream_id == sids[-1]
    c.close()
    c = H2Client(lab)
    first = c.request("/api/slow-limit")  # never answered: the connection cannot go away yet
    sids = [c.request(f"/api/limit{i}") for i in range(3)]
    assert [r.status for r in c.wait(*sids[:2])] == [200, 200]
    assert c.wait(sids[2])[0].reset == ErrorCodes.REFUSED_STREAM  # over the limit: safe to retry elsewhere
    assert c.goaway is None and not c.responses[first].ended
    c.close()


class H2ClientContext:
    def __init__(self, lab: Lab) -> None:
        self.client = H2Client(lab)

    def __enter__(self) -> H2Client:
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def idle_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("alb-h2-idle"), {"idle_timeout.timeout_seconds": "1"})
    lab.start()
    yield lab
    lab.stop()


def test_idle_h2_connection_gets_goaway_then_close(idle_lab: Lab) -> None:
    c = H2Client(idle_lab)
    assert c.get("/api/once").status == 200
    started = time.monotonic()  # the idle clock started a moment earlier, when the stream ended
    c.read_until_closed()
    assert time.monotonic() - started >= 0.7  # idle_timeout 1 s, not at once
    assert c.goaway is not None and c.goaway.error_code == ErrorCodes.NO_ERROR
    c.close()


def test_request_and_client_goaway_in_one_read_is_logged_460_not_an_error(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by fuzzing: h2 refuses to send after the client's GOAWAY, and the ALB used to try to
    answer a stream that arrived with it (an `error` log line, a 418 logged that never left)."""
    c = H2Client(lab, preface=False)
    marker = f"/fixed?goaway-{time.monotonic_ns()}"
    c.conn.send_headers(1, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"www.lab.test"),
                            (b":path", marker.encode())], end_stream=True)
    goaway = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + b"\x00" * 8  # GOAWAY, last stream 0, NO_ERROR
    c.sock.sendall(c.conn.data_to_send() + goaway)  # preface, SETTINGS, HEADERS, GOAWAY: one read for the ALB
    while c.sock.recv(65536):  # no SETTINGS ACK back: a frame after our GOAWAY would be an error of ours
        pass
    fields = log_entry(lab, marker)
    assert fields[0] == "h2" and fields[8] == "460"
    assert '"event": "error"' not in capsys.readouterr().out
    c.sock.close()
    with H2ClientContext(lab) as c2:
        assert c2.get("/api/after-goaway").status == 200


def test_target_answer_after_a_connection_error_is_logged_460_not_an_error(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by fuzzing: a connection error (here DATA on stream 0) ends the connection with GOAWAY
    while a stream waits for its target; the target's later answer used to be sent into the closed
    h2 connection (StreamClosedError, an `error` log line)."""
    c = H2Client(lab, preface=False)
    marker = f"/api/late-{time.monotonic_ns()}"
    c.conn.send_headers(1, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"www.lab.test"),
                            (b":path", marker.encode())], end_stream=True)
    c.sock.sendall(c.conn.data_to_send())
    # the request is with the target, which answers 0.3 s after it arrived
    assert wait_for(lambda: any(r["url"] == marker for r in lab.api.requests), 5.0)
    c.sock.sendall(b"\x00\x00\x00\x00\x00\x00\x00\x00\x00")  # DATA on stream 0: PROTOCOL_ERROR
    time.sleep(0.5)  # past the target's answer, the TLS connection not yet torn down by the client
    fields = log_entry(lab, marker)
    assert fields[0] == "h2" and fields[8] == "460"
    assert '"event": "error"' not in capsys.readouterr().out
    c.sock.close()


@pytest.mark.parametrize("path", ["/fixed", "/api/x"])
def test_request_and_its_reset_in_one_read_is_logged_once_not_an_error(
        lab: Lab, capsys: pytest.CaptureFixture[str], path: str) -> None:
    """Found by fuzzing: h2 applies the whole read before handing out events, so a request and the
    client's RST_STREAM for it in one read left the ALB answering a stream h2 had already closed."""
    c = H2Client(lab, preface=False)
    marker = f"{path}?reset-{time.monotonic_ns()}"
    c.conn.send_headers(1, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"www.lab.test"),
                            (b":path", marker.encode())], end_stream=True)
    rst = b"\x00\x00\x04\x03\x00\x00\x00\x00\x01" + b"\x00\x00\x00\x08"  # RST_STREAM stream 1, CANCEL
    c.sock.sendall(c.conn.data_to_send() + rst)
    time.sleep(0.5)
    assert '"event": "error"' not in capsys.readouterr().out
    entries = [line.split(" ") for line in lab.log_lines() if marker in line]
    assert len(entries) == 1 and entries[0][8] == "460"  # the client left before the answer
    c.sock.close()
    with H2ClientContext(lab) as c2:
        assert c2.get("/api/after-reset").status == 200


def test_a_failing_event_handler_resets_only_its_stream(lab: Lab, client: H2Client, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An exception in one stream's event handler is logged and that stream reset; the connection
    serves on. (The log call once passed `event=`, which is log_event's own first parameter: the
    TypeError it raised took the whole connection down.) Patches a method, so under the compiled
    build it runs in a child on the source."""
    from services.alb_sim import h2front
    from tests.unit.test_native import ran_on_source_instead

    if ran_on_source_instead(__file__, "test_a_failing_event_handler_resets_only_its_stream"):
        return
    real = h2front.H2ClientConnection._event

    def failing(self: h2front.H2ClientConnection, event: object) -> None:
        if isinstance(event, h2.events.DataReceived) and event.data == b"boom":
            raise RuntimeError("the handler failed")
        real(self, event)  # type: ignore[arg-type]

    monkeypatch.setattr(h2front.H2ClientConnection, "_event", failing)
    sid = client.request("/api/boom", method="POST", body=b"boom")
    assert client.wait(sid)[0].reset == ErrorCodes.INTERNAL_ERROR
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"h2 event"' in line]
    assert logged and logged[0]["h2_event"] == "DataReceived" and logged[0]["stream"] == sid
    assert "the handler failed" in logged[0]["error"]
    assert client.get("/api/after-boom").status == 200
