"""The admin HTTP layer every lab service shares (NLB, ALB, DNS): HTTP/1.1 on loopback or the VPC,
JSON answers (text for Prometheus metrics), keep-alive and pipelining answered in order, HEAD.

A service gives a handler, ``(method, target, body) -> (status, doc)`` (a coroutine too, for calls
that wait, such as the ALB's rotation), and how its error documents look (``error_doc``: AWS's
``{"Error": {...}}`` for the load balancers, ``{"error": ...}`` for the DNS). Nothing here decides
anything about the service; a handler that raises gets a 500 and the connection lives on.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Union

import httptools

MAX_BODY = 1 << 20
Answer = tuple[int, Any]  # status, JSON-able document or str (text/plain)
Handler = Callable[[str, str, bytes], Union[Answer, Awaitable[Answer]]]
ErrorDoc = Callable[[int, str, str], Any]  # (status, code, message) -> document
TEXT_TYPE = "text/plain; version=0.0.4"  # Prometheus' exposition format, the only text the APIs answer


def aws_error_doc(status: int, code: str, message: str) -> Any:
    """The load balancers' error document, AWS's shape (services.elbv2.errors.error_reply)."""
    return {"Error": {"Code": code, "Message": message}}


def response_bytes(status: int, doc: Any, keep_alive: bool, head: bool = False) -> bytes:
    text = isinstance(doc, str)
    payload = (doc if text else json.dumps(doc, default=str) + "\n").encode()
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    lines = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: {TEXT_TYPE if text else 'application/json'}\r\n"
             f"Content-Length: {len(payload)}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    return lines.encode("ascii") + (b"" if head else payload)


class AdminHttpProtocol(asyncio.Protocol):
    """One admin connection. Requests are answered one at a time, in the order they came."""

    def __init__(self, handle: Handler, error_doc: ErrorDoc = aws_error_doc,
                 on_crash: Callable[[str, BaseException], None] | None = None,
                 connections: set[asyncio.BaseTransport] | None = None, max_body: int = MAX_BODY) -> None:
        self.handle = handle
        self.max_body = max_body
        self.error_doc = error_doc
        self.on_crash = on_crash
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = bytearray()
        self.too_large = False
        self.keep_alive = False
        self.pending: collections.deque[tuple[str, str, bytes, bool]] = collections.deque()
        self.busy = False

    # --- asyncio ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.connections is not None:
            self.connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connections is not None and self.transport is not None:
            self.connections.discard(self.transport)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "BadRequest", "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, "BadRequest", f"malformed HTTP request ({exc})")

    # --- httptools ---
    def on_message_begin(self) -> None:
        self.url, self.body, self.too_large = b"", bytearray(), False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # only valid here (notes/performance.md)

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > self.max_body:
            self.too_large = True
        elif not self.too_large:
            self.body += body

    def on_message_complete(self) -> None:
        if self.too_large:
            self._fail(413, "RequestEntityTooLarge", f"the request body is larger than {self.max_body} bytes")
            return
        method = self.parser.get_method().decode("ascii", "replace")
        self.pending.append((method, self.url.decode("latin-1"), bytes(self.body), self.keep_alive))
        if not self.busy:
            self._next()

    # --- answering, in order ---
    def _next(self) -> None:
        while self.pending and not self.busy:
            method, target, body, keep_alive = self.pending.popleft()
            try:
                answer = self.handle(method, target, body)
            except Exception as exc:  # a bug must not take the service down
                self._crashed(target, exc, keep_alive)
                continue
            if isinstance(answer, tuple):
                self._write(answer, keep_alive, method == "HEAD")
                continue
            self.busy = True
            task = asyncio.ensure_future(answer)
            task.add_done_callback(functools.partial(self._done, method=method, target=target, keep_alive=keep_alive))

    def _done(self, task: asyncio.Future[Answer], *, method: str, target: str, keep_alive: bool) -> None:
        self.busy = False
        if task.cancelled():
            self._close()
            return
        exc = task.exception()
        if exc is not None:
            self._crashed(target, exc, keep_alive)
        else:
            self._write(task.result(), keep_alive, method == "HEAD")
        self._next()

    def _crashed(self, target: str, exc: BaseException, keep_alive: bool) -> None:
        if self.on_crash is not None:
            self.on_crash(target, exc)
        self._write((500, self.error_doc(500, "InternalFailure", repr(exc))), keep_alive, False)

    def _fail(self, status: int, code: str, message: str) -> None:
        self.pending.clear()
        self._write((status, self.error_doc(status, code, message)), False, False)

    def _write(self, answer: Answer, keep_alive: bool, head: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        status, doc = answer
        self.transport.write(response_bytes(status, doc, keep_alive, head))
        if not keep_alive:
            self._close()

    def _close(self) -> None:
        self.pending.clear()
        if self.transport is not None:
            self.transport.close()


async def serve_admin(handle: Handler, host: str, port: int, error_doc: ErrorDoc = aws_error_doc,
                      on_crash: Callable[[str, BaseException], None] | None = None,
                      connections: set[asyncio.BaseTransport] | None = None,
                      max_body: int = MAX_BODY) -> asyncio.Server:
    """Listen on (host, port) with ``handle`` behind it; raises OSError when it cannot bind."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: AdminHttpProtocol(handle, error_doc, on_crash, connections, max_body),
                                    host, port, reuse_address=True)
