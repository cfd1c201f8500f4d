"""The ALB simulator's own work per relayed request, without any I/O: for comparing code changes.

    .venv/bin/python bench/alb_path.py [--requests 100000] [--rounds 5]

bench/alb.py is the benchmark of record (real sockets, TLS, HAProxy in the same run), but on these
VMs its figures move by +-10 % between runs, more than most single changes save. This drives the
simulator's own ClientConnection and UpstreamConnection through fake transports instead: the same
keep-alive request and target response as bench/alb.py's, on one pooled target connection, with
the access log written (flushed every 16 requests, as the event loop would) and every behaviour on.
The same is done for bench/alb.py's `--floor` relay (the bare uvloop + httptools relay, no ALB
behaviour). Neither includes TLS, syscalls or the event loop, so the figures are only the Python
side of a request; their difference is what the ALB's behaviours cost. Runs in one process on
whichever build of the simulator loads (compiled if `lab compile` is current, else the source).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import trustme
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.alb import FLOOR, alb_config  # noqa: E402
from services import native  # noqa: E402
from services.alb_sim.app import AlbSimulator  # noqa: E402
from services.alb_sim.config import load_config  # noqa: E402
from services.alb_sim.server import ClientConnection  # noqa: E402
from services.alb_sim.upstream import UpstreamConnection  # noqa: E402
from tests.ports import free_ports  # noqa: E402

REQUEST = b"GET /api/bench HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n\r\n"  # what wrk sends
BODY = b'{"ok":true,"service":"bench"}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


class FakeTransport:
    """Counts what would have been sent."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def writelines(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


def timed(one_request: Callable[[int], None], requests: int, rounds: int, sent: Callable[[], int]) -> float:
    """Median microseconds per request over `rounds` rounds; checks every request got its response."""
    results = []
    for _ in range(rounds):
        before = sent()
        start = time.perf_counter()
        for i in range(requests):
            one_request(i)
        results.append((time.perf_counter() - start) / requests * 1e6)
        if sent() - before != requests:
            raise SystemExit(f"bench: {sent() - before} responses for {requests} requests: the path under test broke")
    return statistics.median(results)


class HealthyTarget(asyncio.Protocol):
    """Answers the simulator's health checks (the relayed requests never reach it)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # type: ignore[attr-defined]


async def simulator_path(requests: int, rounds: int) -> float:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="alb-path-") as tmp:
        pem = Path(tmp) / "www.pem"
        ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        ca.issue_cert("www.lab.test", key_type=trustme.KeyType.ECDSA).private_key_and_cert_chain_pem.write_to_path(
            str(pem))
        target = await loop.create_server(HealthyTarget, "127.0.0.1", 0)
        target_port = target.sockets[0].getsockname()[1]
        config = load_config(alb_config(pem, *free_ports(2), target_port, Path(tmp) / "logs"))
        sim = AlbSimulator(config, announce=lambda line: None)
        task = loop.create_task(sim.run())
        await sim.ready.wait()
        try:
            lr = sim.alb.runtimes[0]
            client_transport, target_transport = FakeTransport(), FakeTransport()
            client = ClientConnection(lr)
            client.connection_made(client_transport)
            upstream = UpstreamConnection(lr.state.pool, ("127.0.0.1", target_port, False))
            upstream.connection_made(target_transport)
            lr.state.pool.release(upstream)

            def one(i: int) -> None:
                client.data_received(REQUEST)
                upstream.data_received(RESPONSE)
                if i % 16 == 15:
                    lr.log.flush()

            return timed(one, requests, rounds, lambda: client_transport.writes)
        finally:
            task.cancel()
            target.close()


async def floor_path(requests: int, rounds: int) -> float:
    # FLOOR is a script for `python -c`; run its definitions, not its main(), with a stand-in for
    # the target connection its Client opens.
    argv, sys.argv = sys.argv, ["floor", "-", "0", "0"]
    namespace: dict[str, Any] = {"__name__": "floor"}
    try:
        exec(FLOOR.replace("uvloop.run(main())", ""), namespace)
    finally:
        sys.argv = argv
    loop = asyncio.get_running_loop()
    real_connect = loop.create_connection
    loop.create_connection = lambda *a, **k: asyncio.sleep(0)  # type: ignore[method-assign,assignment]
    try:
        client_transport, target_transport = FakeTransport(), FakeTransport()
        client = namespace["Client"]()
        client.connection_made(client_transport)
        upstream = namespace["Upstream"](client)
        upstream.connection_made(target_transport)
    finally:
        loop.create_connection = real_connect  # type: ignore[method-assign]

    def one(i: int) -> None:
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)

    return timed(one, requests, rounds, lambda: client_transport.writes)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=100_000, help="requests per round (default 100000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the median is printed (default 5)")
    args = ap.parse_args()
    if args.requests < 16 or args.rounds < 1:
        ap.error("--requests must be at least 16 and --rounds at least 1")
    print(f"bench: ALB simulator runs its {native.state()}", flush=True)
    alb = await simulator_path(args.requests, args.rounds)
    floor = await floor_path(args.requests, args.rounds)
    print(f"alb   {alb:6.2f} us per request (Python side, no I/O)")
    print(f"floor {floor:6.2f} us per request (bench/alb.py --floor relay, interpreted)")
    print(f"RESULT alb_path own_us={alb - floor:.2f} alb_us={alb:.2f} floor_us={floor:.2f}")


if __name__ == "__main__":
    uvloop.run(main())
