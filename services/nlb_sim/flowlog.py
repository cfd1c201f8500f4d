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
import datetime
import json
import os
from typing import IO, Any


def utc_now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


class FlowLog:
    """Append-only JSON-lines file. Lines written in one event-loop iteration are flushed together
    at the end of it (one write(2) for many flows under load; still visible within milliseconds)."""

    def __init__(self, log_dir: str) -> None:
        os.makedirs(log_dir, exist_ok=True)
        self.path = os.path.join(log_dir, "flows.log")
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8", buffering=1 << 16)
        self._flush_scheduled = False

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = json.dumps({"time": utc_now_iso(), **record}, separators=(", ", ": "))
        self._file.write(line + "\n")
        if not self._flush_scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
                self._flush_scheduled = True
            except RuntimeError:  # no loop (tests, shutdown): write through
                self._file.flush()

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
