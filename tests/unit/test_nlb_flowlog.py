"""The flow log's hand-formatted lines must be exactly what json.dumps writes for the same record."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from services.nlb_sim.flowlog import FlowLog
from services.nlb_sim.metrics import Metrics

TEXT = st.text(max_size=30)


def fake_flow(node: str, label: str, target_id: str | None, seen: tuple[str, int] | None,
              end: str | None) -> SimpleNamespace:
    ctx = SimpleNamespace(node=SimpleNamespace(name=node), label=label, metrics=Metrics())
    target = None if target_id is None else SimpleNamespace(id=target_id, ip="10.0.1.7", port=8443)
    return SimpleNamespace(ctx=ctx, target=target, source_seen=seen, client_addr=("198.51.100.7", 40001),
                           started=time.monotonic() - 1.25, end=end, log_fields=None)


def expected_fields(flow: SimpleNamespace, ppv2: bool) -> dict:
    t = flow.target
    return {"node": flow.ctx.node.name, "listener": flow.ctx.label, "client": "198.51.100.7:40001",
            "target": t.id if t else None, "target_addr": f"{t.ip}:{t.port}" if t else None,
            "source_seen_by_target": None if flow.source_seen is None else "%s:%d" % flow.source_seen,
            "proxy_protocol_v2": ppv2}


def dumps(record: dict) -> str:
    return json.dumps(record, separators=(", ", ": "))


@given(node=TEXT, label=TEXT, target_id=st.none() | TEXT, seen=st.none() | st.tuples(TEXT, st.integers(0, 65535)), end=st.none() | TEXT,
       ppv2=st.booleans(), opened=st.booleans(), bytes_in=st.integers(0, 2**40), bytes_out=st.integers(0, 2**40))
def test_lines_are_json_dumps(tmp_path_factory, node, label, target_id, seen, end, ppv2, opened,
                              bytes_in, bytes_out) -> None:
    log_dir = tmp_path_factory.mktemp("flows")
    log = FlowLog(str(log_dir))
    flow = fake_flow(node, label, target_id, seen, end)
    if opened:
        log.opened(flow, ppv2)
    log.closed(flow, ppv2, bytes_in, bytes_out, ("203.0.113.10", 443))
    log.close()
    lines = (Path(log_dir) / "flows.log").read_text().splitlines()
    assert len(lines) == (2 if opened else 1)
    close = json.loads(lines[-1])
    assert list(close)[:2] == ["time", "event"] and close["event"] == "close"
    assert 1.2 < close["duration_ms"] / 1000 < 60
    fields = expected_fields(flow, ppv2)
    want_close = {"time": close["time"], "event": "close", **fields, "bytes_in": bytes_in, "bytes_out": bytes_out,
                  "duration_ms": close["duration_ms"], "end": end or "fin"}
    assert lines[-1] == dumps(want_close)
    if opened:
        first = json.loads(lines[0])
        assert lines[0] == dumps({"time": first["time"], "event": "open", **fields})
    assert flow.ctx.metrics.counts["ProcessedBytes"] == bytes_in + bytes_out


def test_close_line_keeps_the_open_lines_fields(tmp_path: Path) -> None:
    """A flow whose listener settings changed while it ran still logs what it opened with."""
    log = FlowLog(str(tmp_path))
    flow = fake_flow("nlb-a", "TCP:80", "i-0abc", ("10.0.1.5", 40000), None)
    log.opened(flow, True)
    flow.ctx.label = "TCP:8080"
    log.closed(flow, False, 10, 20, ("203.0.113.10", 80))
    log.close()
    first, last = (json.loads(x) for x in (tmp_path / "flows.log").read_text().splitlines())
    assert (last["listener"], last["proxy_protocol_v2"]) == ("TCP:80", True) == (first["listener"], first["proxy_protocol_v2"])
