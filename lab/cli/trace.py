"""`lab trace`: one request, then every hop as that hop saw it.

Correlation: the request carries `X-Lab-Trace: <id>`; HAProxy logs it (capture), which gives the
client ip:port HAProxy saw; the NLB flow log is matched on the curl's own source ip:port; the ALB
access-log entry on the X-Amzn-Trace-Id the echo service received.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import time
from collections.abc import Sequence
from typing import Any

from lab import model as m
from lab.cli._common import current_topology, require_running
from lab.cli.curl import curl_args, source_address
from lab.errors import LabError
from lab.render.simulators import LOG_DIR
from lab.runtime import container, docker_client, exec_in

MARK = "__lab_trace__"
HAPROXY_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def register(verbs) -> None:
    parser = verbs.add_parser("trace", help="send one request and show every hop as it saw it")
    parser.add_argument("--from", dest="source", default=None, metavar="IP")
    parser.add_argument("--json", action="store_true", help="print a JSON list of hops")
    parser.add_argument("url", nargs="?", default=None)
    parser.set_defaults(run=run)


def _split(address: str) -> tuple[str, int | None]:
    host, _, port = address.rpartition(":")
    return (host, int(port)) if port.isdigit() else (address, None)


def parse_haproxy_line(line: str) -> dict[str, str]:
    name, _, rest = line.partition(" ")
    fields = {k: v[1:-1] if v.startswith('"') else v for k, v in HAPROXY_FIELD.findall(rest)}
    return {"instance": name, **fields}


def parse_alb_entry(line: str) -> dict[str, str]:
    from services.alb_sim.access_log import FIELD_NAMES

    return dict(zip(FIELD_NAMES, shlex.split(line)))


def _read(client, service: str, command: str) -> str:
    code, out, _ = exec_in(client, service, ["sh", "-c", command])
    return out.decode(errors="replace") if code == 0 else ""


def _find_haproxy(client, topology: m.Topology, trace: str) -> dict[str, str] | None:
    for instance in topology.haproxy.instances:
        logs = container(client, instance.name).logs(tail=2000).decode(errors="replace")
        for line in reversed(logs.splitlines()):
            if f'trace="{trace}"' in line:
                return parse_haproxy_line(line.strip())
    return None


def _find_flow(client, client_addr: str) -> dict[str, Any] | None:
    text = _read(client, m.NLB_SERVICE, f"tail -n 5000 {LOG_DIR}/nlb/flows.log")
    for line in reversed(text.splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("client") == client_addr:
            return record
    return None


def _find_alb(client, amzn_trace: str) -> tuple[str, dict[str, str]] | None:
    text = _read(client, m.ALB_SERVICE, f"grep -H -F {shlex.quote(amzn_trace)} {LOG_DIR}/alb/*/access.log")
    for line in text.splitlines():
        path, _, entry = line.partition(":")
        return path.split("/")[-2], parse_alb_entry(entry)
    return None


def haproxy_skipped(topology: m.Topology, listener: str | None) -> str | None:
    """Why HAProxy is not on this flow's path, or None when it is: an NLB listener whose target
    group is of type `alb` sends flows straight to the ALB (topologies nlb-alb, sni's TCP:8443)."""
    _, _, port = (listener or "").partition(":")
    for ls in topology.nlb.listeners:
        if str(ls.port) == port and topology.nlb.straight_to_alb(ls):
            return f"not on this path: the NLB's {listener} forwards to the alb target group {ls.target_group}"
    return None


def collect(client, topology: m.Topology, source: str, url: str,
            headers: Sequence[str] = ()) -> list[dict[str, Any]]:
    trace = secrets.token_hex(8)
    argv = curl_args(source, url, headers=[f"X-Lab-Trace: {trace}", *headers],
                     extra=["-w", f"\n{MARK} %{{local_ip}} %{{local_port}} %{{remote_ip}} %{{remote_port}} %{{http_code}}"])
    code, out, err = exec_in(client, m.CLIENT_SERVICE, argv)
    text = out.decode(errors="replace")
    body, _, tail = text.rpartition(f"\n{MARK} ")
    if code != 0 or not tail:
        raise LabError(f"the request failed: {err.decode(errors='replace').strip() or f'curl exit {code}'}")
    local_ip, local_port, remote_ip, remote_port, status = tail.split()
    client_addr = f"{local_ip}:{local_port}"
    hops: list[dict[str, Any]] = [{
        "hop": "client", "node": m.CLIENT_SERVICE, "source_ip": local_ip, "source_port": int(local_port),
        "client_ip": local_ip, "destination": f"{remote_ip}:{remote_port}", "url": url, "status": int(status)}]

    deadline = time.monotonic() + 5
    flow = haproxy = alb = None
    echo: dict[str, Any] = {}
    try:
        echo = json.loads(body)
    except ValueError:
        pass
    amzn_trace = echo.get("headers", {}).get("x-amzn-trace-id")
    skipped = None

    def found_all() -> bool:
        return bool(flow and (haproxy or skipped) and (alb or not amzn_trace))

    while time.monotonic() < deadline and not found_all():
        flow = flow or _find_flow(client, client_addr)
        skipped = haproxy_skipped(topology, flow.get("listener")) if flow else None
        haproxy = haproxy or (None if skipped else _find_haproxy(client, topology, trace))
        alb = alb or (_find_alb(client, amzn_trace) if amzn_trace else None)
        if not found_all():
            time.sleep(0.3)

    if flow:
        seen_ip, seen_port = _split(flow.get("source_seen_by_target") or "-")
        hops.append({
            "hop": "nlb", "node": flow["node"], "source_ip": _split(flow["client"])[0],
            "source_port": _split(flow["client"])[1], "client_ip": _split(flow["client"])[0],
            "listener": flow.get("listener"), "target": flow.get("target"), "target_addr": flow.get("target_addr"),
            "target_sees": f"{seen_ip}:{seen_port}", "proxy_protocol_v2": flow.get("proxy_protocol_v2")})
    else:
        hops.append({"hop": "nlb", "node": None, "source_ip": None, "missing": "no flow log entry found"})
    if haproxy:
        ci, cp = _split(haproxy["client"])
        hops.append({
            "hop": "haproxy", "node": haproxy["instance"], "source_ip": ci, "source_port": cp, "client_ip": ci,
            "tcp_peer": haproxy.get("conn"), "server": haproxy.get("server"),
            "server_addr": haproxy.get("server_addr"), "status": int(haproxy.get("status", "0"))})
    elif skipped:
        hops.append({"hop": "haproxy", "node": None, "source_ip": None, "skipped": skipped})
    else:
        hops.append({"hop": "haproxy", "node": None, "source_ip": None, "missing": "no HAProxy log line found"})
    xff = echo.get("headers", {}).get("x-forwarded-for", "")
    xff_list = [p.strip() for p in xff.split(",") if p.strip()]
    if alb:
        node, entry = alb
        ip, port = _split(entry.get("client:port", "-"))
        hops.append({
            "hop": "alb", "node": node, "source_ip": ip, "source_port": port,
            "client_ip": xff_list[0] if xff_list else None, "x_forwarded_for_sent": xff,
            "matched_rule_priority": entry.get("matched_rule_priority"), "target": entry.get("target:port"),
            "status": entry.get("elb_status_code"), "trace_id": entry.get("trace_id")})
    elif amzn_trace or echo:
        hops.append({"hop": "alb", "node": None, "source_ip": None, "missing": "no ALB access-log entry found"})
    if echo:
        peer = echo.get("peer", {})
        hops.append({
            "hop": "web", "node": echo.get("node"), "service": echo.get("service"), "source_ip": peer.get("ip"),
            "source_port": peer.get("port"), "client_ip": xff_list[0] if xff_list else None,
            "x_forwarded_for": xff, "path": echo.get("path")})
    return hops


def render_text(hops: list[dict[str, Any]]) -> str:
    lines = []
    for hop in hops:
        name = f"{hop['hop']:8} {hop.get('node') or '?':15}"
        if "skipped" in hop:
            lines.append(f"{hop['hop']:8} {'-':15} ({hop['skipped']})")
        elif "missing" in hop:
            lines.append(f"{name} ({hop['missing']})")
        elif hop["hop"] == "client":
            lines.append(f"{name} {hop['source_ip']}:{hop['source_port']} -> {hop['destination']}  {hop['url']}  "
                         f"HTTP {hop['status']}")
        elif hop["hop"] == "nlb":
            pp2 = " + PROXY v2 header" if hop.get("proxy_protocol_v2") else ""
            lines.append(f"{name} flow {hop['source_ip']}:{hop['source_port']} on {hop['listener']} -> "
                         f"{hop['target']} {hop['target_addr']}; target sees {hop['target_sees']}{pp2}")
        elif hop["hop"] == "haproxy":
            lines.append(f"{name} client {hop['source_ip']}:{hop['source_port']} (TCP peer {hop['tcp_peer']}) -> "
                         f"{hop['server']} {hop['server_addr']}  HTTP {hop['status']}")
        elif hop["hop"] == "alb":
            rule = hop["matched_rule_priority"]
            lines.append(f"{name} client {hop['source_ip']}:{hop['source_port']}, rule "
                         f"{'default' if rule == '0' else rule} -> {hop['target']}  HTTP {hop['status']}; "
                         f"X-Forwarded-For sent: {hop['x_forwarded_for_sent']}")
        elif hop["hop"] == "web":
            lines.append(f"{name} peer {hop['source_ip']}:{hop['source_port']} path {hop['path']}; "
                         f"X-Forwarded-For: {hop['x_forwarded_for']}")
    return "\n".join(lines)


def run(args) -> int:
    topology = current_topology(None)
    source = source_address(topology, args.source)
    client = docker_client()
    require_running(client)
    hops = collect(client, topology, str(source), args.url or f"https://{topology.site}/api/trace")
    print(json.dumps(hops, indent=2) if args.json else render_text(hops))
    return 0 if all("missing" not in h for h in hops) else 1
