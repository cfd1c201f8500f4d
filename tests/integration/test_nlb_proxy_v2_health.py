"""PROXY v2 health checks against real HAProxy (topology ip-proxy-v2): every check connection starts
with a LOCAL header (field notes pain point 2: checks fail once PPv2 is on unless the target parses
it). HAProxy with `accept-proxy` must keep both targets healthy, check after check, and must not log
a PROXY protocol error."""

from __future__ import annotations

import time

import pytest

from lab.load import load_topology
from tests.integration.conftest import lab, lab_json

TOPOLOGY = "ip-proxy-v2"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("running_lab")]


def test_haproxy_with_accept_proxy_stays_healthy_under_proxy_v2_checks():
    topology = load_topology(TOPOLOGY)
    assert topology.haproxy.accept_proxy
    assert all(tg.proxy_protocol_v2 for tg in topology.nlb.target_groups)
    interval = max(tg.health_check.interval_seconds for tg in topology.nlb.target_groups)
    started = time.monotonic()
    samples = 0
    # Several check rounds (each node checks each target every interval), all healthy throughout.
    while time.monotonic() - started < 3 * interval:
        docs = lab_json("nlb", "describe-target-health", "--json")
        states = {(tg, d["Target"]["Id"]): d["TargetHealth"]["State"] for tg, ds in docs.items() for d in ds}
        assert len(states) == 4 and set(states.values()) == {"healthy"}, states
        samples += 1
        time.sleep(1)
    assert samples >= 3
    for node in topology.nlb.nodes:  # each node's own view, not just the consensus
        docs = lab_json("nlb", "describe-target-health", "--node", node.name, "--json")
        assert {d["TargetHealth"]["State"] for ds in docs.values() for d in ds} == {"healthy"}
    logs = lab("logs", "haproxy-a", "haproxy-b").stdout + lab("logs", "haproxy-a", "haproxy-b").stderr
    for bad in ("Received something which does not look like a PROXY protocol header",
                "PROXY protocol header", "broken header"):
        assert bad not in logs


def test_metrics_count_both_targets_healthy_in_each_az():
    text = lab("nlb", "metrics").stdout
    for tg in ("haproxy-https", "haproxy-http"):
        for az in ("a", "b"):
            assert f'aws_networkelb_HealthyHostCount{{LoadBalancer="static-ingress",TargetGroup="{tg}",' \
                   f'AvailabilityZone="{az}"}} 1' in text
            assert f'aws_networkelb_UnHealthyHostCount{{LoadBalancer="static-ingress",TargetGroup="{tg}",' \
                   f'AvailabilityZone="{az}"}} 0' in text
