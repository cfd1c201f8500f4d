"""Requests llhttp refuses, through the simulator on loopback (fallback.py, decisions.md #43, #46):
forwarded or blocked per AWS's desync table, logged with their classification, framed as lenient.py
says, and the connection kept or closed as AWS does."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from services.alb_sim.config import Condition, FixedResponseAction, Rule
from tests.unit.test_alb_server import Lab, wait_for

HOST = b"Host: www.lab.test\r\n"


class RawBackend:
    """A target that takes any request line (the echo backend's llhttp would refuse `delete`) and
    answers 200 with JSON: the request head as received, the body (chunked bodies decoded) and
    which of its connections the request came on."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self._ids = itertools.count(1)

    def protocol(self) -> asyncio.Protocol:
        backend = self

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport
                self.conn_id = next(backend._ids)
                backend.connections += 1
                self.buf = b""

            def data_received(self, data: bytes) -> None:
                self.buf += data
                while (request := self._take()) is not None:
                    head, body = request
                    record = {"head": head.decode("latin-1"), "body": body.decode("latin-1"), "conn": self.conn_id}
                    if not head.startswith(b"GET /healthz "):
                        backend.requests.append(record)
                    payload = json.dumps(record).encode()
                    self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"  # type: ignore[attr-defined]
                                         b"Content-Length: %d\r\n\r\n" % len(payload) + payload)

            def _take(self) -> tuple[bytes, bytes] | None:
                end = self.buf.find(b"\r\n\r\n")
                if end == -1:
                    return None
                head, rest = self.buf[:end + 4], self.buf[end + 4:]
                if re.search(rb"(?i)\r\ntransfer-encoding: chunked\r\n", head):
                    body = b""
                    while True:
                        size_end = rest.find(b"\r\n")
                        if size_end == -1:
                            return None
                        size = int(rest[:size_end], 16)
                        if len(rest) < size_end + 2 + size + 2:
                            return None
                        body += rest[size_end + 2:size_end + 2 + size]
                        rest = rest[size_end + 2 + size + 2:]
                        if size == 0:
                            break
                else:
                    m = re.search(rb"(?i)\r\ncontent-length: (\d+)\r\n", head)
                    length = int(m.group(1)) if m else 0
                    if len(rest) < length:
                        return None
                    body, rest = rest[:length], rest[length:]
                self.buf = rest
                return head, body

        return Proto()


def lenient_lab(tmp: Path, mode: str) -> Lab:
    lab = Lab(tmp, {"routing.http.desync_mitigation_mode": mode})
    lab.api = RawBackend("api")  # type: ignore[assignment]
    https = lab.config.listeners[0]
    delete_rule = Rule(1, (Condition("http-request-method", ("DELETE",)),),
                       (FixedResponseAction("418", "text/plain", "DELETE rule"),))
    https = dataclasses.replace(https, rules=(delete_rule, *https.rules))
    lab.config = dataclasses.replace(lab.config, listeners=(https, *lab.config.listeners[1:]))
    return lab


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Lab]]:
    started = {mode: lenient_lab(tmp_path_factory.mktemp(mode), mode) for mode in ("defensive", "strictest", "monitor")}
    for lab in started.values():
        lab.start()
    yield started
    for lab in started.values():
        lab.stop()


class Client:
    """One raw TLS connection to the ALB's HTTPS listener."""

    def __init__(self, lab: Lab) -> None:
        self.sock = lab.raw_tls()
        self.sock.settimeout(10)
        self.left = b""

    def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.sock.sendall(chunk)
            time.sleep(0.05)  # separate reads at the ALB

    def response(self) -> tuple[bytes, dict[str, Any] | bytes]:
        """The next response: its head and its body (JSON from the backend decoded)."""
        buf = self.left
        while b"\r\n\r\n" not in buf:
            data = self.sock.recv(65536)
            assert data, f"connection closed before a response: {buf[:200]!r}"
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        while len(rest) < length:
            data = self.sock.recv(65536)
            assert data, "connection closed inside a response body"
            rest += data
        body, self.left = rest[:length], rest[length:]
        return head, json.loads(body) if b"application/json" in head else body

    def closed(self) -> bool:
        self.sock.settimeout(2)
        try:
            return self.sock.recv(1) == b""
        except (TimeoutError, socket.timeout):
            return False
        finally:
            self.sock.settimeout(10)

    def close(self) -> None:
        self.sock.close()


def log_entry(lab: Lab, before: int, needle: str) -> list[str]:
    """The access-log fields of the first request after line `before` whose `request` field holds `needle`."""
    def find() -> list[str] | None:
        rows = [re.findall(r'"[^"]*"|\S+', line) for line in lab.log_lines()[before:]]
        return next((f for f in rows if needle in f[12]), None)
    assert wait_for(lambda: find() is not None), lab.log_lines()[before:]
    fields = find()
    assert fields is not None
    return fields


def request_line(record: Any) -> str:
    return record["head"].split("\r\n", 1)[0]


# --- methods (decision 43) -------------------------------------------------------------------

def test_lower_case_method_is_forwarded_as_sent_and_rules_match_case_sensitively(labs: dict[str, Lab]) -> None:
    lab = labs["defensive"]
    before = len(lab.log_lines())
    c = Client(lab)
    c.send(b"DELETE /api/del HTTP/1.1\r\n" + HOST + b"\r\n")
    head, body = c.response()
    assert head.startswith(b"HTTP/1.1 418 ") and body == b"DELETE rule"  # the http-request-method rule
    c.send(b"delete /api/del HTTP/1.1\r\n" + HOST + b"\r\n")
    head, record = c.response()
    assert head.startswith(b"HTTP/1.1 200 OK")  # `DELETE` does not match `delete`: /api/* forwards it
    assert request_line(record) == "delete /api/del HTTP/1.1"
    c.send(b"GET /api/after HTTP/1.1\r\n" + HOST + b"\r\n")  # the connection goes on with a new parser
    head, record = c.response()
    assert head.startswith(b"HTTP/1.1 200 OK") and request_line(record) == "GET /api/after HTTP/1.1"
    assert not c.closed()
    c.close()
    fields = log_entry(lab, before, '"delete ')
    assert fields[8:10] == ["200", "200"] and fields[12].startswith('"delete https://')
    assert fields[27:29] == ['"-"', '"-"']  # any token is a compliant method


@pytest.mark.parametrize("method", [b"FOO", b"PROPFOO", b"M-SEARCH2", b"trace"])
def test_unregistered_token_methods_are_forwarded(labs: dict[str, Lab], method: bytes) -> None:
    c = Client(labs["defensive"])
    c.send(method + b" /api/m HTTP/1.1\r\n" + HOST + b"\r\n")
    head, record = c.response()
    c.close()
    assert head.startswith(b"HTTP/1.1 200 OK") and request_line(record) == method.decode() + " /api/m HTTP/1.1"


def test_head_split_over_reads_with_a_body(labs: dict[str, Lab]) -> None:
    c = Client(labs["defensive"])
    c.send(b"post /api/split HTTP/1.1\r\nHo", b"st: www.lab.test\r\nContent-Le", b"ngth: 5\r\n\r\nhe", b"llo")
    head, record = c.response()
    c.close()
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert request_line(record) == "post /api/split HTTP/1.1" and record["body"] == "hello"
    assert "Content-Length: 5\r\n" in record["head"]


def test_a_request_pipelined_behind_a_lenient_one_is_answered_next(labs: dict[str, Lab]) -> None:
    c = Client(labs["defensive"])
    c.send(b"patch /api/p1 HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
           b"GET /api/p2 HTTP/1.1\r\n" + HOST + b"\r\n")
    _, first = c.response()
    _, second = c.response()
    c.close()
    assert request_line(first) == "patch /api/p1 HTTP/1.1" and first["body"] == "abc"
    assert request_line(second) == "GET /api/p2 HTTP/1.1"


# --- desync classification of refused requests (decision 46) ------------------------------------

SPACE = b"GET /api/a b HTTP/1.1\r\n" + HOST + b"\r\n"


def test_space_in_uri_is_acceptable_forwarded_in_defensive(labs: dict[str, Lab]) -> None:
    lab = labs["defensive"]
    before = len(lab.log_lines())
    c = Client(lab)
    c.send(SPACE)
    head, record = c.response()
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" not in head
    assert request_line(record) == "GET /api/a b HTTP/1.1"  # forwarded as received
    assert not c.closed()
    c.close()
    fields = log_entry(lab, before, "/api/a b")
    assert fields[8] == "200" and fields[27:29] == ['"Acceptable"', '"SpaceInUri"']


def test_space_in_uri_is_blocked_in_strictest(labs: dict[str, Lab]) -> None:
    lab = labs["strictest"]
    before, reached = len(lab.log_lines()), len(lab.api.requests)
    c = Client(lab)
    c.send(SPACE)
    head, _ = c.response()
    assert head.startswith(b"HTTP/1.1 400 Bad Request") and c.closed()
    c.close()
    assert wait_for(lambda: len(lab.log_lines()) > before)
    fields = re.findall(r'"[^"]*"|\S+', lab.log_lines()[before])
    assert fields[8] == "400" and fields[27:29] == ['"Acceptable"', '"SpaceInUri"']
    assert len(lab.api.requests) == reached


def test_lower_case_method_is_compliant_even_in_strictest(labs: dict[str, Lab]) -> None:
    c = Client(labs["strictest"])
    c.send(b"delete /api/s HTTP/1.1\r\n" + HOST + b"\r\n")
    head, record = c.response()
    c.close()
    assert head.startswith(b"HTTP/1.1 200 OK") and request_line(record) == "delete /api/s HTTP/1.1"


def test_http_1_2_is_acceptable_and_forwarded_as_http_1_1(labs: dict[str, Lab]) -> None:
    lab = labs["defensive"]
    before = len(lab.log_lines())
    c = Client(lab)
    c.send(b"GET /api/v12 HTTP/1.2\r\n" + HOST + b"\r\n")
    head, record = c.response()
    c.close()
    assert head.startswith(b"HTTP/1.1 200 OK") and request_line(record) == "GET /api/v12 HTTP/1.1"
    assert log_entry(lab, before, "/api/v12")[27:29] == ['"Acceptable"', '"NonCompliantVersion"']


DUP_CL = b"POST /api/dup HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"


def test_ambiguous_is_forwarded_then_both_connections_close_in_defensive(labs: dict[str, Lab]) -> None:
    lab = labs["defensive"]
    before = len(lab.log_lines())
    c = Client(lab)
    c.send(DUP_CL)
    head, record = c.response()
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head and c.closed()
    c.close()
    assert record["body"] == "abc" and record["head"].count("Content-Length") == 1  # one CL, RFC 9110 §8.6
    fields = log_entry(lab, before, "/api/dup")
    assert fields[8:10] == ["200", "200"] and fields[27:29] == ['"Ambiguous"', '"DuplicateContentLength"']
    # the target connection was closed too: the next request reaches the target on a new one
    status, _, body = lab.get("/api/next", {"Host": "www.lab.test"})
    assert status == 200 and json.loads(body)["conn"] != record["conn"]


def test_ambiguous_keeps_the_connection_in_monitor(labs: dict[str, Lab]) -> None:
    c = Client(labs["monitor"])
    c.send(DUP_CL)
    head, record = c.response()
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" not in head and not c.closed()
    c.close()
    assert record["body"] == "abc"


def test_te_with_cl_is_forwarded_chunked_without_content_length(labs: dict[str, Lab]) -> None:
    lab = labs["defensive"]
    before = len(lab.log_lines())
    c = Client(lab)
    c.send(b"POST /api/tecl HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n0\r\n\r\n")
    head, record = c.response()
    assert head.startswith(b"HTTP/1.1 200 OK") and c.closed()
    c.close()
    assert record["body"] == "hello" and "Content-Length" not in record["head"]
    assert "Transfer-Encoding: chunked" in record["head"]
    assert log_entry(lab, before, "/api/tecl")[27:29] == ['"Ambiguous"', '"BothTeClPresent"']


BAD_METHOD = b"G(T /api/sev HTTP/1.1\r\n" + HOST + b"\r\n"


def test_severe_is_forwarded_in_monitor_only(labs: dict[str, Lab]) -> None:
    monitor, defensive = labs["monitor"], labs["defensive"]
    before = len(monitor.log_lines())
    c = Client(monitor)
    c.send(BAD_METHOD)
    head, record = c.response()
    c.close()
    assert head.startswith(b"HTTP/1.1 200 OK") and request_line(record) == "G(T /api/sev HTTP/1.1"
    assert log_entry(monitor, before, "/api/sev")[27:29] == ['"Severe"', '"BadMethod"']
    c = Client(defensive)
    c.send(BAD_METHOD)
    head, _ = c.response()
    assert head.startswith(b"HTTP/1.1 400 Bad Request") and c.closed()
    c.close()


def test_untrustworthy_content_length_is_400_even_in_monitor(labs: dict[str, Lab]) -> None:
    c = Client(labs["monitor"])
    c.send(b"POST /api/mcl HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
    head, _ = c.response()
    assert head.startswith(b"HTTP/1.1 400 Bad Request") and c.closed()
    c.close()
