"""ALB simulator configuration: JSON -> frozen dataclasses, validated once at load.

Every error is a `ConfigError` whose message names the JSON path, the offending value and,
where AWS has its own wording for the same mistake, AWS's `ValidationError` text, e.g.
``listeners[0].rules[1].priority: ValidationError: Priority '0' must be between 1 and 50000``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any, Mapping

from services.certselect import DEFAULT_KEY_ALGORITHM, KEY_ALGORITHMS
from services.elbv2 import health_checks
from services.elbv2.attributes import ALB_LOAD_BALANCER, ALB_TARGET_GROUP, AttributeProblem, Table, attribute_value
from services.elbv2.errors import ApiError
from services.elbv2.security_policies import DEFAULT_SSL_POLICY, check_ssl_policy

from .model import (  # noqa: F401  (re-exported: the config API)
    Action, Admin, AlbConfig, Attributes, Certificate, Condition, ConditionValue, FixedResponseAction,
    ForwardAction, HealthCheck, Listener, Node, QueryPair, RedirectAction, Rotation, Rule, Target, TargetGroup, TargetGroupAttributes,
    WeightedTargetGroup,
)
from .limits import (
    CONDITION_FIELDS,
    FIXED_RESPONSE_CONTENT_TYPES,
    MAX_CONDITION_VALUES,
    MAX_RULE_VALUES,
    MAX_RULE_WILDCARDS,
    SINGULAR_CONDITION_FIELDS,
)
from .rules import wildcard_count


class ConfigError(Exception):
    """The configuration is invalid; the message is meant for a human, verbatim."""


MAX_DRAIN_SECONDS = 86400  # a rotation's drain time, in the topology and `lab alb rotate`



def described_attributes(raw: Mapping[str, str]) -> list[dict[str, str]]:
    """DescribeLoadBalancerAttributes' list: every key of the ALB table, by name, AWS's default where unset."""
    merged = {**ALB_LOAD_BALANCER.defaults(), **raw}
    return [{"Key": k, "Value": merged[k]} for k in sorted(merged)]


def _checked(table: Table, d: Mapping[str, Any], path: str, ctx: "_Ctx",
             current: Mapping[str, str]) -> dict[str, str]:
    """``d`` over ``current``, checked with the ELBv2 table: every key, AWS's defaults filled in. A
    bad key or value is reported at its key, as is the key a rule across attributes names."""
    try:
        return table.check([(str(key), attribute_value(value)) for key, value in d.items()], current)
    except AttributeProblem as exc:
        raise ctx.fail(f"{path}.{exc.key}", str(exc)) from None
    except ApiError as exc:
        raise ctx.fail(path, str(exc)) from None

_TG_NAME = re.compile(r"(?!.*--)(?!^-)(?!.*-$)^[A-Za-z0-9-]{1,32}$")
_PATH_CHARS = re.compile(r"""^[A-Za-z0-9_\-.$/~"'@:+&*?]+$""")
_HOST_CHARS = re.compile(r"^[A-Za-z0-9\-.*?]+$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_METHOD = re.compile(r"^[A-Z_-]+$")
_FIXED_STATUS = re.compile(r"^(2|4|5)\d\d$")
# Which placeholders each redirect component may use (ALB listener docs).
_REDIRECT_PLACEHOLDERS = {
    "protocol": {"protocol"},
    "host": {"host"},
    "port": {"port"},
    "path": {"host", "port", "path"},
    "query": {"protocol", "host", "port", "path", "query"},
}
_PLACEHOLDER = re.compile(r"#\{([a-z]*)\}")


class Context:
    """Carries the source name so every error says where the value came from (a config file, or
    the topology file when lab.load checks a listener's rules with this module)."""

    def __init__(self, source: str | None) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> ConfigError:
        where = f" in {self.source}" if self.source else ""
        return ConfigError(f"{path}: {message}{where}")

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected an object, got {value!r}")
        return value

    def lst(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {value!r}")
        return value

    def req(self, d: dict[str, Any], key: str, path: str) -> Any:
        if key not in d:
            raise self.fail(f"{path}.{key}" if path else key, "is required")
        return d[key]

    def string(self, d: dict[str, Any], key: str, path: str, default: str | None = None) -> str:
        value = d.get(key, default) if default is not None else self.req(d, key, path)
        p = f"{path}.{key}" if path else key
        if not isinstance(value, str) or not value:
            raise self.fail(p, f"{value!r} is not a non-empty string")
        return value

    def integer(self, value: Any, path: str, lo: int, hi: int, what: str) -> int:
        if isinstance(value, bool):
            raise self.fail(path, f"{value!r} is not a valid {what} ({lo}-{hi})")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise self.fail(path, f"{value!r} is not a valid {what} ({lo}-{hi})") from None
        if str(number) != str(value).strip() or not lo <= number <= hi:
            raise self.fail(path, f"{value!r} is not a valid {what} ({lo}-{hi})")
        return number

    def address(self, value: Any, path: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except (TypeError, ValueError):
            raise self.fail(path, f"{value!r} is not a valid IP address") from None


_Ctx = Context


def load_config(source: str | Path | Mapping[str, Any]) -> AlbConfig:
    """Load and validate a config from a JSON file path or an already-parsed mapping."""
    if isinstance(source, Mapping):
        return _parse(dict(source), _Ctx(None))
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read ALB config {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    ctx = _Ctx(str(path))
    return _parse(ctx.obj(data, "$"), ctx)


def _parse(d: dict[str, Any], ctx: _Ctx) -> AlbConfig:
    nodes = tuple(_node(ctx.obj(n, f"nodes[{i}]"), f"nodes[{i}]", ctx)
                  for i, n in enumerate(ctx.lst(ctx.req(d, "nodes", ""), "nodes")))
    if not nodes:
        raise ctx.fail("nodes", "at least one node is required")
    _unique([n.name for n in nodes], "nodes", "name", ctx)
    tgs = tuple(_target_group(ctx.obj(t, f"target_groups[{i}]"), f"target_groups[{i}]", ctx)
                for i, t in enumerate(ctx.lst(d.get("target_groups", []), "target_groups")))
    _unique([t.name for t in tgs], "target_groups", "name", ctx,
            "DuplicateTargetGroupName: A target group with the specified name already exists.")
    tg_names = {t.name for t in tgs}
    listeners = tuple(_listener(ctx.obj(l, f"listeners[{i}]"), f"listeners[{i}]", tg_names, ctx)
                      for i, l in enumerate(ctx.lst(ctx.req(d, "listeners", ""), "listeners")))
    if not listeners:
        raise ctx.fail("listeners", "ValidationError: Listeners cannot be empty")
    _unique([l.port for l in listeners], "listeners", "port", ctx,
            "DuplicateListener: A listener with the specified port already exists.")
    admin = None
    if d.get("admin") is not None:
        a = ctx.obj(d["admin"], "admin")
        admin = Admin(ctx.address(ctx.req(a, "address", "admin"), "admin.address"),
                      ctx.integer(ctx.req(a, "port", "admin"), "admin.port", 1, 65535, "port"))
    return AlbConfig(
        name=ctx.string(d, "name", ""), arn=ctx.string(d, "arn", ""),
        dns_name=ctx.string(d, "dns_name", ""), nodes=nodes,
        attributes=_attributes(ctx.obj(d.get("attributes", {}), "attributes"), ctx),
        listeners=listeners, target_groups=tgs,
        log_dir=ctx.string(d, "log_dir", ""), admin=admin,
        rotation=_rotation(ctx.obj(d.get("rotation", {}), "rotation"), nodes, ctx),
        vpc_cidr=_cidr(d.get("vpc_cidr"), "vpc_cidr", ctx),
    )


def _cidr(value: Any, path: str, ctx: _Ctx) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_network(value))
    except (TypeError, ValueError):
        raise ctx.fail(path, f"{value!r} is not a CIDR block like 10.20.0.0/16") from None


def _rotation(d: dict[str, Any], nodes: tuple[Node, ...], ctx: _Ctx) -> Rotation:
    drain = ctx.integer(d.get("drain_seconds", 120), "rotation.drain_seconds", 0, MAX_DRAIN_SECONDS,
                        "drain time in seconds")
    interval = ctx.integer(d.get("interval_seconds", 0), "rotation.interval_seconds", 0, 86400 * 7,
                           "rotation interval in seconds (0 = off)")
    pools: dict[str, tuple[str, ...]] = {}
    raw = ctx.obj(d.get("pools", {}), "rotation.pools")
    for az, values in raw.items():
        addresses = tuple(ctx.address(v, f"rotation.pools.{az}[{i}]")
                          for i, v in enumerate(ctx.lst(values, f"rotation.pools.{az}")))
        pools[str(az)] = addresses
    for n in nodes:
        pool = pools.setdefault(n.az, (n.address,))
        if n.address not in pool:
            pools[n.az] = (n.address, *pool)
    dns_admin = d.get("dns_admin")
    if dns_admin is not None and not isinstance(dns_admin, str):
        raise ctx.fail("rotation.dns_admin", f"expected HOST:PORT, got {dns_admin!r}")
    ttl = ctx.integer(d.get("dns_ttl", 60), "rotation.dns_ttl", 1, 86400, "TTL")
    return Rotation(drain_seconds=float(drain), interval_seconds=float(interval), pools=pools,
                    dns_admin=dns_admin, dns_ttl=ttl)


def _unique(values: list[Any], path: str, key: str, ctx: _Ctx, aws: str | None = None) -> None:
    seen: set[Any] = set()
    for i, v in enumerate(values):
        if v in seen:
            raise ctx.fail(f"{path}[{i}].{key}", aws or f"{v!r} is used more than once")
        seen.add(v)


def _node(d: dict[str, Any], path: str, ctx: _Ctx) -> Node:
    return Node(ctx.string(d, "name", path), str(d.get("az", "")),
                ctx.address(ctx.req(d, "address", path), f"{path}.address"))


def _attributes(d: dict[str, Any], ctx: _Ctx) -> Attributes:
    """The load balancer's attributes (every key, AWS's defaults filled in)."""
    return attributes_from(_checked(ALB_LOAD_BALANCER, d, "attributes", ctx, {}))


def attributes_from(raw: Mapping[str, str]) -> Attributes:
    """Checked attribute values (every key of ALB_LOAD_BALANCER) as the simulator's Attributes."""
    return Attributes(
        xff_mode=raw["routing.http.xff_header_processing.mode"],
        xff_client_port=raw["routing.http.xff_client_port.enabled"] == "true",
        idle_timeout=float(raw["idle_timeout.timeout_seconds"]),
        preserve_host=raw["routing.http.preserve_host_header.enabled"] == "true",
        desync_mode=raw["routing.http.desync_mitigation_mode"],
        raw=dict(raw),
        http2=raw["routing.http2.enabled"] == "true",
    )


def _target_group(d: dict[str, Any], path: str, ctx: _Ctx) -> TargetGroup:
    name = ctx.string(d, "name", path)
    if not _TG_NAME.match(name):
        raise ctx.fail(f"{path}.name", f"ValidationError: Target group name '{name}' can only contain "
                       "up to 32 alphanumeric characters or hyphens(-), and cannot begin or end with '-'")
    protocol = ctx.string(d, "protocol", path, "HTTP")
    if protocol not in ("HTTP", "HTTPS"):
        raise ctx.fail(f"{path}.protocol", f"ValidationError: Value '{protocol}' at 'protocol' failed to "
                       "satisfy constraint: Member must satisfy enum value set: [HTTP, HTTPS]")
    port = ctx.integer(ctx.req(d, "port", path), f"{path}.port", 1, 65535, "port")
    targets = []
    for i, t in enumerate(ctx.lst(d.get("targets", []), f"{path}.targets")):
        tp = f"{path}.targets[{i}]"
        t = ctx.obj(t, tp)
        targets.append(Target(
            id=ctx.string(t, "id", tp), ip=ctx.address(ctx.req(t, "ip", tp), f"{tp}.ip"),
            port=ctx.integer(t.get("port", port), f"{tp}.port", 1, 65535, "port"),
            az=t.get("az"),
        ))
    _unique([(t.ip, t.port) for t in targets], f"{path}.targets", "ip",
            ctx, "ValidationError: Duplicate target (ip, port)")
    attrs = target_group_attributes(ctx.obj(d.get("attributes", {}), f"{path}.attributes"), f"{path}.attributes", ctx)
    return TargetGroup(name=name, arn=ctx.string(d, "arn", path), protocol=protocol, port=port,
                       targets=tuple(targets), attributes=attrs,
                       health_check=_health_check(ctx.obj(d.get("health_check", {}), f"{path}.health_check"),
                                                  f"{path}.health_check", ctx))


def target_group_attribute_values(a: TargetGroupAttributes) -> dict[str, str]:
    """The typed attributes as AWS's strings, in the ELBv2 table's order (DescribeTargetGroupAttributes)."""
    return {
        "deregistration_delay.timeout_seconds": str(int(a.deregistration_delay)),
        "load_balancing.algorithm.type": a.algorithm,
        "load_balancing.algorithm.anomaly_mitigation": "on" if a.anomaly_mitigation else "off",
        "stickiness.enabled": "true" if a.stickiness else "false",
        "stickiness.type": a.stickiness_type,
        "stickiness.lb_cookie.duration_seconds": str(a.stickiness_seconds),
        "stickiness.app_cookie.cookie_name": a.app_cookie_name,
        "stickiness.app_cookie.duration_seconds": str(a.app_cookie_seconds),
        "slow_start.duration_seconds": str(a.slow_start),
    }


def target_group_attributes(d: dict[str, Any], path: str, ctx: _Ctx,
                            current: TargetGroupAttributes = TargetGroupAttributes()) -> TargetGroupAttributes:
    """Target group attributes: ``d`` over ``current``, checked with the ELBv2 table."""
    return target_group_attributes_from(_checked(ALB_TARGET_GROUP, d, path, ctx, target_group_attribute_values(current)))


def target_group_attributes_from(v: Mapping[str, str]) -> TargetGroupAttributes:
    """Checked values (every key of ALB_TARGET_GROUP) as the simulator's TargetGroupAttributes."""
    return TargetGroupAttributes(
        deregistration_delay=float(v["deregistration_delay.timeout_seconds"]),
        algorithm=v["load_balancing.algorithm.type"],
        anomaly_mitigation=v["load_balancing.algorithm.anomaly_mitigation"] == "on",
        stickiness=v["stickiness.enabled"] == "true", stickiness_type=v["stickiness.type"],
        stickiness_seconds=int(v["stickiness.lb_cookie.duration_seconds"]),
        app_cookie_name=v["stickiness.app_cookie.cookie_name"],
        app_cookie_seconds=int(v["stickiness.app_cookie.duration_seconds"]),
        slow_start=int(v["slow_start.duration_seconds"]))


def _health_check(d: dict[str, Any], path: str, ctx: _Ctx) -> HealthCheck:
    try:
        hc = health_checks.check(health_checks.APPLICATION, d, complete=True)
    except health_checks.HealthCheckProblem as exc:
        raise ctx.fail(f"{path}.{exc.setting}", str(exc)) from None
    return HealthCheck(protocol=hc["protocol"], port=hc["port"], path=hc["path"], interval_seconds=hc["interval_seconds"],
                       timeout_seconds=hc["timeout_seconds"], healthy_threshold=hc["healthy_threshold"],
                       unhealthy_threshold=hc["unhealthy_threshold"], matcher=hc["matcher"])


def _listener(d: dict[str, Any], path: str, tg_names: set[str], ctx: _Ctx) -> Listener:
    protocol = ctx.string(d, "protocol", path)
    if protocol not in ("HTTP", "HTTPS"):
        raise ctx.fail(f"{path}.protocol",
                       f"ValidationError: Listener protocol '{protocol}' must be one of 'HTTP, HTTPS'")
    port = ctx.integer(ctx.req(d, "port", path), f"{path}.port", 1, 65535, "port")
    cert = None
    if protocol == "HTTPS":
        if not isinstance(d.get("certificate"), dict):
            raise ctx.fail(f"{path}.certificate",
                           "ValidationError: A certificate must be specified for HTTPS listeners")
        c = d["certificate"]
        cert = Certificate(arn=ctx.string(c, "arn", f"{path}.certificate"),
                           pem=ctx.string(c, "pem", f"{path}.certificate"))
    extra = []
    for i, c in enumerate(ctx.lst(d.get("certificates", []), f"{path}.certificates")):
        if protocol != "HTTPS":
            raise ctx.fail(f"{path}.certificates", "ValidationError: Certificates can only be added to HTTPS listeners")
        c = ctx.obj(c, f"{path}.certificates[{i}]")
        where = f"{path}.certificates[{i}]"
        algorithm = c.get("key_algorithm", DEFAULT_KEY_ALGORITHM)
        if algorithm not in KEY_ALGORITHMS:
            raise ctx.fail(f"{where}.key_algorithm", f"ValidationError: Key algorithm '{algorithm}' must be one of "
                           f"'{', '.join(KEY_ALGORITHMS)}'")
        extra.append(Certificate(arn=ctx.string(c, "arn", where), pem=ctx.string(c, "pem", where),
                                 key_algorithm=algorithm))
    if len(extra) > 25:
        raise ctx.fail(f"{path}.certificates", "TooManyCertificates: a listener has at most 25 certificates "
                       "besides the default one")
    ssl_policy = None
    if protocol == "HTTPS":
        try:
            ssl_policy = check_ssl_policy(d.get("ssl_policy", DEFAULT_SSL_POLICY))
        except ApiError as exc:
            raise ctx.fail(f"{path}.ssl_policy", str(exc)) from None
    elif d.get("ssl_policy") is not None:
        raise ctx.fail(f"{path}.ssl_policy", "ValidationError: only HTTPS listeners take an ssl_policy")
    rules = listener_rules(d.get("rules", []), f"{path}.rules", protocol, tg_names, ctx)
    defaults = default_actions(ctx.req(d, "default_actions", path), f"{path}.default_actions", protocol, tg_names, ctx)
    return Listener(protocol=protocol, port=port, rules=rules, default_actions=defaults, certificate=cert,
                    ssl_policy=ssl_policy, certificates=tuple(extra))


def listener_rules(raw: Any, path: str, protocol: str, tg_names: set[str], ctx: _Ctx) -> tuple[Rule, ...]:
    """A listener's rules (CreateRule's shape, topology-spelled), by priority. ``path`` names where
    they came from (``listeners[0].rules`` in a config, ``alb.listeners[0].rules`` in a topology)."""
    rules = [_rule(ctx.obj(r, f"{path}[{i}]"), f"{path}[{i}]", protocol, tg_names, ctx)
             for i, r in enumerate(ctx.lst(raw, path))]
    seen: set[int] = set()
    for i, r in enumerate(rules):
        if r.priority in seen:
            raise ctx.fail(f"{path}[{i}].priority", f"ValidationError: Priority '{r.priority}' was provided multiple times")
        seen.add(r.priority)
    return tuple(sorted(rules, key=lambda r: r.priority))


def default_actions(raw: Any, path: str, protocol: str, tg_names: set[str], ctx: _Ctx) -> tuple[Action, ...]:
    """A listener's default actions (one forward, redirect or fixed-response)."""
    return _actions(raw, path, protocol, tg_names, ctx)


def rule_document(rule: Rule) -> dict[str, Any]:
    """A rule as the topology and the simulator config write it: ``listener_rules`` reads it back
    to the same Rule (the rendered config is a plain serialisation of the model)."""
    return {"priority": rule.priority, "conditions": [_condition_document(c) for c in rule.conditions],
            "actions": [action_document(a) for a in rule.actions]}


def _condition_document(c: Condition) -> dict[str, Any]:
    values = [({"key": v.key, "value": v.value} if v.key is not None else {"value": v.value})
              if isinstance(v, QueryPair) else v for v in c.values]
    return {"field": c.field, **({"header_name": c.header_name} if c.header_name is not None else {}),
            "values": values}


def action_document(action: Action) -> dict[str, Any]:
    """An action as the topology writes it (the inverse of ``_actions`` for one action)."""
    if isinstance(action, ForwardAction):
        groups = action.target_groups
        doc: dict[str, Any] = {"type": "forward"}
        if len(groups) == 1 and groups[0].weight == 1 and not action.stickiness_seconds:
            doc["target_group"] = groups[0].name
            return doc
        doc["target_groups"] = [{"name": g.name, "weight": g.weight} for g in groups]
        if action.stickiness_seconds:
            doc["stickiness"] = {"enabled": True, "duration_seconds": action.stickiness_seconds}
        return doc
    if isinstance(action, RedirectAction):
        return {"type": "redirect", "redirect": {
            "protocol": action.protocol, "port": action.port, "host": action.host, "path": action.path,
            "query": action.query, "status_code": action.status_code}}
    return {"type": "fixed-response", "fixed_response": {
        "status_code": action.status_code, "content_type": action.content_type, "message_body": action.message_body}}


def _rule(d: dict[str, Any], path: str, protocol: str, tg_names: set[str], ctx: _Ctx) -> Rule:
    raw_priority = ctx.req(d, "priority", path)
    try:
        priority = int(raw_priority)
        ok = not isinstance(raw_priority, bool) and str(priority) == str(raw_priority) and 1 <= priority <= 50000
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ctx.fail(f"{path}.priority",
                       f"ValidationError: Priority '{raw_priority}' must be between 1 and 50000")
    raw_conditions = ctx.lst(ctx.req(d, "conditions", path), f"{path}.conditions")
    if not raw_conditions:
        raise ctx.fail(f"{path}.conditions", "ValidationError: A rule must have at least one condition")
    conditions = tuple(_condition(ctx.obj(c, f"{path}.conditions[{i}]"), f"{path}.conditions[{i}]", ctx)
                       for i, c in enumerate(raw_conditions))
    for single in SINGULAR_CONDITION_FIELDS:
        indexes = [i for i, c in enumerate(conditions) if c.field == single]
        if len(indexes) > 1:
            raise ctx.fail(f"{path}.conditions[{indexes[1]}].field",
                           f"ValidationError: A rule can only have one '{single}' condition")
    n_values = sum(len(c.values) for c in conditions)
    if n_values > MAX_RULE_VALUES:
        raise ctx.fail(f"{path}.conditions", f"ValidationError: The rule has {n_values} condition values; "
                       f"the limit is '{MAX_RULE_VALUES}'")
    wildcards = sum(_wildcards(c) for c in conditions)
    if wildcards > MAX_RULE_WILDCARDS:
        raise ctx.fail(f"{path}.conditions", f"ValidationError: The rule has {wildcards} wildcards; "
                       f"the limit is '{MAX_RULE_WILDCARDS}'")
    return Rule(priority=priority, conditions=conditions,
                actions=_actions(ctx.req(d, "actions", path), f"{path}.actions", protocol, tg_names, ctx))


def _wildcards(c: Condition) -> int:
    if c.field in ("http-request-method", "source-ip"):
        return 0
    total = 0
    for v in c.values:  # a query string's escaped \* and \? are not wildcards (decisions #75)
        if isinstance(v, QueryPair):
            total += wildcard_count(v.key or "", escapes=True) + wildcard_count(v.value, escapes=True)
        else:
            total += wildcard_count(v, escapes=False)
    return total


def _condition(d: dict[str, Any], path: str, ctx: _Ctx) -> Condition:
    fld = d.get("field")
    if fld not in CONDITION_FIELDS:
        raise ctx.fail(f"{path}.field", f"ValidationError: Condition field '{fld}' must be one of "
                       f"'[{','.join(CONDITION_FIELDS)}]'")
    raw = ctx.lst(ctx.req(d, "values", path), f"{path}.values")
    if not raw:
        raise ctx.fail(f"{path}.values", "ValidationError: A condition value must be specified")
    if len(raw) > MAX_CONDITION_VALUES:
        raise ctx.fail(f"{path}.values", f"ValidationError: The '{fld}' field contains too many values; "
                       f"the limit is '{MAX_CONDITION_VALUES}'")
    header_name = None
    if fld == "http-header":
        header_name = d.get("header_name")
        if not isinstance(header_name, str) or not _HEADER_NAME.match(header_name) or len(header_name) > 40:
            raise ctx.fail(f"{path}.header_name", f"ValidationError: HTTP header name {header_name!r} must be "
                           "1-40 token characters without wildcards")
    values: list[ConditionValue] = []
    for i, v in enumerate(raw):
        vp = f"{path}.values[{i}]"
        if fld == "query-string":
            values.append(_query_pair(v, vp, ctx))
            continue
        if not isinstance(v, str) or not v:
            raise ctx.fail(vp, f"{v!r} is not a non-empty string")
        if len(v) > 128:
            raise ctx.fail(vp, f"ValidationError: The '{fld}' value is too long; the limit is '128'")
        _check_value(fld, v, vp, ctx)
        values.append(v)
    return Condition(field=fld, values=tuple(values), header_name=header_name)


def _check_value(fld: str, v: str, vp: str, ctx: _Ctx) -> None:
    if fld == "path-pattern" and not _PATH_CHARS.match(v):
        raise ctx.fail(vp, f"ValidationError: Path pattern '{v}' contains characters that are not allowed "
                       """(A-Z, a-z, 0-9, _ - . $ / ~ " ' @ : + & * ?)""")
    if fld == "host-header":
        tail = v.rsplit(".", 1)
        if not _HOST_CHARS.match(v) or len(tail) < 2 or not tail[1].isalpha():
            raise ctx.fail(vp, f"ValidationError: Host header '{v}' must use A-Z, a-z, 0-9, - . * ?, contain "
                           "a '.', and have only letters after the final '.'")
    if fld == "http-request-method" and (len(v) > 40 or not _METHOD.match(v)):
        raise ctx.fail(vp, f"ValidationError: The 'http-request-method' value '{v}' is invalid; the allowed "
                       "characters are A-Z, hyphen and underscore")
    if fld == "source-ip":
        try:
            if "/" not in v:
                raise ValueError
            net = ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ctx.fail(vp, f"ValidationError: The 'source-ip' value '{v}' is not a valid CIDR block") from None
        if str(net) == "255.255.255.255/32":
            raise ctx.fail(vp, "ValidationError: The 'source-ip' value '255.255.255.255/32' is not allowed")


def _query_pair(v: Any, vp: str, ctx: _Ctx) -> QueryPair:
    v = ctx.obj(v, vp)
    if not isinstance(v.get("value"), str) or not v["value"]:
        raise ctx.fail(f"{vp}.value", "ValidationError: A 'Value' must be specified in 'QueryStringKeyValuePair'")
    key = v.get("key")
    if key is not None and (not isinstance(key, str) or not key or len(key) > 128):
        raise ctx.fail(f"{vp}.key", f"ValidationError: The 'Key' value {key!r} must be 1-128 characters")
    if len(v["value"]) > 128:
        raise ctx.fail(f"{vp}.value", "ValidationError: The 'Value' value is too long; the limit is '128'")
    return QueryPair(key=key, value=v["value"])


def _actions(raw: Any, path: str, protocol: str, tg_names: set[str], ctx: _Ctx) -> tuple[Action, ...]:
    items = ctx.lst(raw, path)
    if len(items) != 1:
        raise ctx.fail(path, f"ValidationError: exactly one of forward, redirect or fixed-response is "
                       f"supported per rule, got {len(items)} actions")
    d = ctx.obj(items[0], f"{path}[0]")
    ap = f"{path}[0]"
    kind = d.get("type")
    if kind == "forward":
        return (_forward(d, ap, tg_names, ctx),)
    if kind == "redirect":
        return (_redirect(ctx.obj(ctx.req(d, "redirect", ap), f"{ap}.redirect"), f"{ap}.redirect", protocol, ctx),)
    if kind == "fixed-response":
        return (_fixed(d, ap, ctx),)
    raise ctx.fail(f"{ap}.type", f"ValidationError: Value '{kind}' at 'actions.1.member.type' failed to satisfy "
                   "constraint: Member must satisfy enum value set: [forward, redirect, fixed-response]")


def _forward(d: dict[str, Any], ap: str, tg_names: set[str], ctx: _Ctx) -> ForwardAction:
    if "target_group" in d:
        groups = [WeightedTargetGroup(ctx.string(d, "target_group", ap))]
        paths = [f"{ap}.target_group"]
    else:
        raw = ctx.lst(ctx.req(d, "target_groups", ap), f"{ap}.target_groups")
        if not 1 <= len(raw) <= 5:
            raise ctx.fail(f"{ap}.target_groups", "ValidationError: A forward action needs 1 to 5 target groups")
        groups, paths = [], []
        for i, g in enumerate(raw):
            gp = f"{ap}.target_groups[{i}]"
            g = ctx.obj(g, gp)
            groups.append(WeightedTargetGroup(ctx.string(g, "name", gp),
                                              ctx.integer(g.get("weight", 1), f"{gp}.weight", 0, 999, "weight")))
            paths.append(f"{gp}.name")
    for g, p in zip(groups, paths):
        if g.name not in tg_names:
            raise ctx.fail(p, f"TargetGroupNotFound: Target group '{g.name}' not found")
    seconds = 0
    if d.get("stickiness") is not None:  # TargetGroupStickinessConfig {enabled, duration_seconds}
        st = ctx.obj(d["stickiness"], f"{ap}.stickiness")
        if st.get("enabled") in (True, "true"):
            seconds = ctx.integer(st.get("duration_seconds", 3600), f"{ap}.stickiness.duration_seconds", 1, 604800,
                                  "target group stickiness duration in seconds")
    return ForwardAction(target_groups=tuple(groups), stickiness_seconds=seconds)


def _redirect(d: dict[str, Any], rp: str, protocol: str, ctx: _Ctx) -> RedirectAction:
    defaults = RedirectAction()
    values: dict[str, str] = {}
    for comp in ("protocol", "port", "host", "path", "query"):
        value = d.get(comp, getattr(defaults, comp))
        if not isinstance(value, str):
            raise ctx.fail(f"{rp}.{comp}", f"{value!r} is not a string")
        for ph in _PLACEHOLDER.findall(value):
            if ph not in _REDIRECT_PLACEHOLDERS[comp]:
                raise ctx.fail(f"{rp}.{comp}", f"ValidationError: '#{{{ph}}}' cannot be used in the redirect "
                               f"{comp}; allowed: {', '.join(sorted('#{' + p + '}' for p in _REDIRECT_PLACEHOLDERS[comp]))}")
        values[comp] = value
    if values["protocol"] not in ("HTTP", "HTTPS", "#{protocol}"):
        raise ctx.fail(f"{rp}.protocol", f"ValidationError: Redirect protocol '{values['protocol']}' must be one "
                       "of HTTP, HTTPS, #{protocol}")
    if protocol == "HTTPS" and values["protocol"] == "HTTP":
        raise ctx.fail(f"{rp}.protocol", "ValidationError: You cannot redirect HTTPS to HTTP")
    if values["port"] != "#{port}":
        ctx.integer(values["port"], f"{rp}.port", 1, 65535, "redirect port")
    if not values["host"]:  # the API's RedirectActionConfig.Host: length 1-128
        raise ctx.fail(f"{rp}.host", "ValidationError: The redirect host cannot be empty; omit it to keep '#{host}'")
    if not values["path"].startswith("/"):
        raise ctx.fail(f"{rp}.path", f"ValidationError: Redirect path '{values['path']}' must start with '/'")
    for comp in ("host", "path", "query"):
        if len(values[comp]) > 128:
            raise ctx.fail(f"{rp}.{comp}", f"ValidationError: The redirect {comp} is too long; the limit is '128'")
        if not all("!" <= ch <= "~" for ch in values[comp]):  # it goes into the Location header as written (#65)
            raise ctx.fail(f"{rp}.{comp}", f"ValidationError: The redirect {comp} {values[comp]!r} can contain only "
                           "visible ASCII characters (no spaces or control characters); percent-encode the rest")
    status = d.get("status_code", "HTTP_301")
    if status not in ("HTTP_301", "HTTP_302"):
        raise ctx.fail(f"{rp}.status_code", f"ValidationError: Value '{status}' at 'redirectConfig.statusCode' "
                       "failed to satisfy constraint: Member must satisfy enum value set: [HTTP_301, HTTP_302]")
    # RedirectActionConfig: the query does not count, a changed query alone would loop (decisions #74).
    if all(values[c] == getattr(defaults, c) for c in ("protocol", "host", "port", "path")):
        raise ctx.fail(rp, "ValidationError: You must modify at least one of the following components to avoid a "
                       "redirect loop: protocol, hostname, port, or path")
    return RedirectAction(status_code=status, **values)


def _fixed(d: dict[str, Any], ap: str, ctx: _Ctx) -> FixedResponseAction:
    fr = ctx.obj(d.get("fixed_response", d), ap)
    status = str(ctx.req(fr, "status_code", ap))
    if not _FIXED_STATUS.match(status):
        raise ctx.fail(f"{ap}.status_code", f"ValidationError: 1 validation error detected: Value '{status}' at "
                       "'actions.1.member.fixedResponseConfig.statusCode' failed to satisfy constraint: Member "
                       r"must satisfy regular expression pattern: ^(2|4|5)\d\d$")
    content_type = fr.get("content_type", "text/plain")
    if content_type not in FIXED_RESPONSE_CONTENT_TYPES:
        raise ctx.fail(f"{ap}.content_type", "InvalidLoadBalancerAction: The ContentType must be one of:'text/html', "
                       "'application/json', 'application/javascript', 'text/css', 'text/plain'")
    body = fr.get("message_body", "")
    if not isinstance(body, str) or len(body) > 1024:
        raise ctx.fail(f"{ap}.message_body", "ValidationError: The message body must be a string of at most "
                       "1024 characters")
    return FixedResponseAction(status_code=status, content_type=content_type, message_body=body)
