"""`alb` target groups follow the ALB's node addresses (docs/decisions.md #30).

AWS registers the ALB itself as the target and tracks its addresses as the ALB scales or replaces
nodes; the customer never re-registers anything (NLB-ALBT23; the AWS blog's Lambda that used to
copy ALB IPs into an ip target group became unnecessary). The lab's ALB publishes its active node
addresses under its DNS name (`lab alb rotate` PUTs the new set), so the NLB resolves that name
through the VPC resolver once a second and moves each AZ's target (`alb-<az>`) to the address the
ALB now has in that AZ. The target keeps its id and health state (AWS shows the ALB as one
target whatever its node addresses); open flows keep the address they started with until the ALB
retires the old node. ``retarget`` is pure; ``resolve_a`` is the only I/O (one UDP query).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from typing import Callable, Sequence

from dnslib import QTYPE, DNSRecord

from .config import NlbConfig, TargetGroup

log = logging.getLogger("nlb.alb")


def retarget(tg: TargetGroup, addresses: Sequence[str]) -> TargetGroup:
    """`tg` with each AZ's target moved to the first of `addresses` inside that AZ's subnet; AZs
    without such an address keep their target. Returns `tg` itself when nothing moves."""
    assert tg.alb is not None
    by_az: dict[str, str] = {}
    for address in addresses:
        ip = ipaddress.IPv4Address(address)
        for az, subnet in tg.alb.subnets:
            if ip in subnet:
                by_az.setdefault(az, address)
    moved = tuple(dataclasses.replace(t, ip=by_az[t.az]) if t.az in by_az and by_az[t.az] != t.ip else t
                  for t in tg.targets)
    if moved == tg.targets:
        return tg
    return dataclasses.replace(tg, targets=moved)


class _Answer(asyncio.DatagramProtocol):
    def __init__(self, done: asyncio.Future[bytes]) -> None:
        self.done = done

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def resolve_a(server: tuple[str, int], name: str, timeout: float = 2.0) -> list[str]:
    """A records of `name` from the DNS server at `server` (one UDP query, no cache).
    Raises OSError / TimeoutError, or ValueError on an unusable answer."""
    loop = asyncio.get_running_loop()
    query = DNSRecord.question(name, "A")
    done: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Answer(done), remote_addr=server)
    try:
        transport.sendto(query.pack())
        async with asyncio.timeout(timeout):
            data = await done
    finally:
        transport.close()
    try:
        reply = DNSRecord.parse(data)
    except Exception as exc:  # dnslib raises assorted types on garbage
        raise ValueError(f"unparsable DNS answer: {exc}") from None
    if reply.header.id != query.header.id:
        raise ValueError("DNS answer for another query")
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


async def run_alb_tracker(cfg_of: Callable[[], NlbConfig], apply: Callable[[TargetGroup], None],
                          interval: float = 1.0) -> None:
    """Every `interval`: re-resolve each `alb` target group's ALB name; `apply` a moved group."""
    while True:
        for tg in cfg_of().target_groups:
            if tg.alb is None:
                continue
            try:
                addresses = await resolve_a(tg.alb.resolver, tg.alb.dns_name)
            except (OSError, TimeoutError, ValueError) as exc:
                log.warning("%s: cannot resolve %s: %s (keeping %s)", tg.name, tg.alb.dns_name, exc,
                            ", ".join(t.ip for t in tg.targets))
                continue
            tg = cfg_of().target_group(tg.name)  # the config may have changed while resolving
            moved = retarget(tg, addresses)
            if moved is not tg:
                for old, new in zip(tg.targets, moved.targets):
                    if old.ip != new.ip:
                        log.info("%s %s: the ALB's node in AZ %s moved %s -> %s", tg.name, old.id, old.az,
                                 old.ip, new.ip)
                apply(moved)
        await asyncio.sleep(interval)
