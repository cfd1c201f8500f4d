"""Idle-timeout bookkeeping (no I/O), shared by the Protocol relay and the splice relay.

AWS (NLB-LB23, NLB-TS23): a flow that moves no byte in either direction for the idle timeout is
forgotten, and TCP keep-alive packets from the client or the target reset the timer. The listener
samples each open flow about once a second (``sweep_idle``) with the flow's byte total; nothing
runs on the byte path. While no byte moves, the sample also reads the kernel's counters of each
socket (``getsockopt(TCP_INFO)``, decisions #76) to see keep-alive probes, which carry no payload
and so never reach the relay:

- a peer's keep-alive probe is one sequence number below what the socket expects, so the kernel
  answers it with an ACK without processing it: ``tcpi_segs_in`` goes up by one and
  ``tcpi_last_ack_recv`` keeps growing;
- the answer to a probe of our own (TLS listeners send them, see ``relay``) is an ordinary ACK:
  ``tcpi_segs_in`` goes up by one and ``tcpi_last_ack_recv`` starts again from 0.

Measured on loopback (Linux 6.18), a peer with SO_KEEPALIVE, TCP_KEEPIDLE=1, TCP_KEEPINTVL=1 and no
data: the other side's segs_in rose by one a second, its last_ack_recv and last_data_recv did not
restart; with the keep-alive on the observed side instead, segs_in rose the same way and
last_ack_recv restarted from 0 each second.
"""

from __future__ import annotations

import struct
from typing import Final

# struct tcp_info (linux/tcp.h): 8 one-byte fields, then 32-bit ones; tcpi_last_ack_recv is the
# 13th of those (offset 56), tcpi_segs_in (Linux 4.2 and later) sits at offset 140.
_LAST_ACK_RECV: Final = 56
_SEGS_IN: Final = 140
TCP_INFO_BYTES: Final = 144
# An ACK up to this long before the previous sample may still look as if it came after it (the
# kernel counts in jiffies, the sample's time is the event loop's); see unsolicited_segments.
ACK_SLACK_MS: Final = 250


def idle_step(seen: int, last_active: float, moved: int, now: float,
              timeout: float, peer_active: bool = False) -> tuple[int, float, bool]:
    """One sample: ``moved`` bytes so far at time ``now``, ``seen`` at the previous sample;
    ``peer_active``: a peer sent a keep-alive (or another segment of its own) since then.
    Returns the new (seen, last_active) and whether the flow is now idle past ``timeout``."""
    if moved != seen or peer_active:
        return moved, now, False
    return seen, last_active, now - last_active >= timeout


def tcp_info_fields(raw: bytes) -> tuple[int, int] | None:
    """(tcpi_segs_in, tcpi_last_ack_recv in ms) from ``getsockopt(TCP_INFO)``; None when the kernel
    gave fewer bytes than that (older than Linux 4.2: segments are not counted)."""
    if len(raw) < TCP_INFO_BYTES:
        return None
    return struct.unpack_from("=I", raw, _SEGS_IN)[0], struct.unpack_from("=I", raw, _LAST_ACK_RECV)[0]


def unsolicited_segments(before: int, after: int, last_ack_recv_ms: int, interval: float) -> int:
    """How many segments a peer sent of its own accord between two samples ``interval`` seconds
    apart: the segments received (``tcpi_segs_in`` went from ``before`` to ``after``, modulo 2**32)
    less one when an ACK was processed meanwhile (``tcpi_last_ack_recv`` younger than the interval,
    give or take ACK_SLACK_MS): the answer to our own keep-alive probe, which we sent at most once
    per interval (every 20 s, sampled every second). A window update counts as that answer too; a
    peer's keep-alive probe never does (see the module docstring)."""
    received = (after - before) & 0xFFFFFFFF
    answered = 1 if last_ack_recv_ms < interval * 1000 + ACK_SLACK_MS else 0
    return max(received - answered, 0)


def peer_step(baseline: tuple[int, ...] | None, since: float,
              samples: tuple[tuple[int, int], ...], now: float) -> tuple[tuple[int, ...], bool]:
    """One look at a flow's sockets while no payload moves: ``samples`` is (segs_in,
    last_ack_recv_ms) per socket, read at ``now``; ``baseline`` the segs_in read at ``since`` (None
    after payload moved: the ACKs of the last bytes must not count, so the first look only takes a
    baseline). Returns the new baseline and whether a peer sent a segment of its own accord."""
    counts = tuple(segs for segs, _ in samples)
    if baseline is None or len(baseline) != len(counts):
        return counts, False
    interval = now - since
    spoke = any(unsolicited_segments(before, segs, ack_ms, interval) > 0
                for before, (segs, ack_ms) in zip(baseline, samples))
    return counts, spoke
