"""Listener rule matching: AWS's documented semantics as exact input/output tables."""

from __future__ import annotations

from typing import Any

import pytest

from services.alb_sim.config import ForwardAction, load_config
from services.alb_sim.rules import RequestView, RuleTable, compile_condition, host_without_port, parse_query
from services.alb_sim.config import Condition, QueryPair


def req(path: str = "/", *, method: str = "GET", query: str = "", host: str = "www.example.com",
        headers: tuple[tuple[str, str], ...] = (), source_ip: str = "10.0.0.1") -> RequestView:
    return RequestView(method=method, path=path, query=query, host=host, headers=headers, source_ip=source_ip)


@pytest.mark.parametrize("pattern,path,expected", [
    ("/img/*", "/img/a.png", True),
    ("/img/*", "/img/", True),
    ("/img/*", "/img", False),
    ("/img/*", "/IMG/a.png", False),            # case-sensitive
    ("/api/*", "/api/v1/users", True),          # * spans slashes
    ("/a?c", "/abc", True),                     # ? = exactly one character
    ("/a?c", "/ac", False),
    ("/a?c", "/abbc", False),
    ("*.png", "/x/y.png", True),
    ("/exact", "/exact", True),
    ("/exact", "/exact/", False),
    ("/a.b", "/aXb", False),                    # '.' is literal
    ("/$x", "/$x", True),
])
def test_path_pattern(pattern: str, path: str, expected: bool) -> None:
    pred = compile_condition(Condition("path-pattern", (pattern,)))
    assert pred(req(path)) is expected


def test_path_pattern_ignores_query_string() -> None:
    pred = compile_condition(Condition("path-pattern", ("/search",)))
    assert pred(req("/search", query="q=*")) is True


@pytest.mark.parametrize("pattern,host,expected", [
    ("*.example.com", "test.example.com", True),    # AWS doc example
    ("*.example.com", "example.com", False),        # AWS doc example
    ("*.example.com", "a.b.example.com", True),
    ("www.example.com", "WWW.Example.COM", True),   # case-insensitive
    ("www.example.com", "www.example.com:8443", True),  # port ignored
    ("www.example.?om", "www.example.com", True),
    ("www.example.?om", "www.example.om", False),
    ("example.com", "example.org", False),
])
def test_host_header(pattern: str, host: str, expected: bool) -> None:
    pred = compile_condition(Condition("host-header", (pattern,)))
    assert pred(req(host=host)) is expected


@pytest.mark.parametrize("name,values,headers,expected", [
    ("User-Agent", ("*Chrome*", "*Safari*"), (("user-agent", "Mozilla Chrome/1"),), True),
    ("User-Agent", ("*chrome*",), (("User-Agent", "Mozilla CHROME/1"),), True),   # value case-insensitive
    ("x-env", ("prod",), (("X-ENV", "PROD"),), True),                              # name case-insensitive
    ("X-Env", ("prod",), (("X-Env", "staging"), ("X-Env", "prod")), True),        # any line may match
    ("X-Env", ("prod",), (("X-Other", "prod"),), False),
    ("X-Env", ("p?od",), (("X-Env", "prod"),), True),
])
def test_http_header(name: str, values: tuple[str, ...], headers: Any, expected: bool) -> None:
    pred = compile_condition(Condition("http-header", values, header_name=name))
    assert pred(req(headers=headers)) is expected


@pytest.mark.parametrize("method,expected", [("GET", True), ("HEAD", True), ("get", False), ("POST", False)])
def test_http_request_method_is_exact_and_case_sensitive(method: str, expected: bool) -> None:
    pred = compile_condition(Condition("http-request-method", ("GET", "HEAD")))
    assert pred(req(method=method)) is expected


@pytest.mark.parametrize("pairs,query,expected", [
    ((QueryPair("version", "v1"),), "version=v1", True),
    ((QueryPair("version", "v1"),), "VERSION=V1", True),            # case-insensitive
    ((QueryPair("version", "v1"),), "a=1&version=v1&b=2", True),
    ((QueryPair("version", "v1"),), "version=v2", False),
    ((QueryPair("version", "v1"),), "other=v1", False),             # key must match
    ((QueryPair(None, "v1"),), "anything=v1", True),                # value-only pair
    ((QueryPair(None, "*example*"),), "a=an-example-value", True),
    ((QueryPair("v", "1"), QueryPair(None, "x")), "k=x", True),     # values OR'ed
    ((QueryPair("v", "1"),), "", False),
    ((QueryPair("v", "?"),), "v=12", False),
])
def test_query_string(pairs: tuple[QueryPair, ...], query: str, expected: bool) -> None:
    pred = compile_condition(Condition("query-string", pairs))
    assert pred(req(query=query)) is expected


# QueryStringConditionConfig: "To search for a literal '*' or '?' character in a query string, you must
# escape these characters in Values using a '\' character." In keys and values alike (decisions #75).
@pytest.mark.parametrize("pair,query,expected", [
    (QueryPair(None, "a\\*b"), "k=a*b", True),
    (QueryPair(None, "a\\*b"), "k=axxb", False),        # escaped: not a wildcard
    (QueryPair(None, "a\\*b"), "k=ab", False),
    (QueryPair(None, "a\\*b"), "k=a%5C*b", False),      # and the backslash is not matched itself
    (QueryPair(None, "why\\?"), "q=why?", True),
    (QueryPair(None, "why\\?"), "q=whyX", False),
    (QueryPair("sort\\*", "*"), "sort*=asc", True),      # escaped key, wildcard value
    (QueryPair("sort\\*", "*"), "sorted=asc", False),
    (QueryPair("q\\?", "1"), "qx=1", False),
    (QueryPair("q\\?", "1"), "q?=1", True),
    (QueryPair(None, "\\**"), "k=*tail", True),         # a literal '*', then a wildcard
    (QueryPair(None, "\\**"), "k=tail", False),
    (QueryPair(None, "a\\b"), "k=a\\b", True),          # a backslash before anything else is itself
    (QueryPair(None, "a\\"), "k=a\\", True),
    (QueryPair(None, "\\\\*"), "k=\\*", True),          # '\\*' is a backslash, then an escaped '*'
    (QueryPair(None, "\\\\*"), "k=\\x", False),
])
def test_query_string_escapes(pair: QueryPair, query: str, expected: bool) -> None:
    pred = compile_condition(Condition("query-string", (pair,)))
    assert pred(req(query=query)) is expected


@pytest.mark.parametrize("pattern,value,expected", [
    # AWS documents the escape for query strings only: in a header value a backslash is an ordinary
    # character and a '*' after it still a wildcard (path and host patterns cannot hold a backslash).
    ("a\\*", "a\\anything", True),
    ("a\\*", "a\\", True),
    ("a\\*", "a*", False),
    ("a\\?", "a\\x", True),
])
def test_escapes_are_for_query_strings_only(pattern: str, value: str, expected: bool) -> None:
    pred = compile_condition(Condition("http-header", (pattern,), header_name="X-A"))
    assert pred(req(headers=(("X-A", value),))) is expected


@pytest.mark.parametrize("cidrs,ip,expected", [
    (("10.20.1.0/24",), "10.20.1.77", True),
    (("10.20.1.0/24",), "10.20.2.77", False),
    (("10.20.1.0/24", "192.0.2.0/24"), "192.0.2.9", True),
    (("2001:db8::/32",), "2001:db8::1", True),
    (("2001:db8::/32",), "10.20.1.1", False),
    (("10.20.1.0/24",), "::ffff:10.20.1.5", True),   # v4-mapped peer
    (("10.20.1.0/24",), "not-an-ip", False),
])
def test_source_ip(cidrs: tuple[str, ...], ip: str, expected: bool) -> None:
    pred = compile_condition(Condition("source-ip", cidrs))
    assert pred(req(source_ip=ip)) is expected


def test_source_ip_never_reads_x_forwarded_for() -> None:
    pred = compile_condition(Condition("source-ip", ("198.51.100.0/24",)))
    assert pred(req(source_ip="10.20.1.30", headers=(("X-Forwarded-For", "198.51.100.7"),))) is False


def _listener(rules: list[dict[str, Any]]) -> Any:
    cfg = load_config({
        "name": "a", "arn": "arn:aws:elasticloadbalancing:eu-west-2:1:loadbalancer/app/a/1", "dns_name": "a.test",
        "nodes": [{"name": "alb-a", "address": "127.0.0.1"}], "log_dir": "/tmp/x",
        "listeners": [{"protocol": "HTTP", "port": 80, "rules": rules,
                       "default_actions": [{"type": "forward", "target_group": "default"}]}],
        "target_groups": [{"name": n, "arn": f"arn:tg/{n}", "port": 80} for n in ("default", "one", "two", "three")],
    })
    return cfg.listeners[0]


def _fwd(tg: str) -> list[dict[str, Any]]:
    return [{"type": "forward", "target_group": tg}]


def test_priority_order_first_match_wins_and_default_last() -> None:
    table = RuleTable(_listener([
        {"priority": 30, "conditions": [{"field": "path-pattern", "values": ["/*"]}], "actions": _fwd("three")},
        {"priority": 5, "conditions": [{"field": "path-pattern", "values": ["/api/*"]}], "actions": _fwd("one")},
        {"priority": 10, "conditions": [{"field": "path-pattern", "values": ["/api/*"]},
                                        {"field": "http-request-method", "values": ["POST"]}], "actions": _fwd("two")},
    ]))
    def route(r: RequestView) -> tuple[int, str]:
        m = table.match(r)
        action = m.actions[0]
        assert isinstance(action, ForwardAction)
        return m.priority, action.target_groups[0].name
    assert route(req("/api/x", method="POST")) == (5, "one")
    assert route(req("/other")) == (30, "three")
    assert route(req("nopath")) == (0, "default")


def test_conditions_are_anded() -> None:
    table = RuleTable(_listener([
        {"priority": 1, "conditions": [{"field": "host-header", "values": ["api.example.com"]},
                                       {"field": "path-pattern", "values": ["/v1/*"]}], "actions": _fwd("one")},
    ]))
    assert table.match(req("/v1/x", host="api.example.com")).priority == 1
    assert table.match(req("/v1/x", host="www.example.com")).priority == 0
    assert table.match(req("/v2/x", host="api.example.com")).priority == 0


def test_match_is_remembered_per_method_path_and_host_when_rules_look_at_nothing_else() -> None:
    table = RuleTable(_listener([
        {"priority": 1, "conditions": [{"field": "host-header", "values": ["API.example.com"]},
                                       {"field": "path-pattern", "values": ["/v1/*"]}], "actions": _fwd("one")},
        {"priority": 2, "conditions": [{"field": "http-request-method", "values": ["POST"]}], "actions": _fwd("two")},
    ]))
    assert table.lookup("GET", "/v1/x", "api.example.com:443") is None
    for method, path, host, priority in (("GET", "/v1/x", "api.example.com:443", 1), ("GET", "/v1/x", "www", 0),
                                         ("POST", "/v2", "api.example.com", 2), ("GET", "/v2", "api.example.com", 0)):
        first = table.match(req(path, method=method, host=host))
        assert first.priority == priority
        assert table.lookup(method, path, host) is first
    assert table.lookup("get", "/v1/x", "api.example.com:443") is None  # methods are case-sensitive


def test_match_is_not_remembered_when_rules_read_headers_query_or_source() -> None:
    for cond in ({"field": "http-header", "header_name": "X-A", "values": ["1"]},
                 {"field": "query-string", "values": [{"key": "a", "value": "1"}]},
                 {"field": "source-ip", "values": ["10.0.0.0/8"]}):
        table = RuleTable(_listener([{"priority": 1, "conditions": [cond], "actions": _fwd("one")}]))
        table.match(req("/"))
        assert table.lookup("GET", "/", "www.example.com") is None


def test_remembered_matches_are_bounded() -> None:
    table = RuleTable(_listener([
        {"priority": 1, "conditions": [{"field": "path-pattern", "values": ["/a*"]}], "actions": _fwd("one")}]))
    for i in range(RuleTable.CACHE_ENTRIES + 10):
        assert table.match(req(f"/a{i}")).priority == 1
    assert table.match(req("/a" + "x" * RuleTable.CACHE_KEY_CHARS)).priority == 1
    assert table.lookup("GET", "/a" + "x" * RuleTable.CACHE_KEY_CHARS, "www.example.com") is None  # too long
    assert table.lookup("GET", f"/a{RuleTable.CACHE_ENTRIES + 9}", "www.example.com") is not None
    assert table.lookup("GET", "/a0", "www.example.com") is None  # emptied when full


@pytest.mark.parametrize("host,expected", [
    ("example.com", "example.com"), ("example.com:8080", "example.com"), ("[::1]:443", "[::1]"), ("[::1]", "[::1]"),
])
def test_host_without_port(host: str, expected: str) -> None:
    assert host_without_port(host) == expected


def test_parse_query_keeps_raw_encoding() -> None:
    assert parse_query("a=1&b=%20x&flag&&c=") == [("a", "1"), ("b", "%20x"), ("flag", ""), ("c", "")]
