"""Health state machine, consensus, matcher and target selection (no I/O)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.nlb_sim.config import Target
from services.nlb_sim.flowhash import candidates, choose, flow_hash
from services.elbv2.health_checks import parse_matcher
from services.nlb_sim.health import REASON_FAILED, REASON_INITIAL, State, TargetHealth, consensus, matches

I, H, U = State.INITIAL, State.HEALTHY, State.UNHEALTHY


# results fed in order -> (state, reason) after each one; thresholds healthy=3, unhealthy=2
@pytest.mark.parametrize("results, expected", [
    ("", []),
    ("+", [(H, None)]),                                   # one pass after registration
    ("-", [(I, REASON_INITIAL)]),
    ("--", [(I, REASON_INITIAL), (U, REASON_FAILED)]),
    ("-+", [(I, REASON_INITIAL), (H, None)]),
    ("+-", [(H, None), (H, None)]),
    ("+--", [(H, None), (H, None), (U, REASON_FAILED)]),
    ("+-+-", [(H, None)] * 4),                             # failures must be consecutive
    ("--++", [(I, REASON_INITIAL), (U, REASON_FAILED), (U, REASON_FAILED), (U, REASON_FAILED)]),
    ("--+++", [(I, REASON_INITIAL), (U, REASON_FAILED), (U, REASON_FAILED), (U, REASON_FAILED),
               (H, None)]),
    ("--++-+++", [(I, REASON_INITIAL)] + [(U, REASON_FAILED)] * 6 + [(H, None)]),
])
def test_state_machine(results: str, expected: list[tuple[State, str | None]]) -> None:
    h = TargetHealth(healthy_threshold=3, unhealthy_threshold=2)
    assert (h.state, h.reason, h.description) == (I, REASON_INITIAL, "Initial health checks in progress")
    seen = []
    for r in results:
        h.record(r == "+")
        seen.append((h.state, h.reason))
    assert seen == expected


def test_transitions_are_reported_once_with_detail() -> None:
    h = TargetHealth(healthy_threshold=2, unhealthy_threshold=2)
    assert h.record(True, "connected") is not None
    assert h.record(True) is None
    assert h.record(False, "refused") is None
    change = h.record(False, "refused")
    assert change is not None
    assert (change.old, change.new, change.reason, change.detail) == (H, U, REASON_FAILED, "refused")
    assert h.description == "Health checks failed"
    assert h.record(False) is None
    assert [h.record(True), h.record(True) is not None] == [None, True]
    assert (h.state, h.reason, h.description) == (H, None, None)


@pytest.mark.parametrize("states, expected", [
    ([H, H], H), ([U, U], U), ([H, U], U), ([H, I], I), ([H, H, U], H), ([U, U, H], U),
    ([I], I), ([], State.UNUSED),
])
def test_consensus(states: list[State], expected: State) -> None:
    assert consensus(states) is expected


@pytest.mark.parametrize("matcher, ranges", [
    ("200", ((200, 200),)), ("200-399", ((200, 399),)), ("200,202", ((200, 200), (202, 202))),
    ("200-299, 404", ((200, 299), (404, 404))), ("599", ((599, 599),)),
])
def test_parse_matcher(matcher: str, ranges: tuple[tuple[int, int], ...]) -> None:
    assert parse_matcher(matcher) == ranges


@pytest.mark.parametrize("matcher", ["", "abc", "199", "600", "300-200", "200-", "2000", "200;201"])
def test_parse_matcher_rejects(matcher: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_matcher(matcher)
    assert str(e.value) == (f"{matcher!r} is not a list of HTTP codes or ranges within 200-599"
                            " (e.g. \"200\", \"200,202\", \"200-399\")")


def test_matches() -> None:
    r = parse_matcher("200-299,404")
    assert [matches(r, s) for s in (199, 200, 299, 300, 404, 500)] == [False, True, True, False, True,
                                                                        False]


# --- selection ---------------------------------------------------------------------------

A1, A2 = Target("a1", "10.0.1.1", 443, "a"), Target("a2", "10.0.1.2", 443, "a")
B1 = Target("b1", "10.0.2.1", 443, "b")
ALL = (A1, A2, B1)


@pytest.mark.parametrize("node_az, cross_zone, healthy, expected", [
    ("a", False, {"a1", "a2", "b1"}, (A1, A2)),
    ("a", False, {"a2", "b1"}, (A2,)),
    ("a", False, {"b1"}, (A1, A2)),          # no healthy target in the zone: fail open in the zone
    ("a", True, {"b1"}, (B1,)),
    ("a", True, {"a1", "b1"}, (A1, B1)),
    ("a", True, set(), ALL),                 # nothing healthy anywhere: fail open to all
    ("b", False, {"a1", "a2"}, (B1,)),
    ("c", False, {"a1"}, ()),                # empty zone: flow refused
])
def test_candidates(node_az: str, cross_zone: bool, healthy: set[str],
                    expected: tuple[Target, ...]) -> None:
    assert candidates(ALL, node_az, cross_zone, lambda t: t.id in healthy) == expected


def test_choose() -> None:
    assert choose((), 12345) is None
    assert [choose((A1, A2, B1), h).id for h in range(4)] == ["a1", "a2", "b1", "a1"]


def test_flow_hash_covers_every_field() -> None:
    base = ("TCP", "198.51.100.7", 40000, "198.51.100.10", 443, 7)
    h = flow_hash(*base)
    assert h == flow_hash(*base) and 0 <= h < 2 ** 64
    variants = [("UDP",) + base[1:], base[:1] + ("198.51.100.8",) + base[2:],
                base[:2] + (40001,) + base[3:], base[:3] + ("198.51.100.11",) + base[4:],
                base[:4] + (80, 7), base[:5] + (8,)]
    assert len({flow_hash(*v) for v in variants} | {h}) == 7  # type: ignore[arg-type]


def _shares(targets: tuple[Target, ...], cross_zone: bool, samples: int = 40_000) -> dict[str, float]:
    """Traffic share per target with DNS spreading clients 50/50 over nodes in az a and b."""
    rng = random.Random(1)
    counts: Counter[str] = Counter()
    for node_az, node_ip in (("a", "198.51.100.10"), ("b", "198.51.100.11")):
        pool = candidates(targets, node_az, cross_zone, lambda t: True)
        for _ in range(samples):
            h = flow_hash("TCP", "203.0.113.9", rng.randrange(1024, 65536), node_ip, 443,
                          rng.getrandbits(32))
            counts[choose(pool, h).id] += 1  # type: ignore[union-attr]
    return {k: v / (2 * samples) for k, v in counts.items()}


def test_aws_example_2_vs_8_targets() -> None:
    """ELB-HOW: AZ A 2 targets, AZ B 8; on -> 10 % each; off -> A 25 % each, B 6.25 % each."""
    targets = tuple(Target(f"a{i}", f"10.0.1.{i}", 80, "a") for i in range(2)) + \
        tuple(Target(f"b{i}", f"10.0.2.{i}", 80, "b") for i in range(8))
    on = _shares(targets, cross_zone=True)
    assert all(abs(on[t.id] - 0.10) < 0.01 for t in targets), on
    off = _shares(targets, cross_zone=False)
    assert all(abs(off[t.id] - 0.25) < 0.01 for t in targets[:2]), off
    assert all(abs(off[t.id] - 0.0625) < 0.01 for t in targets[2:]), off
