"""VPC Flow Logs, default format (version 2), for the NLB nodes' network interfaces (no I/O in
``records``): ``version account-id interface-id srcaddr dstaddr srcport dstport protocol packets
bytes start end action log-status`` (aws-elb.md section 13, VPC-FL).

One relayed flow crosses the node's ENI twice (client <-> node, node <-> target); each direction is
its own record, so a flow yields four lines, written when it ends (AWS aggregates over a window of
up to 10 min; the lab's window is the flow's life). Sockets do not count packets: ``packets`` is an
estimate, ceil(bytes / 1448) + 2 for the SYN and FIN (docs/decisions.md #28).
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import IO

MSS = 1448


@functools.lru_cache(maxsize=64)
def interface_id(lb_arn: str, node: str) -> str:
    return "eni-" + hashlib.sha256(f"{lb_arn}/{node}".encode()).hexdigest()[:17]


def account_of(lb_arn: str) -> str:
    parts = lb_arn.split(":")
    return parts[4] if len(parts) > 5 and parts[4] else "unknown"


def _packets(nbytes: int) -> int:
    return -(-nbytes // MSS) + 2


def records(account: str, eni: str, client: tuple[str, int], listener: tuple[str, int],
            source: tuple[str, int] | None, target: tuple[str, int] | None, bytes_in: int,
            bytes_out: int, start: int, end: int) -> list[str]:
    """Lines for one flow. ``source``: the address the node connected to the target from."""
    def line(src: tuple[str, int], dst: tuple[str, int], nbytes: int) -> str:
        return (f"2 {account} {eni} {src[0]} {dst[0]} {src[1]} {dst[1]} 6 {_packets(nbytes)} {nbytes}"
                f" {start} {end} ACCEPT OK")
    out = [line(client, listener, bytes_in), line(listener, client, bytes_out)]
    if source is not None and target is not None:
        out += [line(source, target, bytes_in), line(target, source, bytes_out)]
    return out


class VpcFlowLog:
    def __init__(self, log_dir: str) -> None:
        os.makedirs(log_dir, exist_ok=True)
        self._file: IO[str] | None = open(os.path.join(log_dir, "vpc-flow.log"), "a", encoding="utf-8",
                                          buffering=1 << 16)

    def write(self, lines: list[str]) -> None:
        if self._file is not None:
            self._file.write("\n".join(lines) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
