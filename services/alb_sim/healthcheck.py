"""Active health checks: one loop per target, run under the simulator's TaskGroup.

`GET <path>` with `User-Agent: ELB-HealthChecker/2.0` and `Host: <target ip>:<port>` over HTTP or
HTTPS (no certificate verification), first check at start, then every interval; each check has
the group's timeout. Not access-logged. One checker per process (shared by the ALB's nodes); each
check connects from an active node's address, as AWS's nodes check from their own (decisions.md #55).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Callable

from .config import Target
from .health import HEALTHY, CheckResult, TargetHealth
from .runtime import TargetGroupRuntime, log_event
from .upstream import client_tls_context

USER_AGENT = "ELB-HealthChecker/2.0"


async def check_once(ip: str, port: int, *, tls: ssl.SSLContext | None, path: str, timeout: float,
                     matcher_matches: Callable[[int], bool], source: str | None = None) -> CheckResult:
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(ip, port, ssl=tls, server_hostname="" if tls else None,
                                                           local_addr=(source, 0) if source else None)
            host = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
            writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
                          "Accept: */*\r\nConnection: close\r\n\r\n").encode("latin-1"))
            await writer.drain()
            status_line = await reader.readline()
    except TimeoutError:
        return CheckResult.timeout()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError):  # ValueError: a line over 64 KiB
        return CheckResult.failed()
    finally:
        if writer is not None:
            writer.transport.abort()
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return CheckResult.failed()
    code = int(parts[1])
    return CheckResult.passed() if matcher_matches(code) else CheckResult.code_mismatch(code)


async def run_target_checks(group: TargetGroupRuntime, target: Target, health: TargetHealth) -> None:
    hc = group.tg.health_check
    tls = client_tls_context() if hc.protocol == "HTTPS" else None
    port = group.health_port(target)
    while True:
        result = await check_once(target.ip, port, tls=tls, path=hc.path, timeout=hc.timeout_seconds,
                                  matcher_matches=group.matcher.matches, source=group.check_source())
        before = health.state
        after = health.record(result)
        if after == HEALTHY and before != HEALTHY:
            group.became_healthy(health)
        if after != before:
            log_event("target_health", target_group=group.tg.name, target=f"{target.ip}:{target.port}",
                      id=target.id, state=after, previous=before, reason=health.reason)
        await asyncio.sleep(hc.interval_seconds)


def start_health_checks(tg: asyncio.TaskGroup, groups: dict[str, TargetGroupRuntime],
                        source: Callable[[], str | None] = lambda: None) -> None:
    """Checkers for every registered target; targets registered later get theirs via `spawn`.
    `source()` is the address each check connects from (an active node's)."""

    def spawn(coro, name: str) -> "asyncio.Task[None]":
        return tg.create_task(coro, name=name)

    for group in groups.values():
        group.spawn = spawn
        group.checker = run_target_checks
        group.check_source = source
        for member in group.members:
            group.start_checks(member)
