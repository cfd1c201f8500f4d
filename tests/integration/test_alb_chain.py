"""The ALB through the whole default chain (client -> NLB -> HAProxy -> ALB -> echo): X-Forwarded-For,
463, the access log, fail-open then 503, and node rotation under steady traffic."""

from __future__ import annotations

import json
import shlex
import subprocess
import time

import pytest

from lab.cli.demo import TRAFFIC  # steady traffic in the client container, as `lab demo alb-ip-change` sends
from lab.cli.trace import parse_alb_entry
from lab.load import load_topology
from services.alb_sim.access_log import FIELD_NAMES
from tests.integration.conftest import container_id, exec_in, lab, lab_json, wait_for

TOPOLOGY = "default"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("running_lab")]
SITE = "www.lab.test"
CLIENT = "198.51.100.100"

def alb_log_lines() -> list[str]:
    result = exec_in("alb", "sh", "-c", "cat /var/log/lab/alb/*/access.log")
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def curl_status(*args: str) -> tuple[int, str]:
    out = lab("curl", "-i", *args).stdout.replace("\r\n", "\n")
    head, _, body = out.partition("\n\n")
    return int(head.split("\n")[0].split()[1]), body


def health_states(group: str) -> dict[str, str]:
    doc = lab_json("alb", "target-health", group, "--json")
    return {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in doc["TargetHealthDescriptions"]}


def test_client_xff_is_appended_to_in_order():
    echo = json.loads(lab("curl", "-H", "X-Forwarded-For: 1.2.3.4", f"https://{SITE}/api/xff").stdout)
    haproxies = {str(h.address) for h in load_topology(TOPOLOGY).haproxy.instances}
    first, client, haproxy = [p.strip() for p in echo["headers"]["x-forwarded-for"].split(",")]
    assert (first, client) == ("1.2.3.4", CLIENT)
    assert haproxy in haproxies


def test_more_than_30_xff_addresses_get_463():
    # HAProxy appends the client, so 29 from the client arrive as 30 (allowed) and 30 as 31 (463).
    def addresses(n: int) -> str:
        return ", ".join(f"203.0.113.{i}" for i in range(1, n + 1))

    status, _ = curl_status("-H", f"X-Forwarded-For: {addresses(29)}", f"https://{SITE}/api/x")
    assert status == 200
    status, body = curl_status("-H", f"X-Forwarded-For: {addresses(30)}", f"https://{SITE}/api/x")
    assert status == 463
    entry = [parse_alb_entry(l) for l in alb_log_lines() if " 463 " in l][-1]
    assert entry["elb_status_code"] == "463" and entry["target:port"] == "-"


def test_the_alb_runs_the_compiled_build_of_the_source_it_mounts():
    """The image compiles the per-request modules (mypyc, services/native.py); the container runs
    that build only because it matches the source mounted at /opt/lab/services."""
    logs = subprocess.run(["docker", "logs", container_id("alb")], capture_output=True, text=True, timeout=30)
    startup = [json.loads(l) for l in logs.stdout.splitlines() if '"event": "startup"' in l]
    assert startup and startup[-1]["build"] == "compiled (/opt/native)", startup


def test_access_log_has_one_well_formed_entry_per_request():
    marker = f"/api/log-{time.monotonic_ns()}"
    for i in range(5):
        lab("curl", f"https://{SITE}{marker}?i={i}")
    lines = alb_log_lines()
    mine = [l for l in lines if marker in l]
    assert len(mine) == 5
    for line in mine:
        fields = shlex.split(line)
        assert len(fields) == len(FIELD_NAMES), line
        entry = dict(zip(FIELD_NAMES, fields))
        assert entry["type"] == "https" and entry["elb_status_code"] == "200" == entry["target_status_code"]
        assert entry["matched_rule_priority"] == "10" and entry["actions_executed"] == "forward"
        assert entry["request"].startswith(f"GET https://{SITE}:443{marker}?i=")
        assert entry["trace_id"].startswith("Root=1-")
    assert not [l for l in lines if "ELB-HealthChecker" in l]  # health checks are not access-logged


def test_stopped_target_group_fails_open_then_503_when_deregistered():
    topology = load_topology(TOPOLOGY)
    api = [w for w in topology.web if w.service == "api"]
    for w in api:
        subprocess.run(["docker", "stop", "-t", "1", container_id(w.name)], check=True, capture_output=True)
    try:
        wait_for(lambda: set(health_states("api").values()) == {"unhealthy"}, "both api targets unhealthy", timeout=60)
        # Fail open: with no healthy target the ALB still tries the registered ones (and they are down).
        status, _ = curl_status(f"https://{SITE}/api/failopen")
        assert status in (502, 504)
        entry = parse_alb_entry([l for l in alb_log_lines() if "/api/failopen" in l][-1])
        assert entry["target:port"] in {f"{w.address}:{w.port}" for w in api}
        lab("alb", "deregister", "api", *(f"{w.address}:{w.port}" for w in api))
        assert set(health_states("api").values()) == {"draining"}  # until deregistration_delay passes
        status, _ = curl_status(f"https://{SITE}/api/none")
        assert status == 503
        entry = parse_alb_entry([l for l in alb_log_lines() if "/api/none" in l][-1])
        assert entry["elb_status_code"] == "503" and entry["target:port"] == "-"
    finally:
        for w in api:
            subprocess.run(["docker", "start", container_id(w.name)], check=True, capture_output=True)
    lab("alb", "register", "api", *(f"{w.address}:{w.port}" for w in api))
    wait_for(lambda: set(health_states("api").values()) == {"healthy"}, "api targets healthy again", timeout=60)
    echo = json.loads(lab("curl", f"https://{SITE}/api/back").stdout)
    assert echo["service"] == "api"


def test_each_alb_node_reaches_targets_from_its_own_address():
    """AWS: the target's TCP peer is the private address of the ALB node that took the request."""
    addresses = {n["Name"]: n["Address"] for n in lab_json("alb", "nodes", "--json")["Nodes"]}
    seen: dict[str, set[str]] = {}
    for i in range(40):
        hops = {h["hop"]: h for h in lab_json("trace", "--json", "--from", f"198.51.100.{110 + i}",
                                               f"https://{SITE}/api/node-source")}
        assert hops["alb"]["node"] in addresses, hops["alb"]
        seen.setdefault(hops["alb"]["node"], set()).add(hops["web"]["source_ip"])
        if len(seen) == len(addresses):
            break
    assert set(seen) == set(addresses), f"not every ALB node took a request: {seen}"
    assert seen == {name: {address} for name, address in addresses.items()}


def test_rotation_under_steady_traffic_loses_no_request():
    before = lab_json("alb", "nodes", "--json")
    old = {n["Address"] for n in before["Nodes"]}
    traffic = subprocess.Popen(
        ["docker", "exec", container_id("client"), "python3", "-c", TRAFFIC, "25"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        rotated = lab_json("alb", "rotate", "--drain-seconds", "8", "--json")
        rotate_time = time.time()
        new = {n["Address"] for n in rotated["New"]}
        assert len(new) == len(old) and not new & old
        record = json.loads(exec_in("dns", "python3", "-c", (
            "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
            "'http://10.20.0.2:8053/records/alb.lab.internal').read().decode())")).stdout)
        assert {v for r in record["records"] for v in r["values"]} == new
        out, err = traffic.communicate(timeout=120)
    finally:
        traffic.kill()
    assert traffic.returncode == 0, err
    results = json.loads(out)
    failed = [r for r in results if r[1] != 200]
    assert not failed, failed[:5]
    assert len(results) > 100
    # Target connections come from a node address; well after the drain only new nodes are left.
    late = [r for r in results if r[0] > rotate_time + 10]
    assert late and {r[2] for r in late} <= new
    after = lab_json("alb", "nodes", "--json")
    assert {n["Address"] for n in after["Nodes"]} == new
    assert all(n["State"] == "active" for n in after["Nodes"])
    # HAProxy followed the DNS change: the new nodes logged requests from HAProxy.
    haproxies = {str(h.address) for h in load_topology(TOPOLOGY).haproxy.instances}
    for node in after["Nodes"]:
        text = exec_in("alb", "cat", f"/var/log/lab/alb/{node['Name']}/access.log").stdout
        entries = [parse_alb_entry(l) for l in text.splitlines() if "/api/steady" in l]
        assert entries, node
        assert {e["client:port"].rsplit(":", 1)[0] for e in entries} <= haproxies
    # And the chain still works through the new addresses.
    echo = json.loads(lab("curl", f"https://{SITE}/api/after").stdout)
    assert echo["peer"]["ip"] in new
