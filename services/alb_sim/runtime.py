"""Run-time state shared by an ALB's nodes: target groups with health, the upstream pool,
trace ids, access-log writers, TLS contexts. No sockets are opened here except log files.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from .config import AlbConfig, ConfigError, ForwardAction, Listener, Node, Target, TargetGroup
from .health import HEALTHY, Matcher, RoundRobin, TargetHealth
from .rules import RuleTable
from .trace_id import TraceIdGenerator
from .upstream import UpstreamPool

# ELBSecurityPolicy-2016-08 (the default policy): TLS 1.0-1.2 and these OpenSSL ciphers.
POLICY_2016_08_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256", "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA", "ECDHE-ECDSA-AES256-SHA",
    "AES128-GCM-SHA256", "AES128-SHA256", "AES128-SHA", "AES256-GCM-SHA384", "AES256-SHA256", "AES256-SHA",
])


def log_event(event: str, **fields: object) -> None:
    """One JSON line on stdout (startup, errors, health transitions)."""
    record = {"ts": round(time.time(), 3), "component": "alb", "event": event, **fields}
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


def server_tls_context(listener: Listener) -> ssl.SSLContext:
    """TLS for an HTTPS listener: the PEM holds the chain and the private key."""
    assert listener.certificate is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(listener.certificate.pem)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"listener {listener.protocol}:{listener.port}: certificate.pem "
                          f"{listener.certificate.pem!r} cannot be loaded as certificate chain + private key: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    policy = listener.ssl_policy or "ELBSecurityPolicy-2016-08"
    if "TLS13" not in policy:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(POLICY_2016_08_CIPHERS)
    ctx.set_alpn_protocols(["http/1.1"])  # no HTTP/2 front end yet: h2 clients fall back

    def remember_sni(ssl_obj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        try:
            ssl_obj.alb_sni = server_name  # type: ignore[attr-defined]
        except AttributeError:
            pass
    ctx.sni_callback = remember_sni
    return ctx


class AccessLogWriter:
    """`<log_dir>/<node>/access.log`, appended; lines are batched per event-loop tick."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.loop = loop
        self._file: TextIO = open(path, "a", encoding="utf-8")
        self._pending: list[str] = []
        self.lines = 0

    def write(self, line: str) -> None:
        if not self._pending:
            self.loop.call_soon(self.flush)
        self._pending.append(line + "\n")
        self.lines += 1

    def flush(self) -> None:
        if self._pending and not self._file.closed:
            self._file.write("".join(self._pending))
            self._file.flush()
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._file.close()


class TargetGroupRuntime:
    """A target group's registered targets, their health and the round-robin cursor."""

    def __init__(self, tg: TargetGroup) -> None:
        self.tg = tg
        self.matcher = Matcher(tg.health_check.matcher)
        self.health = [TargetHealth(tg.health_check.healthy_threshold, tg.health_check.unhealthy_threshold)
                       for _ in tg.targets]
        self._rr: RoundRobin[Target] = RoundRobin()
        self.tls = tg.protocol == "HTTPS"

    def pick(self) -> Target | None:
        return self._rr.pick(self.tg.targets, [h.state for h in self.health])

    def health_port(self, target: Target) -> int:
        port = self.tg.health_check.port
        return target.port if port == "traffic-port" else int(port)

    def describe(self) -> dict[str, object]:
        """DescribeTargetHealth's shape."""
        out = []
        for target, h in zip(self.tg.targets, self.health):
            state: dict[str, object] = {"State": h.state}
            if h.state != HEALTHY:
                if h.reason:
                    state["Reason"] = h.reason
                if h.description:
                    state["Description"] = h.description
            out.append({"Target": {"Id": target.ip, "Port": target.port},
                        "HealthCheckPort": str(self.health_port(target)), "TargetHealth": state})
        return {"TargetHealthDescriptions": out}


@dataclass
class ListenerRuntime:
    """One listener as bound on one node."""
    alb: "AlbRuntime"
    node: Node
    listener: Listener
    rules: RuleTable
    log: AccessLogWriter
    ssl_context: ssl.SSLContext | None

    @property
    def scheme(self) -> str:
        return "https" if self.listener.protocol == "HTTPS" else "http"


class AlbRuntime:
    def __init__(self, config: AlbConfig, loop: asyncio.AbstractEventLoop, *,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.config = config
        self.loop = loop
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.attributes = config.attributes
        self.groups = {tg.name: TargetGroupRuntime(tg) for tg in config.target_groups}
        self.pool = UpstreamPool(loop, config.attributes.idle_timeout)
        self.trace = TraceIdGenerator(clock, self.rng)
        self.logs = {node.name: AccessLogWriter(Path(config.log_dir) / node.name / "access.log", loop)
                     for node in config.nodes}
        self._date_second = -1
        self._date = ""

    def listener_runtimes(self) -> list[ListenerRuntime]:
        contexts = {l.port: server_tls_context(l) if l.protocol == "HTTPS" else None for l in self.config.listeners}
        tables = {l.port: RuleTable(l) for l in self.config.listeners}
        return [ListenerRuntime(self, node, l, tables[l.port], self.logs[node.name], contexts[l.port])
                for node in self.config.nodes for l in self.config.listeners]

    def http_date(self) -> str:
        now = self.clock()
        if int(now) != self._date_second:
            self._date_second = int(now)
            self._date = email.utils.formatdate(now, usegmt=True)
        return self._date

    def choose_group(self, action: ForwardAction) -> TargetGroupRuntime:
        groups = action.target_groups
        if len(groups) == 1:
            return self.groups[groups[0].name]
        total = sum(g.weight for g in groups)
        if total <= 0:
            return self.groups[groups[0].name]
        point = self.rng.uniform(0, total)
        for g in groups:
            point -= g.weight
            if point <= 0 and g.weight > 0:
                return self.groups[g.name]
        return self.groups[groups[-1].name]

    def close(self) -> None:
        self.pool.close()
        for log in self.logs.values():
            log.close()
