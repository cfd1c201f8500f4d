"""Node rotation (planning and, on loopback, the real hand-over) and the admin write API."""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from services.alb_sim.config import Node, Rotation
from services.alb_sim.nodes import RotationError, plan_rotation
from tests.unit.test_alb_server import Lab

POOLS = {"a": ("10.20.1.30", "10.20.1.31", "10.20.1.32"), "b": ("10.20.2.30", "10.20.2.31")}
A, B = Node("alb-a", "a", "10.20.1.30"), Node("alb-b", "b", "10.20.2.30")


@pytest.mark.parametrize("nodes,busy,generation,expected", [
    ([A, B], {"10.20.1.30", "10.20.2.30"}, 2,
     [Node("alb-a-2", "a", "10.20.1.31"), Node("alb-b-2", "b", "10.20.2.31")]),
    # the next address after the node's own, wrapping around the pool
    ([Node("alb-a-3", "a", "10.20.1.32")], {"10.20.1.32"}, 4, [Node("alb-a-4", "a", "10.20.1.30")]),
    # addresses still held by draining nodes are skipped
    ([A], {"10.20.1.30", "10.20.1.31"}, 2, [Node("alb-a-2", "a", "10.20.1.32")]),
])
def test_plan_rotation(nodes: list[Node], busy: set[str], generation: int, expected: list[Node]) -> None:
    assert plan_rotation(nodes, POOLS, busy, generation) == expected


def test_plan_rotation_with_no_free_address_says_what_to_do() -> None:
    with pytest.raises(RotationError, match=r"AZ b: every address of its pool \(10.20.2.30, 10.20.2.31\) is in use"
                                            r".*add addresses to alb.rotation.address_pools"):
        plan_rotation([B], POOLS, {"10.20.2.30", "10.20.2.31"}, 2)


class FakeDns(BaseHTTPRequestHandler):
    puts: list[tuple[str, dict[str, Any]]] = []

    def do_PUT(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        FakeDns.puts.append((self.path, json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def rlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    dns = ThreadingHTTPServer(("127.0.0.1", 0), FakeDns)
    threading.Thread(target=dns.serve_forever, daemon=True).start()
    lab = Lab(tmp_path_factory.mktemp("alb-rotate"))
    lab.config = dataclasses.replace(lab.config, rotation=Rotation(
        drain_seconds=1, pools={"a": ("127.0.0.1", "127.0.0.2")}, dns_admin=f"127.0.0.1:{dns.server_port}",
        dns_ttl=5))
    lab.start()
    yield lab
    lab.stop()
    dns.shutdown()


def admin(lab: Lab, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", lab.admin_port, timeout=30)
    conn.request(method, path, body=None if body is None else json.dumps(body))
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def get_on(lab: Lab, address: str, path: str, conn: http.client.HTTPSConnection | None = None
           ) -> tuple[int, http.client.HTTPMessage, http.client.HTTPSConnection]:
    if conn is None:
        conn = http.client.HTTPSConnection("www.lab.test", lab.https_port, timeout=15)
        conn.sock = lab.client_ctx().wrap_socket(socket.create_connection((address, lab.https_port), 15),
                                                 server_hostname="www.lab.test")
    conn.request("GET", path, headers={"Host": "www.lab.test"})
    resp = conn.getresponse()
    resp.read()
    return resp.status, resp.headers, conn


def test_rotation_hands_over_to_new_addresses(rlab: Lab) -> None:
    import time

    status, _, old_conn = get_on(rlab, "127.0.0.1", "/api/before")
    assert status == 200
    status, doc = admin(rlab, "POST", "/rotate", {})
    assert status == 200
    assert [(n["Name"], n["Address"]) for n in doc["New"]] == [("alb-a-2", "127.0.0.2")]
    assert [(n["Name"], n["State"]) for n in doc["Draining"]] == [("alb-a", "draining")]
    assert FakeDns.puts[-1] == ("/records/web-app.alb.lab.internal",
                                {"type": "A", "ttl": 5, "values": ["127.0.0.2"]})
    # A draining node still answers, but tells keep-alive clients to go.
    status, headers, _ = get_on(rlab, "127.0.0.1", "/api/during", old_conn)
    assert status == 200 and headers["Connection"] == "close"
    status, headers, new_conn = get_on(rlab, "127.0.0.2", "/api/new")
    assert status == 200 and headers.get("Connection") != "close"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(admin(rlab, "GET", "/nodes")[1]["Nodes"]) > 1:
        time.sleep(0.1)
    assert [n["Name"] for n in admin(rlab, "GET", "/nodes")[1]["Nodes"]] == ["alb-a-2"]
    refused = False
    while time.monotonic() < deadline and not refused:
        try:
            socket.create_connection(("127.0.0.1", rlab.https_port), 2).close()
            time.sleep(0.1)
        except ConnectionRefusedError:
            refused = True
    assert refused, "the retired node still accepts connections"
    assert get_on(rlab, "127.0.0.2", "/api/after", new_conn)[0] == 200
    log_path = Path(rlab.log_dir) / "alb-a-2" / "access.log"
    while time.monotonic() < deadline and "/api/after" not in log_path.read_text():
        time.sleep(0.05)  # entries are flushed once per event-loop tick
    log = log_path.read_text()
    assert "/api/new" in log and "/api/after" in log


def test_register_and_deregister_targets(rlab: Lab) -> None:
    target = {"Id": "127.0.0.1", "Port": rlab.api_port}
    status, doc = admin(rlab, "POST", "/deregister-targets", {"TargetGroupName": "api", "Targets": [target]})
    assert status == 200
    # Idle, so deregistration is complete at once, but AWS shows it draining until the delay passes.
    [shown] = admin(rlab, "GET", "/target-health?target_group=api")[1]["TargetHealthDescriptions"]
    assert (shown["Target"], shown["TargetHealth"]["State"], shown["TargetHealth"]["Reason"]) == (
        target, "draining", "Target.DeregistrationInProgress")
    assert get_on(rlab, "127.0.0.2", "/api/x")[0] == 503
    status, doc = admin(rlab, "POST", "/deregister-targets", {"TargetGroupName": "api", "Targets": [target]})
    assert (status, doc["Error"]["Code"]) == (400, "InvalidTarget")
    assert admin(rlab, "POST", "/register-targets", {"TargetGroupName": "api", "Targets": [target]})[0] == 200
    states = admin(rlab, "GET", "/target-health?target_group=api")[1]["TargetHealthDescriptions"]
    assert [d["Target"] for d in states] == [target]
    assert get_on(rlab, "127.0.0.2", "/api/x")[0] == 200  # initial targets take traffic when none is healthy


@pytest.mark.parametrize("path,body,code,message", [
    ("/register-targets", {"TargetGroupName": "nope", "Targets": [{"Id": "127.0.0.1"}]}, "TargetGroupNotFound",
     "Target group 'nope' not found"),
    ("/register-targets", {"TargetGroupName": "api", "Targets": [{"Id": "web-1"}]}, "ValidationError",
     "Targets[0].Id: 'web-1' is not a valid IP address"),
    ("/attributes", {"Attributes": [{"Key": "idle_timeout.timeout_seconds", "Value": "0"}]}, "ValidationError",
     "Load balancer attribute 'idle_timeout.timeout_seconds' value '0' is not valid: must be an integer from 1 to 4000"),
    ("/attributes", {"Attributes": [{"Key": "bogus.key", "Value": "1"}]}, "ValidationError",
     "Load balancer attribute key 'bogus.key' is not recognized"),
    ("/target-group-attributes", {"TargetGroupName": "api", "Attributes": [
        {"Key": "deregistration_delay.timeout_seconds", "Value": "3601"}]}, "ValidationError",
     "Target group attribute 'deregistration_delay.timeout_seconds' value '3601' is not valid: must be an integer"
     " from 0 to 3600"),
    ("/rules", {"Port": 0, "Rules": []}, "ListenerNotFound", "no listener on port 0"),
    ("/rules", {"Port": "443", "Rules": []}, "ValidationError", "Port: expected a listener's port number, got '443'"),
    ("/rules", {"Rules": []}, "ValidationError", "Port: expected a listener's port number, got None"),
    ("/register-targets", {"TargetGroupName": ["api"], "Targets": []}, "ValidationError",
     "TargetGroupName: expected the name of a target group, got ['api'] (target groups: api,"),
    ("/deregister-targets", {"Targets": []}, "ValidationError",
     "TargetGroupName: expected the name of a target group, got None"),
    ("/rotate", {"DrainSeconds": -1}, "ValidationError", "DrainSeconds: -1 is not a number of seconds from 0 to 86400"),
    ("/rotate", {"DrainSeconds": 86401}, "ValidationError", "DrainSeconds: 86401 is not a number of seconds"),
    ("/rotate", {"DrainSeconds": float("nan")}, "ValidationError", "DrainSeconds: nan is not a number of seconds"),
    ("/rotate", {"DrainSeconds": float("inf")}, "ValidationError", "DrainSeconds: inf is not a number of seconds"),
    ("/rotate", {"DrainSeconds": "5"}, "ValidationError", "DrainSeconds: '5' is not a number of seconds"),
])
def test_admin_writes_are_validated(rlab: Lab, path: str, body: Any, code: str, message: str) -> None:
    status, doc = admin(rlab, "POST", path, body)
    assert status == 400 and doc["Error"]["Code"] == code  # AWS: every ELBv2 client error, not-found ones too
    assert message in doc["Error"]["Message"]


@pytest.mark.parametrize("method, path, body, message", [
    ("POST", "/attributes", b"{not json", "the request body is not JSON"),
    ("POST", "/attributes", b"[" * 100_000 + b"]" * 100_000, "the request body is not JSON"),  # nested too deeply
    ("POST", "/rotate", b"[1]", "the request body must be a JSON object"),
    ("GET", "/rules?port=abc", None, "port: 'abc' is not a port number (ports: "),
    ("GET", "/rules?port=%D9%A3", None, "port: '\u0663' is not a port number"),  # a digit, but not 0-9
])
def test_admin_bad_requests_get_a_validation_error(rlab: Lab, method: str, path: str, body: bytes | None,
                                                   message: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", rlab.admin_port, timeout=30)
    conn.request(method, path, body=body)
    resp = conn.getresponse()
    doc = json.loads(resp.read())
    assert (resp.status, doc["Error"]["Code"]) == (400, "ValidationError")
    assert doc["Error"]["Message"].startswith(message)


def test_modify_attributes_and_rules_live(rlab: Lab) -> None:
    status, doc = admin(rlab, "POST", "/attributes", {"Attributes": [
        {"Key": "routing.http.xff_header_processing.mode", "Value": "remove"}]})
    assert status == 200
    assert {"Key": "routing.http.xff_header_processing.mode", "Value": "remove"} in doc["Attributes"]
    # Every key AWS knows, by name, its default where nothing set it; the answer equals a describe.
    assert doc == admin(rlab, "GET", "/attributes")[1]
    shown = {a["Key"]: a["Value"] for a in doc["Attributes"]}
    assert [a["Key"] for a in doc["Attributes"]] == sorted(shown) and len(shown) == 18
    assert (shown["routing.http2.enabled"], shown["routing.http.desync_mitigation_mode"],
            shown["client_keep_alive.seconds"], shown["access_logs.s3.enabled"]) == ("true", "defensive", "3600", "false")
    rules = [{"priority": 5, "conditions": [{"field": "path-pattern", "values": ["/live"]}],
              "actions": [{"type": "fixed-response", "status_code": "202", "message_body": "live"}]}]
    status, set_doc = admin(rlab, "POST", "/rules", {"Port": rlab.https_port, "Rules": rules})
    assert status == 200
    # The answer is the listing in force, as GET shows it: the new rule, then the default rule.
    assert set_doc == admin(rlab, "GET", f"/rules?port={rlab.https_port}")[1]
    assert [(r["priority"], r["IsDefault"]) for r in set_doc["Rules"]] == [(5, False), ("default", True)]
    assert get_on(rlab, "127.0.0.2", "/live")[0] == 202
    assert get_on(rlab, "127.0.0.2", "/fixed")[0] == 200  # the old rules are gone: 418 before, default now
    bad = [{"priority": 0, "conditions": [], "actions": [{"type": "forward", "target_group": "api"}]}]
    status, doc = admin(rlab, "POST", "/rules", {"Port": rlab.https_port, "Rules": bad})
    assert status == 400 and "Priority '0' must be between 1 and 50000" in doc["Error"]["Message"]


def test_metrics_use_aws_names(rlab: Lab) -> None:
    get_on(rlab, "127.0.0.2", "/api/metrics")
    get_on(rlab, "127.0.0.2", "/empty/x")  # 503 from the ALB itself
    conn = http.client.HTTPConnection("127.0.0.1", rlab.admin_port, timeout=30)
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    text = resp.read().decode()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/plain")
    lb = 'LoadBalancer="app/web-app/50dc6c495c0c9188"'
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if not line.startswith("#")}
    assert values[f"RequestCount{{{lb}}}"] >= 2
    assert values[f'RequestCount{{{lb},TargetGroup="api"}}'] >= 1
    assert values[f'HTTPCode_Target_2XX_Count{{{lb},TargetGroup="api"}}'] >= 1
    assert values[f"HTTPCode_ELB_5XX_Count{{{lb}}}"] >= 1 and values[f"HTTPCode_ELB_503_Count{{{lb}}}"] >= 1
    assert values[f'TargetResponseTime_count{{{lb},TargetGroup="api"}}'] >= 1
    assert f'HealthyHostCount{{{lb},TargetGroup="frontend"}}' in values
    assert "# TYPE ActiveConnectionCount gauge" in text


def test_target_group_attributes_algorithm(rlab: Lab) -> None:
    status, doc = admin(rlab, "POST", "/target-group-attributes", {"TargetGroupName": "frontend", "Attributes": [
        {"Key": "load_balancing.algorithm.type", "Value": "least_outstanding_requests"}]})
    assert status == 200
    assert {"Key": "load_balancing.algorithm.type", "Value": "least_outstanding_requests"} in doc["Attributes"]
    assert {"Key": "deregistration_delay.timeout_seconds", "Value": "300"} in doc["Attributes"]  # unchanged
    assert get_on(rlab, "127.0.0.2", "/lor")[0] == 200
    status, doc = admin(rlab, "POST", "/target-group-attributes", {"TargetGroupName": "frontend", "Attributes": [
        {"Key": "load_balancing.algorithm.type", "Value": "random"}]})
    assert status == 400 and "'load_balancing.algorithm.type' value 'random' is not valid: must be one of round_robin," \
        " least_outstanding_requests, weighted_random" in \
        doc["Error"]["Message"]


def test_lb_cookie_stickiness_sets_and_honours_awsalb(rlab: Lab) -> None:
    status, doc = admin(rlab, "POST", "/target-group-attributes", {"TargetGroupName": "frontend", "Attributes": [
        {"Key": "stickiness.enabled", "Value": "true"}, {"Key": "stickiness.lb_cookie.duration_seconds", "Value": "60"}]})
    assert status == 200
    conn = http.client.HTTPSConnection("www.lab.test", rlab.https_port, timeout=15)
    conn.sock = rlab.client_ctx().wrap_socket(socket.create_connection(("127.0.0.2", rlab.https_port), 15),
                                              server_hostname="www.lab.test")
    conn.request("GET", "/sticky", headers={"Host": "www.lab.test"})
    resp = conn.getresponse()
    resp.read()
    cookies = resp.headers.get_all("Set-Cookie")
    assert [c.split("=", 1)[0] for c in cookies] == ["AWSALB", "AWSALBCORS"]
    value = cookies[0].split("=", 1)[1].split(";", 1)[0]
    conn.request("GET", "/sticky", headers={"Host": "www.lab.test", "Cookie": f"AWSALB={value}"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200 and resp.headers.get_all("Set-Cookie")[0].startswith("AWSALB=")
    status, doc = admin(rlab, "POST", "/target-group-attributes", {"TargetGroupName": "frontend", "Attributes": [
        {"Key": "stickiness.type", "Value": "app_cookie"}]})
    assert (status, doc["Error"]) == (400, {"Code": "ValidationError", "Message": (
        "'stickiness.app_cookie.cookie_name' must be specified when "
        "'stickiness.type' is 'app_cookie'")})


def test_periodic_rotation(tmp_path: Path) -> None:
    import time

    lab = Lab(tmp_path)
    lab.config = dataclasses.replace(lab.config, nodes=(Node("alb-a", "a", "127.0.0.3"),), rotation=Rotation(
        drain_seconds=0, interval_seconds=1, pools={"a": ("127.0.0.3", "127.0.0.4")}))
    lab.start()
    try:
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(seen) < 3:
            nodes = [(n["Name"], n["Address"]) for n in admin(lab, "GET", "/nodes")[1]["Nodes"] if n["State"] == "active"]
            if not seen or seen[-1] != nodes:
                seen.append(nodes)
            time.sleep(0.05)
        # every second a new generation, alternating between the pool's two addresses
        assert seen[:3] == [[("alb-a", "127.0.0.3")], [("alb-a-2", "127.0.0.4")], [("alb-a-3", "127.0.0.3")]]
    finally:
        lab.stop()


@pytest.fixture()
def two_node_lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    lab.config = dataclasses.replace(
        lab.config, nodes=(Node("alb-a", "a", "127.0.0.1"), Node("alb-b", "b", "127.0.0.3")),
        rotation=Rotation(drain_seconds=30, pools={"a": ("127.0.0.1", "127.0.0.2"), "b": ("127.0.0.3", "127.0.0.4")}))
    lab.start()
    yield lab
    lab.stop()


def test_each_node_connects_to_targets_from_its_own_address(two_node_lab: Lab) -> None:
    """AWS: a target sees the private address of the node that took the request, also for nodes
    added by a rotation and for draining ones (decisions.md #55)."""
    lab = two_node_lab

    def peer_of(address: str, path: str, conn: http.client.HTTPSConnection | None = None
                ) -> http.client.HTTPSConnection:
        status, _, conn = get_on(lab, address, path, conn)
        assert status == 200
        [request] = [r for r in lab.api.requests if r["url"] == path]
        seen[path] = request["peer"]
        return conn

    seen: dict[str, str] = {}
    old_b = peer_of("127.0.0.3", "/api/b")
    peer_of("127.0.0.1", "/api/a")
    peer_of("127.0.0.3", "/api/b-again", old_b)
    assert admin(lab, "POST", "/rotate", {})[0] == 200
    peer_of("127.0.0.2", "/api/a-2")
    peer_of("127.0.0.4", "/api/b-2")
    peer_of("127.0.0.3", "/api/b-draining", old_b)
    assert seen == {"/api/b": "127.0.0.3", "/api/a": "127.0.0.1", "/api/b-again": "127.0.0.3",
                    "/api/a-2": "127.0.0.2", "/api/b-2": "127.0.0.4", "/api/b-draining": "127.0.0.3"}


def test_health_checks_connect_from_an_active_node(two_node_lab: Lab) -> None:
    import asyncio

    from services.alb_sim.healthcheck import check_once

    assert two_node_lab.sim is not None
    nodes = two_node_lab.sim.nodes
    assert nodes is not None and nodes.check_source() == "127.0.0.1"
    assert admin(two_node_lab, "POST", "/rotate", {})[0] == 200
    assert nodes.check_source() == "127.0.0.2"  # the new alb-a, never a draining node

    peers: list[str] = []

    async def check() -> bool:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peers.append(writer.get_extra_info("peername")[0])
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            writer.close()
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            result = await check_once("127.0.0.1", port, tls=None, path="/healthz", timeout=5,
                                      matcher_matches=lambda code: code == 200, source="127.0.0.4")
        return result.ok

    assert asyncio.run(check())
    assert peers == ["127.0.0.4"]


@pytest.mark.parametrize("ip,az,expected", [
    ("10.20.1.41", None, None),  # in the VPC: the zone is found from the subnet
    ("10.20.2.41", "all", None),
    ("10.9.9.9", None, ("ValidationError",
                        "The Availability Zone is required for IP address '10.9.9.9' because it is not in the VPC")),
    ("192.168.7.1", None, ("ValidationError",
                           "The Availability Zone is required for IP address '192.168.7.1' because it is not in the VPC")),
    ("10.9.9.9", "all", None),  # a peered VPC / on-premises address
    ("172.16.0.5", "b", None),
    ("100.64.1.1", "all", None),  # RFC 6598
    ("10.9.9.9", "eu-west-9z", ("ValidationError", "You must specify a valid Availability Zone or select 'all' for "
                                "all enabled Availability zones, since the IP address '10.9.9.9' is outside the VPC")),
    ("8.8.8.8", "all", ("InvalidTarget", "The specified target does not exist, is not in the same VPC as the target "
                        "group, or has an unsupported instance type.")),
    ("198.51.100.100", None, ("InvalidTarget", "The specified target does not exist, is not in the same VPC as the "
                              "target group, or has an unsupported instance type.")),
])
def test_ip_targets_must_be_in_the_vpc_or_private_with_a_zone(ip: str, az: str | None,
                                                               expected: tuple[str, str] | None) -> None:
    from services.alb_sim.config import Target
    from services.alb_sim.config_changes import ip_target_error

    assert ip_target_error(Target(id=ip, ip=ip, port=8443, az=az), "10.20.0.0/16", {"a", "b"}) == expected


def test_register_targets_outside_the_vpc_is_refused_whole(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.config = dataclasses.replace(lab.config, vpc_cidr="127.0.0.0/8")
    lab.start()
    try:
        target = {"Id": "127.0.0.1", "Port": 8443}
        status, doc = admin(lab, "POST", "/register-targets", {"TargetGroupName": "empty", "Targets": [
            target, {"Id": "10.9.9.9", "Port": 8443}]})
        assert (status, doc) == (400, {"Error": {"Code": "ValidationError", "Message": (
            "The Availability Zone is required for IP address '10.9.9.9' because it is not in the VPC")}})
        status, doc = admin(lab, "POST", "/register-targets", {"TargetGroupName": "empty", "Targets": [
            {"Id": "9.9.9.9", "Port": 8443, "AvailabilityZone": "all"}]})
        assert (status, doc["Error"]["Code"]) == (400, "InvalidTarget")
        assert admin(lab, "GET", "/target-health?target_group=empty")[1] == {"TargetHealthDescriptions": []}
        status, _ = admin(lab, "POST", "/register-targets", {"TargetGroupName": "empty", "Targets": [
            target, {"Id": "10.9.9.9", "Port": 8443, "AvailabilityZone": "all"}]})
        assert status == 200
        described = admin(lab, "GET", "/target-health?target_group=empty")[1]["TargetHealthDescriptions"]
        assert [d["Target"]["Id"] for d in described] == ["127.0.0.1", "10.9.9.9"]
    finally:
        lab.stop()
