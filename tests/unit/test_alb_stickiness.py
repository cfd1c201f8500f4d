"""lb_cookie stickiness: the AWSALB cookie codec and headers."""

from __future__ import annotations

from services.alb_sim.stickiness import StickyCodec, app_cookie_set, app_set_cookie_headers, cookie_value, set_cookie_headers

KEY = b"k" * 32


def test_round_trip_and_what_is_refused() -> None:
    codec = StickyCodec(KEY)
    value = codec.encode("api", "10.20.1.41:8443", expires=1000)
    assert codec.decode(value, "api", now=999) == "10.20.1.41:8443"
    assert codec.decode(value, "api", now=1001) is None            # duration passed
    assert codec.decode(value, "frontend", now=999) is None        # another target group's cookie
    assert StickyCodec(b"x" * 32).decode(value, "api", now=999) is None  # another ALB's (or forged)
    body, _, tag = value.partition(".")
    assert codec.decode(body + "." + tag[::-1], "api", now=999) is None
    assert codec.decode("garbage", "api", now=0) is None
    assert "10.20.1.41" not in value                               # opaque to the client


def test_cookie_value_from_request_headers() -> None:
    headers = [(b"Cookie", b"a=1; AWSALB=xyz.tag; AWSALBCORS=xyz.tag"), (b"cookie", b"AWSALB=second")]
    assert cookie_value(headers, "AWSALB") == "xyz.tag"
    assert cookie_value([(b"Cookie", b"AWSALBCORS=v")], "AWSALB") is None


def test_set_cookie_headers_expire_in_seven_days_with_cors_variant() -> None:
    assert set_cookie_headers("v.t", now=0) == [
        (b"Set-Cookie", b"AWSALB=v.t; Expires=Thu, 08 Jan 1970 00:00:00 GMT; Path=/"),
        (b"Set-Cookie", b"AWSALBCORS=v.t; Expires=Thu, 08 Jan 1970 00:00:00 GMT; Path=/; SameSite=None; Secure"),
    ]


def test_awsalbapp_headers_value_in_the_first_shard_the_others_removed() -> None:
    assert app_set_cookie_headers("v.t", now=0) == [
        (b"Set-Cookie", b"AWSALBAPP-0=v.t; Expires=Thu, 08 Jan 1970 00:00:00 GMT; Path=/"),
        (b"Set-Cookie", b"AWSALBAPP-1=_remove_; Expires=Thu, 08 Jan 1970 00:00:00 GMT; Path=/"),
        (b"Set-Cookie", b"AWSALBAPP-2=_remove_; Expires=Thu, 08 Jan 1970 00:00:00 GMT; Path=/"),
        (b"Set-Cookie", b"AWSALBAPP-3=_remove_; Expires=Thu, 08 Jan 1970 00:00:00 GMT; Path=/"),
    ]


def test_app_cookie_set_by_the_response() -> None:
    assert app_cookie_set([(b"set-cookie", b"SESSIONID=1; Path=/")], b"SESSIONID")
    assert not app_cookie_set([(b"Set-Cookie", b"SESSIONID2=1")], b"SESSIONID")
    assert not app_cookie_set([(b"X-SESSIONID", b"SESSIONID=1")], b"SESSIONID")


def test_target_group_stickiness_config() -> None:
    import pytest

    from services.alb_sim.config import ConfigError, load_config

    def config(stickiness: dict) -> dict:
        return {"nodes": [{"name": "alb-a", "az": "a", "address": "10.0.0.9"}],
                "listeners": [{"protocol": "HTTP", "port": 80, "default_actions": [
                    {"type": "forward", "target_groups": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
                     "stickiness": stickiness}]}],
                "name": "t", "arn": "z", "dns_name": "d", "log_dir": "/tmp",
                "target_groups": [{"name": "a", "arn": "x", "port": 80}, {"name": "b", "arn": "y", "port": 80}]}

    action = load_config(config({"enabled": True, "duration_seconds": 600})).listeners[0].default_actions[0]
    assert action.stickiness_seconds == 600
    assert load_config(config({"enabled": False})).listeners[0].default_actions[0].stickiness_seconds == 0
    with pytest.raises(ConfigError, match=r"default_actions\[0\].stickiness.duration_seconds: 0 is not a valid "
                                          r"target group stickiness duration in seconds \(1-604800\)"):
        load_config(config({"enabled": True, "duration_seconds": 0}))
