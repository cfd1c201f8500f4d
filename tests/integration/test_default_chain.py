"""The default topology: NLB instance targets, client IP preserved at the TCP level."""

from __future__ import annotations

import pytest

from tests.integration import chain_checks as checks
from tests.integration.conftest import lab

TOPOLOGY = "default"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("running_lab")]


class TestDefaultChain(checks.ChainSuite):
    TOPOLOGY = TOPOLOGY

    def test_up_prints_how_to_use_it(self, running_lab):
        assert "The chain is up (topology default" in running_lab
        assert "lab curl --from 198.51.100.123 https://www.lab.test/api/hello" in running_lab

    def test_trace_shows_the_client_ip_at_every_hop(self):
        hops = checks.check_trace(TOPOLOGY)
        client, nlb, haproxy = hops[0], hops[1], hops[2]
        # instance target: the target sees the client's own address and port; no PROXY header.
        assert nlb["target_sees"] == f"{client['source_ip']}:{client['source_port']}"
        assert nlb["proxy_protocol_v2"] is False
        assert haproxy["tcp_peer"] == f"{client['source_ip']}:{client['source_port']}"

    def test_status_reports_target_health_in_aws_terms(self):
        out = lab("status").stdout
        assert "haproxy-https" in out and "10.20.1.41" in out
        assert out.count(" healthy ") >= 8
