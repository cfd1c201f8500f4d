"""In-process NLB on loopback (``transparent: false``): relay, TLS, PROXY v2, health, flow log.

Every test runs its own uvloop loop, its own NLB and its own targets on 127.0.0.x with free
ports. Synchronisation is polling with deadlines, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import ssl
import struct
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx
import pytest
import trustme
import uvloop

from services.nlb_sim.app import NlbApp
from services.nlb_sim.config import load_config
from services.nlb_sim.proxy_v2 import NEED_DATA, Command, ProxyDecoder, ProxyHeader
from tests.ports import free_port

LO = "127.0.0.1"
HC_IPS = ("127.0.0.3", "127.0.0.4")
MB = 1024 * 1024


def run(coro: Awaitable[None], timeout: float = 60) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout)
    uvloop.run(bounded())


async def wait_until(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def hc(protocol: str = "TCP", **kw: Any) -> dict[str, Any]:
    return {"protocol": protocol, "port": "traffic-port", "path": "/", "interval_seconds": 0.2,
            "timeout_seconds": 1, "healthy_threshold": 2, "unhealthy_threshold": 2,
            "matcher": "200-399", **kw}


def target_group(name: str, targets: list[tuple[str, int, str]], *, protocol: str = "TCP",
                 ppv2: bool = False, placement: str | None = None,
                 health: dict[str, Any] | None = None) -> dict[str, Any]:
    attrs = {"preserve_client_ip.enabled": "true", "proxy_protocol_v2.enabled": str(ppv2).lower()}
    if placement:
        attrs["proxy_protocol_v2.client_to_server.header_placement"] = placement
    return {"name": name, "arn": f"arn:aws:elasticloadbalancing:eu-west-2:123456789012:targetgroup/{name}/1",
            "protocol": protocol, "port": targets[0][1] if targets else 443, "target_type": "instance",
            "attributes": attrs,
            "targets": [{"id": i, "ip": LO, "port": p, "az": az} for i, p, az in targets],
            "health_check": health or hc()}


def nlb_config(tmp_path: Path, listeners: list[dict[str, Any]], tgs: list[dict[str, Any]],
               two_nodes: bool = False, cross_zone: bool = False) -> dict[str, Any]:
    # Health checks come from the private IPs (127.0.0.3/4); relayed flows (client IP "preserved"
    # without IP_TRANSPARENT) from 127.0.0.1, so targets can tell them apart.
    nodes = [{"name": "nlb-a", "az": "a", "elastic_ip": LO, "private_ip": HC_IPS[0]}]
    if two_nodes:
        nodes.append({"name": "nlb-b", "az": "b", "elastic_ip": "127.0.0.2", "private_ip": HC_IPS[1]})
    return {"name": "static-ingress", "arn": "arn:aws:elasticloadbalancing:eu-west-2:123456789012:"
            "loadbalancer/net/static-ingress/6d0ecf831eec9f09",
            "nodes": nodes, "attributes": {"load_balancing.cross_zone.enabled": str(cross_zone).lower()},
            "listeners": listeners, "target_groups": tgs, "log_dir": str(tmp_path / "log"),
            "admin": {"address": LO, "port": free_port()}, "transparent": False,
            "relaxed_limits": True}


def tcp_listener(tg: str) -> dict[str, Any]:
    return {"protocol": "TCP", "port": free_port(), "target_group": tg}


def tls_listener(tg: str, pem: Path) -> dict[str, Any]:
    return {"protocol": "TLS", "port": free_port(), "target_group": tg,
            "certificate": {"arn": "arn:aws:acm:eu-west-2:123456789012:certificate/lab-www",
                            "pem": str(pem)},
            "ssl_policy": "ELBSecurityPolicy-TLS13-1-2-2021-06", "alpn_policy": "None"}


@contextlib.asynccontextmanager
async def running(cfg: dict[str, Any]) -> AsyncIterator[NlbApp]:
    app = NlbApp(load_config(cfg))
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    await wait_until(lambda: app.ready.is_set() or task.done(), "NLB ready")
    if task.done():
        task.result()
    try:
        yield app
    finally:
        stop.set()
        await task


def flow_lines(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(cfg["log_dir"]) / "flows.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def wait_healthy(app: NlbApp, tg: str, ids: list[str], node: str = "nlb-a") -> None:
    await wait_until(lambda: all(app.registry.get(node, tg, i).is_healthy for i in ids),
                     f"{ids} healthy")


class Server:
    """An in-test target: ``handler(reader, writer)`` per relayed connection (``peers``).

    Health-check connections (from HC_IPS) are just closed unless ``handle_health_checks``.
    """

    def __init__(self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                 ssl_ctx: ssl.SSLContext | None = None, handle_health_checks: bool = False) -> None:
        self.handler = handler
        self.ssl_ctx = ssl_ctx
        self.handle_health_checks = handle_health_checks
        self.peers: list[tuple[str, int]] = []
        self.hc_peers: list[tuple[str, int]] = []
        self.port = 0
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> "Server":
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            peer = w.get_extra_info("peername")[:2]
            is_hc = peer[0] in HC_IPS
            (self.hc_peers if is_hc else self.peers).append(peer)
            if is_hc and not self.handle_health_checks:
                w.close()
                return
            try:
                await self.handler(r, w)
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                w.transport.abort() if w.transport.is_closing() else w.close()
        self.server = await asyncio.start_server(handle, LO, 0, ssl=self.ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while data := await r.read(65536):
        w.write(data)
        await w.drain()
    if w.can_write_eof():
        w.write_eof()


def dead_port() -> int:
    return free_port()  # nothing listens there: connection refused


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("certs")
    client_ca, target_ca = trustme.CA(), trustme.CA()
    listener_pem = d / "www.lab.test.pem"
    client_ca.issue_cert("www.lab.test").private_key_and_cert_chain_pem.write_to_path(str(listener_pem))
    target_cert = target_ca.issue_cert("haproxy.internal")
    target_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    target_cert.configure_cert(target_ctx)
    client_ctx = ssl.create_default_context()
    client_ca.configure_trust(client_ctx)
    return {"listener_pem": listener_pem, "target_ctx": target_ctx, "client_ctx": client_ctx}


# --- TCP ---------------------------------------------------------------------------------

def test_tcp_relay_5mb_each_way_intact_with_half_close(tmp_path: Path) -> None:
    up, down = os.urandom(5 * MB), os.urandom(5 * MB)
    got_at_target: list[bytes] = []

    async def sink_and_source(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        async def send() -> None:
            for i in range(0, len(down), 256 * 1024):
                w.write(down[i:i + 256 * 1024])
                await w.drain()
            w.write_eof()
        sender = asyncio.create_task(send())
        got_at_target.append(await r.read())  # until the client's FIN
        await sender

    async def main() -> None:
        async with Server(sink_and_source) as target:
            cfg = nlb_config(tmp_path, [tcp_listener("tg")],
                             [target_group("tg", [("t-a", target.port, "a")])])
            async with running(cfg):
                r, w = await asyncio.open_connection(LO, cfg["listeners"][0]["port"])

                async def send() -> None:
                    for i in range(0, len(up), 256 * 1024):
                        w.write(up[i:i + 256 * 1024])
                        await w.drain()
                    w.write_eof()
                sender = asyncio.create_task(send())
                received = await r.read()
                await sender
                w.close()
                assert hashlib.sha256(received).hexdigest() == hashlib.sha256(down).hexdigest()
                await wait_until(lambda: bool(got_at_target), "target got the client's FIN")
                assert len(got_at_target[0]) == len(up) and got_at_target[0] == up
                await wait_until(lambda: any(x["event"] == "close" for x in flow_lines(cfg)),
                                 "close line in flows.log")
                close = [x for x in flow_lines(cfg) if x["event"] == "close"][0]
                assert (close["bytes_in"], close["bytes_out"], close["end"]) == (5 * MB, 5 * MB, "fin")
    run(main())


def test_half_close_keeps_the_other_direction_open(tmp_path: Path) -> None:
    async def answer_after_eof(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        request = await r.read()  # returns only at the client's FIN
        w.write(b"got " + request)
        await w.drain()
        w.write_eof()

    async def main() -> None:
        async with Server(answer_after_eof) as target:
            cfg = nlb_config(tmp_path, [tcp_listener("tg")],
                             [target_group("tg", [("t-a", target.port, "a")])])
            async with running(cfg):
                r, w = await asyncio.open_connection(LO, cfg["listeners"][0]["port"])
                w.write(b"hello")
                w.write_eof()
                assert await r.read() == b"got hello"
                w.close()
    run(main())


def test_client_reset_resets_the_target_and_logs_rst(tmp_path: Path) -> None:
    outcome: list[str] = []

    async def wait_for_reset(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readexactly(4)
        w.write(b"ok")
        try:
            outcome.append("eof" if await r.read() == b"" else "data")
        except ConnectionResetError:
            outcome.append("rst")

    async def main() -> None:
        async with Server(wait_for_reset) as target:
            cfg = nlb_config(tmp_path, [tcp_listener("tg")],
                             [target_group("tg", [("t-a", target.port, "a")])])
            async with running(cfg) as app:
                r, w = await asyncio.open_connection(LO, cfg["listeners"][0]["port"])
                w.write(b"ping")
                assert await r.readexactly(2) == b"ok"
                sock = w.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()
                await wait_until(lambda: bool(outcome), "target saw the end of the flow")
                assert outcome == ["rst"]
                await wait_until(lambda: any(x["event"] == "close" for x in flow_lines(cfg)), "close line")
                assert [x["end"] for x in flow_lines(cfg) if x["event"] == "close"] == ["rst"]
                assert all(not rt.flows and not rt.tasks for rt in app.listeners)
    run(main())


def test_refused_target_resets_client_and_logs_error(tmp_path: Path) -> None:
    async def main() -> None:
        port = dead_port()
        cfg = nlb_config(tmp_path, [tcp_listener("tg")], [target_group("tg", [("t-a", port, "a")])])
        async with running(cfg) as app:
            r, w = await asyncio.open_connection(LO, cfg["listeners"][0]["port"])
            with pytest.raises(ConnectionResetError):
                await r.read()
            w.close()
            await wait_until(lambda: any(x["event"] == "close" for x in flow_lines(cfg)), "close line")
            [close] = [x for x in flow_lines(cfg) if x["event"] == "close"]
            assert close["end"] == f"error: connect {LO}:{port}: Connection refused"
            assert close["target"] == "t-a"
            assert all(not rt.flows for rt in app.listeners)
    run(main())


def test_flow_log_open_and_close_lines(tmp_path: Path) -> None:
    async def main() -> None:
        async with Server(echo) as target:
            cfg = nlb_config(tmp_path, [tcp_listener("tg")],
                             [target_group("tg", [("t-a", target.port, "a")])])
            async with running(cfg):
                r, w = await asyncio.open_connection(LO, cfg["listeners"][0]["port"])
                w.write(b"abc")
                assert await r.readexactly(3) == b"abc"
                client = "%s:%d" % w.get_extra_info("sockname")[:2]
                await wait_until(lambda: any(x["event"] == "open" for x in flow_lines(cfg)), "open line")
                [opened] = flow_lines(cfg)  # written while the connection is still open
                seen = "%s:%d" % target.peers[0]
                expected = {"event": "open", "node": "nlb-a",
                            "listener": f"TCP:{cfg['listeners'][0]['port']}", "client": client,
                            "target": "t-a", "target_addr": f"{LO}:{target.port}",
                            "source_seen_by_target": seen, "proxy_protocol_v2": False}
                assert {k: opened[k] for k in expected} == expected
                assert list(opened) == ["time", *expected]
                w.write_eof()
                assert await r.read() == b""
                w.close()
                await wait_until(lambda: len(flow_lines(cfg)) == 2, "close line")
                closed = flow_lines(cfg)[1]
                assert list(closed) == ["time", *expected, "bytes_in", "bytes_out", "duration_ms", "end"]
                assert {**{k: closed[k] for k in expected}, "event": "open"} == expected
                assert (closed["event"], closed["bytes_in"], closed["bytes_out"], closed["end"]) == \
                    ("close", 3, 3, "fin")
                assert closed["time"].endswith("Z") and closed["duration_ms"] >= 0
    run(main())


# --- TLS ---------------------------------------------------------------------------------

def test_tls_listener_to_tls_target_with_untrusted_certificate(tmp_path: Path, certs: dict[str, Any]) -> None:
    async def main() -> None:
        async with Server(echo, certs["target_ctx"]) as target:
            cfg = nlb_config(tmp_path, [tls_listener("tg", certs["listener_pem"])],
                             [target_group("tg", [("t-a", target.port, "a")], protocol="TLS")])
            async with running(cfg):
                r, w = await asyncio.open_connection(LO, cfg["listeners"][0]["port"],
                                                     ssl=certs["client_ctx"], server_hostname="www.lab.test")
                assert w.get_extra_info("ssl_object").version() == "TLSv1.3"
                payload = os.urandom(300_000)
                w.write(payload)
                assert await r.readexactly(len(payload)) == payload
                w.close()
    run(main())


def test_tls_listener_to_tcp_target_sends_plaintext(tmp_path: Path, certs: dict[str, Any]) -> None:
    seen: list[bytes] = []

    async def record(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(await r.readexactly(18))
        w.write(b"HTTP/1.1 204 OK\r\n\r\n")
        await w.drain()

    async def main() -> None:
        async with Server(record) as target:
            cfg = nlb_config(tmp_path, [tls_listener("tg", certs["listener_pem"])],
                             [target_group("tg", [("t-a", target.port, "a")])])
            async with running(cfg):
                r, w = await asyncio.open_connection(LO, cfg["listeners"][0]["port"],
                                                     ssl=certs["client_ctx"], server_hostname="www.lab.test")
                w.write(b"GET / HTTP/1.1\r\n\r\n")
                assert await r.readexactly(19) == b"HTTP/1.1 204 OK\r\n\r\n"
                assert seen == [b"GET / HTTP/1.1\r\n\r\n"]
                w.close()
    run(main())


def test_garbage_on_tls_listener_does_not_hurt_later_clients(tmp_path: Path, certs: dict[str, Any]) -> None:
    async def main() -> None:
        async with Server(echo, certs["target_ctx"]) as target:
            cfg = nlb_config(tmp_path, [tls_listener("tg", certs["listener_pem"])],
                             [target_group("tg", [("t-a", target.port, "a")], protocol="TLS")])
            async with running(cfg):
                port = cfg["listeners"][0]["port"]
                r, w = await asyncio.open_connection(LO, port)
                w.write(b"\x16\x03\x01\x00\x05hello, not TLS at all\r\n\r\n")
                assert await r.read() == b""  # the NLB hangs up
                w.close()
                r, w = await asyncio.open_connection(LO, port)
                w.close()  # vanishes before the handshake
                r, w = await asyncio.open_connection(LO, port, ssl=certs["client_ctx"],
                                                     server_hostname="www.lab.test")
                w.write(b"still fine")
                assert await r.readexactly(10) == b"still fine"
                w.close()
    run(main())


# --- PROXY protocol v2 -------------------------------------------------------------------

class PpTarget:
    """Target expecting a PROXY v2 header, then TLS (PROXY) or nothing (LOCAL health checks)."""

    def __init__(self, tls_ctx: ssl.SSLContext | None, https_health: bool = False) -> None:
        self.tls_ctx = tls_ctx
        self.https_health = https_health
        self.headers: list[ProxyHeader] = []
        self.first_tls_byte: list[bytes] = []

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        decoder = ProxyDecoder()
        fixed = await r.readexactly(16)
        decoder.feed(fixed)
        decoder.feed(await r.readexactly(struct.unpack("!H", fixed[14:16])[0]))
        header = decoder.next_event()
        assert header is not NEED_DATA
        self.headers.append(header)
        if header.command is Command.LOCAL:
            if self.tls_ctx is not None and self.https_health:  # HTTPS check: TLS after LOCAL
                await w.start_tls(self.tls_ctx)
                await r.readuntil(b"\r\n\r\n")
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await w.drain()
            return
        if self.tls_ctx is not None:
            await w.start_tls(self.tls_ctx)  # fails unless a ClientHello follows the header
        await echo(r, w)


def test_proxy_v2_header_first_then_tls_and_local_on_health_checks(
        tmp_path: Path, certs: dict[str, Any]) -> None:
    pp = PpTarget(certs["target_ctx"])

    async def main() -> None:
        async with Server(pp, handle_health_checks=True) as target:
            cfg = nlb_config(tmp_path, [tls_listener("tg", certs["listener_pem"])],
                             [target_group("tg", [("t-a", target.port, "a")], protocol="TLS", ppv2=True)])
            async with running(cfg) as app:
                await wait_healthy(app, "tg", ["t-a"])
                listen_port = cfg["listeners"][0]["port"]
                r, w = await asyncio.open_connection(LO, listen_port, ssl=certs["client_ctx"],
                                                     server_hostname="www.lab.test")
                w.write(b"ping")
                assert await r.readexactly(4) == b"ping"
                client = w.get_extra_info("sockname")[:2]
                w.close()
                proxied = [h for h in pp.headers if h.command is Command.PROXY]
                local = [h for h in pp.headers if h.command is Command.LOCAL]
                assert len(proxied) == 1 and local, pp.headers
                assert proxied[0].source == client
                assert proxied[0].destination == (LO, listen_port)
                assert proxied[0].length == 100 and proxied[0].crc_valid is True
                assert all(h.length == 100 and h.source is None for h in local)
                await wait_until(lambda: any(x["event"] == "open" for x in flow_lines(cfg)), "open line")
                assert flow_lines(cfg)[0]["proxy_protocol_v2"] is True
    run(main())


def test_https_health_check_sends_local_header_before_tls(tmp_path: Path, certs: dict[str, Any]) -> None:
    pp = PpTarget(certs["target_ctx"], https_health=True)

    async def main() -> None:
        async with Server(pp, handle_health_checks=True) as target:
            cfg = nlb_config(tmp_path, [tls_listener("tg", certs["listener_pem"])],
                             [target_group("tg", [("t-a", target.port, "a")], protocol="TLS", ppv2=True,
                                           health=hc("HTTPS", path="/healthz"))])
            async with running(cfg) as app:
                await wait_healthy(app, "tg", ["t-a"])
                assert pp.headers and all(h.command is Command.LOCAL for h in pp.headers)
                assert app.registry.get("nlb-a", "tg", "t-a").last_detail == "HTTP 200"
    run(main())


@pytest.mark.parametrize("placement, connects_before_payload",
                         [("on_first_ack_with_payload", False), ("on_connect", True)])
def test_proxy_v2_header_placement(tmp_path: Path, placement: str, connects_before_payload: bool) -> None:
    pp = PpTarget(None)

    async def main() -> None:
        async with Server(pp, handle_health_checks=True) as target:
            cfg = nlb_config(tmp_path, [tcp_listener("tg")],
                             [target_group("tg", [("t-a", target.port, "a")], ppv2=True,
                                           placement=placement, health=hc(interval_seconds=300))])
            async with running(cfg) as app:
                rt = app.listeners[0]
                await wait_until(lambda: len(pp.headers) == 1, "the health check's LOCAL header")
                r, w = await asyncio.open_connection(LO, cfg["listeners"][0]["port"])
                await wait_until(lambda: bool(rt.flows), "flow accepted")
                [flow] = rt.flows
                assert (flow.task is not None) is connects_before_payload
                if connects_before_payload:
                    await wait_until(lambda: len(pp.headers) == 2, "PROXY header before any payload")
                w.write(b"first bytes")
                assert await r.readexactly(11) == b"first bytes"
                assert [h.command for h in pp.headers] == [Command.LOCAL, Command.PROXY]
                w.close()
    run(main())


# --- health and selection ----------------------------------------------------------------

def test_down_target_turns_unhealthy_and_traffic_moves_to_the_other(tmp_path: Path) -> None:
    async def main() -> None:
        async with Server(echo) as up:
            down = dead_port()
            cfg = nlb_config(tmp_path, [tcp_listener("tg")],
                             [target_group("tg", [("t-up", up.port, "a"), ("t-down", down, "a")])])
            async with running(cfg) as app:
                h = app.registry.get("nlb-a", "tg", "t-down")
                await wait_until(lambda: h.state == "unhealthy", "t-down unhealthy")
                assert (h.reason, h.failures >= 2) == ("Target.FailedHealthChecks", True)
                await wait_healthy(app, "tg", ["t-up"])
                for _ in range(20):
                    r, w = await asyncio.open_connection(LO, cfg["listeners"][0]["port"])
                    w.write(b"x")
                    assert await r.readexactly(1) == b"x"
                    w.close()
                assert len(up.peers) == 20
                async with httpx.AsyncClient(base_url=f"http://{LO}:{cfg['admin']['port']}") as http:
                    res = await http.get("/target-health", params={"target_group": "tg"})
                assert res.status_code == 200
                assert res.json() == {"TargetHealthDescriptions": [
                    {"Target": {"Id": "t-up", "Port": up.port, "AvailabilityZone": "a"},
                     "HealthCheckPort": str(up.port), "TargetHealth": {"State": "healthy"}},
                    {"Target": {"Id": "t-down", "Port": down, "AvailabilityZone": "a"},
                     "HealthCheckPort": str(down),
                     "TargetHealth": {"State": "unhealthy", "Reason": "Target.FailedHealthChecks",
                                      "Description": "Health checks failed"}}]}
    run(main())


def test_http_health_check_with_matcher(tmp_path: Path) -> None:
    requests: list[bytes] = []

    async def http_status(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        requests.append(await r.readuntil(b"\r\n\r\n"))
        path = requests[-1].split()[1]
        w.write(b"HTTP/1.1 200 OK\r\n\r\n" if path == b"/ok" else b"HTTP/1.1 500 Oops\r\n\r\n")
        await w.drain()

    async def main() -> None:
        async with Server(http_status, handle_health_checks=True) as a, \
                Server(http_status, handle_health_checks=True) as b:
            cfg = nlb_config(tmp_path, [tcp_listener("ok"), tcp_listener("bad")],
                             [target_group("ok", [("t-ok", a.port, "a")], health=hc("HTTP", path="/ok")),
                              target_group("bad", [("t-bad", b.port, "a")], health=hc("HTTP", path="/x"))])
            async with running(cfg) as app:
                await wait_healthy(app, "ok", ["t-ok"])
                bad = app.registry.get("nlb-a", "bad", "t-bad")
                await wait_until(lambda: bad.state == "unhealthy", "t-bad unhealthy")
                assert bad.last_detail == "HTTP 500 (matcher 200-399)"
                port = cfg["listeners"][0]["port"]
                req = next(x for x in requests if b"/ok" in x)
                assert req.startswith(b"GET /ok HTTP/1.1\r\n")
                assert f"Host: {HC_IPS[0]}:{port}\r\n".encode() in req
                assert b"User-Agent: ELB-HealthChecker/2.0\r\n" in req
    run(main())


def test_cross_zone_off_keeps_each_node_in_its_zone(tmp_path: Path) -> None:
    async def main() -> None:
        async with Server(echo) as a, Server(echo) as b:
            cfg = nlb_config(tmp_path, [tcp_listener("tg")],
                             [target_group("tg", [("t-a", a.port, "a"), ("t-b", b.port, "b")])],
                             two_nodes=True)
            async with running(cfg):
                port = cfg["listeners"][0]["port"]
                for node_ip in (LO, "127.0.0.2"):
                    for _ in range(5):
                        r, w = await asyncio.open_connection(node_ip, port)
                        w.write(b"1")
                        await r.readexactly(1)
                        w.close()
                assert (len(a.peers), len(b.peers)) == (5, 5)
                await wait_until(lambda: sum(x["event"] == "close" for x in flow_lines(cfg)) == 10,
                                 "10 close lines")
                nodes = {(x["node"], x["target"]) for x in flow_lines(cfg)}
                assert nodes == {("nlb-a", "t-a"), ("nlb-b", "t-b")}
    run(main())


# --- admin API ---------------------------------------------------------------------------

def test_admin_api(tmp_path: Path) -> None:
    async def main() -> None:
        async with Server(echo) as t:
            cfg = nlb_config(tmp_path, [tcp_listener("tg")], [target_group("tg", [("t-a", t.port, "a")])])
            async with running(cfg):
                async with httpx.AsyncClient(base_url=f"http://{LO}:{cfg['admin']['port']}") as http:
                    health = await http.get("/health")
                    assert (health.status_code, health.json()["status"]) == (200, "ok")
                    tgs = (await http.get("/target-groups")).json()
                    assert [x["TargetGroupName"] for x in tgs["TargetGroups"]] == ["tg"]
                    missing = await http.get("/target-health", params={"target_group": "nope"})
                    assert missing.status_code == 400
                    assert missing.json()["Error"]["Code"] == "TargetGroupNotFound"
                    assert (await http.get("/target-health")).status_code == 400
                    assert (await http.get("/nope")).status_code == 404
                    one = await http.get("/target-health", params={"target_group": "tg", "node": "nlb-a"})
                    assert one.json()["TargetHealthDescriptions"][0]["Target"]["Id"] == "t-a"
    run(main())


# --- CLI ---------------------------------------------------------------------------------

def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys
    path = tmp_path / "nlb.json"
    path.write_text(json.dumps({"name": "x", "nodes": []}))
    res = subprocess.run([sys.executable, "-m", "services.nlb_sim", "--config", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stdout, res.stderr) == (2, "", f"nlb: nodes: must not be empty in {path}\n")


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    cfg = nlb_config(tmp_path, [tcp_listener("tg")], [target_group("tg", [("t-a", dead_port(), "a")])])
    path = tmp_path / "nlb.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "services.nlb_sim", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        import select
        assert select.select([proc.stdout], [], [], 15)[0], "no ready line within 15 s"
        first = proc.stdout.readline()
        assert first == f"nlb ready: nlb-a TCP:{cfg['listeners'][0]['port']} on {LO}\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_unavailable_address_is_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys
    cfg = nlb_config(tmp_path, [tcp_listener("tg")], [target_group("tg", [("t-a", dead_port(), "a")])])
    cfg["nodes"][0]["elastic_ip"] = "203.0.113.250"  # TEST-NET-3, not on this host
    path = tmp_path / "nlb.json"
    path.write_text(json.dumps(cfg))
    res = subprocess.run([sys.executable, "-m", "services.nlb_sim", "--config", str(path)],
                         capture_output=True, text=True, timeout=30)
    port = cfg["listeners"][0]["port"]
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1] == (
        f"nlb: nlb-a TCP:{port}: cannot listen on 203.0.113.250:{port}: address not available on this"
        " host (the container entrypoint must add 203.0.113.250/32 to an interface)")
