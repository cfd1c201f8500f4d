"""NLB simulator config: the renderer's shape loads; every error names path, value and choices."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from services.elbv2.security_policies import SSL_POLICIES

from services.nlb_sim.config import ConfigError, load_config

HC = "target_groups[0].health_check"
BASE: dict[str, Any] = {
    "name": "static-ingress",
    "arn": "arn:aws:elasticloadbalancing:eu-west-2:123456789012:loadbalancer/net/static-ingress/6d0ecf831eec9f09",
    "nodes": [{"name": "nlb-a", "az": "a", "elastic_ip": "198.51.100.10", "private_ip": "10.20.1.10"},
              {"name": "nlb-b", "az": "b", "elastic_ip": "198.51.100.11", "private_ip": "10.20.2.10"}],
    "attributes": {"load_balancing.cross_zone.enabled": "false"},
    "listeners": [
        {"protocol": "TLS", "port": 443, "target_group": "haproxy-https",
         "certificate": {"arn": "arn:aws:acm:eu-west-2:123456789012:certificate/lab-www",
                         "pem": "/lab/certs/www.lab.test.pem"},
         "ssl_policy": "ELBSecurityPolicy-TLS13-1-2-2021-06", "alpn_policy": "None"},
        {"protocol": "TCP", "port": 80, "target_group": "haproxy-http"},
    ],
    "target_groups": [
        {"name": "haproxy-https", "arn": "arn:aws:elasticloadbalancing:eu-west-2:123456789012:targetgroup/haproxy-https/1",
         "protocol": "TLS", "port": 443, "target_type": "instance",
         "attributes": {"preserve_client_ip.enabled": "true", "proxy_protocol_v2.enabled": "false",
                        "deregistration_delay.timeout_seconds": "300"},
         "targets": [{"id": "haproxy-a", "ip": "10.20.1.20", "port": 443, "az": "a"},
                     {"id": "haproxy-b", "ip": "10.20.2.20", "port": 443, "az": "b"}],
         "health_check": {"protocol": "TCP", "port": "traffic-port", "path": "/", "interval_seconds": 5,
                          "timeout_seconds": 4, "healthy_threshold": 2, "unhealthy_threshold": 2,
                          "matcher": "200-399"}},
        {"name": "haproxy-http", "protocol": "TCP", "port": 80, "target_type": "ip",
         "targets": [{"id": "haproxy-a", "ip": "10.20.1.20", "az": "a"}]},
    ],
    "log_dir": "/var/log/lab/nlb",
    "admin": {"address": "10.20.1.10", "port": 8080},
    "transparent": True,
}


def test_renderer_shape_loads() -> None:
    cfg = load_config(BASE)
    assert [n.name for n in cfg.nodes] == ["nlb-a", "nlb-b"]
    assert [x.label for x in cfg.listeners] == ["TLS:443", "TCP:80"]
    https, http = cfg.target_groups
    assert (https.preserve_client_ip, https.proxy_protocol_v2, https.header_placement) == \
        (True, False, "on_first_ack_with_payload")
    assert https.health_check.port_for(https.targets[0]) == 443
    # defaults: ip target type -> client IP not preserved; AWS health check defaults
    assert (http.preserve_client_ip, http.targets[0].port) == (False, 80)
    hc = http.health_check
    assert (hc.protocol, hc.interval_seconds, hc.timeout_seconds, hc.healthy_threshold,
            hc.unhealthy_threshold, hc.matcher) == ("TCP", 30, 10, 5, 2, "200-399")
    assert cfg.cross_zone is False and cfg.cross_zone_for(https) is False
    assert cfg.needs_transparent_routing is True
    assert cfg.listeners[0].certificate is not None and cfg.listeners[0].certificate.key is None


def test_file_source_named_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "nlb.json"
    bad = copy.deepcopy(BASE)
    bad["listeners"][1]["port"] = 70000
    path.write_text(json.dumps(bad))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"listeners[1].port: 70000 is not a valid port (1-65535) in {path}"
    path.write_text(json.dumps(BASE))
    assert load_config(str(path)).name == "static-ingress"


def test_unreadable_and_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "missing.json")
    assert str(e.value) == f"cannot read NLB config {tmp_path / 'missing.json'}: No such file or directory"
    path = tmp_path / "broken.json"
    path.write_text('{"name": ')
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: invalid JSON at line 1 column 10: Expecting value"
    path.write_text("[]")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"(top level): expected a JSON object, got list in {path}"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split("/")]
        for k in keys[:-1]:
            d = d[k]
        if value is DELETE:
            del d[keys[-1]]
        else:
            d[keys[-1]] = value
    return mutate


DELETE = object()


@pytest.mark.parametrize("path, value, message", [
    ("name", DELETE, "name: is required"),
    ("name", "", 'name: "" is not a non-empty string'),
    ("nodes", [], "nodes: must not be empty"),
    ("nodes", {}, "nodes: expected a list, got {}"),
    ("nodes/0/elastic_ip", "198.51.100.300", 'nodes[0].elastic_ip: "198.51.100.300" is not an IPv4 address'),
    ("nodes/1/name", "nlb-a", 'nodes[1].name: "nlb-a" duplicates nodes[0].name'),
    ("nodes/1/elastic_ip", "198.51.100.10", 'nodes[1].elastic_ip: "198.51.100.10" duplicates nodes[0].elastic_ip'),
    ("nodes/0/private_ip", None, "nodes[0].private_ip: null is not a non-empty string"),
    ("attributes/load_balancing.cross_zone.enabled", "yes",
     "attributes.load_balancing.cross_zone.enabled: ValidationError: Load balancer attribute"
     " 'load_balancing.cross_zone.enabled' value 'yes' is not valid: must be one of true, false"),
    ("attributes/load_balancing.cross_zone.enabled", False,
     'attributes.load_balancing.cross_zone.enabled: false must be a string (AWS attribute values are strings, e.g. "true")'),
    ("listeners/1/port", 0, "listeners[1].port: 0 is not a valid port (1-65535)"),
    ("listeners/1/port", "80", 'listeners[1].port: "80" is not a valid port (1-65535)'),
    ("listeners/1/port", 443, "listeners[1].port: 443 duplicates listeners[0].port"),
    ("listeners/1/protocol", "UDP", 'listeners[1].protocol: "UDP" is not one of TCP, TLS'),
    ("listeners/1/target_group", "nope",
     'listeners[1].target_group: "nope" is not a target group (known: haproxy-https, haproxy-http)'),
    ("listeners/1/target_group", "haproxy-https",
     'listeners[1].target_group: TCP listener cannot forward to TLS target group "haproxy-https" (allowed: TCP)'),
    ("listeners/0/certificate", DELETE, "listeners[0].certificate: is required"),
    ("listeners/0/certificate/pem", DELETE, "listeners[0].certificate.pem: is required"),
    ("listeners/0/ssl_policy", "ELBSecurityPolicy-Custom",
     "listeners[0].ssl_policy: SSLPolicyNotFound: SSL policy 'ELBSecurityPolicy-Custom' not found (known: "
     + ", ".join(SSL_POLICIES) + ")"),
    ("listeners/0/alpn_policy", "HTTP3",
     'listeners[0].alpn_policy: "HTTP3" is not one of None, HTTP1Only, HTTP2Only, HTTP2Optional, HTTP2Preferred'),
    ("listeners/1/certificate", {"pem": "x"}, "listeners[1].certificate: only TLS listeners take certificates and ssl_policy"),
    ("listeners/1/certificates", [{"pem": "x"}],
     "listeners[1].certificates: only TLS listeners take certificates and ssl_policy"),
    ("listeners/0/certificates", {"pem": "x"}, 'listeners[0].certificates: expected a list, got {"pem": "x"}'),
    ("listeners/0/certificates", [{"arn": "arn:aws:acm:eu-west-2:123456789012:certificate/lab-www", "pem": "/y.pem"}],
     'listeners[0].certificates[0]: "arn:aws:acm:eu-west-2:123456789012:certificate/lab-www" is already the default'
     " certificate or in the list"),
    ("listeners/0/certificates", [{"arn": "a1", "pem": "/a.pem"}, {"arn": "a1", "pem": "/a.pem"}],
     'listeners[0].certificates[1]: "a1" is already the default certificate or in the list'),
    ("listeners/0/certificates", [{"arn": f"a{i}", "pem": f"/{i}.pem"} for i in range(26)],
     "listeners: TooManyCertificates: a load balancer has at most 25 certificates in its listeners' certificate lists"),
    ("listeners/0/certificates", [{"arn": "a1", "pem": "/a.pem", "key_algorithm": "EC_x"}],
     'listeners[0].certificates[0].key_algorithm: "EC_x" is not one of RSA_1024, RSA_2048, RSA_3072, RSA_4096,'
     " EC_prime256v1, EC_secp384r1, EC_secp521r1"),
    ("target_groups/0/protocol", "HTTP", 'target_groups[0].protocol: "HTTP" is not one of TCP, TLS'),
    ("target_groups/0/target_type", "lambda",
     'target_groups[0].target_type: "lambda" is not one of instance, ip, alb'),
    ("target_groups/1/name", "haproxy-https",
     'target_groups[1].name: "haproxy-https" duplicates target_groups[0].name'),
    ("target_groups/0/attributes/proxy_protocol_v2.enabled", "True",
     "target_groups[0].attributes.proxy_protocol_v2.enabled: ValidationError: Target group attribute"
     " 'proxy_protocol_v2.enabled' value 'True' is not valid: must be one of true, false"),
    ("target_groups/0/attributes/proxy_protocol_v2.client_to_server.header_placement", "on_syn",
     "target_groups[0].attributes.proxy_protocol_v2.client_to_server.header_placement: ValidationError: Target"
     " group attribute 'proxy_protocol_v2.client_to_server.header_placement' value 'on_syn' is not valid: must be"
     " one of on_first_ack_with_payload, on_connect"),
    ("target_groups/0/attributes/deregistration_delay.timeout_seconds", "3601",
     "target_groups[0].attributes.deregistration_delay.timeout_seconds: ValidationError: Target group attribute"
     " 'deregistration_delay.timeout_seconds' value '3601' is not valid: must be an integer from 0 to 3600"),
    ("target_groups/0/attributes/load_balancing.cross_zone.enabled", "maybe",
     "target_groups[0].attributes.load_balancing.cross_zone.enabled: ValidationError: Target group attribute"
     " 'load_balancing.cross_zone.enabled' value 'maybe' is not valid: must be one of true, false,"
     " use_load_balancer_configuration"),
    ("target_groups/0/targets/1/az", "c",
     'target_groups[0].targets[1].az: "c" is not an enabled Availability Zone of the load balancer (nodes: a, b)'),
    ("target_groups/0/targets/1/ip", "10.20.1.20",
     'target_groups[0].targets[1].ip: "10.20.1.20:443" duplicates target_groups[0].targets[0].ip'),
    ("target_groups/0/targets/0/port", 99999, "target_groups[0].targets[0].port: 99999 is not a valid port (1-65535)"),
    ("target_groups/0/health_check/protocol", "UDP",
     f"{HC}.protocol: ValidationError: 1 validation error detected: Value 'UDP' at 'healthCheckProtocol'"
     " failed to satisfy constraint: Member must satisfy enum value set: [TCP, HTTP, HTTPS]"),
    ("target_groups/0/health_check/port", "trafic-port",
     f"{HC}.port: ValidationError: Health check port 'trafic-port' is not valid: must be 'traffic-port' or a"
     " port from 1 to 65535"),
    ("target_groups/0/health_check/port", "0",
     f"{HC}.port: ValidationError: Health check port '0' is not valid: must be 'traffic-port' or a port from 1"
     " to 65535"),
    ("target_groups/0/health_check/path", "/health",
     f"{HC}.path: ValidationError: Health check path cannot be set when the health check protocol is TCP"),
    ("target_groups/0/health_check/interval_seconds", 1,
     f"{HC}.interval_seconds: ValidationError: 1 validation error detected: Value '1' at 'healthCheckIntervalSeconds'"
     " failed to satisfy constraint: Member must have value greater than or equal to 5"),
    ("target_groups/0/health_check/timeout_seconds", 5,
     f"{HC}.timeout_seconds: ValidationError: Health check interval must be greater than the timeout."),
    ("target_groups/0/health_check/timeout_seconds", 0.5,
     f"{HC}.timeout_seconds: ValidationError: 1 validation error detected: Value '0.5' at 'healthCheckTimeoutSeconds'"
     " failed to satisfy constraint: Member must be an integer"),
    ("target_groups/0/health_check/healthy_threshold", 11,
     f"{HC}.healthy_threshold: ValidationError: 1 validation error detected: Value '11' at 'healthyThresholdCount'"
     " failed to satisfy constraint: Member must have value less than or equal to 10"),
    ("target_groups/0/health_check/unhealthy_threshold", True,
     f"{HC}.unhealthy_threshold: ValidationError: 1 validation error detected: Value 'True' at 'unhealthyThresholdCount'"
     " failed to satisfy constraint: Member must be an integer"),
    ("target_groups/0/health_check/matcher", "200-299",
     f"{HC}.matcher: ValidationError: Health check matcher cannot be set when the health check protocol is TCP"),
    ("target_groups/0/alb", {"dns_name": "alb.lab.internal", "resolver": "10.20.0.2", "subnets": {}},
     "target_groups[0].alb: only target groups of target type alb follow an ALB"),
    ("admin/port", 65536, "admin.port: 65536 is not a valid port (1-65535)"),
    ("admin/address", "localhost", 'admin.address: "localhost" is not an IPv4 address'),
    ("transparent", "yes", 'transparent: "yes" must be true or false'),
    ("relaxed_limits", 1, "relaxed_limits: 1 must be true or false"),
])
def test_errors(path: str, value: Any, message: str) -> None:
    d = copy.deepcopy(BASE)
    _set(path, value)(d)
    with pytest.raises(ConfigError) as e:
        load_config(d)
    assert str(e.value) == message


@pytest.mark.parametrize("setting, value, message", [
    ("path", "health", f"{HC}.path: ValidationError: Health check path 'health' must start with '/'"),
    ("path", "/" + "x" * 1024, f"{HC}.path: ValidationError: 1 validation error detected: Value '/{'x' * 1024}' at"
     " 'healthCheckPath' failed to satisfy constraint: Member must have length between 1 and 1024"),
    ("matcher", "2xx", f"{HC}.matcher: ValidationError: Health check matcher HTTP code '2xx' is not valid: must be"
     " codes or ranges from 200 to 599, e.g. 200, 200,202 or 200-399"),
    ("matcher", "600", f"{HC}.matcher: ValidationError: Health check matcher HTTP code '600' is not valid: must be"
     " codes or ranges from 200 to 599, e.g. 200, 200,202 or 200-399"),
])
def test_http_health_check_errors(setting: str, value: str, message: str) -> None:
    d = copy.deepcopy(BASE)
    d["target_groups"][0]["health_check"].update(protocol="HTTP", **{setting: value})
    with pytest.raises(ConfigError) as e:
        load_config(d)
    assert str(e.value) == message


def test_alb_target_group_needs_tcp_listener() -> None:
    d = copy.deepcopy(BASE)
    d["target_groups"][1]["target_type"] = "alb"
    d["target_groups"][1]["health_check"] = {"protocol": "HTTP"}
    d["listeners"][1]["protocol"] = "TLS"
    d["listeners"][1]["certificate"] = {"pem": "/x.pem"}
    with pytest.raises(ConfigError) as e:
        load_config(d)
    assert str(e.value) == 'listeners[1].protocol: "TLS": alb target groups need a TCP listener'


# The simulator's own loader enforces what AWS forbids for `alb` target groups and TLS stickiness
# (these passed before the one ELBv2 vocabulary: only the topology loader checked them).
@pytest.mark.parametrize("change, message", [
    ({"health_check": {}},
     "target_groups[1].health_check.protocol: ValidationError: Health check protocol 'TCP' is not supported for"
     " target groups with target type 'alb'; use HTTP or HTTPS"),
    ({"attributes": {"preserve_client_ip.enabled": "false"}},
     "target_groups[1].attributes: InvalidConfigurationRequest: The attributes of target groups with target type"
     " 'alb' cannot be modified"),
    ({"attributes": {"proxy_protocol_v2.enabled": "true"}},
     "target_groups[1].attributes: InvalidConfigurationRequest: The attributes of target groups with target type"
     " 'alb' cannot be modified"),
])
def test_alb_target_groups_keep_what_aws_fixes(change: dict, message: str) -> None:
    d = copy.deepcopy(BASE)
    d["target_groups"][1].update(target_type="alb", health_check={"protocol": "HTTP"}, attributes={})
    d["target_groups"][1].update(change)
    with pytest.raises(ConfigError) as e:
        load_config(d)
    assert str(e.value) == message


def test_no_stickiness_for_tls_target_groups_behind_tls_listeners() -> None:
    d = copy.deepcopy(BASE)
    assert d["listeners"][0]["protocol"] == "TLS" and d["listeners"][0]["target_group"] == "haproxy-https"
    d["target_groups"][0].update(protocol="TLS")
    d["target_groups"][0]["attributes"]["stickiness.enabled"] = "true"
    with pytest.raises(ConfigError) as e:
        load_config(d)
    assert str(e.value) == ("listeners[0].target_group: InvalidConfigurationRequest: Stickiness is not supported for"
                            " target groups with the TLS protocol behind TLS listeners")


def test_relaxed_limits_allow_fast_health_checks() -> None:
    d = copy.deepcopy(BASE)
    d["relaxed_limits"] = True
    d["target_groups"][0]["health_check"].update(interval_seconds=0.2, timeout_seconds=0.5)
    hc = load_config(d).target_groups[0].health_check
    assert (hc.interval_seconds, hc.timeout_seconds) == (0.2, 0.5)


def test_target_group_cross_zone_wins_over_load_balancer() -> None:
    d = copy.deepcopy(BASE)
    d["target_groups"][0]["attributes"]["load_balancing.cross_zone.enabled"] = "true"
    cfg = load_config(d)
    assert (cfg.cross_zone_for(cfg.target_groups[0]), cfg.cross_zone_for(cfg.target_groups[1])) == (True, False)


def test_transparent_false_needs_no_routing() -> None:
    d = copy.deepcopy(BASE)
    d["transparent"] = False
    assert load_config(d).needs_transparent_routing is False
