"""Target health state machine, matcher and target selection (pure: no I/O).

States and reason codes are AWS's (DescribeTargetHealth): `initial` (Elb.InitialHealthChecking)
until the first passed check (a registered target must pass one check to become healthy) or
`unhealthy_threshold` consecutive failures; `healthy` -> `unhealthy` after `unhealthy_threshold`
consecutive failures; `unhealthy` -> `healthy` after `healthy_threshold` consecutive successes;
`draining` (Target.DeregistrationInProgress) and `unused` (Target.NotRegistered) after
deregistration.

Selection: round robin (or least outstanding requests, or weighted random) over healthy targets; fail open (no healthy target -> every registered
target that is not draining/unused, including `initial` ones); nothing registered -> None (503).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar, Generic, Sequence, TypeVar

from services.elbv2.health_checks import APPLICATION, parse_matcher
from services.elbv2.target_health import (DEREGISTRATION_IN_PROGRESS, DESCRIPTIONS, DRAINING, FAILED_HEALTH_CHECKS,
                                          HEALTHY, INITIAL, INITIAL_HEALTH_CHECKING, NOT_REGISTERED,
                                          RESPONSE_CODE_MISMATCH, TIMEOUT, UNHEALTHY, UNUSED, response_code_mismatch)


@dataclass(frozen=True)
class CheckResult:
    """One health check outcome; `reason`/`description` explain a failure."""
    ok: bool
    reason: str | None = None
    description: str | None = None

    @staticmethod
    def passed() -> "CheckResult":
        return CheckResult(True)

    @staticmethod
    def timeout() -> "CheckResult":
        return CheckResult(False, TIMEOUT, DESCRIPTIONS[TIMEOUT])

    @staticmethod
    def failed() -> "CheckResult":
        return CheckResult(False, FAILED_HEALTH_CHECKS, DESCRIPTIONS[FAILED_HEALTH_CHECKS])

    @staticmethod
    def code_mismatch(code: int) -> "CheckResult":
        return CheckResult(False, RESPONSE_CODE_MISMATCH, response_code_mismatch(code))


class Matcher:
    """Health check success codes: `200`, `200,301`, `200-299` (and combinations), within the ALB's
    200-499 (services.elbv2.health_checks, which the config was checked with)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._ranges = list(parse_matcher(spec, APPLICATION.matcher_codes))

    def matches(self, code: int) -> bool:
        return any(lo <= code <= hi for lo, hi in self._ranges)


class TargetHealth:
    """Health of one registered target, driven by check results.

    `TargetHealth.generation` changes whenever any target is created or changes state, so a
    target group may keep its routable targets until it changes."""

    generation: ClassVar[int] = 0  # bumped on every creation and state change

    def __init__(self, healthy_threshold: int, unhealthy_threshold: int) -> None:
        TargetHealth.generation += 1
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.state = INITIAL
        self.reason: str | None = INITIAL_HEALTH_CHECKING
        self.description: str | None = DESCRIPTIONS[INITIAL_HEALTH_CHECKING]
        self._successes = 0
        self._failures = 0

    def record(self, result: CheckResult) -> str:
        """Apply one check result; returns the (possibly new) state."""
        if self.state in (DRAINING, UNUSED):
            return self.state
        if result.ok:
            self._failures = 0
            self._successes += 1
            if self.state == INITIAL or (self.state == UNHEALTHY and self._successes >= self.healthy_threshold):
                self._set(HEALTHY, None, None)
            return self.state
        self._successes = 0
        self._failures += 1
        if self.state == UNHEALTHY:
            self.reason, self.description = result.reason, result.description
        elif self._failures >= self.unhealthy_threshold:
            self._set(UNHEALTHY, result.reason, result.description)
        return self.state

    def deregister(self) -> None:
        self._set(DRAINING, DEREGISTRATION_IN_PROGRESS, DESCRIPTIONS[DEREGISTRATION_IN_PROGRESS])

    def drained(self) -> None:
        self._set(UNUSED, NOT_REGISTERED, DESCRIPTIONS[NOT_REGISTERED])

    def _set(self, state: str, reason: str | None, description: str | None) -> None:
        self.state, self.reason, self.description = state, reason, description
        self._successes = self._failures = 0
        TargetHealth.generation += 1


T = TypeVar("T")


def routable(targets: Sequence[T], states: Sequence[str]) -> list[T]:
    """The targets that may get a request: the healthy ones, else (fail open) every registered
    target that is not draining or unused."""
    candidates = [t for t, s in zip(targets, states) if s == HEALTHY]
    return candidates or [t for t, s in zip(targets, states) if s not in (DRAINING, UNUSED)]


class RoundRobin(Generic[T]):
    """Round robin over healthy targets with AWS's fail-open rule."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, targets: Sequence[T], states: Sequence[str]) -> T | None:
        return self.next(routable(targets, states))

    def next(self, candidates: Sequence[T]) -> T | None:
        """The next of `routable(...)`'s result."""
        if not candidates:
            return None
        choice = candidates[self._next % len(candidates)]
        self._next = (self._next + 1) % (1 << 30)
        return choice


class LeastOutstanding(Generic[T]):
    """least_outstanding_requests: the candidate (same fail-open rule as round robin) with the
    fewest requests in flight; ties go round robin so equal targets share the load."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, targets: Sequence[T], states: Sequence[str], inflight: Sequence[int]) -> T | None:
        indexes = [i for i, s in enumerate(states) if s == HEALTHY]
        if not indexes:
            indexes = [i for i, s in enumerate(states) if s not in (DRAINING, UNUSED)]
        if not indexes:
            return None
        low = min(inflight[i] for i in indexes)
        tied = [i for i in indexes if inflight[i] == low]
        choice = targets[tied[self._next % len(tied)]]
        self._next = (self._next + 1) % (1 << 30)
        return choice


class WeightedRandom(Generic[T]):
    """weighted_random: a random candidate (same fail-open rule as round robin). AWS weights each
    target by what anomaly detection finds; the lab detects no anomalies, so every candidate has
    the same weight (docs/decisions.md #47)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, targets: Sequence[T], states: Sequence[str]) -> T | None:
        return self.next(routable(targets, states))

    def next(self, candidates: Sequence[T]) -> T | None:
        """A random one of `routable(...)`'s result."""
        return candidates[self.rng.randrange(len(candidates))] if candidates else None


def slow_start_weight(now: float, healthy_since: float, slow_until: float, duration: float) -> float:
    """A target's share during slow start: linear from ~0 to 1 over `duration` (1 when not in it)."""
    if now >= slow_until or duration <= 0:
        return 1.0
    return max(0.01, (now - healthy_since) / duration)
