"""The one ELBv2 vocabulary (services/elbv2): every table's defaults are valid against it, and a bad
value is refused in the same AWS words wherever it comes from: a topology, either simulator's
config, either admin API."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from lab.errors import TopologyError
from services.alb_sim.config import TargetGroupAttributes
from services.alb_sim.config_changes import parse_target_group_attributes
from services.elbv2 import attributes, health_checks
from services.elbv2.errors import ApiError, error_reply
from services.nlb_sim import config as nlb_config
from services.nlb_sim.admin import AdminApi
from services.nlb_sim.app import NlbApp
from tests.unit.test_nlb_config import BASE
from tests.unit.test_topology import edited, load

TABLES = [attributes.NLB_TARGET_GROUP, attributes.NLB_LOAD_BALANCER, attributes.NLB_TCP_LISTENER,
          attributes.NLB_TCP_LISTENER_RELAXED, attributes.ALB_LOAD_BALANCER, attributes.ALB_TARGET_GROUP]


@pytest.mark.parametrize("table", TABLES, ids=lambda t: f"{t.what}:{len(t.keys)}")
def test_every_default_is_allowed(table: attributes.Table) -> None:
    for target_type in (None, "instance", "ip", "alb"):
        defaults = table.defaults(target_type)
        assert list(defaults) == list(table.keys)
        assert table.check(defaults.items(), {}, target_type) == defaults


@pytest.mark.parametrize("rules", [health_checks.NETWORK, health_checks.APPLICATION], ids=lambda r: r.load_balancer)
def test_health_check_defaults_are_valid_per_protocol(rules: health_checks.HealthCheckRules) -> None:
    for protocol in rules.protocols:
        defaults = rules.defaults(protocol)
        assert health_checks.check(rules, defaults, complete=True) == defaults


DELAY = "ValidationError: Target group attribute 'deregistration_delay.timeout_seconds' value '4000' is not valid:" \
        " must be an integer from 0 to 3600"


def test_one_wording_for_a_bad_nlb_value_from_topology_config_and_api() -> None:
    with pytest.raises(TopologyError) as topology:
        load(edited("nlb.target_groups.haproxy-https.attributes", {"deregistration_delay.timeout_seconds": 4000}))
    assert str(topology.value) == f"nlb.target_groups.haproxy-https.attributes.deregistration_delay.timeout_seconds:" \
                                  f" {DELAY} in t.yaml"
    raw = copy.deepcopy(BASE)
    raw["target_groups"][0]["attributes"]["deregistration_delay.timeout_seconds"] = "4000"
    with pytest.raises(nlb_config.ConfigError) as config:
        nlb_config.load_config(raw)
    assert str(config.value) == f"target_groups[0].attributes.deregistration_delay.timeout_seconds: {DELAY}"
    status, doc = AdminApi(NlbApp(nlb_config.load_config(BASE))).handle(
        "POST", b"/modify-target-group-attributes", json.dumps({"TargetGroupName": "haproxy-https", "Attributes": [
            {"Key": "deregistration_delay.timeout_seconds", "Value": "4000"}]}).encode())
    assert (status, f"{doc['Error']['Code']}: {doc['Error']['Message']}") == (400, DELAY)


def test_one_wording_for_a_bad_alb_value_from_topology_and_api() -> None:
    with pytest.raises(TopologyError) as topology:
        load(edited("alb.target_groups.api.attributes", {"deregistration_delay.timeout_seconds": 4000}))
    assert str(topology.value) == f"alb.target_groups.api.attributes.deregistration_delay.timeout_seconds: {DELAY}" \
                                  " in t.yaml"
    with pytest.raises(ApiError) as api:
        parse_target_group_attributes({"deregistration_delay.timeout_seconds": "4000"}, TargetGroupAttributes())
    assert error_reply(api.value) == (400, {"Error": {"Code": "ValidationError", "Message": DELAY.split(": ", 1)[1]}})


@pytest.mark.parametrize("given, setting, message", [
    ({"interval_seconds": 10}, "interval_seconds", health_checks.INTERVAL_ABOVE_TIMEOUT),  # TCP's default 10 s
    ({"protocol": "HTTP", "interval_seconds": 10}, None, None),  # HTTP's default 6 s fits
    ({"protocol": "TCP", "matcher": "200"}, "matcher",
     "Health check matcher cannot be set when the health check protocol is TCP"),
    ({"timeout_seconds": 1}, "timeout_seconds", "1 validation error detected: Value '1' at"
     " 'healthCheckTimeoutSeconds' failed to satisfy constraint: Member must have value greater than or equal to 2"),
    ({"port": 8443}, None, None),
])
def test_network_health_check_rules(given: dict[str, Any], setting: str | None, message: str | None) -> None:
    if setting is None:
        hc = health_checks.check(health_checks.NETWORK, given)
        assert {k: hc[k] for k in given} == {k: str(v) if k == "port" else v for k, v in given.items()}
        return
    with pytest.raises(health_checks.HealthCheckProblem) as caught:
        health_checks.check(health_checks.NETWORK, given)
    assert (caught.value.setting, caught.value.message) == (setting, message)


def test_a_rule_across_attributes_names_its_key() -> None:
    with pytest.raises(attributes.RuleViolation) as caught:
        attributes.ALB_TARGET_GROUP.check([("slow_start.duration_seconds", "30"),
                                           ("load_balancing.algorithm.type", "least_outstanding_requests")], {})
    assert caught.value.key == "slow_start.duration_seconds"
