"""X-Amzn-Trace-Id handling (pure: no I/O; clock and randomness injected).

ALB request tracing docs: absent -> the ALB adds `Root=1-<8 hex epoch seconds>-<24 hex>`;
present with a Root -> the ALB inserts (or updates) a `Self=1-...` field, keeping Root and any
custom fields (`Self=...;Root=...;CustomField=...`). Decision: a header without a Root field gets
a new Root put first, its other fields kept (Self dropped, as a Self without Root is meaningless).
"""

from __future__ import annotations

import random
from typing import Callable, Final

from services.common import PerSecond

Clock = Callable[[], float]


BATCH: Final = 64  # random parts drawn at once


class TraceIdGenerator:
    """`new_id()`s are `1-<epoch seconds, 8 hex>-<96 random bits, 24 hex>`. The random parts are
    drawn BATCH at a time and used from the low bits up: the same ids, in the same order, as one
    `rng.getrandbits(96)` per id (Random fills getrandbits from the low 32-bit word up)."""

    def __init__(self, clock: Clock, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._prefix = PerSecond(_epoch_part)
        self._random_hex = ""
        self._left = 0  # random parts not used yet; the next one ends at 24 * self._left

    def new_id(self) -> str:
        left = self._left
        if left == 0:
            self._random_hex = "%0*x" % (24 * BATCH, self._rng.getrandbits(96 * BATCH))
            left = BATCH
        self._left = left - 1
        return self._prefix.of(int(self._clock())) + self._random_hex[24 * left - 24:24 * left]

    def process(self, received: str | None) -> str:
        """Return the header value to forward upstream."""
        if received is None or not received.strip():
            return f"Root={self.new_id()}"
        fields = [f.strip() for f in received.split(";") if f.strip()]
        has_root = any(_key(f) == "root" for f in fields)
        others = [f for f in fields if _key(f) != "self"]
        if has_root:
            return ";".join([f"Self={self.new_id()}", *others])
        return ";".join([f"Root={self.new_id()}", *others])


def _epoch_part(second: int) -> str:
    return "1-%08x-" % (second & 0xFFFFFFFF)


def _key(field: str) -> str:
    return field.split("=", 1)[0].strip().lower()


def root_of(value: str) -> str | None:
    for f in value.split(";"):
        k, _, v = f.strip().partition("=")
        if k.lower() == "root":
            return v
    return None
