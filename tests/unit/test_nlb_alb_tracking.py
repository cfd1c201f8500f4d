"""`alb` target groups follow the ALB's node addresses (albtrack): the pure retargeting as a table,
then an in-process NLB that resolves the ALB's name from the lab DNS server and moves its flows
and health checks to the new address when the record changes (what `lab alb rotate` does)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
from pathlib import Path

import httpx
import pytest

from services.dns.server import DnsConfig, DnsServer
from services.nlb_sim.albtrack import retarget
from services.nlb_sim.config import AlbTracking, load_config
from tests.unit.test_nlb_relay import (echo, flow_lines, hc, nlb_config, run, running, target_group, tcp_listener,
                                       wait_healthy, wait_until)

SUBNETS = (("a", ipaddress.IPv4Network("10.20.1.0/24")), ("b", ipaddress.IPv4Network("10.20.2.0/24")))


def alb_group(ips: dict[str, str]):
    raw = target_group("alb-https", [(f"alb-{az}", 443, az) for az in ips], health=hc("HTTP"))
    raw["target_type"] = "alb"
    for t in raw["targets"]:
        t["ip"] = ips[t["az"]]
    cfg = load_config(nlb_config(Path("/tmp"), [tcp_listener("alb-https")], [raw], two_nodes=True))
    return dataclasses.replace(cfg.target_groups[0], alb=AlbTracking("alb.lab.internal", ("10.20.0.2", 53), SUBNETS))


@pytest.mark.parametrize("answer, expected", [
    (["10.20.1.30", "10.20.2.30"], {"alb-a": "10.20.1.30", "alb-b": "10.20.2.30"}),  # unchanged
    (["10.20.2.31", "10.20.1.31"], {"alb-a": "10.20.1.31", "alb-b": "10.20.2.31"}),  # rotated, any order
    (["10.20.1.31"], {"alb-a": "10.20.1.31", "alb-b": "10.20.2.30"}),                # AZ b missing: kept
    (["10.20.1.31", "10.20.1.32"], {"alb-a": "10.20.1.31", "alb-b": "10.20.2.30"}),  # first per AZ
    (["10.99.0.1"], {"alb-a": "10.20.1.30", "alb-b": "10.20.2.30"}),                 # outside every subnet
    ([], {"alb-a": "10.20.1.30", "alb-b": "10.20.2.30"}),
])
def test_retarget(answer: list[str], expected: dict[str, str]) -> None:
    tg = alb_group({"a": "10.20.1.30", "b": "10.20.2.30"})
    moved = retarget(tg, answer)
    assert {t.id: t.ip for t in moved.targets} == expected
    assert (moved is tg) == (expected == {"alb-a": "10.20.1.30", "alb-b": "10.20.2.30"})
    assert [t.id for t in moved.targets] == ["alb-a", "alb-b"] and moved.alb == tg.alb


async def alb_node(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """A stand-in ALB node: answers the NLB's HTTP health checks (alb target groups allow no TCP
    checks, NLB-ALBT23) with 200 and echoes every other flow."""
    first = await r.read(65536)
    if first.startswith(b"GET "):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await w.drain()
        w.close()
        return
    w.write(first)
    await echo(r, w)


def test_nlb_follows_the_alb_record_in_dns(tmp_path: Path) -> None:
    """Two loopback "ALB node" addresses in one AZ; the DNS record moves from the first to the second."""
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps({"records": [{"name": "alb.lab.internal", "type": "A", "ttl": 5,
                                            "values": ["127.0.1.1"]}]}))

    async def main() -> None:
        dns = DnsServer(DnsConfig(zone, (("127.0.0.1", 0),), admin=("127.0.0.1", 0), poll_interval=0.05),
                        lambda line: None)
        await dns.start()
        serving = asyncio.ensure_future(dns.serve_forever())
        old_node = await asyncio.start_server(alb_node, "127.0.1.1", 0)
        port = old_node.sockets[0].getsockname()[1]
        new_node = await asyncio.start_server(alb_node, "127.0.1.2", port)
        try:
            raw = target_group("alb-https", [("alb-a", port, "a")], health=hc("HTTP"))
            raw["target_type"] = "alb"
            raw["targets"][0]["ip"] = "127.0.1.1"
            raw["alb"] = {"dns_name": "alb.lab.internal", "resolver": f"127.0.0.1:{dns.addresses[0][1]}",
                          "subnets": {"a": "127.0.1.0/24"}}
            cfg = nlb_config(tmp_path, [tcp_listener("alb-https")], [raw])
            async with running(cfg) as app:
                await wait_healthy(app, "alb-https", ["alb-a"])

                async def one_flow(payload: bytes) -> None:
                    r, w = await asyncio.open_connection("127.0.0.1", cfg["listeners"][0]["port"])
                    w.write(payload)
                    assert await r.readexactly(len(payload)) == payload
                    w.close()
                await one_flow(b"before")
                held_r, held_w = await asyncio.open_connection("127.0.0.1", cfg["listeners"][0]["port"])
                held_w.write(b"held")
                assert await held_r.readexactly(4) == b"held"
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{dns.admin_address[1]}") as http:
                    put = await http.put("/records/alb.lab.internal",
                                         json={"type": "A", "ttl": 5, "values": ["127.0.1.2"]})
                    assert put.status_code == 200, put.text
                await wait_until(lambda: app.cfg.target_group("alb-https").targets[0].ip == "127.0.1.2",
                                 "the alb target to follow DNS", timeout=5)
                await one_flow(b"after")
                opened = [x for x in flow_lines(cfg) if x["event"] == "open"]
                assert [x["target"] for x in opened] == ["alb-a"] * 3
                assert opened[0]["target_addr"].startswith("127.0.1.1:")  # before the move
                assert opened[-1]["target_addr"].startswith("127.0.1.2:")  # after it
                # The flow opened before the move still talks to the old node.
                held_w.write(b"still")
                assert await held_r.readexactly(5) == b"still"
                held_w.close()
                # Same target id and health; checks now go to the new address.
                doc = app.registry.describe("alb-https")["TargetHealthDescriptions"]
                assert [(d["Target"]["Id"], d["TargetHealth"]["State"]) for d in doc] == [("alb-a", "healthy")]
        finally:
            old_node.close()
            new_node.close()
            serving.cancel()
            await dns.close()
    run(main())
