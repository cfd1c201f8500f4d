"""The ALB simulator's configuration model: frozen dataclasses, built and validated by config.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union

from services.certselect import DEFAULT_KEY_ALGORITHM


@dataclass(frozen=True)
class Node:
    name: str
    az: str
    address: str


@dataclass(frozen=True)
class QueryPair:
    key: str | None
    value: str


ConditionValue = Union[str, QueryPair]


@dataclass(frozen=True)
class Condition:
    field: str
    values: tuple[ConditionValue, ...]
    header_name: str | None = None


@dataclass(frozen=True)
class WeightedTargetGroup:
    name: str
    weight: int = 1


@dataclass(frozen=True)
class ForwardAction:
    target_groups: tuple[WeightedTargetGroup, ...]
    type: str = "forward"
    stickiness_seconds: int = 0  # TargetGroupStickinessConfig: 0 = off, else DurationSeconds


@dataclass(frozen=True)
class RedirectAction:
    protocol: str = "#{protocol}"
    port: str = "#{port}"
    host: str = "#{host}"
    path: str = "/#{path}"
    query: str = "#{query}"
    status_code: str = "HTTP_301"
    type: str = "redirect"


@dataclass(frozen=True)
class FixedResponseAction:
    status_code: str
    content_type: str = "text/plain"
    message_body: str = ""
    type: str = "fixed-response"


Action = Union[ForwardAction, RedirectAction, FixedResponseAction]


@dataclass(frozen=True)
class Rule:
    priority: int
    conditions: tuple[Condition, ...]
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class Certificate:
    arn: str
    pem: str
    key_algorithm: str = DEFAULT_KEY_ALGORITHM  # ACM KeyAlgorithm: ranks several SNI matches (certselect)


@dataclass(frozen=True)
class Listener:
    protocol: str
    port: int
    rules: tuple[Rule, ...]
    default_actions: tuple[Action, ...]
    certificate: Certificate | None = None
    ssl_policy: str | None = None
    certificates: tuple[Certificate, ...] = ()  # the listener's certificate list (SNI), besides the default


@dataclass(frozen=True)
class HealthCheck:
    protocol: str = "HTTP"
    port: str = "traffic-port"
    path: str = "/"
    interval_seconds: float = 30
    timeout_seconds: float = 5
    healthy_threshold: int = 5
    unhealthy_threshold: int = 2
    matcher: str = "200"


@dataclass(frozen=True)
class Target:
    id: str
    ip: str
    port: int
    az: str | None = None


@dataclass(frozen=True)
class TargetGroupAttributes:
    """The target group attributes the simulator models (ModifyTargetGroupAttributes keys)."""
    deregistration_delay: float = 300.0  # deregistration_delay.timeout_seconds (AWS default 300)
    algorithm: str = "round_robin"  # load_balancing.algorithm.type
    anomaly_mitigation: bool = False  # load_balancing.algorithm.anomaly_mitigation (weighted_random only)
    stickiness: bool = False  # stickiness.enabled
    stickiness_type: str = "lb_cookie"  # stickiness.type: lb_cookie | app_cookie
    stickiness_seconds: int = 86400  # stickiness.lb_cookie.duration_seconds
    app_cookie_name: str = ""  # stickiness.app_cookie.cookie_name
    app_cookie_seconds: int = 86400  # stickiness.app_cookie.duration_seconds
    slow_start: int = 0  # slow_start.duration_seconds (0 = off, else 30-900)


@dataclass(frozen=True)
class TargetGroup:
    name: str
    arn: str
    protocol: str
    port: int
    targets: tuple[Target, ...]
    health_check: HealthCheck
    attributes: TargetGroupAttributes = TargetGroupAttributes()


@dataclass(frozen=True)
class Attributes:
    xff_mode: str = "append"
    xff_client_port: bool = False
    idle_timeout: float = 60.0
    preserve_host: bool = False
    desync_mode: str = "defensive"  # routing.http.desync_mitigation_mode: monitor | defensive | strictest
    raw: Mapping[str, str] = field(default_factory=dict)
    http2: bool = True  # routing.http2.enabled: HTTPS listeners offer h2 in ALPN


@dataclass(frozen=True)
class Admin:
    address: str
    port: int


@dataclass(frozen=True)
class Rotation:
    """How the ALB's node addresses change (decisions.md #40)."""
    drain_seconds: float = 120.0  # old nodes keep serving this long after the DNS record changed
    interval_seconds: float = 0.0  # periodic rotation; 0 = only on demand (`lab alb rotate`)
    pools: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # AZ -> addresses a node may take
    dns_admin: str | None = None  # "10.20.0.2:8053": the lab DNS admin API
    dns_ttl: int = 60


@dataclass(frozen=True)
class AlbConfig:
    name: str
    arn: str
    dns_name: str
    nodes: tuple[Node, ...]
    attributes: Attributes
    listeners: tuple[Listener, ...]
    target_groups: tuple[TargetGroup, ...]
    log_dir: str
    admin: Admin | None
    rotation: Rotation = field(default_factory=Rotation)
    vpc_cidr: str | None = None  # the VPC's CIDR: ip targets outside it need an AvailabilityZone

    def target_group(self, name: str) -> TargetGroup:
        for tg in self.target_groups:
            if tg.name == name:
                return tg
        raise KeyError(name)

    @property
    def lb_id(self) -> str:
        """`app/<name>/<id>` as the access log's `elb` field shows it."""
        marker = ":loadbalancer/"
        return self.arn.split(marker, 1)[1] if marker in self.arn else f"app/{self.name}/0"
