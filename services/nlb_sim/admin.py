"""Admin HTTP API (plain HTTP, JSON), on the first node's private IP only (the VPC side).

  GET /health                                   200 {"status": "ok"} when every listener is bound, else 503
  GET /target-groups                            {"TargetGroups": [{"TargetGroupName", "TargetGroupArn",
                                                  "Protocol", "Port", "TargetType"}]}
  GET /target-health?target_group=<name>[&node=<node>]
                                                DescribeTargetHealth shape (consensus of the nodes' views,
                                                or one node's view with ``node``)
  GET /metrics                                  Prometheus text, AWS/NetworkELB metric names
  GET /attributes?target_group=<name> | ?listener=<port> | (none: the load balancer)
  POST /register-targets          {"TargetGroupName", "Targets": [{"Id", "Port"?, "AvailabilityZone"?}]}
  POST /deregister-targets        {"TargetGroupName", "Targets": [{"Id", "Port"?, "AvailabilityZone"?}]}
                                  (a target may also be "ID[:PORT][@AZ]": control.parse_target)
  POST /modify-target-group       {"TargetGroupName", "HealthCheckProtocol"?, "HealthCheckPort"?,
                                   "HealthCheckPath"?, "HealthCheckIntervalSeconds"?,
                                   "HealthCheckTimeoutSeconds"?, "HealthyThresholdCount"?,
                                   "UnhealthyThresholdCount"?, "Matcher"?: {"HttpCode"}}
                                  -> {"TargetGroups": [health check settings]}; the next check uses them
  POST /modify-target-group-attributes   {"TargetGroupName", "Attributes": [{"Key", "Value"}]}
  POST /modify-load-balancer-attributes  {"Attributes": [...]}
  POST /modify-listener-attributes       {"Port", "Attributes": [...]}
Changes apply live, to new flows (open flows keep their target and settings, as in AWS).
Errors use an AWS-like body: {"Error": {"Code": "TargetGroupNotFound", "Message": "..."}}.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

import httptools

from . import control
from .control import ApiError

if TYPE_CHECKING:
    from .checker import HealthRegistry
    from .config import NlbConfig


class NlbApp(Protocol):
    """What the API drives: app.NlbApp (its control calls are looked up by name), which imports this module."""

    cfg: NlbConfig
    registry: HealthRegistry

    def all_bound(self) -> bool: ...

    def metrics_text(self) -> str: ...

log = logging.getLogger("nlb.admin")

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


_POSTS = ("/register-targets", "/deregister-targets", "/modify-target-group",
          "/modify-target-group-attributes",
          "/modify-load-balancer-attributes", "/modify-listener-attributes")


class AdminApi:
    def __init__(self, app: NlbApp) -> None:
        self.app = app

    @property
    def cfg(self):  # the current config (the API may have replaced it)
        return self.app.cfg

    def all_bound(self) -> bool:
        return self.app.all_bound()

    def handle(self, method: str, url: bytes, body: bytes = b"") -> tuple[int, Any]:
        """Route one request (no socket I/O) -> (status, JSON body or str for text/plain)."""
        parsed = httptools.parse_url(url)
        path = parsed.path.decode("latin-1")
        # Blank values kept: `?target_group=` is a missing name, not a request without the parameter.
        query = parse_qs(parsed.query.decode("latin-1"), keep_blank_values=True) if parsed.query else {}
        if method == "POST" and path in _POSTS:
            try:
                doc = json.loads(body or b"{}")
            except ValueError as exc:
                return 400, _error("ValidationError", f"request body is not JSON: {exc}")
            except RecursionError:
                return 400, _error("ValidationError", "request body is not JSON: nested too deeply")
            if not isinstance(doc, dict):
                return 400, _error("ValidationError", "request body must be a JSON object")
            handler = getattr(self.app, path.strip("/").replace("-", "_"))
            try:
                return 200, handler(doc)
            except ApiError as exc:
                return exc.status, _error(exc.code, exc.message)
        if method not in ("GET", "HEAD"):
            return 405, _error("MethodNotAllowed", f"{method} {path} is not supported; use GET, or"
                                                   f" POST one of {', '.join(_POSTS)}")
        if path == "/metrics":
            return 200, self.app.metrics_text()
        if path == "/attributes":
            return self._attributes(query)
        if path == "/health":
            ok = self.all_bound()
            return (200 if ok else 503), {"status": "ok" if ok else "starting", "name": self.cfg.name}
        if path == "/target-groups":
            return 200, {"TargetGroups": [
                {"TargetGroupName": tg.name, "TargetGroupArn": tg.arn, "Protocol": tg.protocol,
                 "Port": tg.port, "TargetType": tg.target_type} for tg in self.cfg.target_groups]}
        if path == "/target-health":
            names = query.get("target_group")
            if not names or not names[0]:
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
            return 200, self.app.registry.describe(name, node)
        return 404, _error("NotFound", f"no route {path}; try /health, /target-groups,"
                                       " /target-health?target_group=<name>")

    def _attributes(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        cfg = self.cfg
        try:
            if "target_group" in query:
                attrs = control.target_group_attributes(
                    control.lookup_target_group(cfg, query["target_group"][0]))
            elif "listener" in query:
                attrs = control.listener_attributes(control.lookup_listener(cfg, query["listener"][0]))
            else:
                attrs = control.load_balancer_attributes(cfg)
        except ApiError as exc:
            return exc.status, _error(exc.code, exc.message)
        return 200, control.attributes_answer(attrs)

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
        self.body = b""
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
        self.body = b""

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > 1 << 20:
            raise httptools.HttpParserError("body over 1 MiB")
        self.body += body

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # only valid here (performance.md)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("latin-1")
        try:
            status, body = self.api.handle(method, self.url, self.body)
        except Exception as exc:  # a bug must not kill the API
            log.exception("admin request %r failed", self.url)
            status, body = 500, _error("InternalFailure", str(exc))
        self._respond(status, body, self.keep_alive, head=method == "HEAD")

    def _respond(self, status: int, body: Any, keep_alive: bool, head: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        text = isinstance(body, str)
        payload = (body if text else json.dumps(body) + "\n").encode()
        ctype = "text/plain; version=0.0.4" if text else "application/json"
        head_lines = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                      f"Content-Type: {ctype}\r\n"
                      f"Content-Length: {len(payload)}\r\n"
                      f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        self.transport.write(head_lines.encode("ascii") + (b"" if head else payload))
        if not keep_alive:
            self.transport.close()
