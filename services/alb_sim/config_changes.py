"""Run-time changes through the admin API, validated exactly as at load (AWS-worded errors)."""

from __future__ import annotations

from typing import Any, Mapping

from .config import (Attributes, ConfigError, Listener, Target, TargetGroupAttributes, _attributes, _Ctx, _rule,
                     target_group_attributes)

__all__ = ["ConfigError", "parse_attributes", "parse_listener_rules", "parse_target_group_attributes", "parse_targets"]
def parse_attributes(values: Mapping[str, Any], current: Attributes) -> Attributes:
    """ModifyLoadBalancerAttributes: `values` over the current ones, validated as a whole."""
    return _attributes({**current.raw, **values}, _Ctx(None))


def parse_listener_rules(raw: Any, listener: Listener, tg_names: set[str]) -> Listener:
    """Replace a listener's rules (the default rule stays)."""
    ctx = _Ctx(None)
    rules = [_rule(ctx.obj(r, f"rules[{i}]"), f"rules[{i}]", listener.protocol, tg_names, ctx)
             for i, r in enumerate(ctx.lst(raw, "rules"))]
    seen: set[int] = set()
    for i, r in enumerate(rules):
        if r.priority in seen:
            raise ctx.fail(f"rules[{i}].priority", f"ValidationError: Priority '{r.priority}' was provided multiple times")
        seen.add(r.priority)
    return Listener(protocol=listener.protocol, port=listener.port,
                    rules=tuple(sorted(rules, key=lambda r: r.priority)), default_actions=listener.default_actions,
                    certificate=listener.certificate, ssl_policy=listener.ssl_policy,
                    certificates=listener.certificates)


def parse_targets(raw: Any, default_port: int) -> list[Target]:
    """RegisterTargets' `Targets`: [{"Id": "10.20.1.41", "Port": 8443}, ...] (ip targets)."""
    ctx = _Ctx(None)
    out = []
    for i, t in enumerate(ctx.lst(raw, "Targets")):
        t = ctx.obj(t, f"Targets[{i}]")
        ip = ctx.address(ctx.req(t, "Id", f"Targets[{i}]"), f"Targets[{i}].Id")
        out.append(Target(id=ip, ip=ip, port=ctx.integer(t.get("Port", default_port), f"Targets[{i}].Port",
                                                          1, 65535, "port")))
    if not out:
        raise ctx.fail("Targets", "ValidationError: Targets cannot be empty")
    return out


def parse_target_group_attributes(values: Mapping[str, Any], current: TargetGroupAttributes) -> TargetGroupAttributes:
    return target_group_attributes(dict(values), "Attributes", _Ctx(None), current)
