"""In-process NLB on loopback: the run-time API (register/deregister/draining, attributes) applied
live, idle-timeout expiry, metrics endpoint. Helpers shared with test_nlb_relay."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest

from services.nlb_sim.idle import tcp_info_fields
from tests.unit.test_nlb_relay import (LO, Server, certs, echo, flow_lines, hc, nlb_config, run, running, target_group,  # noqa: F401
                                       tcp_listener, tls_listener, wait_healthy, wait_until)


def test_register_deregister_drain_and_attributes_over_the_admin_api(tmp_path: Path) -> None:
    async def main() -> None:
        async with Server(echo) as t1, Server(echo) as t2:
            tg = target_group("tg", [("t-1", t1.port, "a"), ("t-2", t2.port, "a")])
            tg["attributes"]["deregistration_delay.timeout_seconds"] = "1"
            cfg = nlb_config(tmp_path, [tcp_listener("tg")], [tg])
            port = cfg["listeners"][0]["port"]
            async with running(cfg) as app:
                await wait_healthy(app, "tg", ["t-1", "t-2"])
                async with httpx.AsyncClient(base_url=f"http://{LO}:{cfg['admin']['port']}") as http:
                    # An open flow to t-1 survives t-1's deregistration (draining), new flows avoid it.
                    r, w = await asyncio.open_connection(LO, port)
                    w.write(b"ping")
                    assert await r.readexactly(4) == b"ping"
                    first_target = flow_lines(cfg)[-1]["target"]
                    # No Port means the target group's (AWS); these targets listen elsewhere.
                    described = {"Id": first_target, "Port": {"t-1": t1.port, "t-2": t2.port}[first_target]}
                    gone = await http.post("/deregister-targets", json={"TargetGroupName": "tg",
                                                                        "Targets": [described]})
                    assert gone.status_code == 200, gone.text
                    states = {d["Target"]["Id"]: d["TargetHealth"] for d in
                              (await http.get("/target-health", params={"target_group": "tg"})).json()[
                                  "TargetHealthDescriptions"]}
                    assert states[first_target] == {"State": "draining", "Reason": "Target.DeregistrationInProgress",
                                                    "Description": "Target deregistration is in progress"}
                    w.write(b"still")
                    assert await r.readexactly(5) == b"still"
                    for _ in range(6):
                        r2, w2 = await asyncio.open_connection(LO, port)
                        w2.write(b"x")
                        await r2.readexactly(1)
                        w2.close()
                    opened = [x["target"] for x in flow_lines(cfg) if x["event"] == "open"]
                    assert set(opened[-6:]) == {"t-2" if first_target == "t-1" else "t-1"}
                    # After the 1 s delay the target is forgotten (unused); connection_termination is
                    # off by default, so the open flow still works.
                    await wait_until(lambda: not app.registry.draining, "drain over", timeout=5)
                    doc = (await http.get("/target-health", params={"target_group": "tg"})).json()
                    assert [d["Target"]["Id"] for d in doc["TargetHealthDescriptions"]] != [] and \
                        first_target not in [d["Target"]["Id"] for d in doc["TargetHealthDescriptions"]]
                    w.write(b"after")
                    assert await r.readexactly(5) == b"after"
                    w.close()
                    # Register it again: initial, then healthy.
                    back = await http.post("/register-targets", json={"TargetGroupName": "tg",
                                                                      "Targets": [described]})
                    assert back.status_code == 200, back.text
                    await wait_healthy(app, "tg", [first_target])
                    # Attribute errors come back AWS-shaped; good values apply live.
                    bad = await http.post("/modify-target-group-attributes", json={
                        "TargetGroupName": "tg", "Attributes": [{"Key": "nope", "Value": "1"}]})
                    assert (bad.status_code, bad.json()) == (400, {"Error": {
                        "Code": "ValidationError", "Message": "Target group attribute key 'nope' is not recognized"}})
                    ok = await http.post("/modify-target-group-attributes", json={
                        "TargetGroupName": "tg", "Attributes": [{"Key": "stickiness.enabled", "Value": "true"}]})
                    # The answer is the whole set, as DescribeTargetGroupAttributes gives it (AWS).
                    described_now = (await http.get("/attributes", params={"target_group": "tg"})).json()
                    assert ok.json()["Attributes"] == described_now["Attributes"]
                    assert {"Key": "stickiness.enabled", "Value": "true"} in ok.json()["Attributes"]
                    assert {"Key": "target_health_state.unhealthy.connection_termination.enabled",
                            "Value": "true"} in ok.json()["Attributes"]
                    assert app.listeners[0].sticky is True
                    # source_ip stickiness: every flow from 127.0.0.1 now lands on one target.
                    for _ in range(6):
                        r3, w3 = await asyncio.open_connection(LO, port)
                        w3.write(b"y")
                        await r3.readexactly(1)
                        w3.close()
                    opened = [x["target"] for x in flow_lines(cfg) if x["event"] == "open"]
                    assert len(set(opened[-6:])) == 1
                    metrics = (await http.get("/metrics")).text
                    assert 'aws_networkelb_NewFlowCount{LoadBalancer="static-ingress",AvailabilityZone="a"}' in metrics
                    assert 'aws_networkelb_HealthyHostCount{LoadBalancer="static-ingress",TargetGroup="tg",' \
                           'AvailabilityZone="a"} 2' in metrics
    run(main())


Running = tuple[Any, Any, dict[str, Any]]  # (app, the listener's runtime, the NLB's config)


@contextlib.asynccontextmanager
async def one_target_nlb(tmp_path: Path, listener: dict[str, Any], splice: bool = True) -> AsyncIterator[Running]:
    """An in-process NLB with ``listener`` in front of one healthy echo target: (app, the listener's
    runtime, the NLB's config)."""
    async with Server(echo) as t:
        cfg = nlb_config(tmp_path, [listener], [target_group("tg", [("t-1", t.port, "a")])])
        cfg["splice"] = splice
        async with running(cfg) as app:
            await wait_healthy(app, "tg", ["t-1"])
            yield app, app.listeners[0], cfg


def tls_nlb(tmp_path: Path, certs: dict[str, Any]) -> contextlib.AbstractAsyncContextManager[Running]:
    return one_target_nlb(tmp_path, tls_listener("tg", certs["listener_pem"]))


@pytest.mark.parametrize("splice", [True, False], ids=["splice relay", "protocol relay"])
def test_idle_expired_flow_answers_the_next_speaker_with_a_reset(tmp_path: Path, splice: bool) -> None:
    async def main() -> None:
        async with one_target_nlb(tmp_path, tcp_listener("tg"), splice) as (app, rt, cfg):
            r, w = await asyncio.open_connection(LO, cfg["listeners"][0]["port"])
            w.write(b"hello")
            assert await r.readexactly(5) == b"hello"
            flow = next(iter(rt.flows))
            assert type(flow).__name__ == ("SpliceFlow" if splice else "Flow")
            loop = asyncio.get_running_loop()
            assert flow.idle_check(loop.time(), 350.0) is False  # bytes moved since the last look
            assert flow.idle_check(loop.time() + 349, 350.0) is False
            assert flow.idle_check(loop.time() + 351, 350.0) is True  # 350 s without a byte
            await wait_until(lambda: [x["end"] for x in flow_lines(cfg) if x["event"] == "close"]
                             == ["idle timeout"], "the flow's close record")
            w.write(b"late")
            with pytest.raises(ConnectionResetError):  # a RST, not the echo and not a FIN
                await asyncio.wait_for(r.read(10), 5)
            assert app.metrics["nlb-a"].counts["TCP_ELB_Reset_Count"] >= 1
            w.close()
    run(main())


def test_tls_listener_writes_an_access_log_line(tmp_path: Path, certs) -> None:
    async def main() -> None:
        async with Server(echo) as t:
            listener = tls_listener("tg", certs["listener_pem"])
            listener["alpn_policy"] = "HTTP2Preferred"
            cfg = nlb_config(tmp_path, [listener], [target_group("tg", [("t-1", t.port, "a")])])
            async with running(cfg) as app:
                await wait_healthy(app, "tg", ["t-1"])
                ctx = certs["client_ctx"]
                ctx.set_alpn_protocols(["http/1.1", "h2"])
                r, w = await asyncio.open_connection(LO, listener["port"], ssl=ctx, server_hostname="www.lab.test")
                local = w.get_extra_info("sockname")
                w.write(b"x" * 1000)
                assert await r.readexactly(1000) == b"x" * 1000
                w.close()
                path = Path(cfg["log_dir"]) / "access.log"
                await wait_until(lambda: path.exists() and path.read_text().strip(), "access log line")
                fields = path.read_text().split()
                assert fields[:2] == ["tls", "2.0"]
                assert fields[3] == "net/static-ingress/6d0ecf831eec9f09"
                assert fields[5] == f"{local[0]}:{local[1]}" and fields[6] == f"{LO}:{listener['port']}"
                assert int(fields[7]) >= 0 and int(fields[8]) >= 0
                assert fields[9:12] == ["1000", "1000", "-"]
                assert fields[12] == "arn:aws:acm:eu-west-2:123456789012:certificate/lab-www"
                assert fields[14].startswith("TLS_") and fields[15] == "tlsv13"  # OpenSSL's TLS 1.3 suite name
                assert fields[17:] == ["www.lab.test", "h2", "-", "-"]  # the LB's preference (HTTP2Preferred) wins
                vpc = (Path(cfg["log_dir"]) / "vpc-flow.log").read_text().splitlines()
                mine = [line.split() for line in vpc if f" {local[0]} " in line and f" {local[1]} " in line]
                assert [(f[0], f[1], f[7], f[9], f[12], f[13]) for f in mine][:2] == [
                    ("2", "123456789012", "6", "1000", "ACCEPT", "OK")] * 2
                assert (mine[0][3], mine[0][4], mine[0][6]) == (local[0], LO, str(listener["port"]))
    run(main())


def test_vpc_endpoint_tlv_in_proxy_header_and_proxy_v2_switched_on_live(tmp_path: Path) -> None:
    from services.nlb_sim.proxy_v2 import Command
    from tests.unit.test_nlb_relay import PpTarget

    pp = PpTarget(None)

    async def main() -> None:
        async with Server(pp, handle_health_checks=True) as target:
            cfg = nlb_config(tmp_path, [tcp_listener("tg")], [target_group("tg", [("t-a", target.port, "a")])])
            cfg["vpc_endpoint_id"] = "vpce-08d2bf15fac5001c9"
            async with running(cfg) as app:
                await wait_healthy(app, "tg", ["t-a"])  # no PROXY v2 yet: checks are plain connects
                assert app.listeners[0].splice_eligible
                async with httpx.AsyncClient(base_url=f"http://{LO}:{cfg['admin']['port']}") as http:
                    ok = await http.post("/modify-target-group-attributes", json={
                        "TargetGroupName": "tg", "Attributes": [{"Key": "proxy_protocol_v2.enabled", "Value": "true"},
                                                                {"Key": "proxy_protocol_v2.client_to_server."
                                                                         "header_placement", "Value": "on_connect"}]})
                    assert ok.status_code == 200, ok.text
                assert not app.listeners[0].splice_eligible  # new flows: Protocol relay with a header
                r, w = await asyncio.open_connection(LO, cfg["listeners"][0]["port"])
                w.write(b"ping")
                assert await r.readexactly(4) == b"ping"
                w.close()
                # Health checks follow the change too: they now start with a LOCAL header.
                await wait_until(lambda: any(h.command is Command.LOCAL for h in pp.headers), "a LOCAL check")
                proxied = [h for h in pp.headers if h.command is Command.PROXY]
                assert len(proxied) == 1
                assert proxied[0].vpce_id == "vpce-08d2bf15fac5001c9"
                assert proxied[0].length == 100 and proxied[0].crc_valid is True  # AWS's fixed 100 bytes
    run(main())


@pytest.mark.parametrize("seen,last,moved,now,expected", [
    (0, 100.0, 10, 105.0, (10, 105.0, False)),      # bytes moved: the clock restarts
    (10, 105.0, 10, 454.0, (10, 105.0, False)),     # 349 s silent: still alive
    (10, 105.0, 10, 455.0, (10, 105.0, True)),      # 350 s silent: idle past the timeout
    (10, 105.0, 11, 1000.0, (11, 1000.0, False)),   # one byte late is still a byte
])
def test_idle_step(seen: int, last: float, moved: int, now: float, expected: tuple) -> None:
    from services.nlb_sim.idle import idle_step
    assert idle_step(seen, last, moved, now, 350.0) == expected


@pytest.mark.parametrize("seen,last,moved,now,peer,expected", [
    (10, 105.0, 10, 455.0, True, (10, 455.0, False)),    # a keep-alive at 350 s: the clock restarts
    (10, 105.0, 10, 455.0, False, (10, 105.0, True)),    # none: idle, as before
    (10, 105.0, 10, 200.0, True, (10, 200.0, False)),
    (10, 105.0, 12, 200.0, True, (12, 200.0, False)),    # bytes and a keep-alive: one restart
])
def test_idle_step_with_peer_keepalives(seen: int, last: float, moved: int, now: float, peer: bool,
                                        expected: tuple) -> None:
    from services.nlb_sim.idle import idle_step
    assert idle_step(seen, last, moved, now, 350.0, peer) == expected


@pytest.mark.parametrize("before,after,last_ack_ms,interval,expected", [
    (7, 7, 5000, 1.0, 0),            # nothing arrived
    (7, 8, 5000, 1.0, 1),            # a peer's keep-alive probe: counted, last ACK long ago
    (7, 8, 400, 1.0, 0),             # the answer to our own probe (an ACK 0.4 s ago)
    (7, 9, 400, 1.0, 1),             # our probe answered and a peer probe in the same second
    (7, 8, 1200, 1.0, 0),            # an ACK just before the last look may still be this one
    (7, 8, 1300, 1.0, 1),            # older than the interval and the slack: not an answer
    (7, 10, 9000, 3.0, 3),           # three probes while the sweep was late
    (2**32 - 1, 1, 9000, 1.0, 2),    # the 32-bit counter wrapped
])
def test_unsolicited_segments(before: int, after: int, last_ack_ms: int, interval: float, expected: int) -> None:
    from services.nlb_sim.idle import unsolicited_segments
    assert unsolicited_segments(before, after, last_ack_ms, interval) == expected


@pytest.mark.parametrize("baseline,since,samples,now,expected", [
    (None, 0.0, ((7, 300), (3, 300)), 10.0, ((7, 3), False)),         # first look after payload
    ((7, 3), 9.0, ((7, 9000), (3, 9000)), 10.0, ((7, 3), False)),     # quiet
    ((7, 3), 9.0, ((8, 9000), (3, 9000)), 10.0, ((8, 3), True)),      # the client's keep-alive
    ((7, 3), 9.0, ((7, 9000), (4, 9000)), 10.0, ((7, 4), True)),      # the target's keep-alive
    ((7, 3), 9.0, ((8, 100), (4, 700)), 10.0, ((8, 4), False)),       # both answered our probes
    ((7, 3), 9.0, ((9, 100), (4, 700)), 10.0, ((9, 4), True)),        # ... and the client probed too
    ((7,), 9.0, ((8, 9000), (4, 9000)), 10.0, ((8, 4), False)),       # another socket set: rebase
])
def test_peer_step(baseline: tuple[int, ...] | None, since: float, samples: tuple[tuple[int, int], ...],
                   now: float, expected: tuple) -> None:
    from services.nlb_sim.idle import peer_step
    assert peer_step(baseline, since, samples, now) == expected


def test_tcp_info_fields_reads_linux_struct_tcp_info() -> None:
    from services.nlb_sim.idle import tcp_info_fields
    raw = bytearray(232)  # Linux 5.x-6.x give 232 or more bytes; only the first 144 are read
    struct.pack_into("=I", raw, 56, 1234)   # tcpi_last_ack_recv
    struct.pack_into("=I", raw, 136, 99)    # tcpi_segs_out (not read)
    struct.pack_into("=I", raw, 140, 42)    # tcpi_segs_in
    assert tcp_info_fields(bytes(raw)) == (42, 1234)
    assert tcp_info_fields(bytes(raw[:144])) == (42, 1234)
    assert tcp_info_fields(bytes(raw[:104])) is None  # a kernel before 4.2: no segment counts
    with socket.socket() as listener:  # and the layout is the one this kernel uses
        listener.bind((LO, 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as client:
            server, _ = listener.accept()
            with server:
                client.sendall(b"x")
                assert server.recv(1) == b"x"
                fields = tcp_info_fields(server.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 144))
                assert fields is not None and fields[0] >= 2  # the handshake's ACK and the byte


def test_modify_target_group_health_check_applies_to_the_next_check(tmp_path: Path) -> None:
    paths: list[bytes] = []

    async def http_status(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")  # a TCP check just connects and closes
        paths.append(head.split()[1])
        w.write(b"HTTP/1.1 200 OK\r\n\r\n" if paths[-1] == b"/ok" else b"HTTP/1.1 404 Nope\r\n\r\n")
        await w.drain()

    async def main() -> None:
        async with Server(http_status, handle_health_checks=True) as t:
            # A 30 s interval: without the change taking effect at once, no second check would come.
            tg = target_group("tg", [("t-1", t.port, "a")], health=hc(interval_seconds=30))
            cfg = nlb_config(tmp_path, [tcp_listener("tg")], [tg])
            async with running(cfg) as app, \
                    httpx.AsyncClient(base_url=f"http://{LO}:{cfg['admin']['port']}") as http:
                await wait_healthy(app, "tg", ["t-1"])
                health = app.registry.get("nlb-a", "tg", "t-1")
                bad = await http.post("/modify-target-group", json={"TargetGroupName": "tg",
                                                                     "HealthCheckPath": "/x"})
                assert (bad.status_code, bad.json()) == (400, {"Error": {
                    "Code": "ValidationError",
                    "Message": "Health check path cannot be set when the health check protocol is TCP"}})
                r = await http.post("/modify-target-group", json={
                    "TargetGroupName": "tg", "HealthCheckProtocol": "HTTP", "HealthCheckPath": "/missing",
                    "HealthCheckIntervalSeconds": 0.2, "HealthyThresholdCount": 3})
                assert r.status_code == 200, r.text
                assert r.json()["TargetGroups"][0] | {"TargetGroupArn": ""} == {
                    "TargetGroupName": "tg", "TargetGroupArn": "", "HealthCheckProtocol": "HTTP",
                    "HealthCheckPort": "traffic-port", "HealthCheckEnabled": True,
                    "HealthCheckIntervalSeconds": 0.2, "HealthCheckTimeoutSeconds": 1,
                    "HealthyThresholdCount": 3, "UnhealthyThresholdCount": 2,
                    "HealthCheckPath": "/missing", "Matcher": {"HttpCode": "200-399"}}
                # The interval is re-measured at once: unhealthy after 2 HTTP failures, well inside 30 s.
                await wait_until(lambda: health.state == "unhealthy", "t-1 unhealthy", timeout=5)
                assert health.last_detail == "HTTP 404 (matcher 200-399)"
                assert paths[-1] == b"/missing"
                # A matcher that takes 404 makes the same check pass; back to healthy after
                # HealthyThresholdCount (3) consecutive passes.
                r = await http.post("/modify-target-group", json={"TargetGroupName": "tg",
                                                                   "Matcher": {"HttpCode": "404"}})
                assert r.status_code == 200, r.text
                passes_before = health.passes
                await wait_until(lambda: health.state == "healthy", "t-1 healthy", timeout=5)
                assert passes_before == 0 and health.passes == 3
                # Back to TCP: the HTTP handler sees connects that send nothing.
                seen = len(paths)
                r = await http.post("/modify-target-group", json={"TargetGroupName": "tg",
                                                                   "HealthCheckProtocol": "TCP"})
                assert "HealthCheckPath" not in r.json()["TargetGroups"][0]
                hc_conns = len(t.hc_peers)
                await wait_until(lambda: len(t.hc_peers) >= hc_conns + 3, "TCP checks", timeout=5)
                assert len(paths) <= seen + 1 and health.state == "healthy"
    run(main())


def test_new_flows_follow_health_changes_without_any_config_change(tmp_path: Path) -> None:
    """The target pool a listener picks from is cached: a target turning unhealthy (a failed check,
    nothing else) must leave it at once, and all targets unhealthy must fail open (counted)."""
    async def main() -> None:
        async with Server(echo) as t1, Server(echo) as t2:
            cfg = nlb_config(tmp_path, [tcp_listener("tg")], [target_group("tg", [("t-1", t1.port, "a"),
                                                                                    ("t-2", t2.port, "a")])])
            port = cfg["listeners"][0]["port"]

            async def targets_of_new_flows(n: int, *, until: set[str] | None = None) -> list[str]:
                """The target of each of ``n`` new flows, in order; with ``until``, opens flows until all
                of those targets were seen (at most ``n``). Flows are hashed over the client's random port,
                so a fixed count could land on one target by chance (1 in 128 for 8 flows)."""
                before = len(flow_lines(cfg))
                for i in range(n):
                    r, w = await asyncio.open_connection(LO, port)
                    w.write(b"x")
                    try:
                        await r.read(1)
                    except ConnectionResetError:  # a refused target: the client gets a reset
                        pass
                    w.close()
                    await wait_until(lambda: sum(x["event"] == "close" for x in flow_lines(cfg)[before:]) > i,
                                     "flow closed")
                    if until is not None and {x["target"] for x in flow_lines(cfg)[before:]} >= until:
                        break
                return [x["target"] for x in flow_lines(cfg)[before:] if x["event"] == "close"]

            both = {"t-1", "t-2"}
            async with running(cfg) as app:
                await wait_healthy(app, "tg", ["t-1", "t-2"])
                assert set(await targets_of_new_flows(64, until=both)) == both
                assert t1.server is not None
                t1.server.close()
                await wait_until(lambda: app.registry.get("nlb-a", "tg", "t-1").state.value == "unhealthy",
                                 "t-1 unhealthy")
                assert set(await targets_of_new_flows(6)) == {"t-2"}
                assert app.metrics["nlb-a"].counts["UnhealthyRoutingFlowCount"] == 0
                assert t2.server is not None
                t2.server.close()
                await wait_until(lambda: app.registry.get("nlb-a", "tg", "t-2").state.value == "unhealthy",
                                 "t-2 unhealthy")
                failed_open = await targets_of_new_flows(64, until=both)  # fail open: both again
                assert set(failed_open) == both
                assert app.metrics["nlb-a"].counts["UnhealthyRoutingFlowCount"] == len(failed_open)
    run(main())


@pytest.mark.parametrize("client_offers, negotiated", [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"),
                                                       (None, None)])
def test_tls_target_is_offered_the_protocol_the_client_negotiated(tmp_path: Path, certs, client_offers,
                                                                  negotiated) -> None:
    """ALPN policy HTTP2Preferred, TLS target group: the target is offered exactly what the client and
    listener agreed (it is that protocol's bytes the NLB relays); both sides are in the access log."""
    import ssl

    import trustme

    seen: list[str | None] = []

    async def record_alpn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(w.get_extra_info("ssl_object").selected_alpn_protocol())
        await echo(r, w)

    target_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("target.internal").configure_cert(target_ctx)
    target_ctx.set_alpn_protocols(["h2", "http/1.1"])

    async def main() -> None:
        async with Server(record_alpn, ssl_ctx=target_ctx) as t:
            listener = tls_listener("tg", certs["listener_pem"])
            listener["alpn_policy"] = "HTTP2Preferred"
            cfg = nlb_config(tmp_path, [listener], [target_group("tg", [("t-1", t.port, "a")], protocol="TLS")])
            async with running(cfg) as app:
                await wait_healthy(app, "tg", ["t-1"])
                client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
                if client_offers is not None:
                    client_ctx.set_alpn_protocols(client_offers)
                r, w = await asyncio.open_connection(LO, listener["port"], ssl=client_ctx,
                                                     server_hostname="www.lab.test")
                assert w.get_extra_info("ssl_object").selected_alpn_protocol() == negotiated
                w.write(b"ping")
                assert await r.readexactly(4) == b"ping"
                w.close()
                path = Path(cfg["log_dir"]) / "access.log"
                await wait_until(lambda: path.exists() and path.read_text().strip(), "access log line")
                assert seen == [negotiated]
                fields = path.read_text().split()
                assert fields[18:20] == [negotiated or "-", negotiated or "-"]
    run(main())


# --- TCP keep-alives and the idle timeout (decisions #76) ----------------------------------
# tcp.idle_timeout.seconds starts at 60 (10 with relaxed_limits); these tests set the listener's
# run-time value, which the once-a-second sweep reads, to a few seconds instead.
IDLE = 4.0


def keep_alive(writer: asyncio.StreamWriter, on: bool = True) -> None:
    """The client's kernel sends a keep-alive probe after 1 s without traffic, then every second."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(on))
    if on:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)


def closes(cfg: dict[str, Any]) -> dict[str, str]:
    """Client address -> how its flow ended, for the flows that ended."""
    return {x["client"]: x["end"] for x in flow_lines(cfg) if x["event"] == "close"}


def keepalive_options(transport: Any) -> tuple[int, int, int]:
    sock = transport.get_extra_info("socket")
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL))


@pytest.mark.parametrize("splice", [True, False], ids=["splice relay", "protocol relay"])
def test_client_keepalives_keep_an_idle_flow_open(tmp_path: Path, splice: bool) -> None:
    """Two flows go quiet together; only one client sends TCP keep-alives. The other flow expires at
    the idle timeout as before; the one kept alive outlives it and still relays."""
    async def main() -> None:
        async with one_target_nlb(tmp_path, tcp_listener("tg"), splice) as (app, rt, cfg):
            rt.idle_timeout = IDLE
            port = cfg["listeners"][0]["port"]
            r1, w1 = await asyncio.open_connection(LO, port)
            keep_alive(w1)
            r2, w2 = await asyncio.open_connection(LO, port)
            for r, w in ((r1, w1), (r2, w2)):
                w.write(b"hello")
                assert await r.readexactly(5) == b"hello"
            quiet_since = time.monotonic()
            silent = "%s:%d" % w2.get_extra_info("sockname")[:2]
            await wait_until(lambda: silent in closes(cfg), "the silent flow's idle timeout", timeout=IDLE + 15)
            # (The event loop's clock counts whole milliseconds: a few may separate its reading
            # at the last sweep that saw bytes from quiet_since.)
            assert time.monotonic() - quiet_since >= IDLE - 0.05
            # The flow kept alive went quiet first: without its keep-alives it would have
            # expired in the same sweep or before. Two more sweeps, then it must still be open.
            await wait_until(lambda: time.monotonic() - quiet_since >= IDLE + 2, "two more sweeps")
            assert closes(cfg) == {silent: "idle timeout"}
            w1.write(b"still here")
            assert await r1.readexactly(10) == b"still here"
            assert app.metrics["nlb-a"].counts["IdleTimeoutFlowCount"] == 1
            for w in (w1, w2):
                w.close()
    run(main())




async def tls_hello(cfg: dict[str, Any], certs: dict[str, Any]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client TLS flow through the NLB's first listener that has moved one round of bytes."""
    r, w = await asyncio.open_connection(LO, cfg["listeners"][0]["port"], ssl=certs["client_ctx"],
                                         server_hostname="www.lab.test")
    w.write(b"hello")
    assert await r.readexactly(5) == b"hello"
    return r, w


def test_tls_listener_sends_its_own_keepalives_once_a_peer_does(tmp_path: Path, certs) -> None:
    """AWS: on a TLS listener, a keep-alive from the client or the target makes the NLB send
    keep-alives to both, every 20 s. A flow whose peers send none gets none."""
    async def main() -> None:
        async with tls_nlb(tmp_path, certs) as (app, rt, cfg):
            assert rt.keepalive_seconds == 20.0
            opened = [await tls_hello(cfg, certs) for _ in range(2)]
            keep_alive(opened[0][1])
            quiet_since = time.monotonic()
            by_client = {"%s:%d" % f.client_addr: f for f in rt.flows}
            kept, silent = (by_client["%s:%d" % w.get_extra_info("sockname")[:2]] for _, w in opened)
            sides = [kept.client.transport, kept.target_half.transport]
            await wait_until(lambda: all(keepalive_options(s)[0] for s in sides),
                             "the NLB's keep-alives on both sides", timeout=10)
            assert [keepalive_options(s) for s in sides] == [(1, 20, 20), (1, 20, 20)]
            await wait_until(lambda: time.monotonic() - quiet_since >= 3, "three sweeps of the quiet flows")
            assert [keepalive_options(s)[0] for s in (silent.client.transport, silent.target_half.transport)] \
                == [0, 0]
            for _, w in opened:
                w.close()
    run(main())


def test_answers_to_the_nlbs_own_keepalives_do_not_keep_a_flow(tmp_path: Path, certs) -> None:
    """Once the client stops its keep-alives, the flow expires at the idle timeout even though the
    NLB's own keep-alives (every 2 s here) are answered by both peers."""
    async def main() -> None:
        async with tls_nlb(tmp_path, certs) as (app, rt, cfg):
            rt.idle_timeout, rt.keepalive_seconds = IDLE, 2.0
            r, w = await tls_hello(cfg, certs)
            keep_alive(w)
            flow = next(iter(rt.flows))
            nlb_side = flow.client.transport.get_extra_info("socket")
            await wait_until(lambda: keepalive_options(flow.client.transport)[0] == 1,
                             "the NLB's keep-alives", timeout=10)
            keep_alive(w, on=False)
            stopped = time.monotonic()
            segs_in = tcp_info_fields(nlb_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 144))
            client = "%s:%d" % w.get_extra_info("sockname")[:2]
            await wait_until(lambda: closes(cfg).get(client) == "idle timeout", "the idle timeout",
                             timeout=IDLE + 20)
            # Answers to the NLB's probes did arrive meanwhile, and did not count.
            after = tcp_info_fields(nlb_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 144))
            assert segs_in is not None and after is not None and after[0] > segs_in[0]
            # The last client probe was seen at the sweep that turned the NLB's keep-alives on,
            # just before `stopped`, or at the next one.
            assert time.monotonic() - stopped >= IDLE - 0.05
            w.close()
    run(main())
