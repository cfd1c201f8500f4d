"""Admin HTTP API (plain HTTP, JSON). Not on the hot path, so asyncio Streams are fine here.

GET /health                          -> 200 {"status":"ok"} once every listener is bound, else 503
GET /target-health?target_group=NAME -> DescribeTargetHealth-shaped JSON
"""

from __future__ import annotations

import asyncio
import json
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from .runtime import AlbRuntime


class AdminApi:
    def __init__(self, alb: AlbRuntime, is_ready: Callable[[], bool]) -> None:
        self.alb = alb
        self.is_ready = is_ready

    def handle(self, method: str, target: str) -> tuple[int, object]:
        url = urlsplit(target)
        if method != "GET":
            return 405, {"error": f"method {method} not allowed"}
        if url.path == "/health":
            return (200, {"status": "ok"}) if self.is_ready() else (503, {"status": "starting"})
        if url.path == "/target-health":
            names = parse_qs(url.query).get("target_group", [])
            if not names:
                return 400, {"error": "target_group query parameter is required",
                             "target_groups": sorted(self.alb.groups)}
            group = self.alb.groups.get(names[0])
            if group is None:
                return 404, {"Error": {"Code": "TargetGroupNotFound",
                                       "Message": f"Target group '{names[0]}' not found"}}
            return 200, group.describe()
        return 404, {"error": f"no such endpoint {url.path}"}

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) != 3:
                status, body = 400, {"error": "malformed request"}
            else:
                status, body = self.handle(parts[0], parts[1])
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        payload = json.dumps(body).encode()
        writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()
