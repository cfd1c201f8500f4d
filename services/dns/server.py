"""asyncio shell of the lab DNS: UDP + TCP listeners, zone file polling, and the admin HTTP API.

``answer_query`` turns request bytes into response bytes (dnslib) for a given ``zone.Zone``;
``ZoneState`` owns the file-backed zone plus the admin API's overrides; the protocols only move
bytes. Garbage from a peer gets FORMERR (or is dropped when not even a DNS header), never a crash.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

from dnslib import AAAA, CNAME, EDNS0, QTYPE, RCODE, RR, SOA, A, DNSHeader, DNSRecord

from services.admin_http import serve_admin
from services.common import ListenAddressError, format_address, parse_listen  # noqa: F401 (re-exported)
from services.dns import zone as zonemod
from services.dns.zone import Overrides, Zone, ZoneError

Log = Callable[[str], None]
Address = tuple[str, int]

UDP_PLAIN_LIMIT = 512
UDP_EDNS_LIMIT = 1232  # the DNS flag day 2020 default
ADMIN_MAX_BODY = 64 * 1024
_OPCODE_QUERY = 0
_CLASS_IN, _CLASS_ANY = 1, 255
_OPT = 41


class RecordNotFound(LookupError):
    """An admin DELETE/GET for a name that has no record sets."""


@dataclass(frozen=True, slots=True)
class DnsConfig:
    zone_file: Path
    listen: tuple[Address, ...]
    admin: Address | None = None
    poll_interval: float = 0.5


# --- DNS messages -----------------------------------------------------------------------------


def _qtype_name(qtype: int) -> str:
    name = QTYPE.get(qtype, None)
    return name if isinstance(name, str) else f"TYPE{qtype}"


def _rdata(record: zonemod.ResourceRecord) -> Any:
    value = record.value
    if isinstance(value, zonemod.Soa):
        times = (value.serial, value.refresh, value.retry, value.expire, value.minimum)
        return SOA(value.mname + ".", value.rname + ".", times)
    if record.type == "A":
        return A(value)
    if record.type == "AAAA":
        return AAAA(value)
    return CNAME(value + ".")


def _soa_rr(soa: zonemod.Soa) -> RR:
    return RR(soa.zone + ".", QTYPE.SOA, ttl=soa.ttl, rdata=_rdata(zonemod.ResourceRecord(soa.zone, "SOA", 0, soa)))


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    """What one query asked and got, for the ``dns query ...`` log line."""

    name: str
    qtype: str
    result: str  # "<rcode> <answers>", answers comma-separated or "-"

    def log_line(self, peer: Any) -> str:
        return f"dns query {self.name} {self.qtype} from {format_address(peer)} -> {self.result}"


def answer_query(zone: Zone, data: bytes, max_size: int | None) -> tuple[bytes | None, QueryOutcome]:
    """Response bytes (None: send nothing) and what to log.

    ``max_size`` is None over TCP; over UDP the answer is truncated (TC) above 512 bytes,
    or above the client's EDNS size capped at 1232.
    """
    try:
        request = DNSRecord.parse(data)
    except Exception as exc:  # dnslib raises assorted types on garbage; peer bytes never crash us
        if len(data) < 12 or data[2] & 0x80:
            return None, QueryOutcome("<unparsable>", "-", f"dropped ({len(data)} bytes: {exc})")
        header = DNSHeader(id=int.from_bytes(data[:2], "big"), qr=1, rcode=RCODE.FORMERR)
        return DNSRecord(header).pack(), QueryOutcome("<unparsable>", "-", f"FORMERR ({exc})")
    if request.header.qr:
        return None, QueryOutcome("<response>", "-", "dropped (not a query)")
    reply = DNSRecord(
        DNSHeader(id=request.header.id, qr=1, opcode=request.header.opcode, rd=request.header.rd, ra=0),
        questions=list(request.questions),
    )
    opt = next((rr for rr in request.ar if rr.rtype == _OPT), None)
    if opt is not None:
        reply.add_ar(EDNS0(udp_len=UDP_EDNS_LIMIT))
    if request.header.opcode != _OPCODE_QUERY or len(request.questions) != 1:
        reply.header.rcode = RCODE.NOTIMP if request.header.opcode != _OPCODE_QUERY else RCODE.FORMERR
        return reply.pack(), QueryOutcome("-", "-", f"{RCODE[reply.header.rcode]} -")
    question = request.q
    qname = str(question.qname).rstrip(".") or "."
    qtype = _qtype_name(question.qtype)
    if question.qclass not in (_CLASS_IN, _CLASS_ANY):
        answer = zonemod.Answer("REFUSED")
    else:
        answer = zone.lookup(qname, qtype)
    reply.header.rcode = getattr(RCODE, answer.rcode)
    reply.header.aa = int(answer.rcode != "REFUSED")
    for record in answer.answers:
        owner = question.qname if record.name == qname.lower() else record.name + "."
        reply.add_answer(RR(owner, getattr(QTYPE, record.type), ttl=record.ttl, rdata=_rdata(record)))
    if answer.authority is not None:
        reply.add_auth(_soa_rr(answer.authority))
    packed = reply.pack()
    if max_size is not None:
        limit = max(UDP_PLAIN_LIMIT, min(opt.rclass, UDP_EDNS_LIMIT)) if opt is not None else UDP_PLAIN_LIMIT
        if len(packed) > limit:
            truncated = DNSRecord(
                DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap, tc=1), questions=list(request.questions)
            )
            if opt is not None:
                truncated.add_ar(EDNS0(udp_len=UDP_EDNS_LIMIT))
            packed = truncated.pack()
    shown = ",".join("SOA" if isinstance(r.value, zonemod.Soa) else r.value for r in answer.answers)
    return packed, QueryOutcome(qname, qtype, f"{answer.rcode} {shown or '-'}")


# --- zone state -------------------------------------------------------------------------------


class ZoneState:
    """The zone file as last loaded successfully, plus the admin API's overrides on top."""

    def __init__(self, path: Path, log: Log) -> None:
        self._path = path
        self._log = log
        self._signature: tuple[int, int, int] | None = None
        self._base = Zone((), ())
        self._overrides = Overrides()
        self.zone = self._base

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def load(self) -> None:
        """First load; raises ZoneError."""
        self._signature = self._stat()
        self._base = zonemod.load_zone_file(self._path)
        self.zone = self._overrides.apply(self._base)

    def refresh(self) -> bool:
        """Reload if the file changed since the last look; a bad file keeps the previous zone."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            base = zonemod.load_zone_file(self._path)
            zone = self._overrides.apply(base)
        except ZoneError as exc:
            self._log(f"dns zone error: {exc}; keeping the previous {len(self.zone.records)} record sets")
            return False
        self._base, self.zone = base, zone
        self._log(f"dns zone reloaded from {self._path}: {len(zone.records)} record sets")
        return True

    def put(self, name_text: str, body: bytes) -> zonemod.RecordSet:
        """Replace the record set (name, body["type"]); raises ZoneError naming the bad field."""
        name = zonemod.normalize_name(name_text, "name")
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # Recursion: nested too deeply
            raise ZoneError("body", f"not valid JSON ({exc})") from None
        rrset = zonemod.parse_rrset(name, raw)
        overrides = self._overrides.put(rrset)
        self.zone = overrides.apply(self._base)
        self._overrides = overrides
        return rrset

    def delete(self, name_text: str) -> tuple[zonemod.RecordSet, ...]:
        """Remove every record set at a name; raises ZoneError or RecordNotFound."""
        name = zonemod.normalize_name(name_text, "name")
        removed = self.zone.at(name)
        if not removed:
            raise RecordNotFound(name)
        overrides = self._overrides.delete(name)
        self.zone = overrides.apply(self._base)
        self._overrides = overrides
        return removed


# --- admin API --------------------------------------------------------------------------------


def admin_request(state: ZoneState, method: str, target: str, body: bytes, log: Log) -> tuple[int, dict[str, Any]]:
    """Route one admin request: GET /records, GET|PUT|DELETE /records/<name>."""
    path = target.split("?", 1)[0]
    if path in ("/records", "/records/"):
        if method != "GET":
            return 405, {"error": f"method {method} not allowed on /records (allowed: GET)"}
        return 200, state.zone.as_json()
    if not path.startswith("/records/"):
        return 404, {"error": f"no such resource: {path} (try /records or /records/<name>)"}
    name = unquote(path[len("/records/"):])
    try:
        if method == "GET":
            found = state.zone.at(zonemod.normalize_name(name, "name"))
            if not found:
                raise RecordNotFound(name)
            return 200, {"records": [rrset.as_json() for rrset in found]}
        if method == "PUT":
            rrset = state.put(name, body)
            log(f"dns admin PUT {rrset.name} {rrset.type} ttl={rrset.ttl} {','.join(rrset.values)}")
            return 200, {"record": rrset.as_json()}
        if method == "DELETE":
            removed = state.delete(name)
            log(f"dns admin DELETE {removed[0].name} ({', '.join(r.type for r in removed)})")
            return 200, {"deleted": [rrset.as_json() for rrset in removed]}
    except ZoneError as exc:
        return 400, {"error": str(exc)}
    except RecordNotFound:
        return 404, {"error": f"name: {json.dumps(name)} has no record sets"}
    return 405, {"error": f"method {method} not allowed on /records/<name> (allowed: GET, PUT, DELETE)"}


def _dns_error_doc(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": message}


# --- DNS transports ---------------------------------------------------------------------------


class _Answerer:
    def __init__(self, state: ZoneState, log: Log) -> None:
        self._state = state
        self._log = log

    def __call__(self, data: bytes, peer: Any, max_size: int | None) -> bytes | None:
        response, outcome = answer_query(self._state.zone, data, max_size)
        self._log(outcome.log_line(peer))
        return response


class DnsUdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, answer: _Answerer) -> None:
        self._answer = answer
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        response = self._answer(data, addr, UDP_PLAIN_LIMIT)
        if response is not None and self._transport is not None:
            self._transport.sendto(response, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors for earlier answers; nothing to do


class DnsTcpProtocol(asyncio.Protocol):
    """RFC 1035 4.2.2 framing: 2-byte length, any number of queries per connection."""

    def __init__(self, answer: _Answerer, connections: set[asyncio.BaseTransport]) -> None:
        self._answer = answer
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._peer: Any = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(transport)
        self._peer = transport.get_extra_info("peername")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._connections.discard(self._transport)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and len(self._buffer) >= 2:
            size = int.from_bytes(self._buffer[:2], "big")
            if size == 0:
                self._transport.close()
                return
            if len(self._buffer) < 2 + size:
                return
            message = bytes(self._buffer[2 : 2 + size])
            del self._buffer[: 2 + size]
            response = self._answer(message, self._peer, None)
            if response is None:
                self._transport.close()
                return
            self._transport.write(len(response).to_bytes(2, "big") + response)


# --- the server -------------------------------------------------------------------------------


class DnsServer:
    """UDP+TCP on every listen address (same port for both), the admin API, zone polling."""

    def __init__(self, config: DnsConfig, log: Log) -> None:
        self._config = config
        self._log = log
        self.state = ZoneState(config.zone_file, log)
        self._tcp: list[asyncio.Server] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._admin: asyncio.Server | None = None
        self._connections: set[asyncio.BaseTransport] = set()
        self.addresses: list[Address] = []
        self.admin_address: Address | None = None

    async def start(self) -> None:
        """Load the zone and bind. Raises ZoneError (zone file) or OSError (bind)."""
        self.state.load()
        answer = _Answerer(self.state, self._log)
        try:
            for host, port in self._config.listen:
                self.addresses.append(await self._bind_dns(host, port, answer))
            if self._config.admin is not None:
                host, port = self._config.admin
                self._admin = await serve_admin(
                    lambda method, target, body: admin_request(self.state, method, target, body, self._log),
                    host, port, error_doc=_dns_error_doc, connections=self._connections, max_body=ADMIN_MAX_BODY)
                self.admin_address = (host, self._admin.sockets[0].getsockname()[1])
        except BaseException:
            await self.close()
            raise

    async def _bind_dns(self, host: str, port: int, answer: _Answerer) -> Address:
        """TCP first, then UDP on the same port (for port 0: retry until both fit)."""
        loop = asyncio.get_running_loop()
        for attempt in range(20):
            tcp = await loop.create_server(
                lambda: DnsTcpProtocol(answer, self._connections), host, port, reuse_address=True)
            bound = tcp.sockets[0].getsockname()[1]
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: DnsUdpProtocol(answer), local_addr=(host, bound)
                )
            except OSError as exc:
                tcp.close()
                if port != 0 or exc.errno != errno.EADDRINUSE or attempt == 19:
                    raise
                continue
            self._tcp.append(tcp)
            self._udp.append(cast(asyncio.DatagramTransport, udp))
            return host, bound
        raise AssertionError("unreachable")

    async def serve_forever(self) -> None:
        async with asyncio.TaskGroup() as group:
            for server in [*self._tcp, *([self._admin] if self._admin else [])]:
                group.create_task(server.serve_forever())
            group.create_task(self._poll_zone_file())

    async def _poll_zone_file(self) -> None:
        while True:
            await asyncio.sleep(self._config.poll_interval)
            self.state.refresh()

    async def close(self) -> None:
        servers = [*self._tcp, *([self._admin] if self._admin else [])]
        for server in servers:
            server.close()
        for transport in [*self._udp, *self._connections]:
            transport.close()
        for server in servers:
            await server.wait_closed()
        self._tcp, self._udp, self._admin = [], [], None
