"""Active health checks (asyncio shell around ``health.TargetHealth``).

Every node checks every target of every target group from its own private IP, like AWS
("every node checks every target", NLB-HC23); each node routes on its own view, and the admin
API reports the nodes' consensus. A check connection is closed after each check.
With ``proxy_protocol_v2.enabled`` the check connection starts with a PROXY v2 LOCAL header
(NLB-TGA), before the TLS handshake for HTTPS checks.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, Callable

from services.elbv2 import target_health
from services.elbv2.health_checks import parse_matcher

from .config import NlbConfig, Node, Target, TargetGroup
from .health import State, TargetHealth, Transition, consensus, matches
from .proxy_v2 import encode_v2_local
from .upstream import connect_target, describe

log = logging.getLogger("nlb.health")

_MAX_STATUS_LINE = 8192


class HealthRegistry:
    """TargetHealth per (node, target group, target id), plus the targets that are draining.

    ``cfg`` is replaced by the app whenever the run-time API changes it.
    """

    def __init__(self, cfg: NlbConfig) -> None:
        self.cfg = cfg
        self.version = 0  # +1 on every state change, registration or removal (for callers' caches)
        self._health: dict[tuple[str, str, str], TargetHealth] = {}
        self.draining: dict[tuple[str, str], Target] = {}  # (tg, target id) -> target
        for tg in cfg.target_groups:
            for t in tg.targets:
                self.add(tg, t)

    def add(self, tg: TargetGroup, target: Target) -> None:
        """A newly registered target: ``initial`` on every node (kept if already known)."""
        hc = tg.health_check
        self.version += 1
        for node in self.cfg.nodes:
            self._health.setdefault((node.name, tg.name, target.id),
                                    TargetHealth(hc.healthy_threshold, hc.unhealthy_threshold, self._moved))

    def _moved(self) -> None:
        self.version += 1

    def set_thresholds(self, tg: TargetGroup) -> None:
        """ModifyTargetGroup: new threshold counts apply to the running streaks of passes and
        failures (a target keeps its state; the next result is weighed against the new counts)."""
        hc = tg.health_check
        for (_, tg_name, _), h in self._health.items():
            if tg_name == tg.name:
                h.healthy_threshold, h.unhealthy_threshold = hc.healthy_threshold, hc.unhealthy_threshold

    def remove(self, tg_name: str, target_id: str) -> None:
        self.version += 1
        for node in self.cfg.nodes:
            self._health.pop((node.name, tg_name, target_id), None)
        self.draining.pop((tg_name, target_id), None)

    def get(self, node: str, tg: str, target_id: str) -> TargetHealth:
        return self._health[(node, tg, target_id)]

    def healthy(self, node: str, tg: str, target_id: str) -> bool:
        h = self._health.get((node, tg, target_id))
        return h is not None and h.is_healthy

    def describe(self, tg_name: str, node: str | None = None) -> dict[str, Any]:
        """DescribeTargetHealth-shaped answer; ``node`` picks one node's view (default consensus)."""
        tg = self.cfg.target_group(tg_name)
        nodes = [n.name for n in self.cfg.nodes if node is None or n.name == node]
        out = []
        for (tg_key, _), t in self.draining.items():
            if tg_key == tg.name:
                out.append({**target_description(tg, t),
                            "HealthCheckPort": str(tg.health_check.port_for(t)),
                            "TargetHealth": {"State": target_health.DRAINING,
                                             "Reason": target_health.DEREGISTRATION_IN_PROGRESS,
                                             "Description": target_health.DESCRIPTIONS[
                                                 target_health.DEREGISTRATION_IN_PROGRESS]}})
        for t in tg.targets:
            views = [self._health[(n, tg.name, t.id)] for n in nodes]
            state = consensus(v.state for v in views)
            th: dict[str, Any] = {"State": str(state)}
            if state is not State.HEALTHY:
                reason = next((v.reason for v in views if v.state is state and v.reason), None)
                if reason:
                    th["Reason"] = reason
                    th["Description"] = next(v.description for v in views if v.reason == reason)
            out.append({**target_description(tg, t),
                        "HealthCheckPort": str(tg.health_check.port_for(t)),
                        "TargetHealth": th})
        return {"TargetHealthDescriptions": out}


def target_description(tg: TargetGroup, t: Target) -> dict[str, Any]:
    """``Target`` as DescribeTargetHealth shows it: AWS's Id is the IP address for ip target groups
    (the instance id otherwise); the lab's name for an ip target stays as ``LabTargetName``."""
    if tg.target_type == "ip":
        return {"Target": {"Id": t.ip, "Port": t.port, "AvailabilityZone": t.az},
                **({"LabTargetName": t.id} if t.id != t.ip else {})}
    return {"Target": {"Id": t.id, "Port": t.port, "AvailabilityZone": t.az}}


def health_check_host(cfg: NlbConfig, node: Node, tg: TargetGroup, target: Target) -> str:
    """Host header of HTTP(S) checks: the node's IP and the listener port (NLB-HC23)."""
    port = next((x.port for x in cfg.listeners if x.target_group == tg.name), target.port)
    return f"{node.private_ip}:{port}"


def _https_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # AWS 2023: HTTPS checks fail on TLS1.3-only targets
    return ctx


async def check_once(cfg: NlbConfig, node: Node, tg: TargetGroup, target: Target,
                     https_ctx: ssl.SSLContext | None = None) -> tuple[bool, str]:
    """Run one check; returns (passed, what was seen). Never raises except on cancellation."""
    hc = tg.health_check
    port = hc.port_for(target)
    loop = asyncio.get_running_loop()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(hc.timeout_seconds):
            sock = await connect_target(loop, (target.ip, port), source=(node.private_ip, 0),
                                        transparent=False, timeout=hc.timeout_seconds)
            if hc.protocol == "TCP":
                try:
                    if tg.proxy_protocol_v2:
                        await loop.sock_sendall(sock, encode_v2_local())
                finally:
                    sock.close()
                return True, "connected"
            reader, writer = await asyncio.open_connection(sock=sock)
            if tg.proxy_protocol_v2:
                writer.write(encode_v2_local())
            if hc.protocol == "HTTPS":
                await writer.start_tls(https_ctx or _https_context())
            writer.write((f"GET {hc.path} HTTP/1.1\r\n"
                          f"Host: {health_check_host(cfg, node, tg, target)}\r\n"
                          "User-Agent: ELB-HealthChecker/2.0\r\n"
                          "Accept-Encoding: identity\r\nConnection: close\r\n\r\n").encode("ascii"))
            line = await reader.readuntil(b"\n")
            parts = line[:_MAX_STATUS_LINE].split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                return False, f"bad status line {line[:80]!r}"
            status = int(parts[1])
            if matches(parse_matcher(hc.matcher), status):
                return True, f"HTTP {status}"
            return False, f"HTTP {status} (matcher {hc.matcher})"
    except TimeoutError:
        return False, "timed out"
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return False, f"{hc.protocol} check {target.ip}:{port}: {describe(exc)}"
    finally:
        if writer is not None:
            writer.transport.abort()


async def run_checker(cfg: NlbConfig, node: Node, tg: TargetGroup, target: Target,
                      health: TargetHealth,
                      on_change: Callable[[Node, TargetGroup, Target, Transition], None] | None = None,
                      tg_of: Callable[[], TargetGroup] | None = None,
                      wake: asyncio.Event | None = None) -> None:
    """Check ``target`` forever: first check at once, then every ``interval_seconds``.
    ``tg_of`` returns the target group's current settings (run-time changes, e.g. PROXY v2 on, a
    new health check); ``wake`` is set when the health check changed, so the wait for the next
    check is measured again with the new interval."""
    loop = asyncio.get_running_loop()
    ctx: ssl.SSLContext | None = None
    while True:
        current = tg_of() if tg_of is not None else tg
        # The same target id may have moved (an alb target follows the ALB's node addresses).
        target = next((t for t in current.targets if t.id == target.id), target)
        started = loop.time()
        if ctx is None and current.health_check.protocol == "HTTPS":
            ctx = _https_context()
        ok, detail = await check_once(cfg, node, current, target, ctx)
        change = health.record(ok, detail)
        if change is not None:
            log.info("%s %s %s: %s -> %s%s (%s)", node.name, tg.name, target.id, change.old,
                     change.new, f" {change.reason}" if change.reason else "", detail)
            if on_change is not None:
                on_change(node, current, target, change)
        await _until_next_check(started, lambda: (tg_of() if tg_of is not None else tg), wake)


async def _until_next_check(started: float, tg_of: Callable[[], TargetGroup],
                            wake: asyncio.Event | None) -> None:
    """Sleep until ``started`` + the current interval; a ``wake`` (new settings) re-measures it."""
    loop = asyncio.get_running_loop()
    while True:
        delay = started + tg_of().health_check.interval_seconds - loop.time()
        if delay <= 0:
            return
        if wake is None:
            await asyncio.sleep(delay)
            return
        try:
            async with asyncio.timeout(delay):
                await wake.wait()
        except TimeoutError:
            return
        wake.clear()
