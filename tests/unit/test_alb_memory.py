"""The ALB's request path keeps nothing once a request is done, in whichever build runs (the
compiled one under `make test`).

mypyc 1.13, which built the modules until 2026-12-01, leaked the left operand of every compiled
`bytes + bytes` (mypyc issue 1192: the primitive is declared to steal it and does not; fixed in
the mypy 2.4 the build now uses, decisions.md #61, #64). The simulator grew by about 170 bytes per
relayed request, 170 MB per million. The compiled modules still do not concatenate bytes with `+`,
and a compiler bug of the same kind would show here: this test drives requests of each kind through the real
ClientConnection and UpstreamConnection (fake transports, as bench/alb_path.py does) and measures
what stays allocated per request.
"""

from __future__ import annotations

import asyncio
import tempfile
import tracemalloc
from pathlib import Path
from typing import Callable

import pytest
import trustme
import uvloop

from bench.alb import alb_config
from bench.alb_path import REQUEST, RESPONSE, FakeTransport, HealthyTarget
from services.alb_sim.app import AlbSimulator
from services.alb_sim.config import load_config
from services.alb_sim.server import ClientConnection
from services.alb_sim.upstream import UpstreamConnection
from tests.ports import free_ports

POST = b"POST /api/form HTTP/1.1\r\nHost: 127.0.0.1:8443\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
FIXED = b"GET /fixed HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n\r\n"

KINDS = {  # what the client sends, what the target answers (None: the ALB answers itself)
    "relayed GET, Content-Length response": (REQUEST, RESPONSE),
    "POST with a body, chunked response": (POST, CHUNKED),
    "fixed-response action": (FIXED, None),
}


async def retained_bytes_per_request(requests: int = 3000) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="alb-memory-") as tmp:
        pem = Path(tmp) / "www.pem"
        trustme.CA().issue_cert("www.lab.test").private_key_and_cert_chain_pem.write_to_path(str(pem))
        target = await loop.create_server(HealthyTarget, "127.0.0.1", 0)
        port = target.sockets[0].getsockname()[1]
        raw = alb_config(pem, *free_ports(2), port, Path(tmp) / "logs")
        raw["listeners"][0]["rules"].append(
            {"priority": 5, "conditions": [{"field": "path-pattern", "values": ["/fixed"]}],
             "actions": [{"type": "fixed-response", "status_code": "200", "content_type": "text/plain",
                          "message_body": "ok"}]})
        sim = AlbSimulator(load_config(raw), announce=lambda line: None)
        task = loop.create_task(sim.run())
        await sim.ready.wait()
        try:
            lr = sim.alb.runtimes[0]
            client = ClientConnection(lr)
            client.connection_made(FakeTransport())
            upstream = UpstreamConnection(lr.state.pool, ("127.0.0.1", port, False))
            upstream.connection_made(FakeTransport())
            lr.state.pool.release(upstream)

            async def run(request: bytes, response: bytes | None, n: int) -> None:
                for i in range(n):
                    client.data_received(request)
                    if response is not None:
                        upstream.data_received(response)
                    if i % 100 == 99:
                        await asyncio.sleep(0)  # the loop writes the access log, as between reads
                await asyncio.sleep(0)

            retained: dict[str, float] = {}
            for kind, (request, response) in KINDS.items():
                await run(request, response, 500)  # per-connection and per-status caches fill here
                tracemalloc.start()
                try:
                    before = tracemalloc.get_traced_memory()[0]
                    logged = lr.log.lines
                    await run(request, response, requests)
                    retained[kind] = (tracemalloc.get_traced_memory()[0] - before) / requests
                finally:
                    tracemalloc.stop()
                assert lr.log.lines - logged == requests, f"{kind}: not every request was answered and logged"
            return retained
        finally:
            task.cancel()
            target.close()


@pytest.fixture(scope="module")
def retained() -> dict[str, float]:
    run: Callable[..., dict[str, float]] = uvloop.run  # type: ignore[assignment]
    return run(retained_bytes_per_request())


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_request_leaves_nothing_allocated(retained: dict[str, float], kind: str) -> None:
    # Before the fix: 163 bytes per relayed GET (the X-Forwarded-For line's partial concatenation
    # and the response head), 60 per POST, 179 per fixed response (measured on the compiled build).
    assert retained[kind] < 2.0, f"{kind}: {retained[kind]:.1f} bytes per request stay allocated"
