"""The ip-proxy-v2 topology: NLB ip targets + PROXY protocol v2, HAProxy `accept-proxy`."""

from __future__ import annotations

import pytest

from lab.load import load_topology
from tests.integration import chain_checks as checks

TOPOLOGY = "ip-proxy-v2"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("running_lab")]


def test_client_ip_reaches_the_echo_service():
    checks.check_client_ip_reaches_echo(TOPOLOGY)


def test_each_nlb_node_sends_to_its_own_az():
    checks.check_each_nlb_node_sends_to_its_own_az(TOPOLOGY)


def test_path_routing():
    checks.check_path_routing()


def test_http_redirects_to_https():
    checks.check_http_redirect()


def test_client_sees_the_public_ca_certificate():
    checks.check_client_sees_public_ca_certificate()


def test_haproxy_certificate_is_self_signed():
    checks.check_haproxy_certificate_is_self_signed(TOPOLOGY)


def test_trace_client_ip_travels_in_the_proxy_header():
    hops = checks.check_trace(TOPOLOGY)
    nlb, haproxy = hops[1], hops[2]
    private_ips = {str(n.private_ip) for n in load_topology(TOPOLOGY).nlb.nodes}
    # ip target: the TCP peer HAProxy sees is the NLB node's private address; the client's
    # address and port arrive in the PROXY v2 header.
    assert nlb["proxy_protocol_v2"] is True
    assert nlb["target_sees"].rpartition(":")[0] in private_ips
    assert haproxy["tcp_peer"].rpartition(":")[0] in private_ips
    assert haproxy["source_port"] == hops[0]["source_port"]
