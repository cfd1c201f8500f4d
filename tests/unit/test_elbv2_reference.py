"""Constraints of the ELBv2 API reference and the user guides that services/elbv2 enforces, each
with the exact value and the exact words (decisions.md #78 lists the page for each)."""

from __future__ import annotations

from typing import Any

import pytest

from services.elbv2 import attributes, health_checks
from services.elbv2.errors import ApiError

ALB_LB = attributes.ALB_LOAD_BALANCER


def _refused(pairs: list[tuple[str, str]]) -> tuple[str, str]:
    with pytest.raises(ApiError) as caught:
        ALB_LB.check(pairs, {})
    return caught.value.code, caught.value.message


S3_BUCKET_RULE = ("must be an S3 bucket name: 3 to 63 lowercase letters, digits, '.' and '-', beginning and"
                  " ending with a letter or digit, no '..', not an IP address, not starting with xn--, sthree- or"
                  " amzn-s3-demo-, not ending with -s3alias, --ol-s3, .mrap, --x-s3 or --table-s3")


# API_LoadBalancerAttribute: access_logs.s3.bucket / connection_logs.s3.bucket "is required if access
# logs [connection logs] are enabled"; S3 User Guide, General purpose bucket naming rules.
@pytest.mark.parametrize("pairs, key, message", [
    ([("access_logs.s3.enabled", "true")], "access_logs.s3.bucket",
     "'access_logs.s3.bucket' must be specified when 'access_logs.s3.enabled' is 'true'"),
    ([("connection_logs.s3.enabled", "true")], "connection_logs.s3.bucket",
     "'connection_logs.s3.bucket' must be specified when 'connection_logs.s3.enabled' is 'true'"),
])
def test_enabled_logs_need_a_bucket(pairs: list[tuple[str, str]], key: str, message: str) -> None:
    with pytest.raises(attributes.RuleViolation) as caught:
        ALB_LB.check(pairs, {})
    assert (caught.value.code, caught.value.key, caught.value.message) == ("ValidationError", key, message)


def test_enabled_logs_with_a_bucket_load() -> None:
    values = ALB_LB.check([("access_logs.s3.enabled", "true"), ("access_logs.s3.bucket", "my-logs"),
                           ("connection_logs.s3.enabled", "true"), ("connection_logs.s3.bucket", "my.logs-2")], {})
    assert (values["access_logs.s3.bucket"], values["connection_logs.s3.bucket"]) == ("my-logs", "my.logs-2")


@pytest.mark.parametrize("bucket", [
    "ab", "a" * 64, "My-Logs", "my_logs", "-logs", "logs-", "logs.", "my..logs", "192.168.5.4", "xn--logs",
    "sthree-logs", "amzn-s3-demo-logs", "logs-s3alias", "logs--ol-s3", "logs.mrap", "logs--x-s3", "logs--table-s3",
    "my logs",
])
@pytest.mark.parametrize("key", ["access_logs.s3.bucket", "connection_logs.s3.bucket"])
def test_bucket_names_follow_s3s_naming_rules(key: str, bucket: str) -> None:
    assert _refused([(key, bucket)]) == (
        "ValidationError", f"Load balancer attribute '{key}' value '{bucket}' is not valid: {S3_BUCKET_RULE}")


@pytest.mark.parametrize("bucket", ["abc", "a" * 63, "my-logs", "my.logs", "1logs9", "192.168.5.x", "xn-logs"])
def test_valid_bucket_names_load(bucket: str) -> None:
    assert ALB_LB.check([("access_logs.s3.bucket", bucket)], {})["access_logs.s3.bucket"] == bucket


# Enable access logs for your Application Load Balancer, bucket requirements: "The prefix that you
# specify must not include AWSLogs."
@pytest.mark.parametrize("prefix", ["AWSLogs", "prod/AWSLogs", "myAWSLogs/x"])
def test_access_log_prefix_must_not_include_awslogs(prefix: str) -> None:
    assert _refused([("access_logs.s3.prefix", prefix)]) == (
        "ValidationError", f"Load balancer attribute 'access_logs.s3.prefix' value '{prefix}' is not valid:"
                           " must not include 'AWSLogs'")


def test_other_access_log_prefixes_load() -> None:
    assert ALB_LB.check([("access_logs.s3.prefix", "prod/alb")], {})["access_logs.s3.prefix"] == "prod/alb"


ALB_PATH_RULE = "must be a valid URI (/path?query): letters, digits, -._~:/?#@!$&'()*+,;= and %XX escapes"


# Health checks for Application Load Balancer target groups, HealthCheckPath: "specify a valid URI
# (/path?query)".
@pytest.mark.parametrize("path", ["/health check", "/?query={__typename}", "/a\"b", "/a<b>", "/a\\b", "/a|b",
                                  "/a^b", "/a`b", "/a[b]", "/caf\u00e9", "/a%", "/a%2", "/a%zz", "/a\tb"])
def test_alb_health_check_path_is_a_valid_uri(path: str) -> None:
    with pytest.raises(health_checks.HealthCheckProblem) as caught:
        health_checks.check(health_checks.APPLICATION, {"path": path})
    assert (caught.value.setting, caught.value.code, caught.value.message) == (
        "path", "ValidationError", f"Health check path '{path}' is not valid: {ALB_PATH_RULE}")


@pytest.mark.parametrize("path", ["/", "/healthz", "/health-check", "/a/b.html?x=1&y=%7B2%7D", "/AWS.ALB/healthcheck",
                                  "/~u/_p+q:r@s!$'()*,;=#frag"])
def test_valid_alb_health_check_paths_load(path: str) -> None:
    assert health_checks.check(health_checks.APPLICATION, {"path": path})["path"] == path


def test_nlb_health_check_path_keeps_its_rules() -> None:
    """The NLB guide says only "the ping path" (docs silent on its characters): unchanged."""
    given: dict[str, Any] = {"protocol": "HTTP", "path": "/a b"}
    assert health_checks.check(health_checks.NETWORK, given)["path"] == "/a b"


# API reference, ModifyTargetGroup / CreateTargetGroup, HealthCheckEnabled: "If the target type is
# instance, ip, or alb, health checks are always enabled and can't be disabled."
@pytest.mark.parametrize("target_type", ["instance", "ip", "alb"])
def test_health_checks_cannot_be_disabled(target_type: str) -> None:
    current = health_checks.NETWORK.defaults("HTTPS" if target_type == "alb" else None)
    with pytest.raises(ApiError) as caught:
        health_checks.check_api(health_checks.NETWORK, {"HealthCheckEnabled": False}, current, target_type=target_type)
    assert (caught.value.code, caught.value.message) == (
        "ValidationError", f"Health checks are always enabled for target groups with target type '{target_type}'"
                           " and can't be disabled")


def test_health_check_enabled_true_changes_nothing() -> None:
    current = health_checks.NETWORK.defaults()
    assert health_checks.check_api(health_checks.NETWORK, {"HealthCheckEnabled": True}, current,
                                   target_type="ip") == current
    assert health_checks.check_api(health_checks.NETWORK, {"HealthCheckEnabled": True, "HealthyThresholdCount": 3},
                                   current, target_type="ip")["healthy_threshold"] == 3


def test_health_check_enabled_must_be_a_boolean() -> None:
    with pytest.raises(ApiError) as caught:
        health_checks.check_api(health_checks.NETWORK, {"HealthCheckEnabled": "yes"}, health_checks.NETWORK.defaults(),
                                target_type="ip")
    assert caught.value.message == "HealthCheckEnabled 'yes' must be true or false"
