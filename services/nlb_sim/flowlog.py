"""Flow log: one JSON line when a flow opens and one when it ends, in ``<log_dir>/flows.log``.

Line shapes (keys in this order):
  open:  time, event="open", node, listener, client, target, target_addr, source_seen_by_target,
         proxy_protocol_v2
  close: time, event="close", the same fields, then bytes_in, bytes_out, duration_ms, end
``end`` is "fin" (both sides closed cleanly), "rst" (a side reset; the other was reset too)
or "error: <what>" (e.g. the target refused the connection; the client got a reset).
A flow that ended before a target was chosen has target, target_addr and
source_seen_by_target null.
"""

from __future__ import annotations

import asyncio
import os
import time
from json.encoder import encode_basestring_ascii
from typing import IO, Any

from services.common import iso_time
from .vpcflow import VpcFlowLog, interface_id, records


_OPEN = '{"time": "%s", "event": "open", %s}\n'
_CLOSE = '{"time": "%s", "event": "close", %s, "bytes_in": %d, "bytes_out": %d, "duration_ms": %r, "end": %s}\n'
_ENC = encode_basestring_ascii


def flow_fields(flow: Any, proxy_protocol_v2: bool) -> str:
    """The fields an open and a close line share (node ... proxy_protocol_v2), as JSON members:
    formatted once per flow, at its open line (the accept path: no dict, no per-value calls)."""
    t = flow.target
    seen = flow.source_seen
    c_ip, c_port = flow.client_addr
    seen_text = "null" if seen is None else _ENC(f"{seen[0]}:{seen[1]}")
    return (f'"node": {_ENC(flow.ctx.node.name)}, "listener": {_ENC(flow.ctx.label)}, '
            f'"client": {_ENC(f"{c_ip}:{c_port}")}, '
            f'"target": {"null" if t is None else _ENC(t.id)}, '
            f'"target_addr": {"null" if t is None else _ENC(f"{t.ip}:{t.port}")}, '
            f'"source_seen_by_target": {seen_text}, '
            f'"proxy_protocol_v2": {"true" if proxy_protocol_v2 else "false"}')


def utc_now_iso() -> str:
    return iso_time(time.time())


class FlowLog:
    """Append-only JSON-lines file. Lines written in one event-loop iteration are flushed together
    at the end of it (one write(2) for many flows under load; still visible within milliseconds)."""

    def __init__(self, log_dir: str, vpc: VpcFlowLog | None = None,
                 account: str = "unknown", lb_arn: str = "") -> None:
        os.makedirs(log_dir, exist_ok=True)
        self.vpc = vpc
        self.account = account
        self.lb_arn = lb_arn
        self.path = os.path.join(log_dir, "flows.log")
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8", buffering=1 << 16)
        self._flush_scheduled = False

    def opened(self, flow: Any, proxy_protocol_v2: bool) -> None:
        """A flow reached its target: its open line (the shared fields stay on ``flow.log_fields``)."""
        if self._file is None:
            return
        fields = flow.log_fields = flow_fields(flow, proxy_protocol_v2)
        self._file.write(_OPEN % (utc_now_iso(), fields))
        self._schedule_flush()

    def closed(self, flow: Any, proxy_protocol_v2: bool, bytes_in: int, bytes_out: int,
               listener_addr: tuple[str, int]) -> None:
        """A flow ended: its close line, its VPC Flow Logs records, ProcessedBytes. The shared
        fields are the open line's (a flow that never opened gets them now)."""
        flow.ctx.metrics.inc("ProcessedBytes", bytes_in + bytes_out)
        if self._file is None:
            return
        fields = flow.log_fields or flow_fields(flow, proxy_protocol_v2)
        duration_ms = round((time.monotonic() - flow.started) * 1000, 3)
        self._file.write(_CLOSE % (utc_now_iso(), fields, bytes_in, bytes_out, duration_ms,
                                   _ENC(flow.end or "fin")))
        if self.vpc is not None:
            t = flow.target
            end = int(time.time())
            self.vpc.write(records(self.account, interface_id(self.lb_arn, flow.ctx.node.name),
                                   flow.client_addr, listener_addr, flow.source_seen,
                                   None if t is None else (t.ip, t.port), bytes_in, bytes_out,
                                   end - int(duration_ms // 1000), end))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Lines written in one event-loop iteration go out together, at its end."""
        if not self._flush_scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
                self._flush_scheduled = True
            except RuntimeError:  # no loop (tests, shutdown): write through
                self.flush()

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._file is not None:
            self._file.flush()
        if self.vpc is not None:
            self.vpc.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.vpc is not None:
            self.vpc.close()
