"""Target health state machine (no I/O): check results in, AWS states and reasons out.

States and reason codes are AWS's (NLB-HC23). Rules as simulated:
- a registered target starts ``initial`` / ``Elb.InitialHealthChecking``;
- from ``initial``, ONE passing check makes it ``healthy`` (the first check runs at once);
  ``unhealthy_threshold`` consecutive failures make it ``unhealthy``;
- ``healthy`` -> ``unhealthy`` after ``unhealthy_threshold`` consecutive failures;
- ``unhealthy`` -> ``healthy`` after ``healthy_threshold`` consecutive passes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Iterable

from services.elbv2 import target_health


class State(enum.StrEnum):  # AWS's states (services.elbv2.target_health), as an enum for the NLB's code
    INITIAL = target_health.INITIAL
    HEALTHY = target_health.HEALTHY
    UNHEALTHY = target_health.UNHEALTHY
    UNUSED = target_health.UNUSED
    DRAINING = target_health.DRAINING
    UNAVAILABLE = target_health.UNAVAILABLE


REASON_INITIAL = target_health.INITIAL_HEALTH_CHECKING
REASON_FAILED = target_health.FAILED_HEALTH_CHECKS
DESCRIPTIONS = target_health.DESCRIPTIONS


@dataclass(frozen=True, slots=True)
class Transition:
    old: State
    new: State
    reason: str | None
    detail: str | None  # what the last check saw (for logs), e.g. "connect: Connection refused"


class TargetHealth:
    """Health of one target as seen by one NLB node."""

    __slots__ = ("healthy_threshold", "unhealthy_threshold", "state", "reason", "passes",
                 "failures", "last_detail", "on_move")

    def __init__(self, healthy_threshold: int, unhealthy_threshold: int,
                 on_move: Callable[[], None] | None = None) -> None:
        self.on_move = on_move  # told of every state change (the registry's version counter)
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.state = State.INITIAL
        self.reason: str | None = REASON_INITIAL
        self.passes = 0
        self.failures = 0
        self.last_detail: str | None = None

    @property
    def description(self) -> str | None:
        return DESCRIPTIONS.get(self.reason) if self.reason else None

    @property
    def is_healthy(self) -> bool:
        return self.state is State.HEALTHY

    def record(self, ok: bool, detail: str | None = None) -> Transition | None:
        """Feed one check result; returns the transition if the state changed."""
        self.last_detail = detail
        if ok:
            self.passes += 1
            self.failures = 0
            needed = 1 if self.state is State.INITIAL else self.healthy_threshold
            if self.state is not State.HEALTHY and self.passes >= needed:
                return self._move(State.HEALTHY, None, detail)
        else:
            self.failures += 1
            self.passes = 0
            if self.state is not State.UNHEALTHY and self.failures >= self.unhealthy_threshold:
                return self._move(State.UNHEALTHY, REASON_FAILED, detail)
        return None

    def _move(self, new: State, reason: str | None, detail: str | None) -> Transition:
        old = self.state
        self.state, self.reason = new, reason
        if self.on_move is not None:
            self.on_move()
        return Transition(old, new, reason, detail)


_RANK = {State.HEALTHY: 0, State.INITIAL: 1, State.UNHEALTHY: 2}


def consensus(states: Iterable[State]) -> State:
    """One state from several nodes' views: the majority; a tie goes to the less healthy state."""
    counts: dict[State, int] = {}
    for s in states:
        counts[s] = counts.get(s, 0) + 1
    if not counts:
        return State.UNUSED
    return max(counts, key=lambda s: (counts[s], _RANK.get(s, 3)))


def matches(ranges: tuple[tuple[int, int], ...], status: int) -> bool:
    return any(lo <= status <= hi for lo, hi in ranges)
