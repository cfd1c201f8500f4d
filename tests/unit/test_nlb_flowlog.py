"""The flow log's hand-rolled JSON writer must write exactly what json.dumps writes."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from services.nlb_sim.flowlog import json_line

VALUES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,20}", fullmatch=True), VALUES, max_size=14))
def test_json_line_is_json_dumps(record: dict) -> None:
    assert json_line(record) == json.dumps(record, separators=(", ", ": "))


def test_json_line_escapes_like_json_dumps() -> None:
    record = {"time": "2026-11-30T18:00:00.000001Z", "end": 'error: connect "x"\n\u00e9', "target": None,
              "proxy_protocol_v2": False, "bytes_in": 0, "duration_ms": 1.5}
    assert json.loads(json_line(record)) == record
    assert json_line(record) == json.dumps(record, separators=(", ", ": "))
