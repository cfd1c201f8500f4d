"""Renders: pure functions of the topology model, and `render_all` which writes them out."""

from __future__ import annotations

import json
from pathlib import Path

from lab import model as m
from lab.render.compose import compose_yaml
from lab.render.haproxy import haproxy_config
from lab.render.simulators import alb_config, dns_zone, nlb_config

ROOT = Path(__file__).resolve().parent.parent.parent
STATE_DIR = ROOT / ".lab"
CONFIG_DIR = STATE_DIR / "config"


COMMITTED_SOURCE = "topologies/default.yaml"  # the one topology rendered into the committed compose.yaml


def compose_path(topology: m.Topology) -> Path:
    """The committed compose.yaml is topologies/default.yaml; others are rendered under .lab/.
    Decided by the file, not the name: a variant that `extends: default.yaml` without a `name:` of
    its own is also called "default", and must not overwrite the committed file."""
    if topology.source == COMMITTED_SOURCE:
        return ROOT / "compose.yaml"
    return STATE_DIR / f"compose.{topology.name}.yaml"


def config_files(topology: m.Topology) -> dict[str, str]:
    """Relative path under .lab/config -> content."""
    files = {
        "nlb.json": json.dumps(nlb_config(topology), indent=2) + "\n",
        "alb.json": json.dumps(alb_config(topology), indent=2) + "\n",
        "dns/zone.json": json.dumps(dns_zone(topology), indent=2) + "\n",
    }
    for instance in topology.haproxy.instances:
        files[f"{instance.name}/haproxy.cfg"] = haproxy_config(topology, instance)
    return files


def render_all(topology: m.Topology) -> list[Path]:
    """Write compose file and every service config; return what was written."""
    written = []
    for relative, content in config_files(topology).items():
        path = CONFIG_DIR / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    target = compose_path(topology)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(compose_yaml(topology))
    written.append(target)
    return written
