"""Redirect action Location building and placeholder expansion."""

from __future__ import annotations

import pytest

from services.alb_sim.config import RedirectAction
from services.alb_sim.redirect import RedirectRequest, build_location, expand, redirect_status

REQ = RedirectRequest(protocol="HTTP", host="www.example.com", port=80, path="/a/b.html", query="x=1&y=2")


@pytest.mark.parametrize("action,expected", [
    # AWS's documented HTTP -> HTTPS example
    (RedirectAction(protocol="HTTPS", port="443", host="#{host}", path="/#{path}", query="#{query}"),
     "https://www.example.com:443/a/b.html?x=1&y=2"),
    (RedirectAction(host="new.example.com"), "http://new.example.com:80/a/b.html?x=1&y=2"),
    (RedirectAction(path="/new/#{path}", query=""), "http://www.example.com:80/new/a/b.html"),
    (RedirectAction(query="from=#{host}&p=#{path}&#{query}"),
     "http://www.example.com:80/a/b.html?from=www.example.com&p=a/b.html&x=1&y=2"),
    (RedirectAction(port="8080", path="/#{host}/#{port}/#{path}"),
     "http://www.example.com:8080/www.example.com/80/a/b.html?x=1&y=2"),
])
def test_location(action: RedirectAction, expected: str) -> None:
    assert build_location(action, REQ) == expected


def test_empty_query_writes_no_question_mark() -> None:
    req = RedirectRequest("HTTP", "h.example.com", 80, "/", "")
    assert build_location(RedirectAction(protocol="HTTPS", port="443"), req) == "https://h.example.com:443/"


def test_request_text_that_looks_like_a_placeholder_is_not_expanded_again() -> None:
    req = RedirectRequest("HTTP", "h.example.com", 80, "/#{query}", "secret=1")
    assert expand("/#{path}", req) == "/#{query}"


@pytest.mark.parametrize("code,status", [("HTTP_301", 301), ("HTTP_302", 302)])
def test_status(code: str, status: int) -> None:
    assert redirect_status(RedirectAction(status_code=code, protocol="HTTPS")) == status
