"""NLB simulator configuration: the JSON the lab renderer writes, loaded once into frozen dataclasses.

Every validation error is a ``ConfigError`` whose message names the JSON path, the offending
value, what is allowed and (when loaded from a file) the file:
``listeners[1].port: 70000 is not a valid port (1-65535) in /lab/config/nlb.json``.
Attribute keys and values are AWS's own strings (``"true"``/``"false"``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

from services.certselect import DEFAULT_KEY_ALGORITHM, KEY_ALGORITHMS
from services.common import ListenAddressError, parse_listen
from services.elbv2 import attributes as elbv2_attributes
from services.elbv2 import health_checks
from services.elbv2.errors import ApiError
from services.elbv2.security_policies import ALPN_POLICIES, DEFAULT_SSL_POLICY, check_ssl_policy

LISTENER_PROTOCOLS = ("TCP", "TLS")
TARGET_GROUP_PROTOCOLS = ("TCP", "TLS")
TARGET_TYPES = ("instance", "ip", "alb")
# Listener protocol -> target group protocols AWS accepts (NLB-TG23; UDP/TCP_UDP not simulated).
VALID_COMBINATIONS = {"TCP": ("TCP",), "TLS": ("TCP", "TLS")}
MAX_CERTIFICATES = 25  # certificates per load balancer, default certificates not counted (NLB-LIM23)


class ConfigError(Exception):
    """The configuration is invalid; the message is one line naming path, value and choices."""


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    az: str
    elastic_ip: str
    private_ip: str


@dataclass(frozen=True, slots=True)
class Certificate:
    arn: str
    pem: str
    key: str | None  # None: the private key is in ``pem``
    key_algorithm: str = DEFAULT_KEY_ALGORITHM  # ACM KeyAlgorithm, ranks SNI matches (certselect)


@dataclass(frozen=True, slots=True)
class Listener:
    protocol: str
    port: int
    target_group: str
    certificate: Certificate | None
    ssl_policy: str | None
    alpn_policy: str
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)  # TCP: tcp.idle_timeout.seconds
    certificates: tuple[Certificate, ...] = ()  # the certificate list (SNI), besides the default

    @property
    def label(self) -> str:
        return f"{self.protocol}:{self.port}"

    @property
    def idle_timeout_seconds(self) -> int:
        """tcp.idle_timeout.seconds on TCP listeners; TLS listeners: fixed 350 s (NLB-LB23)."""
        return int(self.attributes.get("tcp.idle_timeout.seconds", "350"))


@dataclass(frozen=True, slots=True)
class Target:
    id: str
    ip: str
    port: int
    az: str


@dataclass(frozen=True, slots=True)
class HealthCheck:
    protocol: str
    port: int | None  # None: "traffic-port"
    path: str
    interval_seconds: float
    timeout_seconds: float
    healthy_threshold: int
    unhealthy_threshold: int
    matcher: str

    def port_for(self, target: Target) -> int:
        return target.port if self.port is None else self.port

    def settings(self) -> dict[str, Any]:
        """As services.elbv2.health_checks names them (the inverse of ``health_check_from``)."""
        return {"protocol": self.protocol, "port": "traffic-port" if self.port is None else str(self.port),
                "path": self.path, "interval_seconds": self.interval_seconds, "timeout_seconds": self.timeout_seconds,
                "healthy_threshold": self.healthy_threshold, "unhealthy_threshold": self.unhealthy_threshold,
                "matcher": self.matcher}


def health_check_from(settings: Mapping[str, Any]) -> HealthCheck:
    """Checked settings (services.elbv2.health_checks.check) as the simulator's HealthCheck."""
    port = settings["port"]
    return HealthCheck(protocol=settings["protocol"], port=None if port == "traffic-port" else int(port),
                       path=settings["path"], interval_seconds=settings["interval_seconds"],
                       timeout_seconds=settings["timeout_seconds"], healthy_threshold=settings["healthy_threshold"],
                       unhealthy_threshold=settings["unhealthy_threshold"], matcher=settings["matcher"])


@dataclass(frozen=True, slots=True)
class AlbTracking:
    """How an ``alb`` target group finds the ALB's current node addresses (albtrack.py)."""

    dns_name: str  # the ALB's DNS name
    resolver: tuple[str, int]  # the VPC resolver that answers for it
    subnets: tuple[tuple[str, ipaddress.IPv4Network], ...]  # (AZ, subnet): which AZ an address is in


@dataclass(frozen=True, slots=True)
class TargetGroup:
    name: str
    arn: str
    protocol: str
    port: int
    target_type: str
    targets: tuple[Target, ...]
    health_check: HealthCheck
    attributes: Mapping[str, str]  # every key of elbv2.attributes.NLB_TARGET_GROUP, AWS defaults filled in
    alb: AlbTracking | None = None  # target type alb: follow the ALB's node addresses

    def flag(self, key: str) -> bool:
        return self.attributes[key] == "true"

    @property
    def preserve_client_ip(self) -> bool:
        return self.flag("preserve_client_ip.enabled")

    @property
    def proxy_protocol_v2(self) -> bool:
        return self.flag("proxy_protocol_v2.enabled")

    @property
    def header_placement(self) -> str:
        return self.attributes["proxy_protocol_v2.client_to_server.header_placement"]

    @property
    def deregistration_delay_seconds(self) -> int:
        return int(self.attributes["deregistration_delay.timeout_seconds"])

    @property
    def cross_zone(self) -> bool | None:
        """None: use_load_balancer_configuration."""
        value = self.attributes["load_balancing.cross_zone.enabled"]
        return None if value == "use_load_balancer_configuration" else value == "true"

    @property
    def connection_termination(self) -> bool:
        """deregistration_delay.connection_termination.enabled (default false)."""
        return self.flag("deregistration_delay.connection_termination.enabled")

    @property
    def unhealthy_connection_termination(self) -> bool:
        """target_health_state.unhealthy.connection_termination.enabled (default true)."""
        return self.flag("target_health_state.unhealthy.connection_termination.enabled")

    @property
    def stickiness(self) -> bool:
        return self.flag("stickiness.enabled")


@dataclass(frozen=True, slots=True)
class Dns:
    """Where the NLB publishes its node addresses (the lab DNS admin API) and under which names."""

    admin_url: str  # http://10.20.0.2:8053
    ttl: int
    names: tuple[str, ...]  # names that resolve to every healthy AZ's Elastic IP


@dataclass(frozen=True, slots=True)
class Admin:
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class NlbConfig:
    name: str
    arn: str
    nodes: tuple[Node, ...]
    attributes: Mapping[str, str]  # every key of elbv2.attributes.NLB_LOAD_BALANCER, defaults filled in
    listeners: tuple[Listener, ...]
    target_groups: tuple[TargetGroup, ...]
    log_dir: str
    admin: Admin
    transparent: bool
    relaxed_limits: bool
    dns: Dns | None = None
    splice: bool = True  # plain TCP flows relayed with os.splice (false: the Protocol relay)
    vpc_endpoint_id: str | None = None  # PROXY v2 headers carry the 0xEA VPC-endpoint TLV

    def target_group(self, name: str) -> TargetGroup:
        for tg in self.target_groups:
            if tg.name == name:
                return tg
        raise KeyError(name)

    @property
    def cross_zone(self) -> bool:
        return self.attributes["load_balancing.cross_zone.enabled"] == "true"

    def cross_zone_for(self, tg: TargetGroup) -> bool:
        """TG attribute wins over the LB attribute (``alb`` TGs always inherit the LB's)."""
        if tg.cross_zone is None or tg.target_type == "alb":
            return self.cross_zone
        return tg.cross_zone

    @property
    def needs_transparent_routing(self) -> bool:
        return self.transparent and any(tg.preserve_client_ip for tg in self.target_groups)


def load_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> NlbConfig:
    """Load and validate; ``source`` is a path to the JSON file or an already-parsed dict."""
    if isinstance(source, Mapping):
        return _Loader("").config(source)
    where = f" in {os.fspath(source)}"
    try:
        with open(source, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read NLB config {os.fspath(source)}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{os.fspath(source)}: invalid JSON at line {exc.lineno} column"
                          f" {exc.colno}: {exc.msg}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"(top level): expected a JSON object, got {type(raw).__name__}{where}")
    return _Loader(where).config(raw)


class _Loader:
    def __init__(self, where: str) -> None:
        self.where = where

    def err(self, path: str, msg: str) -> ConfigError:
        return ConfigError(f"{path}: {msg}{self.where}")

    # --- primitives ---
    def obj(self, raw: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(raw, dict):
            raise self.err(path, f"expected an object, got {json.dumps(raw)}")
        return raw

    def req(self, raw: Mapping[str, Any], key: str, path: str) -> Any:
        if key not in raw:
            raise self.err(f"{path}.{key}" if path else key, "is required")
        return raw[key]

    def string(self, raw: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
        p = f"{path}.{key}" if path else key
        value = raw.get(key, default) if default is not None else self.req(raw, key, path)
        if not isinstance(value, str) or not value:
            raise self.err(p, f"{json.dumps(value)} is not a non-empty string")
        return value

    def choice(self, raw: Mapping[str, Any], key: str, path: str, choices: tuple[str, ...],
               default: str | None = None) -> str:
        value = self.string(raw, key, path, default)
        if value not in choices:
            raise self.err(f"{path}.{key}" if path else key,
                           f"{json.dumps(value)} is not one of {', '.join(choices)}")
        return value

    def ipv4(self, raw: Mapping[str, Any], key: str, path: str) -> str:
        value = self.string(raw, key, path)
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise self.err(f"{path}.{key}", f"{json.dumps(value)} is not an IPv4 address") from None

    def port(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.err(path, f"{json.dumps(value)} is not a valid port (1-65535)")
        return value

    def list_(self, raw: Mapping[str, Any], key: str, path: str, nonempty: bool = True) -> list[Any]:
        value = self.req(raw, key, path)
        p = f"{path}.{key}" if path else key
        if not isinstance(value, list):
            raise self.err(p, f"expected a list, got {json.dumps(value)}")
        if nonempty and not value:
            raise self.err(p, "must not be empty")
        return value

    def attrs(self, raw: Mapping[str, Any], path: str, table: elbv2_attributes.Table,
              target_type: str | None = None) -> dict[str, str]:
        """``attributes`` checked against the ELBv2 table: every key, AWS's defaults filled in."""
        value = raw.get("attributes", {})
        p = f"{path}.attributes" if path else "attributes"
        self.obj(value, p)
        for k, v in value.items():
            if not isinstance(v, str):
                raise self.err(f"{p}.{k}", f"{json.dumps(v)} must be a string (AWS attribute values"
                                           " are strings, e.g. \"true\")")
        try:
            return table.check(value.items(), {}, target_type)
        except elbv2_attributes.AttributeProblem as exc:
            raise self.err(f"{p}.{exc.key}", str(exc)) from None
        except ApiError as exc:
            raise self.err(p, str(exc)) from None

    def number(self, raw: Mapping[str, Any], key: str, path: str, default: float, lo: float,
               hi: float, integer: bool = False) -> float:
        value = raw.get(key, default)
        p = f"{path}.{key}"
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or not lo <= value <= hi:
            kind = "an integer" if integer else "a number"
            raise self.err(p, f"{json.dumps(value)} is not {kind} in {lo:g}-{hi:g}")
        return value

    # --- sections ---
    def config(self, raw: Mapping[str, Any]) -> NlbConfig:
        relaxed = raw.get("relaxed_limits", False)
        if not isinstance(relaxed, bool):
            raise self.err("relaxed_limits", f"{json.dumps(relaxed)} must be true or false")
        self.relaxed = relaxed
        name = self.string(raw, "name", "")
        arn = raw.get("arn", "")
        if not isinstance(arn, str):
            raise self.err("arn", f"{json.dumps(arn)} is not a string")
        nodes = tuple(self.node(n, f"nodes[{i}]") for i, n in enumerate(self.list_(raw, "nodes", "")))
        self.unique([n.name for n in nodes], "nodes", "name")
        self.unique([n.elastic_ip for n in nodes], "nodes", "elastic_ip")
        self.unique([n.az for n in nodes], "nodes", "az")
        attributes = self.attrs(raw, "", elbv2_attributes.NLB_LOAD_BALANCER)
        azs = tuple(n.az for n in nodes)
        tgs = tuple(self.target_group(t, f"target_groups[{i}]", azs)
                    for i, t in enumerate(self.list_(raw, "target_groups", "")))
        self.unique([t.name for t in tgs], "target_groups", "name")
        tg_by_name = {t.name: t for t in tgs}
        listeners = tuple(self.listener(x, f"listeners[{i}]", tg_by_name)
                          for i, x in enumerate(self.list_(raw, "listeners", "")))
        self.unique([x.port for x in listeners], "listeners", "port")
        for i, x in enumerate(listeners):
            if x.protocol == "TLS" and tg_by_name[x.target_group].protocol == "TLS" \
                    and tg_by_name[x.target_group].stickiness:
                raise self.err(f"listeners[{i}].target_group", str(elbv2_attributes.no_tls_stickiness()))
        if sum(len(x.certificates) for x in listeners) > MAX_CERTIFICATES:
            raise self.err("listeners", f"TooManyCertificates: a load balancer has at most {MAX_CERTIFICATES}"
                                        " certificates in its listeners' certificate lists")
        log_dir = self.string(raw, "log_dir", "", "/var/log/lab/nlb")
        admin = self.admin(raw.get("admin", {"address": nodes[0].private_ip, "port": 8080}))
        transparent = raw.get("transparent", True)
        if not isinstance(transparent, bool):
            raise self.err("transparent", f"{json.dumps(transparent)} must be true or false")
        dns = self.dns(raw["dns"]) if raw.get("dns") is not None else None
        vpce = raw.get("vpc_endpoint_id")
        if vpce is not None and (not isinstance(vpce, str) or not vpce.startswith("vpce-")
                                 or not vpce.isascii()):
            raise self.err("vpc_endpoint_id", f"{json.dumps(vpce)} is not a VPC endpoint id (vpce-...)")
        splice = raw.get("splice", True)
        if not isinstance(splice, bool):
            raise self.err("splice", f"{json.dumps(splice)} must be true or false")
        return NlbConfig(name=name, arn=arn, nodes=nodes,
                         attributes=attributes, listeners=listeners, target_groups=tgs,
                         log_dir=log_dir, admin=admin, transparent=transparent,
                         relaxed_limits=relaxed, dns=dns, splice=splice, vpc_endpoint_id=vpce)

    def dns(self, raw: Any) -> Dns:
        raw = self.obj(raw, "dns")
        url = self.string(raw, "admin_url", "dns")
        if not url.startswith("http://"):
            raise self.err("dns.admin_url", f"{json.dumps(url)} must start with http://")
        ttl = int(self.number(raw, "ttl", "dns", 60, 1, 86400, integer=True))
        names = self.list_(raw, "names", "dns")
        for i, n in enumerate(names):
            if not isinstance(n, str) or not n:
                raise self.err(f"dns.names[{i}]", f"{json.dumps(n)} is not a non-empty string")
        return Dns(admin_url=url.rstrip("/"), ttl=ttl, names=tuple(names))

    def unique(self, values: list[Any], section: str, key: str) -> None:
        seen: dict[Any, int] = {}
        for i, v in enumerate(values):
            if v in seen:
                raise self.err(f"{section}[{i}].{key}",
                               f"{json.dumps(v)} duplicates {section}[{seen[v]}].{key}")
            seen[v] = i

    def node(self, raw: Any, path: str) -> Node:
        raw = self.obj(raw, path)
        return Node(name=self.string(raw, "name", path), az=self.string(raw, "az", path),
                    elastic_ip=self.ipv4(raw, "elastic_ip", path),
                    private_ip=self.ipv4(raw, "private_ip", path))

    def admin(self, raw: Any) -> Admin:
        raw = self.obj(raw, "admin")
        return Admin(address=self.ipv4(raw, "address", "admin"),
                     port=self.port(self.req(raw, "port", "admin"), "admin.port"))

    def listener(self, raw: Any, path: str, tgs: Mapping[str, TargetGroup]) -> Listener:
        raw = self.obj(raw, path)
        protocol = self.choice(raw, "protocol", path, LISTENER_PROTOCOLS)
        port = self.port(self.req(raw, "port", path), f"{path}.port")
        tg_name = self.string(raw, "target_group", path)
        if tg_name not in tgs:
            raise self.err(f"{path}.target_group", f"{json.dumps(tg_name)} is not a target group"
                                                   f" (known: {', '.join(tgs) or 'none'})")
        tg = tgs[tg_name]
        if tg.protocol not in VALID_COMBINATIONS[protocol]:
            raise self.err(f"{path}.target_group",
                           f"{protocol} listener cannot forward to {tg.protocol} target group"
                           f" {json.dumps(tg_name)} (allowed: {', '.join(VALID_COMBINATIONS[protocol])})")
        if tg.target_type == "alb" and protocol != "TCP":
            raise self.err(f"{path}.protocol",
                           f"{json.dumps(protocol)}: alb target groups need a TCP listener")
        cert: Certificate | None = None
        policy: str | None = None
        extra: list[Certificate] = []
        if protocol == "TLS":
            cert = self.certificate(self.req(raw, "certificate", path), f"{path}.certificate")
            listed = raw.get("certificates", [])
            if not isinstance(listed, list):
                raise self.err(f"{path}.certificates", f"expected a list, got {json.dumps(listed)}")
            for i, c in enumerate(listed):
                extra.append(self.certificate(c, f"{path}.certificates[{i}]"))
                same = extra[-1].arn or extra[-1].pem
                if same in [cert.arn or cert.pem, *(e.arn or e.pem for e in extra[:-1])]:
                    raise self.err(f"{path}.certificates[{i}]", f"{json.dumps(same)} is already the default"
                                                                " certificate or in the list")
            try:
                policy = check_ssl_policy(raw.get("ssl_policy", DEFAULT_SSL_POLICY))
            except ApiError as exc:
                raise self.err(f"{path}.ssl_policy", str(exc)) from None
        elif "certificate" in raw or "certificates" in raw or "ssl_policy" in raw:
            key = next(k for k in ("certificate", "certificates", "ssl_policy") if k in raw)
            raise self.err(f"{path}.{key}", "only TLS listeners take certificates and ssl_policy")
        alpn = self.choice(raw, "alpn_policy", path, ALPN_POLICIES, "None")
        value = raw.get("attributes", {})
        attrs = self.attrs(raw, path, elbv2_attributes.NLB_TCP_LISTENER_RELAXED if self.relaxed
                           else elbv2_attributes.NLB_TCP_LISTENER) if protocol == "TCP" else {}
        if protocol != "TCP" and value:
            try:
                elbv2_attributes.nlb_listener_attributes(protocol, self.obj(value, f"{path}.attributes").items(), {})
            except ApiError as exc:
                raise self.err(f"{path}.attributes", str(exc)) from None
        return Listener(protocol=protocol, port=port, target_group=tg_name, certificate=cert,
                        ssl_policy=policy, alpn_policy=alpn, attributes=attrs, certificates=tuple(extra))

    def certificate(self, raw: Any, path: str) -> Certificate:
        c = self.obj(raw, path)
        key = c.get("key")
        if key is not None and (not isinstance(key, str) or not key):
            raise self.err(f"{path}.key", f"{json.dumps(key)} is not a non-empty string")
        algorithm = self.choice(c, "key_algorithm", path, tuple(KEY_ALGORITHMS), DEFAULT_KEY_ALGORITHM)
        return Certificate(arn=c.get("arn", ""), pem=self.string(c, "pem", path), key=key,
                           key_algorithm=algorithm)

    def target_group(self, raw: Any, path: str, azs: tuple[str, ...]) -> TargetGroup:
        raw = self.obj(raw, path)
        name = self.string(raw, "name", path)
        protocol = self.choice(raw, "protocol", path, TARGET_GROUP_PROTOCOLS)
        port = self.port(self.req(raw, "port", path), f"{path}.port")
        target_type = self.choice(raw, "target_type", path, TARGET_TYPES, "instance")
        # AWS defaults per target type (NLB-TGA): instance -> client IP preserved; ip + TCP/TLS -> not.
        attrs = self.attrs(raw, path, elbv2_attributes.NLB_TARGET_GROUP, target_type)
        if target_type == "alb" and attrs != elbv2_attributes.NLB_TARGET_GROUP.defaults(target_type):
            raise self.err(f"{path}.attributes", str(elbv2_attributes.no_alb_target_group_attributes()))
        targets = tuple(self.target(t, f"{path}.targets[{i}]", port, azs)
                        for i, t in enumerate(self.list_(raw, "targets", path, nonempty=False)))
        self.unique([f"{t.ip}:{t.port}" for t in targets], f"{path}.targets", "ip")
        hc = self.health_check(raw.get("health_check", {}), f"{path}.health_check", target_type)
        alb = None
        if raw.get("alb") is not None:
            if target_type != "alb":
                raise self.err(f"{path}.alb", "only target groups of target type alb follow an ALB")
            alb = self.alb_tracking(raw["alb"], f"{path}.alb", azs)
        return TargetGroup(name=name, arn=raw.get("arn", ""), protocol=protocol, port=port,
                           target_type=target_type, targets=targets, health_check=hc, attributes=attrs,
                           alb=alb)

    def alb_tracking(self, raw: Any, path: str, azs: tuple[str, ...]) -> AlbTracking:
        raw = self.obj(raw, path)
        text = self.string(raw, "resolver", path)
        try:  # "10.20.0.2" (port 53) or "127.0.0.1:5353"
            resolver = parse_listen(text) if ":" in text else (str(ipaddress.IPv4Address(text)), 53)
        except (ListenAddressError, ValueError) as exc:
            raise self.err(f"{path}.resolver", f"{json.dumps(text)} is not an IPv4 address or IP:PORT"
                                               f" ({exc})") from None
        subnets = []
        for az, cidr in self.obj(self.req(raw, "subnets", path), f"{path}.subnets").items():
            if az not in azs:
                raise self.err(f"{path}.subnets.{az}", f"{json.dumps(az)} is not an enabled Availability Zone"
                                                       f" of the load balancer (nodes: {', '.join(azs)})")
            try:
                subnets.append((az, ipaddress.IPv4Network(cidr)))
            except (TypeError, ValueError):
                raise self.err(f"{path}.subnets.{az}", f"{json.dumps(cidr)} is not an IPv4 CIDR") from None
        return AlbTracking(dns_name=self.string(raw, "dns_name", path), resolver=resolver,
                           subnets=tuple(subnets))

    def target(self, raw: Any, path: str, tg_port: int, azs: tuple[str, ...]) -> Target:
        raw = self.obj(raw, path)
        az = self.string(raw, "az", path)
        if az not in azs:
            raise self.err(f"{path}.az", f"{json.dumps(az)} is not an enabled Availability Zone"
                                         f" of the load balancer (nodes: {', '.join(azs)})")
        port = self.port(raw.get("port", tg_port), f"{path}.port")
        return Target(id=self.string(raw, "id", path), ip=self.ipv4(raw, "ip", path), port=port, az=az)

    def health_check(self, raw: Any, path: str, target_type: str) -> HealthCheck:
        raw = self.obj(raw, path)
        try:
            hc = health_checks.check(health_checks.NETWORK, raw, target_type=target_type, relaxed=self.relaxed,
                                     complete=True)
        except health_checks.HealthCheckProblem as exc:
            raise self.err(f"{path}.{exc.setting}", str(exc)) from None
        return health_check_from(hc)
