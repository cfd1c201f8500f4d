"""X-Forwarded-For processing per routing.http.xff_header_processing.mode."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from services.alb_sim.xff import XffResult, client_entry, combine, count_addresses, process_xff


# address_count is what 463 is decided on: the addresses RECEIVED (decisions.md #41).
@pytest.mark.parametrize("lines,mode,port_on,expected", [
    # append (default)
    ([], "append", False, XffResult("127.0.0.1", 0)),
    (["1.2.3.4"], "append", False, XffResult("1.2.3.4, 127.0.0.1", 1)),
    (["1.2.3.4", "5.6.7.8"], "append", False, XffResult("1.2.3.4, 5.6.7.8, 127.0.0.1", 2)),  # two lines -> one
    (["1.2.3.4, 9.9.9.9", "5.6.7.8"], "append", False, XffResult("1.2.3.4, 9.9.9.9, 5.6.7.8, 127.0.0.1", 3)),
    (["1.2.3.4"], "append", True, XffResult("1.2.3.4, 127.0.0.1:40000", 1)),
    ([""], "append", False, XffResult("127.0.0.1", 0)),
    # preserve: untouched, client port ignored
    ([], "preserve", True, XffResult(None, 0)),
    (["1.2.3.4"], "preserve", True, XffResult("1.2.3.4", 1)),
    (["1.2.3.4", "5.6.7.8"], "preserve", False, XffResult("1.2.3.4, 5.6.7.8", 2)),
    # remove
    (["1.2.3.4"], "remove", True, XffResult(None, 1)),
    ([], "remove", False, XffResult(None, 0)),
])
def test_modes(lines: list[str], mode: str, port_on: bool, expected: XffResult) -> None:
    assert process_xff(lines, mode=mode, client_ip="127.0.0.1", client_port=40000,
                       client_port_enabled=port_on) == expected


def test_ipv6_client_with_port_is_bracketed() -> None:
    assert process_xff([], mode="append", client_ip="2001:db8::7", client_port=443,
                       client_port_enabled=True).value == "[2001:db8::7]:443"
    assert client_entry("2001:db8::7", 443, False) == "2001:db8::7"


@pytest.mark.parametrize("received,mode,too_many", [
    (30, "append", False),   # 30 received (the appended peer is not counted)
    (31, "append", True),    # 31 received > 30
    (30, "preserve", False),
    (31, "preserve", True),
    (31, "remove", True),
])
def test_463_threshold(received: int, mode: str, too_many: bool) -> None:
    lines = [", ".join(f"10.0.{i // 250}.{i % 250}" for i in range(received))]
    assert process_xff(lines, mode=mode, client_ip="127.0.0.1", client_port=1).too_many is too_many


def test_unknown_mode_raises_with_choices() -> None:
    with pytest.raises(ValueError, match="'bogus' is not one of append, preserve, remove"):
        process_xff([], mode="bogus", client_ip="1.1.1.1", client_port=1)


def test_count_and_combine() -> None:
    assert count_addresses("1.1.1.1, ,2.2.2.2,") == 2
    assert count_addresses(None) == 0
    assert combine(["  a ", "", "b"]) == "a, b"
    assert combine([]) is None


@given(st.lists(st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=5), max_size=5))
def test_append_keeps_every_received_address_in_order(lines: list[list[str]]) -> None:
    result = process_xff([", ".join(l) for l in lines], mode="append", client_ip="10.9.9.9", client_port=1)
    flat = [a for l in lines for a in l]
    assert result.value == ", ".join(flat + ["10.9.9.9"])
    assert result.address_count == len(flat)
