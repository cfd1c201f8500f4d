"""`lab demo` on the real chain.

- client-ip: the four designs brought up in turn, and what the echo service saw of one request
  from 198.51.100.123 in each (the target-type matrix of aws-elb.md section 2, and section 15's
  alternatives).
- alb-ip-change: steady traffic while the ALB's addresses change, through a HAProxy that resolved
  the ALB's name once and through one that re-resolves it (field notes pain point 8).
- xff-spoofing: a request carrying its own X-Forwarded-For under each of the ALB's modes (pain
  point 13).
- proxy-v2-rollout: PROXY v2 changed on the NLB alone, both ways (pain point 1).

The demos replace any running lab; this module takes the machine-wide lab lock like the others
(once, for both) and leaves the lab down."""

from __future__ import annotations

import fcntl
import json

import pytest

from lab.load import load_topology
from tests.integration.conftest import LOCK_FILE, lab

pytestmark = pytest.mark.integration
SOURCE = "198.51.100.123"
SPOOF = "203.0.113.9"  # what the client claims in its own X-Forwarded-For


@pytest.fixture(scope="module")
def demos():
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client_ip = lab("demo", "client-ip", "--from", SOURCE, "--json", timeout=1800)
            rotation = lab("demo", "alb-ip-change", "--json", timeout=1800)
            status_after_rotation = lab("status").stdout
            spoofing = lab("demo", "xff-spoofing", "--from", SOURCE, "--spoof", SPOOF, "--json", timeout=1800)
            mode_after = lab("alb", "attributes").stdout
            rollout = lab("demo", "proxy-v2-rollout", "--from", SOURCE, "--json", timeout=1800)
            pp2_after = lab("nlb", "describe-attributes", "--target-group", "haproxy-https").stdout
            yield {**{name: {r["topology"]: r for r in json.loads(result.stdout)}
                      for name, result in (("client-ip", client_ip), ("alb-ip-change", rotation),
                                           ("xff-spoofing", spoofing), ("proxy-v2-rollout", rollout))},
                   "status after alb-ip-change": status_after_rotation,
                   "attributes after xff-spoofing": mode_after, "attributes after proxy-v2-rollout": pp2_after}
        finally:
            lab("down", timeout=300)


@pytest.fixture
def demo_rows(demos):
    return demos["client-ip"]


def test_each_design_in_order_answers(demo_rows):
    assert list(demo_rows) == ["nlb-ip", "ip-proxy-v2", "nlb-alb", "default"]
    assert all(r["status"] == 200 and r["problems"] == [] for r in demo_rows.values()), demo_rows


def test_what_the_application_saw_in_each_design(demo_rows):
    private = {str(n.private_ip) for n in load_topology("default").nlb.nodes}
    haproxy = {str(h.address) for h in load_topology("default").haproxy.instances}
    seen = {name: r["x_forwarded_for"].split(", ") for name, r in demo_rows.items()}
    # ip targets without PROXY v2: the NLB node's private address, then HAProxy's.
    assert seen["nlb-ip"][0] in private and seen["nlb-ip"][1] in haproxy and not demo_rows["nlb-ip"]["kept"]
    # PROXY v2: HAProxy's TCP peer is the NLB node, the header gives it the client.
    assert demo_rows["ip-proxy-v2"]["haproxy_tcp_peer"] in private
    assert demo_rows["ip-proxy-v2"]["haproxy_client"] == SOURCE
    assert seen["ip-proxy-v2"][0] == SOURCE and seen["ip-proxy-v2"][1] in haproxy
    # alb target type: no HAProxy; the ALB appends its TCP peer, the client itself.
    assert demo_rows["nlb-alb"]["haproxy_client"] == "not on the path" and seen["nlb-alb"] == [SOURCE]
    # instance targets: HAProxy's TCP peer is the client.
    assert demo_rows["default"]["haproxy_tcp_peer"] == demo_rows["default"]["haproxy_client"] == SOURCE
    assert seen["default"][0] == SOURCE and seen["default"][1] in haproxy
    assert [r["kept"] for r in demo_rows.values()] == [False, True, True, True]


def test_haproxy_that_resolved_the_alb_once_fails_after_the_old_nodes_go(demos):
    rows = demos["alb-ip-change"]
    assert list(rows) == ["haproxy-resolve-once", "default"]
    once, default = rows["haproxy-resolve-once"], rows["default"]
    assert once["old_addresses"] == default["old_addresses"] and not set(once["old_addresses"]) & set(
        once["new_addresses"])
    # Resolved once: served by the old nodes while they drain (8 s), HAProxy's 503 once they are gone,
    # and never a request through a new address.
    assert once["failures"].get("503", 0) > 0, once
    assert once["first_failure_after"] >= 8, once
    assert once["served_after_drain_by"] == [], once
    assert once["ok"] > 0
    # Re-resolved: no request fails, and both new nodes serve once the old ones are gone.
    assert default["failures"] == {} and default["ok"] == default["requests"] > 100, default
    assert default["served_after_drain_by"] == default["new_addresses"], default
    assert demos["status after alb-ip-change"].startswith("topology default ")  # left as `make up` leaves it


def test_a_client_supplied_x_forwarded_for_under_each_alb_mode(demos):
    (row,) = demos["xff-spoofing"].values()
    haproxy = {str(h.address) for h in load_topology("default").haproxy.instances}
    modes = {r["mode"]: r for r in row["modes"]}
    assert list(modes) == ["append", "preserve", "remove"]
    assert all(r["status"] == 200 and r["problems"] == [] for r in modes.values()), modes
    # append: what the client wrote, the client (HAProxy's forwardfor), HAProxy (the ALB's peer).
    spoofed, client, peer = modes["append"]["x_forwarded_for"].split(", ")
    assert (spoofed, client) == (SPOOF, SOURCE) and peer in haproxy
    assert (modes["append"]["first_address"], modes["append"]["client_address"]) == (SPOOF, SOURCE)
    # preserve: as HAProxy sent it; remove: nothing at all.
    assert modes["preserve"]["x_forwarded_for"] == f"{SPOOF}, {SOURCE}" and modes["preserve"]["client_address"] == SOURCE
    assert modes["remove"]["x_forwarded_for"] is None and modes["remove"]["client_address"] is None
    # The demo sets the mode back (the last one it tried was remove).
    assert "routing.http.xff_header_processing.mode = append" in demos["attributes after xff-spoofing"]


def test_proxy_v2_changed_on_the_nlb_alone_breaks_every_request_while_health_checks_pass(demos):
    rows = demos["proxy-v2-rollout"]
    assert list(rows) == ["nlb-ip", "ip-proxy-v2"]
    private = {str(n.private_ip) for n in load_topology("default").nlb.nodes}
    (plain, plain_changed), (pp2, pp2_changed) = rows["nlb-ip"]["states"], rows["ip-proxy-v2"]["states"]
    # As configured: both answer; only PROXY v2 brings the client's address.
    assert (plain["nlb_sends"], plain["haproxy_expects"], plain["status"]) == (False, False, 200)
    assert plain["app_client_ip"] in private
    assert (pp2["nlb_sends"], pp2["haproxy_expects"], pp2["status"]) == (True, True, 200)
    assert pp2["app_client_ip"] == SOURCE
    # The NLB's side changed alone: no answer, HAProxy says why, and the TCP health checks stay green.
    for changed, complaint in ((plain_changed, "SSL handshake failure"),
                               (pp2_changed, "does not look like a PROXY protocol header")):
        assert changed["changed"] and changed["status"] is None and changed["error"], changed
        assert any(complaint in line for line in changed["haproxy_log"]), changed["haproxy_log"]
        assert changed["health_after"] >= 10 and set(changed["target_health"]) == {"healthy"}, changed
    # Set back to the topology's (the last change had turned it off).
    assert "proxy_protocol_v2.enabled = true" in demos["attributes after proxy-v2-rollout"]
