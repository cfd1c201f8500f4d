"""The ip-proxy-v2 topology: NLB ip targets + PROXY protocol v2, HAProxy `accept-proxy`."""

from __future__ import annotations

import pytest

from lab.load import load_topology
from tests.integration import chain_checks as checks

TOPOLOGY = "ip-proxy-v2"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("running_lab")]


class TestIpProxyV2Chain(checks.ChainSuite):
    TOPOLOGY = TOPOLOGY

    def test_trace_client_ip_travels_in_the_proxy_header(self):
        hops = checks.check_trace(TOPOLOGY)
        client, nlb, haproxy = hops[0], hops[1], hops[2]
        private_ips = {str(n.private_ip) for n in load_topology(TOPOLOGY).nlb.nodes}
        # ip target: the TCP peer HAProxy sees is the NLB node's private address; the client's
        # address and port arrive in the PROXY v2 header.
        assert nlb["proxy_protocol_v2"] is True
        assert nlb["target_sees"].rpartition(":")[0] in private_ips
        assert haproxy["tcp_peer"].rpartition(":")[0] in private_ips
        assert haproxy["source_port"] == client["source_port"]
