"""Lab DNS zone data: validation messages, lookups, overrides. Pure: no sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.dns.zone import (
    Answer,
    Overrides,
    RecordSet,
    ResourceRecord,
    Soa,
    Zone,
    ZoneError,
    load_zone_file,
    normalize_name,
    parse_rrset,
    parse_zone,
    parse_zone_text,
)

WWW = {"name": "www.lab.test", "type": "A", "ttl": 60, "values": ["198.51.100.10", "198.51.100.11"]}
DOC: dict[str, Any] = {
    "records": [
        WWW,
        {"name": "Api.Lab.Test.", "type": "aaaa", "ttl": 300, "values": ["2001:DB8:0:0::1"]},
        {"name": "alias.lab.test", "type": "CNAME", "ttl": 30, "values": ["WWW.lab.test."]},
        {"name": "chain.lab.test", "type": "CNAME", "ttl": 30, "values": ["alias.lab.test"]},
        {"name": "dangling.lab.test", "type": "CNAME", "ttl": 30, "values": ["gone.lab.test"]},
        {"name": "outside.lab.test", "type": "CNAME", "ttl": 30, "values": ["nlb.example.com"]},
        {"name": "web.deep.internal.test", "type": "A", "ttl": 5, "values": ["10.20.1.41"]},
    ]
}
SOA_LAB = Soa("lab.test")


@pytest.fixture(scope="module")
def zone() -> Zone:
    return parse_zone(DOC, "zone.json")


def a_records(name: str, *values: str, ttl: int = 60) -> tuple[ResourceRecord, ...]:
    return tuple(ResourceRecord(name, "A", ttl, v) for v in values)


# --- loading and validation -------------------------------------------------------------------


def test_parse_normalizes_names_types_and_addresses(zone: Zone) -> None:
    assert zone.records[1] == RecordSet("api.lab.test", "AAAA", 300, ("2001:db8::1",))
    assert zone.records[2] == RecordSet("alias.lab.test", "CNAME", 30, ("www.lab.test",))
    assert zone.zones == ("internal.test", "lab.test")
    assert [r.name for r in zone.records][:3] == ["www.lab.test", "api.lab.test", "alias.lab.test"]


def test_as_json_round_trips(zone: Zone) -> None:
    assert parse_zone(zone.as_json()) == zone
    explicit = parse_zone({"zones": ["lab.test"], "records": [WWW]})
    assert explicit.as_json() == {"records": [WWW], "zones": ["lab.test"]}


def record(**changes: Any) -> dict[str, Any]:
    raw = dict(WWW)
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not ...}


NAME_RULE = "(labels of 1-63 letters, digits, '-' or '_', at most 253 characters)"
TTL_RULE = "is not a valid TTL (integer 0-2147483647)"


def one(**changes: Any) -> dict[str, Any]:
    return {"records": [record(**changes)]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], 'zone file: expected a JSON object with a "records" list, got list'),
        ({}, "records: missing (a list of record sets)"),
        ({"records": {}}, "records: expected a list, got object"),
        ({"records": [], "recrods": []}, 'zone file: unknown field "recrods" (allowed: records, zones)'),
        ({"records": ["www"]}, "records[0]: expected an object with name, type, ttl, values, got string"),
        (one(tll=5), 'records[0]: unknown field "tll" (allowed: name, type, ttl, values)'),
        (one(ttl=...), "records[0].ttl: missing"),
        (one(name=5), "records[0].name: expected a DNS name string, got int"),
        (
            {"records": [WWW, record(name="bad name.lab.test")]},
            f'records[1].name: "bad name.lab.test" is not a valid DNS name {NAME_RULE}',
        ),
        (one(name="a..b"), f'records[0].name: "a..b" is not a valid DNS name {NAME_RULE}'),
        (one(name=""), f'records[0].name: "" is not a valid DNS name {NAME_RULE}'),
        (one(type="MX"), 'records[0].type: "MX" is not a supported type (A, AAAA, CNAME)'),
        (one(ttl=-1), f"records[0].ttl: -1 {TTL_RULE}"),
        (one(ttl="60"), f'records[0].ttl: "60" {TTL_RULE}'),
        (one(ttl=True), f"records[0].ttl: true {TTL_RULE}"),
        (one(values=[]), "records[0].values: expected a non-empty list, got []"),
        (one(values="1.2.3.4"), 'records[0].values: expected a non-empty list, got "1.2.3.4"'),
        (
            one(values=["198.51.100.10", "300.1.1.1"]),
            'records[0].values[1]: "300.1.1.1" is not an IPv4 address (type A)',
        ),
        (one(values=["2001:db8::1"]), 'records[0].values[0]: "2001:db8::1" is not an IPv4 address (type A)'),
        (one(values=["010.1.1.1"]), 'records[0].values[0]: "010.1.1.1" is not an IPv4 address (type A)'),
        (
            one(type="AAAA", values=["10.0.0.1"]),
            'records[0].values[0]: "10.0.0.1" is not an IPv6 address (type AAAA)',
        ),
        (
            one(type="AAAA", values=["fe80::1%eth0"]),
            'records[0].values[0]: "fe80::1%eth0" is not an IPv6 address (type AAAA)',
        ),
        (one(values=["10.0.0.1", "10.0.0.1"]), 'records[0].values[1]: "10.0.0.1" repeats values[0]'),
        (
            one(type="CNAME", values=["a.lab.test", "b.lab.test"]),
            "records[0].values: a CNAME record set takes exactly one value, got 2",
        ),
        (
            one(type="CNAME", values=["not a name"]),
            f'records[0].values[0]: "not a name" is not a valid DNS name {NAME_RULE}',
        ),
        (
            {"records": [WWW, record(name="WWW.LAB.TEST.", values=["10.0.0.1"])]},
            "records[1]: duplicate record set www.lab.test A (first at records[0])",
        ),
        (
            {"records": [WWW, record(type="CNAME", values=["x.lab.test"])]},
            "records[1]: www.lab.test CNAME cannot coexist with www.lab.test A (records[0]):"
            " a CNAME must be the only record set at its name",
        ),
        ({"zones": "lab.test", "records": []}, 'zones: expected a non-empty list of DNS names, got "lab.test"'),
        (
            {"zones": ["lab.test"], "records": [WWW, record(name="www.other.test")]},
            "records[1].name: \"www.other.test\" is not inside the lab's zones (lab.test)",
        ),
    ],
)
def test_validation_errors(doc: Any, message: str) -> None:
    """Every message names the field, the offending value and what is allowed, then the file."""
    with pytest.raises(ZoneError) as info:
        parse_zone(doc, "zone.json")
    assert str(info.value) == f"{message} in zone.json"


def test_invalid_json_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ZoneError) as info:
        parse_zone_text('{"records": [', "zone.json")
    assert str(info.value).startswith("zone file: not valid JSON (Expecting value: line 1 column 14")
    assert str(info.value).endswith(" in zone.json")
    with pytest.raises(ZoneError, match="^zone file: not valid JSON"):
        parse_zone_text("[" * 5000 + "]" * 5000, "zone.json")  # deeper than json's recursion limit
    missing = tmp_path / "missing.json"
    with pytest.raises(ZoneError) as info:
        load_zone_file(missing)
    assert str(info.value) == f"zone file: cannot read it (No such file or directory) in {missing}"


def test_load_zone_file(tmp_path: Path) -> None:
    path = tmp_path / "zone.json"
    path.write_text('{"records": [{"name": "www.lab.test.", "type": "A", "ttl": 60, "values": ["198.51.100.10"]}]}')
    assert load_zone_file(path).records == (RecordSet("www.lab.test", "A", 60, ("198.51.100.10",)),)


def test_admin_body_is_validated_with_relative_fields() -> None:
    assert parse_rrset("x.lab.test", {"type": "A", "ttl": 0, "values": ["10.0.0.1"]}) == RecordSet(
        "x.lab.test", "A", 0, ("10.0.0.1",)
    )
    for raw, message in [
        ([], "body: expected an object with type, ttl, values, got list"),
        ({"type": "A", "ttl": 1}, "values: missing"),
        (
            {"type": "A", "ttl": 1, "values": ["1.1.1.1"], "name": "x"},
            'body: unknown field "name" (allowed: type, ttl, values)',
        ),
        ({"type": "TXT", "ttl": 1, "values": ["x"]}, 'type: "TXT" is not a supported type (A, AAAA, CNAME)'),
        ({"type": "A", "ttl": 1, "values": ["1.1.1.1", "nope"]}, 'values[1]: "nope" is not an IPv4 address (type A)'),
    ]:
        with pytest.raises(ZoneError) as info:
            parse_rrset("x.lab.test", raw)
        assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "expected"), [("WWW.Lab.Test.", "www.lab.test"), ("_srv.lab.test", "_srv.lab.test"), ("a-b.c", "a-b.c")]
)
def test_normalize_name(text: str, expected: str) -> None:
    assert normalize_name(text, "name") == expected


@pytest.mark.parametrize(
    "text", ["-a.lab.test", "a-.lab.test", "a" * 64 + ".test", ".", "a b", "*.lab.test", "é.test"]
)
def test_normalize_name_rejects(text: str) -> None:
    with pytest.raises(ZoneError):
        normalize_name(text, "name")


# --- lookups ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qname", "qtype", "expected"),
    [
        ("www.lab.test", "A", Answer("NOERROR", a_records("www.lab.test", "198.51.100.10", "198.51.100.11"))),
        ("WWW.LAB.TEST.", "A", Answer("NOERROR", a_records("www.lab.test", "198.51.100.10", "198.51.100.11"))),
        ("api.lab.test", "AAAA", Answer("NOERROR", (ResourceRecord("api.lab.test", "AAAA", 300, "2001:db8::1"),))),
        ("www.lab.test", "AAAA", Answer("NOERROR", (), SOA_LAB)),
        ("www.lab.test", "MX", Answer("NOERROR", (), SOA_LAB)),
        ("nothing.lab.test", "A", Answer("NXDOMAIN", (), SOA_LAB)),
        ("x.www.lab.test", "A", Answer("NXDOMAIN", (), SOA_LAB)),
        ("lab.test", "A", Answer("NOERROR", (), SOA_LAB)),
        ("lab.test", "SOA", Answer("NOERROR", (ResourceRecord("lab.test", "SOA", 5, SOA_LAB),))),
        ("deep.internal.test", "A", Answer("NOERROR", (), Soa("internal.test"))),
        ("web.deep.internal.test", "A", Answer("NOERROR", a_records("web.deep.internal.test", "10.20.1.41", ttl=5))),
        ("example.com", "A", Answer("REFUSED")),
        ("test", "A", Answer("REFUSED")),
        ("www.lab.test.evil.com", "A", Answer("REFUSED")),
        ("notlab.test", "A", Answer("REFUSED")),
    ],
)
def test_lookup(zone: Zone, qname: str, qtype: str, expected: Answer) -> None:
    assert zone.lookup(qname, qtype) == expected


def test_cname_is_followed_inside_the_lab(zone: Zone) -> None:
    www = a_records("www.lab.test", "198.51.100.10", "198.51.100.11")
    alias = ResourceRecord("alias.lab.test", "CNAME", 30, "www.lab.test")
    chain = ResourceRecord("chain.lab.test", "CNAME", 30, "alias.lab.test")
    assert zone.lookup("alias.lab.test", "A") == Answer("NOERROR", (alias, *www))
    assert zone.lookup("chain.lab.test", "A") == Answer("NOERROR", (chain, alias, *www))
    assert zone.lookup("alias.lab.test", "CNAME") == Answer("NOERROR", (alias,))
    assert zone.lookup("alias.lab.test", "AAAA") == Answer("NOERROR", (alias,))
    dangling = ResourceRecord("dangling.lab.test", "CNAME", 30, "gone.lab.test")
    assert zone.lookup("dangling.lab.test", "A") == Answer("NXDOMAIN", (dangling,), SOA_LAB)
    outside = ResourceRecord("outside.lab.test", "CNAME", 30, "nlb.example.com")
    assert zone.lookup("outside.lab.test", "A") == Answer("NOERROR", (outside,))


def test_cname_loop_stops() -> None:
    looped = parse_zone({"records": [
        {"name": "a.lab.test", "type": "CNAME", "ttl": 1, "values": ["b.lab.test"]},
        {"name": "b.lab.test", "type": "CNAME", "ttl": 1, "values": ["a.lab.test"]},
    ]})
    answer = looped.lookup("a.lab.test", "A")
    assert answer.rcode == "NOERROR"
    assert len(answer.answers) == 9  # the first CNAME plus MAX_CNAME_CHAIN more


def test_any_returns_every_set_at_the_name(zone: Zone) -> None:
    assert zone.lookup("www.lab.test", "ANY").answers == a_records("www.lab.test", "198.51.100.10", "198.51.100.11")


def test_explicit_zones_widen_nxdomain() -> None:
    explicit = parse_zone({"zones": ["test"], "records": [WWW]})
    assert explicit.lookup("anything.other.test", "A") == Answer("NXDOMAIN", (), Soa("test"))
    assert explicit.lookup("example.com", "A") == Answer("REFUSED")


# --- overrides --------------------------------------------------------------------------------


def test_overrides_replace_in_place_append_and_delete(zone: Zone) -> None:
    new_www = RecordSet("www.lab.test", "A", 10, ("10.0.0.9",))
    extra = RecordSet("new.lab.test", "AAAA", 10, ("2001:db8::9",))
    elsewhere = RecordSet("svc.other.test", "A", 10, ("10.0.0.8",))
    effective = Overrides().put(new_www).put(extra).put(elsewhere).apply(zone)
    assert effective.records[0] == new_www
    assert effective.records[-2:] == (extra, elsewhere)
    assert effective.lookup("svc.other.test", "A").answers == a_records("svc.other.test", "10.0.0.8", ttl=10)

    deleted = Overrides().delete("www.lab.test").apply(zone)
    assert deleted.lookup("www.lab.test", "A") == Answer("NXDOMAIN", (), SOA_LAB)
    assert deleted.lookup("alias.lab.test", "A").rcode == "NXDOMAIN"  # CNAME now dangles

    readded = Overrides().delete("www.lab.test").put(new_www).apply(zone)
    assert readded.lookup("www.lab.test", "A").answers == a_records("www.lab.test", "10.0.0.9", ttl=10)


def test_delete_everything_keeps_zone_authoritative() -> None:
    only = parse_zone({"records": [WWW]})
    empty = Overrides().delete("www.lab.test").apply(only)
    assert empty.records == ()
    assert empty.lookup("www.lab.test", "A") == Answer("NXDOMAIN", (), SOA_LAB)


def test_override_conflicts_are_reported_on_type(zone: Zone) -> None:
    with pytest.raises(ZoneError) as info:
        Overrides().put(RecordSet("www.lab.test", "CNAME", 1, ("api.lab.test",))).apply(zone)
    assert str(info.value) == (
        "type: www.lab.test would have a CNAME and A record sets; a CNAME must be the only record set at its name"
    )
    explicit = parse_zone({"zones": ["lab.test"], "records": [WWW]})
    with pytest.raises(ZoneError) as info:
        Overrides().put(RecordSet("x.other.test", "A", 1, ("10.0.0.1",))).apply(explicit)
    assert str(info.value) == "name: \"x.other.test\" is not inside the lab's zones (lab.test)"
