"""Run-time state shared by an ALB's nodes: target groups with health, the upstream pool,
trace ids, access-log writers, TLS contexts. No sockets are opened here except log files.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import secrets
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine, Final, TextIO

from services.certselect import CertFacts, read_facts, select_by_sni
from services.common import PerSecond
from services.elbv2.attributes import answer as attributes_answer

from .config import (AlbConfig, Certificate, ConfigError, Listener, Node, Target, TargetGroup,
                     TargetGroupAttributes, target_group_attribute_values)
from .health import (DRAINING, HEALTHY, UNUSED, LeastOutstanding, Matcher, RoundRobin, TargetHealth, routable,
                     WeightedRandom, slow_start_weight)
from .metrics import Metrics
from .stickiness import StickyCodec
from .rules import RuleTable
from .trace_id import TraceIdGenerator
from .upstream import UpstreamError, UpstreamPool

# ELBSecurityPolicy-2016-08 (the default policy): TLS 1.0-1.2 and these OpenSSL ciphers.
POLICY_2016_08_CIPHERS: Final = ":".join([
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


def alpn_protocols(http2: bool) -> list[str]:
    """What an HTTPS listener offers in ALPN: h2 first while `routing.http2.enabled` (AWS default
    true), then http/1.1. Plain HTTP listeners speak HTTP/1.x only (decisions.md #50)."""
    return ["h2", "http/1.1"] if http2 else ["http/1.1"]


def _policy_context(listener: Listener, cert: Certificate, http2: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert.pem)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"listener {listener.protocol}:{listener.port}: certificate.pem "
                          f"{cert.pem!r} cannot be loaded as certificate chain + private key: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    policy = listener.ssl_policy or "ELBSecurityPolicy-2016-08"
    if "TLS13" not in policy:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(POLICY_2016_08_CIPHERS)
    ctx.set_alpn_protocols(alpn_protocols(http2))
    return ctx


def certificate_facts(cert: Certificate) -> CertFacts:
    """What SNI selection ranks a listed certificate by (no names when the file cannot be read:
    loading its context has already failed loudly then)."""
    try:
        return read_facts(cert.pem, cert.key_algorithm)
    except (OSError, ssl.SSLError, ValueError, KeyError):
        return CertFacts(names=())


def server_tls_context(listener: Listener, http2: bool = True,
                       made: list[ssl.SSLContext] | None = None) -> ssl.SSLContext:
    """TLS for an HTTPS listener: the default certificate, plus the certificate list chosen by SNI
    (AWS: the default certificate when no listed certificate covers the name, or no SNI).
    Every context created is appended to `made` (ALPN changes at run time reach them all)."""
    assert listener.certificate is not None
    certificates = (listener.certificate, *listener.certificates)
    contexts = [_policy_context(listener, c, http2) for c in certificates]
    if made is not None:
        made.extend(contexts)

    def presented(ssl_obj: ssl.SSLObject, server_name: str | None, index: int) -> None:
        try:  # for the access log (domain_name, chosen_cert_arn)
            ssl_obj.alb_sni = server_name  # type: ignore[attr-defined]
            ssl_obj.alb_cert = certificates[index].arn  # type: ignore[attr-defined]
        except AttributeError:
            pass
    # AWS's smart selection, as the NLB (decisions #29)
    select_by_sni(contexts, [certificate_facts(c) for c in listener.certificates], presented)
    return contexts[0]


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
        self._pending.append(line)
        self.lines += 1

    def flush(self) -> None:
        if self._pending and not self._file.closed:
            self._file.write("\n".join(self._pending) + "\n")
            self._file.flush()
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._file.close()


class Member:
    """One registered target of a group: its health, requests in flight, its checker task."""

    __slots__ = ("target", "addr", "health", "inflight", "task", "drain_timer", "healthy_since", "slow_until")

    def __init__(self, target: Target, health: TargetHealth) -> None:
        self.target = target
        self.addr = f"{target.ip}:{target.port}"
        self.health = health
        self.inflight = 0
        self.task: asyncio.Task[None] | None = None
        self.drain_timer: asyncio.TimerHandle | None = None
        self.healthy_since = 0.0
        self.slow_until = 0.0  # in slow start until then (loop time)


Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]
# healthcheck.run_target_checks, passed in: healthcheck builds on this module, not the other way round
Checker = Callable[["TargetGroupRuntime", Target, TargetHealth], Coroutine[Any, Any, None]]


class TargetGroupRuntime:
    """A target group's registered targets, their health and the round-robin cursor.

    Targets can be registered and deregistered at run time; a deregistered target drains
    (no new requests) until its requests in flight end or deregistration_delay passes, as AWS
    documents, then it is gone."""

    def __init__(self, tg: TargetGroup, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.tg = tg
        self.loop = loop
        self.matcher = Matcher(tg.health_check.matcher)
        self.members: list[Member] = [self._member(t) for t in tg.targets]
        self._rr: RoundRobin[Member] = RoundRobin()
        self._lor: LeastOutstanding[Member] = LeastOutstanding()
        self.rng = random.Random()
        self._random: WeightedRandom[Member] = WeightedRandom(self.rng)
        self._routable: list[Member] = []  # routable(members) as of TargetHealth.generation below
        self._routable_generation = -1
        self.tls = tg.protocol == "HTTPS"
        self.attributes: TargetGroupAttributes = tg.attributes
        self.app_key = f"{tg.name}#app"  # AWSALBAPP values name this, so an AWSALB value is not one
        self.spawn: Spawn | None = None  # set once the simulator's TaskGroup runs
        self.checker: Checker | None = None  # the health-check loop of one target (healthcheck.py), set with spawn
        self.check_source: Callable[[], str | None] = lambda: None  # health checks connect from this address
        # Deregistration delay over with requests still in flight to the member: they fail (502).
        self.on_drain_over: Callable[[Member], None] | None = None

    def _member(self, target: Target) -> Member:
        hc = self.tg.health_check
        return Member(target, TargetHealth(hc.healthy_threshold, hc.unhealthy_threshold))

    @property
    def health(self) -> list[TargetHealth]:
        return [m.health for m in self.members]

    @property
    def deregistration_delay(self) -> float:
        return self.attributes.deregistration_delay

    def _now(self) -> float:
        return self.loop.time() if self.loop is not None else time.monotonic()

    def became_healthy(self, health: TargetHealth) -> None:
        """Slow start (AWS): a target that becomes healthy ramps up linearly over
        slow_start.duration_seconds, but only if another healthy target is not in slow start."""
        now = self._now()
        for m in self.members:
            if m.health is health:
                m.healthy_since = now
                duration = self.attributes.slow_start
                others = [o for o in self.members if o is not m and o.health.state == HEALTHY and o.slow_until <= now]
                m.slow_until = now + duration if duration and others else 0.0

    def _slow_start_pick(self, now: float) -> Member | None:
        healthy = [m for m in self.members if m.health.state == HEALTHY]
        if not healthy or all(m.slow_until <= now for m in healthy):
            return None
        weights = [slow_start_weight(now, m.healthy_since, m.slow_until, self.attributes.slow_start) for m in healthy]
        return self.rng.choices(healthy, weights)[0]

    def pick(self) -> Member | None:
        if self.attributes.slow_start:
            member = self._slow_start_pick(self._now())
            if member is not None:
                return member
        algorithm = self.attributes.algorithm
        if algorithm == "least_outstanding_requests":
            return self._lor.pick(self.members, [m.health.state for m in self.members],
                                  [m.inflight for m in self.members])
        if self._routable_generation != TargetHealth.generation:  # a target came, went or changed state
            self._routable = routable(self.members, [m.health.state for m in self.members])
            self._routable_generation = TargetHealth.generation
        if algorithm == "weighted_random":
            return self._random.next(self._routable)
        return self._rr.next(self._routable)

    def sticky_member(self, target: str | None) -> Member | None:
        """The member a valid stickiness cookie names, if it may still take requests: healthy, or
        any registered one when none is healthy (fail open)."""
        if target is None:
            return None
        for m in self.members:
            if m.addr == target:
                state = m.health.state
                if state == HEALTHY or (state not in (DRAINING, UNUSED) and
                                        not any(o.health.state == HEALTHY for o in self.members)):
                    return m
        return None

    def describe_attributes(self) -> dict[str, list[dict[str, str]]]:
        """DescribeTargetGroupAttributes: every key of the ALB target-group table (services.elbv2)."""
        return attributes_answer(target_group_attribute_values(self.attributes))

    def health_port(self, target: Target) -> int:
        port = self.tg.health_check.port
        return target.port if port == "traffic-port" else int(port)

    def find(self, ip: str, port: int) -> Member | None:
        for m in self.members:
            if m.target.ip == ip and m.target.port == port and m.health.state not in (DRAINING, UNUSED):
                return m
        return None

    def register(self, targets: list[Target]) -> None:
        """RegisterTargets: a target already registered is left as it is (AWS: idempotent); one still
        shown draining is registered afresh (its requests in flight finish on their own)."""
        for target in targets:
            if self.find(target.ip, target.port) is not None:
                continue
            for old in [m for m in self.members if m.target.ip == target.ip and m.target.port == target.port]:
                self._remove(old)
            member = self._member(target)
            self.members.append(member)
            if self.spawn is not None:
                self.start_checks(member)

    def start_checks(self, member: Member) -> None:
        assert self.spawn is not None and self.checker is not None
        member.task = self.spawn(self.checker(self, member.target, member.health),
                                 f"health:{self.tg.name}:{member.addr}")

    def deregister(self, targets: list[tuple[str, int]]) -> list[str]:
        """DeregisterTargets; returns the `ip:port`s that were not registered (AWS: InvalidTarget)."""
        missing = []
        for ip, port in targets:
            member = self.find(ip, port)
            if member is None:
                missing.append(f"{ip}:{port}")
                continue
            member.health.deregister()
            log_event("target_health", target_group=self.tg.name, target=member.addr, state=DRAINING,
                      reason="Target.DeregistrationInProgress")
            if member.task is not None:  # a draining target is not checked: its state no longer moves
                member.task.cancel()
                member.task = None
            # AWS: no new requests from now; with none in flight deregistration is complete at once,
            # but the target is shown `draining` until the delay passes either way (decisions #42).
            if self.loop is None:
                self._remove(member)
            else:
                member.drain_timer = self.loop.call_later(self.deregistration_delay, self._drain_over, member)
        return missing

    def _drain_over(self, member: Member) -> None:
        member.drain_timer = None
        if member.inflight > 0 and self.on_drain_over is not None:
            self.on_drain_over(member)
        self._remove(member)

    def request_done(self, member: Member) -> None:
        member.inflight -= 1

    def _remove(self, member: Member) -> None:
        if member.drain_timer is not None:
            member.drain_timer.cancel()
            member.drain_timer = None
        if member.task is not None:
            member.task.cancel()
            member.task = None
        member.health.drained()
        if member in self.members:
            self.members.remove(member)
            log_event("target_health", target_group=self.tg.name, target=member.addr, state="removed")

    def describe(self) -> dict[str, object]:
        """DescribeTargetHealth's shape."""
        out = []
        for m in self.members:
            h = m.health
            state: dict[str, object] = {"State": h.state}
            if h.state != HEALTHY:
                if h.reason:
                    state["Reason"] = h.reason
                if h.description:
                    state["Description"] = h.description
            out.append({"Target": {"Id": m.target.ip, "Port": m.target.port},
                        "HealthCheckPort": str(self.health_port(m.target)), "TargetHealth": state})
        return {"TargetHealthDescriptions": out}


class NodeState:
    """One ALB node at run time: its listening servers, its client connections, draining or not,
    and its own connections to targets (made from the node's address, as each AWS node does)."""

    def __init__(self, node: Node, pool: UpstreamPool) -> None:
        self.node = node
        self.pool = pool
        self.servers: list[asyncio.base_events.Server] = []
        self.connections: set[Any] = set()
        self.draining = False
        self.retire_at: float | None = None

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"Name": self.node.name, "AvailabilityZone": self.node.az,
                                  "Address": self.node.address, "State": "draining" if self.draining else "active",
                                  "Connections": len(self.connections)}
        if self.retire_at is not None:
            out["RetireAt"] = round(self.retire_at, 3)
        return out


def _http_date(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)


class AlbRuntime:
    def __init__(self, config: AlbConfig, loop: asyncio.AbstractEventLoop, *,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.config = config
        self.loop = loop
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.attributes = config.attributes
        self.groups = {tg.name: TargetGroupRuntime(tg, loop) for tg in config.target_groups}
        for group in self.groups.values():
            group.on_drain_over = self._cut_requests
        self.pools: dict[str, UpstreamPool] = {}  # per node address: each node connects from its own
        self.trace = TraceIdGenerator(clock, self.rng)
        self.metrics = Metrics(config.lb_id)
        self.sticky = StickyCodec(secrets.token_bytes(32))
        self.logs: dict[str, AccessLogWriter] = {}
        self.listeners = {l.port: l for l in config.listeners}
        self.tls_contexts: list[ssl.SSLContext] = []
        self.contexts = {l.port: server_tls_context(l, config.attributes.http2, self.tls_contexts)
                         if l.protocol == "HTTPS" else None for l in config.listeners}
        self.tables = {l.port: RuleTable(l) for l in config.listeners}
        self.runtimes: list[ListenerRuntime] = []
        self._date = PerSecond(_http_date)

    def _cut_requests(self, member: Member) -> None:
        """AWS: a request still in flight when the deregistration delay ends gets a 502."""
        error = UpstreamError("deregistered", 502, f"deregistration delay of {member.addr} elapsed with the request in flight")
        for pool in self.pools.values():
            pool.fail_requests_to(member.target.ip, member.target.port, error)

    def node_state(self, node: Node) -> NodeState:
        """A node's run-time state with its own upstream pool, whose connections come from the
        node's address (AWS: targets see the private address of the node that took the request)."""
        pool = self.pools[node.address] = UpstreamPool(self.loop, self.attributes.idle_timeout, source=node.address)
        return NodeState(node, pool)

    def set_idle_timeout(self, seconds: float) -> None:
        for pool in self.pools.values():
            pool.idle_timeout = seconds

    def listener_runtimes(self, state: NodeState) -> list[ListenerRuntime]:
        """The listeners as bound on one node (the node's access log is opened here)."""
        node = state.node
        if node.name not in self.logs:
            self.logs[node.name] = AccessLogWriter(Path(self.config.log_dir) / node.name / "access.log", self.loop)
        made = [ListenerRuntime(self, node, l, self.tables[l.port], self.logs[node.name], self.contexts[l.port], state)
                for l in self.listeners.values()]
        self.runtimes.extend(made)
        return made

    def forget_node(self, state: NodeState) -> None:
        self.runtimes = [lr for lr in self.runtimes if lr.state is not state]
        state.pool.close()
        if self.pools.get(state.node.address) is state.pool:
            del self.pools[state.node.address]
        log = self.logs.pop(state.node.name, None)
        if log is not None:
            log.close()

    def replace_rules(self, port: int, listener: Listener) -> None:
        """Rules changed at run time: every node's listener on `port` uses the new table."""
        table = RuleTable(listener)
        self.listeners[port], self.tables[port] = listener, table
        for lr in self.runtimes:
            if lr.listener.port == port:
                lr.listener, lr.rules = listener, table

    def set_http2(self, enabled: bool) -> None:
        """`routing.http2.enabled` changed: new TLS connections negotiate accordingly."""
        for ctx in self.tls_contexts:
            ctx.set_alpn_protocols(alpn_protocols(enabled))

    def http_date(self) -> str:
        return self._date.of(int(self.clock()))

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        for log in self.logs.values():
            log.close()


@dataclass
class ListenerRuntime:
    """One listener as bound on one node."""
    alb: AlbRuntime
    node: Node
    listener: Listener
    rules: RuleTable
    log: AccessLogWriter
    ssl_context: ssl.SSLContext | None
    state: NodeState

    @property
    def scheme(self) -> str:
        return "https" if self.listener.protocol == "HTTPS" else "http"

    @property
    def draining(self) -> bool:
        """This node is retiring: its answers say `Connection: close`."""
        return self.state.draining
