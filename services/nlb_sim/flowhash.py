"""Target selection (no I/O): which targets a node may use, and which one a flow gets.

AWS (NLB-INTRO23, ELB-HOW): a TCP flow is hashed over protocol, source IP, source port,
destination IP, destination port and the TCP sequence number, and pinned to the chosen target.
The simulator cannot see the client's initial sequence number through a socket API, so the
caller passes a per-connection random 32-bit value in its place (``seq``).
"""

from __future__ import annotations

import hashlib
import struct
from socket import inet_aton  # a pure conversion (no I/O); 10x faster than ipaddress here
from typing import Callable, Sequence, TypeVar

from .config import Target

T = TypeVar("T", bound=Target)

_PROTO_NUMBER = {"TCP": 6, "TLS": 6, "UDP": 17}
_KEY = struct.Struct("!B4sH4sHI")


def flow_hash(protocol: str, src_ip: str, src_port: int, dst_ip: str, dst_port: int, seq: int) -> int:
    """64-bit hash of the flow tuple plus ``seq``; stable for equal inputs."""
    key = _KEY.pack(_PROTO_NUMBER.get(protocol, 0), inet_aton(src_ip), src_port,
                    inet_aton(dst_ip), dst_port, seq & 0xFFFFFFFF)
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def candidates(targets: Sequence[T], node_az: str, cross_zone: bool,
               is_healthy: Callable[[T], bool]) -> tuple[T, ...]:
    """Targets a node in ``node_az`` may send a new flow to.

    Cross-zone on: every target; off: only the node's own AZ. Among those, the healthy ones;
    if none is healthy, fail open to all of them (AWS would also pull the AZ's address from DNS
    when cross-zone is off, which is the DNS simulator's business). Empty when the node's AZ
    holds no target at all ("an empty Availability Zone is considered unhealthy"): the flow is
    refused.
    """
    pool = tuple(targets) if cross_zone else tuple(t for t in targets if t.az == node_az)
    healthy = tuple(t for t in pool if is_healthy(t))
    return healthy or pool


def choose(pool: Sequence[T], hash_value: int) -> T | None:
    """The target for a flow with ``hash_value`` among ``pool`` (None when empty)."""
    if not pool:
        return None
    return pool[hash_value % len(pool)]
