"""Simulator and DNS configs: pure functions of the topology model."""

from __future__ import annotations

from typing import Any

from lab import model as m
from services.alb_sim.config import action_document, rule_document
from lab.errors import TopologyError

CERT_DIR = "/lab/certs"  # where certs/ is mounted in every container
CONFIG_DIR = "/lab/config"  # where the rendered configs are mounted
LOG_DIR = "/var/log/lab"


def _health_check(hc: m.HealthCheck) -> dict[str, Any]:
    return {
        "protocol": hc.protocol, "port": hc.port, "path": hc.path,
        "interval_seconds": hc.interval_seconds, "timeout_seconds": hc.timeout_seconds,
        "healthy_threshold": hc.healthy_threshold, "unhealthy_threshold": hc.unhealthy_threshold,
        "matcher": hc.matcher,
    }


def _targets(targets: tuple[m.Target, ...]) -> list[dict[str, Any]]:
    return [{"id": t.id, "ip": str(t.ip), "port": t.port, "az": t.az} for t in targets]


def _certificate(cert: m.Certificate) -> dict[str, str]:
    return {"arn": cert.arn, "pem": f"{CERT_DIR}/{cert.pem_file}"}


def _certificate_list(certs: tuple[m.Certificate, ...]) -> dict[str, Any]:
    """A listener's certificate list (SNI); the key algorithm ranks several matches (NLB-TLS23)."""
    if not certs:
        return {}
    return {"certificates": [{**_certificate(c), "key_algorithm": c.key_algorithm} for c in certs]}


def _alb_tracking(topology: m.Topology, tg: m.NlbTargetGroup) -> dict[str, Any]:
    """`alb` target groups follow the ALB's node addresses through its DNS name (decisions #30)."""
    if tg.target_type != "alb":
        return {}
    azs = {n.az for n in topology.nlb.nodes}
    return {"alb": {"dns_name": topology.alb.dns_name, "resolver": str(topology.dns.vpc_address),
                    "subnets": {az: str(net) for az, net in topology.subnets.items() if az in azs}}}


def nlb_config(topology: m.Topology) -> dict[str, Any]:
    nlb = topology.nlb
    listeners = []
    for ls in nlb.listeners:
        entry: dict[str, Any] = {"protocol": ls.protocol, "port": ls.port, "target_group": ls.target_group}
        if ls.certificate is not None:
            entry.update(certificate=_certificate(ls.certificate), **_certificate_list(ls.certificates),
                         ssl_policy=ls.ssl_policy, alpn_policy=ls.alpn_policy)
        if ls.attributes:
            entry["attributes"] = dict(ls.attributes)
        listeners.append(entry)
    return {
        "name": nlb.name,
        "arn": nlb.arn,
        "nodes": [{"name": n.name, "az": n.az, "elastic_ip": str(n.elastic_ip), "private_ip": str(n.private_ip)}
                  for n in nlb.nodes],
        "attributes": dict(nlb.attributes),
        "listeners": listeners,
        "target_groups": [
            {"name": tg.name, "arn": tg.arn, "protocol": tg.protocol, "port": tg.port, "target_type": tg.target_type,
             "attributes": dict(tg.attributes), "targets": _targets(tg.targets),
             "health_check": _health_check(tg.health_check), **_alb_tracking(topology, tg)}
            for tg in nlb.target_groups
        ],
        "log_dir": f"{LOG_DIR}/nlb",
        "admin": {"address": str(nlb.nodes[0].private_ip), "port": m.NLB_ADMIN_PORT},
        "transparent": True,
        **({"relaxed_limits": True} if nlb.relaxed_limits else {}),
        **({"vpc_endpoint_id": nlb.vpc_endpoint_id} if nlb.vpc_endpoint_id else {}),
        # The NLB keeps these names pointed at its healthy AZs (an AZ without healthy targets leaves DNS).
        "dns": {"admin_url": f"http://{topology.dns.vpc_address}:{m.DNS_ADMIN_PORT}", "ttl": topology.dns.ttl,
                "names": [nlb.dns_name, topology.site]},
    }


def alb_config(topology: m.Topology) -> dict[str, Any]:
    alb = topology.alb
    listeners = []
    for ls in alb.listeners:
        entry: dict[str, Any] = {"protocol": ls.protocol, "port": ls.port}
        if ls.certificate is not None:
            entry.update(certificate=_certificate(ls.certificate), **_certificate_list(ls.certificates),
                         ssl_policy=ls.ssl_policy)
        entry.update(rules=[rule_document(r) for r in ls.rules],
                     default_actions=[action_document(a) for a in ls.default_actions])
        listeners.append(entry)
    return {
        "name": alb.name,
        "arn": alb.arn,
        "dns_name": alb.dns_name,
        "vpc_cidr": str(topology.vpc),  # RegisterTargets checks ip targets against it
        "nodes": [{"name": n.name, "az": n.az, "address": str(n.address)} for n in alb.nodes],
        "attributes": dict(alb.attributes),
        "listeners": listeners,
        "target_groups": [
            {"name": tg.name, "arn": tg.arn, "protocol": tg.protocol, "port": tg.port,
             "targets": _targets(tg.targets), "health_check": _health_check(tg.health_check),
             **({"attributes": dict(tg.attributes)} if tg.attributes else {})}
            for tg in alb.target_groups
        ],
        "log_dir": f"{LOG_DIR}/alb",
        # Loopback: node addresses come and go with rotation; `lab` reaches it with `docker exec`.
        "admin": {"address": "127.0.0.1", "port": m.ALB_ADMIN_PORT},
        "rotation": {
            "drain_seconds": alb.rotation.drain_seconds, "interval_seconds": alb.rotation.interval_seconds,
            "pools": {az: [str(a) for a in pool] for az, pool in alb.rotation.pools.items()},
            "dns_admin": f"{topology.dns.vpc_address}:{m.DNS_ADMIN_PORT}", "dns_ttl": topology.dns.ttl,
        },
    }


def dns_zone(topology: m.Topology) -> dict[str, Any]:
    """The lab's records: the public site and the NLB's names on the internet side, the ALB's name
    and one name per service in the private zone."""
    ttl = topology.dns.ttl
    eips = [str(n.elastic_ip) for n in topology.nlb.nodes]

    def record(name: str, values: list[str], record_ttl: int = ttl) -> dict[str, Any]:
        return {"name": name, "type": "A", "ttl": record_ttl, "values": values}

    private = topology.dns.private_zone
    records = [
        record(topology.site, eips),
        record(topology.nlb.dns_name, eips),
        *(record(f"{n.az}.{topology.nlb.dns_name}", [str(n.elastic_ip)]) for n in topology.nlb.nodes),
        record(topology.alb.dns_name, [str(n.address) for n in topology.alb.nodes]),
        record(f"nlb.{private}", [str(n.private_ip) for n in topology.nlb.nodes], 300),
        *(record(f"{h.name}.{private}", [str(h.address)], 300) for h in topology.haproxy.instances),
        *(record(f"{w.name}.{private}", [str(w.address)], 300) for w in topology.web),
    ]
    return {"records": records}


def validate_simulator_configs(topology: m.Topology) -> None:
    """Run the simulators' own config loaders on what we would render, so a bad listener rule or
    attribute is reported when the topology loads, not when a container starts."""
    from services.alb_sim.config import ConfigError as AlbConfigError, load_config as load_alb
    from services.nlb_sim.config import ConfigError as NlbConfigError, load_config as load_nlb

    checks = (("nlb", nlb_config, load_nlb, NlbConfigError), ("alb", alb_config, load_alb, AlbConfigError))
    for prefix, render, load, error in checks:
        try:
            load(render(topology))
        except error as exc:
            # The simulators name paths inside their own config; in the topology they sit under nlb./alb.
            raise TopologyError(f"{prefix}.{exc} in {topology.source}") from None
