"""Target group attributes: load_balancing.algorithm.* and stickiness.app_cookie.*, exact errors;
weighted_random target selection."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.alb_sim.config import TargetGroupAttributes
from services.alb_sim.config_changes import parse_target_group_attributes
from services.alb_sim.health import DRAINING, HEALTHY, INITIAL, UNHEALTHY, WeightedRandom
from services.elbv2.errors import ApiError


def test_defaults_are_aws_defaults() -> None:
    a = parse_target_group_attributes({}, TargetGroupAttributes())
    assert (a.algorithm, a.anomaly_mitigation, a.stickiness, a.stickiness_type) == ("round_robin", False, False,
                                                                                   "lb_cookie")
    assert (a.app_cookie_name, a.app_cookie_seconds, a.stickiness_seconds) == ("", 86400, 86400)


def test_weighted_random_with_and_without_anomaly_mitigation() -> None:
    a = parse_target_group_attributes({"load_balancing.algorithm.type": "weighted_random",
                                       "load_balancing.algorithm.anomaly_mitigation": "on"}, TargetGroupAttributes())
    assert (a.algorithm, a.anomaly_mitigation) == ("weighted_random", True)
    b = parse_target_group_attributes({"load_balancing.algorithm.anomaly_mitigation": "off"}, a)
    assert (b.algorithm, b.anomaly_mitigation) == ("weighted_random", False)


def test_app_cookie_stickiness() -> None:
    a = parse_target_group_attributes({"stickiness.enabled": "true", "stickiness.type": "app_cookie",
                                       "stickiness.app_cookie.cookie_name": "SESSIONID",
                                       "stickiness.app_cookie.duration_seconds": "600"}, TargetGroupAttributes())
    assert (a.stickiness, a.stickiness_type, a.app_cookie_name, a.app_cookie_seconds) == (True, "app_cookie",
                                                                                         "SESSIONID", 600)
    # switching type keeps the app cookie settings, as ModifyTargetGroupAttributes only changes what it names
    b = parse_target_group_attributes({"stickiness.type": "lb_cookie"}, a)
    assert (b.stickiness_type, b.app_cookie_name) == ("lb_cookie", "SESSIONID")


ERRORS = [
    ({"load_balancing.algorithm.type": "random"},
     "ValidationError: Target group attribute 'load_balancing.algorithm.type' value 'random' "
     "is not valid: must be one of round_robin, least_outstanding_requests, weighted_random"),
    ({"load_balancing.algorithm.anomaly_mitigation": "true", "load_balancing.algorithm.type": "weighted_random"},
     "ValidationError: Target group attribute 'load_balancing.algorithm.anomaly_mitigation' value 'true' "
     "is not valid: must be one of on, off"),
    ({"load_balancing.algorithm.anomaly_mitigation": "on"},
     "ValidationError: Anomaly mitigation is only supported with "
     "the weighted random load balancing algorithm"),
    ({"load_balancing.algorithm.anomaly_mitigation": "on", "load_balancing.algorithm.type": "least_outstanding_requests"},
     "ValidationError: Anomaly mitigation is only supported with "
     "the weighted random load balancing algorithm"),
    ({"stickiness.type": "source_ip"},
     "ValidationError: Target group attribute 'stickiness.type' value 'source_ip' "
     "is not valid: must be one of lb_cookie, app_cookie"),
    ({"stickiness.enabled": "true", "stickiness.type": "app_cookie"},
     "ValidationError: 'stickiness.app_cookie.cookie_name' must be specified "
     "when 'stickiness.type' is 'app_cookie'"),
    ({"stickiness.app_cookie.cookie_name": "AWSALBAPP-0"},
     "ValidationError: Cookie name 'AWSALBAPP-0' is not allowed: names "
     "starting with AWSALB, AWSALBAPP, AWSALBTG are reserved for use by the load balancer"),
    ({"stickiness.app_cookie.cookie_name": "awsalbtg"},
     "ValidationError: Cookie name 'awsalbtg' is not allowed: names "
     "starting with AWSALB, AWSALBAPP, AWSALBTG are reserved for use by the load balancer"),
    ({"stickiness.app_cookie.cookie_name": "my session"},
     "ValidationError: Target group attribute 'stickiness.app_cookie.cookie_name' value 'my session' "
     "is not valid: must be a cookie name: letters, digits and !#$%&'*+.^_`|~-"),
    ({"stickiness.app_cookie.duration_seconds": "0"},
     "ValidationError: Target group attribute 'stickiness.app_cookie.duration_seconds' value '0' "
     "is not valid: must be an integer from 1 to 604800"),
    ({"stickiness.app_cookie.duration_seconds": "604801"},
     "ValidationError: Target group attribute 'stickiness.app_cookie.duration_seconds' value '604801' "
     "is not valid: must be an integer from 1 to 604800"),
    ({"stickiness.lb_cookie.duration_seconds": "1d"},
     "ValidationError: Target group attribute 'stickiness.lb_cookie.duration_seconds' value '1d' "
     "is not valid: must be an integer from 1 to 604800"),
]


@pytest.mark.parametrize("values,message", ERRORS)
def test_errors(values: dict[str, str], message: str) -> None:
    with pytest.raises(ApiError) as info:  # the API's answer: AWS's words, no path (the topology adds its own)
        parse_target_group_attributes(values, TargetGroupAttributes())
    assert str(info.value) == message


def test_weighted_random_picks_every_healthy_target_about_equally() -> None:
    picker: WeightedRandom[str] = WeightedRandom(random.Random(7))
    picks = Counter(picker.pick(["a", "b", "c", "d"], [HEALTHY, HEALTHY, UNHEALTHY, HEALTHY]) for _ in range(3000))
    assert set(picks) == {"a", "b", "d"}
    assert all(900 <= n <= 1100 for n in picks.values()), picks


def test_weighted_random_fails_open_and_returns_none_when_nothing_is_registered() -> None:
    picker: WeightedRandom[str] = WeightedRandom(random.Random(7))
    picks = {picker.pick(["a", "b", "c"], [UNHEALTHY, INITIAL, DRAINING]) for _ in range(200)}
    assert picks == {"a", "b"}  # no healthy target: every registered one that is not draining
    assert picker.pick(["a"], [DRAINING]) is None


def test_target_group_runtime_uses_weighted_random() -> None:
    from services.alb_sim.config import HealthCheck, Target, TargetGroup
    from services.alb_sim.health import CheckResult
    from services.alb_sim.runtime import TargetGroupRuntime

    tg = TargetGroup(name="api", arn="arn", protocol="HTTP", port=80,
                     targets=(Target("a", "10.0.0.1", 80), Target("b", "10.0.0.2", 80)),
                     health_check=HealthCheck(), attributes=TargetGroupAttributes(algorithm="weighted_random"))
    g = TargetGroupRuntime(tg)
    for m in g.members:
        m.health.record(CheckResult.passed())
    g.rng.seed(3)
    sequence = [g.pick().addr for _ in range(12)]  # type: ignore[union-attr]
    assert sequence != ["10.0.0.1:80", "10.0.0.2:80"] * 6  # not round robin
    assert Counter(sequence).keys() == {"10.0.0.1:80", "10.0.0.2:80"}


@pytest.mark.parametrize("algorithm", ["round_robin", "weighted_random"])
def test_target_group_picks_follow_every_health_and_registration_change(algorithm: str) -> None:
    """The group keeps its routable targets between changes; each kind of change must show."""
    from services.alb_sim.config import HealthCheck, Target, TargetGroup
    from services.alb_sim.health import CheckResult
    from services.alb_sim.runtime import TargetGroupRuntime

    tg = TargetGroup(name="api", arn="arn", protocol="HTTP", port=80,
                     targets=(Target("a", "10.0.0.1", 80), Target("b", "10.0.0.2", 80)),
                     health_check=HealthCheck(unhealthy_threshold=2),
                     attributes=TargetGroupAttributes(algorithm=algorithm))
    g = TargetGroupRuntime(tg)

    def picks() -> set[str]:
        return {g.pick().addr for _ in range(40)}  # type: ignore[union-attr]

    assert picks() == {"10.0.0.1:80", "10.0.0.2:80"}  # none healthy yet: fail open
    g.members[0].health.record(CheckResult.passed())
    assert picks() == {"10.0.0.1:80"}
    g.members[1].health.record(CheckResult.passed())
    assert picks() == {"10.0.0.1:80", "10.0.0.2:80"}
    for _ in range(2):
        g.members[0].health.record(CheckResult.failed())
    assert picks() == {"10.0.0.2:80"}
    g.register([Target("c", "10.0.0.3", 80)])
    g.members[2].health.record(CheckResult.passed())
    assert picks() == {"10.0.0.2:80", "10.0.0.3:80"}
    g.deregister([("10.0.0.2", 80)])
    assert picks() == {"10.0.0.3:80"}
    g.deregister([("10.0.0.3", 80)])
    assert picks() == {"10.0.0.1:80"}  # only the unhealthy one is left: fail open
    g.deregister([("10.0.0.1", 80)])
    assert g.pick() is None
