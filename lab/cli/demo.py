"""`lab demo client-ip`: the design decision this lab exists for, shown side by side.

The same request, from the same client address, goes through each way of putting static IPs in
front of an ALB (aws-elb.md section 15): each topology is brought up in turn and `lab trace`'s
hops say what HAProxy and the web service saw. The table at the end is what an architecture
decision record needs: which design keeps the user's IP, and what each one costs.
"""

from __future__ import annotations

import contextlib
import json
import sys
import textwrap
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
                    "It replaces a running lab and leaves the last topology running.")
    parser.add_argument("scenario", choices=["client-ip"])
    parser.add_argument("--from", dest="source", default=DEFAULT_SOURCE, metavar="IP",
                        help=f"the client address to send from (default {DEFAULT_SOURCE})")
    parser.add_argument("--topologies", default=",".join(CLIENT_IP_TOPOLOGIES), metavar="NAME|FILE,...",
                        help="which topologies, in order (default: " + ",".join(CLIENT_IP_TOPOLOGIES) + ")")
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
               kept=app_ip == source, problems=[f"{h['hop']}: {h['missing']}" for h in hops if "missing" in h],
               hops=hops)


def table(rows: list[Row], source: str) -> str:
    header = ("topology", "NLB listener -> target type", "HAProxy's client (TCP peer)",
              "X-Forwarded-For at the app", "the app's client IP")
    cells = [header]
    for r in rows:
        haproxy = r.haproxy_client if r.haproxy_client == r.haproxy_tcp_peer else \
            f"{r.haproxy_client} (peer {r.haproxy_tcp_peer})"
        cells.append((r.topology, r.nlb_path, haproxy, r.x_forwarded_for or "-",
                      f"{r.app_client_ip or '-'} {'kept' if r.kept else 'LOST'}"))
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = [f"The client sent from {source}.", ""]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    lines.insert(3, "  ".join("-" * width for width in widths))
    lines += ["", "What each design costs:"]
    for r in rows:
        lines += textwrap.wrap(COSTS[r.kind], width=100, initial_indent=f"  {r.topology}: ",
                               subsequent_indent="    ")
    problems = [f"  {r.topology}: {f'HTTP {r.status}' if r.status else 'no answer'}; {'; '.join(r.problems)}"
                for r in rows if r.problems or r.status != 200]
    if problems:
        lines += ["", "Problems (run `lab trace` on that topology):", *problems]
    return "\n".join(lines)


def bring_up_each(topologies: list[tuple[str, m.Topology]], source: str, timeout: float) -> list[Row]:
    """Each topology up in turn, one request through it: its row."""
    names = ", ".join(spec for spec, _ in topologies)
    say(f"demo client-ip: one request from {source} through {len(topologies)} designs, each brought up in turn "
        f"({names}; about 30-60 s each); the lab is left running {topologies[-1][0]}")
    prepare_engine()
    client = docker_client()
    rows = []
    for number, (spec, topology) in enumerate(topologies, 1):
        step = f"[{number}/{len(topologies)}] {topology.name}"
        say(f"{step}: bringing it up ...")
        start(topology, spec, timeout)
        try:
            hops = collect(client, topology, source, f"https://{topology.site}/api/client-ip")
        except LabError as exc:  # a design that does not answer is a finding, not the end of the demo
            hops = [{"hop": "client", "node": m.CLIENT_SERVICE, "status": None, "missing": str(exc)}]
        rows.append(row(topology, source, hops))
        say(f"{step}: HTTP {rows[-1].status}; the web service got X-Forwarded-For: {rows[-1].x_forwarded_for or '-'}")
    return rows


def run(args) -> int:
    specs = [s.strip() for s in args.topologies.split(",")]
    if not all(specs):
        raise LabError(f"--topologies {args.topologies!r} has an empty name")
    topologies = [(spec, load_topology(spec)) for spec in specs]  # every file checked before anything starts
    source = [str(source_address(topology, args.source)) for _, topology in topologies][0]  # in every client range
    # With --json, stdout is the JSON document alone: the progress lines go to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        rows = bring_up_each(topologies, source, args.timeout)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print()
        print(table(rows, source))
        print(f"\nThe lab is left running {rows[-1].topology}; `lab trace --from {source}` shows its hops, "
              "`lab down` stops it.")
    return 0 if all(r.status == 200 and not r.problems for r in rows) else 1
