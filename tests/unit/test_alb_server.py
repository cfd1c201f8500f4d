"""End to end on loopback: the ALB simulator in-process, tiny HTTPS echo backends, real sockets."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import re
import socket
import ssl
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import httptools
import pytest
import trustme
import uvloop

from services.alb_sim.app import AlbSimulator
from services.alb_sim.config import load_config
from tests.ports import free_ports

TRACE_ROOT = re.compile(r"^Root=1-[0-9a-f]{8}-[0-9a-f]{24}$")


def listening_socket() -> socket.socket:
    """A TCP socket listening on a free port of 127.0.0.1, for a server started later."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


class EchoBackend:
    """HTTPS (or HTTP) server answering every request with JSON describing what it received."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        self.health_checks: list[dict[str, Any]] = []
        self.raw_reply = b""  # what a request for */raw* gets, verbatim, before the connection closes
        self._ids = itertools.count(1)

    def protocol(self) -> asyncio.Protocol:
        backend = self

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport
                self.conn_id = next(backend._ids)
                backend.connections += 1
                self.parser = httptools.HttpRequestParser(self)

            def data_received(self, data: bytes) -> None:
                try:
                    self.parser.feed_data(data)
                except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # CONNECT, Upgrade
                    self.transport.close()

            def on_message_begin(self) -> None:
                self.url, self.headers, self.body = b"", [], 0

            def on_url(self, url: bytes) -> None:
                self.url += url

            def on_header(self, name: bytes, value: bytes) -> None:
                self.headers.append([name.decode(), value.decode()])

            def on_headers_complete(self) -> None:
                self.keep_alive = self.parser.should_keep_alive()

            def on_body(self, body: bytes) -> None:
                self.body += len(body)

            def on_message_complete(self) -> None:
                record = {"backend": backend.name, "method": self.parser.get_method().decode(),
                          "url": self.url.decode(), "headers": self.headers, "conn": self.conn_id,
                          "body_bytes": self.body, "peer": self.transport.get_extra_info("peername")[0]}
                ua = [v for k, v in self.headers if k.lower() == "user-agent"]
                (backend.health_checks if ua == ["ELB-HealthChecker/2.0"] else backend.requests).append(record)
                if b"/raw" in self.url:  # any bytes at all (test_fuzz_alb's target responses)
                    self.transport.write(backend.raw_reply)
                    self.transport.close()
                    return
                if self.url.startswith(b"/api/slow"):
                    return  # never answer
                if self.url.startswith(b"/api/late"):  # answer 0.3 s later
                    asyncio.get_running_loop().call_later(0.3, self.transport.write,
                                                          b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
                    return
                if self.url.startswith(b"/api/switch"):  # 101 although the ALB sent no Upgrade
                    self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                                         b"Upgrade: websocket\r\n\r\nxyz")
                    return
                if self.url.startswith(b"/api/closeme"):
                    self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    self.transport.close()  # no Connection: close, like a target keep-alive timeout
                    return
                if self.url.startswith(b"/api/big"):
                    size = int(self.url.split(b"=")[1])
                    self.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    chunk = b"x" * 65536
                    sent = 0
                    while sent < size:
                        part = chunk[: min(len(chunk), size - sent)]
                        self.transport.write(b"%x\r\n%s\r\n" % (len(part), part))
                        sent += len(part)
                    self.transport.write(b"0\r\n\r\n")
                    return
                body = json.dumps(record).encode()
                cookie = b"Set-Cookie: SESSIONID=s-1; Path=/\r\n" if b"setcookie" in self.url else b""
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + cookie + b"X-Backend: "
                                     + backend.name.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                if not self.keep_alive:
                    self.transport.close()

        return Proto()


class Lab:
    def __init__(self, tmp: Path, attributes: dict[str, str] | None = None) -> None:
        self.ca = trustme.CA()
        self.tmp = tmp
        alb_pem = tmp / "www.lab.test.pem"
        self.ca.issue_cert("www.lab.test").private_key_and_cert_chain_pem.write_to_path(str(alb_pem))
        self.backend_cert = self.ca.issue_cert("backend.lab.test")
        # The echo backends listen from here on (no other socket can take their ports before they
        # start); the simulator's own ports and the dead target's are chosen free, all distinct.
        self.backend_socks = [listening_socket(), listening_socket()]
        self.api_port, self.front_port = (s.getsockname()[1] for s in self.backend_socks)
        self.https_port, self.http_port, self.admin_port, self.dead_port = free_ports(4)
        self.api, self.front = EchoBackend("api"), EchoBackend("frontend")
        self.log_dir = tmp / "logs"
        hc = {"protocol": "HTTPS", "port": "traffic-port", "path": "/healthz", "interval_seconds": 5,
              "timeout_seconds": 2, "healthy_threshold": 2, "unhealthy_threshold": 2, "matcher": "200"}

        def tg(name: str, port: int | None) -> dict[str, Any]:
            targets = [] if port is None else [{"id": f"web-{name}-a", "ip": "127.0.0.1", "port": port, "az": "a"}]
            return {"name": name, "arn": f"arn:aws:elasticloadbalancing:eu-west-2:123456789012:targetgroup/{name}/73e2d6bc24d8a067",
                    "protocol": "HTTPS", "port": port or 8443, "targets": targets, "health_check": hc}

        self.config = load_config({
            "name": "web-app",
            "arn": "arn:aws:elasticloadbalancing:eu-west-2:123456789012:loadbalancer/app/web-app/50dc6c495c0c9188",
            "dns_name": "web-app.alb.lab.internal",
            "nodes": [{"name": "alb-a", "az": "a", "address": "127.0.0.1"}],
            "attributes": attributes or {"routing.http.xff_header_processing.mode": "append"},
            "listeners": [
                {"protocol": "HTTPS", "port": self.https_port,
                 "certificate": {"arn": "arn:aws:acm:eu-west-2:123456789012:certificate/lab-www", "pem": str(alb_pem)},
                 "rules": [
                     {"priority": 10, "conditions": [{"field": "path-pattern", "values": ["/api/*"]}],
                      "actions": [{"type": "forward", "target_group": "api"}]},
                     {"priority": 20, "conditions": [{"field": "path-pattern", "values": ["/empty/*"]}],
                      "actions": [{"type": "forward", "target_group": "empty"}]},
                     {"priority": 30, "conditions": [{"field": "path-pattern", "values": ["/dead/*"]}],
                      "actions": [{"type": "forward", "target_group": "dead"}]},
                     {"priority": 40, "conditions": [{"field": "path-pattern", "values": ["/fixed"]}],
                      "actions": [{"type": "fixed-response", "status_code": "418",
                                   "content_type": "text/plain", "message_body": "teapot"}]},
                 ],
                 "default_actions": [{"type": "forward", "target_group": "frontend"}]},
                {"protocol": "HTTP", "port": self.http_port,
                 "rules": [{"priority": 5, "conditions": [{"field": "path-pattern", "values": ["/plain/*"]}],
                            "actions": [{"type": "forward", "target_group": "frontend"}]}],
                 "default_actions": [{"type": "redirect", "redirect": {
                     "protocol": "HTTPS", "port": "443", "host": "#{host}", "path": "/#{path}",
                     "query": "#{query}", "status_code": "HTTP_301"}}]},
            ],
            "target_groups": [tg("api", self.api_port), tg("frontend", self.front_port), tg("empty", None),
                              tg("dead", self.dead_port)],
            "log_dir": str(self.log_dir),
            "admin": {"address": "127.0.0.1", "port": self.admin_port},
        })
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ready = threading.Event()
        self.lines: list[str] = []
        self.task: asyncio.Task[None] | None = None
        self.sim: AlbSimulator | None = None
        self.failure: BaseException | None = None  # why the simulator ended while starting

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.backend_cert.configure_cert(ctx)
            api_sock, front_sock = self.backend_socks
            servers = [await self.loop.create_server(self.api.protocol, sock=api_sock, ssl=ctx),
                       await self.loop.create_server(self.front.protocol, sock=front_sock, ssl=ctx)]
            sim = self.sim = AlbSimulator(self.config, announce=self.lines.append)
        except Exception as exc:  # the backends or the simulator's set-up failed: say so at once
            self.failure = exc
            self.ready.set()
            return
        self.task = asyncio.current_task()
        runner = self.loop.create_task(sim.run())
        ready = self.loop.create_task(sim.ready.wait())
        try:
            await asyncio.wait((runner, ready), return_when=asyncio.FIRST_COMPLETED)
            if runner.done():  # it ended before it was ready: say why instead of timing out
                self.failure = (asyncio.CancelledError() if runner.cancelled() else
                                runner.exception() or RuntimeError("AlbSimulator.run() returned"))
                return
            self.ready.set()
            await runner
        except asyncio.CancelledError:
            pass
        finally:
            self.ready.set()
            ready.cancel()
            runner.cancel()
            for s in servers:
                s.close()

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(10), "simulator did not become ready"
        assert self.failure is None, f"simulator stopped while starting: {self.failure!r}"

    def stop(self) -> None:
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)

    # --- clients -------------------------------------------------------------------------
    def client_ctx(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def https(self, host: str = "www.lab.test") -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(host, self.https_port, timeout=15, context=self.client_ctx())
        conn.sock = self.client_ctx().wrap_socket(socket.create_connection(("127.0.0.1", self.https_port), 15),
                                                  server_hostname="www.lab.test")
        return conn

    def raw_tls(self) -> ssl.SSLSocket:
        return self.client_ctx().wrap_socket(socket.create_connection(("127.0.0.1", self.https_port), 15),
                                             server_hostname="www.lab.test")

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET",
            conn: http.client.HTTPConnection | None = None, body: bytes | None = None
            ) -> tuple[int, http.client.HTTPMessage, bytes]:
        c = conn or self.https()
        c.request(method, path, body=body, headers=headers or {})
        resp = c.getresponse()
        data = resp.read()
        if conn is None:
            c.close()
        return resp.status, resp.headers, data

    def log_lines(self) -> list[str]:
        path = self.log_dir / "alb-a" / "access.log"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("alb"))
    lab.start()
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def lab2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Short idle timeout, client port in XFF, Host preserved."""
    lab = Lab(tmp_path_factory.mktemp("alb2"), {
        "idle_timeout.timeout_seconds": "1", "routing.http.xff_client_port.enabled": "true",
        "routing.http.preserve_host_header.enabled": "true"})
    lab.start()
    yield lab
    lab.stop()


def read_response(sock: ssl.SSLSocket, buf: bytes = b"") -> tuple[bytes, bytes]:
    """One Content-Length framed response from a raw socket; returns (response, leftover)."""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


def echoed(body: bytes) -> dict[str, Any]:
    return json.loads(body)


def header_values(record: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in record["headers"] if k.lower() == name.lower()]


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def log_entry(lab: Lab, marker: str, timeout: float = 3.0) -> list[str]:
    """The access-log fields of the one request whose entry holds `marker` (a path of its own). The
    entry is written a turn of the event loop after the answer, so this waits for it."""
    assert wait_for(lambda: any(marker in line for line in lab.log_lines()), timeout), f"no access-log entry for {marker}"
    [line] = [line for line in lab.log_lines() if marker in line]
    return re.findall(r'"[^"]*"|\S+', line)


def test_ready_lines_and_admin_health(lab: Lab) -> None:
    assert lab.lines == [f"alb ready: alb-a HTTPS:127.0.0.1:{lab.https_port} HTTP:127.0.0.1:{lab.http_port}"]
    with urllib.request.urlopen(f"http://127.0.0.1:{lab.admin_port}/health", timeout=5) as r:
        assert json.load(r) == {"status": "ok"}


def test_path_routing(lab: Lab) -> None:
    status, headers, body = lab.get("/api/users?id=1", {"Host": "www.lab.test"})
    assert status == 200 and echoed(body)["backend"] == "api" and echoed(body)["url"] == "/api/users?id=1"
    status, headers, body = lab.get("/index.html", {"Host": "www.lab.test"})
    assert status == 200 and echoed(body)["backend"] == "frontend"


def test_forwarded_headers(lab: Lab) -> None:
    _, _, body = lab.get("/api/h", {"Host": "www.lab.test", "X-Forwarded-For": "1.2.3.4",
                                    "X-Forwarded-Proto": "gopher", "Connection": "keep-alive, X-Drop",
                                    "X-Drop": "1", "Keep-Alive": "timeout=5"})
    rec = echoed(body)
    assert header_values(rec, "X-Forwarded-For") == ["1.2.3.4, 127.0.0.1"]
    assert header_values(rec, "X-Forwarded-Proto") == ["https"]
    assert header_values(rec, "X-Forwarded-Port") == [str(lab.https_port)]
    assert header_values(rec, "Host") == [f"www.lab.test:{lab.https_port}"]  # non-default port appended
    assert header_values(rec, "X-Drop") == [] and header_values(rec, "Keep-Alive") == []
    assert header_values(rec, "Connection") == []
    (trace,) = header_values(rec, "X-Amzn-Trace-Id")
    assert TRACE_ROOT.match(trace)


def test_two_xff_lines_are_combined_then_appended(lab: Lab) -> None:
    conn = lab.https()
    conn.putrequest("GET", "/api/xff", skip_host=True)
    conn.putheader("Host", "www.lab.test")
    conn.putheader("X-Forwarded-For", "1.2.3.4")
    conn.putheader("X-Forwarded-For", "5.6.7.8")
    conn.endheaders()
    rec = echoed(conn.getresponse().read())
    conn.close()
    assert header_values(rec, "X-Forwarded-For") == ["1.2.3.4, 5.6.7.8, 127.0.0.1"]


def test_trace_id_self_inserted_when_root_present(lab: Lab) -> None:
    root = "Root=1-67891233-abcdef012345678912345678"
    _, _, body = lab.get("/api/t", {"Host": "www.lab.test", "X-Amzn-Trace-Id": f"{root};Sampled=1"})
    (trace,) = header_values(echoed(body), "X-Amzn-Trace-Id")
    assert re.fullmatch(r"Self=1-[0-9a-f]{8}-[0-9a-f]{24};" + re.escape(root) + ";Sampled=1", trace)


def test_plain_http_listener_forwards_with_proto_http(lab: Lab) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", lab.http_port, timeout=10)
    conn.request("GET", "/plain/x", headers={"Host": "www.lab.test"})
    rec = echoed(conn.getresponse().read())
    assert header_values(rec, "X-Forwarded-Proto") == ["http"]
    assert header_values(rec, "X-Forwarded-Port") == [str(lab.http_port)]


def test_redirect_on_http_listener(lab: Lab) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", lab.http_port, timeout=10)
    conn.request("GET", "/a/b.html?x=1&y=2", headers={"Host": "www.lab.test"})
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 301
    assert resp.headers["Location"] == "https://www.lab.test:443/a/b.html?x=1&y=2"
    assert resp.headers["Server"] == "awselb/2.0"
    assert b"<title>301 Moved Permanently</title>" in body


def test_fixed_response(lab: Lab) -> None:
    status, headers, body = lab.get("/fixed", {"Host": "www.lab.test"})
    assert (status, headers["Content-Type"], body) == (418, "text/plain", b"teapot")


def test_463_with_31_addresses(lab: Lab) -> None:
    xff = ", ".join(f"10.0.0.{i}" for i in range(31))
    status, headers, body = lab.get("/api/x", {"Host": "www.lab.test", "X-Forwarded-For": xff})
    assert status == 463 and headers["Server"] == "awselb/2.0"
    xff = ", ".join(f"10.0.0.{i}" for i in range(30))  # 30 received: allowed (the peer is not counted)
    status, _, _ = lab.get("/api/x", {"Host": "www.lab.test", "X-Forwarded-For": xff})
    assert status == 200


def test_405_for_trace(lab: Lab) -> None:
    status, headers, body = lab.get("/api/x", {"Host": "www.lab.test"}, method="TRACE")
    assert status == 405
    assert b"<title>405 Method Not Allowed</title>" in body


def test_garbage_gets_400_and_service_continues(lab: Lab) -> None:
    sock = lab.raw_tls()
    sock.sendall(b"\x00\x01\x02 not http at all\r\n\r\n")
    reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Server: awselb/2.0" in reply
    sock.close()
    assert lab.get("/api/after", {"Host": "www.lab.test"})[0] == 200


def test_501_for_unsupported_transfer_encoding(lab: Lab) -> None:
    sock = lab.raw_tls()
    sock.sendall(b"POST /api/x HTTP/1.1\r\nHost: www.lab.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 501 Not Implemented\r\n")
    sock.close()


def test_505_for_http2_preface(lab: Lab) -> None:
    sock = lab.raw_tls()
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    sock.close()


def test_503_when_target_group_is_empty(lab: Lab) -> None:
    status, _, body = lab.get("/empty/x", {"Host": "www.lab.test"})
    assert status == 503 and b"503 Service Temporarily Unavailable" in body


def test_502_when_target_is_dead(lab: Lab) -> None:
    status, headers, body = lab.get("/dead/x", {"Host": "www.lab.test"})
    assert status == 502 and b"<title>502 Bad Gateway</title>" in body
    assert headers["Server"] == "awselb/2.0"


def test_upstream_connections_are_reused(lab: Lab) -> None:
    conn = lab.https()
    before = len(lab.api.requests)
    for i in range(10):
        status, _, body = lab.get(f"/api/reuse/{i}", {"Host": "www.lab.test"}, conn=conn)
        assert status == 200
    conn.close()
    conns = {r["conn"] for r in lab.api.requests[before:]}
    assert len(lab.api.requests) - before == 10
    assert len(conns) == 1, conns


def test_large_bodies_stream_both_ways(lab: Lab) -> None:
    payload = b"y" * (3 * 1024 * 1024 + 7)
    status, _, body = lab.get("/api/upload", {"Host": "www.lab.test"}, method="POST", body=payload)
    assert status == 200 and echoed(body)["body_bytes"] == len(payload)
    status, headers, body = lab.get(f"/api/big?n={5 * 1024 * 1024}", {"Host": "www.lab.test"})
    assert status == 200 and len(body) == 5 * 1024 * 1024


def test_access_log_one_line_per_request_and_no_health_checks(lab: Lab) -> None:
    assert wait_for(lambda: lab.api.health_checks), "no health check reached the api backend"
    check = lab.api.health_checks[0]
    assert check["method"] == "GET" and check["url"] == "/healthz"
    assert header_values(check, "Host") == [f"127.0.0.1:{lab.api_port}"]
    time.sleep(0.2)
    before = len(lab.log_lines())
    n = 0
    for path in ("/api/a", "/index", "/fixed", "/empty/x", "/dead/x"):
        lab.get(path, {"Host": "www.lab.test", "User-Agent": "lab-test/1.0"})
        n += 1
    assert wait_for(lambda: len(lab.log_lines()) - before == n, 2.0), (before, len(lab.log_lines()), n)
    lines = lab.log_lines()
    assert not any("ELB-HealthChecker" in line for line in lines)
    api_line = next(l for l in lines[before:] if '"GET https://www.lab.test:%d/api/a HTTP/1.1"' % lab.https_port in l)
    fields = re.findall(r'"[^"]*"|\S+', api_line)
    assert fields[0] == "https" and fields[2] == "app/web-app/50dc6c495c0c9188"
    assert fields[4] == f"127.0.0.1:{lab.api_port}" and fields[8:10] == ["200", "200"]
    assert fields[13] == '"lab-test/1.0"' and fields[20] == "10" and fields[22] == '"forward"'
    assert fields[15].startswith("TLSv1.2") and fields[18] == '"www.lab.test"'
    assert fields[19] == '"arn:aws:acm:eu-west-2:123456789012:certificate/lab-www"'
    assert len(fields) == 30


def test_target_health_api(lab: Lab) -> None:
    def state() -> dict[str, Any]:
        url = f"http://127.0.0.1:{lab.admin_port}/target-health?target_group=api"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)
    assert wait_for(lambda: state()["TargetHealthDescriptions"][0]["TargetHealth"] == {"State": "healthy"})
    (desc,) = state()["TargetHealthDescriptions"]
    assert desc["Target"] == {"Id": "127.0.0.1", "Port": lab.api_port}
    assert desc["HealthCheckPort"] == str(lab.api_port)


def test_pipelined_requests_are_answered_in_order(lab: Lab) -> None:
    sock = lab.raw_tls()
    sock.sendall(b"GET /api/one HTTP/1.1\r\nHost: www.lab.test\r\n\r\n"
                 b"GET /fixed HTTP/1.1\r\nHost: www.lab.test\r\n\r\n"
                 b"GET /two HTTP/1.1\r\nHost: www.lab.test\r\n\r\n")
    first, rest = read_response(sock)
    second, rest = read_response(sock, rest)
    third, rest = read_response(sock, rest)
    sock.close()
    assert b'"url": "/api/one"' in first and b"X-Backend: api" in first
    assert second.endswith(b"teapot")
    assert b'"url": "/two"' in third and b"X-Backend: frontend" in third


def test_a_pipelining_client_that_does_not_read_is_read_no_further(lab: Lab) -> None:
    """Requests pipelined faster than their responses go out used to be parsed and queued without
    limit (3 GB in 20 s from one client). Now the ALB stops reading once MAX_PIPELINED_REQUESTS wait
    (plus what one read delivered), and every request is answered once the client reads."""
    from services.alb_sim.limits import MAX_PIPELINED_REQUESTS

    assert lab.sim is not None and lab.sim.nodes is not None
    req, count = b"GET /plain/flood HTTP/1.1\r\nHost: www.lab.test\r\n\r\n", 20_000
    sock = socket.create_connection(("127.0.0.1", lab.http_port), 15)
    sock.sendall(req * count)  # the kernel's buffers take it all; the ALB reads what it will
    time.sleep(0.5)
    waiting = max(len(c.queue) for node in lab.sim.nodes.nodes for c in list(node.connections))
    assert waiting <= MAX_PIPELINED_REQUESTS + 256 * 1024 // len(req) + 1  # one read more at most (uvloop: 256 KiB)
    marker, tail, answered = b"HTTP/1.1 200 OK", b"", 0
    while answered < count:
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed after {answered} responses"
        answered += (tail + chunk).count(marker)
        tail = (tail + chunk)[-(len(marker) - 1):]
    sock.close()
    assert answered == count


def test_head_keeps_content_length_without_body(lab: Lab) -> None:
    conn = lab.https()
    status, headers, body = lab.get("/api/head", {"Host": "www.lab.test"}, method="HEAD", conn=conn)
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    assert lab.get("/api/after-head", {"Host": "www.lab.test"}, conn=conn)[0] == 200
    conn.close()


def test_target_closing_its_keep_alive_connection_is_harmless(lab: Lab) -> None:
    conn = lab.https()
    for i in range(3):
        assert lab.get("/api/closeme", {"Host": "www.lab.test"}, conn=conn)[:3:2] == (200, b"ok")
        assert lab.get(f"/api/next{i}", {"Host": "www.lab.test"}, conn=conn)[0] == 200
    conn.close()


def test_client_leaving_mid_download_does_not_hurt(lab: Lab) -> None:
    sock = lab.raw_tls()
    sock.sendall(b"GET /api/big?n=%d HTTP/1.1\r\nHost: www.lab.test\r\n\r\n" % (20 * 1024 * 1024))
    assert sock.recv(1024).startswith(b"HTTP/1.1 200 OK")
    sock.close()
    assert lab.get("/api/still-here", {"Host": "www.lab.test"})[0] == 200


def test_client_port_in_xff_and_preserved_host(lab2: Lab) -> None:
    conn = lab2.https()
    _, _, body = lab2.get("/api/x", {"Host": "www.lab.test", "X-Forwarded-For": "1.2.3.4"}, conn=conn)
    port = conn.sock.getsockname()[1]
    conn.close()
    rec = echoed(body)
    assert header_values(rec, "X-Forwarded-For") == [f"1.2.3.4, 127.0.0.1:{port}"]
    assert header_values(rec, "Host") == ["www.lab.test"]


def test_idle_client_connection_is_closed(lab2: Lab) -> None:
    started = time.monotonic()  # before the connection: the ALB's idle clock starts at its accept
    sock = lab2.raw_tls()
    sock.settimeout(10)
    assert sock.recv(1024) == b""
    assert time.monotonic() - started >= 0.9
    sock.close()


def test_504_when_target_does_not_answer_within_idle_timeout(lab2: Lab) -> None:
    started = time.monotonic()
    status, headers, body = lab2.get("/api/slow", {"Host": "www.lab.test"})
    assert status == 504 and b"<title>504 Gateway Time-out</title>" in body
    assert time.monotonic() - started >= 0.9


def raw_exchange(lab: Lab, request: bytes) -> bytes:
    sock = lab.raw_tls()
    sock.sendall(request)
    reply = b""
    while True:  # the ALB closes after these errors
        data = sock.recv(65536)
        if not data:
            break
        reply += data
    sock.close()
    return reply


def without_date(reply: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"", reply)


def test_414_for_a_request_line_over_16k_and_not_at_16k(lab: Lab) -> None:
    path = "/api/" + "a" * (16 * 1024 - 5)
    assert lab.get(path, {"Host": "www.lab.test"})[0] == 200  # a 16K URL is within the limit
    before = len(lab.log_lines())
    reply = raw_exchange(lab, b"GET " + path.encode() + b"b HTTP/1.1\r\nHost: www.lab.test\r\n\r\n")
    body = (b"<html>\r\n<head><title>414 Request-URI Too Large</title></head>\r\n<body>\r\n"
            b"<center><h1>414 Request-URI Too Large</h1></center>\r\n</body>\r\n</html>\r\n")
    assert without_date(reply) == (b"HTTP/1.1 414 Request-URI Too Large\r\nServer: awselb/2.0\r\n"
                                   b"Content-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                                   % len(body) + body)
    def entry_414() -> list[str] | None:  # the 200's entry may land after `before` was taken
        rows = [re.findall(r'"[^"]*"|\S+', line) for line in lab.log_lines()[before:]]
        return next((f for f in rows if f[8] == "414"), None)
    assert wait_for(lambda: entry_414() is not None)
    fields = entry_414()
    assert fields is not None and fields[12] == f'"- https://127.0.0.1:{lab.https_port}- -"'


PAGE_400_HEADER = (b"<html>\r\n<head><title>400 Request Header Or Cookie Too Large</title></head>\r\n<body>\r\n"
                   b"<center><h1>400 Bad Request</h1></center>\r\n<center>Request Header Or Cookie Too Large</center>\r\n"
                   b"</body>\r\n</html>\r\n")


@pytest.mark.parametrize("headers", [
    b"X-Big: " + b"v" * (16 * 1024) + b"\r\n",                                            # one header over 16K
    b"".join(b"X-H%d: " % i + b"v" * 8000 + b"\r\n" for i in range(9)),                   # 9 x 8K: over 64K in all
])
def test_400_for_oversized_request_headers(lab: Lab, headers: bytes) -> None:
    reply = raw_exchange(lab, b"GET /api/x HTTP/1.1\r\nHost: www.lab.test\r\n" + headers + b"\r\n")
    assert without_date(reply) == (b"HTTP/1.1 400 Bad Request\r\nServer: awselb/2.0\r\nContent-Type: text/html\r\n"
                                   b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(PAGE_400_HEADER)
                                   + PAGE_400_HEADER)


def test_headers_just_under_the_limits_pass(lab: Lab) -> None:
    headers = {"Host": "www.lab.test", **{f"X-H{i}": "v" * 8000 for i in range(7)}}
    assert lab.get("/api/ok", headers)[0] == 200


def test_target_switching_protocols_unasked_is_502(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by fuzzing: httptools' HttpParserUpgrade is no HttpParserError, so a target's 101 escaped
    the upstream parser's handler (a fatal error on the target's TLS connection) and the client got
    `101 ... Transfer-Encoding: chunked`. The ALB drops Upgrade, so a 101 is a bad response: 502."""
    status, _, body = lab.get("/api/switch", headers={"Upgrade": "websocket", "Connection": "upgrade"})
    assert status == 502 and b"502 Bad Gateway" in body
    assert "HttpParserUpgrade" not in capsys.readouterr().out
    assert lab.get("/api/after-switch")[0] == 200


@pytest.mark.parametrize("code", [b"099", b"000", b"600", b"999"])
def test_target_status_outside_100_to_599_is_502(lab: Lab, code: bytes) -> None:
    """llhttp takes any three digits: `099` was relayed as `HTTP/1.1 99 OK` (decisions.md #59)."""
    lab.api.raw_reply = b"HTTP/1.1 " + code + b" OK\r\nContent-Length: 5\r\n\r\nhello"
    path = f"/api/raw-{code.decode()}"  # its own entry: the test before may still have one on the way
    try:
        status, _, body = lab.get(path)
    finally:
        lab.api.raw_reply = b""
    assert status == 502 and b"502 Bad Gateway" in body
    fields = log_entry(lab, f"{path} HTTP/", 2.0)
    assert (fields[8], fields[9]) == ("502", "-")  # elb_status_code, target_status_code


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 199 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 100 Continue\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
])
def test_interim_response_that_announces_a_body_is_502(lab: Lab, reply: bytes) -> None:
    """llhttp reads a body into a 1xx that has Content-Length or Transfer-Encoding; relayed, those
    bytes followed the interim status line as if they were the next response (decisions.md #59)."""
    lab.api.raw_reply = reply
    try:
        sock = lab.raw_tls()
        sock.sendall(b"GET /api/raw HTTP/1.1\r\nHost: www.lab.test\r\nConnection: close\r\n\r\n")
        out, rest = read_response(sock)
        sock.close()
    finally:
        lab.api.raw_reply = b""
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out[:200]
    assert b"hello" not in out + rest


def test_relayed_requests_log_what_the_general_formatter_would(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests relayed in full take the fast log path; for each one, the general path (an
    AccessLogEntry through format_entry) must give the same line and the same metrics. Compiled
    classes cannot be patched, so under the compiled build this runs in a child on the source."""
    from services.alb_sim import server
    from tests.unit.test_native import ran_on_source_instead

    if ran_on_source_instead(__file__, "test_relayed_requests_log_what_the_general_formatter_would"):
        return

    fast = server.ClientConnection._log_relayed
    compared: list[tuple[object, object]] = []

    class Sink:
        def __init__(self) -> None:
            self.out: list[object] = []

        def write(self, line: str) -> None:
            self.out.append(line)

        def request(self, **fields: object) -> None:
            self.out.append(fields)

    def both(self: server.ClientConnection, ex: server.Exchange, group: object) -> None:
        lr, alb = self.lr, self.alb
        log, metrics, clock = lr.log, alb.metrics, alb.clock
        now = clock()
        try:
            lr.log = alb.metrics = a = Sink()  # type: ignore[assignment]
            alb.clock = lambda: now
            fast(self, ex, group)  # type: ignore[arg-type]
            lr.log = alb.metrics = b = Sink()  # type: ignore[assignment]
            self._log_entry(ex)
        finally:
            lr.log, alb.metrics, alb.clock = log, metrics, clock
        compared.append((a.out, b.out))
        fast(self, ex, group)  # type: ignore[arg-type]

    monkeypatch.setattr(server.ClientConnection, "_log_relayed", both)
    conn = lab.https()
    for path, headers in (("/api/a", {"Host": "www.lab.test", "User-Agent": 'ua "quoted" \\ x'}),
                          ("/index?q=%22&x", {"Host": "www.lab.test:443"}),
                          ("/api/b", {"Host": "www.lab.test", "X-Amzn-Trace-Id": 'Root=1-2-3;Note="x"'}),
                          ("/api/c", {"Host": "www.lab.test", "User-Agent": "same", "X-Forwarded-For": "1.2.3.4"}),
                          ("/api/c", {"Host": "www.lab.test", "User-Agent": "same"})):
        assert lab.get(path, headers, conn=conn)[0] == 200
    conn.close()
    plain = http.client.HTTPConnection("127.0.0.1", lab.http_port, timeout=15)
    plain.request("GET", "/plain/x", headers={"Host": "www.lab.test"})
    assert plain.getresponse().status == 200
    plain.close()
    assert wait_for(lambda: len(compared) == 6), len(compared)
    for relayed, general in compared:
        assert len(relayed) == 2 and relayed == general


def test_host_follows_each_request_and_a_live_attribute_change_on_one_connection(lab: Lab) -> None:
    """The Host sent upstream and logged is worked out per request, even on one keep-alive
    connection whose requests change Host, and after preserve_host_header is modified live."""
    from tests.unit.test_alb_nodes import admin

    def preserve(value: str) -> None:
        assert admin(lab, "POST", "/attributes", {"Attributes": [
            {"Key": "routing.http.preserve_host_header.enabled", "Value": value}]})[0] == 200

    conn = lab.https()
    sent = []
    try:
        for host, flag in [("www.lab.test", None), ("other.lab.test:443", None), ("www.lab.test", None),
                           ("www.lab.test", "true"), ("other.lab.test:443", None)]:
            if flag:
                preserve(flag)
            status, _, body = lab.get(f"/api/host-{len(sent)}", {"Host": host}, conn=conn)
            assert status == 200
            sent.append(header_values(echoed(body), "Host"))
    finally:
        preserve("false")
        conn.close()
    port = lab.https_port
    assert sent == [[f"www.lab.test:{port}"], ["other.lab.test"], [f"www.lab.test:{port}"],
                    ["www.lab.test"], ["other.lab.test:443"]]
    assert wait_for(lambda: sum("/api/host-" in line for line in lab.log_lines()) == 5)
    logged = [re.search(r'"GET https://([^/]+)/api/host-(\d)', line) for line in lab.log_lines()]
    assert [m.groups() for m in logged if m] == [
        (f"www.lab.test:{port}", "0"), (f"other.lab.test:{port}", "1"), (f"www.lab.test:{port}", "2"),
        (f"www.lab.test:{port}", "3"), (f"other.lab.test:{port}", "4")]


def test_a_request_in_flight_when_the_deregistration_delay_ends_gets_a_502(tmp_path: Path) -> None:
    """AWS lists "deregistration delay elapsed mid-request" among the causes of a 502 (reference
    section 11); until then the draining target keeps serving what it already has."""
    from lab.cli.trace import parse_alb_entry
    from tests.unit.test_alb_nodes import admin

    lab = Lab(tmp_path)
    lab.start()
    try:
        assert admin(lab, "POST", "/target-group-attributes", {"TargetGroupName": "api", "Attributes": [
            {"Key": "deregistration_delay.timeout_seconds", "Value": "1"}]})[0] == 200
        replies: list[tuple[int, http.client.HTTPMessage, bytes]] = []
        waiting = threading.Thread(target=lambda: replies.append(lab.get("/api/slow/1", {"Host": "www.lab.test"})))
        waiting.start()
        assert wait_for(lambda: any(r["url"] == "/api/slow/1" for r in lab.api.requests), 10.0)
        target = {"Id": "127.0.0.1", "Port": lab.api_port}
        assert admin(lab, "POST", "/deregister-targets", {"TargetGroupName": "api", "Targets": [target]})[0] == 200
        waiting.join(15)
        [(status, _, body)] = replies
        assert status == 502 and b"502 Bad Gateway" in body
        # The access log is written after the answer, on a later turn of the event loop.
        assert wait_for(lambda: any("/api/slow/1" in line for line in lab.log_lines()))
        entry = parse_alb_entry([line for line in lab.log_lines() if "/api/slow/1" in line][-1])
        assert (entry["elb_status_code"], entry["target_status_code"], entry["target:port"]) == (
            "502", "-", f"127.0.0.1:{lab.api_port}")
        assert admin(lab, "GET", "/target-health?target_group=api")[1] == {"TargetHealthDescriptions": []}
    finally:
        lab.stop()
