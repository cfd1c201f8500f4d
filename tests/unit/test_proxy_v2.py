"""PROXY protocol codec: exact tables, AWS captures, hypothesis round trips, real HAProxy."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.nlb_sim.proxy_v2 import (
    NEED_DATA,
    PP2_TYPE_AWS,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NOOP,
    SIGNATURE,
    ChecksumMismatch,
    Command,
    EncodeError,
    Family,
    HeaderTooLong,
    IncompleteHeader,
    MalformedHeader,
    NotProxyProtocol,
    ProxyDecoder,
    ProxyHeader,
    ProxyProtocolError,
    Tlv,
    UnsupportedCommand,
    UnsupportedVersion,
    crc32c,
    decode,
    encode_v1,
    encode_v2,
    encode_v2_local,
    encode_v2_proxy,
)
from tests.ports import free_port

# reference/aws-elb.md section 3: observed NLB bytes (PROPROT test, K8S-57250 tcpdump)
AWS_PRIVATELINK = bytes.fromhex(
    "0D0A0D0A000D0A515549540A" "21" "11" "0054"
    "AC1F0771" "AC1F0A1F" "C8F2" "0050"
    "03" "0004" "E8D6892D"
    "EA" "0017" "01") + b"vpce-08d2bf15fac5001c9" + bytes.fromhex("04" "0024") + b"\0" * 36
AWS_HEALTH_CHECK = bytes.fromhex(
    "0D0A0D0A000D0A515549540A" "20" "11" "0054"
    "03" "0004" "BCE5951F" "04" "004A") + b"\0" * 74
VPCE = "vpce-08d2bf15fac5001c9"


def v2(cmd: int, fam: int, payload: bytes) -> bytes:
    """Hand-built v2 header (no CRC, no padding)."""
    return SIGNATURE + bytes([cmd, fam]) + len(payload).to_bytes(2, "big") + payload


def tlv(tlv_type: int, value: bytes) -> bytes:
    return bytes([tlv_type]) + len(value).to_bytes(2, "big") + value


ADDR4 = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + (1000).to_bytes(2, "big") + (80).to_bytes(2, "big")


# --- CRC32C ---

def test_crc32c_known_vector() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(b"6789", crc32c(b"12345")) == 0xE3069283


# --- AWS captures ---

def test_aws_privatelink_capture_decodes_exactly() -> None:
    assert len(AWS_PRIVATELINK) == 100
    assert decode(AWS_PRIVATELINK + b"GET /") == ProxyHeader(
        version=2, command=Command.PROXY, family=Family.TCP4,
        source=("172.31.7.113", 51442), destination=("172.31.10.31", 80),
        tlvs=(Tlv(PP2_TYPE_CRC32C, bytes.fromhex("E8D6892D")),
              Tlv(PP2_TYPE_AWS, b"\x01" + VPCE.encode()),
              Tlv(PP2_TYPE_NOOP, b"\0" * 36)),
        length=100, crc_valid=True)
    assert decode(AWS_PRIVATELINK).vpce_id == VPCE
    assert decode(AWS_PRIVATELINK).get_tlv(PP2_TYPE_AWS) == b"\x01" + VPCE.encode()


def test_aws_health_check_capture_decodes_exactly() -> None:
    assert len(AWS_HEALTH_CHECK) == 100
    assert decode(AWS_HEALTH_CHECK) == ProxyHeader(
        version=2, command=Command.LOCAL, family=Family.TCP4, source=None, destination=None,
        tlvs=(Tlv(PP2_TYPE_CRC32C, bytes.fromhex("BCE5951F")), Tlv(PP2_TYPE_NOOP, b"\0" * 74)),
        length=100, crc_valid=True)
    assert decode(AWS_HEALTH_CHECK).vpce_id is None


def test_encoder_reproduces_aws_captures_byte_for_byte() -> None:
    assert encode_v2_proxy("172.31.7.113", 51442, "172.31.10.31", 80, vpce_id=VPCE) == AWS_PRIVATELINK
    assert encode_v2_local() == AWS_HEALTH_CHECK


@pytest.mark.parametrize("header", [
    encode_v2_local(),
    encode_v2_proxy("198.51.100.123", 40000, "10.20.1.20", 443),
    encode_v2_proxy("198.51.100.123", 40000, "10.20.1.20", 443, vpce_id=VPCE),
    encode_v2_proxy("2001:db8::1", 40000, "2001:db8::2", 443),
    encode_v2_proxy("2001:db8::1", 40000, "2001:db8::2", 443, vpce_id=VPCE),
], ids=["local", "v4", "v4-vpce", "v6", "v6-vpce"])
def test_aws_shaped_headers_are_100_bytes(header: bytes) -> None:
    assert len(header) == 100
    h = decode(header)
    assert h.length == 100 and h.crc_valid is True
    assert h.tlvs[0].type == PP2_TYPE_CRC32C and h.tlvs[-1].type == PP2_TYPE_NOOP


# --- v2 decoding ---

@pytest.mark.parametrize(("data", "expected"), [
    (encode_v2("PROXY", ("192.0.2.1", 1000), ("198.51.100.2", 80), crc32c=False, pad_to=None),
     ProxyHeader(2, Command.PROXY, Family.TCP4, ("192.0.2.1", 1000), ("198.51.100.2", 80), (), 28)),
    (encode_v2("PROXY", ("2001:db8::1", 65535), ("::ffff:10.0.0.1", 0), crc32c=False, pad_to=None),
     ProxyHeader(2, Command.PROXY, Family.TCP6, ("2001:db8::1", 65535), ("::ffff:a00:1", 0), (), 52)),
    (v2(0x21, 0x12, ADDR4),
     ProxyHeader(2, Command.PROXY, Family.UDP4, ("192.0.2.1", 1000), ("198.51.100.2", 80), (), 28)),
    (v2(0x21, 0x31, b"/a".ljust(108, b"\0") + b"/b/c".ljust(108, b"\0")),
     ProxyHeader(2, Command.PROXY, Family.UNIX, ("/a", 0), ("/b/c", 0), (), 232)),
    (v2(0x21, 0x00, tlv(0x02, b"example.com")),
     ProxyHeader(2, Command.PROXY, Family.UNSPEC, None, None, (Tlv(0x02, b"example.com"),), 30)),
    # HAProxy's own LOCAL: family UNSPEC, empty payload
    (v2(0x20, 0x00, b""), ProxyHeader(2, Command.LOCAL, Family.UNSPEC, None, None, (), 16)),
    # LOCAL with a real address block: skipped by length, not parsed as TLVs
    (v2(0x20, 0x11, ADDR4), ProxyHeader(2, Command.LOCAL, Family.TCP4, None, None, (), 28)),
    # LOCAL with a family byte that would be rejected for PROXY: still skipped
    (v2(0x20, 0xFF, b"\x01\x02"), ProxyHeader(2, Command.LOCAL, Family.UNSPEC, None, None, (), 18)),
], ids=["tcp4", "tcp6", "udp4", "unix", "unspec-tlv", "local-empty", "local-addr", "local-badfam"])
def test_v2_decodes(data: bytes, expected: ProxyHeader) -> None:
    assert decode(data + b"payload") == expected


@pytest.mark.parametrize(("data", "error", "message"), [
    (SIGNATURE + b"\x11", UnsupportedVersion,
     "PROXY v2 signature followed by version 1 (byte 0x11); only version 2 is defined"),
    (SIGNATURE + b"\x23", UnsupportedCommand,
     "PROXY v2 command 0x3 is not LOCAL (0x0) or PROXY (0x1)"),
    (v2(0x21, 0x13, ADDR4), MalformedHeader,
     "PROXY v2 family/transport byte 0x13 is not one of 0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32"),
    (v2(0x21, 0x11, ADDR4[:8]), MalformedHeader,
     "PROXY v2 length 8 is shorter than the 12-byte TCP4 address block"),
    (v2(0x21, 0x21, ADDR4), MalformedHeader,
     "PROXY v2 length 12 is shorter than the 36-byte TCP6 address block"),
    (v2(0x21, 0x11, ADDR4 + b"\xea\x00\x05\x01vp"), MalformedHeader,
     "PROXY v2 TLV 0xea at offset 28 has length 5, overrunning the 34-byte header by 2"),
    (v2(0x21, 0x11, ADDR4 + b"\x04\x00"), MalformedHeader,
     "PROXY v2 TLV at offset 28 has only 2 bytes left, a TLV header needs 3"),
    (v2(0x21, 0x11, ADDR4 + tlv(0x03, b"\0\0\0")), MalformedHeader,
     "PROXY v2 CRC32C TLV has length 3, must be 4"),
    (v2(0x21, 0x11, ADDR4 + tlv(0x05, b"u" * 129)), MalformedHeader,
     "PROXY v2 UNIQUE_ID TLV has length 129, maximum 128"),
    (v2(0x21, 0x11, ADDR4 + tlv(0x02, b"h" * 256)), MalformedHeader,
     "PROXY v2 AUTHORITY TLV has length 256, HAProxy accepts at most 255"),
    (v2(0x21, 0x11, ADDR4 + tlv(0x03, b"\0\0\0\0")), ChecksumMismatch,
     "PROXY v2 CRC32C TLV 0x00000000 does not match 0xddb06385,"
     " computed over the 35-byte header with the CRC field zeroed"),
], ids=["version", "command", "family", "short-v4", "short-v6", "tlv-overrun", "tlv-truncated",
        "crc-length", "unique-id", "authority", "crc-zero"])
def test_v2_rejects(data: bytes, error: type[ProxyProtocolError], message: str) -> None:
    decoder = ProxyDecoder()
    decoder.feed(data)
    with pytest.raises(error) as exc_info:
        decoder.next_event()
    assert str(exc_info.value) == message
    with pytest.raises(error):  # the error is sticky
        decoder.next_event()


@pytest.mark.parametrize("offset", [16, 20, 27, 31, 34, 35, 40, 99])
def test_v2_flipped_byte_fails_crc(offset: int) -> None:
    data = bytearray(AWS_PRIVATELINK)
    data[offset] ^= 0x01
    with pytest.raises(ChecksumMismatch):
        decode(bytes(data))


def test_local_with_bad_crc_is_skipped_like_haproxy() -> None:
    data = bytearray(AWS_HEALTH_CHECK)
    data[19] ^= 0xFF
    h = decode(bytes(data))
    assert (h.command, h.length, h.crc_valid) == (Command.LOCAL, 100, False)


def test_v2_length_cap() -> None:
    decoder = ProxyDecoder(max_v2_length=99)
    decoder.feed(AWS_PRIVATELINK[:16])  # raised as soon as the length is known
    with pytest.raises(HeaderTooLong, match="PROXY v2 header of 100 bytes exceeds the limit of 99"):
        decoder.next_event()
    big = v2(0x21, 0x11, ADDR4 + tlv(0x04, b"\0" * (65535 - 15)))
    assert len(big) == 16 + 65535 and decode(big).length == len(big)


# --- v1 ---

MAX_V1 = (b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
          b" ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")


@pytest.mark.parametrize(("line", "expected"), [
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
     ProxyHeader(1, Command.PROXY, Family.TCP4, ("192.168.0.1", 56324), ("192.168.0.11", 443), (), 47)),
    (b"PROXY TCP6 2001:DB8::1 ::1 0 65535\r\n",
     ProxyHeader(1, Command.PROXY, Family.TCP6, ("2001:db8::1", 0), ("::1", 65535), (), 36)),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, Command.PROXY, Family.UNKNOWN, None, None, (), 15)),
    (MAX_V1, ProxyHeader(1, Command.PROXY, Family.UNKNOWN, None, None, (), 107)),
], ids=["tcp4", "tcp6", "unknown", "unknown-107"])
def test_v1_decodes(line: bytes, expected: ProxyHeader) -> None:
    decoder = ProxyDecoder()
    decoder.feed(line + b"GET / HTTP/1.1\r\n")
    assert decoder.next_event() == expected
    assert decoder.trailing_data == b"GET / HTTP/1.1\r\n"


@pytest.mark.parametrize(("line", "error", "message"), [
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", MalformedHeader,
     "PROXY v1 line has a bare LF; it must end with CRLF"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", MalformedHeader,
     "PROXY v1 line has a CR not followed by LF"),
    (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", MalformedHeader,
     "PROXY v1 protocol '' is not TCP4, TCP6 or UNKNOWN in 'PROXY  TCP4 1.2.3.4 5.6.7.8 1 2'"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", MalformedHeader,
     "PROXY v1 protocol 'TCP5' is not TCP4, TCP6 or UNKNOWN in 'PROXY TCP5 1.2.3.4 5.6.7.8 1 2'"),
    (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", MalformedHeader, None),
    (b"PROXY UNKNOWNX\r\n", MalformedHeader, None),
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", MalformedHeader,
     "PROXY v1 line 'PROXY TCP4 1.2.3.4  5.6.7.8 1 2' must be"
     " 'PROXY TCP4 <src> <dst> <sport> <dport>' with single spaces"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", MalformedHeader, None),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", MalformedHeader, None),
    (b"PROXY TCP4\r\n", MalformedHeader, None),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 056324 443\r\n", MalformedHeader,
     "PROXY v1 port '056324' is not a decimal 0-65535 without leading zeros"
     " in 'PROXY TCP4 1.2.3.4 5.6.7.8 056324 443'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 443\r\n", MalformedHeader, None),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 443\r\n", MalformedHeader, None),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -0\r\n", MalformedHeader, None),
    (b"PROXY TCP4 192.168.000.1 5.6.7.8 1 2\r\n", MalformedHeader,
     "PROXY v1 address '192.168.000.1' is not a valid TCP4 address"
     " in 'PROXY TCP4 192.168.000.1 5.6.7.8 1 2'"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", MalformedHeader, None),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", MalformedHeader,
     "PROXY v1 address '1.2.3.4' is not a valid TCP6 address in 'PROXY TCP6 1.2.3.4 ::1 1 2'"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", MalformedHeader, None),
    (b"PROXY TCP4 1.2.3.4 5.6.7.\xff 1 2\r\n", MalformedHeader,
     "PROXY v1 line b'PROXY TCP4 1.2.3.4 5.6.7.\\xff 1 2' is not ASCII"),
    (MAX_V1[:-2] + b"0\r\n", HeaderTooLong, "PROXY v1 line has no CRLF within 107 bytes (the maximum)"),
    (b"PROXY " + b"x" * 200, HeaderTooLong, None),
    (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NotProxyProtocol,
     "stream starts with b'proxy TCP4 1', which is neither the PROXY v2 signature"),
    (b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", NotProxyProtocol, None),
], ids=lambda v: None)
def test_v1_rejects(line: bytes, error: type[ProxyProtocolError], message: str | None) -> None:
    with pytest.raises(error) as exc_info:
        decode(line)
    if message is not None:
        assert str(exc_info.value).startswith(message)


# --- incremental behaviour ---

@pytest.mark.parametrize("header", [
    AWS_PRIVATELINK, AWS_HEALTH_CHECK, encode_v2_proxy("2001:db8::1", 1, "2001:db8::2", 2),
    b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", b"PROXY UNKNOWN\r\n", MAX_V1,
], ids=["privatelink", "health-check", "v6", "v1-tcp4", "v1-unknown", "v1-max"])
def test_byte_by_byte_feeding(header: bytes) -> None:
    payload = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    decoder = ProxyDecoder()
    for i, byte in enumerate(header + payload):
        decoder.feed(bytes([byte]))
        event = decoder.next_event()
        if i < len(header) - 1:
            assert event is NEED_DATA and decoder.trailing_data == b"" and decoder.header is None
        else:
            assert isinstance(event, ProxyHeader) and event.length == len(header)
    assert decoder.trailing_data == payload
    assert decoder.next_event() is decoder.header == decode(header)


@pytest.mark.parametrize(("prefix", "error"), [
    (b"G", NotProxyProtocol), (b"\x16\x03\x01", NotProxyProtocol), (b"\r\n\r\n\x00X", NotProxyProtocol),
    (b"PROXX", NotProxyProtocol), (b"\r\n\r\nPROXY", NotProxyProtocol), (b"", None), (b"\r", None),
    (b"PROXY", None), (SIGNATURE, None), (SIGNATURE + b"\x21\x11\x00", None),
])
def test_not_proxy_decided_on_first_bad_byte(prefix: bytes, error: type[Exception] | None) -> None:
    decoder = ProxyDecoder()
    decoder.feed(prefix)
    if error is None:
        assert decoder.next_event() is NEED_DATA
    else:
        with pytest.raises(error):
            decoder.next_event()


def test_decode_incomplete_raises() -> None:
    for data in (AWS_PRIVATELINK[:99], b"PROXY TCP4 1.2.3.4", b""):
        with pytest.raises(IncompleteHeader, match=f"incomplete after {len(data)} bytes"):
            decode(data)


# --- hypothesis: garbage and round trips ---

garbage = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: SIGNATURE + b),
    st.tuples(st.sampled_from([0x20, 0x21]), st.sampled_from([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32]),
              st.binary(max_size=300)).map(lambda t: v2(t[0], t[1], t[2])),
    st.binary(max_size=120).map(lambda b: b"PROXY " + b),
    st.lists(st.sampled_from(["TCP4", "TCP6", "UNKNOWN", "1.2.3.4", "::1", "80", "0", "", "\r\n", "\n"]),
             max_size=8).map(lambda parts: ("PROXY " + " ".join(parts)).encode()),
)


def _outcome(chunks: list[bytes]) -> object:
    decoder = ProxyDecoder()
    event: object = NEED_DATA
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            event = decoder.next_event()
    except ProxyProtocolError as exc:
        return type(exc)  # messages may quote fewer bytes when raised early
    return event


@settings(max_examples=400)
@given(data=garbage, cuts=st.lists(st.integers(0, 400), max_size=6))
def test_garbage_only_raises_proxy_protocol_error(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])] or [b""]
    whole = _outcome([data])  # anything but ProxyProtocolError propagates and fails the test
    assert _outcome(chunks) == whole  # chunking never changes the verdict


addresses = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
    st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6)),
)
ports = st.integers(0, 65535)
user_tlvs = st.lists(st.builds(
    Tlv, st.integers(0, 255).filter(lambda t: t not in (0x02, 0x03, 0x05)), st.binary(max_size=64)),
    max_size=5)


@given(addrs=addresses, sport=ports, dport=ports, tlvs=user_tlvs, use_crc=st.booleans(),
       pad_to=st.one_of(st.none(), st.integers(0, 400)), split=st.integers(0, 500))
def test_v2_round_trip(addrs: tuple, sport: int, dport: int, tlvs: list[Tlv], use_crc: bool,
                       pad_to: int | None, split: int) -> None:
    src, dst = (str(addrs[0]), sport), (str(addrs[1]), dport)
    data = encode_v2("PROXY", src, dst, tlvs=tlvs, crc32c=use_crc, pad_to=pad_to)
    decoder = ProxyDecoder()
    decoder.feed(data[:split])
    decoder.feed(data[split:] + b"\x00payload")
    h = decoder.next_event()
    assert isinstance(h, ProxyHeader)
    assert (h.version, h.command, h.source, h.destination, h.length) == (2, "PROXY", src, dst, len(data))
    assert h.family == (Family.TCP4 if addrs[0].version == 4 else Family.TCP6)
    assert decoder.trailing_data == b"\x00payload"
    body = list(h.tlvs)
    if use_crc:
        assert body.pop(0).type == PP2_TYPE_CRC32C and h.crc_valid is True
    else:
        assert h.crc_valid is None
    payload_len = len(data) - 16
    if pad_to is not None and payload_len == pad_to and len(body) > len(tlvs):
        noop = body.pop()
        assert noop == Tlv(PP2_TYPE_NOOP, b"\0" * len(noop.value))
    assert body == tlvs
    if pad_to is not None and payload_len != pad_to:  # padding omitted only when it cannot fit
        assert pad_to - payload_len in (1, 2) or payload_len > pad_to


@given(tlvs=user_tlvs, pad_to=st.one_of(st.none(), st.integers(0, 200)))
def test_local_round_trip(tlvs: list[Tlv], pad_to: int | None) -> None:
    data = encode_v2("LOCAL", tlvs=tlvs, pad_to=pad_to)
    h = decode(data)
    assert (h.command, h.family, h.source, h.length, h.crc_valid) == ("LOCAL", "TCP4", None, len(data), True)
    assert h.tlvs[0].type == PP2_TYPE_CRC32C
    assert list(h.tlvs[1:1 + len(tlvs)]) == tlvs


@given(addrs=st.one_of(st.none(), addresses), sport=ports, dport=ports)
def test_v1_round_trip(addrs: tuple | None, sport: int, dport: int) -> None:
    if addrs is None:
        assert decode(encode_v1()) == ProxyHeader(1, Command.PROXY, Family.UNKNOWN, None, None, (), 15)
        return
    src, dst = (str(addrs[0]), sport), (str(addrs[1]), dport)
    data = encode_v1(src, dst)
    h = decode(data + b"x")
    assert (h.version, h.source, h.destination, h.length) == (1, src, dst, len(data))


# --- encoder details ---

@pytest.mark.parametrize(("pad_to", "length", "noop"), [
    (84, 100, True), (22, 38, True), (21, 35, False), (20, 35, False), (19, 35, False),
    (10, 35, False), (0, 35, False), (None, 35, False),
], ids=lambda v: str(v))
def test_noop_padding_rule(pad_to: int | None, length: int, noop: bool) -> None:
    """Unpadded payload is 19 bytes (12 address + 7 CRC). A NOOP TLV is >= 3 bytes, so a gap
    of 1-2 bytes, or a negative one, gets no padding rather than a different size."""
    data = encode_v2("PROXY", ("192.0.2.1", 1), ("192.0.2.2", 2), pad_to=pad_to)
    assert len(data) == length
    assert (decode(data).tlvs[-1].type == PP2_TYPE_NOOP) == noop


def test_encode_without_addresses() -> None:
    h = decode(encode_v2("PROXY", pad_to=None))
    assert (h.family, h.source, h.length, h.crc_valid) == (Family.UNSPEC, None, 23, True)
    assert encode_v2("LOCAL", crc32c=False, pad_to=None) == v2(0x20, 0x11, b"")


@pytest.mark.parametrize(("call", "message"), [
    (lambda: encode_v2("PROXY", ("192.0.2.1", 1), ("2001:db8::1", 2)),
     "addresses '192.0.2.1' -> '2001:db8::1' mix IPv4 and IPv6"),
    (lambda: encode_v2("PROXY", ("192.0.2.1", 65536), ("192.0.2.2", 2)), "port 65536 is not in 0-65535"),
    (lambda: encode_v2("PROXY", ("192.0.2.300", 1), ("192.0.2.2", 2)),
     "'192.0.2.300' is not an IPv4 or IPv6 address"),
    (lambda: encode_v2("PROXY", ("192.0.2.1", 1)), "source and destination must be given together"),
    (lambda: encode_v2("LOCAL", ("192.0.2.1", 1), ("192.0.2.2", 2)),
     "LOCAL carries no address block (AWS NLB shape); drop the addresses"),
    (lambda: encode_v2("HEALTH"), "command 'HEALTH' is not LOCAL or PROXY"),
    (lambda: encode_v2("PROXY", tlvs=[Tlv(256, b"")]),
     "TLV type 256 with a 0-byte value: type must be 0-255, value at most 65535 bytes"),
    (lambda: encode_v2("PROXY", tlvs=[Tlv(0xE0, b"x" * 65530)]),
     "PROXY v2 payload of 65540 bytes exceeds 65535"),
    (lambda: encode_v1(("192.0.2.1", 1), ("::1", 2)), "addresses '192.0.2.1' -> '::1' mix IPv4 and IPv6"),
], ids=lambda v: None)
def test_encoder_errors(call: object, message: str) -> None:
    with pytest.raises(EncodeError) as exc_info:
        call()  # type: ignore[operator]
    assert str(exc_info.value) == message
    assert isinstance(exc_info.value, ValueError)


# --- real HAProxy 2.6 accepts what we encode ---

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
HAPROXY_CFG = """\
global
    maxconn 64
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{port} accept-proxy
    http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port]"
"""


@pytest.fixture(scope="module")
def haproxy_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if not Path(HAPROXY).exists():
        pytest.fail(f"haproxy is not installed at {HAPROXY}: `make test` installs it (lab engine --test-tools)")
    port = free_port()
    cfg = tmp_path_factory.mktemp("haproxy") / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(port=port))
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"haproxy exited {proc.returncode}: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"haproxy did not listen on 127.0.0.1:{port} within 10 s")
                time.sleep(0.05)  # poll interval, not synchronisation
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _exchange(port: int, header: bytes) -> bytes:
    request = b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(header + request)  # one segment: HAProxy peeks the header with MSG_PEEK
        chunks = []
        try:
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


@pytest.mark.parametrize(("header", "body"), [
    (encode_v2_proxy("198.51.100.123", 40000, "10.20.1.20", 443), b"198.51.100.123:40000"),
    (encode_v2_proxy("198.51.100.123", 40000, "10.20.1.20", 443, vpce_id=VPCE), b"198.51.100.123:40000"),
    (encode_v2_proxy("2001:db8::7", 1234, "2001:db8::1", 443), b"2001:db8::7:1234"),
    (encode_v1(("203.0.113.9", 65535), ("10.20.1.20", 80)), b"203.0.113.9:65535"),
], ids=["v2", "v2-vpce", "v2-ipv6", "v1"])
def test_haproxy_accepts_encoded_proxy_header(haproxy_port: int, header: bytes, body: bytes) -> None:
    response = _exchange(haproxy_port, header)
    assert response.startswith(b"HTTP/1.1 200")
    assert response.split(b"\r\n\r\n", 1)[1] == body


def test_haproxy_accepts_local_header(haproxy_port: int) -> None:
    response = _exchange(haproxy_port, encode_v2_local())
    assert response.startswith(b"HTTP/1.1 200")
    assert response.split(b"\r\n\r\n", 1)[1].startswith(b"127.0.0.1:")


def test_haproxy_rejects_corrupted_crc(haproxy_port: int) -> None:
    header = bytearray(encode_v2_proxy("198.51.100.123", 40000, "10.20.1.20", 443))
    header[31] ^= 0xFF  # first byte of the CRC32C value (16 fixed + 12 addresses + 3 TLV header)
    with pytest.raises(ChecksumMismatch):
        decode(bytes(header))
    assert b"200" not in _exchange(haproxy_port, bytes(header))
