"""Target health state machine, matcher and round-robin selection with fail open."""

from __future__ import annotations

import pytest

from services.alb_sim.health import (
    DRAINING, HEALTHY, INITIAL, UNHEALTHY, UNUSED, CheckResult, Matcher, RoundRobin, TargetHealth,
)

OK, FAIL, TIMEOUT = CheckResult.passed(), CheckResult.failed(), CheckResult.timeout()


def run(results: list[CheckResult], healthy: int = 3, unhealthy: int = 2) -> list[str]:
    h = TargetHealth(healthy, unhealthy)
    return [h.record(r) for r in results]


def test_initial_state_and_reason() -> None:
    h = TargetHealth(5, 2)
    assert (h.state, h.reason, h.description) == (INITIAL, "Elb.InitialHealthChecking", "Initial health checks in progress")


@pytest.mark.parametrize("results,states", [
    ([OK], [HEALTHY]),                                  # one passed check after registration
    ([FAIL, OK], [INITIAL, HEALTHY]),
    ([FAIL, FAIL], [INITIAL, UNHEALTHY]),               # unhealthy_threshold failures from initial
    ([OK, FAIL, OK, FAIL, FAIL], [HEALTHY, HEALTHY, HEALTHY, HEALTHY, UNHEALTHY]),  # consecutive only
    ([OK, FAIL, FAIL, OK, OK, OK], [HEALTHY, HEALTHY, UNHEALTHY, UNHEALTHY, UNHEALTHY, HEALTHY]),
    ([OK, FAIL, FAIL, OK, OK, FAIL, OK, OK, OK], [HEALTHY, HEALTHY, UNHEALTHY, UNHEALTHY, UNHEALTHY, UNHEALTHY,
                                                  UNHEALTHY, UNHEALTHY, HEALTHY]),
])
def test_transitions(results: list[CheckResult], states: list[str]) -> None:
    assert run(results) == states


@pytest.mark.parametrize("result,reason,description", [
    (CheckResult.failed(), "Target.FailedHealthChecks", "Health checks failed"),
    (CheckResult.timeout(), "Target.Timeout", "Request timed out"),
    (CheckResult.code_mismatch(503), "Target.ResponseCodeMismatch", "Health checks failed with these codes: [503]"),
])
def test_unhealthy_reasons(result: CheckResult, reason: str, description: str) -> None:
    h = TargetHealth(2, 2)
    h.record(OK)
    h.record(result)
    h.record(result)
    assert (h.state, h.reason, h.description) == (UNHEALTHY, reason, description)
    h.record(OK)
    h.record(OK)
    assert (h.state, h.reason, h.description) == (HEALTHY, None, None)


def test_deregistration() -> None:
    h = TargetHealth(2, 2)
    h.record(OK)
    h.deregister()
    assert (h.state, h.reason) == (DRAINING, "Target.DeregistrationInProgress")
    assert h.record(OK) == DRAINING
    h.drained()
    assert (h.state, h.reason) == (UNUSED, "Target.NotRegistered")


@pytest.mark.parametrize("spec,code,expected", [
    ("200", 200, True), ("200", 201, False),
    ("200,301", 301, True), ("200,301", 302, False),
    ("200-299", 250, True), ("200-299", 300, False),
    ("200-299,404", 404, True),
])
def test_matcher(spec: str, code: int, expected: bool) -> None:
    assert Matcher(spec).matches(code) is expected


def test_matcher_rejects_bad_spec() -> None:
    with pytest.raises(ValueError, match=r"'2xx' is not a list of HTTP codes or ranges within 200-499"):
        Matcher("2xx")
    with pytest.raises(ValueError, match=r"'500' is not a list of HTTP codes or ranges within 200-499"):
        Matcher("500")  # the ALB's matcher stops at 499 (ALB-HC23); the NLB's at 599


def test_round_robin_over_healthy_only() -> None:
    rr: RoundRobin[str] = RoundRobin()
    picks = [rr.pick(["a", "b", "c"], [HEALTHY, UNHEALTHY, HEALTHY]) for _ in range(4)]
    assert picks == ["a", "c", "a", "c"]


def test_fail_open_when_no_target_is_healthy() -> None:
    rr: RoundRobin[str] = RoundRobin()
    picks = [rr.pick(["a", "b"], [UNHEALTHY, INITIAL]) for _ in range(4)]
    assert picks == ["a", "b", "a", "b"]


@pytest.mark.parametrize("targets,states", [([], []), (["a"], [UNUSED]), (["a", "b"], [DRAINING, UNUSED])])
def test_nothing_registered_means_none(targets: list[str], states: list[str]) -> None:
    assert RoundRobin[str]().pick(targets, states) is None


def test_least_outstanding_requests_picks_the_least_busy_and_shares_ties() -> None:
    from services.alb_sim.health import LeastOutstanding

    lor = LeastOutstanding[str]()
    assert lor.pick(["a", "b", "c"], [HEALTHY, HEALTHY, HEALTHY], [3, 1, 2]) == "b"
    assert [lor.pick(["a", "b", "c"], [HEALTHY, HEALTHY, UNHEALTHY], [0, 0, 0]) for _ in range(4)].count("a") == 2
    # fail open like round robin: nothing healthy -> the least busy registered target
    assert lor.pick(["a", "b"], [UNHEALTHY, UNHEALTHY], [5, 4]) == "b"
    assert lor.pick([], [], []) is None


@pytest.mark.parametrize("reply, result", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", OK),
    (b"HTTP/1.1 503 Service Unavailable\r\n\r\n", CheckResult.code_mismatch(503)),
    (b"x" * 200_000, FAIL),  # no line end within asyncio's 64 KiB limit: readline raised ValueError
    (b"HTTP/1.1 200 OK" + b"x" * 70_000 + b"\r\n", FAIL),  # a status line longer than the limit
    (b"\xff\xfe garbage\r\n", FAIL),
    (b"HTTP/1.1 \xd9\xa3\xd9\xa3\xd9\xa3 OK\r\n", FAIL),  # non-ASCII digits
    (b"", FAIL),
])
def test_a_health_check_reads_any_target_answer_as_a_result(reply: bytes, result: CheckResult) -> None:
    """A check runs in the simulator's TaskGroup: an exception from it would stop the whole ALB."""
    import asyncio

    from services.alb_sim.healthcheck import check_once

    async def check() -> CheckResult:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        async with server:
            return await check_once("127.0.0.1", server.sockets[0].getsockname()[1], tls=None, path="/healthz",
                                    timeout=5, matcher_matches=lambda code: code == 200)

    assert asyncio.run(check()) == result
