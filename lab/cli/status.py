"""`lab status`: each service, its addresses and state; NLB and ALB target health in AWS terms."""

from __future__ import annotations

from lab import model as m
from lab.cli._common import admin_get, alb_admin_url, current_topology, require_running, target_health
from lab.errors import LabError
from lab.runtime import docker_client, project_containers


def register(verbs) -> None:
    parser = verbs.add_parser("status", help="services, addresses and target health")
    parser.set_defaults(run=run)


def service_addresses(topology: m.Topology) -> dict[str, str]:
    nlb, alb = topology.nlb, topology.alb
    return {
        m.DNS_SERVICE: f"{topology.dns.internet_address}, {topology.dns.vpc_address}",
        **{w.name: f"{w.address}:{w.port}" for w in topology.web},
        m.ALB_SERVICE: ", ".join(f"{n.name} {n.address}" for n in alb.nodes) + f" ({alb.dns_name})",
        **{h.name: str(h.address) for h in topology.haproxy.instances},
        m.NLB_SERVICE: ", ".join(f"{n.name} EIP {n.elastic_ip} / {n.private_ip}" for n in nlb.nodes),
        m.CLIENT_SERVICE: f"{topology.client.address} (+{topology.client.source_first}-{topology.client.source_last})",
    }


def run(args) -> int:
    topology = current_topology(None)
    client = docker_client()
    require_running(client)
    print(f"topology {topology.name} ({topology.source})")
    print(f"{'SERVICE':16} {'STATE':22} ADDRESSES")
    addresses_by_service = service_addresses(topology)
    try:  # the ALB's nodes as they are now: rotation moves them
        nodes = admin_get(client, m.ALB_SERVICE, f"{alb_admin_url()}/nodes")["Nodes"]
        addresses_by_service[m.ALB_SERVICE] = ", ".join(
            f"{n['Name']} {n['Address']}" + (" (draining)" if n["State"] == "draining" else "") for n in nodes
        ) + f" ({topology.alb.dns_name})"
    except LabError:
        pass
    for service, addresses in addresses_by_service.items():
        found = project_containers(client, service)
        if found:
            state = found[0].attrs["State"]
            shown = state["Status"] + (f" ({state['Health']['Status']})" if "Health" in state else "")
        else:
            shown = "missing"
        print(f"{service:16} {shown:22} {addresses}")
    print()
    print(f"{'LOAD BALANCER':14} {'TARGET GROUP':16} {'TARGET':16} {'PORT':6} {'STATE':10} REASON")
    try:
        health = target_health(client, topology)
    except LabError as exc:
        print(f"(target health unavailable: {exc})")
        return 1
    for (lb, tg), descriptions in health.items():
        for d in descriptions:
            state = d["TargetHealth"]
            print(f"{lb:14} {tg:16} {d['Target']['Id']:16} {d['Target'].get('Port', ''):<6} {state['State']:10} "
                  f"{state.get('Reason', '')}")
    return 0
