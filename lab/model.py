"""The typed topology model: loaded and validated once (lab.load), rendered many times (lab.render).

Everything here is frozen. Names from the topology (`nlb`, `haproxy-a`, `alb`, `web-api-b`) are
used verbatim as compose service names, log prefixes and `lab trace` hops.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType
from typing import Mapping

from services.alb_sim.model import Action, Rule

NLB_SERVICE = "nlb"
ALB_SERVICE = "alb"
DNS_SERVICE = "dns"
CLIENT_SERVICE = "client"

NLB_ADMIN_PORT = 8080
ALB_ADMIN_PORT = 8081
DNS_ADMIN_PORT = 8053
WEB_PORT = 8443

def aws_id(*parts: str) -> str:
    """A stable 16-hex-digit resource id, the shape AWS uses in ARNs and DNS names."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class HealthCheck:
    protocol: str  # TCP | HTTP | HTTPS
    port: str  # "traffic-port" or a port number
    path: str
    interval_seconds: int
    timeout_seconds: int
    healthy_threshold: int
    unhealthy_threshold: int
    matcher: str


@dataclass(frozen=True)
class Target:
    id: str
    ip: IPv4Address
    port: int
    az: str


# ACM KeyAlgorithm values the lab can issue (trustme: RSA 2048, ECDSA P-256).
CERTIFICATE_KEY_ALGORITHMS = ("EC_prime256v1", "RSA_2048")


@dataclass(frozen=True)
class Certificate:
    """A lab "ACM" certificate: issued by the lab public CA at `lab up`, stored under certs/."""

    name: str
    arn: str
    pem_file: str  # file name under certs/
    domain_names: tuple[str, ...] = ()  # DomainName first, then SubjectAlternativeNames
    key_algorithm: str = "EC_prime256v1"


@dataclass(frozen=True)
class NlbNode:
    name: str
    az: str
    elastic_ip: IPv4Address
    private_ip: IPv4Address


@dataclass(frozen=True)
class NlbListener:
    protocol: str  # TCP | TLS
    port: int
    target_group: str
    certificate: Certificate | None = None
    ssl_policy: str | None = None
    alpn_policy: str = "None"
    attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # TCP: tcp.idle_timeout.seconds
    certificates: tuple[Certificate, ...] = ()  # the listener's certificate list (SNI), besides the default


@dataclass(frozen=True)
class NlbTargetGroup:
    name: str
    arn: str
    protocol: str  # TCP | TLS
    port: int
    target_type: str  # instance | ip | alb
    targets: tuple[Target, ...]
    health_check: HealthCheck
    attributes: Mapping[str, str]  # every key of services.elbv2.attributes.NLB_TARGET_GROUP, defaults filled in

    @property
    def preserve_client_ip(self) -> bool:
        return self.attributes["preserve_client_ip.enabled"] == "true"

    @property
    def proxy_protocol_v2(self) -> bool:
        return self.attributes["proxy_protocol_v2.enabled"] == "true"

    @property
    def client_ip_kind(self) -> str:
        """How the client's address travels past this group (aws-elb.md sections 2, 3, 7): `alb` (kept at
        TCP level to the ALB), `proxy_v2` (in a PROXY v2 header), `preserved` (the flow's TCP source) or
        `lost` (the target sees the NLB node's private address)."""
        if self.target_type == "alb":
            return "alb"
        if self.proxy_protocol_v2:
            return "proxy_v2"
        return "preserved" if self.preserve_client_ip else "lost"


@dataclass(frozen=True)
class Nlb:
    name: str
    arn: str
    dns_name: str
    nodes: tuple[NlbNode, ...]
    listeners: tuple[NlbListener, ...]
    target_groups: tuple[NlbTargetGroup, ...]
    attributes: Mapping[str, str]
    # Lab-only (docs/decisions.md #23): tcp.idle_timeout.seconds down to 10 s so tests can show
    # the idle-timeout RST before HAProxy's own 60 s client timeout closes the connection.
    relaxed_limits: bool = False
    # Lab-only: clients arrive through this PrivateLink endpoint, so PROXY v2 headers carry the
    # PP2_TYPE_AWS (0xEA) VPC-endpoint TLV (aws-elb.md section 3).
    vpc_endpoint_id: str | None = None

    def target_group(self, name: str) -> NlbTargetGroup:
        return next(tg for tg in self.target_groups if tg.name == name)

    def straight_to_alb(self, listener: NlbListener) -> bool:
        """The listener forwards to a target group of type `alb`: its flows skip HAProxy."""
        return self.target_group(listener.target_group).target_type == "alb"


@dataclass(frozen=True)
class HaproxyInstance:
    name: str
    az: str
    address: IPv4Address


@dataclass(frozen=True)
class Haproxy:
    instances: tuple[HaproxyInstance, ...]
    alb_servers: int
    verify: str  # required | none
    accept_proxy: bool  # resolved from `auto`
    route_internet_via_nlb: bool  # instance targets with client IP preserved need the return route
    # How HAProxy finds the ALB: `runtime` (a resolvers section re-resolving every second, one
    # server slot per address) or `startup` (one server resolved once by libc when HAProxy starts,
    # as configs without a resolvers section do; field notes pain point 8), for demos.
    resolve: str = "runtime"


@dataclass(frozen=True)
class AlbNode:
    name: str
    az: str
    address: IPv4Address


@dataclass(frozen=True)
class AlbListener:
    protocol: str  # HTTP | HTTPS
    port: int
    certificate: Certificate | None
    ssl_policy: str | None
    rules: tuple[Rule, ...]  # by priority; checked and typed by services.alb_sim.config, as the ALB reads them
    default_actions: tuple[Action, ...]
    certificates: tuple[Certificate, ...] = ()  # the listener's certificate list (SNI), besides the default


@dataclass(frozen=True)
class AlbTargetGroup:
    name: str
    arn: str
    protocol: str  # HTTP | HTTPS
    port: int
    targets: tuple[Target, ...]
    health_check: HealthCheck
    attributes: Mapping[str, str] = field(default_factory=dict)  # every key of elbv2 ALB_TARGET_GROUP


MAX_DRAIN_SECONDS = 86400  # alb.rotation.drain_seconds and `lab alb rotate --drain-seconds`


@dataclass(frozen=True)
class AlbRotation:
    """How the ALB's node addresses change (`lab alb rotate`, or every interval_seconds)."""
    drain_seconds: int = 120
    interval_seconds: int = 0  # 0: only on demand
    pools: Mapping[str, tuple[IPv4Address, ...]] = field(default_factory=dict)  # AZ -> addresses, first = initial


@dataclass(frozen=True)
class Alb:
    name: str
    arn: str
    dns_name: str
    nodes: tuple[AlbNode, ...]
    listeners: tuple[AlbListener, ...]
    target_groups: tuple[AlbTargetGroup, ...]
    attributes: Mapping[str, str]
    rotation: AlbRotation = field(default_factory=AlbRotation)


@dataclass(frozen=True)
class WebService:
    name: str
    service: str
    az: str
    address: IPv4Address
    port: int = WEB_PORT


@dataclass(frozen=True)
class Dns:
    vpc_address: IPv4Address
    internet_address: IPv4Address
    public_zone: str
    private_zone: str
    ttl: int


@dataclass(frozen=True)
class Client:
    address: IPv4Address
    source_first: IPv4Address
    source_last: IPv4Address

    def may_send_from(self, ip: IPv4Address) -> bool:
        return self.source_first <= ip <= self.source_last


@dataclass(frozen=True)
class Topology:
    name: str
    source: str  # the file it was loaded from, as the user named it
    account_id: str
    region: str
    site: str
    internet: IPv4Network
    vpc: IPv4Network
    subnets: Mapping[str, IPv4Network]
    dns: Dns
    client: Client
    nlb: Nlb
    haproxy: Haproxy
    alb: Alb
    web: tuple[WebService, ...]
    certificates: tuple[Certificate, ...] = field(default=())

    @property
    def azs(self) -> tuple[str, ...]:
        return tuple(self.subnets)

    def services(self) -> tuple[str, ...]:
        """Every compose service, in start order."""
        return (
            DNS_SERVICE,
            *(w.name for w in self.web),
            ALB_SERVICE,
            *(h.name for h in self.haproxy.instances),
            NLB_SERVICE,
            CLIENT_SERVICE,
        )
