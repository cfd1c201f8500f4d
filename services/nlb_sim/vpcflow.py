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


def records(account: str, eni: str, client: tuple[str, int], listener: tuple[str, int],
            source: tuple[str, int] | None, target: tuple[str, int] | None, bytes_in: int,
            bytes_out: int, start: int, end: int) -> list[str]:
    """Lines for one flow. ``source``: the address the node connected to the target from.
    (Written out rather than looped: this runs once per flow on the NLB's accept path.)"""
    head = f"2 {account} {eni} "
    tail = f" {start} {end} ACCEPT OK"
    up = f" 6 {-(-bytes_in // MSS) + 2} {bytes_in}"
    down = f" 6 {-(-bytes_out // MSS) + 2} {bytes_out}"
    c_ip, c_port = client
    l_ip, l_port = listener
    out = [f"{head}{c_ip} {l_ip} {c_port} {l_port}{up}{tail}",
           f"{head}{l_ip} {c_ip} {l_port} {c_port}{down}{tail}"]
    if source is not None and target is not None:
        s_ip, s_port = source
        t_ip, t_port = target
        out.append(f"{head}{s_ip} {t_ip} {s_port} {t_port}{up}{tail}")
        out.append(f"{head}{t_ip} {s_ip} {t_port} {s_port}{down}{tail}")
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
