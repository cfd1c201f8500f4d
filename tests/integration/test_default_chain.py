"""The default topology: NLB instance targets, client IP preserved at the TCP level."""

from __future__ import annotations

import pytest

from tests.integration import chain_checks as checks

TOPOLOGY = "default"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("running_lab")]


def test_up_prints_how_to_use_it(running_lab):
    assert "The chain is up (topology default" in running_lab
    assert "lab curl --from 198.51.100.123 https://www.lab.test/api/hello" in running_lab


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


def test_trace_shows_the_client_ip_at_every_hop():
    hops = checks.check_trace(TOPOLOGY)
    nlb, haproxy = hops[1], hops[2]
    # instance target: the target sees the client's own address and port; no PROXY header.
    assert nlb["target_sees"] == f"{hops[0]['source_ip']}:{hops[0]['source_port']}"
    assert nlb["proxy_protocol_v2"] is False
    assert haproxy["tcp_peer"] == f"{hops[0]['source_ip']}:{hops[0]['source_port']}"


def test_status_reports_target_health_in_aws_terms():
    from tests.integration.conftest import lab

    out = lab("status").stdout
    assert "haproxy-https" in out and "web-api-a" in out
    assert out.count("healthy") >= 8
