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

    def test_attributes_change_live(self):
        out = lab("nlb", "modify-target-group-attributes", "--target-group", "haproxy-https",
                  "deregistration_delay.timeout_seconds=30").stdout
        assert "deregistration_delay.timeout_seconds = 30" in out
        shown = lab("nlb", "describe-attributes", "--target-group", "haproxy-https").stdout
        assert "deregistration_delay.timeout_seconds = 30" in shown
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
        held = start_hold(EIP_A, REQUEST_HEAD, 4, REQUEST_END, src="198.51.100.173")  # finishes during drain
        # Outlives the 10 s drain, but speaks before its 15 s idle timeout would end it.
        doomed = start_hold(EIP_A, REQUEST_HEAD, 14, REQUEST_END, src="198.51.100.174")
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

    def test_status_shows_the_api_changes(self):
        out = lab("status").stdout
        assert out.count(" healthy ") >= 8
