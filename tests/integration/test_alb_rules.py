"""Every ALB condition and action type, routed through the whole chain (topologies/alb-rules.yaml)."""

from __future__ import annotations

import json

import pytest

from lab.cli.trace import parse_alb_entry
from tests.integration.conftest import exec_in, lab

TOPOLOGY = "alb-rules"
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("running_lab")]
SITE = "www.lab.test"


def request(path: str, *args: str) -> tuple[int, dict[str, str], str]:
    out = lab("curl", "-i", *args, f"https://{SITE}{path}").stdout.replace("\r\n", "\n")
    head, _, body = out.partition("\n\n")
    status_line, *lines = head.split("\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body.strip()


def service(path: str, *args: str) -> str:
    status, _, body = request(path, *args)
    assert status == 200, (path, status, body)
    return json.loads(body)["service"]


@pytest.mark.parametrize("path,args,status,body", [
    ("/first/x", (), 200, "rule 3"),                                          # first match wins
    ("/and", ("-H", "X-And: yes"), 200, "rule 4 and"),                        # AND across conditions
    ("/x", ("-H", "Host: api.lab.test"), 200, "rule 5 host"),
    ("/x", ("-H", "Host: API.Lab.TEST"), 200, "rule 5 host"),                 # host: case-insensitive
    ("/x", ("-H", "Host: shop.example.test"), 200, "rule 5 host"),            # * wildcard, OR of values
    ("/x", ("-H", "x-env: staging"), 200, "rule 6 header"),                   # header name any case, ?
    ("/x", ("-H", "X-Env: QA"), 200, "rule 6 header"),                        # header values: case-insensitive
    ("/x", ("-X", "DELETE"), 202, "rule 7 method"),
    ("/x?version=v2.1", (), 200, '{"rule": 8}'),                              # key=value with wildcard
    ("/x?a=1&tag=beta", (), 200, '{"rule": 8}'),                              # value-only pair: any key
    ("/x?tag=BETA", (), 200, '{"rule": 8}'),                                  # query: case-insensitive
    ("/x", ("-X", "PATCH"), 202, "rule 7 method"),
    ("/teapot", (), 418, "teapot"),
])
def test_rule_answers(path: str, args: tuple[str, ...], status: int, body: str) -> None:
    got_status, headers, got_body = request(path, *args)
    assert (got_status, got_body) == (status, body)
    assert headers["server"] == "awselb/2.0"


@pytest.mark.parametrize("path,args", [
    ("/and", ()),                                 # only one of the two conditions
    ("/x", ("-H", "Host: api.lab.test.evil")),
    ("/x", ("-H", "X-Env: stagging")),            # ? is exactly one character
    ("/x", ("-X", "PUT")),
    ("/x?version=v1", ()),
    ("/x?beta", ()),                              # a bare key has an empty value: not the value `beta`
])
def test_non_matching_requests_fall_to_the_default_rule(path: str, args: tuple[str, ...]) -> None:
    status, _, body = request(path, *args)
    assert status == 200, (path, status, body)
    assert json.loads(body)["service"] == "frontend"


def test_source_ip_is_the_tcp_peer_not_x_forwarded_for() -> None:
    # Cross-zone is off: NLB node a (198.51.100.10) sends to haproxy-a (10.20.1.20), node b to haproxy-b.
    seen = {}
    for eip in ("198.51.100.10", "198.51.100.11"):
        result = exec_in("client", "curl", "-sS", "--cacert", "/lab/certs/public-ca.pem",
                         "-H", "X-Forwarded-For: 10.20.1.99",
                         "--resolve", f"{SITE}:443:{eip}", f"https://{SITE}/src")
        assert result.returncode == 0, result.stderr
        seen[eip] = result.stdout.strip()
    assert seen["198.51.100.10"] == "rule 9 haproxy-a"
    assert json.loads(seen["198.51.100.11"])["service"] == "frontend"  # XFF 10.20.1.99 does not count


def test_redirect_expands_placeholders() -> None:
    status, headers, _ = request("/old/page?q=1")
    assert status == 302
    assert headers["location"] == f"https://{SITE}:443/new/old/page?q=1&moved=1"


def test_forward_to_one_group_and_weighted_groups() -> None:
    assert service("/api/x") == "api"
    assert {service(f"/weighted?i={i}") for i in range(30)} == {"api", "frontend"}


def test_access_log_records_rule_priority_and_action() -> None:
    request("/teapot?log=1")
    request("/old/logged")
    lines = exec_in("alb", "sh", "-c", "cat /var/log/lab/alb/*/access.log").stdout.splitlines()
    teapot = parse_alb_entry([l for l in lines if "/teapot?log=1" in l][-1])
    assert (teapot["matched_rule_priority"], teapot["actions_executed"], teapot["elb_status_code"]) == \
        ("14", "fixed-response", "418")
    redirect = parse_alb_entry([l for l in lines if "/old/logged" in l][-1])
    assert redirect["actions_executed"] == "redirect"
    assert redirect["redirect_url"] == f"https://{SITE}:443/new/old/logged?&moved=1"
    default = parse_alb_entry([l for l in lines if " 0 " in l and '"forward"' in l][-1])
    assert default["matched_rule_priority"] == "0"


def test_target_group_stickiness_keeps_a_client_on_one_group() -> None:
    out = lab("curl", "-i", f"https://{SITE}/sticky?cookie").stdout
    cookies = [line.split(":", 1)[1].strip() for line in out.replace("\r\n", "\n").split("\n\n")[0].split("\n")
               if line.lower().startswith("set-cookie:")]
    assert [c.split("=", 1)[0] for c in cookies] == ["AWSALBTG", "AWSALBTGCORS"]
    assert "SameSite=None; Secure" in cookies[1]
    value = cookies[0].split(";", 1)[0]
    services = {service(f"/sticky?i={i}", "-H", f"Cookie: {value}") for i in range(12)}
    assert len(services) == 1
    assert {service(f"/sticky?n={i}") for i in range(30)} == {"api", "frontend"}  # without it: both
