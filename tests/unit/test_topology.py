"""Topology loading: defaults per AWS, derived settings, and exact error messages."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from lab.errors import TopologyError
from lab.load import _Loader, load_topology, read_topology_data, resolve_topology_path
from services.elbv2.security_policies import SSL_POLICIES

DEFAULT = read_topology_data(Path("topologies/default.yaml"))


def load(data: dict):
    return _Loader(data, "t.yaml").load()


def edited(path: str, value) -> dict:
    """A copy of the default topology with one value replaced (path like 'nlb.listeners.1.port')."""
    data = copy.deepcopy(DEFAULT)
    node = data
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


def test_default_topology_loads_with_aws_defaults():
    topology = load_topology("default")
    https = topology.nlb.target_group("haproxy-https")
    assert https.target_type == "instance"
    assert https.preserve_client_ip is True  # instance targets: AWS default enabled
    assert https.proxy_protocol_v2 is False
    assert https.attributes["deregistration_delay.timeout_seconds"] == "300"
    assert topology.haproxy.accept_proxy is False
    assert topology.haproxy.route_internet_via_nlb is True
    assert [str(n.elastic_ip) for n in topology.nlb.nodes] == ["198.51.100.10", "198.51.100.11"]
    assert topology.nlb.arn.startswith("arn:aws:elasticloadbalancing:eu-west-2:123456789012:loadbalancer/net/static-ingress/")


def test_ip_proxy_v2_variant_extends_default():
    topology = load_topology("ip-proxy-v2")
    https = topology.nlb.target_group("haproxy-https")
    assert (https.target_type, https.preserve_client_ip, https.proxy_protocol_v2) == ("ip", False, True)
    assert topology.haproxy.accept_proxy is True  # auto: follows the NLB target group
    assert topology.haproxy.route_internet_via_nlb is False
    assert topology.alb == load_topology("default").alb


def test_ip_target_without_proxy_protocol_loses_client_ip():
    data = edited("nlb.target_groups.haproxy-https.target_type", "ip")
    topology = load(data)
    https = topology.nlb.target_group("haproxy-https")
    assert https.preserve_client_ip is False
    assert topology.haproxy.accept_proxy is False


@pytest.mark.parametrize("path, value, message", [
    ("nlb.listeners.1.port", 70000, "nlb.listeners[1].port: 70000 is not a valid port (1-65535) in t.yaml"),
    ("nlb.listeners.0.protocol", "UDP", "nlb.listeners[0].protocol: 'UDP' is not one of TCP, TLS in t.yaml"),
    ("nlb.listeners.0.target_group", "nope",
     "nlb.listeners[0].target_group: unknown target group 'nope' (defined: haproxy-https, haproxy-http) in t.yaml"),
    ("nlb.listeners.0.certificate", "other",
     "nlb.listeners[0].certificate: CertificateNotFound: certificate 'other' not found (the topology's certificates:"
     " www) in t.yaml"),
    ("nlb.target_groups.haproxy-https.attributes", {"proxy_protocol_v2.enabled": "yes"},
     "nlb.target_groups.haproxy-https.attributes.proxy_protocol_v2.enabled: ValidationError: Target group attribute"
     " 'proxy_protocol_v2.enabled' value 'yes' is not valid: must be one of true, false in t.yaml"),
    ("nlb.target_groups.haproxy-https.attributes", {"deregistration_delay.timeout_seconds": "4000"},
     "nlb.target_groups.haproxy-https.attributes.deregistration_delay.timeout_seconds: ValidationError: Target group"
     " attribute 'deregistration_delay.timeout_seconds' value '4000' is not valid: must be an integer from 0 to 3600"
     " in t.yaml"),
    ("nlb.target_groups.haproxy-https.attributes", {"proxy_protocol.enabled": "true"},
     "nlb.target_groups.haproxy-https.attributes.proxy_protocol.enabled: ValidationError: Target group attribute key"
     " 'proxy_protocol.enabled' is not recognized in t.yaml"),
    # The ALB's target groups are keyed by name in the YAML, and errors name them so (they used to come
    # back from the simulator's own loader as alb.target_groups[1]...).
    ("alb.target_groups.frontend.attributes", {"stickiness.type": "source_ip"},
     "alb.target_groups.frontend.attributes.stickiness.type: ValidationError: Target group attribute"
     " 'stickiness.type' value 'source_ip' is not valid: must be one of lb_cookie, app_cookie in t.yaml"),
    ("alb.target_groups.frontend.attributes", {"load_balancing.algorithm.anomaly_mitigation": "on"},
     "alb.target_groups.frontend.attributes.load_balancing.algorithm.anomaly_mitigation: ValidationError: Anomaly mitigation is only supported with the weighted"
     " random load balancing algorithm in t.yaml"),
    ("alb.attributes", {"client_keep_alive.seconds": 30},
     "alb.attributes.client_keep_alive.seconds: ValidationError: Load balancer attribute 'client_keep_alive.seconds'"
     " value '30' is not valid: must be an integer from 60 to 604800 in t.yaml"),
    ("nlb.attributes", {"deletion_protection.enabled": "on"},
     "nlb.attributes.deletion_protection.enabled: ValidationError: Load balancer attribute"
     " 'deletion_protection.enabled' value 'on' is not valid: must be one of true, false in t.yaml"),
    ("nlb.listeners.0.attributes", {"tcp.idle_timeout.seconds": 120},
     "nlb.listeners[0].attributes: ValidationError: Listener attribute 'tcp.idle_timeout.seconds' is only supported"
     " on TCP listeners, not TLS in t.yaml"),
    ("nlb.target_groups.haproxy-https.targets", ["haproxy-c"],
     "nlb.target_groups.haproxy-https.targets[0]: unknown target 'haproxy-c' (known here: haproxy-a, haproxy-b) in t.yaml"),
    ("nlb.target_groups.haproxy-https.health_check", {"interval_seconds": 3},
     "nlb.target_groups.haproxy-https.health_check.interval_seconds: ValidationError: 1 validation error detected: Value '3' at"
     " 'healthCheckIntervalSeconds' failed to satisfy constraint: Member must have value greater than or equal to 5"
     " in t.yaml"),
    ("nlb.target_groups.haproxy-https.health_check", {"healthy_threshold": 11},
     "nlb.target_groups.haproxy-https.health_check.healthy_threshold: ValidationError: 1 validation error detected: Value '11' at"
     " 'healthyThresholdCount' failed to satisfy constraint: Member must have value less than or equal to 10 in t.yaml"),
    # AWS does not shorten a default timeout to fit a short interval (decisions #73): the topology says so.
    ("nlb.target_groups.haproxy-https.health_check", {"interval_seconds": 10},
     "nlb.target_groups.haproxy-https.health_check.interval_seconds: ValidationError: Health check interval must be greater than the timeout. (the default"
     " timeout of TCP health checks is 10 s: set timeout_seconds below interval_seconds) in t.yaml"),
    ("nlb.target_groups.haproxy-https.health_check", {"interval_seconds": 10, "timeout_seconds": 10},
     "nlb.target_groups.haproxy-https.health_check.timeout_seconds: ValidationError: Health check interval must be greater than the timeout. in t.yaml"),
    ("nlb.target_groups.haproxy-https.health_check", {"protocol": "TCP", "path": "/health"},
     "nlb.target_groups.haproxy-https.health_check.path: ValidationError: Health check path cannot be set when the health check protocol is TCP in t.yaml"),
    ("alb.target_groups.api.health_check", {"matcher": "200-599"},
     "alb.target_groups.api.health_check.matcher: ValidationError: Health check matcher HTTP code '200-599' is not"
     " valid: must be codes or ranges from 200 to 499, e.g. 200, 200,202 or 200-399 in t.yaml"),
    ("alb.target_groups.api.health_check", {"protocol": "TCP"},
     "alb.target_groups.api.health_check.protocol: ValidationError: 1 validation error detected: Value 'TCP' at"
     " 'healthCheckProtocol' failed to satisfy constraint: Member must satisfy enum value set: [HTTP, HTTPS] in t.yaml"),
    ("networks.vpc.cidr", "10.20.0.0/33",
     "networks.vpc.cidr: '10.20.0.0/33' is not a valid IPv4 CIDR ('33' is not a valid netmask) in t.yaml"),
    ("networks.vpc.cidr", "198.51.100.0/24", "networks.vpc.cidr: 198.51.100.0/24 overlaps the internet subnet 198.51.100.0/24 in t.yaml"),
    ("haproxy.instances.1.address", "10.20.1.20", "haproxy.instances[1].address: 10.20.1.20 is already used by haproxy-a in t.yaml"),
    ("haproxy.instances.1.address", "10.20.1.21", "haproxy.instances[1].address: 10.20.1.21 is not in the subnet of AZ b (10.20.2.0/24) in t.yaml"),
    ("haproxy.instances.0.az", "c", "haproxy.instances[0].az: 'c' is not an availability zone of this VPC (a, b) in t.yaml"),
    ("haproxy.verify", "maybe", "haproxy.verify: 'maybe' is not one of required, none in t.yaml"),
    ("client.source_range", "198.51.100.100-198.51.100.10",
     "client.source_range: '198.51.100.100-198.51.100.10' must be FIRST-LAST inside 198.51.100.0/24 in t.yaml"),
    ("client.source_range", "198.51.100.101-198.51.100.199",
     "client.source_range: '198.51.100.101-198.51.100.199' must include the client address 198.51.100.100 in t.yaml"),
    ("client.source_range", "198.51.100.50-198.51.100.199",
     "client.source_range: '198.51.100.50-198.51.100.199' includes 198.51.100.53, used by dns in t.yaml"),
    ("alb.nodes", [{"az": "a", "address": "10.20.1.30"}],
     "alb.nodes: an Application Load Balancer needs nodes in at least two availability zones in t.yaml"),
    ("nlb.listeners.0.ssl_policy", "Modern", "nlb.listeners[0].ssl_policy: SSLPolicyNotFound: SSL policy 'Modern' not"
     f" found (known: {', '.join(SSL_POLICIES)}) in t.yaml"),
    # The ALB's own loader took any name here before the one ELBv2 vocabulary; the lab took ELBSecurityPolicy-*.
    ("alb.listeners.0.ssl_policy", "ELBSecurityPolicy-Modern", "alb.listeners[0].ssl_policy: SSLPolicyNotFound: SSL"
     f" policy 'ELBSecurityPolicy-Modern' not found (known: {', '.join(SSL_POLICIES)}) in t.yaml"),
    # Names that reach file names, haproxy.cfg, the DNS zone and certificates (decisions.md #65).
    ("alb.name", "internal-app", "alb.name: 'internal-app' is not a valid load balancer name (at most 32 characters,"
     " only letters, digits and hyphens, not beginning or ending with a hyphen, not beginning with 'internal-') in t.yaml"),
    ("nlb.name", "a b", "nlb.name: 'a b' is not a valid load balancer name (at most 32 characters, only letters,"
     " digits and hyphens, not beginning or ending with a hyphen, not beginning with 'internal-') in t.yaml"),
    ("nlb.name", "n" * 33, f"nlb.name: '{'n' * 33}' is not a valid load balancer name (at most 32 characters, only"
     " letters, digits and hyphens, not beginning or ending with a hyphen, not beginning with 'internal-') in t.yaml"),
    ("alb.dns_name", "alb.lab.internal\nbind :1", "alb.dns_name: 'alb.lab.internal\\nbind :1' is not a DNS name"
     " (lower-case letters, digits and hyphens in dot-separated labels) in t.yaml"),
    ("alb.dns_name", "a..lab.internal", "alb.dns_name: 'a..lab.internal' is not a DNS name (lower-case letters, digits"
     " and hyphens in dot-separated labels) in t.yaml"),
    ("alb.dns_name", "alb.example.com", "alb.dns_name: 'alb.example.com' is not inside the private zone"
     " 'lab.internal', which the lab's DNS serves in t.yaml"),
    ("dns.private_zone", "l\u00e9.internal", "dns.private_zone: 'l\u00e9.internal' is not a DNS zone name (lower-case"
     " letters, digits and hyphens in dot-separated labels) in t.yaml"),
    ("name", "../x", "name: '../x' is not a topology name (lower-case letters, digits and hyphens, at most 64; it"
     " names .lab/compose.<name>.yaml) in t.yaml"),
    ("site", "www.lab.test\r\nX: 1", "site: 'www.lab.test\\r\\nX: 1' is not a DNS name (lower-case letters, digits"
     " and hyphens in dot-separated labels) in t.yaml"),
    ("region", "eu west 2", "region: 'eu west 2' is not an AWS Region name (like eu-west-2) in t.yaml"),
    ("web.0.service", "Front End", "web[0].service: 'Front End' is not a service label (1-32 lower-case letters,"
     " digits and hyphens, starting with a letter) in t.yaml"),
])
def test_errors_name_path_value_and_file(path, value, message):
    with pytest.raises(TopologyError) as caught:
        load(edited(path, value))
    assert str(caught.value) == message


def test_unknown_key_lists_allowed_keys():
    data = copy.deepcopy(DEFAULT)
    data["nlb"]["listners"] = []
    with pytest.raises(TopologyError) as caught:
        load(data)
    assert str(caught.value) == ("nlb.listners: unknown key (allowed here: name, attributes, subnet_mappings, listeners, "
                                 "target_groups, relaxed_limits, vpc_endpoint_id) in t.yaml")


def test_tls_listener_cannot_forward_to_alb_target_group():
    data = edited("nlb.target_groups.haproxy-https.target_type", "alb")
    data["nlb"]["target_groups"]["haproxy-https"]["protocol"] = "TCP"
    data["nlb"]["target_groups"]["haproxy-https"]["targets"] = ["web-app"]
    data["nlb"]["target_groups"]["haproxy-https"]["health_check"] = {"protocol": "HTTPS"}
    with pytest.raises(TopologyError) as caught:
        load(data)
    assert str(caught.value) == ("nlb.listeners[0].target_group: a TLS listener cannot forward to target groups of "
                                 "target type alb (use a TCP listener) in t.yaml")


@pytest.mark.parametrize("targets, port, hc, message", [
    (["haproxy-a"], 443, {"protocol": "HTTPS"}, "nlb.target_groups.haproxy-http.targets: a target group of target "
     "type alb holds exactly one target: the ALB's name ('web-app') in t.yaml"),
    (["web-app"], 8443, {"protocol": "HTTPS"}, "nlb.target_groups.haproxy-http.targets: the target group port "
     "8443 must be a listener port of the ALB (443, 80) in t.yaml"),
    (["web-app"], 443, {"protocol": "TCP"}, "nlb.target_groups.haproxy-http.health_check.protocol: ValidationError:"
     " Health check protocol 'TCP' is not supported for target groups with target type 'alb'; use HTTP or HTTPS in"
     " t.yaml"),
])
def test_alb_target_groups(targets, port, hc, message):
    data = edited("nlb.target_groups.haproxy-http.target_type", "alb")
    tg = data["nlb"]["target_groups"]["haproxy-http"]
    tg.update(targets=targets, port=port, health_check=hc)
    with pytest.raises(TopologyError) as caught:
        load(data)
    assert str(caught.value) == message


@pytest.mark.parametrize("attributes", [{"preserve_client_ip.enabled": False}, {"proxy_protocol_v2.enabled": True},
                                        {"deregistration_delay.timeout_seconds": 300}])
def test_alb_target_groups_keep_their_attributes(attributes):
    """NLB-ALBT23: an `alb` target group's attributes are fixed at AWS's defaults, even set to a default."""
    data = edited("nlb.target_groups.haproxy-http.target_type", "alb")
    data["nlb"]["target_groups"]["haproxy-http"].update(targets=["web-app"], health_check={"protocol": "HTTP"},
                                                         attributes=attributes)
    with pytest.raises(TopologyError) as caught:
        load(data)
    assert str(caught.value) == ("nlb.target_groups.haproxy-http.attributes: InvalidConfigurationRequest: The"
                                 " attributes of target groups with target type 'alb' cannot be modified in t.yaml")


def test_no_stickiness_for_a_tls_target_group_behind_a_tls_listener():
    data = edited("nlb.target_groups.haproxy-https.attributes", {"stickiness.enabled": True})
    load(edited("nlb.target_groups.haproxy-http.attributes", {"stickiness.enabled": True}))  # TCP: allowed
    with pytest.raises(TopologyError) as caught:
        load(data)
    assert str(caught.value) == ("nlb.listeners[0].target_group: InvalidConfigurationRequest: Stickiness is not"
                                 " supported for target groups with the TLS protocol behind TLS listeners in t.yaml")


def test_alb_target_group_expands_to_the_alb_nodes():
    data = edited("nlb.target_groups.haproxy-http.target_type", "alb")
    data["nlb"]["target_groups"]["haproxy-http"].update(targets=["web-app"], health_check={"protocol": "HTTP"})
    tg = load(data).nlb.target_group("haproxy-http")
    assert [(t.id, str(t.ip), t.port, t.az) for t in tg.targets] == [("alb-a", "10.20.1.30", 80, "a"),
                                                                     ("alb-b", "10.20.2.30", 80, "b")]
    assert tg.preserve_client_ip and tg.health_check.protocol == "HTTP"


def test_invalid_alb_rule_is_rejected_at_load(tmp_path):
    data = copy.deepcopy(DEFAULT)
    data["alb"]["listeners"][0]["rules"][0]["priority"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(TopologyError) as caught:
        load_topology(str(path))
    assert str(caught.value) == (f"alb.listeners[0].rules[0].priority: ValidationError: Priority '0' must be "
                                 f"between 1 and 50000 in {path}")


def test_unknown_topology_name_lists_known():
    with pytest.raises(TopologyError) as caught:
        resolve_topology_path("nope")
    assert str(caught.value) == ("unknown topology 'nope' (known: alb-rules, default, haproxy-resolve-once, ip-proxy-v2, nlb-alb, nlb-ip, nlb-ops, sni; or give a path to a .yaml file)")


def test_bad_yaml_reports_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nnlb: [\n")
    with pytest.raises(TopologyError) as caught:
        load_topology(str(path))
    assert str(caught.value).startswith(f"{path}: not valid YAML at line 3")


@pytest.mark.parametrize("content, message", [
    (b"name: x\nnlb: \xff\xfe\n", "not valid YAML at line 2: not UTF-8 text (byte 0xff)"),
    (b"\x89PNG\r\n\x1a\n", "not valid YAML at line 1: not UTF-8 text (byte 0x89)"),
    (b"name: x\nnlb: " + b"[" * 5000 + b"]" * 5000 + b"\n", "not valid YAML: nested too deeply"),
    (b"name: x\nnlb: " + b"{a: " * 3000 + b"1" + b"}" * 3000 + b"\n", "not valid YAML: nested too deeply"),
])
def test_topology_file_that_is_not_readable_yaml_is_one_line(tmp_path, content, message):
    """Binary files and nesting deeper than PyYAML's recursion used to end in a traceback."""
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(TopologyError) as caught:
        load_topology(str(path))
    assert str(caught.value) == f"{path}: {message}"


CERTS = {"api": {"domain_name": "api.lab.test"},
         "apps": {"domain_name": "*.apps.lab.test", "subject_alternative_names": ["apps.lab.test"],
                  "key_algorithm": "RSA_2048"}}


def with_certificates(nlb_list=None, alb_list=None, certs=CERTS) -> dict:
    data = copy.deepcopy(DEFAULT)
    data["certificates"] = copy.deepcopy(certs)
    if nlb_list is not None:
        data["nlb"]["listeners"][0]["certificates"] = nlb_list
    if alb_list is not None:
        data["alb"]["listeners"][0]["certificates"] = alb_list
    return data


def test_certificate_lists_reach_both_listeners_and_their_configs():
    from lab.render.simulators import alb_config, nlb_config, validate_simulator_configs
    topology = load(with_certificates(["api", "apps"], ["apps"]))
    by_name = {c.name: c for c in topology.certificates}
    assert by_name["www"].domain_names == ("www.lab.test", "*.lab.test", "lab.test")
    assert by_name["apps"].domain_names == ("*.apps.lab.test", "apps.lab.test")
    assert (by_name["apps"].key_algorithm, by_name["apps"].pem_file) == ("RSA_2048", "acm-apps.pem")
    assert by_name["api"].arn.startswith("arn:aws:acm:eu-west-2:123456789012:certificate/")
    assert [c.name for c in topology.nlb.listeners[0].certificates] == ["api", "apps"]
    assert topology.nlb.listeners[0].certificate.name == "www"
    assert [c.name for c in topology.alb.listeners[0].certificates] == ["apps"]
    nlb_tls = nlb_config(topology)["listeners"][0]
    assert nlb_tls["certificates"] == [
        {"arn": by_name["api"].arn, "pem": "/lab/certs/acm-api.pem", "key_algorithm": "EC_prime256v1"},
        {"arn": by_name["apps"].arn, "pem": "/lab/certs/acm-apps.pem", "key_algorithm": "RSA_2048"}]
    assert alb_config(topology)["listeners"][0]["certificates"] == [
        {"arn": by_name["apps"].arn, "pem": "/lab/certs/acm-apps.pem", "key_algorithm": "RSA_2048"}]
    validate_simulator_configs(topology)  # both simulators' loaders accept the lists
    # The default topology names no list: its rendered configs carry none.
    assert "certificates" not in nlb_config(load(copy.deepcopy(DEFAULT)))["listeners"][0]


@pytest.mark.parametrize("data, message", [
    (with_certificates(["api", "api"]),
     "nlb.listeners[0].certificates[1]: certificate 'api' is already in the list in t.yaml"),
    (with_certificates(["www"]),
     "nlb.listeners[0].certificates[0]: 'www' is the listener's default certificate; the list holds the others in t.yaml"),
    (with_certificates(["nope"]),
     "nlb.listeners[0].certificates[0]: CertificateNotFound: certificate 'nope' not found (the topology's"
     " certificates: www, api, apps) in t.yaml"),
    (with_certificates(alb_list=["apps", "nope"]),
     "alb.listeners[0].certificates[1]: CertificateNotFound: certificate 'nope' not found (the topology's"
     " certificates: www, api, apps) in t.yaml"),
    (with_certificates(certs={"www": {"domain_name": "x.lab.test"}}),
     "certificates.www: 'www' is the site's certificate, always issued (site, *.zone, zone); pick another name in t.yaml"),
    (with_certificates(certs={"API": {"domain_name": "x.lab.test"}}),
     "certificates.API: is not a certificate name (1-32 lower-case letters, digits and hyphens) in t.yaml"),
    (with_certificates(certs={"api": {"domain_name": "api.*.lab.test"}}),
     "certificates.api.domain_name: 'api.*.lab.test' is not a fully qualified domain name (a wildcard only as the"
     " whole first label: *.example.com) in t.yaml"),
    (with_certificates(certs={"api": {"domain_name": "api.lab.test", "subject_alternative_names": ["API.lab.test"]}}),
     "certificates.api.subject_alternative_names[0]: 'api.lab.test' is already a name of this certificate in t.yaml"),
    (with_certificates(certs={"api": {"domain_name": "api.lab.test", "key_algorithm": "EC_secp384r1"}}),
     "certificates.api.key_algorithm: 'EC_secp384r1' is not one of EC_prime256v1, RSA_2048 in t.yaml"),
    (with_certificates(certs={"api": {"domain": "api.lab.test"}}),
     "certificates.api.domain: unknown key (allowed here: domain_name, subject_alternative_names, key_algorithm)"
     " in t.yaml"),
])
def test_certificate_errors(data, message):
    with pytest.raises(TopologyError) as caught:
        load(data)
    assert str(caught.value) == message


@pytest.mark.parametrize("listener, key, message", [
    ("nlb.listeners.1", "certificate", "nlb.listeners[1].certificate: ValidationError: only TLS listeners take a"
     " certificate, a certificate list and an ssl_policy in t.yaml"),
    ("nlb.listeners.1", "certificates", "nlb.listeners[1].certificates: ValidationError: only TLS listeners take a"
     " certificate, a certificate list and an ssl_policy in t.yaml"),
    ("alb.listeners.1", "certificate", "alb.listeners[1].certificate: ValidationError: only HTTPS listeners take a"
     " certificate, a certificate list and an ssl_policy in t.yaml"),
    ("alb.listeners.1", "certificates", "alb.listeners[1].certificates: ValidationError: only HTTPS listeners take a"
     " certificate, a certificate list and an ssl_policy in t.yaml"),
])
def test_certificates_on_plain_listeners_are_refused(listener, key, message):
    data = with_certificates()
    section, _, index = listener.split(".")
    data[section]["listeners"][int(index)][key] = "www" if key == "certificate" else ["api"]
    with pytest.raises(TopologyError) as caught:
        load(data)
    assert str(caught.value) == message


def test_lab_certs_issues_every_named_certificate_and_reissues_changed_ones(tmp_path):
    import ssl

    from lab.certs import ensure_certificates
    from services.certselect import read_facts
    topology = load(with_certificates(["api", "apps"]))
    written = ensure_certificates(topology, tmp_path)
    assert {"public-ca.pem", "www.pem", "acm-api.pem", "acm-apps.pem"} <= set(written)
    assert read_facts(str(tmp_path / "acm-apps.pem")).names == ("*.apps.lab.test", "apps.lab.test")
    ca = ssl.create_default_context(cafile=str(tmp_path / "public-ca.pem"))
    ca.load_cert_chain(str(tmp_path / "acm-apps.pem"))  # chain + key, RSA key matches its certificate
    assert ensure_certificates(topology, tmp_path) == []  # nothing to do the second time
    changed = load(with_certificates(["api"], certs={**CERTS, "api": {"domain_name": "api2.lab.test"}}))
    assert ensure_certificates(changed, tmp_path) == ["acm-api.pem"]  # same CA, new names
    assert read_facts(str(tmp_path / "acm-api.pem")).names == ("api2.lab.test",)
