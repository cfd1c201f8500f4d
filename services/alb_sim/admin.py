"""Admin HTTP API (plain HTTP, JSON, on the container's loopback). Not on the hot path, so asyncio
Streams are fine here. Request and response bodies use the AWS API's field names.

GET  /health                          200 {"status":"ok"} once every listener is bound, else 503
GET  /target-health?target_group=NAME DescribeTargetHealth
POST /register-targets                {"TargetGroupName": N, "Targets": [{"Id": ip, "Port": p}]}
POST /deregister-targets              same shape; targets drain (deregistration_delay)
GET  /attributes                      DescribeLoadBalancerAttributes
POST /attributes                      ModifyLoadBalancerAttributes {"Attributes": [{"Key","Value"}]}
GET  /target-group-attributes?target_group=NAME
POST /target-group-attributes         {"TargetGroupName": N, "Attributes": [{"Key","Value"}]}
GET  /rules?port=443                  DescribeRules (as configured: topology-shaped)
POST /rules                           {"Port": 443, "Rules": [...topology-shaped rules...]} replaces them
GET  /nodes                           the ALB's nodes, active and draining
GET  /metrics                         CloudWatch-named metrics, Prometheus text format
POST /rotate                          {"DrainSeconds": n?}: new node addresses, DNS updated, old drain
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from services.admin_http import serve_admin
from services.elbv2.attributes import attribute_pairs
from services.elbv2.errors import CLIENT_ERROR_STATUS, ApiError, error_reply

from .config_changes import (ConfigError, parse_attributes, parse_listener_rules, parse_target_group_attributes,
                             parse_targets, ip_target_error)
from .config import MAX_DRAIN_SECONDS, described_attributes
from .nodes import NodeManager, RotationError
from .runtime import AlbRuntime, TargetGroupRuntime, log_event

Reply = tuple[int, Any]


def _error(status: int, code: str, message: str) -> Reply:
    return error_reply(ApiError(code, message, status))


def _key_values(body: dict[str, Any], what: str) -> dict[str, str]:
    """The `Attributes` of a Modify*Attributes call, checked for shape as the NLB checks it."""
    return dict(attribute_pairs(body.get("Attributes"), what))


def describe_rules(listener: Any) -> dict[str, Any]:
    """DescribeRules for one listener: its rules by priority, then the default rule (IsDefault),
    the shape both GET and POST /rules answer with (POST: the rules now in force)."""
    return {"Rules": [{**asdict(r), "IsDefault": False} for r in listener.rules]
            + [{"priority": "default", "actions": [asdict(a) for a in listener.default_actions],
                "IsDefault": True}]}


class AdminApi:
    def __init__(self, alb: AlbRuntime, nodes: NodeManager, is_ready: Callable[[], bool]) -> None:
        self.alb = alb
        self.nodes = nodes
        self.is_ready = is_ready

    def _known_groups(self) -> str:
        return f"(target groups: {', '.join(sorted(self.alb.groups))})"

    def _known_ports(self) -> str:
        return f"(ports: {', '.join(map(str, self.alb.listeners))})"

    def _group(self, name: Any) -> TargetGroupRuntime | Reply:
        if not isinstance(name, str) or not name:
            return _error(400, "ValidationError",
                          f"TargetGroupName: expected the name of a target group, got {name!r} {self._known_groups()}")
        group = self.alb.groups.get(name)
        if group is None:
            return _error(CLIENT_ERROR_STATUS, "TargetGroupNotFound", f"Target group '{name}' not found {self._known_groups()}")
        return group

    async def handle(self, method: str, target: str, body: bytes) -> Reply:
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        route = (method, url.path)
        if route == ("GET", "/health"):
            return (200, {"status": "ok"}) if self.is_ready() else (503, {"status": "starting"})
        if route == ("GET", "/target-health") or route == ("GET", "/target-group-attributes"):
            if "target_group" not in query:
                return 400, {"error": "target_group query parameter is required",
                             "target_groups": sorted(self.alb.groups)}
            group = self._group(query["target_group"])
            if isinstance(group, tuple):
                return group
            if url.path == "/target-health":
                return 200, group.describe()
            return 200, group.describe_attributes()
        if route == ("GET", "/attributes"):
            return 200, {"Attributes": described_attributes(self.alb.attributes.raw)}
        if route == ("GET", "/metrics"):
            health = [(name, sum(1 for h in g.health if h.state == "healthy"),
                       sum(1 for h in g.health if h.state == "unhealthy")) for name, g in sorted(self.alb.groups.items())]
            return 200, self.alb.metrics.render(health)
        if route == ("GET", "/nodes"):
            return 200, self.nodes.describe()
        if route == ("GET", "/rules"):
            raw_port = query.get("port", "0")
            if not (raw_port.isascii() and raw_port.isdigit()):
                return _error(400, "ValidationError", f"port: {raw_port!r} is not a port number {self._known_ports()}")
            port = int(raw_port)
            listener = self.alb.listeners.get(port)
            if listener is None:
                return _error(CLIENT_ERROR_STATUS, "ListenerNotFound", f"no listener on port {port} {self._known_ports()}")
            return 200, describe_rules(listener)
        if method != "POST":
            return 405 if url.path in ("/health", "/target-health", "/nodes") else 404, {
                "error": f"no such endpoint {method} {url.path}"}
        try:
            data = json.loads(body or b"{}")
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            return _error(400, "ValidationError", "the request body is not JSON")
        if not isinstance(data, dict):
            return _error(400, "ValidationError", "the request body must be a JSON object")
        try:
            return await self._post(url.path, data)
        except ApiError as exc:
            return error_reply(exc)
        except ConfigError as exc:
            return _error(400, "ValidationError", str(exc).replace(": ValidationError: ", ": "))

    async def _post(self, path: str, data: dict[str, Any]) -> Reply:
        if path == "/rotate":
            drain = data.get("DrainSeconds")
            # as the topology's alb.rotation.drain_seconds; also refuses NaN and infinity (JSON as Python writes it)
            if drain is not None and (not isinstance(drain, (int, float)) or isinstance(drain, bool)
                                      or not 0 <= drain <= MAX_DRAIN_SECONDS):
                return _error(400, "ValidationError", f"DrainSeconds: {drain!r} is not a number of seconds "
                              f"from 0 to {MAX_DRAIN_SECONDS}")
            try:
                return 200, await self.nodes.rotate(None if drain is None else float(drain))
            except RotationError as exc:
                return _error(409, "RotationFailed", str(exc))
        if path == "/attributes":
            self.alb.attributes = parse_attributes(_key_values(data, "Load balancer"), self.alb.attributes)
            self.alb.set_idle_timeout(self.alb.attributes.idle_timeout)
            self.alb.set_http2(self.alb.attributes.http2)
            log_event("attributes", attributes=dict(self.alb.attributes.raw))
            return 200, {"Attributes": described_attributes(self.alb.attributes.raw)}
        if path == "/rules":
            port = data.get("Port")
            if not isinstance(port, int) or isinstance(port, bool):
                return _error(400, "ValidationError",
                              f"Port: expected a listener's port number, got {port!r} {self._known_ports()}")
            listener = self.alb.listeners.get(port)
            if listener is None:
                return _error(CLIENT_ERROR_STATUS, "ListenerNotFound", f"no listener on port {port!r}")
            new = parse_listener_rules(data.get("Rules"), listener, set(self.alb.groups))
            self.alb.replace_rules(listener.port, new)
            log_event("rules", port=listener.port, priorities=[r.priority for r in new.rules])
            return 200, describe_rules(self.alb.listeners[listener.port])
        group = self._group(data.get("TargetGroupName"))
        if isinstance(group, tuple):
            return group
        if path == "/register-targets":
            targets = parse_targets(data.get("Targets"), group.tg.port)
            zones = {n.az for n in self.alb.config.nodes}
            for target in targets:  # all or nothing, as AWS
                problem = ip_target_error(target, self.alb.config.vpc_cidr, zones)
                if problem is not None:
                    return _error(400, *problem)
            group.register(targets)
            return 200, {}
        if path == "/deregister-targets":
            targets = parse_targets(data.get("Targets"), group.tg.port)
            missing = group.deregister([(t.ip, t.port) for t in targets])
            if missing:
                return _error(400, "InvalidTarget", f"The following targets are not registered in target group "
                              f"'{group.tg.name}': {', '.join(missing)}")
            return 200, {}
        if path == "/target-group-attributes":
            group.attributes = parse_target_group_attributes(_key_values(data, "Target group"), group.attributes)
            log_event("target_group_attributes", target_group=group.tg.name, **{
                a["Key"]: a["Value"] for a in group.describe_attributes()["Attributes"]})
            return 200, group.describe_attributes()
        return 404, {"error": f"no such endpoint POST {path}"}

    async def start(self, host: str, port: int) -> asyncio.Server:
        """Serve this API on (host, port) with the lab's one admin HTTP layer."""
        return await serve_admin(self.handle, host, port,
                                 on_crash=lambda target, exc: log_event("error", where="admin api", target=target,
                                                                        error=repr(exc)))
