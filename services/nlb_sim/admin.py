"""Admin HTTP API (plain HTTP, JSON, read-only for now).

  GET /health                                   200 {"status": "ok"} when every listener is bound, else 503
  GET /target-groups                            {"TargetGroups": [{"TargetGroupName", "TargetGroupArn",
                                                  "Protocol", "Port", "TargetType"}]}
  GET /target-health?target_group=<name>[&node=<node>]
                                                DescribeTargetHealth shape (consensus of the nodes' views,
                                                or one node's view with ``node``)
Errors use an AWS-like body: {"Error": {"Code": "TargetGroupNotFound", "Message": "..."}}.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable
from urllib.parse import parse_qs

import httptools

from .checker import HealthRegistry
from .config import NlbConfig

log = logging.getLogger("nlb.admin")

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


class AdminApi:
    def __init__(self, cfg: NlbConfig, registry: HealthRegistry, all_bound: Callable[[], bool]) -> None:
        self.cfg = cfg
        self.registry = registry
        self.all_bound = all_bound

    def handle(self, method: str, url: bytes) -> tuple[int, dict[str, Any]]:
        """Route one request (pure: no I/O) -> (status, JSON body)."""
        parsed = httptools.parse_url(url)
        path = parsed.path.decode("latin-1")
        query = parse_qs(parsed.query.decode("latin-1")) if parsed.query else {}
        if method not in ("GET", "HEAD"):
            return 405, _error("MethodNotAllowed", f"{method} is not supported; use GET")
        if path == "/health":
            ok = self.all_bound()
            return (200 if ok else 503), {"status": "ok" if ok else "starting", "name": self.cfg.name}
        if path == "/target-groups":
            return 200, {"TargetGroups": [
                {"TargetGroupName": tg.name, "TargetGroupArn": tg.arn, "Protocol": tg.protocol,
                 "Port": tg.port, "TargetType": tg.target_type} for tg in self.cfg.target_groups]}
        if path == "/target-health":
            names = query.get("target_group")
            if not names:
                return 400, _error("ValidationError", "target_group is required, e.g."
                                   " /target-health?target_group=" + self.cfg.target_groups[0].name)
            name = names[0]
            if name not in {tg.name for tg in self.cfg.target_groups}:
                return 400, _error("TargetGroupNotFound", f"One or more target groups not found:"
                                   f" {name!r} (known: {', '.join(t.name for t in self.cfg.target_groups)})")
            node = query.get("node", [None])[0]
            if node is not None and node not in {n.name for n in self.cfg.nodes}:
                return 400, _error("ValidationError", f"node {node!r} is not one of"
                                   f" {', '.join(n.name for n in self.cfg.nodes)}")
            return 200, self.registry.describe(name, node)
        return 404, _error("NotFound", f"no route {path}; try /health, /target-groups,"
                                       " /target-health?target_group=<name>")

    async def start(self) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _AdminProtocol(self), self.cfg.admin.address,
                                        self.cfg.admin.port, reuse_address=True)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"Error": {"Code": code, "Message": message}}


class _AdminProtocol(asyncio.Protocol):
    def __init__(self, api: AdminApi) -> None:
        self.api = api
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.keep_alive = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._respond(400, _error("BadRequest", "upgrade not supported"), False)
        except httptools.HttpParserError as exc:
            self._respond(400, _error("BadRequest", f"malformed request: {exc}"), False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # only valid here (performance.md)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("latin-1")
        try:
            status, body = self.api.handle(method, self.url)
        except Exception as exc:  # a bug must not kill the API
            log.exception("admin request %r failed", self.url)
            status, body = 500, _error("InternalFailure", str(exc))
        self._respond(status, body, self.keep_alive, head=method == "HEAD")

    def _respond(self, status: int, body: dict[str, Any], keep_alive: bool, head: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        payload = (json.dumps(body) + "\n").encode()
        head_lines = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                      "Content-Type: application/json\r\n"
                      f"Content-Length: {len(payload)}\r\n"
                      f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        self.transport.write(head_lines.encode("ascii") + (b"" if head else payload))
        if not keep_alive:
            self.transport.close()
