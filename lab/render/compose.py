"""compose.yaml: a pure function of the topology model. Works with Compose v2 and Compose 1.29
(no top-level `name:`, no `include:`, no `healthcheck.start_interval`; see notes/platform.md)."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import yaml

from lab import model as m
from lab.render.simulators import CERT_DIR, CONFIG_DIR

IMAGE = "static-ingress-lab:latest"
SOURCE_DIR = "/opt/lab"
PROJECT = "static-ingress-lab"


def _listening(port: int, udp: bool = False) -> dict[str, Any]:
    """A healthcheck on the socket table, not a connect through the relay (platform notes)."""
    flags = "-Hlnu" if udp else "-Htln"
    return {
        "test": ["CMD-SHELL", f"ss {flags} 'sport = :{port}' | grep -q ."],
        "interval": "1s",
        "timeout": "3s",
        "retries": 90,
    }


def _netsetup(addresses: Sequence[str] = (), routes: Sequence[str] = (), ranges: Sequence[str] = ()) -> list[str]:
    """Prefix a command with the container-side network setup (extra node addresses, return routes)."""
    args = ["python3", "-m", "services.netsetup"]
    for address in addresses:
        args += ["--addr", address]
    for route in routes:
        args += ["--route", route]
    for address_range in ranges:
        args += ["--addr-range", address_range]
    return [*args, "--"]


def _healthy(*services: str) -> dict[str, dict[str, str]]:
    return {s: {"condition": "service_healthy"} for s in services}


def compose_document(topology: m.Topology, config_dir: str = "./.lab/config") -> dict[str, Any]:
    vpc_ip: dict[str, IPv4Address] = {}
    base: dict[str, Any] = {
        "image": IMAGE,
        "init": True,
        "environment": {"PYTHONPATH": SOURCE_DIR, "PYTHONUNBUFFERED": "1"},
        "volumes": [f"./services:{SOURCE_DIR}/services:ro", "./certs:" + CERT_DIR + ":ro", f"{config_dir}:{CONFIG_DIR}:ro"],
    }

    def service(name: str, command: list[str], networks: dict[str, IPv4Address], **extra: Any) -> dict[str, Any]:
        doc = {**base, "hostname": name,
               "networks": {net: {"ipv4_address": str(ip)} for net, ip in networks.items()},
               "command": command, **extra}
        doc["labels"] = {"lab.topology": topology.name}
        return doc

    dns = topology.dns
    services: dict[str, Any] = {}
    services[m.DNS_SERVICE] = service(
        m.DNS_SERVICE,
        ["python3", "-m", "services.dns", "--zone-file", f"{CONFIG_DIR}/dns/zone.json",
         "--listen", f"{dns.vpc_address}:53", "--listen", f"{dns.internet_address}:53",
         "--admin", f"{dns.vpc_address}:{m.DNS_ADMIN_PORT}"],
        {"internet": dns.internet_address, "vpc": dns.vpc_address},
        healthcheck=_listening(53, udp=True))
    for web in topology.web:
        services[web.name] = service(
            web.name,
            ["python3", "-m", "services.web", "--service", web.service, "--node", web.name, "--az", web.az,
             "--listen", f"{web.address}:{web.port}", "--tls-cert", f"{CERT_DIR}/{web.name}.pem"],
            {"vpc": web.address}, healthcheck=_listening(web.port))
        vpc_ip[web.name] = web.address

    alb = topology.alb
    first, *others = alb.nodes
    alb_port = alb.listeners[0].port
    alb_routes = []
    if any(tg.target_type == "alb" for tg in topology.nlb.target_groups):
        # NLB `alb` targets see the client's own address: replies must go back through the NLB.
        alb_routes.append(f"{topology.internet} via {topology.nlb.nodes[0].private_ip}")
    services[m.ALB_SERVICE] = service(
        m.ALB_SERVICE,
        [*_netsetup(addresses=[str(n.address) for n in others], routes=alb_routes),
         "python3", "-m", "services.alb_sim", "--config", f"{CONFIG_DIR}/alb.json"],
        {"vpc": first.address}, cap_add=["NET_ADMIN"], healthcheck=_listening(alb_port),
        # Rotation deletes the container's primary address; keep the others when it does.
        sysctls={"net.ipv4.conf.all.promote_secondaries": "1"},
        depends_on=_healthy(*(w.name for w in topology.web)))

    nlb = topology.nlb
    for instance in topology.haproxy.instances:
        routes = []
        if topology.haproxy.route_internet_via_nlb:
            node = next((n for n in nlb.nodes if n.az == instance.az), nlb.nodes[0])
            routes.append(f"{topology.internet} via {node.private_ip}")
        services[instance.name] = service(
            instance.name,
            [*_netsetup(routes=routes), "haproxy", "-db", "-f", f"{CONFIG_DIR}/{instance.name}/haproxy.cfg"],
            {"vpc": instance.address}, cap_add=["NET_ADMIN"], healthcheck=_listening(443),
            depends_on=_healthy(m.DNS_SERVICE, m.ALB_SERVICE),
            # libc resolves the ALB's name at start (haproxy.resolve: startup): the VPC resolver, as on EC2.
            **({"dns": [str(dns.vpc_address)]} if topology.haproxy.resolve == "startup" else {}))

    first_node, *other_nodes = nlb.nodes
    extra_addresses = [str(a) for n in other_nodes for a in (n.elastic_ip, n.private_ip)]
    services[m.NLB_SERVICE] = service(
        m.NLB_SERVICE,
        [*_netsetup(addresses=extra_addresses), "python3", "-m", "services.nlb_sim", "--config", f"{CONFIG_DIR}/nlb.json"],
        {"internet": first_node.elastic_ip, "vpc": first_node.private_ip},
        cap_add=["NET_ADMIN"], healthcheck=_listening(nlb.listeners[0].port),
        depends_on=_healthy(*(h.name for h in topology.haproxy.instances)))

    client = topology.client
    ranges = []
    if client.source_last > client.source_first:
        low = client.source_first if client.source_first != client.address else client.source_first + 1
        ranges.append(f"{low}-{client.source_last}")
    services[m.CLIENT_SERVICE] = service(
        m.CLIENT_SERVICE, [*_netsetup(ranges=ranges), "sleep", "infinity"],
        {"internet": client.address}, cap_add=["NET_ADMIN"], dns=[str(dns.internet_address)],
        depends_on=_healthy(m.NLB_SERVICE, m.DNS_SERVICE))

    def network(subnet: IPv4Network, masquerade: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {"driver": "bridge", "ipam": {"config": [{"subnet": str(subnet)}]}}
        if not masquerade:
            # The host must not NAT the clients' addresses the NLB forwards (platform notes).
            doc["driver_opts"] = {"com.docker.network.bridge.enable_ip_masquerade": "false"}
        return doc

    return {
        "services": services,
        "networks": {"internet": network(topology.internet, False), "vpc": network(topology.vpc, True)},
    }


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def compose_yaml(topology: m.Topology, config_dir: str = "./.lab/config") -> str:
    header = (f"# Rendered by `lab render` from {topology.source}. Do not edit: change the topology and run\n"
              f"# `lab render`. Compose project name: {PROJECT} (set by `lab`; use `-p {PROJECT}` by hand).\n")
    return header + yaml.dump(compose_document(topology, config_dir), Dumper=_NoAliases, sort_keys=False, width=120)
