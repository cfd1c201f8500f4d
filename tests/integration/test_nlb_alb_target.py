"""Target-type matrix, `alb` row (topology nlb-alb): the NLB's TCP listeners forward to the ALB
(AWS `alb` target type). The client IP is preserved to the ALB, which appends it to
X-Forwarded-For (aws-elb.md sections 2 and 7); the ALB terminates TLS with the site certificate."""

from __future__ import annotations

import json

import pytest

from lab.load import load_topology
from tests.integration.conftest import exec_in, lab, lab_json

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
