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
from .upstream import format_addr
from .vpcflow import VpcFlowLog, interface_id, records


def _json(value: Any) -> str:
    """One flow-record value as JSON, exactly as ``json.dumps`` writes it (str, None, bool, int,
    finite float: all a record holds)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    return repr(value)


def json_line(record: dict[str, Any]) -> str:
    """``json.dumps(record, separators=(", ", ": "))`` for a flat record with identifier keys, at
    about half the cost (json.dumps builds an encoder per call; this runs twice per flow)."""
    return "{" + ", ".join([f'"{key}": {_json(value)}' for key, value in record.items()]) + "}"


def utc_now_iso() -> str:
    return iso_time(time.time())


def _addr(text: str | None) -> tuple[str, int] | None:
    """``"ip:port"`` (as the record holds it) -> (ip, port); None for a missing address."""
    if not text:
        return None
    ip, _, port = text.rpartition(":")
    return ip, int(port)


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

    def write(self, record: dict[str, Any], listener_addr: tuple[str, int] | None = None) -> None:
        if self._file is None:
            return
        self._file.write(json_line({"time": utc_now_iso(), **record}) + "\n")
        if self.vpc is not None and record.get("event") == "close":
            self.vpc.write(self._vpc_lines(record, listener_addr or ("0.0.0.0", 0)))
        if not self._flush_scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
                self._flush_scheduled = True
            except RuntimeError:  # no loop (tests, shutdown): write through
                self._file.flush()

    def _vpc_lines(self, r: dict[str, Any], listener_addr: tuple[str, int]) -> list[str]:
        end = int(time.time())
        start = end - int(r.get("duration_ms", 0) // 1000)
        return records(self.account, interface_id(self.lb_arn, r["node"]), _addr(r["client"]),  # type: ignore[arg-type]
                       listener_addr, _addr(r.get("source_seen_by_target")),
                       _addr(r.get("target_addr")), r.get("bytes_in", 0), r.get("bytes_out", 0), start, end)

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


def flow_record(flow: Any, event: str, proxy_protocol_v2: bool) -> dict[str, Any]:
    """The open/close line's common fields, from a relay or splice flow (duck-typed: ctx,
    client_addr, target, source_seen)."""
    t = flow.target
    return {"event": event, "node": flow.ctx.node.name, "listener": flow.ctx.label,
            "client": format_addr(flow.client_addr),
            "target": t.id if t else None,
            "target_addr": f"{t.ip}:{t.port}" if t else None,
            "source_seen_by_target": flow.source_seen,
            "proxy_protocol_v2": proxy_protocol_v2}


def close_record(flow: Any, record: dict[str, Any], bytes_in: int, bytes_out: int) -> dict[str, Any]:
    """Complete a close line (bytes, duration, how it ended) and count ProcessedBytes."""
    record["bytes_in"] = bytes_in
    record["bytes_out"] = bytes_out
    record["duration_ms"] = round((time.monotonic() - flow.started) * 1000, 3)
    record["end"] = flow.end or "fin"
    flow.ctx.metrics.inc("ProcessedBytes", bytes_in + bytes_out)
    return record
