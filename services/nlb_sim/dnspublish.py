"""DNS: which Elastic IPs the NLB's names should resolve to, and publishing them to the lab DNS.

AWS (NLB-HC23, NLB-INTRO23): if a target group has no healthy target in an enabled AZ, that AZ's
address is removed from DNS; if every AZ is unhealthy at once, DNS fails open (all addresses).
``healthy_azs`` is pure; ``put_record`` is the only I/O (one HTTP PUT to the DNS admin API).
How several target groups combine is the lab's choice (docs/decisions.md #22): an AZ stays in DNS
while EVERY target group a listener forwards to has a healthy target that AZ's node may use.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable
from urllib.parse import urlsplit

from .config import NlbConfig, Node

log = logging.getLogger("nlb.dns")


def az_is_healthy(cfg: NlbConfig, node: Node, healthy: Callable[[str, str, str], bool]) -> bool:
    """``healthy(node name, tg name, target id)`` is the node's own view of a target."""
    for tg_name in {x.target_group for x in cfg.listeners}:
        tg = cfg.target_group(tg_name)
        pool = tg.targets if cfg.cross_zone_for(tg) else [t for t in tg.targets if t.az == node.az]
        if not any(healthy(node.name, tg.name, t.id) for t in pool):
            return False
    return True


def published_addresses(cfg: NlbConfig, healthy: Callable[[str, str, str], bool]) -> list[str]:
    """Elastic IPs of the healthy AZs, in node order; all of them when none is healthy."""
    up = [n.elastic_ip for n in cfg.nodes if az_is_healthy(cfg, n, healthy)]
    return up or [n.elastic_ip for n in cfg.nodes]


async def put_record(admin_url: str, name: str, ttl: int, values: list[str],
                     timeout: float = 3.0) -> None:
    """PUT /records/<name> {"type": "A", "ttl", "values"}; raises OSError/TimeoutError/ValueError."""
    parts = urlsplit(admin_url)
    body = json.dumps({"type": "A", "ttl": ttl, "values": values}).encode()
    request = (f"PUT /records/{name} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               "Content-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        try:
            writer.write(request)
            status_line = await reader.readline()
        finally:
            writer.close()
    fields = status_line.split()
    if len(fields) < 2 or fields[1] != b"200":
        raise ValueError(f"DNS admin answered {status_line.strip()[:80]!r}")


async def run_publisher(cfg_of: Callable[[], NlbConfig],
                        healthy: Callable[[str, str, str], bool], interval: float = 1.0) -> None:
    """Every ``interval``: publish the healthy AZs' addresses when they differ from the last put."""
    last: list[str] | None = None
    while True:
        cfg = cfg_of()
        if cfg.dns is not None:
            want = published_addresses(cfg, healthy)
            if want != last:
                try:
                    for name in cfg.dns.names:
                        await put_record(cfg.dns.admin_url, name, cfg.dns.ttl, want)
                except (OSError, TimeoutError, ValueError) as exc:
                    log.warning("cannot publish %s to %s: %s (retrying)", want, cfg.dns.admin_url, exc)
                else:
                    log.info("DNS %s -> %s", ", ".join(cfg.dns.names), ", ".join(want))
                    last = want
        await asyncio.sleep(interval)
