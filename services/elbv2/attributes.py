"""Attribute tables: every load balancer, listener and target group attribute the lab accepts,
with AWS's default and allowed values (API reference: LoadBalancerAttribute, ListenerAttribute,
TargetGroupAttribute; aws-elb.md sections 2, 6, 7, 9). One table per resource and load balancer
type; values are AWS's strings (``"true"``, ``"300"``).

``check(table, pairs)`` validates keys and values and the rules that tie attributes together;
``described(table, values)`` is what Describe*Attributes answers: every key of the table, AWS's
default where nothing set it. Wording (decisions #21, #49, #72): unknown keys in AWS's own text,
``Target group attribute key 'x' is not recognized``; a bad value
``Target group attribute '<key>' value '<v>' is not valid: must be ...``; code ValidationError.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Mapping

from .errors import ApiError, validation_error

BOOL = ("true", "false")


@dataclass(frozen=True)
class Attribute:
    """One attribute: its AWS default and what it allows. ``choices``: the allowed strings; else
    ``lo``-``hi`` (integers, plus ``also``, e.g. 0 for "off"); else ``text`` checks a free string."""

    key: str
    default: str
    choices: tuple[str, ...] = ()
    lo: int | None = None
    hi: int | None = None
    also: tuple[int, ...] = ()
    text: Callable[[str], str | None] | None = None  # a free string: None if valid, else what is allowed
    defaults_by_target_type: Mapping[str, str] = field(default_factory=dict)

    def default_for(self, target_type: str | None) -> str:
        return self.defaults_by_target_type.get(target_type or "", self.default)

    def allowed(self) -> str:
        """What the value must be, in the words of the error message."""
        if self.choices:
            return f"must be one of {', '.join(self.choices)}"
        if self.lo is not None:
            extra = "".join(f"{a} or " for a in self.also)
            return f"must be {extra}an integer from {self.lo} to {self.hi}"
        return "must be a string"

    def problem(self, value: str) -> str | None:
        """None when ``value`` is allowed, else what is allowed."""
        if self.choices:
            return None if value in self.choices else self.allowed()
        if self.lo is not None and self.hi is not None:
            ok = value.isascii() and value.isdigit() and (self.lo <= int(value) <= self.hi or int(value) in self.also)
            return None if ok else self.allowed()
        return self.text(value) if self.text is not None else None

    def with_range(self, lo: int, hi: int) -> "Attribute":
        return Attribute(self.key, self.default, lo=lo, hi=hi, also=self.also)


class AttributeProblem(ApiError):
    """A ValidationError about one attribute; ``key`` is the one the message is about, so a caller
    can say where it came from (a YAML key path, a JSON path)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__("ValidationError", message)
        self.key = key


class RuleViolation(AttributeProblem):
    """Attributes that contradict each other."""


# A rule across attributes: given every value (set or default), None or (the key at fault, AWS's words).
Rule = Callable[[Mapping[str, str]], "tuple[str, str] | None"]


@dataclass(frozen=True)
class Table:
    """The attributes of one kind of resource. ``what``: "Target group", "Load balancer" or
    "Listener", as AWS's messages name it. ``rules``: checks across attributes, given the merged
    values (every key: set or default)."""

    what: str
    attributes: tuple[Attribute, ...]
    rules: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", MappingProxyType({a.key: a for a in self.attributes}))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.attributes)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key  # type: ignore[attr-defined]

    def __getitem__(self, key: str) -> Attribute:
        return self._by_key[key]  # type: ignore[attr-defined]

    def defaults(self, target_type: str | None = None) -> dict[str, str]:
        return {a.key: a.default_for(target_type) for a in self.attributes}

    def replace(self, attribute: Attribute) -> "Table":
        """The table with one attribute's rule replaced (the lab-only relaxed limits)."""
        return Table(self.what, tuple(attribute if a.key == attribute.key else a for a in self.attributes),
                     self.rules)

    def check_value(self, key: str, value: str) -> str:
        """One key and value: the value, or AttributeProblem (ValidationError) in AWS's words."""
        if key not in self:
            raise AttributeProblem(key, f"{self.what} attribute key '{key}' is not recognized")
        problem = self[key].problem(value)
        if problem is not None:
            raise AttributeProblem(key, f"{self.what} attribute '{key}' value '{value}' is not valid: {problem}")
        return value

    def check(self, pairs: Iterable[tuple[str, str]], current: Mapping[str, str],
              target_type: str | None = None) -> dict[str, str]:
        """Validate ``pairs`` over ``current`` (what is set now); the new complete map (every key,
        defaults filled in), after the rules across attributes."""
        merged = {**self.defaults(target_type), **current}
        for key, value in pairs:
            merged[key] = self.check_value(key, value)
        for rule in self.rules:
            broken = rule(merged)
            if broken is not None:
                raise RuleViolation(*broken)
        return merged


def attribute_value(raw: object) -> str:
    """A topology value as AWS's string: YAML ``true`` -> ``"true"``, ``300`` -> ``"300"``."""
    return ("true" if raw else "false") if isinstance(raw, bool) else str(raw)


def attribute_pairs(raw: object, what: str) -> list[tuple[str, str]]:
    """The ``Attributes`` parameter of a Modify*Attributes call: ``[{"Key": ..., "Value": ...}]``."""
    if not isinstance(raw, list) or not raw:
        raise validation_error('Attributes must be a non-empty list of {"Key": ..., "Value": ...}')
    out = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("Key"), str) or not isinstance(item.get("Value"), str):
            raise validation_error(f"{what} attribute {item!r} must be" ' {"Key": "<string>", "Value": "<string>"}')
        out.append((item["Key"], item["Value"]))
    return out


def answer(values: Mapping[str, str]) -> dict[str, list[dict[str, str]]]:
    """The ``Attributes`` list of a Describe*Attributes or Modify*Attributes answer."""
    return {"Attributes": [{"Key": k, "Value": v} for k, v in values.items()]}


def _bool(key: str, default: str = "false") -> Attribute:
    return Attribute(key, default, BOOL)


def _seconds(key: str, default: int, lo: int, hi: int, also: tuple[int, ...] = ()) -> Attribute:
    return Attribute(key, str(default), lo=lo, hi=hi, also=also)


def _any_text(value: str) -> str | None:
    return None if len(value) <= 1024 else "must be at most 1024 characters"


_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an RFC 6265 cookie-name (an HTTP token)
# Cookie names the load balancer keeps for itself (ALB sticky sessions: AWSALB, AWSALBAPP, AWSALBTG).
RESERVED_COOKIE_PREFIXES = ("AWSALB", "AWSALBAPP", "AWSALBTG")


# S3 User Guide, "General purpose bucket naming rules"
# (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
S3_BUCKET_RULE = ("must be an S3 bucket name: 3 to 63 lowercase letters, digits, '.' and '-', beginning and ending"
                  " with a letter or digit, no '..', not an IP address, not starting with xn--, sthree- or"
                  " amzn-s3-demo-, not ending with -s3alias, --ol-s3, .mrap, --x-s3 or --table-s3")


def _s3_bucket(value: str) -> str | None:
    """An S3 bucket name, or "" (not set: AWS's default)."""
    if not value:
        return None
    ok = _BUCKET.fullmatch(value) and ".." not in value and not re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value) \
        and not value.startswith(_BUCKET_PREFIXES) and not value.endswith(_BUCKET_SUFFIXES)
    return None if ok else S3_BUCKET_RULE


def _access_log_prefix(value: str) -> str | None:
    """ALB guide, "Enable access logs", bucket requirements: the prefix must not include AWSLogs."""
    return "must not include 'AWSLogs'" if "AWSLogs" in value else _any_text(value)


def _cookie_name(value: str) -> str | None:
    if value and not _COOKIE_NAME.fullmatch(value):
        return "must be a cookie name: letters, digits and !#$%&'*+.^_`|~-"
    return None


# --- Network Load Balancer -------------------------------------------------------------------------
NLB_TARGET_GROUP = Table("Target group", (
    Attribute("preserve_client_ip.enabled", "true", BOOL,
              defaults_by_target_type=MappingProxyType({"ip": "false"})),  # ip + TCP/TLS: off (NLB-TGA)
    _bool("proxy_protocol_v2.enabled"),
    Attribute("proxy_protocol_v2.client_to_server.header_placement", "on_first_ack_with_payload",
              ("on_first_ack_with_payload", "on_connect")),
    _seconds("deregistration_delay.timeout_seconds", 300, 0, 3600),
    _bool("deregistration_delay.connection_termination.enabled"),
    _bool("stickiness.enabled"),
    Attribute("stickiness.type", "source_ip", ("source_ip",)),
    Attribute("load_balancing.cross_zone.enabled", "use_load_balancer_configuration",
              ("true", "false", "use_load_balancer_configuration")),
    _bool("target_health_state.unhealthy.connection_termination.enabled", "true"),
))
NLB_LOAD_BALANCER = Table("Load balancer", (
    _bool("load_balancing.cross_zone.enabled"),
    _bool("deletion_protection.enabled"),
))
# TCP listeners only; a TLS listener's idle timeout is fixed at 350 s and it has no attribute (NLB-LB23).
NLB_TCP_LISTENER = Table("Listener", (_seconds("tcp.idle_timeout.seconds", 350, 60, 6000),))
# Lab-only `nlb.relaxed_limits` (decisions #23): idle timeouts from 10 s, so tests can see them.
NLB_TCP_LISTENER_RELAXED = NLB_TCP_LISTENER.replace(NLB_TCP_LISTENER["tcp.idle_timeout.seconds"].with_range(10, 6000))


def nlb_listener_attributes(protocol: str, pairs: Iterable[tuple[str, str]], current: Mapping[str, str],
                            relaxed: bool = False) -> dict[str, str]:
    """A listener's attributes after ``pairs``: TCP listeners have ``tcp.idle_timeout.seconds``; TLS
    listeners none (their idle timeout is fixed at 350 s)."""
    table = NLB_TCP_LISTENER_RELAXED if relaxed else NLB_TCP_LISTENER
    if protocol == "TCP":
        return table.check(pairs, current)
    pairs = [(key, table.check_value(key, value)) for key, value in pairs]
    for key, _ in pairs:
        raise validation_error(f"Listener attribute '{key}' is only supported on TCP listeners, not {protocol}")
    return {}


def nlb_target_group_attributes(pairs: Iterable[tuple[str, str]], current: Mapping[str, str], *,
                                target_type: str, tls_behind_tls: bool = False) -> dict[str, str]:
    """An NLB target group's attributes after ``pairs``, with the rules AWS adds per target type:
    ``alb`` target groups keep AWS's defaults (NLB-ALBT23); no stickiness for a TLS target group
    behind a TLS listener (NLB-TG23)."""
    pairs = list(pairs)
    merged = NLB_TARGET_GROUP.check(pairs, current, target_type)
    if target_type == "alb" and (pairs or merged != NLB_TARGET_GROUP.defaults(target_type)):
        raise no_alb_target_group_attributes()
    if tls_behind_tls and merged["stickiness.enabled"] == "true":
        raise no_tls_stickiness()
    return merged


# --- Application Load Balancer ---------------------------------------------------------------------
def _logs_bucket(values: Mapping[str, str], logs: str) -> tuple[str, str] | None:
    """API reference, LoadBalancerAttribute: the bucket "is required if access logs [connection logs]
    are enabled"."""
    if values[f"{logs}.s3.enabled"] == "true" and not values[f"{logs}.s3.bucket"]:
        return (f"{logs}.s3.bucket", f"'{logs}.s3.bucket' must be specified when '{logs}.s3.enabled' is 'true'")
    return None


ALB_LOAD_BALANCER = Table("Load balancer", (
    _bool("access_logs.s3.enabled"), Attribute("access_logs.s3.bucket", "", text=_s3_bucket),
    Attribute("access_logs.s3.prefix", "", text=_access_log_prefix),
    _seconds("client_keep_alive.seconds", 3600, 60, 604800),
    _bool("connection_logs.s3.enabled"), Attribute("connection_logs.s3.bucket", "", text=_s3_bucket),
    Attribute("connection_logs.s3.prefix", "", text=_any_text),
    _bool("deletion_protection.enabled"),
    _seconds("idle_timeout.timeout_seconds", 60, 1, 4000),
    Attribute("routing.http.desync_mitigation_mode", "defensive", ("monitor", "defensive", "strictest")),
    _bool("routing.http.drop_invalid_header_fields.enabled"),
    _bool("routing.http.preserve_host_header.enabled"),
    _bool("routing.http.x_amzn_tls_version_and_cipher_suite.enabled"),
    _bool("routing.http.xff_client_port.enabled"),
    Attribute("routing.http.xff_header_processing.mode", "append", ("append", "preserve", "remove")),
    _bool("routing.http2.enabled", "true"),
    _bool("waf.fail_open.enabled"),
    _bool("zonal_shift.config.enabled"),
), rules=(functools.partial(_logs_bucket, logs="access_logs"), functools.partial(_logs_bucket, logs="connection_logs")))


def _anomaly_mitigation(values: Mapping[str, str]) -> tuple[str, str] | None:
    if values["load_balancing.algorithm.anomaly_mitigation"] == "on" \
            and values["load_balancing.algorithm.type"] != "weighted_random":
        return ("load_balancing.algorithm.anomaly_mitigation",
                "Anomaly mitigation is only supported with the weighted random load balancing algorithm")
    return None


def _slow_start(values: Mapping[str, str]) -> tuple[str, str] | None:
    if values["slow_start.duration_seconds"] != "0" \
            and values["load_balancing.algorithm.type"] == "least_outstanding_requests":
        return ("slow_start.duration_seconds",
                "Slow start mode is not supported with the least outstanding requests load balancing algorithm")
    return None


def _app_cookie(values: Mapping[str, str]) -> tuple[str, str] | None:
    cookie = values["stickiness.app_cookie.cookie_name"]
    if cookie.upper().startswith(RESERVED_COOKIE_PREFIXES):
        return ("stickiness.app_cookie.cookie_name",
                f"Cookie name '{cookie}' is not allowed: names starting with {', '.join(RESERVED_COOKIE_PREFIXES)}"
                " are reserved for use by the load balancer")
    if values["stickiness.enabled"] == "true" and values["stickiness.type"] == "app_cookie" and not cookie:
        return ("stickiness.app_cookie.cookie_name",
                "'stickiness.app_cookie.cookie_name' must be specified when 'stickiness.type' is 'app_cookie'")
    return None


ALB_TARGET_GROUP = Table("Target group", (
    _seconds("deregistration_delay.timeout_seconds", 300, 0, 3600),
    Attribute("load_balancing.algorithm.type", "round_robin",
              ("round_robin", "least_outstanding_requests", "weighted_random")),
    Attribute("load_balancing.algorithm.anomaly_mitigation", "off", ("on", "off")),
    _bool("stickiness.enabled"),
    Attribute("stickiness.type", "lb_cookie", ("lb_cookie", "app_cookie")),
    _seconds("stickiness.lb_cookie.duration_seconds", 86400, 1, 604800),
    Attribute("stickiness.app_cookie.cookie_name", "", text=_cookie_name),
    _seconds("stickiness.app_cookie.duration_seconds", 86400, 1, 604800),
    _seconds("slow_start.duration_seconds", 0, 30, 900, also=(0,)),
), rules=(_anomaly_mitigation, _app_cookie, _slow_start))


def no_alb_target_group_attributes() -> ApiError:
    """NLB target groups of target type ``alb`` keep AWS's defaults (NLB-ALBT23)."""
    return ApiError("InvalidConfigurationRequest",
                    "The attributes of target groups with target type 'alb' cannot be modified")


def no_tls_stickiness() -> ApiError:
    """Source-IP stickiness is not supported for TLS target groups behind TLS listeners (NLB-TG23)."""
    return ApiError("InvalidConfigurationRequest",
                    "Stickiness is not supported for target groups with the TLS protocol behind TLS listeners")
