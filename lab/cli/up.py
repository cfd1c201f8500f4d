"""`lab up`: certificates, configs, image, containers; waits until every target is healthy."""

from __future__ import annotations

import time

from lab import model as m
from lab.certs import ensure_certificates
from lab.cli._common import (add_topology_option, clear_state, compose_file_in_use, running_state, save_state,
                             seconds_arg, target_health)
from lab.errors import EngineError, LabError
from lab.load import load_topology
from lab.render import ROOT, compose_path, render_all
from lab.runtime import Compose, build_image, docker_client, ensure_engine, wait_healthy


def say(message: str) -> None:
    print(f"lab: {message}", flush=True)


def register(verbs) -> None:
    parser = verbs.add_parser("up", help="bring the whole chain up and wait until it is healthy")
    add_topology_option(parser)
    parser.add_argument("--timeout", type=seconds_arg(0, 86400, low_allowed=False), default=180,
                        help="seconds to wait for health (default 180)")
    parser.set_defaults(run=run)


def wait_targets_healthy(client, topology: m.Topology, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = 0.0
    while True:
        try:
            health = target_health(client, topology)
            pending = [f"{lb}/{tg}/{d['Target']['Id']}={d['TargetHealth']['State']}"
                       for (lb, tg), descriptions in health.items() for d in descriptions
                       if d["TargetHealth"]["State"] != "healthy"]
        except LabError as exc:
            pending = [str(exc)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise EngineError(f"targets not healthy after {timeout:.0f} s: {', '.join(pending)} (see `lab status`)")
        if time.monotonic() - last > 5:
            say(f"waiting for target health: {', '.join(pending[:4])}{' ...' if len(pending) > 4 else ''}")
            last = time.monotonic()
        time.sleep(0.5)


def client_ip_path(tg: m.NlbTargetGroup) -> str:
    """How the client's address travels behind an NLB target group, in one line."""
    return {
        "alb": "NLB alb targets keep the client address at TCP level -> ALB -> X-Forwarded-For (no HAProxy)",
        "proxy_v2": f"NLB {tg.target_type} targets + PROXY v2 header -> HAProxy accept-proxy -> X-Forwarded-For",
        "preserved": f"NLB {tg.target_type} targets keep the client address at TCP level -> HAProxy -> "
                     "X-Forwarded-For",
        "lost": "client IP NOT preserved: HAProxy sees the NLB's private address",
    }[tg.client_ip_kind]


def summary(topology: m.Topology) -> str:
    nlb, alb = topology.nlb, topology.alb
    straight = {ls.port for ls in nlb.listeners if nlb.straight_to_alb(ls)}
    how = client_ip_path(nlb.target_group(nlb.listeners[0].target_group))
    haproxies = ", ".join(f"{h.name} {h.address}" for h in topology.haproxy.instances)
    if len(straight) == len(nlb.listeners):
        haproxy_line = f"  (HAProxy is not on the path: {haproxies} run, but no NLB listener forwards to them)"
    else:
        haproxy_line = f"  -> {haproxies} (accept-proxy {'on' if topology.haproxy.accept_proxy else 'off'})"
    eips = ", ".join(str(n.elastic_ip) for n in nlb.nodes)
    lines = [
        f"The chain is up (topology {topology.name}, {topology.source}):",
        f"  client {topology.client.address} (may send from {topology.client.source_first}-{topology.client.source_last})",
        f"  -> nlb {nlb.name}: Elastic IPs {eips}; listeners "
        + ", ".join(f"{ls.protocol}:{ls.port}" + (" (straight to the ALB)" if ls.port in straight else "")
                    for ls in nlb.listeners),
        haproxy_line,
        f"  -> alb {alb.name} at {alb.dns_name} (now " + ", ".join(str(n.address) for n in alb.nodes) + ")",
        "  -> " + ", ".join(f"{w.name} {w.address}" for w in topology.web),
        f"  client IP: {how}",
        "",
        "Try:",
        f"  .venv/bin/lab curl --from 198.51.100.123 https://{topology.site}/api/hello",
        f"  .venv/bin/lab trace --from 198.51.100.150 https://{topology.site}/",
        f"  .venv/bin/lab curl -i 'http://{topology.site}/some/path?q=1'",
        "  .venv/bin/lab status            (make status)     .venv/bin/lab down   (make down)",
        "  .venv/bin/lab demo client-ip    (each way of keeping the client IP, side by side; replaces this lab)",
    ]
    return "\n".join(lines)


def prepare_engine() -> None:
    """The Docker engine running and the lab's image built (what every `lab up` needs first)."""
    ensure_engine(say)
    build_image(say)


def start(topology: m.Topology, spec: str, timeout: float) -> None:
    """`topology` (loaded from `spec`) running in place of any other, every target healthy."""
    client = docker_client()
    written = ensure_certificates(topology, ROOT / "certs")
    if written:
        say(f"certificates generated in certs/: {', '.join(written)}")
    state = running_state()
    if state and state["compose_file"] != str(compose_path(topology)):
        say(f"stopping the running topology ({state['topology']}) first")
        Compose(compose_file_in_use()).run("down", "--remove-orphans", "--timeout", "5", capture=True)
        clear_state()
    render_all(topology)
    say(f"rendered {compose_path(topology).relative_to(ROOT)} and .lab/config/ from {topology.source}")
    compose = Compose(compose_path(topology))
    save_state(topology, spec)
    say("starting containers ...")
    compose.run("up", "-d", "--force-recreate", "--remove-orphans", capture=True)
    wait_healthy(client, topology.services(), timeout, say)
    say("containers healthy; waiting for NLB and ALB health checks to pass ...")
    wait_targets_healthy(client, topology, timeout)


def run(args) -> int:
    spec = args.topology or "default"
    topology = load_topology(spec)
    prepare_engine()
    start(topology, spec, args.timeout)
    print(summary(topology), flush=True)
    return 0
