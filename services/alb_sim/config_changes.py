"""Run-time changes through the admin API, validated exactly as at load (AWS-worded errors)."""

from __future__ import annotations

import ipaddress
from typing import Any, Collection, Mapping

from services.elbv2.attributes import ALB_LOAD_BALANCER, ALB_TARGET_GROUP, attribute_value

from .config import (Attributes, ConfigError, Listener, Target, TargetGroupAttributes, _Ctx, attributes_from,
                     listener_rules, target_group_attribute_values, target_group_attributes_from)

__all__ = ["ConfigError", "parse_attributes", "parse_listener_rules", "parse_target_group_attributes", "parse_targets"]


def parse_attributes(values: Mapping[str, Any], current: Attributes) -> Attributes:
    """ModifyLoadBalancerAttributes: `values` over the current ones, validated as a whole; raises
    services.elbv2's ApiError, worded as the NLB's answer and the topology's error are."""
    return attributes_from(ALB_LOAD_BALANCER.check(_pairs(values), current.raw))


def _pairs(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(str(k), attribute_value(v)) for k, v in values.items()]


def parse_listener_rules(raw: Any, listener: Listener, tg_names: set[str]) -> Listener:
    """Replace a listener's rules (the default rule stays)."""
    return Listener(protocol=listener.protocol, port=listener.port,
                    rules=listener_rules(raw, "rules", listener.protocol, tg_names, _Ctx(None)),
                    default_actions=listener.default_actions, certificate=listener.certificate,
                    ssl_policy=listener.ssl_policy, certificates=listener.certificates)


def parse_targets(raw: Any, default_port: int) -> list[Target]:
    """RegisterTargets' `Targets`: [{"Id": "10.20.1.41", "Port": 8443}, ...] (ip targets)."""
    ctx = _Ctx(None)
    out = []
    for i, t in enumerate(ctx.lst(raw, "Targets")):
        t = ctx.obj(t, f"Targets[{i}]")
        ip = ctx.address(ctx.req(t, "Id", f"Targets[{i}]"), f"Targets[{i}].Id")
        az = t.get("AvailabilityZone")
        if az is not None and (not isinstance(az, str) or not az):
            raise ctx.fail(f"Targets[{i}].AvailabilityZone", f"{az!r} is not an Availability Zone name or 'all'")
        out.append(Target(id=ip, ip=ip, port=ctx.integer(t.get("Port", default_port), f"Targets[{i}].Port",
                                                          1, 65535, "port"), az=az))
    if not out:
        raise ctx.fail("Targets", "ValidationError: Targets cannot be empty")
    return out


# Where an ip target may be outside the VPC (peered VPCs, on-premises): RFC 1918 and RFC 6598.
PRIVATE_OUTSIDE_VPC = tuple(ipaddress.ip_network(n) for n in
                            ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"))
INVALID_TARGET = ("The specified target does not exist, is not in the same VPC as the target group, "
                  "or has an unsupported instance type.")


def ip_target_error(target: Target, vpc_cidr: str | None, zones: Collection[str]) -> tuple[str, str] | None:
    """RegisterTargets' check of an ip target, as AWS documents it (decisions.md #56): an address in
    the VPC's CIDR, or one of RFC 1918 / RFC 6598 outside it with AvailabilityZone `all` or one of
    the load balancer's zones; publicly routable addresses never. (code, message), None when valid;
    `vpc_cidr` None (unit-test configs on loopback): nothing to check against."""
    if vpc_cidr is None:
        return None
    ip = ipaddress.ip_address(target.ip)
    if ip in ipaddress.ip_network(vpc_cidr):
        return None
    if not any(ip in net for net in PRIVATE_OUTSIDE_VPC):
        return "InvalidTarget", INVALID_TARGET
    if target.az is None:
        return ("ValidationError",
                f"The Availability Zone is required for IP address '{target.ip}' because it is not in the VPC")
    if target.az != "all" and target.az not in zones:
        return ("ValidationError", "You must specify a valid Availability Zone or select 'all' for all enabled "
                f"Availability zones, since the IP address '{target.ip}' is outside the VPC")
    return None


def parse_target_group_attributes(values: Mapping[str, Any], current: TargetGroupAttributes) -> TargetGroupAttributes:
    """ModifyTargetGroupAttributes: as parse_attributes."""
    return target_group_attributes_from(ALB_TARGET_GROUP.check(_pairs(values), target_group_attribute_values(current)))
