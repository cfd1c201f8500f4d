"""Property tests: random and mutated input to the protocol cores (no I/O).

Each must return a result or raise its own typed error, never anything else."""

from __future__ import annotations

import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from services.alb_sim import desync, h2msg, httpmsg
from services.alb_sim.config import load_config
from services.alb_sim.rules import LatinHeaders, RequestView, RuleTable, host_without_port, parse_query
from services.alb_sim.trace_id import TraceIdGenerator, root_of
from services.alb_sim.xff import MODES, combine, count_addresses, process_xff
from services.nlb_sim.proxy_v2 import (
    NEED_DATA, SIGNATURE, ProxyDecoder, ProxyHeader, ProxyProtocolError, Tlv, decode, encode_v1, encode_v2,
    encode_v2_local, encode_v2_proxy,
)

FAST = settings(max_examples=200, deadline=None)

# --- PROXY v1/v2 decoder ---------------------------------------------------------------------

VALID_HEADERS = [
    encode_v2_proxy("10.0.0.1", 40000, "10.0.1.5", 443),
    encode_v2_proxy("10.0.0.1", 40000, "10.0.1.5", 443, vpce_id="vpce-0123456789abcdef0"),
    encode_v2_proxy("2001:db8::1", 1, "2001:db8::2", 65535),
    encode_v2_local(),
    encode_v2("PROXY", ("1.2.3.4", 5), ("6.7.8.9", 10), crc32c=False, pad_to=None),
    encode_v1(("192.0.2.1", 56324), ("192.0.2.2", 443)),
    encode_v1(("2001:db8::1", 1), ("::1", 2)),
    encode_v1(),
]


def _decode_all(data: bytes) -> ProxyHeader | None:
    """decode() and an incremental decode: only a header or a ProxyProtocolError may come out."""
    try:
        header = decode(data)
    except ProxyProtocolError:
        header = None
    decoder = ProxyDecoder()
    try:
        for i in range(0, len(data), 7):
            decoder.feed(data[i:i + 7])
            if decoder.next_event() is not NEED_DATA:
                break
    except ProxyProtocolError:
        pass
    if header is not None:
        assert 0 < header.length <= len(data)
    return header


@FAST
@given(st.sampled_from(VALID_HEADERS), st.data())
def test_proxy_every_prefix_needs_data_or_raises_typed(header: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(header)))
    decoder = ProxyDecoder()
    decoder.feed(header[:cut])
    if cut < len(header):
        assert decoder.next_event() is NEED_DATA  # a prefix of a valid header is never an error
    else:
        assert isinstance(decoder.next_event(), ProxyHeader)


@FAST
@given(st.sampled_from(VALID_HEADERS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)),
                                                min_size=1, max_size=4),
       st.binary(max_size=20))
def test_proxy_bit_flips_of_valid_headers(header: bytes, flips: list[tuple[int, int]], tail: bytes) -> None:
    data = bytearray(header)
    for pos, bit in flips:
        data[pos % len(data)] ^= 1 << bit
    _decode_all(bytes(data) + tail)


tlv = st.tuples(st.integers(0, 255), st.binary(max_size=40))


@FAST
@given(st.sampled_from([0x20, 0x21, 0x2F, 0x11]), st.sampled_from([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32, 0x13, 0xFF]),
       st.binary(max_size=40), st.lists(tlv, max_size=5), st.integers(-3, 3))
def test_proxy_random_tlvs(ver_cmd: int, fam: int, addr: bytes, tlvs: list[tuple[int, bytes]], skew: int) -> None:
    payload = addr + b"".join(struct.pack("!BH", t, len(v) + skew if len(v) + skew >= 0 else 0) + v
                              for t, v in tlvs)
    _decode_all(SIGNATURE + bytes([ver_cmd, fam]) + struct.pack("!H", len(payload)) + payload)


@FAST
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=60)), max_size=4))
def test_proxy_encoded_random_tlvs_round_trip(tlvs: list[tuple[int, bytes]]) -> None:
    """Whatever TLVs the encoder is given, the decoder gives them back or raises its typed error."""
    data = encode_v2("PROXY", ("10.0.0.1", 1), ("10.0.0.2", 2), tlvs=[Tlv(t, v) for t, v in tlvs])
    _decode_all(data)


@FAST
@given(st.lists(st.sampled_from(["PROXY", "TCP4", "TCP6", "UNKNOWN", "1.2.3.4", "::1", "::ffff:1.2.3.4", "fe80::1%eth0",
                                 "65535", "65536", "00", "-1", "", " ", "\t", "é", "\x00", "1.2.3.4.5", "٣"]),
                max_size=8),
       st.sampled_from([b"\r\n", b"\n", b"\r", b"", b"\r\r\n"]))
def test_proxy_v1_token_soup(parts: list[str], end: bytes) -> None:
    _decode_all(("PROXY " + " ".join(parts)).encode() + end)


# --- desync classification ---------------------------------------------------------------------

header_bytes = st.binary(max_size=30) | st.sampled_from(
    [b"Content-Length", b"content-length ", b"Transfer-Encoding", b"Transfer_Encoding", b"Host", b"",
     b"chunked", b"chunked, chunked", b" 0", b"-1", b"1e3", b"\x00", b"\r\n", b"\xff\xfe", b"identity,"])


@FAST
@given(st.sampled_from([b"GET", b"HEAD", b"POST", b"", b"G\x00T"]), st.lists(st.tuples(header_bytes, header_bytes),
                                                                        max_size=6))
def test_desync_classify_never_raises(method: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    v = desync.classify(method, headers)
    assert v is None or v.classification in ("Acceptable", "Ambiguous", "Severe")


@FAST
@given(st.binary(max_size=300) | st.lists(header_bytes, max_size=10).map(lambda p: b" ".join(p[:3]) + b"\r\n"
                                                                       + b"\r\n".join(p[3:]) + b"\r\n\r\n"))
def test_desync_classify_head_never_raises(data: bytes) -> None:
    v = desync.classify_head(data)
    assert v is None or v.classification in ("Acceptable", "Ambiguous", "Severe")
    for mode in ("monitor", "defensive", "strictest"):
        desync.mitigation(mode, v)


# --- X-Forwarded-For, trace ids, request targets ------------------------------------------------

any_text = st.text(max_size=40) | st.sampled_from(["", ",", " , ,", "1.2.3.4, ::1", "[::1]:80", "\x00", "é, ü"])


@FAST
@given(st.lists(any_text, max_size=5), st.sampled_from(sorted(MODES)), st.booleans())
def test_xff_processing_never_raises(lines: list[str], mode: str, port: bool) -> None:
    result = process_xff(lines, mode=mode, client_ip="2001:db8::1", client_port=1, client_port_enabled=port)
    assert result.address_count == count_addresses(combine(lines))


@FAST
@given(st.none() | any_text | st.lists(st.sampled_from(["Root=1-5-x", "Self=", "=", ";", "root", "ROOT=a=b", " "]),
                                         max_size=6).map("".join))
def test_trace_id_processing_never_raises(received: str | None) -> None:
    out = TraceIdGenerator(lambda: 1.5e9, random.Random(1)).process(received)
    assert root_of(out) is not None or out.startswith("Self=")


@FAST
@given(st.binary(max_size=60) | st.sampled_from([b"", b"?", b"#", b"http://", b"http://h", b"http://@", b"http://a?b",
                                                    b"*", b"//x", b"/%zz?%%", b"/\xff\xfe"]))
def test_parse_target_never_raises(url: bytes) -> None:
    target = httpmsg.parse_target(url)
    assert target.origin_form.decode("latin-1").partition("?")[0].split("#", 1)[0] == target.path or not url


@FAST
@given(st.lists(st.tuples(st.sampled_from([b":method", b":path", b":authority", b":scheme", b"host", b"content-length",
                                           b"x-forwarded-for", b"te", b"x"]), st.binary(max_size=20)), max_size=8))
def test_h2_parse_request_never_raises(fields: list[tuple[bytes, bytes]]) -> None:
    h2msg.parse_request(fields)


def _table() -> RuleTable:
    def rule(priority: int, cond: dict[str, object]) -> dict[str, object]:
        return {"priority": priority, "conditions": [cond], "actions": [{"type": "forward", "target_group": "one"}]}
    cfg = load_config({
        "name": "a", "arn": "arn:aws:elasticloadbalancing:eu-west-2:1:loadbalancer/app/a/1", "dns_name": "a.test",
        "nodes": [{"name": "alb-a", "address": "127.0.0.1"}], "log_dir": "/tmp/x",
        "listeners": [{"protocol": "HTTP", "port": 80, "rules": [
            rule(1, {"field": "host-header", "values": ["*.example.com", "ex?mple.org"]}),
            rule(2, {"field": "path-pattern", "values": ["/api/*", "/a?b", "/$x*"]}),
            rule(3, {"field": "query-string", "values": [{"key": "v*", "value": "1"}, {"value": "*"}]}),
            rule(4, {"field": "http-header", "header_name": "X-Thing", "values": ["*"]}),
            rule(5, {"field": "http-request-method", "values": ["PATCH"]}),
            rule(6, {"field": "source-ip", "values": ["10.0.0.0/8", "2001:db8::/32"]}),
        ], "default_actions": [{"type": "forward", "target_group": "default"}]}],
        "target_groups": [{"name": n, "arn": f"arn:tg/{n}", "port": 80} for n in ("default", "one")],
    })
    return RuleTable(cfg.listeners[0])


TABLE = _table()
weird = st.text(max_size=30) | st.sampled_from(["", "[", "[::1", "[::1]:", ":", "a:b:c", "%", "%zz", "é.example.com",
                                                 "?", "&&=&", "v=1&", "=", "/api/%2e%2e/", "\x00"])


@FAST
@given(weird, weird, weird, weird, st.lists(st.tuples(st.binary(max_size=10), st.binary(max_size=10)), max_size=3),
       st.sampled_from(["10.1.2.3", "::ffff:10.0.0.1", "fe80::1%eth0", "-", "", "2001:db8::5"]))
def test_rule_matching_on_weird_requests(method: str, path: str, query: str, host: str,
                                         headers: list[tuple[bytes, bytes]], source: str) -> None:
    m = TABLE.match(RequestView(method, path, query, host, LatinHeaders(headers + [(b"X-Thing", b"\xff")]), source))
    assert m.priority in (1, 2, 3, 4)  # X-Thing matches any value, so the default is never reached
    host_without_port(host)
    parse_query(query)
