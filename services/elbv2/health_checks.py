"""Health-check settings: AWS's defaults and ranges per load balancer type (aws-elb.md sections 5
and 9; API reference CreateTargetGroup / ModifyTargetGroup), checked once for the topology, both
simulators' configs and ModifyTargetGroup.

Settings use the topology's names (``interval_seconds``); ``API_NAMES`` maps them to the API's
parameters (``HealthCheckIntervalSeconds``) and the member names AWS's validation messages use
(``healthCheckIntervalSeconds``). A problem is a ``HealthCheckProblem`` (an ApiError) naming the
setting it is about, so each caller can say where it came from.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ApiError, constraint, validation_error

SETTINGS = ("protocol", "port", "path", "interval_seconds", "timeout_seconds", "healthy_threshold",
            "unhealthy_threshold", "matcher")
# setting -> (the API parameter, AWS's member name in validation messages)
API_NAMES: Mapping[str, tuple[str, str]] = {
    "protocol": ("HealthCheckProtocol", "healthCheckProtocol"),
    "port": ("HealthCheckPort", "healthCheckPort"),
    "path": ("HealthCheckPath", "healthCheckPath"),
    "interval_seconds": ("HealthCheckIntervalSeconds", "healthCheckIntervalSeconds"),
    "timeout_seconds": ("HealthCheckTimeoutSeconds", "healthCheckTimeoutSeconds"),
    "healthy_threshold": ("HealthyThresholdCount", "healthyThresholdCount"),
    "unhealthy_threshold": ("UnhealthyThresholdCount", "unhealthyThresholdCount"),
    "matcher": ("Matcher", "matcher"),
}
RANGES: Mapping[str, tuple[int, int]] = {"interval_seconds": (5, 300), "timeout_seconds": (2, 120),
                                         "healthy_threshold": (2, 10), "unhealthy_threshold": (2, 10)}
# Lab-only `nlb.relaxed_limits` (decisions #23): sub-second intervals and timeouts for unit tests.
RELAXED_MIN_SECONDS = 0.05
MAX_PATH = 1024
INTERVAL_ABOVE_TIMEOUT = "Health check interval must be greater than the timeout."  # AWS's text
# ALB guide, health check settings: HealthCheckPath, "specify a valid URI (/path?query)". RFC 3986's
# characters for a path and query (unreserved, sub-delims, ":", "@", "/", "?", %XX), and "#", which the
# text AWS answers (as reported publicly) also lists; not "[" or "]", which a path cannot hold.
_URI_PATH = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?#]|%[0-9A-Fa-f]{2})*")
URI_PATH_RULE = "must be a valid URI (/path?query): letters, digits, -._~:/?#@!$&'()*+,;= and %XX escapes"


class HealthCheckProblem(ApiError):
    """A health-check setting AWS would refuse; ``setting`` is the one at fault."""

    def __init__(self, setting: str, error: ApiError) -> None:
        super().__init__(error.code, error.message)
        self.setting = setting


@dataclass(frozen=True)
class HealthCheckRules:
    """What one load balancer type allows. ``timeouts``: the default timeout per protocol."""

    load_balancer: str  # network | application
    protocols: tuple[str, ...]
    default_protocol: str
    timeouts: Mapping[str, int]
    matcher_codes: tuple[int, int]
    default_matcher: str
    default_healthy: int = 5
    default_unhealthy: int = 2
    default_interval: int = 30
    path_is_uri: bool = False  # the path must be a valid URI (ALB); the NLB's guide says only "ping path"

    def defaults(self, protocol: str | None = None) -> dict[str, Any]:
        protocol = protocol or self.default_protocol
        return {"protocol": protocol, "port": "traffic-port", "path": "/", "interval_seconds": self.default_interval,
                "timeout_seconds": self.timeouts[protocol], "healthy_threshold": self.default_healthy,
                "unhealthy_threshold": self.default_unhealthy, "matcher": self.default_matcher}


# NLB-HC23: TCP (default), HTTP, HTTPS; timeout 6 s for HTTP, 10 s for TCP and HTTPS; matcher 200-599.
NETWORK = HealthCheckRules("network", ("TCP", "HTTP", "HTTPS"), "TCP", {"TCP": 10, "HTTP": 6, "HTTPS": 10},
                           (200, 599), "200-399")
# ALB-HC23: HTTP (default) or HTTPS; timeout 5 s; matcher 200-499, default 200; the path a valid URI.
APPLICATION = HealthCheckRules("application", ("HTTP", "HTTPS"), "HTTP", {"HTTP": 5, "HTTPS": 5},
                               (200, 499), "200", path_is_uri=True)
# API reference, CreateTargetGroup / ModifyTargetGroup, HealthCheckEnabled: "If the target type is
# instance, ip, or alb, health checks are always enabled and can't be disabled."
ALWAYS_ENABLED = ("Health checks are always enabled for target groups with target type '{target_type}' and can't be"
                  " disabled")
# NLB-ALBT23: an `alb` target group is checked over HTTP or HTTPS only.
ALB_TARGET_TCP = ("Health check protocol 'TCP' is not supported for target groups with target type 'alb';"
                  " use HTTP or HTTPS")

_MATCHER_PART = re.compile(r"([0-9]{3})(?:-([0-9]{3}))?")


def parse_matcher(matcher: str, codes: tuple[int, int] = NETWORK.matcher_codes) -> tuple[tuple[int, int], ...]:
    """``"200-399"`` / ``"200,202"`` -> inclusive ranges. Raises ValueError naming the value."""
    low, high = codes
    ranges = []
    for part in matcher.split(","):
        m = _MATCHER_PART.fullmatch(part.strip())
        lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
        if not m or not low <= lo <= hi <= high:
            raise ValueError(f"{matcher!r} is not a list of HTTP codes or ranges within {low}-{high}"
                             " (e.g. \"200\", \"200,202\", \"200-399\")")
        ranges.append((lo, hi))
    return tuple(ranges)


def _plain(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def _number(rules: HealthCheckRules, setting: str, value: Any, relaxed: bool) -> int | float:
    member = API_NAMES[setting][1]
    lo: float
    lo, hi = RANGES[setting]
    fractional = relaxed and setting.endswith("_seconds")
    if fractional:
        lo = RELAXED_MIN_SECONDS
    if isinstance(value, str) and value.strip():
        try:
            value = float(value) if fractional else int(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (isinstance(value, float) and not math.isfinite(value)) or (not fractional and value != int(value)):
        raise constraint(member, value, "be a number" if fractional else "be an integer")
    if value < lo:
        raise constraint(member, _plain(value), f"have value greater than or equal to {_plain(lo)}")
    if value > hi:
        raise constraint(member, _plain(value), f"have value less than or equal to {hi}")
    return value if fractional else int(value)


def _setting(rules: HealthCheckRules, setting: str, value: Any, protocol: str, relaxed: bool) -> Any:
    if setting == "protocol":
        if value not in rules.protocols:
            raise constraint(API_NAMES[setting][1], value, f"satisfy enum value set: [{', '.join(rules.protocols)}]")
        return value
    if setting == "port":
        if value == "traffic-port":
            return value
        if isinstance(value, (int, str)) and not isinstance(value, bool) and str(value).isascii() \
                and str(value).isdigit() and 1 <= int(value) <= 65535:
            return str(int(value))
        raise validation_error(f"Health check port '{value}' is not valid: must be 'traffic-port' or a port from 1"
                               " to 65535")
    if setting == "path":
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_PATH:
            raise constraint(API_NAMES[setting][1], value, f"have length between 1 and {MAX_PATH}")
        if not value.startswith("/"):
            raise validation_error(f"Health check path '{value}' must start with '/'")
        if rules.path_is_uri and not _URI_PATH.fullmatch(value):
            raise validation_error(f"Health check path '{value}' is not valid: {URI_PATH_RULE}")
        return value
    if setting == "matcher":
        low, high = rules.matcher_codes
        try:
            parse_matcher(str(value), rules.matcher_codes)
        except ValueError:
            raise validation_error(f"Health check matcher HTTP code '{value}' is not valid: must be codes or ranges"
                                   f" from {low} to {high}, e.g. 200, 200,202 or 200-399") from None
        return str(value)
    return _number(rules, setting, value, relaxed)


def check(rules: HealthCheckRules, given: Mapping[str, Any], current: Mapping[str, Any] | None = None, *,
          target_type: str | None = None, relaxed: bool = False, complete: bool = False) -> dict[str, Any]:
    """The complete settings after ``given`` (topology names, values as the topology or the API
    gives them) over ``current`` (AWS's defaults for the protocol when None): every setting,
    normalised (port ``"traffic-port"`` or ``"8443"``; seconds int, or float when relaxed).
    ``complete``: ``given`` is a whole serialisation (a simulator config), whose TCP checks carry
    the default path and matcher. Raises HealthCheckProblem naming the setting."""
    for setting in given:
        if setting not in SETTINGS:
            raise HealthCheckProblem(setting, validation_error(
                f"Unknown health check setting '{setting}' (known: {', '.join(SETTINGS)})"))
    protocol = given.get("protocol", (current or {}).get("protocol", rules.default_protocol))
    try:
        protocol = _setting(rules, "protocol", protocol, protocol, relaxed)
    except ApiError as exc:
        raise HealthCheckProblem("protocol", exc) from None
    if target_type == "alb" and protocol == "TCP":
        raise HealthCheckProblem("protocol", validation_error(ALB_TARGET_TCP))
    out = dict(current) if current is not None else rules.defaults(protocol)
    out["protocol"] = protocol
    for setting in SETTINGS[1:]:
        if setting not in given:
            continue
        if protocol == "TCP" and setting in ("path", "matcher") \
                and not (complete and given[setting] == rules.defaults(protocol)[setting]):
            raise HealthCheckProblem(setting, validation_error(
                f"Health check {setting} cannot be set when the health check protocol is TCP"))
        try:
            out[setting] = _setting(rules, setting, given[setting], protocol, relaxed)
        except ApiError as exc:
            raise HealthCheckProblem(setting, exc) from None
    if out["timeout_seconds"] >= out["interval_seconds"] and not relaxed:
        raise HealthCheckProblem("timeout_seconds" if "timeout_seconds" in given else "interval_seconds",
                                 validation_error(INTERVAL_ABOVE_TIMEOUT))
    return out


def check_api(rules: HealthCheckRules, body: Mapping[str, Any], current: Mapping[str, Any], *,
              target_type: str | None = None, relaxed: bool = False) -> dict[str, Any]:
    """ModifyTargetGroup's health-check parameters (``HealthCheckIntervalSeconds``, ``Matcher``:
    ``{"HttpCode": ...}``) over ``current``: the complete settings, as ``check``."""
    by_parameter = {api: setting for setting, (api, _) in API_NAMES.items()}
    given: dict[str, Any] = {}
    enabled = False
    for key, value in body.items():
        if key == "TargetGroupName" or key == "TargetGroupArn":
            continue
        if key == "HealthCheckEnabled":  # always on for instance, ip and alb targets (API reference)
            if not isinstance(value, bool):
                raise validation_error(f"HealthCheckEnabled {value!r} must be true or false")
            if not value:
                raise validation_error(ALWAYS_ENABLED.format(target_type=target_type or "instance"))
            enabled = True
            continue
        if key not in by_parameter:
            raise validation_error(f"Unknown parameter '{key}'; ModifyTargetGroup takes"
                                   f" {', '.join(by_parameter)}")
        if key == "Matcher":
            if not isinstance(value, dict) or set(value) != {"HttpCode"} or not isinstance(value["HttpCode"], str):
                raise validation_error(f"Matcher {value!r} must be" ' {"HttpCode": "<codes>"}, e.g.'
                                       ' {"HttpCode": "200-399"}')
            value = value["HttpCode"]
        given[by_parameter[key]] = value
    if not given and not enabled:
        raise validation_error(f"Nothing to modify: give at least one of {', '.join(by_parameter)}")
    return check(rules, given, current, target_type=target_type, relaxed=relaxed)


def described(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The health-check part of a TargetGroup as DescribeTargetGroups shows it (HealthCheckPath and
    Matcher only for HTTP/HTTPS checks, as in AWS)."""
    http = settings["protocol"] != "TCP"
    return {"HealthCheckProtocol": settings["protocol"], "HealthCheckPort": str(settings["port"]),
            "HealthCheckEnabled": True,
            "HealthCheckIntervalSeconds": _whole(settings["interval_seconds"]),
            "HealthCheckTimeoutSeconds": _whole(settings["timeout_seconds"]),
            "HealthyThresholdCount": settings["healthy_threshold"],
            "UnhealthyThresholdCount": settings["unhealthy_threshold"],
            **({"HealthCheckPath": settings["path"], "Matcher": {"HttpCode": settings["matcher"]}} if http else {})}


def _whole(x: float) -> int | float:
    return int(x) if x == int(x) else x
