"""Sans-I/O PROXY protocol codec (v1 and v2), h11-style: bytes in, typed results out.

Follows haproxy ``doc/proxy-protocol.txt`` and the observed AWS NLB header shape
(reference/aws-elb.md sections 3 and 3b). Verification mirrors HAProxy 2.6
``conn_recv_proxy``: a PROXY-command header must carry a correct CRC32C TLV if it
carries one; a LOCAL header's payload is skipped by length whatever its family says.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX: Final = b"PROXY "
V1_MAX_LENGTH: Final = 107
V2_MAX_LENGTH: Final = 16 + 0xFFFF

PP2_TYPE_ALPN: Final = 0x01
PP2_TYPE_AUTHORITY: Final = 0x02
PP2_TYPE_CRC32C: Final = 0x03
PP2_TYPE_NOOP: Final = 0x04
PP2_TYPE_UNIQUE_ID: Final = 0x05
PP2_TYPE_SSL: Final = 0x20
PP2_TYPE_NETNS: Final = 0x30
PP2_TYPE_AWS: Final = 0xEA
PP2_SUBTYPE_AWS_VPCE_ID: Final = 0x01

AWS_PAYLOAD_LENGTH: Final = 84  # observed: every NLB header is 16 + 84 = 100 bytes

_UNIQUE_ID_MAX = 128  # spec
_AUTHORITY_MAX = 255  # HAProxy's HA_PP2_AUTHORITY_MAX


class Command(enum.StrEnum):
    LOCAL = "LOCAL"
    PROXY = "PROXY"


class Family(enum.StrEnum):
    UNSPEC = "UNSPEC"
    TCP4 = "TCP4"
    UDP4 = "UDP4"
    TCP6 = "TCP6"
    UDP6 = "UDP6"
    UNIX = "UNIX"
    UNIX_DGRAM = "UNIX_DGRAM"
    UNKNOWN = "UNKNOWN"  # v1 only


# v2 family byte <-> (family, address block length)
_FAMILY_BYTES: Final = {
    0x00: (Family.UNSPEC, 0), 0x11: (Family.TCP4, 12), 0x12: (Family.UDP4, 12),
    0x21: (Family.TCP6, 36), 0x22: (Family.UDP6, 36),
    0x31: (Family.UNIX, 216), 0x32: (Family.UNIX_DGRAM, 216),
}


class ProxyProtocolError(Exception):
    """Base class: the bytes (or the arguments) do not form a valid PROXY header."""


class NotProxyProtocol(ProxyProtocolError):
    """The stream does not start with a PROXY v1 or v2 signature."""


class MalformedHeader(ProxyProtocolError):
    """A PROXY header that breaks the spec's syntax or length rules."""


class UnsupportedVersion(ProxyProtocolError):
    """v2 signature followed by a version nibble other than 2."""


class UnsupportedCommand(ProxyProtocolError):
    """v2 command nibble other than LOCAL (0x0) or PROXY (0x1)."""


class ChecksumMismatch(ProxyProtocolError):
    """The PP2_TYPE_CRC32C TLV does not match the header."""


class HeaderTooLong(ProxyProtocolError):
    """v1 line without CRLF within 107 bytes, or v2 length above the decoder's cap."""


class IncompleteHeader(ProxyProtocolError):
    """decode() was given fewer bytes than the header needs."""


class EncodeError(ProxyProtocolError, ValueError):
    """*We* asked the encoder for something the protocol cannot express."""


# --- CRC32C (Castagnoli, reflected polynomial 0x82F63B78, RFC 4960 App. B) ---

def _crc_entry(c: int) -> int:
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c


_CRC_TABLE: Final = tuple(_crc_entry(i) for i in range(256))


def crc32c(data: bytes | bytearray, crc: int = 0) -> int:
    """CRC32C of ``data``; pass a previous result as ``crc`` to continue it."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_crc32c = crc32c  # encode_v2 has a parameter of the same name


# --- results ---

@dataclass(frozen=True, slots=True)
class Tlv:
    type: int
    value: bytes


Address = tuple[str, int]
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One decoded header. ``length`` is the number of bytes it took on the wire.

    ``crc_valid`` is None without a CRC32C TLV; it can only be False for LOCAL
    (a PROXY header with a bad CRC raises ChecksumMismatch instead).
    UNIX addresses are reported as ``(path, 0)``.
    """

    version: Literal[1, 2]
    command: Command
    family: Family
    source: Address | None
    destination: Address | None
    tlvs: tuple[Tlv, ...]
    length: int
    crc_valid: bool | None = None

    def get_tlv(self, tlv_type: int) -> bytes | None:
        """Value of the first TLV of ``tlv_type``, or None."""
        return next((t.value for t in self.tlvs if t.type == tlv_type), None)

    @property
    def vpce_id(self) -> str | None:
        """AWS PrivateLink endpoint id (TLV 0xEA, subtype 0x01), or None."""
        for t in self.tlvs:
            if t.type == PP2_TYPE_AWS and t.value[:1] == bytes([PP2_SUBTYPE_AWS_VPCE_ID]):
                return t.value[1:].decode("ascii", "replace")
        return None


class _Need(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _Need.NEED_DATA
Event = ProxyHeader | Literal[_Need.NEED_DATA]


# --- decoder ---

_V1_PORT = re.compile(r"0|[1-9][0-9]{0,4}")


class ProxyDecoder:
    """Incremental decoder: ``feed()`` bytes, call ``next_event()`` until not NEED_DATA.

    Once a header is returned, ``next_event()`` keeps returning it and further
    ``feed()`` data goes to ``trailing_data``. Once an error is raised it is raised
    again on every call (the connection should be dropped).
    """

    def __init__(self, *, max_v2_length: int = V2_MAX_LENGTH) -> None:
        self._buf = bytearray()
        self._max_v2_length = max_v2_length
        self._header: ProxyHeader | None = None
        self._error: ProxyProtocolError | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def header(self) -> ProxyHeader | None:
        return self._header

    @property
    def trailing_data(self) -> bytes:
        """Bytes after the header (start of the payload); empty until it is complete."""
        return bytes(self._buf[self._header.length:]) if self._header else b""

    def next_event(self) -> Event:
        if self._header is not None:
            return self._header
        if self._error is not None:
            raise self._error
        try:
            event = self._parse()
        except ProxyProtocolError as exc:
            self._error = exc
            raise
        if event is not NEED_DATA:
            self._header = event
        return event

    def _parse(self) -> Event:
        buf = self._buf
        if not buf:
            return NEED_DATA
        if SIGNATURE.startswith(buf[:12]):
            return self._parse_v2() if len(buf) >= 12 else NEED_DATA
        if V1_PREFIX.startswith(buf[:6]):
            return self._parse_v1() if len(buf) >= 6 else NEED_DATA
        raise NotProxyProtocol(
            f"stream starts with {bytes(buf[:12])!r}, which is neither the PROXY v2"
            f" signature {SIGNATURE!r} nor the v1 prefix {V1_PREFIX!r}")

    def _parse_v1(self) -> Event:
        window = bytes(self._buf[:V1_MAX_LENGTH])
        cr, lf = window.find(b"\r"), window.find(b"\n")
        if lf != -1 and (cr == -1 or lf < cr):
            raise MalformedHeader("PROXY v1 line has a bare LF; it must end with CRLF")
        if cr == -1 or cr + 1 == len(window):
            if len(window) >= V1_MAX_LENGTH:
                raise HeaderTooLong(
                    f"PROXY v1 line has no CRLF within {V1_MAX_LENGTH} bytes (the maximum)")
            return NEED_DATA
        if window[cr + 1] != 0x0A:
            raise MalformedHeader("PROXY v1 line has a CR not followed by LF")
        return _parse_v1_line(window[:cr], cr + 2)

    def _parse_v2(self) -> Event:
        buf = self._buf
        if len(buf) < 13:
            return NEED_DATA
        ver, cmd = buf[12] >> 4, buf[12] & 0x0F
        if ver != 2:
            raise UnsupportedVersion(
                f"PROXY v2 signature followed by version {ver} (byte 0x{buf[12]:02x});"
                " only version 2 is defined")
        if cmd > 1:
            raise UnsupportedCommand(f"PROXY v2 command 0x{cmd:x} is not LOCAL (0x0) or PROXY (0x1)")
        if len(buf) < 16:
            return NEED_DATA
        total = 16 + int.from_bytes(buf[14:16], "big")
        if total > self._max_v2_length:
            raise HeaderTooLong(
                f"PROXY v2 header of {total} bytes exceeds the limit of {self._max_v2_length}")
        if len(buf) < total:
            return NEED_DATA
        return _parse_v2_header(bytes(buf[:total]))


def _parse_v1_line(line: bytes, length: int) -> ProxyHeader:
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedHeader(f"PROXY v1 line {line!r} is not ASCII") from None
    parts = text.split(" ")  # text starts with "PROXY ", so parts[1] exists
    if parts[1] == "UNKNOWN":  # spec: the receiver ignores the rest of the line
        return ProxyHeader(1, Command.PROXY, Family.UNKNOWN, None, None, (), length)
    if parts[1] not in ("TCP4", "TCP6"):
        raise MalformedHeader(
            f"PROXY v1 protocol {parts[1]!r} is not TCP4, TCP6 or UNKNOWN in {text!r}")
    if len(parts) != 6:
        raise MalformedHeader(
            f"PROXY v1 line {text!r} must be 'PROXY {parts[1]} <src> <dst> <sport> <dport>'"
            " with single spaces")
    family = Family(parts[1])
    src, dst = (_v1_addr(a, family, text) for a in parts[2:4])
    sport, dport = (_v1_port(p, text) for p in parts[4:6])
    return ProxyHeader(1, Command.PROXY, family, (src, sport), (dst, dport), (), length)


def _v1_addr(text: str, family: Family, line: str) -> str:
    cls = ipaddress.IPv4Address if family is Family.TCP4 else ipaddress.IPv6Address
    try:
        if "%" in text:  # scope ids are not addresses on the wire
            raise ValueError
        return str(cls(text))
    except ValueError:
        raise MalformedHeader(
            f"PROXY v1 address {text!r} is not a valid {family} address in {line!r}") from None


def _v1_port(text: str, line: str) -> int:
    if not _V1_PORT.fullmatch(text) or int(text) > 65535:
        raise MalformedHeader(
            f"PROXY v1 port {text!r} is not a decimal 0-65535 without leading zeros in {line!r}")
    return int(text)


def _parse_tlvs(data: bytes, offset: int) -> list[tuple[int, Tlv]]:
    """(value offset, Tlv) pairs from ``offset`` to the end of ``data``."""
    out = []
    while offset < len(data):
        if offset + 3 > len(data):
            raise MalformedHeader(
                f"PROXY v2 TLV at offset {offset} has only {len(data) - offset} bytes"
                " left, a TLV header needs 3")
        tlv_type, tlv_len = data[offset], int.from_bytes(data[offset + 1:offset + 3], "big")
        start = offset + 3
        if start + tlv_len > len(data):
            raise MalformedHeader(
                f"PROXY v2 TLV 0x{tlv_type:02x} at offset {offset} has length {tlv_len},"
                f" overrunning the {len(data)}-byte header by {start + tlv_len - len(data)}")
        out.append((start, Tlv(tlv_type, data[start:start + tlv_len])))
        offset = start + tlv_len
    return out


def _check_crc(data: bytes, pairs: list[tuple[int, Tlv]], *, strict: bool) -> bool | None:
    """None without a CRC32C TLV; a mismatch raises when ``strict``, else gives False."""
    valid: bool | None = None
    for start, tlv in pairs:
        if tlv.type != PP2_TYPE_CRC32C:
            continue
        if len(tlv.value) != 4:
            raise MalformedHeader(f"PROXY v2 CRC32C TLV has length {len(tlv.value)}, must be 4")
        want = _crc32c(data[:start] + b"\0\0\0\0" + data[start + 4:])
        if want != int.from_bytes(tlv.value, "big"):
            if strict:
                raise ChecksumMismatch(
                    f"PROXY v2 CRC32C TLV 0x{tlv.value.hex()} does not match 0x{want:08x},"
                    f" computed over the {len(data)}-byte header with the CRC field zeroed")
            return False
        valid = True
    return valid


def _parse_v2_header(data: bytes) -> ProxyHeader:
    cmd, fam_byte, total = data[12] & 0x0F, data[13], len(data)
    if cmd == 0:  # LOCAL: ignore the address block; TLVs only if payload parses as TLVs
        family = _FAMILY_BYTES.get(fam_byte, (Family.UNSPEC, 0))[0]
        try:
            pairs = _parse_tlvs(data, 16)
            crc_ok = _check_crc(data, pairs, strict=False)
        except MalformedHeader:
            pairs, crc_ok = [], None
        tlvs = tuple(t for _, t in pairs)
        return ProxyHeader(2, Command.LOCAL, family, None, None, tlvs, total, crc_ok)
    if fam_byte not in _FAMILY_BYTES:
        raise MalformedHeader(
            f"PROXY v2 family/transport byte 0x{fam_byte:02x} is not one of"
            f" {', '.join(f'0x{b:02x}' for b in _FAMILY_BYTES)}")
    family, addr_len = _FAMILY_BYTES[fam_byte]
    if total - 16 < addr_len:
        raise MalformedHeader(
            f"PROXY v2 length {total - 16} is shorter than the {addr_len}-byte"
            f" {family} address block")
    src, dst = _unpack_addresses(family, data[16:16 + addr_len])
    pairs = _parse_tlvs(data, 16 + addr_len)
    for _, tlv in pairs:
        if tlv.type == PP2_TYPE_UNIQUE_ID and len(tlv.value) > _UNIQUE_ID_MAX:
            raise MalformedHeader(
                f"PROXY v2 UNIQUE_ID TLV has length {len(tlv.value)}, maximum {_UNIQUE_ID_MAX}")
        if tlv.type == PP2_TYPE_AUTHORITY and len(tlv.value) > _AUTHORITY_MAX:
            raise MalformedHeader(
                f"PROXY v2 AUTHORITY TLV has length {len(tlv.value)},"
                f" HAProxy accepts at most {_AUTHORITY_MAX}")
    crc_ok = _check_crc(data, pairs, strict=True)
    return ProxyHeader(2, Command.PROXY, family, src, dst, tuple(t for _, t in pairs), total, crc_ok)


def _unpack_addresses(family: Family, block: bytes) -> tuple[Address | None, Address | None]:
    if family is Family.UNSPEC:
        return None, None
    if family in (Family.UNIX, Family.UNIX_DGRAM):
        src_path, dst_path = (p.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
                              for p in (block[:108], block[108:]))
        return (src_path, 0), (dst_path, 0)
    size = 4 if family in (Family.TCP4, Family.UDP4) else 16
    src = ipaddress.ip_address(block[:size])
    dst = ipaddress.ip_address(block[size:2 * size])
    sport, dport = struct.unpack("!HH", block[2 * size:])
    return (str(src), sport), (str(dst), dport)


def decode(data: bytes) -> ProxyHeader:
    """Decode the header at the start of ``data``; ``header.length`` says where it ends."""
    decoder = ProxyDecoder()
    decoder.feed(data)
    event = decoder.next_event()
    if event is NEED_DATA:
        raise IncompleteHeader(f"PROXY header incomplete after {len(data)} bytes")
    return event


# --- encoders ---

def _tlv_bytes(tlv_type: int, value: bytes) -> bytes:
    if not 0 <= tlv_type <= 0xFF or len(value) > 0xFFFF:
        raise EncodeError(
            f"TLV type {tlv_type} with a {len(value)}-byte value: type must be 0-255, value"
            " at most 65535 bytes")
    return struct.pack("!BH", tlv_type, len(value)) + value


def _endpoints(source: Address, destination: Address) -> tuple[_IP, _IP, int, int]:
    ips = []
    for host, port in (source, destination):
        try:
            ips.append(ipaddress.ip_address(host))
        except ValueError:
            raise EncodeError(f"{host!r} is not an IPv4 or IPv6 address") from None
        if not 0 <= port <= 0xFFFF:
            raise EncodeError(f"port {port} is not in 0-65535")
    if ips[0].version != ips[1].version:
        raise EncodeError(f"addresses {source[0]!r} -> {destination[0]!r} mix IPv4 and IPv6")
    return ips[0], ips[1], source[1], destination[1]


def encode_v2(
    command: Command | str,
    source: Address | None = None,
    destination: Address | None = None,
    *,
    tlvs: Iterable[Tlv] = (),
    crc32c: bool = True,
    pad_to: int | None = AWS_PAYLOAD_LENGTH,
) -> bytes:
    """Build a TCP v2 header the way an AWS NLB does.

    PROXY: family 0x11/0x21 and the address block (UNSPEC 0x00 without addresses).
    LOCAL: family byte 0x11 and no address block. Then the CRC32C TLV, then ``tlvs``,
    then a NOOP TLV padding the payload (all after the 16-byte fixed part) to exactly
    ``pad_to`` bytes. A NOOP TLV is at least 3 bytes, so when the gap is 1-2 bytes or
    negative no padding is added at all (payload 1-2 bytes short of, or above, pad_to).
    """
    try:
        cmd = Command(command)
    except ValueError:
        raise EncodeError(f"command {command!r} is not LOCAL or PROXY") from None
    if (source is None) != (destination is None):
        raise EncodeError("source and destination must be given together")
    if source is None or destination is None:
        fam_byte, addr = (0x11 if cmd is Command.LOCAL else 0x00), b""  # AWS: LOCAL keeps 0x11
    elif cmd is Command.LOCAL:
        raise EncodeError("LOCAL carries no address block (AWS NLB shape); drop the addresses")
    else:
        src, dst, sport, dport = _endpoints(source, destination)
        fam_byte = 0x11 if src.version == 4 else 0x21
        addr = src.packed + dst.packed + struct.pack("!HH", sport, dport)
    payload = addr + (_tlv_bytes(PP2_TYPE_CRC32C, b"\0" * 4) if crc32c else b"")
    payload += b"".join(_tlv_bytes(t.type, t.value) for t in tlvs)
    if pad_to is not None and pad_to - len(payload) >= 3:
        payload += _tlv_bytes(PP2_TYPE_NOOP, b"\0" * (pad_to - len(payload) - 3))
    if len(payload) > 0xFFFF:
        raise EncodeError(f"PROXY v2 payload of {len(payload)} bytes exceeds 65535")
    header = bytearray(SIGNATURE + bytes([0x21 if cmd is Command.PROXY else 0x20, fam_byte]))
    header += struct.pack("!H", len(payload)) + payload
    if crc32c:
        crc_at = 16 + len(addr) + 3
        header[crc_at:crc_at + 4] = _crc32c(header).to_bytes(4, "big")
    return bytes(header)


def encode_v2_proxy(
    src_ip: str, src_port: int, dst_ip: str, dst_port: int, vpce_id: str | None = None
) -> bytes:
    """AWS-shaped 100-byte PROXY header (CRC32C, optional PrivateLink vpce TLV, NOOP pad)."""
    tlvs: tuple[Tlv, ...] = ()
    if vpce_id is not None:
        tlvs = (Tlv(PP2_TYPE_AWS, bytes([PP2_SUBTYPE_AWS_VPCE_ID]) + vpce_id.encode("ascii")),)
    return encode_v2(Command.PROXY, (src_ip, src_port), (dst_ip, dst_port), tlvs=tlvs)


def encode_v2_local() -> bytes:
    """AWS-shaped 100-byte LOCAL header, as sent on NLB health-check connections."""
    return encode_v2(Command.LOCAL)


def encode_v1(source: Address | None = None, destination: Address | None = None) -> bytes:
    """``PROXY TCP4|TCP6 ...\\r\\n``, or ``PROXY UNKNOWN\\r\\n`` without addresses."""
    if source is None or destination is None:
        if source is not destination:
            raise EncodeError("source and destination must be given together")
        return b"PROXY UNKNOWN\r\n"
    src, dst, sport, dport = _endpoints(source, destination)
    proto = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode("ascii")
