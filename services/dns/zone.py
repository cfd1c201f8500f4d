"""The lab's DNS data: load and validate a zone file, layer runtime overrides, answer lookups.

No sockets and no dnslib: names are plain lower-case strings without the trailing dot, answers
are ``Answer`` values that ``server.py`` turns into DNS messages.

Zone file::

    {"zones": ["lab.test"],            # optional; default: last two labels of every name
     "records": [{"name": "www.lab.test", "type": "A", "ttl": 60,
                  "values": ["198.51.100.10", "198.51.100.11"]}]}

A name inside one of the zones that has no records answers NXDOMAIN (SOA in the authority
section); a name outside every zone answers REFUSED: this server never forwards.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SUPPORTED_TYPES = ("A", "AAAA", "CNAME")
RECORD_FIELDS = ("name", "type", "ttl", "values")
ADMIN_FIELDS = ("type", "ttl", "values")
MAX_TTL = 2**31 - 1
MAX_CNAME_CHAIN = 8

Rcode = Literal["NOERROR", "NXDOMAIN", "REFUSED"]

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NAME_RULE = "labels of 1-63 letters, digits, '-' or '_', at most 253 characters"


class ZoneError(Exception):
    """Invalid zone data: ``field`` says where (``records[2].ttl``), ``problem`` what."""

    def __init__(self, field: str, problem: str, source: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" in {self.source}" if self.source else ""
        return f"{self.field}: {self.problem}{where}"


@dataclass(frozen=True, slots=True)
class RecordSet:
    name: str
    type: str
    ttl: int
    values: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "ttl": self.ttl, "values": list(self.values)}


@dataclass(frozen=True, slots=True)
class Soa:
    """Route 53's SOA shape, with a short negative-caching TTL so lab changes show fast."""

    zone: str
    ttl: int = 5
    serial: int = 1
    refresh: int = 7200
    retry: int = 900
    expire: int = 1209600
    minimum: int = 5

    @property
    def mname(self) -> str:
        return f"ns.{self.zone}"

    @property
    def rname(self) -> str:
        return f"hostmaster.{self.zone}"


@dataclass(frozen=True, slots=True)
class ResourceRecord:
    name: str
    type: str
    ttl: int
    value: str | Soa


@dataclass(frozen=True, slots=True)
class Answer:
    rcode: Rcode
    answers: tuple[ResourceRecord, ...] = ()
    authority: Soa | None = None


# --- validation -------------------------------------------------------------------------------


def _kind(value: object) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(type(value), type(value).__name__)


def normalize_name(value: object, field: str) -> str:
    """``WWW.Lab.Test.`` -> ``www.lab.test``; raises ZoneError for anything else than a DNS name."""
    if not isinstance(value, str):
        raise ZoneError(field, f"expected a DNS name string, got {_kind(value)}")
    name = value[:-1] if value.endswith(".") else value
    name = name.lower()
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ZoneError(field, f"{json.dumps(value)} is not a valid DNS name ({_NAME_RULE})")
    return name


def _check_fields(raw: Mapping[str, Any], field: str, allowed: tuple[str, ...]) -> None:
    for key in raw:
        if key not in allowed:
            raise ZoneError(field or "body", f'unknown field "{key}" (allowed: {", ".join(allowed)})')
    for key in allowed:
        if key not in raw:
            raise ZoneError(f"{field}.{key}" if field else key, "missing")


def _value(rtype: str, value: object, field: str) -> str:
    if rtype == "CNAME":
        return normalize_name(value, field)
    family, version = ("IPv4", 4) if rtype == "A" else ("IPv6", 6)
    try:
        if not isinstance(value, str) or "%" in value:
            raise ValueError
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    if address is None or address.version != version:
        raise ZoneError(field, f"{json.dumps(value)} is not an {family} address (type {rtype})")
    return str(address)


def parse_rrset(name: str, raw: object, field: str = "", *, with_name: bool = False) -> RecordSet:
    """One record set from JSON. ``field`` prefixes error locations (``records[3]``)."""
    allowed = RECORD_FIELDS if with_name else ADMIN_FIELDS
    dot = f"{field}." if field else ""
    if not isinstance(raw, dict):
        raise ZoneError(field or "body", f"expected an object with {', '.join(allowed)}, got {_kind(raw)}")
    _check_fields(raw, field, allowed)
    if with_name:
        name = normalize_name(raw["name"], f"{dot}name")
    rtype = raw["type"]
    if not isinstance(rtype, str) or rtype.upper() not in SUPPORTED_TYPES:
        raise ZoneError(
            f"{dot}type", f"{json.dumps(rtype)} is not a supported type ({', '.join(SUPPORTED_TYPES)})"
        )
    rtype = rtype.upper()
    ttl = raw["ttl"]
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL:
        raise ZoneError(f"{dot}ttl", f"{json.dumps(ttl)} is not a valid TTL (integer 0-{MAX_TTL})")
    values = raw["values"]
    if not isinstance(values, list) or not values:
        raise ZoneError(f"{dot}values", f"expected a non-empty list, got {json.dumps(values)}")
    if rtype == "CNAME" and len(values) != 1:
        raise ZoneError(f"{dot}values", f"a CNAME record set takes exactly one value, got {len(values)}")
    parsed: list[str] = []
    for index, value in enumerate(values):
        canonical = _value(rtype, value, f"{dot}values[{index}]")
        if canonical in parsed:
            first = parsed.index(canonical)
            raise ZoneError(f"{dot}values[{index}]", f"{json.dumps(value)} repeats values[{first}]")
        parsed.append(canonical)
    return RecordSet(name, rtype, ttl, tuple(parsed))


def _apex(name: str) -> str:
    return ".".join(name.split(".")[-2:])


def _inside(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def _check_coexistence(records: Iterable[tuple[str, RecordSet]]) -> None:
    """No duplicate (name, type); a CNAME owns its name alone. Items are (location, set)."""
    seen: dict[tuple[str, str], str] = {}
    by_name: dict[str, list[tuple[str, RecordSet]]] = {}
    for where, rrset in records:
        key = (rrset.name, rrset.type)
        if key in seen:
            raise ZoneError(where, f"duplicate record set {rrset.name} {rrset.type} (first at {seen[key]})")
        seen[key] = where
        for other_where, other in by_name.get(rrset.name, []):
            if "CNAME" in (rrset.type, other.type):
                raise ZoneError(
                    where,
                    f"{rrset.name} {rrset.type} cannot coexist with {rrset.name} {other.type}"
                    f" ({other_where}): a CNAME must be the only record set at its name",
                )
        by_name.setdefault(rrset.name, []).append((where, rrset))


# --- the zone ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Zone:
    """Validated record sets (file order) and the zone apexes this server is authoritative for."""

    records: tuple[RecordSet, ...]
    zones: tuple[str, ...]
    explicit_zones: bool = False
    _index: dict[str, dict[str, RecordSet]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, dict[str, RecordSet]] = {}
        for rrset in self.records:
            index.setdefault(rrset.name, {})[rrset.type] = rrset
        object.__setattr__(self, "_index", index)

    def names(self) -> set[str]:
        return set(self._index)

    def at(self, name: str) -> tuple[RecordSet, ...]:
        """The record sets at ``name`` (any case, trailing dot optional)."""
        return tuple(self._index.get(_query_name(name), {}).values())

    def zone_of(self, name: str) -> str | None:
        """The longest lab zone containing ``name``, or None (-> REFUSED)."""
        inside = [z for z in self.zones if _inside(name, z)]
        return max(inside, key=len) if inside else None

    def lookup(self, qname: str, qtype: str) -> Answer:
        """Answer ``qtype`` (``A``, ``AAAA``, ``CNAME``, ``SOA``, ``ANY``, ``MX`` ...) for ``qname``."""
        name = _query_name(qname)
        apex = self.zone_of(name)
        if apex is None:
            return Answer("REFUSED")
        soa = Soa(apex)
        rrsets = self._index.get(name, {})
        if qtype == "SOA" and name == apex:
            return Answer("NOERROR", (ResourceRecord(apex, "SOA", soa.ttl, soa),))
        if not rrsets:
            exists = name == apex or any(other.endswith("." + name) for other in self._index)
            return Answer("NOERROR" if exists else "NXDOMAIN", (), soa)
        if qtype == "ANY":
            return Answer("NOERROR", tuple(rr for rrset in rrsets.values() for rr in _rrs(rrset)))
        if qtype in rrsets:
            return Answer("NOERROR", _rrs(rrsets[qtype]))
        if "CNAME" in rrsets:
            return self._follow_cname(rrsets["CNAME"], qtype)
        return Answer("NOERROR", (), soa)

    def _follow_cname(self, cname: RecordSet, qtype: str) -> Answer:
        answers = list(_rrs(cname))
        target = cname.values[0]
        for _ in range(MAX_CNAME_CHAIN):
            target_apex = self.zone_of(target)
            if target_apex is None:
                break  # outside the lab: the client's resolver would have to go on
            rrsets = self._index.get(target, {})
            if qtype in rrsets:
                answers += _rrs(rrsets[qtype])
            elif "CNAME" in rrsets:
                answers += _rrs(rrsets["CNAME"])
                target = rrsets["CNAME"].values[0]
                continue
            elif not rrsets and not any(other.endswith("." + target) for other in self._index):
                return Answer("NXDOMAIN", tuple(answers), Soa(target_apex))
            break
        return Answer("NOERROR", tuple(answers))

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"records": [rrset.as_json() for rrset in self.records]}
        if self.explicit_zones:
            doc["zones"] = list(self.zones)
        return doc


def _query_name(qname: str) -> str:
    return qname[:-1].lower() if qname.endswith(".") else qname.lower()


def _rrs(rrset: RecordSet) -> tuple[ResourceRecord, ...]:
    return tuple(ResourceRecord(rrset.name, rrset.type, rrset.ttl, value) for value in rrset.values)


def derive_zones(names: Iterable[str]) -> tuple[str, ...]:
    """Default zones: the last two labels of every name (``a.b.lab.test`` -> ``lab.test``)."""
    return tuple(sorted({_apex(name) for name in names}))


def parse_zone(doc: object, source: str | None = None) -> Zone:
    """Validate a decoded zone file; errors carry ``source`` (the file path)."""
    try:
        if not isinstance(doc, dict):
            raise ZoneError("zone file", f'expected a JSON object with a "records" list, got {_kind(doc)}')
        for key in doc:
            if key not in ("records", "zones"):
                raise ZoneError("zone file", f'unknown field "{key}" (allowed: records, zones)')
        if "records" not in doc:
            raise ZoneError("records", "missing (a list of record sets)")
        raw_records = doc["records"]
        if not isinstance(raw_records, list):
            raise ZoneError("records", f"expected a list, got {_kind(raw_records)}")
        records = [
            parse_rrset("", raw, f"records[{index}]", with_name=True) for index, raw in enumerate(raw_records)
        ]
        _check_coexistence((f"records[{index}]", rrset) for index, rrset in enumerate(records))
        explicit = "zones" in doc
        if explicit:
            raw_zones = doc["zones"]
            if not isinstance(raw_zones, list) or not raw_zones:
                raise ZoneError("zones", f"expected a non-empty list of DNS names, got {json.dumps(raw_zones)}")
            zones = tuple(normalize_name(z, f"zones[{index}]") for index, z in enumerate(raw_zones))
            for index, rrset in enumerate(records):
                if not any(_inside(rrset.name, zone) for zone in zones):
                    raise ZoneError(
                        f"records[{index}].name",
                        f'"{rrset.name}" is not inside the lab\'s zones ({", ".join(zones)})',
                    )
        else:
            zones = derive_zones(rrset.name for rrset in records)
        return Zone(tuple(records), zones, explicit)
    except ZoneError as exc:
        raise ZoneError(exc.field, exc.problem, source) from None


def parse_zone_text(text: str | bytes, source: str | None = None) -> Zone:
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # Recursion: nested too deeply
        raise ZoneError("zone file", f"not valid JSON ({exc})", source) from None
    return parse_zone(doc, source)


def load_zone_file(path: str | Path) -> Zone:
    """Read and validate a zone file; raises ZoneError (including for I/O problems)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ZoneError("zone file", f"cannot read it ({exc.strerror or exc})", str(path)) from None
    return parse_zone_text(data, str(path))


# --- runtime overrides (admin API) ------------------------------------------------------------


@dataclass(frozen=True)
class Overrides:
    """Admin API changes layered over the file: replaced record sets and deleted names.

    Immutable: ``put``/``delete`` return a new value, so a change that fails validation
    against the current file is simply not kept.
    """

    sets: Mapping[tuple[str, str], RecordSet] = field(default_factory=dict)
    deleted: frozenset[str] = frozenset()

    def put(self, rrset: RecordSet) -> Overrides:
        sets = dict(self.sets)
        sets[(rrset.name, rrset.type)] = rrset
        return Overrides(sets, self.deleted)

    def delete(self, name: str) -> Overrides:
        sets = {key: rrset for key, rrset in self.sets.items() if key[0] != name}
        return Overrides(sets, self.deleted | {name})

    def names(self) -> set[str]:
        return {name for name, _ in self.sets} | set(self.deleted)

    def apply(self, base: Zone) -> Zone:
        """The effective zone; raises ZoneError when an override clashes with ``base``."""
        out: list[RecordSet] = []
        placed: set[tuple[str, str]] = set()
        for rrset in base.records:
            key = (rrset.name, rrset.type)
            if key in self.sets:
                out.append(self.sets[key])
                placed.add(key)
            elif rrset.name not in self.deleted:
                out.append(rrset)
        out += [rrset for key, rrset in self.sets.items() if key not in placed]
        types: dict[str, list[str]] = {}
        for rrset in out:
            types.setdefault(rrset.name, []).append(rrset.type)
        for name, present in types.items():
            if "CNAME" in present and len(present) > 1:
                others = ", ".join(t for t in present if t != "CNAME")
                raise ZoneError(
                    "type",
                    f"{name} would have a CNAME and {others} record sets;"
                    " a CNAME must be the only record set at its name",
                )
        if base.explicit_zones:
            for rrset in self.sets.values():
                if not any(_inside(rrset.name, zone) for zone in base.zones):
                    raise ZoneError(
                        "name", f'"{rrset.name}" is not inside the lab\'s zones ({", ".join(base.zones)})'
                    )
            return Zone(tuple(out), base.zones, True)
        return Zone(tuple(out), derive_zones(base.names() | self.names()), False)
