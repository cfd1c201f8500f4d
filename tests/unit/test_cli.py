"""The lab CLI's errors: one clear line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.errors import LabError

ROOT = Path(__file__).resolve().parents[2]


def lab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=None if env is None else {**os.environ, **env})


def usage_error(result: subprocess.CompletedProcess) -> str:
    """argparse's error line (after its usage lines): exit 2, no traceback."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_unknown_topology():
    result = lab("render", "--topology", "nope")
    assert result.returncode == 2
    assert one_line_error(result) == (
        "lab render: error: unknown topology 'nope' (known: alb-rules, default, haproxy-resolve-once, ip-proxy-v2, nlb-alb, nlb-ip, nlb-ops, sni; or give a path to a .yaml file)")


def test_bad_key_in_topology_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (ROOT / "topologies" / "default.yaml").read_text().replace("  alb_servers: 4", "  alb_server: 4")
    bad.write_text(text)
    result = lab("render", "--topology", str(bad))
    assert one_line_error(result) == (
        f"lab render: error: haproxy.alb_server: unknown key (allowed here: instances, alb_servers, verify, "
        f"accept_proxy, resolve) in {bad}")


def test_missing_topology_file(tmp_path):
    result = lab("up", "--topology", str(tmp_path / "none.yaml"))
    assert one_line_error(result) == f"lab up: error: topology file {tmp_path / 'none.yaml'} does not exist"


@pytest.mark.parametrize("source, message", [
    ("1.2.3.4", "--from 1.2.3.4 is outside the client's source range 198.51.100.100-198.51.100.199"),
    ("banana", "--from 'banana' is not an IPv4 address"),
])
def test_curl_source_outside_the_client_range(source, message):
    result = lab("curl", "--from", source, "https://www.lab.test/")
    assert one_line_error(result) == f"lab curl: error: {message}"


def test_curl_bad_url_and_header():
    assert one_line_error(lab("curl", "www.lab.test")) == (
        "lab curl: error: URL 'www.lab.test' must start with http:// or https://")
    assert one_line_error(lab("curl", "-H", "NoColon", "https://www.lab.test/")) == (
        "lab curl: error: -H 'NoColon' is not of the form 'Name: value'")


def test_unknown_verb_is_a_usage_error():
    result = lab("explode")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "invalid choice: 'explode'" in result.stderr


def test_trace_through_an_alb_target_group_has_no_haproxy_hop(monkeypatch):
    """sni's TCP:8443 (and nlb-alb) send flows from the NLB straight to the ALB: `lab trace` must not
    wait for a HAProxy log line that cannot exist, report it missing, or exit 1."""
    import json
    import time

    from lab.cli import trace
    from lab.load import load_topology

    topology = load_topology("sni")
    echo = {"node": "web-api-a", "service": "api", "peer": {"ip": "10.20.1.30", "port": 36441}, "path": "/api/x",
            "headers": {"x-forwarded-for": "198.51.100.150", "x-amzn-trace-id": "Root=1-6b0dc8af-23824e3300cd7bab943791d5"}}
    out = json.dumps(echo) + f"\n{trace.MARK} 198.51.100.150 34696 198.51.100.10 8443 200"
    monkeypatch.setattr(trace, "exec_in", lambda *a, **k: (0, out.encode(), b""))
    monkeypatch.setattr(trace, "_find_flow", lambda client, addr: {
        "node": "nlb-a", "listener": "TCP:8443", "client": addr, "target": "alb-a", "target_addr": "10.20.1.30:443",
        "source_seen_by_target": addr, "proxy_protocol_v2": False})
    monkeypatch.setattr(trace, "_find_haproxy", lambda *a: None)
    monkeypatch.setattr(trace, "_find_alb", lambda client, amzn: ("alb-a", {
        "client:port": "198.51.100.150:34696", "matched_rule_priority": "10", "target:port": "10.20.1.41:8443",
        "elb_status_code": "200", "trace_id": amzn}))
    started = time.monotonic()
    hops = trace.collect(None, topology, "198.51.100.150", "https://www.lab.test:8443/api/x")
    assert time.monotonic() - started < 2
    assert [h["hop"] for h in hops] == ["client", "nlb", "haproxy", "alb", "web"]
    assert not any("missing" in h for h in hops)
    assert hops[2]["skipped"] == "not on this path: the NLB's TCP:8443 forwards to the alb target group alb-https"
    assert "haproxy  -               (not on this path" in trace.render_text(hops)


def test_alb_rules_file_that_is_not_yaml_is_one_clean_line(tmp_path):
    broken = tmp_path / "rules.yaml"
    broken.write_text("- priority: [10\n")
    result = lab("alb", "rules", "443", "--set", str(broken))
    assert one_line_error(result) == (
        f"lab alb: error: {broken}: not valid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'")
    result = lab("alb", "rules", "443", "--set", str(tmp_path / "none.yaml"))
    assert one_line_error(result) == f"lab alb: error: cannot read rules from {tmp_path / 'none.yaml'}: No such file or directory"


def test_alb_rules_json_output_can_be_set_back(tmp_path):
    """`lab alb rules 443 --json > f; lab alb rules 443 --set f` was refused ('rules: expected a list')."""
    from lab.cli.alb import read_rules

    rule = {"priority": 10, "conditions": [{"field": "path-pattern", "values": ["/api/*"], "header_name": None}],
            "actions": [{"target_groups": [{"name": "api", "weight": 1}], "type": "forward", "stickiness_seconds": 0}],
            "IsDefault": False}
    default = {"priority": "default", "actions": [{"type": "forward", "target_groups": [{"name": "frontend", "weight": 1}]}],
               "IsDefault": True}
    saved = tmp_path / "rules.json"
    saved.write_text(json.dumps({"Rules": [rule, default]}))
    assert read_rules(saved) == [rule]
    plain = tmp_path / "plain.yaml"
    plain.write_text("- {priority: 5, conditions: [{field: path-pattern, values: [/x]}], actions: [{type: forward, target_group: api}]}\n")
    assert read_rules(plain) == [{"priority": 5, "conditions": [{"field": "path-pattern", "values": ["/x"]}],
                                  "actions": [{"type": "forward", "target_group": "api"}]}]


def test_a_variant_without_a_name_does_not_overwrite_the_committed_compose_file(tmp_path):
    """`extends: default.yaml` inherits `name: default`; `lab render`/`lab up` of such a file wrote the
    committed compose.yaml (then out of sync with topologies/default.yaml)."""
    from lab.load import load_topology
    from lab.render import ROOT, STATE_DIR, compose_path

    variant = tmp_path / "mine.yaml"
    variant.write_text(f"extends: {ROOT / 'topologies' / 'default.yaml'}\ndns: {{ttl: 5}}\n")
    topology = load_topology(str(variant))
    assert topology.name == "default"
    assert compose_path(topology) == STATE_DIR / "compose.default.yaml"
    assert compose_path(load_topology("default")) == ROOT / "compose.yaml"
    assert compose_path(load_topology(str(ROOT / "topologies" / "default.yaml"))) == ROOT / "compose.yaml"
    assert compose_path(load_topology("sni")) == STATE_DIR / "compose.sni.yaml"


def test_logs_of_an_unknown_service_is_one_line():
    """Was compose's 'No such service: nosuch' plus "`docker-compose logs ...` failed (exit 1)"."""
    from lab.cli._common import current_topology

    services = current_topology(None).services()  # the running topology's, else default's
    assert "nlb" in services and "client" in services
    assert one_line_error(lab("logs", "nlb", "nosuch")) == (
        f"lab logs: error: no service 'nosuch' in this topology (services: {', '.join(services)})")


def test_logs_without_an_engine_says_so_in_one_line():
    """Was docker-compose's own traceback, then "`docker-compose logs ...` failed (exit 1)"."""
    result = lab("logs", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert one_line_error(result).startswith("lab logs: error: cannot reach the Docker engine")


@pytest.mark.parametrize("tail", ["-5", "x", "1.5"])
def test_logs_tail_must_be_a_line_count_or_all(tail):
    assert usage_error(lab("logs", "--tail", tail)) == (
        f"lab logs: error: argument --tail: {tail!r} is not a number of lines (0 or more) or 'all'")


@pytest.mark.parametrize("timeout", ["-1", "0", "abc", "nan", "inf"])
def test_up_timeout_must_be_positive_seconds(timeout):
    """`--timeout -1` used to start the lab and then wait no time at all."""
    result = lab("up", "--timeout", timeout)
    assert "lab: starting" not in result.stdout
    assert usage_error(result) == (
        f"lab up: error: argument --timeout: {timeout!r} is not a number of seconds (more than 0, at most 86400)")


@pytest.mark.parametrize("drain", ["-1", "86401", "abc", "nan", "inf"])
def test_alb_rotate_drain_seconds_must_be_a_number_of_seconds(drain):
    """`nan` used to reach the ALB, which accepted it as a drain time."""
    assert usage_error(lab("alb", "rotate", "--drain-seconds", drain)) == (
        f"lab alb rotate: error: argument --drain-seconds: {drain!r} is not a number of seconds "
        "(at least 0, at most 86400)")


@pytest.mark.parametrize("args, prefix", [
    (["nlb", "describe-attributes", "--target-group", ""], "lab nlb describe-attributes: error: argument --target-group"),
    (["nlb", "describe-target-health", "--target-group", " "], "lab nlb describe-target-health: error: argument --target-group"),
    (["nlb", "modify-target-group", "--target-group", "", "HealthCheckIntervalSeconds=10"],
     "lab nlb modify-target-group: error: argument --target-group"),
    (["alb", "target-health", ""], "lab alb target-health: error: argument target_group"),
    (["alb", "tg-attributes", ""], "lab alb tg-attributes: error: argument target_group"),
    (["alb", "register", "", "10.20.1.41"], "lab alb register: error: argument target_group"),
])
def test_target_group_name_cannot_be_empty(args, prefix):
    """An empty name used to be taken as not given: the load balancer's attributes, or every group."""
    assert usage_error(lab(*args)) == f"{prefix}: a target group name cannot be empty"


def test_topology_path_that_is_not_a_regular_file(tmp_path):
    assert one_line_error(lab("render", "--topology", str(tmp_path))) == (
        f"lab render: error: topology file {tmp_path} is not a regular file")


def test_alb_tg_attributes_usage_error_names_only_the_missing_argument():
    """KEY=VALUE is optional (no pairs: describe); the usage error listed it as required."""
    assert usage_error(lab("alb", "tg-attributes")) == (
        "lab alb tg-attributes: error: the following arguments are required: target_group")


def test_render_refuses_to_rewrite_a_running_lab_of_another_topology() -> None:
    from lab.cli.render import refuse_over_running_lab
    from lab.errors import LabError
    from lab.load import load_topology
    from lab.render import compose_path

    sni, default = load_topology("sni"), load_topology("default")
    running_default = {"topology": "default", "compose_file": str(compose_path(default))}
    with pytest.raises(LabError, match=r"^the running lab is topology 'default'; rendering 'sni' would rewrite "
                                       r"the configs its containers read: `lab down` first"):
        refuse_over_running_lab(sni, "sni", running_default)
    refuse_over_running_lab(default, "default", running_default)  # the running topology itself: fine
    refuse_over_running_lab(sni, "sni", None)  # nothing running: fine


def test_alb_target_health_has_a_header_line_like_the_nlb_verb(monkeypatch, capsys):
    import argparse

    from lab.cli import alb

    doc = {"TargetHealthDescriptions": [
        {"Target": {"Id": "10.20.1.41", "Port": 8443}, "HealthCheckPort": "8443", "TargetHealth": {"State": "healthy"}},
        {"Target": {"Id": "10.20.2.41", "Port": 8443}, "HealthCheckPort": "8443",
         "TargetHealth": {"State": "unhealthy", "Reason": "Target.FailedHealthChecks"}}]}
    monkeypatch.setattr(alb, "admin_call", lambda method, path: doc)
    assert alb.run_target_health(argparse.Namespace(target_group="api", json=False)) == 0
    assert capsys.readouterr().out.splitlines() == [
        "TARGET GROUP     TARGET          PORT   STATE      REASON",
        "api              10.20.1.41      8443   healthy    ",
        "api              10.20.2.41      8443   unhealthy  Target.FailedHealthChecks"]


def test_nlb_modify_target_group_argument_errors_are_one_line():
    """Checked before the lab is needed: a non-AWS key, and a bare key without a value."""
    assert one_line_error(lab("nlb", "modify-target-group", "--target-group", "haproxy-http", "Interval=5")) == (
        "lab nlb: error: ValidationError: 'Interval' is not a ModifyTargetGroup health check parameter;"
        " use one of HealthCheckProtocol, HealthCheckPort, HealthCheckPath, HealthCheckIntervalSeconds,"
        " HealthCheckTimeoutSeconds, HealthyThresholdCount, UnhealthyThresholdCount, Matcher, HealthCheckEnabled")
    assert one_line_error(lab("nlb", "modify-target-group", "--target-group", "haproxy-http", "HealthCheckPort")) == (
        "lab nlb: error: attribute 'HealthCheckPort' is not KEY=VALUE, e.g. HealthCheckIntervalSeconds=10")


@pytest.mark.parametrize("topology, path_lines", [
    ("default", ["listeners TLS:443, TCP:80\n", "  -> haproxy-a 10.20.1.20, haproxy-b 10.20.2.20 (accept-proxy off)\n",
                 "client IP: NLB instance targets keep the client address at TCP level -> HAProxy -> X-Forwarded-For"]),
    ("ip-proxy-v2", ["(accept-proxy on)", "client IP: NLB ip targets + PROXY v2 header -> HAProxy accept-proxy"]),
    ("sni", ["listeners TLS:443, TCP:80, TCP:8443 (straight to the ALB)\n", "  -> haproxy-a 10.20.1.20"]),
    ("nlb-alb", ["listeners TCP:443 (straight to the ALB), TCP:80 (straight to the ALB)\n",
                 "  (HAProxy is not on the path: haproxy-a 10.20.1.20, haproxy-b 10.20.2.20 run, but no NLB listener",
                 "client IP: NLB alb targets keep the client address at TCP level -> ALB -> X-Forwarded-For (no HAProxy)"]),
])
def test_up_summary_says_which_hops_the_client_address_crosses(topology: str, path_lines: list[str]) -> None:
    from lab.cli.up import summary
    from lab.load import load_topology

    text = summary(load_topology(topology))
    for line in path_lines:
        assert line in text
    assert ("-> haproxy-a" in text) == (topology != "nlb-alb")


@pytest.mark.parametrize("args, message", [
    (["--topologies", "nlb-ip,,default"], "--topologies 'nlb-ip,,default' has an empty name"),
    (["--topologies", "nlb-ip,nope"], "unknown topology 'nope' (known: alb-rules, default, haproxy-resolve-once, ip-proxy-v2, nlb-alb, "
                                      "nlb-ip, nlb-ops, sni; or give a path to a .yaml file)"),
    (["--from", "10.0.0.1"], "--from 10.0.0.1 is outside the client's source range 198.51.100.100-198.51.100.199"),
])
def test_demo_checks_every_argument_before_it_starts_anything(args, message):
    """A bad topology late in the list must not cost the user three `lab up`s first."""
    result = lab("demo", "client-ip", *args, env={"DOCKER_HOST": "unix:///nonexistent"})
    assert one_line_error(result) == f"lab demo: error: {message}"
    assert "bringing it up" not in result.stdout


def demo_hops(haproxy: dict | None, xff: str) -> list[dict]:
    """`lab trace` hops as collect() returns them, for one request from 198.51.100.123."""
    return [{"hop": "client", "node": "client", "status": 200},
            {"hop": "nlb", "node": "nlb-a"},
            haproxy or {"hop": "haproxy", "node": None, "source_ip": None,
                        "skipped": "not on this path: the NLB's TCP:443 forwards to the alb target group alb-https"},
            {"hop": "alb", "node": "alb-a"},
            {"hop": "web", "node": "web-api-a", "client_ip": xff.split(",")[0], "x_forwarded_for": xff}]


def test_demo_rows_say_which_design_keeps_the_client_ip():
    from lab.cli.demo import row, table
    from lab.load import load_topology

    def haproxy(client: str, peer: str) -> dict:
        return {"hop": "haproxy", "node": "haproxy-a", "source_ip": client, "source_port": 41000,
                "tcp_peer": f"{peer}:41000"}

    rows = [
        row(load_topology("nlb-ip"), "198.51.100.123",
            demo_hops(haproxy("10.20.1.10", "10.20.1.10"), "10.20.1.10, 10.20.1.20")),
        row(load_topology("ip-proxy-v2"), "198.51.100.123",
            demo_hops(haproxy("198.51.100.123", "10.20.1.10"), "198.51.100.123, 10.20.1.20")),
        row(load_topology("nlb-alb"), "198.51.100.123", demo_hops(None, "198.51.100.123")),
        row(load_topology("default"), "198.51.100.123",
            demo_hops(haproxy("198.51.100.123", "198.51.100.123"), "198.51.100.123, 10.20.1.20")),
    ]
    assert [(r.kind, r.kept) for r in rows] == [("lost", False), ("proxy_v2", True), ("alb", True),
                                               ("preserved", True)]
    lines = table(rows, "198.51.100.123").splitlines()
    assert lines[0] == "The client sent from 198.51.100.123."
    body = {line.split()[0]: line for line in lines[4:8]}
    assert body["nlb-ip"].split("  ")[-1].strip() == "10.20.1.10 LOST"
    assert "TLS:443 -> ip + PROXY v2" in body["ip-proxy-v2"] and "198.51.100.123 (peer 10.20.1.10)" in body["ip-proxy-v2"]
    assert "TCP:443 -> alb (no HAProxy)" in body["nlb-alb"] and "not on the path" in body["nlb-alb"]
    assert body["default"].endswith("198.51.100.123 kept")
    assert "What each design costs:" in lines and "Problems" not in "\n".join(lines)
    assert max(len(line) for line in lines[lines.index("What each design costs:"):]) <= 100


def test_demo_reports_a_design_whose_request_failed():
    from lab.cli.demo import row, table
    from lab.load import load_topology

    failed = row(load_topology("nlb-ip"), "198.51.100.123",
                 [{"hop": "client", "node": "client", "status": None, "missing": "the request failed: curl exit 28"}])
    assert (failed.kept, failed.x_forwarded_for) == (False, "?")
    assert table([failed], "198.51.100.123").endswith(
        "Problems (run `lab trace` on that topology):\n  nlb-ip: no answer; client: the request failed: curl exit 28")


def test_demo_describes_the_listener_the_flow_came_in_on():
    """sni's TCP:8443 goes straight to the ALB while its TLS:443 goes through HAProxy."""
    from lab.cli.demo import design
    from lab.load import load_topology

    sni = load_topology("sni")
    assert design(sni, "TCP:8443") == ("alb", "TCP:8443 -> alb (no HAProxy)")
    assert design(sni, "TLS:443") == ("preserved", "TLS:443 -> instance, client IP preserved")
    assert design(sni, None) == design(sni, "TLS:443")  # unknown: the first listener


def test_demo_alb_ip_change_needs_traffic_past_the_drain():
    result = lab("demo", "alb-ip-change", "--seconds", "30", "--drain-seconds", "8",
                 env={"DOCKER_HOST": "unix:///nonexistent"})
    assert one_line_error(result) == ("lab demo: error: --seconds 30 is too short to see what follows the drain: "
                                      "at least 33 with --drain-seconds 8")
    assert usage_error(lab("demo", "alb-ip-change", "--drain-seconds", "61")) == (
        "lab demo: error: argument --drain-seconds: '61' is not a number of seconds (at least 0, at most 60)")


def test_demo_alb_ip_change_rows_count_what_the_requests_got():
    from lab.cli.demo import rotation_row, rotation_table
    from lab.load import load_topology

    rotated = {"New": [{"Address": "10.20.1.31"}, {"Address": "10.20.2.31"}],
               "Draining": [{"Address": "10.20.1.30"}, {"Address": "10.20.2.30"}]}
    t = 1000.0  # the rotation; the drain is 8 s
    once = rotation_row(load_topology("haproxy-resolve-once"), [
        [t - 1, 200, "10.20.1.30", None], [t + 5, 200, "10.20.2.30", None], [t + 15.2, 503, None, None],
        [t + 16, 503, None, None], [t + 16.5, None, None, "RemoteDisconnected('closed')"]], rotated, t, 8)
    assert (once.resolve, once.requests, once.ok, once.first_failure_after) == ("startup", 5, 2, 15.2)
    assert once.failures == {"503": 2, "RemoteDisconnected": 1} and once.served_after_drain_by == []
    default = rotation_row(load_topology("default"), [
        [t + 1, 200, "10.20.1.30", None], [t + 11, 200, "10.20.2.31", None], [t + 12, 200, "10.20.1.31", None]],
        rotated, t, 8)
    assert default.failures == {} and default.served_after_drain_by == ["10.20.1.31", "10.20.2.31"]
    lines = rotation_table([once, default], 8).splitlines()
    assert lines[0].endswith("went from 10.20.1.30, 10.20.2.30 to 10.20.1.31, 10.20.2.31;")
    body = {line.split()[0]: line for line in lines[5:7]}
    assert "resolved once at start" in body["haproxy-resolve-once"] and "2/5" in body["haproxy-resolve-once"]
    assert "2 x 503, 1 x RemoteDisconnected" in body["haproxy-resolve-once"]
    assert "15.2 s after the rotation" in body["haproxy-resolve-once"]
    assert body["default"].endswith("10.20.1.31, 10.20.2.31") and "3/3" in body["default"]
    assert max(len(line) for line in lines[lines.index("What each design costs:"):]) <= 100


def xff_hops(xff: str | None, listener: str = "TLS:443") -> list[dict]:
    """collect()'s hops for one request whose web hop got `xff` (None: no X-Forwarded-For)."""
    web = {"hop": "web", "node": "web-api-a", "client_ip": xff.split(",")[0] if xff else None,
           "x_forwarded_for": xff or ""}
    return [{"hop": "client", "node": "client", "status": 200}, {"hop": "nlb", "node": "nlb-a", "listener": listener},
            {"hop": "alb", "node": "alb-a"}, web]


def test_demo_xff_spoofing_rows_say_which_address_the_chain_vouches_for():
    from lab.cli.demo import XffSpoofRow, xff_mode_row, xff_table
    from lab.load import load_topology

    default, nlb_alb = load_topology("default"), load_topology("nlb-alb")
    rows = [xff_mode_row(default, "append", xff_hops("127.0.0.1, 198.51.100.123, 10.20.1.20")),
            xff_mode_row(default, "preserve", xff_hops("127.0.0.1, 198.51.100.123")),
            xff_mode_row(default, "remove", xff_hops(None))]
    assert [(r.added_by_the_chain, r.client_address, r.first_address) for r in rows] == [
        (2, "198.51.100.123", "127.0.0.1"), (1, "198.51.100.123", "127.0.0.1"), (0, None, None)]
    lines = xff_table(XffSpoofRow("default", "127.0.0.1", rows), "198.51.100.123").splitlines()
    assert lines[0] == 'The client sent from 198.51.100.123 with its own "X-Forwarded-For: 127.0.0.1" through default;'
    body = {line.split()[0]: line for line in lines[5:8]}
    assert "127.0.0.1 SPOOFED" in body["append"] and body["append"].endswith("198.51.100.123 (second from the right)")
    assert body["preserve"].endswith("198.51.100.123 (the last)")
    assert body["remove"].endswith("LOST (no X-Forwarded-For)")
    assert "HAProxy had appended the client's" in " ".join(" ".join(lines).split()) and "Problems" not in lines
    assert max(len(line) for line in lines[lines.index("What each mode means:"):]) <= 100
    # Without HAProxy (the NLB forwards to the ALB): the ALB's own entry is the client, and preserve
    # passes on only what the client wrote.
    direct = [xff_mode_row(nlb_alb, "append", xff_hops("127.0.0.1, 198.51.100.123", "TCP:443")),
              xff_mode_row(nlb_alb, "preserve", xff_hops("127.0.0.1", "TCP:443"))]
    assert [(r.haproxy, r.added_by_the_chain, r.client_address) for r in direct] == [
        (False, 1, "198.51.100.123"), (False, 0, None)]
    text = xff_table(XffSpoofRow("nlb-alb", "127.0.0.1", direct), "198.51.100.123")
    assert "LOST (the chain added none of it)" in text and "with no HAProxy in front" in " ".join(text.split())


def test_demo_xff_spoofing_reports_a_mode_whose_request_failed():
    from lab.cli.demo import XffSpoofingDemo, XffSpoofRow, xff_mode_row, xff_table
    from lab.load import load_topology

    failed = xff_mode_row(load_topology("default"), "preserve", [
        {"hop": "client", "node": "client", "status": None, "missing": "the request failed: curl exit 28"}])
    assert (failed.x_forwarded_for, failed.client_address) == (None, None)
    row = XffSpoofRow("default", "127.0.0.1", [failed])
    assert xff_table(row, "198.51.100.123").endswith(
        "Problems (run `lab trace` to see the hops):\n  preserve: no answer; client: the request failed: curl exit 28")
    assert XffSpoofingDemo.exit_code(None, [row]) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize("spoof", ["", "1.2.3.4, 5.6.7.8", "caf\u00e9", "a\tb", "x" * 201])
def test_demo_xff_spoofing_takes_one_printable_value(spoof):
    assert usage_error(lab("demo", "xff-spoofing", "--spoof", spoof)) == (
        f"lab demo: error: argument --spoof: {spoof!r} is not one address-like value (printable ASCII, no comma, "
        "at most 200 characters)")


def test_demo_proxy_v2_rollout_rows_say_which_side_changed():
    from lab.cli.demo import ProxyV2Row, proxy_v2_state, proxy_v2_table
    from lab.load import load_topology

    nlb_ip, pp2 = load_topology("nlb-ip"), load_topology("ip-proxy-v2")
    ok = [{"hop": "client", "node": "client", "status": 200},  # nlb-ip: the NLB node's address reaches the app
          {"hop": "web", "node": "web-api-a", "client_ip": "10.20.1.10", "x_forwarded_for": "10.20.1.10, 10.20.1.20"}]
    failed = [{"hop": "client", "node": "client", "status": None,
               "missing": "the request failed: curl: (35) OpenSSL SSL_connect: Connection reset by peer in "
                          "connection to www.lab.test:443"}]
    rows = [ProxyV2Row("nlb-ip", [proxy_v2_state(nlb_ip, False, ok, [], ["healthy", "healthy"], 0),
                                  proxy_v2_state(nlb_ip, True, failed, ["haproxy-a: SSL handshake failure"],
                                                 ["healthy", "healthy"], 12)]),
            ProxyV2Row("ip-proxy-v2", [proxy_v2_state(pp2, True, ok, [], ["healthy"], 0),
                                       proxy_v2_state(pp2, False, failed, [], ["healthy"], 12)])]
    assert [(st.nlb_sends, st.haproxy_expects, st.changed) for r in rows for st in r.states] == [
        (False, False, False), (True, False, True), (True, True, False), (False, True, True)]
    lines = proxy_v2_table(rows, "198.51.100.123").splitlines()
    body = lines[5:9]
    assert body[0].split()[:3] == ["nlb-ip", "no", "no"] and "HTTP 200" in body[0]
    assert "10.20.1.10 LOST" in body[0] and body[0].endswith("healthy")
    assert body[1].split()[:5] == ["nlb-ip", "yes", "(changed)", "no", "FAILED"]
    assert "FAILED (OpenSSL SSL_connect: Connection reset by peer)  -" in body[1]  # curl's words, shortened
    assert body[1].endswith("healthy 12 s later")
    assert body[3].split()[:5] == ["ip-proxy-v2", "no", "(changed)", "yes", "FAILED"]
    assert lines[-2:] == ["  nlb-ip: 1 line:", "    haproxy-a: SSL handshake failure"]
    assert max(len(line) for line in lines[lines.index("What this shows:"):]) <= 100


def test_demo_proxy_v2_rollout_fails_only_when_a_configured_design_does_not_answer():
    from lab.cli.demo import ProxyV2Row, ProxyV2RolloutDemo, proxy_v2_state
    from lab.load import load_topology

    pp2 = load_topology("ip-proxy-v2")
    answered = [{"hop": "client", "node": "client", "status": 200}]
    lost = [{"hop": "client", "node": "client", "status": None, "missing": "the request failed: curl exit 28"}]
    changed_fails = ProxyV2Row("ip-proxy-v2", [proxy_v2_state(pp2, True, answered, [], [], 0),
                                               proxy_v2_state(pp2, False, lost, [], [], 12)])
    configured_fails = ProxyV2Row("ip-proxy-v2", [proxy_v2_state(pp2, True, lost, [], [], 0)])
    assert ProxyV2RolloutDemo.exit_code(None, [changed_fails]) == 0  # type: ignore[arg-type]
    assert ProxyV2RolloutDemo.exit_code(None, [configured_fails]) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize("status, answer, text, expected", [
    (200, '{"Attributes": []}', False, {"Attributes": []}),
    (200, "# HELP x\n", True, "# HELP x\n"),
    (400, '{"Error": {"Code": "TargetGroupNotFound", "Message": "Target group \'x\' not found"}}', False,
     LabError("TargetGroupNotFound: Target group 'x' not found")),
    (404, '{"error": "no such endpoint POST /x"}', False,
     LabError('alb admin API POST http://127.0.0.1:8081/x: HTTP 404: {"error": "no such endpoint POST /x"}')),
    (502, "<html>", False, LabError("alb admin API POST http://127.0.0.1:8081/x: HTTP 502, not JSON: '<html>'")),
])
def test_one_client_reads_both_admin_apis(monkeypatch, status, answer, text, expected):
    """`lab nlb` and `lab alb` share _common.simulator_call: AWS's error shape becomes `Code: Message`."""
    from lab.cli import _common

    monkeypatch.setattr(_common, "admin_request", lambda client, service, url, body, method: (status, answer))
    if isinstance(expected, LabError):
        with pytest.raises(LabError) as caught:
            _common.simulator_call(None, "alb", "http://127.0.0.1:8081/x", {}, text=text)
        assert str(caught.value) == str(expected)
    else:
        assert _common.simulator_call(None, "alb", "http://127.0.0.1:8081/x", {}, text=text) == expected


@pytest.mark.parametrize("items, expected", [
    (["HealthCheckIntervalSeconds=10", "Matcher=200-299"], {"HealthCheckIntervalSeconds": "10",
                                                            "Matcher": {"HttpCode": "200-299"}}),
    (["HealthCheckEnabled=false"], {"HealthCheckEnabled": False}),  # the NLB answers AWS's refusal
    (["HealthCheckEnabled=yes"], {"HealthCheckEnabled": "yes"}),  # not a boolean: the NLB says so
])
def test_lab_nlb_modify_target_group_passes_what_the_api_takes(items, expected):
    from lab.cli.nlb import parse_health_check

    assert parse_health_check(items) == expected
