"""Target-type matrix, `alb` row (topology nlb-alb): the NLB's TCP listeners forward to the ALB
(AWS `alb` target type). The client IP is preserved to the ALB, which appends it to
X-Forwarded-For (aws-elb.md sections 2 and 7); the ALB terminates TLS with the site certificate."""

from __future__ import annotations

import json

import pytest

from lab.load import load_topology
from tests.integration.conftest import exec_in, lab, lab_json, wait_for

TOPOLOGY = "nlb-alb"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("running_lab")]
SITE = "www.lab.test"


def test_alb_sees_the_client_and_puts_it_in_x_forwarded_for():
    topology = load_topology(TOPOLOGY)
    for node, clients in zip(topology.nlb.nodes, (("198.51.100.163", "198.51.100.164"),
                                                  ("198.51.100.165", "198.51.100.166"))):
        for client in clients:
            result = exec_in("client", "curl", "-sS", "--cacert", "/lab/certs/public-ca.pem", "--interface", client,
                             "--resolve", f"{SITE}:443:{node.elastic_ip}", f"https://{SITE}/api/alb-target")
            assert result.returncode == 0, result.stderr
            echo = json.loads(result.stdout)
            assert echo["headers"]["x-forwarded-for"] == client, (node.name, echo["headers"]["x-forwarded-for"])
            assert echo["headers"]["x-forwarded-proto"] == "https"
            # Cross-zone off: the NLB node of each AZ sends to the ALB node of its own AZ.
            flows = [json.loads(line) for line in exec_in("nlb", "cat", "/var/log/lab/nlb/flows.log").stdout.splitlines()]
            opened = [f for f in flows if f["event"] == "open" and f["client"].startswith(client + ":")]
            assert opened[-1]["target"] == f"alb-{node.az}" and opened[-1]["source_seen_by_target"].startswith(client)


def test_alb_targets_are_health_checked_through_the_alb():
    docs = lab_json("nlb", "describe-target-health", "--target-group", "alb-https", "--json")["alb-https"]
    assert {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in docs} == {"alb-a": "healthy", "alb-b": "healthy"}
    assert {d["HealthCheckPort"] for d in docs} == {"443"}


def test_http_listener_reaches_the_alb_redirect():
    out = lab("curl", "-i", f"http://{SITE}/x").stdout
    assert out.split()[1] == "301"


def test_alb_target_group_attributes_cannot_be_modified():
    bad = lab("nlb", "modify-target-group-attributes", "--target-group", "alb-https",
              "proxy_protocol_v2.enabled=true", check=False)
    assert bad.returncode == 1
    assert "InvalidConfigurationRequest: The attributes of target groups with target type 'alb' cannot be modified" \
        in bad.stderr


def test_nlb_follows_the_alb_across_a_rotation():
    """`lab alb rotate` moves the ALB to new node addresses; the alb target group must follow them
    (AWS tracks the ALB's IPs), so traffic keeps flowing after the old nodes are gone."""
    topology = load_topology(TOPOLOGY)
    old = {str(n.address) for n in topology.alb.nodes}
    rotated = lab_json("alb", "rotate", "--drain-seconds", "6", "--json")
    new = {n["Address"] for n in rotated["New"]}
    assert new and not new & old
    sources = iter(f"198.51.100.{i}" for i in range(140, 160))

    def request() -> dict:
        client = next(sources)
        result = exec_in("client", "curl", "-sS", "--max-time", "10", "--cacert", "/lab/certs/public-ca.pem",
                         "--interface", client, f"https://{SITE}/api/after-rotation")
        assert result.returncode == 0, result.stderr
        flows = [json.loads(line) for line in exec_in("nlb", "cat", "/var/log/lab/nlb/flows.log").stdout.splitlines()]
        opened = [f for f in flows if f["event"] == "open" and f["client"].startswith(client + ":")]
        return {"echo": json.loads(result.stdout), "target_addr": opened[-1]["target_addr"], "client": client}

    # New flows move to the new addresses within about a second (the NLB re-resolves the ALB's name).
    wait_for(lambda: request()["target_addr"].rpartition(":")[0] in new, "the NLB to send to the new ALB nodes",
             timeout=20, step=1)
    # The old nodes retire after their 6 s drain; traffic through the NLB keeps working after that.
    wait_for(lambda: {n["Address"] for n in lab_json("alb", "nodes", "--json")["Nodes"]} == new,
             "the old ALB nodes to retire", timeout=60, step=1)
    for _ in range(4):
        seen = request()
        assert seen["target_addr"].rpartition(":")[0] in new
        assert seen["echo"]["headers"]["x-forwarded-for"] == seen["client"]
    docs = lab_json("nlb", "describe-target-health", "--target-group", "alb-https", "--json")["alb-https"]
    assert {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in docs} == {"alb-a": "healthy", "alb-b": "healthy"}
