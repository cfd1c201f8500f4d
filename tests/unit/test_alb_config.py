"""ALB config loading: the lead's JSON shape, defaults, and exact error messages."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from services.alb_sim.config import (
    ConfigError, FixedResponseAction, ForwardAction, QueryPair, RedirectAction, WeightedTargetGroup, load_config,
)
from services.alb_sim.config_changes import parse_listener_rules

BASE: dict[str, Any] = {
    "name": "web-app",
    "arn": "arn:aws:elasticloadbalancing:eu-west-2:123456789012:loadbalancer/app/web-app/50dc6c495c0c9188",
    "dns_name": "web-app.alb.lab.internal",
    "nodes": [{"name": "alb-a", "az": "a", "address": "10.20.1.30"}, {"name": "alb-b", "az": "b", "address": "10.20.2.30"}],
    "attributes": {"routing.http.xff_header_processing.mode": "append", "routing.http.xff_client_port.enabled": "false",
                   "idle_timeout.timeout_seconds": "60", "routing.http.preserve_host_header.enabled": "false"},
    "listeners": [
        {"protocol": "HTTPS", "port": 443,
         "certificate": {"arn": "arn:aws:acm:eu-west-2:123456789012:certificate/lab-www", "pem": "/lab/certs/www.lab.test.pem"},
         "ssl_policy": "ELBSecurityPolicy-2016-08",
         "rules": [{"priority": 10, "conditions": [{"field": "path-pattern", "values": ["/api/*"]}],
                    "actions": [{"type": "forward", "target_group": "api"}]}],
         "default_actions": [{"type": "forward", "target_group": "frontend"}]},
        {"protocol": "HTTP", "port": 80, "rules": [],
         "default_actions": [{"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443", "host": "#{host}",
                                                              "path": "/#{path}", "query": "#{query}",
                                                              "status_code": "HTTP_301"}}]},
    ],
    "target_groups": [
        {"name": "api", "arn": "arn:aws:elasticloadbalancing:eu-west-2:123456789012:targetgroup/api/73e2d6bc24d8a067",
         "protocol": "HTTPS", "port": 8443,
         "targets": [{"id": "web-api-a", "ip": "10.20.1.41", "port": 8443, "az": "a"},
                     {"id": "web-api-b", "ip": "10.20.2.41", "port": 8443, "az": "b"}],
         "health_check": {"protocol": "HTTPS", "port": "traffic-port", "path": "/healthz", "interval_seconds": 5,
                          "timeout_seconds": 2, "healthy_threshold": 2, "unhealthy_threshold": 2, "matcher": "200"}},
        {"name": "frontend", "arn": "arn:aws:elasticloadbalancing:eu-west-2:123456789012:targetgroup/frontend/1",
         "protocol": "HTTPS", "port": 8443, "targets": [{"id": "web-frontend-a", "ip": "10.20.1.42", "port": 8443}]},
    ],
    "log_dir": "/var/log/lab/alb",
    "admin": {"address": "10.20.1.30", "port": 8081},
}


def mutate(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    fn(d)
    return d


def rule0(d: dict[str, Any]) -> dict[str, Any]:
    return d["listeners"][0]["rules"][0]


def test_example_config_loads() -> None:
    cfg = load_config(BASE)
    assert [n.name for n in cfg.nodes] == ["alb-a", "alb-b"]
    assert cfg.lb_id == "app/web-app/50dc6c495c0c9188"
    https, http = cfg.listeners
    assert https.certificate is not None and https.certificate.pem == "/lab/certs/www.lab.test.pem"
    assert https.rules[0].priority == 10 and https.rules[0].conditions[0].values == ("/api/*",)
    assert https.default_actions == (ForwardAction((WeightedTargetGroup("frontend", 1),)),)
    assert http.default_actions[0] == RedirectAction(protocol="HTTPS", port="443")
    assert cfg.attributes.xff_mode == "append" and cfg.attributes.idle_timeout == 60.0
    assert cfg.attributes.preserve_host is False and cfg.attributes.xff_client_port is False
    api = cfg.target_group("api")
    assert api.health_check.path == "/healthz" and api.targets[1].ip == "10.20.2.41"


def test_defaults() -> None:
    cfg = load_config(BASE)
    hc = cfg.target_group("frontend").health_check
    assert (hc.protocol, hc.port, hc.path, hc.interval_seconds, hc.timeout_seconds, hc.healthy_threshold,
            hc.unhealthy_threshold, hc.matcher) == ("HTTP", "traffic-port", "/", 30, 5, 5, 2, "200")
    no_attrs = load_config(mutate(lambda d: d.pop("attributes")))
    assert no_attrs.attributes.xff_mode == "append" and no_attrs.attributes.idle_timeout == 60.0


def test_other_condition_and_action_shapes() -> None:
    def add(d: dict[str, Any]) -> None:
        d["listeners"][0]["rules"] = [
            {"priority": 1, "conditions": [
                {"field": "host-header", "values": ["*.example.com"]},
                {"field": "http-header", "header_name": "X-Env", "values": ["prod"]},
                {"field": "query-string", "values": [{"key": "v", "value": "1"}, {"value": "x"}]}],
             "actions": [{"type": "fixed-response", "status_code": "404", "content_type": "text/plain",
                          "message_body": "nope"}]},
            {"priority": 2, "conditions": [{"field": "http-request-method", "values": ["GET"]},
                                           {"field": "source-ip", "values": ["10.20.1.0/24"]}],
             "actions": [{"type": "forward", "target_groups": [{"name": "api", "weight": 3},
                                                               {"name": "frontend", "weight": 1}]}]},
        ]
    cfg = load_config(mutate(add))
    r1, r2 = cfg.listeners[0].rules
    assert r1.conditions[1].header_name == "X-Env"
    assert r1.conditions[2].values == (QueryPair("v", "1"), QueryPair(None, "x"))
    assert r1.actions[0] == FixedResponseAction("404", "text/plain", "nope")
    assert [(g.name, g.weight) for g in r2.actions[0].target_groups] == [("api", 3), ("frontend", 1)]  # type: ignore[union-attr]


# RedirectActionConfig (API reference): "You must modify at least one of the following components to avoid
# a redirect loop: protocol, hostname, port, or path."
REDIRECT_LOOP = ("ValidationError: You must modify at least one of the following components to avoid a redirect "
                 "loop: protocol, hostname, port, or path")

ERRORS: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (lambda d: rule0(d).update(priority=0),
     "listeners[0].rules[0].priority: ValidationError: Priority '0' must be between 1 and 50000"),
    (lambda d: rule0(d).update(priority=50001),
     "listeners[0].rules[0].priority: ValidationError: Priority '50001' must be between 1 and 50000"),
    (lambda d: d["listeners"][0]["rules"].append(copy.deepcopy(rule0(d))),
     "listeners[0].rules[1].priority: ValidationError: Priority '10' was provided multiple times"),
    (lambda d: rule0(d)["conditions"][0].update(field="path"),
     "listeners[0].rules[0].conditions[0].field: ValidationError: Condition field 'path' must be one of "
     "'[path-pattern,host-header,http-header,http-request-method,query-string,source-ip]'"),
    (lambda d: rule0(d)["conditions"][0].update(values=["/a", "/b", "/c", "/d"]),
     "listeners[0].rules[0].conditions[0].values: ValidationError: The 'path-pattern' field contains too many "
     "values; the limit is '3'"),
    (lambda d: rule0(d)["conditions"].append({"field": "path-pattern", "values": ["/x"]}),
     "listeners[0].rules[0].conditions[1].field: ValidationError: A rule can only have one 'path-pattern' condition"),
    (lambda d: rule0(d).update(conditions=[{"field": "path-pattern", "values": ["/a*", "/b*", "/c*"]},
                                           {"field": "host-header", "values": ["*.a.com", "*.b.com", "*.c.com"]}]),
     "listeners[0].rules[0].conditions: ValidationError: The rule has 6 condition values; the limit is '5'"),
    (lambda d: rule0(d).update(conditions=[{"field": "path-pattern", "values": ["/**", "/*?*"]},
                                           {"field": "host-header", "values": ["*.a.com"]}]),
     "listeners[0].rules[0].conditions: ValidationError: The rule has 6 wildcards; the limit is '5'"),
    # Only query strings have escapes (decisions #75): a header value's '\*' is a backslash and a wildcard.
    (lambda d: rule0(d).update(conditions=[{"field": "http-header", "header_name": "X-A",
                                            "values": ["\\*\\*\\*", "\\*\\*\\*"]}]),
     "listeners[0].rules[0].conditions: ValidationError: The rule has 6 wildcards; the limit is '5'"),
    (lambda d: rule0(d).update(conditions=[{"field": "path-pattern", "values": ["/**"]}, {
        "field": "query-string", "values": [{"key": "k\\", "value": "*?"}, {"value": "\\?**"}]}]),
     "listeners[0].rules[0].conditions: ValidationError: The rule has 6 wildcards; the limit is '5'"),
    (lambda d: rule0(d)["conditions"][0].update(values=["/a b"]),
     "listeners[0].rules[0].conditions[0].values[0]: ValidationError: Path pattern '/a b' contains characters "
     """that are not allowed (A-Z, a-z, 0-9, _ - . $ / ~ " ' @ : + & * ?)"""),
    (lambda d: rule0(d).update(conditions=[{"field": "host-header", "values": ["example.*"]}]),
     "listeners[0].rules[0].conditions[0].values[0]: ValidationError: Host header 'example.*' must use A-Z, a-z, "
     "0-9, - . * ?, contain a '.', and have only letters after the final '.'"),
    (lambda d: rule0(d).update(conditions=[{"field": "source-ip", "values": ["10.20.1.0/33"]}]),
     "listeners[0].rules[0].conditions[0].values[0]: ValidationError: The 'source-ip' value '10.20.1.0/33' is not "
     "a valid CIDR block"),
    (lambda d: rule0(d).update(conditions=[{"field": "source-ip", "values": ["10.20.1.7"]}]),
     "listeners[0].rules[0].conditions[0].values[0]: ValidationError: The 'source-ip' value '10.20.1.7' is not "
     "a valid CIDR block"),
    (lambda d: rule0(d).update(conditions=[{"field": "http-request-method", "values": ["get"]}]),
     "listeners[0].rules[0].conditions[0].values[0]: ValidationError: The 'http-request-method' value 'get' is "
     "invalid; the allowed characters are A-Z, hyphen and underscore"),
    (lambda d: rule0(d).update(conditions=[{"field": "query-string", "values": [{"key": "a"}]}]),
     "listeners[0].rules[0].conditions[0].values[0].value: ValidationError: A 'Value' must be specified in "
     "'QueryStringKeyValuePair'"),
    (lambda d: rule0(d).update(actions=[{"type": "forward", "target_group": "nope"}]),
     "listeners[0].rules[0].actions[0].target_group: TargetGroupNotFound: Target group 'nope' not found"),
    (lambda d: rule0(d).update(actions=[{"type": "authenticate-oidc"}]),
     "listeners[0].rules[0].actions[0].type: ValidationError: Value 'authenticate-oidc' at 'actions.1.member.type' "
     "failed to satisfy constraint: Member must satisfy enum value set: [forward, redirect, fixed-response]"),
    (lambda d: rule0(d).update(actions=[{"type": "fixed-response", "status_code": "302"}]),
     "listeners[0].rules[0].actions[0].status_code: ValidationError: 1 validation error detected: Value '302' at "
     "'actions.1.member.fixedResponseConfig.statusCode' failed to satisfy constraint: Member must satisfy regular "
     r"expression pattern: ^(2|4|5)\d\d$"),
    (lambda d: d["listeners"][0].update(default_actions=[{"type": "redirect", "redirect": {"protocol": "HTTP"}}]),
     "listeners[0].default_actions[0].redirect.protocol: ValidationError: You cannot redirect HTTPS to HTTP"),
    (lambda d: d["listeners"][1].update(default_actions=[{"type": "redirect", "redirect": {}}]),
     f"listeners[1].default_actions[0].redirect: {REDIRECT_LOOP}"),
    # The query alone changed: the same URL again with a longer query, forever (RedirectActionConfig).
    (lambda d: d["listeners"][1].update(default_actions=[{"type": "redirect", "redirect": {
        "query": "#{query}&x=1"}}]),
     f"listeners[1].default_actions[0].redirect: {REDIRECT_LOOP}"),
    (lambda d: rule0(d).update(actions=[{"type": "redirect", "redirect": {
        "protocol": "#{protocol}", "host": "#{host}", "port": "#{port}", "path": "/#{path}", "query": "",
        "status_code": "HTTP_302"}}]),
     f"listeners[0].rules[0].actions[0].redirect: {REDIRECT_LOOP}"),
    (lambda d: d["listeners"][1].update(default_actions=[{"type": "redirect", "redirect": {"host": "#{path}.x.com"}}]),
     "listeners[1].default_actions[0].redirect.host: ValidationError: '#{path}' cannot be used in the redirect host; "
     "allowed: #{host}"),
    (lambda d: d["listeners"][1].update(default_actions=[{"type": "redirect", "redirect": {
        "host": "x.com\r\nSet-Cookie: a=b"}}]),
     "listeners[1].default_actions[0].redirect.host: ValidationError: The redirect host 'x.com\\r\\nSet-Cookie: a=b' "
     "can contain only visible ASCII characters (no spaces or control characters); percent-encode the rest"),
    (lambda d: d["listeners"][1].update(default_actions=[{"type": "redirect", "redirect": {
        "protocol": "HTTPS", "query": "q=caf\u00e9"}}]),
     "listeners[1].default_actions[0].redirect.query: ValidationError: The redirect query 'q=caf\u00e9' can contain "
     "only visible ASCII characters (no spaces or control characters); percent-encode the rest"),
    (lambda d: d["listeners"][1].update(default_actions=[{"type": "redirect", "redirect": {
        "protocol": "HTTPS", "host": ""}}]),
     "listeners[1].default_actions[0].redirect.host: ValidationError: The redirect host cannot be empty; omit it to "
     "keep '#{host}'"),
    (lambda d: d["listeners"][1].update(port=443),
     "listeners[1].port: DuplicateListener: A listener with the specified port already exists."),
    (lambda d: d["listeners"][1].update(port=70000), "listeners[1].port: 70000 is not a valid port (1-65535)"),
    (lambda d: d["listeners"][1].update(protocol="TCP"),
     "listeners[1].protocol: ValidationError: Listener protocol 'TCP' must be one of 'HTTP, HTTPS'"),
    (lambda d: d["listeners"][0].pop("certificate"),
     "listeners[0].certificate: ValidationError: A certificate must be specified for HTTPS listeners"),
    (lambda d: d.update(listeners=[]), "listeners: ValidationError: Listeners cannot be empty"),
    (lambda d: d["attributes"].update({"routing.http.xff_header_processing.mode": "replace"}),
     "attributes.routing.http.xff_header_processing.mode: ValidationError: Load balancer attribute "
     "'routing.http.xff_header_processing.mode' value 'replace' is not valid: must be one of append, preserve, remove"),
    (lambda d: d["attributes"].update({"routing.http.preserve_host_header.enabled": "yes"}),
     "attributes.routing.http.preserve_host_header.enabled: ValidationError: Load balancer attribute "
     "'routing.http.preserve_host_header.enabled' value 'yes' is not valid: must be one of true, false"),
    (lambda d: d["attributes"].update({"routing.http.desync_mitigation_mode": "strict"}),
     "attributes.routing.http.desync_mitigation_mode: ValidationError: Load balancer attribute "
     "'routing.http.desync_mitigation_mode' value 'strict' is not valid: must be one of monitor, defensive, strictest"),
    (lambda d: d["attributes"].update({"idle_timeout.timeout_seconds": "0"}),
     "attributes.idle_timeout.timeout_seconds: ValidationError: Load balancer attribute 'idle_timeout.timeout_seconds'"
     " value '0' is not valid: must be an integer from 1 to 4000"),
    (lambda d: d["attributes"].update({"bogus.key": "1"}),
     "attributes.bogus.key: ValidationError: Load balancer attribute key 'bogus.key' is not recognized"),
    (lambda d: d["target_groups"][0]["health_check"].update(matcher="600"),
     "target_groups[0].health_check.matcher: ValidationError: Health check matcher HTTP code '600' is not valid: "
     "must be codes or ranges from 200 to 499, e.g. 200, 200,202 or 200-399"),
    (lambda d: d["target_groups"][0]["health_check"].update(timeout_seconds=5),
     "target_groups[0].health_check.timeout_seconds: ValidationError: Health check interval must be greater than "
     "the timeout."),
    (lambda d: d["target_groups"][0]["health_check"].update(interval_seconds=1),
     "target_groups[0].health_check.interval_seconds: ValidationError: 1 validation error detected: Value '1' at "
     "'healthCheckIntervalSeconds' failed to satisfy constraint: Member must have value greater than or equal to 5"),
    (lambda d: d["target_groups"][0]["health_check"].update(port="http"),
     "target_groups[0].health_check.port: ValidationError: Health check port 'http' is not valid: must be "
     "'traffic-port' or a port from 1 to 65535"),
    (lambda d: d["target_groups"][0].update(name="-api"),
     "target_groups[0].name: ValidationError: Target group name '-api' can only contain up to 32 alphanumeric "
     "characters or hyphens(-), and cannot begin or end with '-'"),
    (lambda d: d["target_groups"][1].update(name="api"),
     "target_groups[1].name: DuplicateTargetGroupName: A target group with the specified name already exists."),
    (lambda d: d["target_groups"][0]["targets"][0].update(ip="10.20.1.300"),
     "target_groups[0].targets[0].ip: '10.20.1.300' is not a valid IP address"),
    (lambda d: d["nodes"][0].pop("address"), "nodes[0].address: is required"),
    (lambda d: d.update(nodes=[]), "nodes: at least one node is required"),
    (lambda d: d.pop("log_dir"), "log_dir: is required"),
]


@pytest.mark.parametrize("change,message", ERRORS)
def test_errors(change: Callable[[dict[str, Any]], None], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(mutate(change))
    assert str(info.value) == message


def test_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "alb.json"
    path.write_text(json.dumps(mutate(lambda d: rule0(d).update(priority=0))))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"listeners[0].rules[0].priority: ValidationError: Priority '0' must be between "
                               f"1 and 50000 in {path}")
    path.write_text("{nope")
    with pytest.raises(ConfigError, match=r"alb.json: invalid JSON at line 1 column 2"):
        load_config(path)


def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "alb.json"
    path.write_text(json.dumps(mutate(lambda d: rule0(d).update(priority=0))))
    proc = subprocess.run([sys.executable, "-m", "services.alb_sim", "--config", str(path)],
                          capture_output=True, text=True, timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"alb_sim: listeners[0].rules[0].priority: ValidationError: Priority '0' "
                                        f"must be between 1 and 50000 in {path}"]
    assert proc.stdout == ""


def test_rules_set_at_run_time_refuse_a_redirect_to_the_same_url() -> None:
    """POST /rules (the admin API) validates rules as the load does: a redirect that changes only the
    query is refused there too, and one that also changes the path is taken."""
    http = load_config(BASE).listeners[1]

    def rules(redirect: dict[str, str]) -> list[dict[str, Any]]:
        return [{"priority": 7, "conditions": [{"field": "path-pattern", "values": ["/old/*"]}],
                 "actions": [{"type": "redirect", "redirect": redirect}]}]
    with pytest.raises(ConfigError) as info:
        parse_listener_rules(rules({"query": "moved=1"}), http, {"api", "frontend"})
    assert str(info.value) == f"rules[0].actions[0].redirect: {REDIRECT_LOOP}"
    changed = parse_listener_rules(rules({"path": "/new/#{path}", "query": "moved=1"}), http, {"api", "frontend"})
    assert changed.rules[0].actions == (RedirectAction(path="/new/#{path}", query="moved=1"),)


def test_escaped_query_characters_are_not_wildcards() -> None:
    r"""A query-string condition's '\*' and '\?' are literal characters, so they do not count against the
    5 wildcards of a rule (decisions #75): 2 in the path, 3 in the query values, 9 escaped."""
    def rule(d: dict[str, Any]) -> None:
        rule0(d).update(conditions=[{"field": "path-pattern", "values": ["/**"]}, {
            "field": "query-string", "values": [{"key": "\\*\\*\\*", "value": "\\?\\?\\?*"},
                                                {"key": "k\\", "value": "*?"}, {"value": "\\*\\?\\*"}]}])
    cond = load_config(mutate(rule)).listeners[0].rules[0].conditions[1]
    assert cond.values == (QueryPair("\\*\\*\\*", "\\?\\?\\?*"), QueryPair("k\\", "*?"), QueryPair(None, "\\*\\?\\*"))
