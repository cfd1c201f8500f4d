"""Run-time control (no I/O): the ELBv2 write actions, applied to the frozen config.

Each function takes the current frozen object and the request, and returns a NEW frozen object
(``dataclasses.replace``) or raises ``ApiError`` with AWS's error code and an AWS-worded message.
The asyncio shell (``app.NlbApp``) swaps the new config in and tells the listeners; nothing here
touches sockets.

Wording: unknown keys use AWS's own text ("Target group attribute key 'x' is not recognized");
bad values name the key, the value and what is allowed (docs/decisions.md #21).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any, Iterable, Mapping, Sequence

from services.elbv2 import attributes as elbv2_attributes
from services.elbv2.attributes import answer as attributes_answer
from services.elbv2 import health_checks
from services.elbv2.errors import ApiError

from .config import Listener, NlbConfig, Target, TargetGroup, health_check_from

__all__ = ["ApiError", "attributes_answer"]  # the admin API's error type and answer shape, from services.elbv2


def target_group_attributes(tg: TargetGroup) -> dict[str, str]:
    """DescribeTargetGroupAttributes: every key of the NLB target-group table, AWS's default where the
    topology and the API left it unset."""
    return dict(tg.attributes)


def load_balancer_attributes(cfg: NlbConfig) -> dict[str, str]:
    """DescribeLoadBalancerAttributes: every key of the NLB load-balancer table, defaults filled in."""
    return dict(cfg.attributes)


def listener_attributes(listener: Listener) -> dict[str, str]:
    """DescribeListenerAttributes: ``tcp.idle_timeout.seconds`` (default 350) on TCP listeners; TLS
    listeners have no modifiable attribute (their idle timeout is fixed at 350 s)."""
    return dict(listener.attributes)


def _tls_behind_tls(cfg: NlbConfig, tg: TargetGroup) -> bool:
    return tg.protocol == "TLS" and any(x.protocol == "TLS" and x.target_group == tg.name for x in cfg.listeners)


def modify_target_group_attributes(cfg: NlbConfig, tg: TargetGroup, raw: Any) -> TargetGroup:
    pairs = elbv2_attributes.attribute_pairs(raw, "Target group")
    attrs = elbv2_attributes.nlb_target_group_attributes(pairs, tg.attributes, target_type=tg.target_type,
                                                         tls_behind_tls=_tls_behind_tls(cfg, tg))
    return dataclasses.replace(tg, attributes=attrs)


def modify_load_balancer_attributes(cfg: NlbConfig, raw: Any) -> NlbConfig:
    pairs = elbv2_attributes.attribute_pairs(raw, "Load balancer")
    return dataclasses.replace(cfg, attributes=elbv2_attributes.NLB_LOAD_BALANCER.check(pairs, cfg.attributes))


def modify_listener_attributes(listener: Listener, raw: Any, relaxed: bool = False) -> Listener:
    """``relaxed`` (lab-only ``relaxed_limits``): tcp.idle_timeout.seconds from 10 instead of 60."""
    pairs = elbv2_attributes.attribute_pairs(raw, "Listener")
    attrs = elbv2_attributes.nlb_listener_attributes(listener.protocol, pairs, listener.attributes, relaxed)
    return dataclasses.replace(listener, attributes=attrs)


TARGET_SYNTAX = "ID[:PORT][@AZ], e.g. haproxy-a, 10.20.1.20:443 or 10.20.1.20:443@a"


@dataclasses.dataclass(frozen=True, slots=True)
class TargetDescription:
    """AWS's TargetDescription as register/deregister take it. ``id``: an instance id, or for ip
    target groups an IPv4 address; the lab takes either form in both kinds of target group (a
    target's lab name or its address). ``port`` None: the target group's port (as in AWS)."""

    id: str
    port: int | None = None
    az: str | None = None

    def __str__(self) -> str:  # AWS CLI shorthand, as a user would write it: Id=...,Port=...
        return ",".join([f"Id={self.id}"] + ([f"Port={self.port}"] if self.port is not None else [])
                        + ([f"AvailabilityZone={self.az}"] if self.az is not None else []))


def parse_target(text: str) -> TargetDescription:
    """``haproxy-a``, ``10.20.1.20:443``, ``10.20.1.21:443@a`` -> TargetDescription (the CLI's
    syntax; the admin API takes it too, as a string in ``Targets``)."""
    head, at, az = text.partition("@")
    tid, colon, port = head.partition(":")
    if not tid or (colon and not port.isdigit()) or (at and not az):
        raise ApiError("ValidationError", f"target {text!r} is not {TARGET_SYNTAX}")
    return _description(tid, int(port) if colon else None, az if at else None)


def _description(tid: str, port: Any, az: Any) -> TargetDescription:
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise ApiError("ValidationError", f"Port {port!r} of target '{tid}' is not a valid port (1-65535)")
    if az is not None and (not isinstance(az, str) or not az):
        raise ApiError("ValidationError", f"AvailabilityZone {az!r} of target '{tid}' must be a"
                                          " non-empty string")
    return TargetDescription(tid, port, az)


def target_descriptions(raw: Any) -> list[TargetDescription]:
    """``Targets`` of a register/deregister request: objects ``{"Id", "Port"?, "AvailabilityZone"?}``
    or strings in the CLI's syntax (``parse_target``)."""
    if not isinstance(raw, list) or not raw:
        raise ApiError("ValidationError", 'Targets must be a non-empty list of {"Id": ..., "Port": ...}')
    out = []
    for item in raw:
        if isinstance(item, str):
            out.append(parse_target(item))
        elif isinstance(item, dict) and isinstance(item.get("Id"), str) and item["Id"]:
            out.append(_description(item["Id"], item.get("Port"), item.get("AvailabilityZone")))
        else:
            raise ApiError("ValidationError", f"target {item!r} needs an \"Id\" (a string)")
    return out


def _with_port(d: TargetDescription, tg: TargetGroup) -> TargetDescription:
    """No Port: the target group's (AWS). Both verbs then match on (id or address, port), and an
    AvailabilityZone, when given, must be the target's."""
    return d if d.port is not None else dataclasses.replace(d, port=tg.port)


def register_targets(tg: TargetGroup, raw: Any, known: Iterable[Target],
                     azs: Sequence[str]) -> tuple[TargetGroup, list[Target]]:
    """Add targets (already registered ones are left as they are, like AWS). Returns the new TG and
    the targets that were added. ``known``: targets the lab knows (id -> address, AZ)."""
    known = list(known)
    current = list(tg.targets)
    added: list[Target] = []
    for d in target_descriptions(raw):
        d = _with_port(d, tg)
        port = d.port
        assert port is not None  # _with_port gave it the target group's
        base = next((t for t in known if d.id in (t.id, t.ip)), None)
        if base is None and tg.target_type != "ip":
            raise ApiError("InvalidTarget", f"The following targets are not valid: '{d}'"
                                            f" (known: {', '.join(sorted({t.id for t in known}))})")
        if base is None:
            try:
                ip = str(ipaddress.IPv4Address(d.id))
            except ValueError:
                raise ApiError("ValidationError", f"The IP address '{d.id}' is not a valid IPv4"
                                                  " address") from None
            if d.az is None:
                raise ApiError("ValidationError", f"AvailabilityZone is required for target '{d}'"
                                                  f" (the lab does not know the subnet of {ip})")
            target = Target(id=ip, ip=ip, port=port, az=d.az)
        elif d.az is not None and d.az != base.az:
            raise ApiError("ValidationError", f"Target '{d}' is in Availability Zone '{base.az}',"
                                              f" not '{d.az}'")
        else:
            target = Target(id=base.id, ip=base.ip, port=port, az=base.az)
        if target.az not in azs:
            raise ApiError("ValidationError", f"Availability Zone '{target.az}' is not enabled for"
                                              f" the load balancer (enabled: {', '.join(azs)})")
        if not any((t.id, t.port) == (target.id, target.port) for t in current):
            current.append(target)
            added.append(target)
    return dataclasses.replace(tg, targets=tuple(current)), added


def deregister_targets(tg: TargetGroup, raw: Any) -> tuple[TargetGroup, list[Target]]:
    """Remove targets; returns the new TG and the removed targets (which then drain). Matched like
    register_targets (``_with_port``)."""
    removed: list[Target] = []
    keep = list(tg.targets)
    for d in target_descriptions(raw):
        d = _with_port(d, tg)
        match = [t for t in keep if d.id in (t.id, t.ip) and t.port == d.port
                 and (d.az is None or d.az == t.az)]
        if not match:
            raise ApiError("InvalidTarget", f"The following targets are not registered in target"
                                            f" group '{tg.name}': '{d}'")
        for t in match:
            keep.remove(t)
            removed.append(t)
    return dataclasses.replace(tg, targets=tuple(keep)), removed


def replace_target_group(cfg: NlbConfig, tg: TargetGroup) -> NlbConfig:
    return dataclasses.replace(cfg, target_groups=tuple(tg if t.name == tg.name else t
                                                        for t in cfg.target_groups))


def replace_listener(cfg: NlbConfig, listener: Listener) -> NlbConfig:
    return dataclasses.replace(cfg, listeners=tuple(listener if x.port == listener.port else x
                                                    for x in cfg.listeners))


def lookup_target_group(cfg: NlbConfig, name: Any) -> TargetGroup:
    if not isinstance(name, str) or not name:
        raise ApiError("ValidationError", "TargetGroupName is required, e.g."
                                          f" {cfg.target_groups[0].name!r}")
    for tg in cfg.target_groups:
        if tg.name == name or tg.arn == name:
            return tg
    raise ApiError("TargetGroupNotFound", f"One or more target groups not found: '{name}'"
                                          f" (known: {', '.join(t.name for t in cfg.target_groups)})")


def lookup_listener(cfg: NlbConfig, port: Any) -> Listener:
    for x in cfg.listeners:
        if x.port == port or str(x.port) == str(port):
            return x
    raise ApiError("ListenerNotFound", f"One or more listeners not found: port {port!r}"
                                       f" (listeners: {', '.join(x.label for x in cfg.listeners)})")


def modify_target_group(tg: TargetGroup, body: Mapping[str, Any], relaxed: bool = False) -> TargetGroup:
    """ModifyTargetGroup: the target group with its health check changed (only the keys given).
    ``relaxed`` (lab-only ``relaxed_limits``): sub-second intervals and timeouts allowed."""
    settings = health_checks.check_api(health_checks.NETWORK, body, tg.health_check.settings(),
                                       target_type=tg.target_type, relaxed=relaxed)
    return dataclasses.replace(tg, health_check=health_check_from(settings))


def health_check_settings(tg: TargetGroup) -> dict[str, Any]:
    """The health-check part of a TargetGroup as DescribeTargetGroups / ModifyTargetGroup show it."""
    return {"TargetGroupName": tg.name, "TargetGroupArn": tg.arn, **health_checks.described(tg.health_check.settings())}
