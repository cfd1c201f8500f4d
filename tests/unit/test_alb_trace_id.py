"""X-Amzn-Trace-Id: Root added when absent, Self inserted/updated when Root present."""

from __future__ import annotations

import random
import re

import pytest

from services.alb_sim.trace_id import TraceIdGenerator, root_of

EPOCH = 0x58337262  # AWS's example epoch (2016-11-21)


class FixedRandom(random.Random):
    def getrandbits(self, k: int) -> int:
        return 0x36D228AD5D99923122BBE354 & ((1 << k) - 1)


def gen() -> TraceIdGenerator:
    return TraceIdGenerator(lambda: EPOCH + 0.9, FixedRandom())


@pytest.mark.parametrize("received,expected", [
    (None, "Root=1-58337262-36d228ad5d99923122bbe354"),
    ("", "Root=1-58337262-36d228ad5d99923122bbe354"),
    ("Root=1-67891233-abcdef012345678912345678",
     "Self=1-58337262-36d228ad5d99923122bbe354;Root=1-67891233-abcdef012345678912345678"),
    ("Root=1-67891233-abcdef012345678912345678;CalledFrom=app",
     "Self=1-58337262-36d228ad5d99923122bbe354;Root=1-67891233-abcdef012345678912345678;CalledFrom=app"),
    # an existing Self (a previous ALB hop) is updated, not duplicated
    ("Self=1-11111111-000000000000000000000000;Root=1-67891233-abcdef012345678912345678;Sampled=1",
     "Self=1-58337262-36d228ad5d99923122bbe354;Root=1-67891233-abcdef012345678912345678;Sampled=1"),
    # no Root: a new Root goes first, custom fields kept
    ("CustomField=x", "Root=1-58337262-36d228ad5d99923122bbe354;CustomField=x"),
])
def test_process(received: str | None, expected: str) -> None:
    assert gen().process(received) == expected


def test_format_with_real_randomness() -> None:
    value = TraceIdGenerator(lambda: 1_700_000_000.0).process(None)
    assert re.fullmatch(r"Root=1-6553f100-[0-9a-f]{24}", value)


def test_root_of() -> None:
    assert root_of("Self=1-a-b;Root=1-c-d;X=y") == "1-c-d"
    assert root_of("X=y") is None


def test_ids_are_one_getrandbits_96_each_in_order_across_batches() -> None:
    """Drawing the random parts in batches changes no id: the same as one getrandbits(96) per id."""
    from services.alb_sim.trace_id import BATCH
    batched = TraceIdGenerator(lambda: EPOCH, random.Random(42))
    single = random.Random(42)
    for _ in range(BATCH * 2 + 3):
        assert batched.new_id() == "1-58337262-%024x" % single.getrandbits(96)
