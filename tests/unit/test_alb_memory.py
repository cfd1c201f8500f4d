"""The ALB's request path keeps nothing once a request is done, in whichever build runs (the
compiled one under `make test`), and in the compiled build it runs no Python function in the
interpreter (decisions.md #69).

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
import sys
import tempfile
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Callable

import pytest
import trustme
import uvloop

from bench.alb import alb_config
import bench.alb_path
from bench.alb_path import REQUEST, RESPONSE, FakeTransport, HealthyTarget
from services import native
from services.alb_sim.app import AlbSimulator
from services.alb_sim.config import load_config
from services.alb_sim.server import ClientConnection
from services.alb_sim.upstream import UpstreamConnection
from tests.ports import free_ports

POST = b"POST /api/form HTTP/1.1\r\nHost: 127.0.0.1:8443\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
FIXED = b"GET /fixed HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n\r\n"
VIA_HAPROXY = (b"GET /api/items?page=2 HTTP/1.1\r\nHost: www.lab.test\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n"
               b"X-Forwarded-For: 198.51.100.123\r\nCookie: session=abc\r\n\r\n")
HARNESS = {bench.alb_path.__file__, __file__}  # FakeTransport's methods, and this module's loops

# Listener 0's rules look only at method, path and Host, so a request's rule is looked up once per
# (method, path, Host); listener 1 has a query-string condition, so every request is matched again.
KINDS = {  # the listener, what the client sends, what the target answers (None: the ALB answers itself)
    "relayed GET, Content-Length response": (0, REQUEST, RESPONSE),
    "as HAProxy sends it (X-Forwarded-For, query, cookie)": (0, VIA_HAPROXY, RESPONSE),
    "POST with a body, chunked response": (0, POST, CHUNKED),
    "fixed-response action": (0, FIXED, None),
    "redirect action": (0, b"GET /old/page?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n\r\n", None),
    "rule with a query-string condition": (1, b"GET /search?q=lab HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n\r\n",
                                            RESPONSE),
}


def python_functions_run(client: ClientConnection, upstream: UpstreamConnection, request: bytes,
                         response: bytes | None, requests: int = 20) -> set[str]:
    """The Python functions the interpreter runs while `requests` requests go through (compiled
    functions make no Python frames, so none of the simulator's should show up)."""
    ran: set[str] = set()

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_filename not in HARNESS:
            ran.add(f"{frame.f_code.co_filename}:{frame.f_code.co_firstlineno} {frame.f_code.co_qualname}")

    sys.setprofile(profile)
    try:
        for _ in range(requests):
            client.data_received(request)
            if response is not None:
                upstream.data_received(response)
    finally:
        sys.setprofile(None)
    return ran


async def retained_bytes_per_request(interpreted: dict[str, set[str]], requests: int = 3000) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="alb-memory-") as tmp:
        pem = Path(tmp) / "www.pem"
        trustme.CA().issue_cert("www.lab.test").private_key_and_cert_chain_pem.write_to_path(str(pem))
        target = await loop.create_server(HealthyTarget, "127.0.0.1", 0)
        port = target.sockets[0].getsockname()[1]
        listen, admin, listen_2 = free_ports(3)
        raw = alb_config(pem, listen, admin, port, Path(tmp) / "logs")
        raw["listeners"][0]["rules"].append(
            {"priority": 5, "conditions": [{"field": "path-pattern", "values": ["/fixed"]}],
             "actions": [{"type": "fixed-response", "status_code": "200", "content_type": "text/plain",
                          "message_body": "ok"}]})
        raw["listeners"][0]["rules"].append(
            {"priority": 4, "conditions": [{"field": "path-pattern", "values": ["/old/*"]}],
             "actions": [{"type": "redirect", "redirect": {"path": "/new/#{path}", "status_code": "HTTP_301"}}]})
        raw["listeners"].append({
            **raw["listeners"][0], "port": listen_2,
            "rules": [{"priority": 3,
                       "conditions": [{"field": "query-string", "values": [{"key": "q", "value": "lab"}]}],
                       "actions": [{"type": "forward", "target_group": "api"}]}]})
        sim = AlbSimulator(load_config(raw), announce=lambda line: None)
        task = loop.create_task(sim.run())
        await sim.ready.wait()
        try:
            clients = []
            for lr in sim.alb.runtimes:
                clients.append(ClientConnection(lr))
                clients[-1].connection_made(FakeTransport())
            pool = sim.alb.runtimes[0].state.pool  # the node's: both listeners' requests use it
            upstream = UpstreamConnection(pool, ("127.0.0.1", port, False))
            upstream.connection_made(FakeTransport())
            pool.release(upstream)

            async def run(client: ClientConnection, request: bytes, response: bytes | None, n: int) -> None:
                for i in range(n):
                    client.data_received(request)
                    if response is not None:
                        upstream.data_received(response)
                    if i % 100 == 99:
                        await asyncio.sleep(0)  # the loop writes the access log, as between reads
                await asyncio.sleep(0)

            retained: dict[str, float] = {}
            for kind, (listener, request, response) in KINDS.items():
                client, lr = clients[listener], sim.alb.runtimes[listener]
                await run(client, request, response, 500)  # per-connection and per-status caches fill here
                interpreted[kind] = python_functions_run(client, upstream, request, response)
                tracemalloc.start()
                try:
                    before = tracemalloc.get_traced_memory()[0]
                    logged = lr.log.lines
                    await run(client, request, response, requests)
                    retained[kind] = (tracemalloc.get_traced_memory()[0] - before) / requests
                finally:
                    tracemalloc.stop()
                assert lr.log.lines - logged == requests, f"{kind}: not every request was answered and logged"
            return retained
        finally:
            task.cancel()
            target.close()


@pytest.fixture(scope="module")
def measured() -> tuple[dict[str, float], dict[str, set[str]]]:
    run: Callable[..., dict[str, float]] = uvloop.run  # type: ignore[assignment]
    interpreted: dict[str, set[str]] = {}
    return run(retained_bytes_per_request(interpreted)), interpreted


@pytest.fixture(scope="module")
def retained(measured: tuple[dict[str, float], dict[str, set[str]]]) -> dict[str, float]:
    return measured[0]


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_request_leaves_nothing_allocated(retained: dict[str, float], kind: str) -> None:
    # Before the fix: 163 bytes per relayed GET (the X-Forwarded-For line's partial concatenation
    # and the response head), 60 per POST, 179 per fixed response (measured on the compiled build).
    assert retained[kind] < 2.0, f"{kind}: {retained[kind]:.1f} bytes per request stay allocated"


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_request_runs_no_interpreted_python_in_the_compiled_build(
        measured: tuple[dict[str, float], dict[str, set[str]]], kind: str) -> None:
    # mypyc compiles a dataclass's fields but leaves its generated __init__ to the interpreter, and a
    # NamedTuple's constructor too: two such classes made per request cost 0.7 us of the 7.4 us the
    # simulator's Python spends on one (bench/alb_path.py, decisions.md #69).
    if not native.compiled():
        pytest.skip(f"only the compiled build runs without Python frames; this process runs the {native.state()}")
    assert measured[1][kind] == set(), f"{kind}: interpreted on every request: {sorted(measured[1][kind])}"
