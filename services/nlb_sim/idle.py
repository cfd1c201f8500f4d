"""Idle-timeout bookkeeping (no I/O), shared by the Protocol relay and the splice relay.

AWS (NLB-LB23, NLB-TS23): a flow that moves no byte in either direction for the idle timeout is
forgotten. The listener samples each open flow about once a second (``sweep_idle``) with the
flow's byte total; nothing runs on the byte path.
"""

from __future__ import annotations


def idle_step(seen: int, last_active: float, moved: int, now: float,
              timeout: float) -> tuple[int, float, bool]:
    """One sample: ``moved`` bytes so far at time ``now``, ``seen`` at the previous sample.
    Returns the new (seen, last_active) and whether the flow is now idle past ``timeout``."""
    if moved != seen:
        return moved, now, False
    return seen, last_active, now - last_active >= timeout
