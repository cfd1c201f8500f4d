"""`lab demo`: the design decisions this lab exists for, shown side by side on the running chain.

- `client-ip`: the same request, from the same client address, goes through each way of putting
  static IPs in front of an ALB (aws-elb.md section 15); `lab trace`'s hops say what HAProxy and
  the web service saw.
- `alb-ip-change`: steady traffic while the ALB's addresses change (`lab alb rotate`), through a
  HAProxy that resolved the ALB's name once at start and through one that keeps re-resolving it.
- `xff-spoofing`: a request that carries the client's own X-Forwarded-For, under each of the ALB's
  X-Forwarded-For modes (`lab alb attributes`), and which address in what arrives the application
  can trust (field notes pain point 13).
- `proxy-v2-rollout`: a request through a design without and one with PROXY v2, each as
  configured and then with only the NLB's side changed (field notes pain point 1).

Each topology is brought up in turn; the table at the end is what an architecture decision record
needs: what each design does to real requests, and what it costs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from lab import model as m
from lab.cli._common import seconds_arg
from lab.cli.curl import source_address
from lab.cli.trace import collect
from lab.cli.up import prepare_engine, say, start
from lab.errors import LabError
from lab.load import load_topology
from lab.runtime import docker_client
from services.alb_sim.nodes import RETIRE_GRACE_SECONDS

# Ending on `default` leaves the lab as `make up` would.
CLIENT_IP_TOPOLOGIES = ("nlb-ip", "ip-proxy-v2", "nlb-alb", "default")
DEFAULT_SOURCE = "198.51.100.123"

# What each design costs, by how the client's address travels. From AWS's NLB documentation as the
# reference gathers it (aws-elb.md sections 2, 3, 7, 15) and the failures users report
# (field-notes.md pain points 1, 2, 11, 12); docs/nlb.md's target-type matrix says the same.
COSTS = {
    "lost": "ip targets over TCP or TLS do not keep the client's address by default "
            "(preserve_client_ip.enabled is false): HAProxy, and so the application, see the NLB node's "
            "private address. Turn on PROXY v2 (with HAProxy's accept-proxy) or preserve_client_ip.",
    "proxy_v2": "the NLB sends a PROXY v2 header before the TLS handshake and HAProxy reads it (accept-proxy); "
                "this works for ip targets such as Fargate tasks. Both sides must change together or every "
                "connection breaks, and health checks carry the header too.",
    "preserved": "the NLB keeps the client's address as the TCP source, so HAProxy's peer is the user. "
                 "HAProxy must run on the registered instances, and a target cannot reach itself through the "
                 "NLB (no hairpin with client IP preservation).",
    "alb": "no HAProxy to run or to keep re-resolving the ALB: the NLB follows the ALB's addresses itself "
           "(target type alb, since 2021-09). The NLB listener must be TCP, so TLS and the ACM certificate "
           "move to the ALB; one ALB per target group, whose attributes stay at AWS's defaults.",
}


def register(verbs) -> None:
    parser = verbs.add_parser(
        "demo", help="bring up each design in turn and show, side by side, what the application saw",
        description="client-ip: one request from the same client address through each way of keeping the "
                    "user's IP behind static Elastic IPs (topologies " + ", ".join(CLIENT_IP_TOPOLOGIES) + "), "
                    "then a table of what HAProxy and the web service saw and what each design costs. "
                    "alb-ip-change: steady requests while `lab alb rotate` gives the ALB new addresses, through "
                    "a HAProxy that resolved the ALB's name once (haproxy-resolve-once) and one that re-resolves "
                    "it (default), then a table of what the requests got. xff-spoofing: one request carrying the "
                    "client's own X-Forwarded-For under each of the ALB's X-Forwarded-For modes (on default), then "
                    "which address the application can trust. proxy-v2-rollout: one request through nlb-ip and "
                    "ip-proxy-v2 as configured, then with the NLB's proxy_protocol_v2.enabled changed alone, and "
                    "what HAProxy and the NLB's health checks made of it. Each replaces a running lab and leaves "
                    "the last topology running.")
    parser.add_argument("scenario", choices=list(SCENARIOS))
    parser.add_argument("--from", dest="source", default=DEFAULT_SOURCE, metavar="IP",
                        help=f"the client address to send from (default {DEFAULT_SOURCE})")
    parser.add_argument("--topologies", default=None, metavar="NAME|FILE,...",
                        help="which topologies, in order (default: client-ip " + ",".join(CLIENT_IP_TOPOLOGIES)
                        + "; alb-ip-change " + ",".join(ALB_IP_CHANGE_TOPOLOGIES) + "; xff-spoofing "
                        + ",".join(XFF_SPOOFING_TOPOLOGIES) + "; proxy-v2-rollout " + ",".join(PROXY_V2_TOPOLOGIES)
                        + ")")
    parser.add_argument("--seconds", type=seconds_arg(10, 600, low_allowed=True), default=45,
                        help="alb-ip-change: how long the traffic runs (default 45; the rotation comes after 5 s)")
    parser.add_argument("--drain-seconds", type=seconds_arg(0, 60, low_allowed=True), default=8,
                        help="alb-ip-change: how long the old ALB nodes drain (default 8)")
    parser.add_argument("--spoof", type=spoof_arg, default=DEFAULT_SPOOF, metavar="TEXT",
                        help="xff-spoofing: what the client claims in its own X-Forwarded-For "
                             f"(default {DEFAULT_SPOOF})")
    parser.add_argument("--timeout", type=seconds_arg(0, 86400, low_allowed=False), default=180,
                        help="seconds to wait for each topology's health (default 180)")
    parser.add_argument("--json", action="store_true", help="print the rows, with every hop, as JSON")
    parser.set_defaults(run=run)


def design(topology: m.Topology, listener_name: str | None = None) -> tuple[str, str]:
    """(kind, description) of the NLB listener the flow came in on (`TLS:443`, from its flow log;
    the first listener when unknown) and the target group behind it."""
    listeners = topology.nlb.listeners
    listener = next((ls for ls in listeners if f"{ls.protocol}:{ls.port}" == listener_name), listeners[0])
    tg = topology.nlb.target_group(listener.target_group)
    return tg.client_ip_kind, f"{listener.protocol}:{listener.port} -> {tg.target_type}" + {
        "alb": " (no HAProxy)", "proxy_v2": " + PROXY v2", "preserved": ", client IP preserved",
        "lost": ", client IP not preserved"}[tg.client_ip_kind]


def collect_or_failure(client, topology: m.Topology, source: str, url: str,
                       headers: Sequence[str] = ()) -> list[dict[str, Any]]:
    """`lab trace`'s hops for one request; a request that fails is a client hop saying why (a design
    that does not answer is a finding, not the end of the demo)."""
    try:
        return collect(client, topology, source, url, headers)
    except LabError as exc:
        return [{"hop": "client", "node": m.CLIENT_SERVICE, "status": None, "missing": str(exc)}]


def hop_problems(hops: list[dict[str, Any]]) -> list[str]:
    return [f"{h['hop']}: {h['missing']}" for h in hops if "missing" in h]


def problem_line(name: str, status: int | None, problems: list[str]) -> str:
    return f"  {name}: {f'HTTP {status}' if status else 'no answer'}; {'; '.join(problems)}"


@dataclass
class Row:
    topology: str
    kind: str
    nlb_path: str
    status: int | None  # what the client got
    haproxy_client: str  # the client address HAProxy logged (from PROXY v2 or its TCP peer)
    haproxy_tcp_peer: str
    x_forwarded_for: str  # as the web service received it
    app_client_ip: str | None  # the first X-Forwarded-For address
    kept: bool
    problems: list[str]
    hops: list[dict[str, Any]]


def row(topology: m.Topology, source: str, hops: list[dict[str, Any]]) -> Row:
    """One design's line of the table, from `lab trace`'s hops."""
    by_hop = {hop["hop"]: hop for hop in hops}
    kind, described = design(topology, by_hop.get("nlb", {}).get("listener"))
    haproxy, web = by_hop.get("haproxy", {}), by_hop.get("web", {})
    if "skipped" in haproxy:
        haproxy_client = haproxy_peer = "not on the path"
    elif haproxy.get("node"):
        haproxy_client = str(haproxy["source_ip"])
        haproxy_peer = (haproxy.get("tcp_peer") or "-").rpartition(":")[0] or "-"
    else:
        haproxy_client = haproxy_peer = "?"
    app_ip = web.get("client_ip")
    return Row(topology=topology.name, kind=kind, nlb_path=described, status=by_hop["client"].get("status"),
               haproxy_client=haproxy_client, haproxy_tcp_peer=haproxy_peer,
               x_forwarded_for=web.get("x_forwarded_for", "") if web else "?", app_client_ip=app_ip,
               kept=app_ip == source, problems=hop_problems(hops), hops=hops)


def layout(intro: list[str], cells: Sequence[tuple[str, ...]], costs: list[tuple[str, str]]) -> list[str]:
    """The intro lines, `cells` in aligned columns (a rule under the header row), then what each
    design costs, wrapped at 100 columns."""
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    aligned = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    lines = [*intro, aligned[0], "  ".join("-" * width for width in widths), *aligned[1:], "",
             "What each design costs:"]
    for topology, text in costs:
        lines += textwrap.wrap(text, width=100, initial_indent=f"  {topology}: ", subsequent_indent="    ")
    return lines


def table(rows: list[Row], source: str) -> str:
    header = ("topology", "NLB listener -> target type", "HAProxy's client (TCP peer)",
              "X-Forwarded-For at the app", "the app's client IP")
    cells = [header]
    for r in rows:
        haproxy = r.haproxy_client if r.haproxy_client == r.haproxy_tcp_peer else \
            f"{r.haproxy_client} (peer {r.haproxy_tcp_peer})"
        cells.append((r.topology, r.nlb_path, haproxy, r.x_forwarded_for or "-",
                      f"{r.app_client_ip or '-'} {'kept' if r.kept else 'LOST'}"))
    lines = layout([f"The client sent from {source}.", ""], cells, [(r.topology, COSTS[r.kind]) for r in rows])
    problems = [problem_line(r.topology, r.status, r.problems) for r in rows if r.problems or r.status != 200]
    if problems:
        lines += ["", "Problems (run `lab trace` on that topology):", *problems]
    return "\n".join(lines)


# ---- alb-ip-change -------------------------------------------------------------------------------

# Runs in the client container: two workers (one keep-alive, one a new connection per request) send
# GET PATH to the site for SECONDS; prints [time, status, web service's TCP peer, error] per request.
TRAFFIC = r"""
import http.client, json, ssl, sys, threading, time
seconds = float(sys.argv[1])
path = sys.argv[2] if len(sys.argv) > 2 else "/api/steady"
site = sys.argv[3] if len(sys.argv) > 3 else "www.lab.test"
ctx = ssl.create_default_context(cafile="/lab/certs/public-ca.pem")
results = []
lock = threading.Lock()
def worker(keep_alive):
    conn = None
    end = time.time() + seconds
    while time.time() < end:
        try:
            if conn is None:
                conn = http.client.HTTPSConnection(site, 443, context=ctx, timeout=20)
            conn.request("GET", path, headers={"Connection": "keep-alive" if keep_alive else "close"})
            resp = conn.getresponse()
            body = resp.read()
            peer = json.loads(body)["peer"]["ip"] if resp.status == 200 else None
            item = (time.time(), resp.status, peer, None)
            if not keep_alive or resp.getheader("Connection", "").lower() == "close":
                conn.close(); conn = None
        except Exception as exc:
            item = (time.time(), None, None, repr(exc))
            if conn is not None:
                conn.close()
            conn = None
        with lock:
            results.append(item)
        time.sleep(0.02)
threads = [threading.Thread(target=worker, args=(ka,)) for ka in (True, False)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(results))
"""
ALB_IP_CHANGE_TOPOLOGIES = ("haproxy-resolve-once", "default")
ROTATE_AFTER = 5.0  # seconds of traffic before the rotation
# After the drain, a retiring node's busy connections get up to RETIRE_GRACE_SECONDS before its
# address goes; a HAProxy that resolved once then needs about 10 s more (3 failed checks 2 s apart,
# a 5 s connect timeout) to mark its one server down and answer 503. The traffic must outlast both.
AFTER_DRAIN = RETIRE_GRACE_SECONDS + 10

RESOLVE_COSTS = {
    "startup": "HAProxy resolved the ALB's name once, at start, and keeps that address. AWS changes an "
               "ALB's addresses when it scales or replaces nodes; once the old nodes are gone, every request "
               "gets HAProxy's 503 until HAProxy restarts. A config without a resolvers section (or nginx's "
               "proxy_pass to a name) behaves like this.",
    "runtime": "a resolvers section with short holds re-resolves the ALB's name every second, and "
               "server-template gives each address its own server slot: HAProxy moves to the new nodes while "
               "the old ones drain, and no request fails.",
}


@dataclass
class RotationRow:
    topology: str
    resolve: str  # haproxy.resolve
    requests: int
    ok: int
    failures: dict[str, int]  # "503" or the client's error -> count
    first_failure_after: float | None  # seconds after the rotation
    old_addresses: list[str]
    new_addresses: list[str]
    served_after_drain_by: list[str]  # ALB node addresses the web service saw after the drain


def rotation_row(topology: m.Topology, results: list[list[Any]], rotated: dict[str, Any], rotated_at: float,
                 drain: float) -> RotationRow:
    failures: dict[str, int] = {}
    first: float | None = None
    for at, status, _, error in results:
        if status != 200:
            key = str(status) if status is not None else (error or "no answer").split("(")[0]
            failures[key] = failures.get(key, 0) + 1
            first = at - rotated_at if first is None else min(first, at - rotated_at)
    after_drain = sorted({peer for at, status, peer, _ in results if status == 200 and at > rotated_at + drain + 2})
    return RotationRow(
        topology=topology.name, resolve=topology.haproxy.resolve, requests=len(results),
        ok=sum(1 for r in results if r[1] == 200), failures=failures,
        first_failure_after=None if first is None else round(first, 1),
        old_addresses=sorted(n["Address"] for n in rotated["Draining"]),
        new_addresses=sorted(n["Address"] for n in rotated["New"]), served_after_drain_by=after_drain)


def rotation_table(rows: list[RotationRow], drain: float) -> str:
    header = ("topology", "HAProxy finds the ALB", "requests ok", "failed", "first failure",
              "ALB addresses serving after the drain")
    cells = [header]
    for r in rows:
        failed = ", ".join(f"{n} x {k}" for k, n in sorted(r.failures.items())) or "none"
        first = "-" if r.first_failure_after is None else f"{r.first_failure_after:g} s after the rotation"
        cells.append((r.topology, haproxy_finds_alb(r.resolve), f"{r.ok}/{r.requests}", failed, first,
                      ", ".join(r.served_after_drain_by) or "none"))
    intro = [f"`lab alb rotate` {ROTATE_AFTER:g} s into the traffic: the ALB's addresses went from "
             f"{', '.join(rows[-1].old_addresses)} to {', '.join(rows[-1].new_addresses)};",
             f"the old nodes drained for {drain:g} s, then went away (a busy connection delays that by up to "
             f"{RETIRE_GRACE_SECONDS:g} s).", ""]
    return "\n".join(layout(intro, cells, [(r.topology, RESOLVE_COSTS[r.resolve]) for r in rows]))


def haproxy_finds_alb(resolve: str) -> str:
    return "resolved once at start" if resolve == "startup" else "re-resolved every 1 s"


def rotate_under_traffic(client, topology: m.Topology, seconds: float, drain: float) -> RotationRow:
    """Steady traffic from the client container; `lab alb rotate` after ROTATE_AFTER seconds."""
    from lab.cli.alb import admin_call
    from lab.runtime import exec_in

    with ThreadPoolExecutor(1) as pool:
        traffic = pool.submit(exec_in, client, m.CLIENT_SERVICE,
                              ["python3", "-c", TRAFFIC, str(seconds), "/api/steady", topology.site])
        time.sleep(ROTATE_AFTER)
        rotated = admin_call("POST", "/rotate", {"DrainSeconds": drain})
        rotated_at = time.time()
        say(f"  rotated: {', '.join(n['Address'] for n in rotated['Draining'])} -> "
            f"{', '.join(n['Address'] for n in rotated['New'])}; old nodes gone in {drain:g} s")
        code, out, err = traffic.result()
    if code != 0:
        raise LabError(f"the traffic in the client container failed: {err.decode(errors='replace').strip()[-200:]}")
    # The client container's clock is the host's (one kernel), so its times compare with rotated_at.
    return rotation_row(topology, json.loads(out), rotated, rotated_at, drain)


# ---- xff-spoofing ---------------------------------------------------------------------------------

XFF_SPOOFING_TOPOLOGIES = ("default",)
XFF_MODE = "routing.http.xff_header_processing.mode"
XFF_MODES = ("append", "preserve", "remove")  # AWS's values, the default first
DEFAULT_SPOOF = "127.0.0.1"

def xff_meaning(mode: str, haproxy: bool) -> str:
    """What `mode` does to the request, with or without HAProxy (and its `option forwardfor`) in front."""
    if mode == "append":
        came_from = "HAProxy's; HAProxy had appended the client's" if haproxy else \
            "the client's, with no HAProxy in front"
        return (f"AWS's default. The ALB appends the address the request came from ({came_from})"
                " to the X-Forwarded-For it received: whatever the client wrote stays in front. An application "
                "must count its own proxies from the right and take the address the first of them added, never "
                "the first address.")
    if mode == "preserve":
        return ("the ALB forwards X-Forwarded-For as it received it and adds nothing: "
                + ("the last address is the one HAProxy added, the client's, with the client's own text still in "
                   "front of it." if haproxy else
                   "with no HAProxy in front, nothing on the way adds the client's address; only the client's own "
                   "text arrives."))
    return ("the ALB deletes X-Forwarded-For: the application cannot be fooled, and cannot know the client's "
            "address either. For targets that must not see client addresses.")


@dataclass
class XffModeRow:
    mode: str  # routing.http.xff_header_processing.mode
    haproxy: bool  # HAProxy on the request's path
    status: int | None
    x_forwarded_for: str | None  # as the web service received it; None: no header
    first_address: str | None  # what an application that trusts the first address takes
    added_by_the_chain: int  # how many addresses from the right the lab's HAProxy and ALB added
    client_address: str | None  # the address the first of them added: what the application should take
    problems: list[str]
    hops: list[dict[str, Any]]


@dataclass
class XffSpoofRow:
    topology: str
    spoof: str  # what the client put in its own X-Forwarded-For
    modes: list[XffModeRow]


def xff_mode_row(topology: m.Topology, mode: str, hops: list[dict[str, Any]]) -> XffModeRow:
    """What the web service got under one mode, and which address in it the lab's own proxies vouch
    for: HAProxy (when on the path: `option forwardfor` adds its client) and, in append mode, the ALB."""
    by_hop = {hop["hop"]: hop for hop in hops}
    kind, _ = design(topology, by_hop.get("nlb", {}).get("listener"))
    added = (kind != "alb") + (mode == "append")
    web = by_hop.get("web") or {}
    xff = web.get("x_forwarded_for") or None
    addresses = [a.strip() for a in xff.split(",")] if xff else []
    return XffModeRow(
        mode=mode, haproxy=kind != "alb", status=by_hop["client"].get("status"), x_forwarded_for=xff,
        first_address=addresses[0] if addresses else None,
        added_by_the_chain=added if addresses else 0,
        client_address=addresses[-added] if addresses and 0 < added <= len(addresses) else None,
        problems=hop_problems(hops), hops=hops)


def from_the_right(n: int) -> str:
    return {1: "the last", 2: "second from the right", 3: "third from the right"}.get(n, f"{n}th from the right")


def xff_table(row: XffSpoofRow, source: str) -> str:
    header = ("ALB xff mode", "X-Forwarded-For at the app", "first address", "the client's address")
    cells = [header]
    for r in row.modes:
        first = "-" if r.first_address is None else \
            f"{r.first_address} {'SPOOFED' if r.first_address != source else 'right'}"
        if r.x_forwarded_for is None:
            client = "LOST (no X-Forwarded-For)"
        elif r.client_address is None:
            client = "LOST (the chain added none of it)"
        else:
            client = f"{r.client_address} ({from_the_right(r.added_by_the_chain)})"
        cells.append((r.mode, r.x_forwarded_for or "-", first, client))
    intro = [f"The client sent from {source} with its own \"X-Forwarded-For: {row.spoof}\" through {row.topology};",
             "the ALB's routing.http.xff_header_processing.mode was set to each value in turn.", ""]
    lines = layout(intro, cells, [(r.mode, xff_meaning(r.mode, r.haproxy)) for r in row.modes])
    lines[lines.index("What each design costs:")] = "What each mode means:"
    problems = [problem_line(r.mode, r.status, r.problems) for r in row.modes if r.problems or r.status != 200]
    if problems:
        lines += ["", "Problems (run `lab trace` to see the hops):", *problems]
    return "\n".join(lines)


def xff_modes_in_turn(client, topology: m.Topology, source: str, spoof: str) -> list[XffModeRow]:
    """The same spoofed request under each X-Forwarded-For mode; the ALB's mode is put back after."""
    from lab.cli.alb import admin_call

    def set_mode(mode: str) -> None:
        admin_call("POST", "/attributes", {"Attributes": [{"Key": XFF_MODE, "Value": mode}]})

    before = {a["Key"]: a["Value"] for a in admin_call("GET", "/attributes")["Attributes"]}.get(XFF_MODE, "append")
    rows = []
    try:
        for mode in XFF_MODES:
            set_mode(mode)
            hops = collect_or_failure(client, topology, source, f"https://{topology.site}/api/client-ip",
                                      headers=[f"X-Forwarded-For: {spoof}"])
            rows.append(xff_mode_row(topology, mode, hops))
    finally:
        set_mode(before)
    return rows


def spoof_arg(text: str) -> str:
    if not text or len(text) > 200 or not text.isascii() or not text.isprintable() or "," in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not one address-like value (printable ASCII, no comma, "
                                          "at most 200 characters)")
    return text


# ---- proxy-v2-rollout ---------------------------------------------------------------------------

PROXY_V2_TOPOLOGIES = ("nlb-ip", "ip-proxy-v2")
PROXY_V2 = "proxy_protocol_v2.enabled"
HEALTH_SETTLE = 2.0  # seconds beyond the health checks' interval x unhealthy threshold

PROXY_V2_LESSON = (
    "PROXY v2 is a contract between the NLB target group and HAProxy's bind line (accept-proxy). "
    "Changing either side alone breaks every new connection: HAProxy reads the NLB's header as the "
    "TLS handshake, or waits for a header that never comes. The NLB's TCP health checks only open a "
    "connection, so they stay healthy and the NLB keeps sending every client to targets that reject "
    "them. Connections opened before the change keep working: the NLB applies the attribute to new "
    "flows. Change both sides in one step, or bring up the new side beside the old (a second "
    "target group and HAProxy port) and move the listener to it.")


@dataclass
class ProxyV2State:
    nlb_sends: bool  # the target groups' proxy_protocol_v2.enabled
    haproxy_expects: bool  # HAProxy binds with accept-proxy
    changed: bool  # the NLB's side was changed at run time, HAProxy's not
    status: int | None  # what the client got
    error: str | None  # why the client got no answer
    app_client_ip: str | None  # the first X-Forwarded-For address at the web service
    haproxy_log: list[str]  # what HAProxy logged about connections in the meantime
    target_health: list[str]  # the NLB's view of each target after the health checks had time to react
    health_after: float  # seconds after the request that target_health was read
    hops: list[dict[str, Any]]


@dataclass
class ProxyV2Row:
    topology: str
    states: list[ProxyV2State]  # as the topology configures it, then with the NLB's side changed


def proxy_v2_groups(topology: m.Topology) -> list[m.NlbTargetGroup]:
    """The target groups PROXY v2 applies to (AWS: an alb target group's attributes stay at the defaults)."""
    return [tg for tg in topology.nlb.target_groups if tg.target_type != "alb"]


def configured_proxy_v2(topology: m.Topology) -> bool:
    return all(tg.proxy_protocol_v2 for tg in proxy_v2_groups(topology))


def proxy_v2_state(topology: m.Topology, sends: bool, hops: list[dict[str, Any]], haproxy_log: list[str],
                   health: list[str], health_after: float) -> ProxyV2State:
    by_hop = {hop["hop"]: hop for hop in hops}
    failed = next((h["missing"] for h in hops if h["hop"] == "client" and "missing" in h), None)
    return ProxyV2State(
        nlb_sends=sends, haproxy_expects=topology.haproxy.accept_proxy, changed=sends != configured_proxy_v2(topology),
        status=by_hop["client"].get("status"), error=failed,
        app_client_ip=(by_hop.get("web") or {}).get("client_ip"), haproxy_log=haproxy_log,
        target_health=health, health_after=health_after, hops=hops)


def proxy_v2_table(rows: list[ProxyV2Row], source: str) -> str:
    header = ("topology", "NLB sends PROXY v2", "HAProxy accept-proxy", "the request", "the app's client IP",
              "NLB target health")
    cells = [header]
    for r in rows:
        for st in r.states:
            answer = f"HTTP {st.status}" if st.status else f"FAILED ({short_error(st.error)})"
            health = ", ".join(sorted(set(st.target_health))) or "?"
            app = "-" if st.app_client_ip is None else \
                f"{st.app_client_ip} {'kept' if st.app_client_ip == source else 'LOST'}"
            cells.append((r.topology, ("yes" if st.nlb_sends else "no") + (" (changed)" if st.changed else ""),
                          "yes" if st.haproxy_expects else "no", answer, app,
                          f"{health} {st.health_after:g} s later" if st.health_after else health))
    intro = [f"One request from {source} through each topology as configured, then again after",
             f"`lab nlb modify-target-group-attributes {PROXY_V2}=...` changed only the NLB's side.", ""]
    lines = layout(intro, cells, [])
    lines[lines.index("What each design costs:")] = "What this shows:"
    lines += textwrap.wrap(PROXY_V2_LESSON, width=100, initial_indent="  ", subsequent_indent="  ")
    logged = [(r.topology, st) for r in rows for st in r.states if st.changed and st.haproxy_log]
    if logged:
        lines += ["", "What HAProxy logged while the sides disagreed (health checks included):"]
        for topology, st in logged:
            count = f"{len(st.haproxy_log)} lines, the last" if len(st.haproxy_log) > 1 else "1 line"
            lines += [f"  {topology}: {count}:", f"    {st.haproxy_log[-1]}"]
    return "\n".join(lines)


def short_error(error: str | None) -> str:
    """curl's complaint, short: `curl: (35) OpenSSL SSL_connect: Connection reset by peer in connection
    to www.lab.test:443` -> `OpenSSL SSL_connect: Connection reset by peer`."""
    text = re.sub(r"^curl: \(\d+\) ", "", (error or "no answer").removeprefix("the request failed: ").strip())
    text = text.split(" in connection to ")[0]
    return text if len(text) <= 60 else text[:57] + "..."


def flip_proxy_v2(client, topology: m.Topology, enabled: bool) -> None:
    from lab.cli.nlb import nlb_call

    for tg in proxy_v2_groups(topology):
        nlb_call(client, topology, "/modify-target-group-attributes", {
            "TargetGroupName": tg.name, "Attributes": [{"Key": PROXY_V2, "Value": str(enabled).lower()}]})


def target_health(client, topology: m.Topology, tg: m.NlbTargetGroup) -> list[str]:
    from lab.cli.nlb import nlb_call

    doc = nlb_call(client, topology, f"/target-health?target_group={tg.name}")
    return [d["TargetHealth"]["State"] for d in doc["TargetHealthDescriptions"]]


def haproxy_lines_since(client, topology: m.Topology, since: float) -> list[str]:
    """HAProxy's log lines from `since` on, both instances, in time order; request lines excluded."""
    from lab.runtime import container

    lines = []
    for instance in topology.haproxy.instances:
        text = container(client, instance.name).logs(since=int(since), timestamps=True).decode(errors="replace")
        lines += [line for line in text.splitlines() if 'trace="' not in line]
    return [line.partition(" ")[2] for line in sorted(lines)]


def proxy_v2_both_ways(client, topology: m.Topology, source: str) -> ProxyV2Row:
    """One request as configured, then the NLB's side flipped (HAProxy's unchanged): another request,
    HAProxy's log and the NLB's target health once its checks have had time to react; then the
    NLB's side is set back."""
    configured = configured_proxy_v2(topology)
    watched = topology.nlb.target_group(topology.nlb.listeners[0].target_group)  # the first listener's
    url = f"https://{topology.site}/api/proxy-v2"

    def state(sends: bool, wait: float) -> ProxyV2State:
        started = time.time()
        hops = collect_or_failure(client, topology, source, url)
        time.sleep(wait)
        return proxy_v2_state(topology, sends, hops, haproxy_lines_since(client, topology, started),
                              target_health(client, topology, watched), wait)

    states = [state(configured, 0.0)]
    flip_proxy_v2(client, topology, not configured)
    try:
        check = watched.health_check
        states.append(state(not configured, check.interval_seconds * check.unhealthy_threshold + HEALTH_SETTLE))
    finally:
        flip_proxy_v2(client, topology, configured)
    return ProxyV2Row(topology.name, states)


# ---- the scenarios ----------------------------------------------------------------------------------

class ClientIpDemo:
    """One request from `source` through each design; a design that does not answer is an error."""

    topologies = CLIENT_IP_TOPOLOGIES

    def __init__(self, args, source: str) -> None:
        self.source = source

    def announce(self) -> tuple[str, str]:
        return f"one request from {self.source}", "about 30-60 s each"

    def measure(self, client, topology: m.Topology, step: str) -> Row:
        return row(topology, self.source,
                   collect_or_failure(client, topology, self.source, f"https://{topology.site}/api/client-ip"))

    def progress(self, r: Row) -> str:
        return f"HTTP {r.status}; the web service got X-Forwarded-For: {r.x_forwarded_for or '-'}"

    def report(self, rows: list[Row]) -> str:
        return (f"{table(rows, self.source)}\n\nThe lab is left running {rows[-1].topology}; "
                f"`lab trace --from {self.source}` shows its hops, `lab down` stops it.")

    def exit_code(self, rows: list[Row]) -> int:
        return 0 if all(r.status == 200 and not r.problems for r in rows) else 1


class AlbIpChangeDemo:
    """Steady traffic and a rotation through each design; failed requests are what it shows, so only
    a run that could not be made is an error."""

    topologies = ALB_IP_CHANGE_TOPOLOGIES

    def __init__(self, args, source: str) -> None:
        self.seconds, self.drain = args.seconds, args.drain_seconds
        if self.seconds < ROTATE_AFTER + self.drain + AFTER_DRAIN:
            raise LabError(f"--seconds {self.seconds:g} is too short to see what follows the drain: at least "
                           f"{ROTATE_AFTER + self.drain + AFTER_DRAIN:g} with --drain-seconds {self.drain:g}")

    def announce(self) -> tuple[str, str]:
        return f"{self.seconds:g} s of steady requests and an ALB rotation", f"about {self.seconds + 30:g} s each"

    def measure(self, client, topology: m.Topology, step: str) -> RotationRow:
        say(f"{step}: {self.seconds:g} s of requests; the ALB rotates after {ROTATE_AFTER:g} s ...")
        return rotate_under_traffic(client, topology, self.seconds, self.drain)

    def progress(self, r: RotationRow) -> str:
        return f"{r.ok} of {r.requests} requests answered 200"

    def report(self, rows: list[RotationRow]) -> str:
        return (f"{rotation_table(rows, self.drain)}\n\nThe lab is left running {rows[-1].topology}; "
                "`lab alb nodes` shows the ALB's addresses, `lab down` stops it.")

    def exit_code(self, rows: list[RotationRow]) -> int:
        return 0


class XffSpoofingDemo:
    """One request carrying the client's own X-Forwarded-For, under each of the ALB's modes; a
    request that gets no answer is an error."""

    topologies = XFF_SPOOFING_TOPOLOGIES

    def __init__(self, args, source: str) -> None:
        self.source, self.spoof = source, args.spoof

    def announce(self) -> tuple[str, str]:
        return (f"one request from {self.source} claiming \"X-Forwarded-For: {self.spoof}\" under each of the ALB's "
                "X-Forwarded-For modes", "about 30-60 s")

    def measure(self, client, topology: m.Topology, step: str) -> XffSpoofRow:
        say(f"{step}: the same request with the ALB's {XFF_MODE} set to {', '.join(XFF_MODES)} in turn ...")
        return XffSpoofRow(topology.name, self.spoof, xff_modes_in_turn(client, topology, self.source, self.spoof))

    def progress(self, r: XffSpoofRow) -> str:
        return "; ".join(f"{m.mode}: {m.x_forwarded_for or 'no X-Forwarded-For'}" for m in r.modes)

    def report(self, rows: list[XffSpoofRow]) -> str:
        tables = "\n\n".join(xff_table(r, self.source) for r in rows)
        return (f"{tables}\n\nThe lab is left running {rows[-1].topology}, the ALB's X-Forwarded-For mode set back "
                "to the topology's\n(`lab alb attributes`); `lab down` stops it.")

    def exit_code(self, rows: list[XffSpoofRow]) -> int:
        return 0 if all(r.status == 200 and not r.problems for row in rows for r in row.modes) else 1


class ProxyV2RolloutDemo:
    """Each side of PROXY v2 as configured, then the NLB's side changed alone; the failures are what
    it shows, so only a configuration that does not answer as configured is an error."""

    topologies = PROXY_V2_TOPOLOGIES

    def __init__(self, args, source: str) -> None:
        self.source = source

    def announce(self) -> tuple[str, str]:
        return (f"one request from {self.source} as configured, then with only the NLB's {PROXY_V2} changed",
                "about 60 s each")

    def measure(self, client, topology: m.Topology, step: str) -> ProxyV2Row:
        say(f"{step}: a request as configured, then {PROXY_V2} changed on the NLB alone, a request, and the "
            "NLB's health checks watched; then set back ...")
        return proxy_v2_both_ways(client, topology, self.source)

    def progress(self, r: ProxyV2Row) -> str:
        return "; ".join(f"PROXY v2 {'on' if st.nlb_sends else 'off'} at the NLB: "
                         + (f"HTTP {st.status}" if st.status else "no answer") for st in r.states)

    def report(self, rows: list[ProxyV2Row]) -> str:
        return (f"{proxy_v2_table(rows, self.source)}\n\nThe lab is left running {rows[-1].topology}, the NLB's "
                f"{PROXY_V2} set back to the topology's; `lab down` stops it.")

    def exit_code(self, rows: list[ProxyV2Row]) -> int:
        return 0 if all(st.status == 200 for r in rows for st in r.states if not st.changed) else 1


Demo = ClientIpDemo | AlbIpChangeDemo | XffSpoofingDemo | ProxyV2RolloutDemo
SCENARIOS: dict[str, type[Demo]] = {
    "client-ip": ClientIpDemo, "alb-ip-change": AlbIpChangeDemo, "xff-spoofing": XffSpoofingDemo,
    "proxy-v2-rollout": ProxyV2RolloutDemo}


def bring_up_each(demo: Demo, name: str, topologies: list[tuple[str, m.Topology]],
                  timeout: float) -> list[Any]:
    """Each topology up in turn, the scenario's traffic through it: its row."""
    what, each = demo.announce()
    say(f"demo {name}: {what} through {len(topologies)} designs, each brought up in turn "
        f"({', '.join(spec for spec, _ in topologies)}; {each}); the lab is left running {topologies[-1][0]}")
    prepare_engine()
    client = docker_client()
    rows: list[Any] = []
    for number, (spec, topology) in enumerate(topologies, 1):
        step = f"[{number}/{len(topologies)}] {topology.name}"
        say(f"{step}: bringing it up ...")
        start(topology, spec, timeout)
        rows.append(demo.measure(client, topology, step))
        say(f"{step}: {demo.progress(rows[-1])}")
    return rows


def run(args) -> int:
    kind = SCENARIOS[args.scenario]
    text = args.topologies if args.topologies is not None else ",".join(kind.topologies)
    specs = [s.strip() for s in text.split(",")]
    if not all(specs):
        raise LabError(f"--topologies {text!r} has an empty name")
    topologies = [(spec, load_topology(spec)) for spec in specs]  # every file checked before anything starts
    for _, topology in topologies:  # --from must be in every topology's client range
        source_address(topology, args.source)
    demo = kind(args, str(source_address(topologies[0][1], args.source)))
    # With --json, stdout is the JSON document alone: the progress lines go to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        rows = bring_up_each(demo, args.scenario, topologies, args.timeout)
    print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else f"\n{demo.report(rows)}")
    return demo.exit_code(rows)
