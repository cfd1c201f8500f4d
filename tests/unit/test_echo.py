"""Echo service: the pure document builder, then a real server on 127.0.0.1 (uvloop in a thread)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
import trustme
import uvloop

from services.nlb_sim import proxy_v2
from services.web import echo
from services.web.server import (
    MAX_HEAD_BYTES,
    EchoConfig,
    EchoConfigError,
    EchoServer,
    ListenAddressError,
    Listener,
    parse_listen,
)

REPO = Path(__file__).resolve().parents[2]
SNI = "web-api-a.lab.test"
IDENTITY = echo.Identity(service="api", node="web-api-a", az="a")


# --- pure: echo.py ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/", "/", ""),
        ("/a/b?x=1&y=2", "/a/b", "x=1&y=2"),
        ("/a?", "/a", ""),
        ("/a?q=%20?z", "/a", "q=%20?z"),
        ("/a%2Fb?x#frag", "/a%2Fb", "x"),
        ("*", "*", ""),
        ("http://h:1/p?q", "http://h:1/p", "q"),
    ],
)
def test_split_target(target: str, path: str, query: str) -> None:
    assert echo.split_target(target) == (path, query)


def test_join_headers_lowercases_and_joins_repeats_in_order() -> None:
    raw = (("Host", "h"), ("X-A", "1"), ("Cookie", "a=1"), ("x-a", "2"), ("X-EMPTY", ""), ("X-a", "3"))
    assert echo.join_headers(raw) == {"host": "h", "x-a": "1, 2, 3", "cookie": "a=1", "x-empty": ""}


def test_describe_document() -> None:
    request = echo.ReceivedRequest(
        method="PATCH",
        target="/p?q=1",
        raw_headers=(("Host", "h"), ("X-A", "1"), ("x-a", "2")),
        body_bytes=7,
        peer=echo.Endpoint("10.0.0.1", 40000),
        tls=echo.TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", None),
    )
    assert echo.describe(IDENTITY, request) == {
        "service": "api",
        "node": "web-api-a",
        "az": "a",
        "peer": {"ip": "10.0.0.1", "port": 40000},
        "method": "PATCH",
        "path": "/p",
        "query": "q=1",
        "headers": {"host": "h", "x-a": "1, 2"},
        "raw_headers": [["Host", "h"], ["X-A", "1"], ["x-a", "2"]],
        "tls": {"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256", "sni": None},
        "body_bytes": 7,
    }


def test_describe_reports_proxy_addresses() -> None:
    request = echo.ReceivedRequest(
        "GET", "/", (), 0, echo.Endpoint("10.0.0.9", 1), None,
        proxy=echo.ProxyInfo("PROXY", echo.Endpoint("203.0.113.7", 5555), echo.Endpoint("10.0.0.9", 443)),
    )
    assert echo.describe(IDENTITY, request)["proxy"] == {
        "source": {"ip": "203.0.113.7", "port": 5555},
        "destination": {"ip": "10.0.0.9", "port": 443},
        "command": "PROXY",
    }


@pytest.mark.parametrize("target,cookie", [
    ("/a?set-cookie=SESSIONID=s1", "SESSIONID=s1"),
    ("/a?x=1&set-cookie=app=&y=2", "app="),
    ("/a?set-cookie=bad%0d%0aX:1", None),       # no header injection: token characters only
    ("/a?xset-cookie=n=v", None),
    ("/a", None),
])
def test_cookie_to_set(target: str, cookie: str | None) -> None:
    assert echo.cookie_to_set(target) == cookie


def test_encode_response_sets_the_cookie() -> None:
    assert echo.encode_response(200, b"{}", keep_alive=True, cookie="SESSIONID=s1") == (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
        b"Set-Cookie: SESSIONID=s1; Path=/\r\n\r\n{}")


def test_encode_response_head_keeps_length_drops_body() -> None:
    assert echo.encode_response(200, b"{}\n", keep_alive=True, head=True) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n"
    )
    assert echo.encode_response(200, b"{}\n", keep_alive=False).endswith(
        b"Content-Length: 3\r\nConnection: close\r\n\r\n{}\n"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10.20.1.41:8443", ("10.20.1.41", 8443)), ("[::1]:80", ("::1", 80)), ("0.0.0.0:0", ("0.0.0.0", 0))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8443", "'8443' is not HOST:PORT (e.g. 10.20.1.41:8443 or [::1]:8443)"),
        ("web:8443", "'web:8443': 'web' is not an IP address"),
        ("10.0.0.1:70000", "'10.0.0.1:70000': '70000' is not a valid port (0-65535)"),
        ("10.0.0.1:", "'10.0.0.1:': '' is not a valid port (0-65535)"),
    ],
)
def test_parse_listen_errors(text: str, message: str) -> None:
    with pytest.raises(ListenAddressError) as info:
        parse_listen(text)
    assert str(info.value) == message


# --- a real server ----------------------------------------------------------------------------


class ServerThread:
    """An EchoServer on its own uvloop in a daemon thread; ``urls`` once started."""

    def __init__(self, config: EchoConfig) -> None:
        self.logs: list[str] = []
        self._server = EchoServer(config, self.logs.append)
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.urls: list[str] = self._call(self._start())

    async def _start(self) -> list[str]:
        await self._server.start()
        return self._server.urls

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def port(self, index: int = 0) -> int:
        return int(self.urls[index].rsplit(":", 1)[1])

    def stop(self) -> None:
        self._call(self._server.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


@pytest.fixture(scope="module")
def cert_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PEM file holding key and certificate chain, as the lab mounts them."""
    cert = ca.issue_cert(SNI, "127.0.0.1", key_type=trustme.KeyType.ECDSA)
    path = tmp_path_factory.mktemp("certs") / "web-api-a.pem"
    path.write_bytes(cert.private_key_pem.bytes() + b"".join(p.bytes() for p in cert.cert_chain_pems))
    return path


@pytest.fixture(scope="module")
def server(cert_file: Path) -> Iterator[ServerThread]:
    config = EchoConfig(
        identity=IDENTITY,
        listeners=(Listener("127.0.0.1", 0, tls=True), Listener("127.0.0.1", 0, tls=False)),
        tls_cert=str(cert_file),
    )
    thread = ServerThread(config)
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def read_response(stream: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from a buffered stream (Content-Length framed)."""
    status_line = stream.readline()
    if not status_line:
        raise EOFError("connection closed before a response")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", "0")))
    return status, headers, body


def connect(port: int, ctx: ssl.SSLContext | None = None, sni: str | None = SNI) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if ctx is not None:
        return ctx.wrap_socket(sock, server_hostname=sni)
    return sock


def exchange(sock: socket.socket, data: bytes, count: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    sock.sendall(data)
    stream = sock.makefile("rb")
    return [read_response(stream) for _ in range(count)]


def test_https_get_reports_everything(server: ServerThread, client_ctx: ssl.SSLContext) -> None:
    with httpx.Client(verify=client_ctx) as client:
        response = client.get(
            f"https://127.0.0.1:{server.port(0)}/v1/items?b=2&a=1",
            headers={"X-Lab": "one"},
            extensions={"sni_hostname": SNI},
        )
        client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["service"] == "api" and doc["node"] == "web-api-a" and doc["az"] == "a"
    assert doc["peer"] == {"ip": "127.0.0.1", "port": client_port}
    assert (doc["method"], doc["path"], doc["query"]) == ("GET", "/v1/items", "b=2&a=1")
    assert doc["headers"]["x-lab"] == "one"
    assert doc["headers"]["host"] == f"127.0.0.1:{server.port(0)}"
    assert doc["tls"]["version"] == "TLSv1.3"
    assert doc["tls"]["sni"] == SNI
    assert doc["tls"]["cipher"].startswith("TLS_")
    assert doc["body_bytes"] == 0
    assert sorted(doc) == sorted(
        ["service", "node", "az", "peer", "method", "path", "query", "headers", "raw_headers", "tls", "body_bytes"]
    )


def test_raw_headers_keep_order_case_and_repeats(server: ServerThread, client_ctx: ssl.SSLContext) -> None:
    request = (
        b"OPTIONS /raw/Path?Q=1&q=2 HTTP/1.1\r\n"
        b"host: echo\r\n"
        b"X-Multi: first\r\n"
        b"Accept: */*\r\n"
        b"x-MULTI: second\r\n"
        b"X-Empty:\r\n"
        b"X-Trailing-Space: value  \r\n"
        b"\r\n"
    )
    with connect(server.port(0), client_ctx) as sock:
        client_port = sock.getsockname()[1]
        [(status, _, body)] = exchange(sock, request)
    doc = json.loads(body)
    assert status == 200
    assert doc["peer"] == {"ip": "127.0.0.1", "port": client_port}
    assert (doc["method"], doc["path"], doc["query"]) == ("OPTIONS", "/raw/Path", "Q=1&q=2")
    assert doc["raw_headers"] == [
        ["host", "echo"],
        ["X-Multi", "first"],
        ["Accept", "*/*"],
        ["x-MULTI", "second"],
        ["X-Empty", ""],
        ["X-Trailing-Space", "value"],
    ]
    assert doc["headers"] == {
        "host": "echo",
        "x-multi": "first, second",
        "accept": "*/*",
        "x-empty": "",
        "x-trailing-space": "value",
    }
    assert doc["tls"]["sni"] == SNI


def test_no_sni_when_client_sends_none(server: ServerThread, ca: trustme.CA) -> None:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.check_hostname = False
    with connect(server.port(0), ctx, sni=None) as sock:
        [(_, _, body)] = exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert json.loads(body)["tls"]["sni"] is None


def test_tls12_client(server: ServerThread, ca: trustme.CA) -> None:
    """The NLB's HTTPS health checker speaks TLS 1.2 only."""
    tls12 = ssl.create_default_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    ca.configure_trust(tls12)
    with connect(server.port(0), tls12) as sock:
        [(_, _, body)] = exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    tls = json.loads(body)["tls"]
    assert tls["version"] == "TLSv1.2"
    assert tls["cipher"].startswith("ECDHE-ECDSA-")


def test_plain_http_listener_reports_tls_null(server: ServerThread) -> None:
    response = httpx.get(f"http://127.0.0.1:{server.port(1)}/healthz")
    doc = response.json()
    assert response.status_code == 200
    assert doc["tls"] is None
    assert doc["path"] == "/healthz"


def test_bodies_are_counted(server: ServerThread) -> None:
    base = f"http://127.0.0.1:{server.port(1)}"
    with httpx.Client() as client:
        assert client.post(f"{base}/upload", content=b"x" * 100_000).json()["body_bytes"] == 100_000
        chunked = client.put(f"{base}/c", content=iter([b"abc", b"", b"defgh", b"i" * 5000]))
    doc = chunked.json()
    assert doc["headers"]["transfer-encoding"] == "chunked"
    assert doc["body_bytes"] == 5008


def test_head_has_no_body(server: ServerThread) -> None:
    with connect(server.port(1)) as sock:
        sock.sendall(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\nGET /after-head HTTP/1.1\r\nHost: x\r\n\r\n")
        stream = sock.makefile("rb")
        status_line = stream.readline()
        head_headers = {}
        while (line := stream.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            head_headers[name.lower()] = value.strip()
        after = read_response(stream)  # the next response starts right after the HEAD head
    assert status_line.startswith(b"HTTP/1.1 200")
    assert int(head_headers["content-length"]) > 0
    assert json.loads(after[2])["path"] == "/after-head"


def test_pipelined_requests_are_answered_in_order(server: ServerThread, client_ctx: ssl.SSLContext) -> None:
    requests = b"".join(
        f"GET /{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {i}\r\n\r\n".encode() + b"z" * i for i in range(5)
    )
    with connect(server.port(0), client_ctx) as sock:
        responses = exchange(sock, requests, count=5)
    docs = [json.loads(body) for _, _, body in responses]
    assert [(d["path"], d["body_bytes"]) for d in docs] == [(f"/{i}", i) for i in range(5)]


def test_http10_closes_after_response(server: ServerThread) -> None:
    with connect(server.port(1)) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Connection: close" in head
    assert json.loads(body)["path"] == "/old"


@pytest.mark.parametrize("tls", [False, True])
@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02 not http\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_request_gets_400_and_close(
    server: ServerThread, client_ctx: ssl.SSLContext, garbage: bytes, tls: bool
) -> None:
    port = server.port(0) if tls else server.port(1)
    with connect(port, client_ctx if tls else None) as sock:
        [(status, headers, body)] = exchange(sock, garbage)
        assert sock.recv(1) == b""  # closed by the server
    assert status == 400
    assert headers["connection"] == "close"
    assert json.loads(body)["error"] == "bad request"
    assert any(" 400 to 127.0.0.1:" in line for line in server.logs)
    assert httpx.get(f"http://127.0.0.1:{server.port(1)}/still-up").json()["path"] == "/still-up"


def test_oversized_head_gets_431(server: ServerThread) -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n\r\n"
    with connect(server.port(1)) as sock:
        [(status, headers, _)] = exchange(sock, big)
    assert status == 431
    assert headers["connection"] == "close"


def test_plain_http_on_tls_port_is_dropped_and_logged(server: ServerThread) -> None:
    with connect(server.port(0)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536) == b""
    assert any("TLS error with 127.0.0.1:" in line for line in server.logs)
    assert httpx.get(f"http://127.0.0.1:{server.port(1)}/").status_code == 200


def test_separate_key_file_and_bad_cert(ca: trustme.CA, tmp_path: Path) -> None:
    cert = ca.issue_cert(SNI, key_type=trustme.KeyType.ECDSA)
    cert.cert_chain_pems[0].write_to_path(tmp_path / "c.pem")
    cert.private_key_pem.write_to_path(tmp_path / "k.pem")
    thread = ServerThread(
        EchoConfig(IDENTITY, (Listener("127.0.0.1", 0, tls=True),), str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    )
    try:
        assert thread.urls[0].startswith("https://127.0.0.1:")
    finally:
        thread.stop()
    bad = EchoServer(EchoConfig(IDENTITY, (Listener("127.0.0.1", 0, tls=True),), str(tmp_path / "k.pem")), print)
    with pytest.raises(EchoConfigError) as info:
        asyncio.run(bad.start())
    assert str(info.value).startswith(f"cannot load TLS certificate {tmp_path / 'k.pem'} (key from the same file): ")


# --- PROXY protocol ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def proxy_server(cert_file: Path) -> Iterator[ServerThread]:
    config = EchoConfig(
        identity=IDENTITY,
        listeners=(Listener("127.0.0.1", 0, tls=True), Listener("127.0.0.1", 0, tls=False)),
        tls_cert=str(cert_file),
        proxy_protocol=True,
    )
    thread = ServerThread(config)
    yield thread
    thread.stop()


def test_proxy_v2_header_before_tls(proxy_server: ServerThread, client_ctx: ssl.SSLContext) -> None:
    sock = socket.create_connection(("127.0.0.1", proxy_server.port(0)), timeout=10)
    sock.sendall(proxy_v2.encode_v2_proxy("203.0.113.7", 51000, "10.20.1.41", 8443))
    with client_ctx.wrap_socket(sock, server_hostname=SNI) as tls_sock:
        [(status, _, body)] = exchange(tls_sock, b"GET /pp HTTP/1.1\r\nHost: x\r\n\r\n")
    doc = json.loads(body)
    assert status == 200
    assert doc["proxy"] == {
        "source": {"ip": "203.0.113.7", "port": 51000},
        "destination": {"ip": "10.20.1.41", "port": 8443},
        "command": "PROXY",
    }
    assert doc["peer"]["ip"] == "127.0.0.1"
    assert doc["tls"]["sni"] == SNI


def test_proxy_header_in_same_segment_as_request(proxy_server: ServerThread) -> None:
    header = proxy_v2.encode_v1(("2001:db8::7", 1234), ("2001:db8::1", 80))
    with connect(proxy_server.port(1)) as sock:
        [(_, _, body)] = exchange(sock, header + b"GET /v1 HTTP/1.1\r\nHost: x\r\n\r\n")
    proxy = json.loads(body)["proxy"]
    assert proxy["source"] == {"ip": "2001:db8::7", "port": 1234}
    assert proxy["command"] == "PROXY"


def test_proxy_local_header_has_no_addresses(proxy_server: ServerThread) -> None:
    with connect(proxy_server.port(1)) as sock:
        [(_, _, body)] = exchange(sock, proxy_v2.encode_v2_local() + b"GET /hc HTTP/1.1\r\nHost: x\r\n\r\n")
    assert json.loads(body)["proxy"] == {"source": None, "destination": None, "command": "LOCAL"}


def test_missing_proxy_header_closes_and_logs(proxy_server: ServerThread) -> None:
    with connect(proxy_server.port(1)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536) == b""
    assert any("bad PROXY header from 127.0.0.1:" in line for line in proxy_server.logs)


# --- the CLI ----------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.web", *args], cwd=REPO, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "web:1"], "argument --listen: 'web:1': 'web' is not an IP address"),
        (["--listen", "127.0.0.1:0"], "--listen (HTTPS) requires --tls-cert"),
        ([], "at least one --listen or --listen-http is required"),
        (["--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem"],
         "cannot load TLS certificate /nonexistent.pem (key from the same file): No such file or directory"),
    ],
)
def test_cli_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    result = run_cli("--service", "api", "--node", "web-api-a", "--az", "a", *args)
    assert result.returncode == 2
    assert result.stderr == f"python3 -m services.web: error: {message}\n"


def test_cli_prints_ready_and_serves(cert_file: Path) -> None:
    command = [sys.executable, "-m", "services.web", "--service", "api", "--node", "web-api-a", "--az", "a",
               "--listen", "127.0.0.1:0", "--tls-cert", str(cert_file), "--listen-http", "127.0.0.1:0"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            line = process.stdout.readline()  # blocks until the ready line (or exit)
            assert line.startswith("web-api-a ready on https://127.0.0.1:"), line
            http_url = line.split()[4]
            assert http_url.startswith("http://127.0.0.1:")
            assert httpx.get(f"{http_url}/x").json()["node"] == "web-api-a"
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0
        assert process.stderr.read() == ""
