"""Target-type matrix, `ip` row (topology nlb-ip): ip targets on TCP/TLS target groups do not preserve
the client IP (AWS default) and no PROXY header is sent, so HAProxy's TCP peer -- and therefore the
first X-Forwarded-For entry -- is the NLB node's private address (aws-elb.md section 2).
The other rows: instance -> test_default_chain, ip + PROXY v2 -> test_ip_proxy_v2_chain, alb -> test_nlb_alb_target."""

from __future__ import annotations

import json

import pytest

from lab.load import load_topology
from tests.integration.conftest import exec_in, lab_json

TOPOLOGY = "nlb-ip"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("running_lab")]
SITE = "www.lab.test"


def test_haproxy_sees_the_nlb_node_not_the_client():
    topology = load_topology(TOPOLOGY)
    haproxy = {h.az: str(h.address) for h in topology.haproxy.instances}
    assert not topology.haproxy.accept_proxy and not topology.haproxy.route_internet_via_nlb
    for node in topology.nlb.nodes:
        result = exec_in("client", "curl", "-sS", "--cacert", "/lab/certs/public-ca.pem", "--interface", "198.51.100.161",
                         "--resolve", f"{SITE}:443:{node.elastic_ip}", f"https://{SITE}/api/ip-target")
        assert result.returncode == 0, result.stderr
        xff = json.loads(result.stdout)["headers"]["x-forwarded-for"]
        assert xff == f"{node.private_ip}, {haproxy[node.az]}", (node.name, xff)


def test_trace_shows_the_node_address_at_haproxy():
    hops = {h["hop"]: h for h in lab_json("trace", "--json", "--from", "198.51.100.162", f"https://{SITE}/api/t")}
    private_ips = {str(n.private_ip) for n in load_topology(TOPOLOGY).nlb.nodes}
    assert hops["nlb"]["proxy_protocol_v2"] is False
    assert hops["nlb"]["target_sees"].rpartition(":")[0] in private_ips
    assert hops["haproxy"]["tcp_peer"].rpartition(":")[0] in private_ips
