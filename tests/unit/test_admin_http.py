"""The admin HTTP layer the NLB, ALB and DNS share (services/admin_http.py), on loopback: answers
in order on one keep-alive connection (coroutine handlers too), HEAD, text for metrics, and the
errors a peer's bad bytes get."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from services.admin_http import serve_admin


async def _exchange(handle: Any, raw: bytes, **kw: Any) -> bytes:
    server = await serve_admin(handle, "127.0.0.1", 0, **kw)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)  # the last answer closes the connection
        writer.close()
        return data
    finally:
        server.close()
        await server.wait_closed()


def _bodies(data: bytes) -> list[tuple[int, str]]:
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        out.append((status, rest[:length].decode()))
        data = rest[length:]
    return out


def test_pipelined_requests_are_answered_in_order_even_when_the_first_waits() -> None:
    def handle(method: str, target: str, body: bytes) -> Any:  # an answer, or a coroutine for one
        if target == "/slow":
            async def later() -> tuple[int, Any]:
                await asyncio.sleep(0.2)
                return 200, {"slow": True}
            return later()
        if target == "/metrics":
            return 200, "# HELP x\n"
        return 200, {"target": target, "body": body.decode()}

    raw = (b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
           b"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
           b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answers = _bodies(asyncio.run(_exchange(handle, raw)))
    assert [(s, json.loads(b) if b.startswith("{") else b) for s, b in answers] == [
        (200, {"slow": True}), (200, {"target": "/fast", "body": "hi"}), (200, "# HELP x\n")]


@pytest.mark.parametrize("raw, status, doc", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 500,
     {"Error": {"Code": "InternalFailure", "Message": "RuntimeError('boom')"}}),
    (b"NOT HTTP\r\n\r\n", 400, None),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n" + b"x" * 20, 413,
     {"Error": {"Code": "RequestEntityTooLarge", "Message": "the request body is larger than 10 bytes"}}),
])
def test_bad_requests_and_crashes_get_an_error_document(raw: bytes, status: int, doc: Any) -> None:
    crashes: list[str] = []

    def handle(method: str, target: str, body: bytes) -> Any:
        raise RuntimeError("boom")

    answers = _bodies(asyncio.run(_exchange(handle, raw, max_body=10,
                                            on_crash=lambda target, exc: crashes.append(target))))
    assert [s for s, _ in answers] == [status]
    if doc is not None:
        assert json.loads(answers[0][1]) == doc
    else:
        assert json.loads(answers[0][1])["Error"]["Code"] == "BadRequest"
    assert crashes == (["/"] if status == 500 else [])


def test_head_has_no_body_and_a_service_keeps_its_own_error_shape() -> None:
    raw = (b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
           b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n12345678")
    data = asyncio.run(_exchange(lambda m, t, b: (200, {"status": "ok"}), raw, max_body=4,
                                 error_doc=lambda status, code, message: {"error": message}))
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 17" in first  # HEAD: the length, no body
    assert rest.startswith(b"HTTP/1.1 413 Request Entity Too Large")
    assert rest.endswith(b'{"error": "the request body is larger than 4 bytes"}\n')
