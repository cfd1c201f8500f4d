"""Slow start: linear ramp for a newly healthy target, only beside a healthy non-slow-start one."""

from __future__ import annotations

from collections import Counter

import pytest

from services.alb_sim.config import ConfigError, HealthCheck, Target, TargetGroup, TargetGroupAttributes, load_config
from services.alb_sim.health import HEALTHY, CheckResult, slow_start_weight
from services.alb_sim.runtime import TargetGroupRuntime


@pytest.mark.parametrize("now,weight", [(100, 0.01), (115, 0.5), (129, 29 / 30), (130, 1.0), (500, 1.0)])
def test_weight_ramps_linearly(now: float, weight: float) -> None:
    assert slow_start_weight(now, healthy_since=100, slow_until=130, duration=30) == pytest.approx(weight)


def group(slow_start: int) -> TargetGroupRuntime:
    tg = TargetGroup(name="api", arn="arn", protocol="HTTP", port=80,
                     targets=(Target("a", "10.0.0.1", 80), Target("b", "10.0.0.2", 80)),
                     health_check=HealthCheck(healthy_threshold=2),
                     attributes=TargetGroupAttributes(slow_start=slow_start))
    return TargetGroupRuntime(tg)


def make_healthy(g: TargetGroupRuntime, index: int) -> None:
    health = g.members[index].health
    health.record(CheckResult.passed())
    assert health.state == HEALTHY
    g.became_healthy(health)


def test_new_target_ramps_up_beside_an_established_one() -> None:
    g = group(slow_start=30)
    make_healthy(g, 0)
    assert g.members[0].slow_until == 0.0  # nobody else was healthy: no slow start
    make_healthy(g, 1)
    assert g.members[1].slow_until > g.members[1].healthy_since
    g.members[1].healthy_since -= 3  # 3 s into a 30 s ramp: about 10 % of the share
    picks = Counter(g.pick().addr for _ in range(3000))
    assert 150 < picks["10.0.0.2:80"] < 500


def test_without_slow_start_both_share_equally() -> None:
    g = group(slow_start=0)
    make_healthy(g, 0)
    make_healthy(g, 1)
    assert Counter(g.pick().addr for _ in range(10)) == {"10.0.0.1:80": 5, "10.0.0.2:80": 5}


@pytest.mark.parametrize("attrs,message", [
    ({"slow_start.duration_seconds": "10"}, "'slow_start.duration_seconds' value '10' is not valid: must be 0 or an integer from 30 to 900"),
    ({"slow_start.duration_seconds": "30", "load_balancing.algorithm.type": "least_outstanding_requests"},
     "Slow start mode is not supported with the least outstanding requests load balancing algorithm"),
])
def test_slow_start_validation(attrs: dict[str, str], message: str) -> None:
    config = {"nodes": [{"name": "alb-a", "az": "a", "address": "10.0.0.9"}],
              "listeners": [{"protocol": "HTTP", "port": 80,
                             "default_actions": [{"type": "forward", "target_group": "api"}]}],
              "target_groups": [{"name": "api", "arn": "x", "protocol": "HTTP", "port": 80, "attributes": attrs}]}
    with pytest.raises(ConfigError, match="target_groups\\[0\\].attributes"):
        load_config(config)
    try:
        load_config(config)
    except ConfigError as exc:
        assert message in str(exc)
