"""NLB run-time behaviour on the running lab (topology nlb-ops: short TTL, drain and idle timeout).

Each test drives the lab through `lab nlb ...` / `lab curl` / real sockets from the client container
and asserts on what the client, DNS and the NLB's own API report. Tests run in file order and
leave the lab as they found it (targets registered and healthy).
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from lab.load import load_topology
from tests.integration.conftest import container_id, exec_in, lab, lab_json, wait_for

TOPOLOGY = "nlb-ops"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("running_lab")]

SITE = "www.lab.test"
EIP_A, EIP_B = "198.51.100.10", "198.51.100.11"

# In the client container: open a TCP connection to EIP:80, send ``first`` bytes, wait ``pause``
# seconds, send ``second`` and report what came back: {"reply": "..."} or {"error": "ECONNRESET"}.
HOLD = r"""
import json, socket, sys, time
eip, first, pause, second, src = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
s = socket.socket(); s.bind((src, 0)); s.settimeout(30); s.connect((eip, 80))
print(json.dumps({"event": "connected", "local": "%s:%d" % s.getsockname()}), flush=True)
if first: s.sendall(first.encode().decode("unicode_escape").encode())
time.sleep(pause)
try:
    s.sendall(second.encode().decode("unicode_escape").encode())
    data = s.recv(4096)
    out = {"reply": data.decode(errors="replace")}
except ConnectionResetError:
    out = {"error": "ECONNRESET"}
except BrokenPipeError:
    out = {"error": "EPIPE"}
print(json.dumps(out), flush=True)
"""
REQUEST_HEAD = r"GET /x HTTP/1.1\r\nHost: www.lab.test\r\n"
REQUEST_END = r"\r\n"


# Like HOLD, but the second part is sent when the test writes a line to the script's stdin.
GATED = r"""
import json, socket, sys
eip, first, second, src = sys.argv[1:5]
s = socket.socket(); s.bind((src, 0)); s.settimeout(60); s.connect((eip, 80))
print(json.dumps({"event": "connected", "local": "%s:%d" % s.getsockname()}), flush=True)
s.sendall(first.encode().decode("unicode_escape").encode())
sys.stdin.readline()
try:
    s.sendall(second.encode().decode("unicode_escape").encode())
    out = {"reply": s.recv(4096).decode(errors="replace")}
except ConnectionResetError:
    out = {"error": "ECONNRESET"}
except BrokenPipeError:
    out = {"error": "EPIPE"}
print(json.dumps(out), flush=True)
"""
# Open COUNT connections to EIP:80 from each SOURCE, one request each; print their local ip:port.
CONNECT_MANY = r"""
import json, socket, sys
eip, count, sources = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
out = []
for src in sources:
    for _ in range(count):
        s = socket.create_connection((eip, 80), timeout=10, source_address=(src, 0))
        out.append("%s:%d" % s.getsockname())
        s.sendall(b"GET /x HTTP/1.1\r\nHost: www.lab.test\r\nConnection: close\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 301"), out[-1]
        s.close()
print(json.dumps(out))
"""


def health(tg: str) -> dict[str, dict]:
    docs = lab_json("nlb", "describe-target-health", "--target-group", tg, "--json")[tg]
    return {d["Target"]["Id"]: d["TargetHealth"] for d in docs}


def resolve(name: str) -> list[str]:
    script = "import socket,sys; print(' '.join(sorted(socket.gethostbyname_ex(sys.argv[1])[2])))"
    result = exec_in("client", "python3", "-c", script, name)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def all_healthy() -> bool:
    return all(h["State"] == "healthy" for tg in ("haproxy-http", "haproxy-https") for h in health(tg).values()) \
        and len(health("haproxy-http")) == 2


def start_hold(eip: str, first: str, pause: float, second: str, src: str = "198.51.100.170") -> subprocess.Popen:
    cid = container_id("client")
    proc = subprocess.Popen(["docker", "exec", cid, "python3", "-c", HOLD, eip, first, str(pause), second, src],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert json.loads(line)["event"] == "connected", (line, proc.stderr.read())
    return proc


def finish_hold(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


class TestNlbOperations:
    def test_describe_target_health_in_aws_terms(self):
        wait_for(all_healthy, "every target healthy")
        out = lab("nlb", "describe-target-health").stdout
        assert "haproxy-http" in out and "haproxy-a" in out and "healthy" in out

    def test_attribute_validation_uses_aws_wording(self):
        bad = lab("nlb", "modify-target-group-attributes", "--target-group", "haproxy-http", "foo.bar=1", check=False)
        assert bad.returncode == 1
        assert "ValidationError: Target group attribute key 'foo.bar' is not recognized" in bad.stderr
        bad = lab("nlb", "modify-target-group-attributes", "--target-group", "haproxy-http",
                  "deregistration_delay.timeout_seconds=4000", check=False)
        assert ("Target group attribute 'deregistration_delay.timeout_seconds' value '4000' is not valid: "
                "must be an integer from 0 to 3600") in bad.stderr
        bad = lab("nlb", "modify-listener-attributes", "--listener", "443", "tcp.idle_timeout.seconds=100", check=False)
        assert "only supported on TCP listeners, not TLS" in bad.stderr
        assert "listener 443 has no attributes" in lab("nlb", "describe-attributes", "--listener", "443").stdout

    def test_attributes_change_live(self):
        out = lab("nlb", "modify-target-group-attributes", "--target-group", "haproxy-https",
                  "deregistration_delay.timeout_seconds=30").stdout
        assert "deregistration_delay.timeout_seconds = 30" in out
        shown = lab("nlb", "describe-attributes", "--target-group", "haproxy-https").stdout
        assert "deregistration_delay.timeout_seconds = 30" in shown
        assert out == shown  # the whole set, defaults included, like AWS's answer
        assert "tcp.idle_timeout.seconds = 15" in lab("nlb", "describe-attributes", "--listener", "80").stdout

    def test_idle_flow_past_the_timeout_gets_a_reset(self):
        # tcp.idle_timeout.seconds is 15 on TCP:80; HAProxy's client timeout is 60 s, so only the
        # NLB can end this flow. A flow idle for less than the timeout is served normally.
        busy = start_hold(EIP_A, REQUEST_HEAD, 8, REQUEST_END, src="198.51.100.171")
        assert "301" in finish_hold(busy)["reply"].splitlines()[0]
        started = time.monotonic()
        proc = start_hold(EIP_A, REQUEST_HEAD, 20, REQUEST_END, src="198.51.100.172")
        result = finish_hold(proc)
        assert result == {"error": "ECONNRESET"}, result
        assert time.monotonic() - started >= 15
        log = exec_in("nlb", "cat", "/var/log/lab/nlb/flows.log").stdout.splitlines()
        ends = [json.loads(line) for line in log if '"198.51.100.172:' in line and '"close"' in line]
        assert ends and ends[-1]["end"] == "idle timeout", ends[-1:]

    def test_deregistration_drains_then_terminates(self):
        # The doomed flow must still be waiting when the 10 s drain ends, however long the
        # deregister call below takes on a busy machine: with the listener's 15 s idle timeout it
        # had only 4 s to spare, so the timeout goes to 60 s for this test (new flows take it).
        lab("nlb", "modify-listener-attributes", "--listener", "80", "tcp.idle_timeout.seconds=60")
        try:
            self._drain_then_terminate()
        finally:
            lab("nlb", "modify-listener-attributes", "--listener", "80", "tcp.idle_timeout.seconds=15")

    def _drain_then_terminate(self):
        held = start_hold(EIP_A, REQUEST_HEAD, 4, REQUEST_END, src="198.51.100.173")  # finishes during drain
        # Outlives the 10 s drain (and the deregister call), but speaks before HAProxy's 60 s client timeout.
        doomed = start_hold(EIP_A, REQUEST_HEAD, 25, REQUEST_END, src="198.51.100.174")
        t0 = time.monotonic()
        lab("nlb", "deregister-targets", "--target-group", "haproxy-http", "haproxy-a")
        state = health("haproxy-http")["haproxy-a"]
        assert state == {"State": "draining", "Reason": "Target.DeregistrationInProgress",
                         "Description": "Target deregistration is in progress"}
        # An open flow keeps working while its target drains.
        assert "301" in finish_hold(held)["reply"].splitlines()[0]
        # AZ a has no target left for TCP:80 (cross-zone off): its Elastic IP leaves DNS.
        wait_for(lambda: resolve(SITE) == [EIP_B], "AZ a to leave DNS", timeout=20)
        # connection_termination.enabled=true: after the 10 s delay the flow gets a RST.
        assert finish_hold(doomed)["error"] in ("ECONNRESET", "EPIPE")
        assert time.monotonic() - t0 >= 10
        log = exec_in("nlb", "cat", "/var/log/lab/nlb/flows.log").stdout.splitlines()
        ends = [json.loads(line) for line in log if '"198.51.100.174:' in line and '"close"' in line]
        assert ends and ends[-1]["end"] == "rst by nlb: target haproxy-a", ends[-1:]
        wait_for(lambda: "haproxy-a" not in health("haproxy-http"), "haproxy-a to be forgotten (unused)")
        lab("nlb", "register-targets", "--target-group", "haproxy-http", "haproxy-a")
        assert health("haproxy-http")["haproxy-a"]["State"] in ("initial", "healthy")
        wait_for(all_healthy, "haproxy-a healthy again after registering")
        wait_for(lambda: resolve(SITE) == [EIP_A, EIP_B], "AZ a back in DNS", timeout=20)

    def test_killed_haproxy_goes_unhealthy_and_traffic_moves_to_b(self):
        topology = load_topology(TOPOLOGY)
        hc = topology.nlb.target_group("haproxy-https").health_check
        haproxy_b = next(str(h.address) for h in topology.haproxy.instances if h.name == "haproxy-b")
        cid = container_id("haproxy-a")
        subprocess.run(["docker", "kill", cid], check=True, capture_output=True)
        t0 = time.monotonic()
        try:
            state = wait_for(lambda: (h := health("haproxy-https")["haproxy-a"])["State"] == "unhealthy" and h,
                             "haproxy-a unhealthy", timeout=90)
            assert state["Reason"] == "Target.FailedHealthChecks"
            # The first failure can come right after the kill; the threshold needs the rest.
            assert time.monotonic() - t0 >= (hc.unhealthy_threshold - 1) * hc.interval_seconds - 1
            assert health("haproxy-https")["haproxy-b"]["State"] == "healthy"
            wait_for(lambda: resolve(SITE) == [EIP_B], "AZ a to leave DNS", timeout=20)
            for client in ("198.51.100.180", "198.51.100.181", "198.51.100.182"):
                echo = json.loads(lab("curl", "--from", client, f"https://{SITE}/api/after-kill").stdout)
                assert echo["headers"]["x-forwarded-for"] == f"{client}, {haproxy_b}"
            metrics = lab("nlb", "metrics").stdout
            assert 'aws_networkelb_UnHealthyHostCount{LoadBalancer="static-ingress",TargetGroup="haproxy-https",' \
                   'AvailabilityZone="a"} 1' in metrics
        finally:
            subprocess.run(["docker", "start", cid], check=True, capture_output=True)
        wait_for(all_healthy, "haproxy-a healthy after restart", timeout=120)
        wait_for(lambda: resolve(SITE) == [EIP_A, EIP_B], "AZ a back in DNS", timeout=20)

    def test_modify_target_group_health_check_live(self):
        # HAProxy's port 80 answers every path with a 301 (redirect to https): an HTTP check passes
        # with the default matcher 200-399, and fails with Matcher 200.
        script = ("import socket,sys; s=socket.create_connection((sys.argv[1],80),timeout=10);"
                  "s.sendall(b'GET /nonexistent HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n');"
                  "print(s.recv(4096).split(b'\\r\\n')[0].decode())")
        answer = exec_in("client", "python3", "-c", script, EIP_A)
        assert answer.stdout.startswith("HTTP/1.1 301 "), answer
        wait_for(all_healthy, "every target healthy")
        bad = lab("nlb", "modify-target-group", "--target-group", "haproxy-http", "HealthCheckPath=/x", check=False)
        assert bad.returncode == 1 and bad.stderr.strip() == (
            "lab nlb: error: ValidationError: Health check path cannot be set when the health check protocol is TCP")
        bad = lab("nlb", "modify-target-group", "--target-group", "haproxy-http", "HealthyThresholdCount=11",
                  check=False)
        assert bad.stderr.strip() == (
            "lab nlb: error: ValidationError: 1 validation error detected: Value '11' at 'healthyThresholdCount'"
            " failed to satisfy constraint: Member must have value less than or equal to 10")
        try:
            out = lab("nlb", "modify-target-group", "--target-group", "haproxy-http", "HealthCheckProtocol=HTTP",
                      "HealthCheckPath=/nonexistent", "Matcher=200").stdout
            assert {"HealthCheckProtocol = HTTP", "HealthCheckPath = /nonexistent", "Matcher = 200",
                    "HealthCheckIntervalSeconds = 5", "UnhealthyThresholdCount = 2"} <= set(out.splitlines())
            states = wait_for(lambda: (h := health("haproxy-http")) and all(
                x["State"] == "unhealthy" for x in h.values()) and h, "haproxy-http targets unhealthy", timeout=60)
            assert {x["Reason"] for x in states.values()} == {"Target.FailedHealthChecks"}
            assert all(x["State"] == "healthy" for x in health("haproxy-https").values())
        finally:
            lab("nlb", "modify-target-group", "--target-group", "haproxy-http", "HealthCheckPath=/",
                "Matcher=200-399")
            out = lab("nlb", "modify-target-group", "--target-group", "haproxy-http", "HealthCheckProtocol=TCP").stdout
        assert "HealthCheckProtocol = TCP" in out and "HealthCheckPath" not in out
        wait_for(all_healthy, "haproxy-http healthy again on TCP checks", timeout=60)

    def test_status_shows_the_api_changes(self):
        out = lab("status").stdout
        assert out.count(" healthy ") >= 8


def flow_log() -> list[dict]:
    return [json.loads(line) for line in exec_in("nlb", "cat", "/var/log/lab/nlb/flows.log").stdout.splitlines()]


def flows(event: str) -> list[dict]:
    return [f for f in flow_log() if f["event"] == event]


def targets_by_source(eip: str, count: int, sources: list[str]) -> dict[str, set[str]]:
    """Which targets the flows from each source address went to (the NLB's flow log). Only the log
    lines written after the connections start count: the kernel may give a source port again, so an
    earlier flow from the same ip:port must not be taken for one of these."""
    before = len(flow_log())
    result = exec_in("client", "python3", "-c", CONNECT_MANY, eip, str(count), *sources)
    assert result.returncode == 0, result.stderr
    connected = json.loads(result.stdout)
    mine = set(connected)
    out: dict[str, set[str]] = {src: set() for src in sources}
    opened = wait_for(lambda: (new := [f for f in flow_log()[before:] if f["event"] == "open" and f["client"] in mine])
                      and len(new) >= len(connected) and new, "a flow-log open line per connection", timeout=10)
    assert len(opened) == len(connected), (len(opened), len(connected))
    for f in opened:
        out[f["client"].rpartition(":")[0]].add(f["target"])
    return out


def set_cross_zone(on: bool) -> None:
    lab("nlb", "modify-load-balancer-attributes", f"load_balancing.cross_zone.enabled={str(on).lower()}")


def start_gated(eip: str, src: str) -> subprocess.Popen:
    proc = subprocess.Popen(["docker", "exec", "-i", container_id("client"), "python3", "-c", GATED, eip,
                             REQUEST_HEAD, REQUEST_END, src],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert json.loads(line)["event"] == "connected", (line, proc.stderr.read())
    proc.local = json.loads(line)["local"]  # type: ignore[attr-defined]
    return proc


def release_gated(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate("go\n", timeout=90)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


BLOCK_CHECKS = ("nft add table ip labtest && nft add chain ip labtest input '{ type filter hook input priority 0; }'"
                " && nft add rule ip labtest input ip saddr '{ 10.20.1.10, 10.20.2.10 }' tcp dport 80 drop")


class TestNlbTargetChoice:
    """Cross-zone on/off, source_ip stickiness and what happens to the flows of a target that turns
    unhealthy (target_health_state.unhealthy.connection_termination.enabled), on the running lab."""

    def test_cross_zone_off_keeps_each_node_in_its_zone_on_spreads_over_both(self):
        wait_for(all_healthy, "every target healthy")
        assert targets_by_source(EIP_A, 6, ["198.51.100.190"]) == {"198.51.100.190": {"haproxy-a"}}
        assert targets_by_source(EIP_B, 6, ["198.51.100.190"]) == {"198.51.100.190": {"haproxy-b"}}
        set_cross_zone(True)
        try:
            # Flow hashing with a per-connection sequence number: 24 flows through node a reach both AZs
            # (all on one target: 1 run in 2^23).
            assert targets_by_source(EIP_A, 24, ["198.51.100.191"]) == {"198.51.100.191": {"haproxy-a", "haproxy-b"}}
        finally:
            set_cross_zone(False)
        assert targets_by_source(EIP_A, 6, ["198.51.100.192"]) == {"198.51.100.192": {"haproxy-a"}}

    def test_source_ip_stickiness_pins_each_client_address_to_one_target(self):
        set_cross_zone(True)  # both targets are candidates for node a
        lab("nlb", "modify-target-group-attributes", "--target-group", "haproxy-http", "stickiness.enabled=true",
            "stickiness.type=source_ip")
        try:
            sources = [f"198.51.100.{i}" for i in range(193, 199)]
            seen = targets_by_source(EIP_A, 4, sources)
            assert all(len(targets) == 1 for targets in seen.values()), seen  # 4 flows, one target per address
            assert set().union(*seen.values()) == {"haproxy-a", "haproxy-b"}, seen  # addresses still spread
        finally:
            lab("nlb", "modify-target-group-attributes", "--target-group", "haproxy-http", "stickiness.enabled=false")
            set_cross_zone(False)

    def _held_flow_when_target_turns_unhealthy(self, src: str) -> dict:
        """A flow through node a to haproxy-a stays open while haproxy-a fails its health checks on
        port 80 (nft drops the checks from the NLB's private addresses; the client's flow, from its
        own address, is untouched). Cross-zone on, so node a is not failing open. Returns what the
        client gets when it finally sends the rest of its request."""
        lab("nlb", "modify-listener-attributes", "--listener", "80", "tcp.idle_timeout.seconds=300")
        held = start_gated(EIP_A, src)
        blocked = False
        try:
            opened = wait_for(lambda: [f for f in flows("open") if f["client"] == held.local],  # type: ignore[attr-defined]
                              "the held flow's open record", timeout=10)
            assert opened[-1]["target"] == "haproxy-a", opened
            set_cross_zone(True)
            block = exec_in("haproxy-a", "sh", "-c", BLOCK_CHECKS)
            assert block.returncode == 0, block.stderr
            blocked = True
            wait_for(lambda: health("haproxy-http")["haproxy-a"]["State"] == "unhealthy",
                     "haproxy-a unhealthy on port 80", timeout=90)
            assert health("haproxy-https")["haproxy-a"]["State"] == "healthy"  # port 443 checks still pass
            return release_gated(held)
        finally:
            if held.returncode is None:
                held.kill()
            if blocked:
                exec_in("haproxy-a", "nft", "delete", "table", "ip", "labtest")
            set_cross_zone(False)
            lab("nlb", "modify-listener-attributes", "--listener", "80", "tcp.idle_timeout.seconds=15")
            wait_for(all_healthy, "haproxy-a healthy again", timeout=90)

    def test_flows_of_a_target_that_turns_unhealthy_are_reset(self):
        # AWS default: target_health_state.unhealthy.connection_termination.enabled=true
        result = self._held_flow_when_target_turns_unhealthy("198.51.100.176")
        assert result["error"] in ("ECONNRESET", "EPIPE"), result
        closed = [f for f in flows("close") if f["client"].startswith("198.51.100.176:")]
        assert closed and closed[-1]["end"] == "rst by nlb: target haproxy-a", closed[-1:]

    def test_flows_of_an_unhealthy_target_continue_when_termination_is_disabled(self):
        lab("nlb", "modify-target-group-attributes", "--target-group", "haproxy-http",
            "target_health_state.unhealthy.connection_termination.enabled=false")
        try:
            result = self._held_flow_when_target_turns_unhealthy("198.51.100.177")
        finally:
            lab("nlb", "modify-target-group-attributes", "--target-group", "haproxy-http",
                "target_health_state.unhealthy.connection_termination.enabled=true")
        assert result.get("reply", "").startswith("HTTP/1.1 301"), result  # haproxy-a still answers it
