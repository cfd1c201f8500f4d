"""HTTP/2 from a client to the ALB's HTTPS listener in the real lab (issue 4): curl (nghttp2) in
a VPC container (haproxy-a's, which reaches the ALB's node directly) speaks h2 to the ALB; the
echo service must see the HTTP/1.1 request the ALB made of it, and the access log must say `h2`.
(HAProxy itself talks HTTP/1.1 to the ALB, as its `server` lines set no ALPN, so h2 never crosses
the whole chain.)"""

from __future__ import annotations

import json
import time

import pytest

from lab.cli.trace import parse_alb_entry
from lab.load import load_topology
from tests.integration.conftest import exec_in, wait_for

TOPOLOGY = "default"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("running_lab")]
SITE = "www.lab.test"


def vpc_client_and_alb() -> tuple[str, str, str]:
    """(container, its VPC address, an ALB node address)."""
    topology = load_topology(TOPOLOGY)
    haproxy = topology.haproxy.instances[0]
    return haproxy.name, str(haproxy.address), str(topology.alb.nodes[0].address)


def curl(*args: str) -> tuple[int, str]:
    """curl in the VPC container against the ALB node; returns (exit code, stdout)."""
    container, _, alb = vpc_client_and_alb()
    result = exec_in(container, "curl", "-sS", "--cacert", "/lab/certs/public-ca.pem",
                     "--resolve", f"{SITE}:443:{alb}", "--resolve", f"{SITE}:80:{alb}", *args)
    return result.returncode, result.stdout


def alb_entries(marker: str) -> list[dict[str, str]]:
    def found() -> list[dict[str, str]]:
        out = exec_in("alb", "sh", "-c", "cat /var/log/lab/alb/*/access.log").stdout
        return [parse_alb_entry(line) for line in out.splitlines() if marker in line]
    return wait_for(found, f"ALB access-log entries for {marker}", timeout=10)


def test_h2_request_reaches_echo_as_http11_with_forwarded_headers():
    _, client_ip, _ = vpc_client_and_alb()
    marker = f"/api/h2-{time.monotonic_ns()}"
    code, out = curl("--http2", "-H", "X-Forwarded-For: 203.0.113.9", "-A", "lab-h2/1.0",
                     "-w", "\n%{http_version}", f"https://{SITE}{marker}?q=1")
    assert code == 0, out
    body, version = out.rsplit("\n", 1)
    assert version == "2"
    echo = json.loads(body)
    assert echo["service"] == "api" and echo["path"] == marker and echo["query"] == "q=1"
    assert echo["headers"]["x-forwarded-for"] == f"203.0.113.9, {client_ip}"
    assert echo["headers"]["x-forwarded-proto"] == "https" and echo["headers"]["x-forwarded-port"] == "443"
    assert echo["headers"]["host"] == SITE
    trace = echo["headers"]["x-amzn-trace-id"]
    assert trace.startswith("Root=1-")

    (entry,) = alb_entries(marker)
    assert entry["type"] == "h2"
    assert entry["request"] == f"GET https://{SITE}:443{marker}?q=1 HTTP/2.0"
    assert entry["client:port"].startswith(f"{client_ip}:")
    assert entry["elb_status_code"] == "200" == entry["target_status_code"]
    assert entry["user_agent"] == "lab-h2/1.0" and entry["trace_id"] == trace
    assert entry["matched_rule_priority"] == "10" and entry["actions_executed"] == "forward"
    assert entry["ssl_protocol"] == "TLSv1.2" and entry["domain_name"] == SITE


def test_parallel_requests_share_one_h2_connection():
    marker = f"/api/par-{time.monotonic_ns()}"
    urls = [f"https://{SITE}{marker}/{i}" for i in range(6)] + [f"https://{SITE}/index-{marker[5:]}"]
    code, out = curl("--http2", "--parallel", "--parallel-max", "10", "-o", "/dev/null", "-o", "/dev/null",
                     "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
                     "-w", "%{http_code} %{http_version}\n", *urls)
    assert code == 0, out
    assert sorted(out.split("\n")[:-1]) == ["200 2"] * 7
    entries = alb_entries(marker[5:])
    assert len(entries) == 7 and {e["type"] for e in entries} == {"h2"}
    assert len({e["client:port"] for e in entries}) == 1  # multiplexed on one connection
    assert sorted(e["target_group_arn"].split("/")[1] for e in entries) == ["api"] * 6 + ["frontend"]


def test_plain_http_listener_stays_http11():
    marker = f"/h2c-{time.monotonic_ns()}"
    # Upgrade: h2c is not honoured; the answer is HTTP/1.1 (the listener's redirect).
    code, out = curl("--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", f"http://{SITE}{marker}")
    assert (code, out) == (0, "301 1.1")
    # HTTP/2 with prior knowledge: the HTTP/1 listener answers 505 (an HTTP/1.1 response curl cannot read).
    code, _ = curl("--http2-prior-knowledge", f"http://{SITE}/h2c-prior")
    assert code != 0
    entries = wait_for(lambda: [e for e in alb_entries(marker)], "the h2c upgrade entry")
    assert entries[0]["type"] == "http" and entries[0]["request"].endswith(" HTTP/1.1")
