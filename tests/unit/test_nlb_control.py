"""Run-time control (no I/O): attribute validation with AWS wording, register/deregister, DNS choice,
metrics text. Exact inputs, exact outputs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.nlb_sim import control
from services.nlb_sim.config import Target, load_config
from services.elbv2.attributes import NLB_TARGET_GROUP
from services.nlb_sim.control import ApiError
from services.nlb_sim.dnspublish import published_addresses
from services.nlb_sim.metrics import Metrics, render
from tests.unit.test_nlb_config import BASE


def cfg(**changes: Any):
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    raw["target_groups"][1]["targets"].append({"id": "haproxy-b", "ip": "10.20.2.20", "az": "b"})
    raw["dns"] = {"admin_url": "http://10.20.0.2:8053", "ttl": 60, "names": ["nlb.example", "www.lab.test"]}
    return load_config(raw)


def attrs(**kv: str) -> list[dict[str, str]]:
    return [{"Key": k.replace("__", "."), "Value": v} for k, v in kv.items()]


def error(fn, *args) -> tuple[str, str]:
    with pytest.raises(ApiError) as caught:
        fn(*args)
    return caught.value.code, caught.value.message


# --- attribute validation -------------------------------------------------------------------

@pytest.mark.parametrize("raw, code, message", [
    ([{"Key": "foo.bar", "Value": "1"}], "ValidationError", "Target group attribute key 'foo.bar' is not recognized"),
    ([{"Key": "proxy_protocol_v2.enabled", "Value": "yes"}], "ValidationError",
     "Target group attribute 'proxy_protocol_v2.enabled' value 'yes' is not valid: must be one of true, false"),
    ([{"Key": "deregistration_delay.timeout_seconds", "Value": "3601"}], "ValidationError",
     "Target group attribute 'deregistration_delay.timeout_seconds' value '3601' is not valid: "
     "must be an integer from 0 to 3600"),
    ([{"Key": "deregistration_delay.timeout_seconds", "Value": "-1"}], "ValidationError",
     "Target group attribute 'deregistration_delay.timeout_seconds' value '-1' is not valid: "
     "must be an integer from 0 to 3600"),
    ([{"Key": "stickiness.type", "Value": "lb_cookie"}], "ValidationError",
     "Target group attribute 'stickiness.type' value 'lb_cookie' is not valid: must be one of source_ip"),
    ([{"Key": "load_balancing.cross_zone.enabled", "Value": "maybe"}], "ValidationError",
     "Target group attribute 'load_balancing.cross_zone.enabled' value 'maybe' is not valid: "
     "must be one of true, false, use_load_balancer_configuration"),
    ([], "ValidationError", 'Attributes must be a non-empty list of {"Key": ..., "Value": ...}'),
    ([{"Key": "stickiness.enabled", "Value": True}], "ValidationError",
     "Target group attribute {'Key': 'stickiness.enabled', 'Value': True} must be "
     '{"Key": "<string>", "Value": "<string>"}'),
])
def test_target_group_attribute_errors(raw, code, message) -> None:
    c = cfg()
    assert error(control.modify_target_group_attributes, c, c.target_group("haproxy-http"), raw) == (code, message)


def test_target_group_attributes_apply_to_the_typed_fields() -> None:
    c = cfg()
    tg = control.modify_target_group_attributes(c, c.target_group("haproxy-http"), attrs(
        proxy_protocol_v2__enabled="true", deregistration_delay__timeout_seconds="10",
        deregistration_delay__connection_termination__enabled="true",
        proxy_protocol_v2__client_to_server__header_placement="on_connect",
        load_balancing__cross_zone__enabled="true", stickiness__enabled="true"))
    assert (tg.proxy_protocol_v2, tg.deregistration_delay_seconds, tg.connection_termination,
            tg.header_placement, tg.cross_zone, tg.stickiness) == (True, 10, True, "on_connect", True, True)
    assert tg.attributes["deregistration_delay.timeout_seconds"] == "10"
    new = control.replace_target_group(c, tg)
    assert new.target_group("haproxy-http") is tg and new.target_group("haproxy-https") is c.target_group("haproxy-https")
    assert c.target_group("haproxy-http").proxy_protocol_v2 is False  # the old config is untouched


def test_stickiness_refused_for_tls_target_group_behind_tls_listener() -> None:
    c = cfg()
    assert error(control.modify_target_group_attributes, c, c.target_group("haproxy-https"),
                 attrs(stickiness__enabled="true")) == (
        "InvalidConfigurationRequest",
        "Stickiness is not supported for target groups with the TLS protocol behind TLS listeners")


def test_load_balancer_attributes() -> None:
    c = cfg()
    assert error(control.modify_load_balancer_attributes, c, attrs(idle_timeout__timeout_seconds="60")) == (
        "ValidationError", "Load balancer attribute key 'idle_timeout.timeout_seconds' is not recognized")
    new = control.modify_load_balancer_attributes(c, attrs(load_balancing__cross_zone__enabled="true"))
    assert new.cross_zone is True and c.cross_zone is False
    assert new.cross_zone_for(new.target_group("haproxy-http")) is True


@pytest.mark.parametrize("port, value, relaxed, message", [
    (80, "59", False, "Listener attribute 'tcp.idle_timeout.seconds' value '59' is not valid: "
                      "must be an integer from 60 to 6000"),
    (80, "6001", False, "Listener attribute 'tcp.idle_timeout.seconds' value '6001' is not valid: "
                        "must be an integer from 60 to 6000"),
    (80, "9", True, "Listener attribute 'tcp.idle_timeout.seconds' value '9' is not valid: "
                    "must be an integer from 10 to 6000"),
    (443, "100", False, "Listener attribute 'tcp.idle_timeout.seconds' is only supported on TCP listeners, not TLS"),
])
def test_listener_idle_timeout_errors(port, value, relaxed, message) -> None:
    c = cfg()
    listener = control.lookup_listener(c, port)
    assert error(control.modify_listener_attributes, listener, attrs(tcp__idle_timeout__seconds=value),
                 relaxed) == ("ValidationError", message)


def test_listener_idle_timeout_applies() -> None:
    c = cfg()
    assert control.lookup_listener(c, 80).idle_timeout_seconds == 350  # AWS default
    new = control.modify_listener_attributes(control.lookup_listener(c, "80"), attrs(tcp__idle_timeout__seconds="60"))
    assert new.idle_timeout_seconds == 60
    assert control.replace_listener(c, new).listeners[1].idle_timeout_seconds == 60
    assert error(control.lookup_listener, c, 8443) == (
        "ListenerNotFound", "One or more listeners not found: port 8443 (listeners: TLS:443, TCP:80)")


# --- register / deregister -----------------------------------------------------------------

def test_lookup_target_group() -> None:
    c = cfg()
    assert error(control.lookup_target_group, c, "nope") == (
        "TargetGroupNotFound", "One or more target groups not found: 'nope' (known: haproxy-https, haproxy-http)")
    assert error(control.lookup_target_group, c, None) == (
        "ValidationError", "TargetGroupName is required, e.g. 'haproxy-https'")


def test_deregister_then_register_instance_target() -> None:
    c = cfg()
    tg = c.target_group("haproxy-https")
    smaller, removed = control.deregister_targets(tg, [{"Id": "haproxy-a"}])
    assert [t.id for t in smaller.targets] == ["haproxy-b"] and [t.id for t in removed] == ["haproxy-a"]
    assert error(control.deregister_targets, smaller, [{"Id": "haproxy-a"}]) == (
        "InvalidTarget", "The following targets are not registered in target group 'haproxy-https': 'Id=haproxy-a,Port=443'")
    back, added = control.register_targets(smaller, [{"Id": "haproxy-a"}], tg.targets, ["a", "b"])
    assert added == [Target(id="haproxy-a", ip="10.20.1.20", port=443, az="a")]
    assert [t.id for t in back.targets] == ["haproxy-b", "haproxy-a"]
    again, none = control.register_targets(back, [{"Id": "haproxy-a", "Port": 443}], tg.targets, ["a", "b"])
    assert none == [] and again.targets == back.targets  # registering twice changes nothing
    assert error(control.register_targets, back, [{"Id": "i-0123"}], tg.targets, ["a", "b"]) == (
        "InvalidTarget", "The following targets are not valid: 'Id=i-0123,Port=443' (known: haproxy-a, haproxy-b)")


def test_register_ip_targets() -> None:
    c = cfg()
    tg = c.target_group("haproxy-http")  # target type ip
    known = tg.targets
    new, added = control.register_targets(tg, [{"Id": "10.20.1.99", "Port": 8080, "AvailabilityZone": "a"}],
                                          known, ["a", "b"])
    assert added == [Target(id="10.20.1.99", ip="10.20.1.99", port=8080, az="a")]
    assert error(control.register_targets, tg, [{"Id": "10.20.1.98"}], known, ["a", "b"]) == (
        "ValidationError", "AvailabilityZone is required for target 'Id=10.20.1.98,Port=80' (the lab does not know the subnet of 10.20.1.98)")
    assert error(control.register_targets, tg, [{"Id": "not-an-ip"}], known, ["a", "b"]) == (
        "ValidationError", "The IP address 'not-an-ip' is not a valid IPv4 address")
    assert error(control.register_targets, tg, [{"Id": "10.20.3.1", "AvailabilityZone": "c"}], known, ["a", "b"]) == (
        "ValidationError", "Availability Zone 'c' is not enabled for the load balancer (enabled: a, b)")
    assert error(control.register_targets, tg, [{"Id": "10.20.1.20", "Port": 0}], known, ["a", "b"]) == (
        "ValidationError", "Port 0 of target '10.20.1.20' is not a valid port (1-65535)")
    assert error(control.register_targets, tg, [], known, ["a", "b"]) == (
        "ValidationError", 'Targets must be a non-empty list of {"Id": ..., "Port": ...}')


@pytest.mark.parametrize("text, expected", [
    ("haproxy-a", control.TargetDescription("haproxy-a")),
    ("10.20.1.20:80", control.TargetDescription("10.20.1.20", 80)),
    ("10.20.1.20:80@a", control.TargetDescription("10.20.1.20", 80, "a")),
    ("haproxy-a@b", control.TargetDescription("haproxy-a", None, "b")),
])
def test_parse_target(text, expected) -> None:
    assert control.parse_target(text) == expected
    assert control.target_descriptions([text]) == [expected]  # the admin API takes the same strings


@pytest.mark.parametrize("text, message", [
    ("haproxy-a:", "target 'haproxy-a:' is not ID[:PORT][@AZ], e.g. haproxy-a, 10.20.1.20:443 or 10.20.1.20:443@a"),
    ("haproxy-a:http", "target 'haproxy-a:http' is not ID[:PORT][@AZ], e.g. haproxy-a, 10.20.1.20:443 or 10.20.1.20:443@a"),
    ("10.20.1.20:80@", "target '10.20.1.20:80@' is not ID[:PORT][@AZ], e.g. haproxy-a, 10.20.1.20:443 or 10.20.1.20:443@a"),
    (":80", "target ':80' is not ID[:PORT][@AZ], e.g. haproxy-a, 10.20.1.20:443 or 10.20.1.20:443@a"),
    ("haproxy-a:70000", "Port 70000 of target 'haproxy-a' is not a valid port (1-65535)"),
])
def test_parse_target_errors(text, message) -> None:
    assert error(control.parse_target, text) == ("ValidationError", message)


def test_register_and_deregister_take_the_same_target_forms() -> None:
    """Instance target group: a target's name or address, with or without port and AZ, means the
    same target to both verbs."""
    c = cfg()
    tg = c.target_group("haproxy-https")
    for form in ("haproxy-a", "haproxy-a:443", "10.20.1.20", "10.20.1.20:443@a", "haproxy-a@a"):
        smaller, removed = control.deregister_targets(tg, [form])
        assert [t.id for t in removed] == ["haproxy-a"], form
        back, added = control.register_targets(smaller, [form], tg.targets, ["a", "b"])
        assert added == [Target(id="haproxy-a", ip="10.20.1.20", port=443, az="a")], form


@pytest.mark.parametrize("verb, target, code, message", [
    ("deregister", "haproxy-a:81", "InvalidTarget",
     "The following targets are not registered in target group 'haproxy-https': 'Id=haproxy-a,Port=81'"),
    ("deregister", "10.20.1.20:443@b", "InvalidTarget",
     "The following targets are not registered in target group 'haproxy-https': "
     "'Id=10.20.1.20,Port=443,AvailabilityZone=b'"),
    ("deregister", "10.20.1.99", "InvalidTarget",
     "The following targets are not registered in target group 'haproxy-https': 'Id=10.20.1.99,Port=443'"),
    ("register", "10.20.1.20:443@b", "ValidationError",
     "Target 'Id=10.20.1.20,Port=443,AvailabilityZone=b' is in Availability Zone 'a', not 'b'"),
    ("register", "10.20.1.99:443@a", "InvalidTarget",
     "The following targets are not valid: 'Id=10.20.1.99,Port=443,AvailabilityZone=a' (known: haproxy-a, haproxy-b)"),
])
def test_target_errors_name_the_whole_target(verb, target, code, message) -> None:
    c = cfg()
    tg = c.target_group("haproxy-https")
    if verb == "deregister":
        assert error(control.deregister_targets, tg, [target]) == (code, message)
    else:
        assert error(control.register_targets, tg, [target], tg.targets, ["a", "b"]) == (code, message)


def test_deregister_ip_target_by_name_or_address_and_port() -> None:
    c = cfg()
    tg = c.target_group("haproxy-http")  # target type ip, port 80
    for form in ("haproxy-a", "10.20.1.20", "10.20.1.20:80@a", {"Id": "10.20.1.20", "Port": 80}):
        assert [t.id for t in control.deregister_targets(tg, [form])[1]] == ["haproxy-a"], form
    assert error(control.deregister_targets, tg, ["haproxy-a:81"]) == (
        "InvalidTarget", "The following targets are not registered in target group 'haproxy-http': 'Id=haproxy-a,Port=81'")


# --- DNS: which Elastic IPs the names resolve to --------------------------------------------

@pytest.mark.parametrize("healthy_ids, cross_zone, expected", [
    ({"haproxy-a", "haproxy-b"}, "false", ["198.51.100.10", "198.51.100.11"]),
    ({"haproxy-b"}, "false", ["198.51.100.11"]),           # AZ a has no healthy target: leaves DNS
    ({"haproxy-a"}, "false", ["198.51.100.10"]),
    (set(), "false", ["198.51.100.10", "198.51.100.11"]),  # nothing healthy anywhere: fail open
    ({"haproxy-b"}, "true", ["198.51.100.10", "198.51.100.11"]),  # cross-zone: node a can use b's target
])
def test_published_addresses(healthy_ids, cross_zone, expected) -> None:
    c = cfg(attributes={"load_balancing.cross_zone.enabled": cross_zone})
    assert published_addresses(c, lambda node, tg, tid: tid in healthy_ids) == expected


def test_an_az_needs_a_healthy_target_in_every_listener_target_group() -> None:
    c = cfg()
    # haproxy-a healthy only for TLS:443's group: AZ a still fails TCP:80's group.
    up = published_addresses(c, lambda node, tg, tid: tid == "haproxy-b" or tg == "haproxy-https")
    assert up == ["198.51.100.11"]


# --- metrics -----------------------------------------------------------------------------------

def test_metrics_text_uses_aws_names() -> None:
    a, b = Metrics(), Metrics()
    a.inc("NewFlowCount", 3)
    a.inc("TCP_ELB_Reset_Count")
    b.inc("ProcessedBytes", 1234)
    text = render([({"LoadBalancer": "lb", "AvailabilityZone": "a"}, a),
                   ({"LoadBalancer": "lb", "AvailabilityZone": "b"}, b)],
                  [("ActiveFlowCount", {"LoadBalancer": "lb", "AvailabilityZone": "a"}, 2)])
    lines = text.splitlines()
    assert "# TYPE aws_networkelb_NewFlowCount counter" in lines
    assert 'aws_networkelb_NewFlowCount{LoadBalancer="lb",AvailabilityZone="a"} 3' in lines
    assert 'aws_networkelb_NewFlowCount{LoadBalancer="lb",AvailabilityZone="b"} 0' in lines
    assert 'aws_networkelb_TCP_ELB_Reset_Count{LoadBalancer="lb",AvailabilityZone="a"} 1' in lines
    assert 'aws_networkelb_ProcessedBytes{LoadBalancer="lb",AvailabilityZone="b"} 1234' in lines
    assert lines[-2:] == ["# TYPE aws_networkelb_ActiveFlowCount gauge",
                          'aws_networkelb_ActiveFlowCount{LoadBalancer="lb",AvailabilityZone="a"} 2']


# --- access log (TLS listeners) -----------------------------------------------------------------

def test_access_log_line_has_aws_fields_in_order() -> None:
    import datetime

    from services.nlb_sim.accesslog import TlsConnection, elb_field, format_line

    conn = TlsConnection(end_time=datetime.datetime(2020, 4, 1, 8, 51, 42, 123456, tzinfo=datetime.timezone.utc),
                         client="72.21.218.154:51341", destination="172.100.100.185:443", connection_ms=5,
                         handshake_ms=2, received_bytes=98, sent_bytes=246,
                         cert_arn="arn:aws:acm:us-east-2:671290407336:certificate/2a108f19",
                         cipher="ECDHE-RSA-AES128-SHA", protocol="TLSv1.2",
                         sni="my-network-loadbalancer-c6e77e28c25b2234.elb.us-east-2.amazonaws.com", alpn="h2")
    elb = elb_field("arn:aws:elasticloadbalancing:us-east-2:671290407336:loadbalancer/net/my-network-loadbalancer/"
                    "c6e77e28c25b2234")
    # AWS's documented example, except the two ALPN fields the simulator cannot know ("-").
    assert format_line(elb, "g3d4b5e8bb8464cd", conn) == (
        "tls 2.0 2020-04-01T08:51:42 net/my-network-loadbalancer/c6e77e28c25b2234 g3d4b5e8bb8464cd "
        "72.21.218.154:51341 172.100.100.185:443 5 2 98 246 - "
        "arn:aws:acm:us-east-2:671290407336:certificate/2a108f19 - ECDHE-RSA-AES128-SHA tlsv12 - "
        "my-network-loadbalancer-c6e77e28c25b2234.elb.us-east-2.amazonaws.com h2 - -")
    bare = TlsConnection(end_time=conn.end_time, client="1.2.3.4:5", destination="6.7.8.9:443", connection_ms=0,
                         handshake_ms=None, received_bytes=0, sent_bytes=0, cert_arn="", cipher=None,
                         protocol="TLSv1.3", sni=None, alpn=None)
    assert format_line("net/x/1", "l", bare).split()[7:] == ["0", "-", "0", "0", "-", "-", "-", "-", "tlsv13",
                                                            "-", "-", "-", "-", "-"]


# --- VPC Flow Logs default format ----------------------------------------------------------------

def test_vpc_flow_log_records_default_format() -> None:
    from services.nlb_sim.vpcflow import account_of, interface_id, records

    arn = "arn:aws:elasticloadbalancing:eu-west-2:123456789012:loadbalancer/net/static-ingress/6d0ecf831eec9f09"
    eni = interface_id(arn, "nlb-a")
    assert eni.startswith("eni-") and len(eni) == 21 and account_of(arn) == "123456789012"
    assert account_of("") == "unknown"
    lines = records("123456789012", eni, ("198.51.100.150", 40000), ("198.51.100.10", 443),
                    ("198.51.100.150", 40000), ("10.20.1.20", 443), 2000, 100, 1700000000, 1700000003)
    assert lines == [
        f"2 123456789012 {eni} 198.51.100.150 198.51.100.10 40000 443 6 4 2000 1700000000 1700000003 ACCEPT OK",
        f"2 123456789012 {eni} 198.51.100.10 198.51.100.150 443 40000 6 3 100 1700000000 1700000003 ACCEPT OK",
        f"2 123456789012 {eni} 198.51.100.150 10.20.1.20 40000 443 6 4 2000 1700000000 1700000003 ACCEPT OK",
        f"2 123456789012 {eni} 10.20.1.20 198.51.100.150 443 40000 6 3 100 1700000000 1700000003 ACCEPT OK",
    ]
    assert len(records("unknown", eni, ("1.1.1.1", 1), ("2.2.2.2", 80), None, None, 0, 0, 1, 1)) == 2


# --- Describe*Attributes: every modelled key, AWS defaults filled in ------------------------

def admin_get(c, url: str) -> tuple[int, Any]:
    from services.nlb_sim.admin import AdminApi
    from services.nlb_sim.app import NlbApp
    return AdminApi(NlbApp(c)).handle("GET", url.encode())


@pytest.mark.parametrize("body, message", [
    (b"{not json", "request body is not JSON: Expecting property name enclosed in double quotes"),
    (b"\xff\xfe", "request body is not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "request body is not JSON: nested too deeply"),
    (b"[1, 2]", "request body must be a JSON object"),
    (b"null", "request body must be a JSON object"),
])
def test_admin_post_bodies_that_are_not_a_json_object_get_a_validation_error(body: bytes, message: str) -> None:
    from services.nlb_sim.admin import AdminApi
    from services.nlb_sim.app import NlbApp
    status, doc = AdminApi(NlbApp(cfg())).handle("POST", b"/register-targets", body)
    assert status == 400 and doc["Error"]["Code"] == "ValidationError"
    assert doc["Error"]["Message"].startswith(message)


@pytest.mark.parametrize("url, code, message", [
    ("/attributes?target_group=", "ValidationError", "TargetGroupName is required, e.g. 'haproxy-https'"),
    ("/target-health?target_group=", "ValidationError", "target_group is required, e.g."),
    ("/target-health", "ValidationError", "target_group is required, e.g."),
])
def test_admin_blank_or_missing_target_group_is_an_error(url: str, code: str, message: str) -> None:
    """`?target_group=` used to be read as no parameter: /attributes answered the load balancer's."""
    status, doc = admin_get(cfg(), url)
    assert status == 400 and doc["Error"]["Code"] == code and doc["Error"]["Message"].startswith(message)


def test_describe_target_group_attributes_lists_every_key_with_aws_defaults() -> None:
    c = cfg()  # haproxy-https sets only preserve_client_ip, proxy_protocol_v2, deregistration delay
    assert admin_get(c, "/attributes?target_group=haproxy-https") == (200, {"Attributes": [
        {"Key": "preserve_client_ip.enabled", "Value": "true"},
        {"Key": "proxy_protocol_v2.enabled", "Value": "false"},
        {"Key": "proxy_protocol_v2.client_to_server.header_placement", "Value": "on_first_ack_with_payload"},
        {"Key": "deregistration_delay.timeout_seconds", "Value": "300"},
        {"Key": "deregistration_delay.connection_termination.enabled", "Value": "false"},
        {"Key": "stickiness.enabled", "Value": "false"},
        {"Key": "stickiness.type", "Value": "source_ip"},
        {"Key": "load_balancing.cross_zone.enabled", "Value": "use_load_balancer_configuration"},
        {"Key": "target_health_state.unhealthy.connection_termination.enabled", "Value": "true"},
    ]})
    # ip target group, nothing set: client IP not preserved (AWS default for ip + TCP)
    assert control.target_group_attributes(c.target_group("haproxy-http"))["preserve_client_ip.enabled"] == "false"


def test_describe_attributes_show_modified_values_in_place() -> None:
    c = cfg()
    tg = control.modify_target_group_attributes(c, c.target_group("haproxy-http"), attrs(
        target_health_state__unhealthy__connection_termination__enabled="false",
        deregistration_delay__timeout_seconds="30"))
    listed = control.target_group_attributes(tg)
    assert list(listed) == list(NLB_TARGET_GROUP.keys)
    assert (listed["target_health_state.unhealthy.connection_termination.enabled"],
            listed["deregistration_delay.timeout_seconds"]) == ("false", "30")


def test_describe_load_balancer_and_listener_attributes() -> None:
    c = cfg()
    assert admin_get(c, "/attributes") == (200, {"Attributes": [
        {"Key": "load_balancing.cross_zone.enabled", "Value": "false"},
        {"Key": "deletion_protection.enabled", "Value": "false"},
    ]})
    assert admin_get(c, "/attributes?listener=80") == (200, {"Attributes": [
        {"Key": "tcp.idle_timeout.seconds", "Value": "350"}]})
    assert admin_get(c, "/attributes?listener=443") == (200, {"Attributes": []})  # TLS: fixed 350 s


# --- DescribeTargetHealth: AWS's Target.Id ---------------------------------------------------

def test_describe_target_health_ids_are_addresses_for_ip_target_groups() -> None:
    from services.nlb_sim.app import NlbApp
    c = cfg()
    registry = NlbApp(c).registry
    initial = {"State": "initial", "Reason": "Elb.InitialHealthChecking",
               "Description": "Initial health checks in progress"}
    assert registry.describe("haproxy-http") == {"TargetHealthDescriptions": [  # target type ip
        {"Target": {"Id": "10.20.1.20", "Port": 80, "AvailabilityZone": "a"}, "LabTargetName": "haproxy-a",
         "HealthCheckPort": "80", "TargetHealth": initial},
        {"Target": {"Id": "10.20.2.20", "Port": 80, "AvailabilityZone": "b"}, "LabTargetName": "haproxy-b",
         "HealthCheckPort": "80", "TargetHealth": initial}]}
    assert [d["Target"]["Id"] for d in registry.describe("haproxy-https")["TargetHealthDescriptions"]] == [
        "haproxy-a", "haproxy-b"]  # instance: the instance id
    assert all("LabTargetName" not in d for d in registry.describe("haproxy-https")["TargetHealthDescriptions"])


# --- ModifyTargetGroup (health check) ---------------------------------------------------------

def modify_hc(tg_name: str = "haproxy-http", relaxed: bool = False, body: dict[str, Any] | None = None,
              **kw: Any):
    tg = cfg().target_group(tg_name)
    return control.modify_target_group(tg, {"TargetGroupName": tg_name, **(body or {}), **kw}, relaxed)


HC_KEYS = ("HealthCheckProtocol, HealthCheckPort, HealthCheckPath, HealthCheckIntervalSeconds,"
           " HealthCheckTimeoutSeconds, HealthyThresholdCount, UnhealthyThresholdCount, Matcher")


def aws_constraint(value: str, member: str, constraint: str) -> str:
    return (f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint:"
            f" Member must {constraint}")


@pytest.mark.parametrize("key, value, member, constraint", [
    ("HealthCheckProtocol", "TLS", "healthCheckProtocol", "satisfy enum value set: [TCP, HTTP, HTTPS]"),
    ("HealthCheckIntervalSeconds", 4, "healthCheckIntervalSeconds", "have value greater than or equal to 5"),
    ("HealthCheckIntervalSeconds", "301", "healthCheckIntervalSeconds", "have value less than or equal to 300"),
    ("HealthCheckIntervalSeconds", "ten", "healthCheckIntervalSeconds", "be an integer"),
    ("HealthCheckTimeoutSeconds", 1, "healthCheckTimeoutSeconds", "have value greater than or equal to 2"),
    ("HealthCheckTimeoutSeconds", 121, "healthCheckTimeoutSeconds", "have value less than or equal to 120"),
    ("HealthyThresholdCount", 1, "healthyThresholdCount", "have value greater than or equal to 2"),
    ("UnhealthyThresholdCount", 11, "unhealthyThresholdCount", "have value less than or equal to 10"),
])
def test_modify_target_group_out_of_range_uses_aws_constraint_text(key: str, value: Any, member: str,
                                                                     constraint: str) -> None:
    assert error(modify_hc, "haproxy-http", False, {key: value}) == (
        "ValidationError", aws_constraint(str(value), member, constraint))


@pytest.mark.parametrize("body, message", [
    ({}, f"Nothing to modify: give at least one of {HC_KEYS}"),
    ({"HealthCheckInterval": 10}, f"Unknown parameter 'HealthCheckInterval'; ModifyTargetGroup takes {HC_KEYS}"),
    ({"HealthCheckPort": "0"}, "Health check port '0' is not valid: must be 'traffic-port' or a port"
                               " from 1 to 65535"),
    ({"HealthCheckPort": "any"}, "Health check port 'any' is not valid: must be 'traffic-port' or a"
                                 " port from 1 to 65535"),
    ({"HealthCheckPath": "/health"}, "Health check path cannot be set when the health check protocol"
                                     " is TCP"),
    ({"HealthCheckProtocol": "TCP", "HealthCheckPath": "/"}, "Health check path cannot be set when the"
                                                             " health check protocol is TCP"),
    ({"Matcher": {"HttpCode": "200"}}, "Health check matcher cannot be set when the health check"
                                       " protocol is TCP"),
    ({"HealthCheckProtocol": "HTTP", "HealthCheckPath": "health"}, "Health check path 'health' must"
                                                                   " start with '/'"),
    ({"HealthCheckProtocol": "HTTP", "HealthCheckPath": "/" + "x" * 1024},
     aws_constraint("/" + "x" * 1024, "healthCheckPath", "have length between 1 and 1024")),
    ({"HealthCheckProtocol": "HTTP", "Matcher": {"HttpCode": "600"}},
     "Health check matcher HTTP code '600' is not valid: must be codes or ranges from 200 to 599,"
     " e.g. 200, 200,202 or 200-399"),
    ({"HealthCheckProtocol": "HTTP", "Matcher": "200"},
     "Matcher '200' must be {\"HttpCode\": \"<codes>\"}, e.g. {\"HttpCode\": \"200-399\"}"),
])
def test_modify_target_group_rejects(body: dict[str, Any], message: str) -> None:
    assert error(modify_hc, "haproxy-http", False, body) == ("ValidationError", message)


def test_modify_target_group_changes_only_what_is_given_and_shows_aws_settings() -> None:
    tg = modify_hc(HealthCheckProtocol="HTTP", HealthCheckPath="/healthz", HealthCheckPort="8080",
                   HealthCheckIntervalSeconds="10", HealthCheckTimeoutSeconds=6, HealthyThresholdCount=3,
                   UnhealthyThresholdCount="4", Matcher={"HttpCode": "200,202"})
    assert control.health_check_settings(tg) == {
        "TargetGroupName": "haproxy-http", "TargetGroupArn": tg.arn, "HealthCheckProtocol": "HTTP",
        "HealthCheckPort": "8080", "HealthCheckEnabled": True, "HealthCheckIntervalSeconds": 10,
        "HealthCheckTimeoutSeconds": 6, "HealthyThresholdCount": 3, "UnhealthyThresholdCount": 4,
        "HealthCheckPath": "/healthz", "Matcher": {"HttpCode": "200,202"}}
    back = control.modify_target_group(tg, {"HealthCheckProtocol": "TCP", "HealthCheckPort": "traffic-port"})
    settings = control.health_check_settings(back)
    assert (settings["HealthCheckProtocol"], settings["HealthCheckPort"], settings["HealthCheckIntervalSeconds"]) \
        == ("TCP", "traffic-port", 10)
    assert "HealthCheckPath" not in settings and "Matcher" not in settings


def test_modify_target_group_relaxed_limits_allow_sub_second_checks() -> None:
    tg = modify_hc(relaxed=True, HealthCheckIntervalSeconds="0.2", HealthCheckTimeoutSeconds=0.1)
    assert (tg.health_check.interval_seconds, tg.health_check.timeout_seconds) == (0.2, 0.1)
    with pytest.raises(ApiError, match="Member must have value greater than or equal to 0.05"):
        modify_hc(relaxed=True, HealthCheckIntervalSeconds="0.01")


@pytest.mark.parametrize("relaxed", [False, True])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan", "NaN", "inf", "-inf"])
def test_modify_target_group_rejects_non_finite_numbers(relaxed: bool, value: Any) -> None:
    """JSON (as Python writes it) and strings can carry NaN and infinity: a health check every
    NaN seconds, or an integer conversion error, must not get past validation."""
    for key, member in (("HealthCheckIntervalSeconds", "healthCheckIntervalSeconds"),
                        ("HealthCheckTimeoutSeconds", "healthCheckTimeoutSeconds"),
                        ("HealthyThresholdCount", "healthyThresholdCount")):
        code, message = error(modify_hc, "haproxy-http", relaxed, {key: value})
        assert code == "ValidationError" and f"at '{member}' failed to satisfy constraint" in message


def test_modify_target_group_alb_target_type_needs_an_http_check() -> None:
    import dataclasses

    tg = dataclasses.replace(cfg().target_group("haproxy-http"), target_type="alb")
    assert error(control.modify_target_group, tg, {"HealthCheckPort": "80"}) == (
        "ValidationError", "Health check protocol 'TCP' is not supported for target groups with target"
                           " type 'alb'; use HTTP or HTTPS")
    assert control.modify_target_group(tg, {"HealthCheckProtocol": "HTTPS"}).health_check.protocol == "HTTPS"
