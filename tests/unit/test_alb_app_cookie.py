"""Application-based stickiness (stickiness.type app_cookie) through the simulator on loopback:
AWSALBAPP-0..3 appear once the target sets the application cookie; both cookies keep a client on
its target; the duration is reset on every response."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterator

import pytest

from services.alb_sim.config import Target, TargetGroupAttributes
from tests.unit.test_alb_server import Lab

EXPIRES = r"Expires=[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT"


@pytest.fixture(scope="module")
def alab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The api group holds both echo backends and sticks with the application cookie SESSIONID."""
    lab = Lab(tmp_path_factory.mktemp("albapp"))
    groups = []
    for tg in lab.config.target_groups:
        if tg.name == "api":
            tg = dataclasses.replace(
                tg, targets=(*tg.targets, Target("web-frontend-a", "127.0.0.1", lab.front_port, "a")),
                attributes=TargetGroupAttributes(stickiness=True, stickiness_type="app_cookie",
                                                 app_cookie_name="SESSIONID", app_cookie_seconds=600))
        groups.append(tg)
    lab.config = dataclasses.replace(lab.config, target_groups=tuple(groups))
    lab.start()
    yield lab
    lab.stop()


def set_cookies(headers: object) -> list[str]:
    return headers.get_all("Set-Cookie") or []  # type: ignore[attr-defined]


def test_no_alb_cookie_until_the_target_sets_the_application_cookie(alab: Lab) -> None:
    status, headers, _ = alab.get("/api/plain", {"Host": "www.lab.test"})
    assert status == 200 and set_cookies(headers) == []


def test_awsalbapp_shards_follow_the_application_cookie(alab: Lab) -> None:
    _, headers, _ = alab.get("/api/setcookie", {"Host": "www.lab.test"})
    cookies = set_cookies(headers)
    assert cookies[0] == "SESSIONID=s-1; Path=/"  # the target's own cookie, untouched
    assert [c.split("=", 1)[0] for c in cookies[1:]] == ["AWSALBAPP-0", "AWSALBAPP-1", "AWSALBAPP-2", "AWSALBAPP-3"]
    assert re.fullmatch(r"AWSALBAPP-0=[A-Za-z0-9_-]+\.[A-Za-z0-9_=-]+; " + EXPIRES + "; Path=/", cookies[1])
    for c in cookies[2:]:
        assert re.fullmatch(r"AWSALBAPP-\d=_remove_; " + EXPIRES + "; Path=/", c)
    assert "127.0.0.1" not in cookies[1]  # the target is encoded, not readable


def sticky_pair(lab: Lab) -> tuple[str, str]:
    """(backend name, Cookie header) for a fresh sticky session."""
    _, headers, body = lab.get("/api/setcookie", {"Host": "www.lab.test"})
    value = set_cookies(headers)[1].split("=", 1)[1].split(";", 1)[0]
    return headers["X-Backend"], f"SESSIONID=s-1; AWSALBAPP-0={value}"


def test_both_cookies_keep_the_client_on_its_target_and_renew_the_alb_cookie(alab: Lab) -> None:
    for _ in range(2):  # round robin gives the two sessions different targets at least once
        backend, cookie = sticky_pair(alab)
        for i in range(6):
            status, headers, _ = alab.get(f"/api/again{i}", {"Host": "www.lab.test", "Cookie": cookie})
            assert (status, headers["X-Backend"]) == (200, backend)
            assert [c.split("=", 1)[0] for c in set_cookies(headers)] == [f"AWSALBAPP-{n}" for n in range(4)]


def test_without_the_application_cookie_or_with_a_forged_one_there_is_no_stickiness(alab: Lab) -> None:
    backend, cookie = sticky_pair(alab)
    alb_only = cookie.split("; ", 1)[1]
    seen = {alab.get(f"/api/x{i}", {"Host": "www.lab.test", "Cookie": alb_only})[1]["X-Backend"] for i in range(4)}
    assert seen == {"api", "frontend"}
    forged = cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB")
    replies = [alab.get(f"/api/y{i}", {"Host": "www.lab.test", "Cookie": forged}) for i in range(4)]
    assert {h["X-Backend"] for _, h, _ in replies} == {"api", "frontend"}
    assert all(set_cookies(h) == [] for _, h, _ in replies)


def test_a_deregistered_target_moves_the_session_and_it_stays_on_the_new_target(alab: Lab) -> None:
    from tests.unit.test_alb_nodes import admin

    backend, cookie = sticky_pair(alab)
    port = alab.api_port if backend == "api" else alab.front_port
    status, _ = admin(alab, "POST", "/deregister-targets",
                      {"TargetGroupName": "api", "Targets": [{"Id": "127.0.0.1", "Port": port}]})
    assert status == 200
    try:
        _, headers, _ = alab.get("/api/moved", {"Host": "www.lab.test", "Cookie": cookie})
        moved_to = headers["X-Backend"]
        assert moved_to != backend
        cookies = set_cookies(headers)  # the target set no cookie: the ALB sticks the session to it anyway
        assert [c.split("=", 1)[0] for c in cookies] == [f"AWSALBAPP-{n}" for n in range(4)]
        new_cookie = "SESSIONID=s-1; AWSALBAPP-0=" + cookies[0].split("=", 1)[1].split(";", 1)[0]
    finally:
        admin(alab, "POST", "/register-targets", {"TargetGroupName": "api", "Targets": [{"Id": "127.0.0.1", "Port": port}]})
    for i in range(4):  # the old target is back, the session stays where it moved
        assert alab.get(f"/api/stay{i}", {"Host": "www.lab.test", "Cookie": new_cookie})[1]["X-Backend"] == moved_to
