"""X-Amzn-Trace-Id handling (pure: no I/O; clock and randomness injected).

ALB request tracing docs: absent -> the ALB adds `Root=1-<8 hex epoch seconds>-<24 hex>`;
present with a Root -> the ALB inserts (or updates) a `Self=1-...` field, keeping Root and any
custom fields (`Self=...;Root=...;CustomField=...`). Decision: a header without a Root field gets
a new Root put first, its other fields kept (Self dropped, as a Self without Root is meaningless).
"""

from __future__ import annotations

import random
from typing import Callable

Clock = Callable[[], float]


class TraceIdGenerator:
    def __init__(self, clock: Clock, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()

    def new_id(self) -> str:
        return "1-%08x-%024x" % (int(self._clock()) & 0xFFFFFFFF, self._rng.getrandbits(96))

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


def _key(field: str) -> str:
    return field.split("=", 1)[0].strip().lower()


def root_of(value: str) -> str | None:
    for f in value.split(";"):
        k, _, v = f.strip().partition("=")
        if k.lower() == "root":
            return v
    return None
