"""Rendered configs: golden files, the committed compose.yaml in sync, and `haproxy -c` on every
rendered haproxy.cfg. Update the golden files with LAB_UPDATE_GOLDEN=1 after an intended change."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lab.certs import ensure_certificates
from lab.load import load_topology
from lab.render import ROOT, config_files
from lab.render.compose import IMAGE, compose_yaml

GOLDEN = Path(__file__).parent / "golden"
TOPOLOGIES = ["default", "ip-proxy-v2", "haproxy-resolve-once"]


def rendered(name: str) -> dict[str, str]:
    topology = load_topology(name)
    return {**config_files(topology), "compose.yaml": compose_yaml(topology)}


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_golden_files(name):
    files = rendered(name)
    if os.environ.get("LAB_UPDATE_GOLDEN"):
        for relative, content in files.items():
            path = GOLDEN / name / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    for relative, content in files.items():
        golden = GOLDEN / name / relative
        assert golden.exists(), f"no golden file {golden}; run with LAB_UPDATE_GOLDEN=1"
        assert content == golden.read_text(), f"{relative} differs from {golden}"


def test_committed_compose_yaml_is_the_default_topology_rendered():
    assert (ROOT / "compose.yaml").read_text() == compose_yaml(load_topology("default")), \
        "compose.yaml is stale: run `lab render`"


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_compose_file_is_compose_v1_and_v2_compatible(name):
    doc = yaml.safe_load(rendered(name)["compose.yaml"])
    assert "name" not in doc and "include" not in doc and "version" not in doc
    for service in doc["services"].values():
        assert service["init"] is True
        assert "start_interval" not in service.get("healthcheck", {})
        for dependency in service.get("depends_on", {}).values():
            assert set(dependency) == {"condition"}


def test_accept_proxy_follows_the_nlb_target_group():
    assert "accept-proxy" not in rendered("default")["haproxy-a/haproxy.cfg"]
    cfg = rendered("ip-proxy-v2")["haproxy-a/haproxy.cfg"]
    assert "bind 10.20.1.20:443 accept-proxy ssl crt" in cfg and "bind 10.20.1.20:80 accept-proxy" in cfg


def _haproxy_check_command(cfg: Path, certs: Path) -> list[str]:
    if shutil.which("haproxy"):
        return ["haproxy", "-c", "-f", str(cfg)]
    # No haproxy on the host: check inside the lab image (built by `make test` before pytest runs).
    return ["docker", "run", "--rm", "-v", f"{cfg.parent}:{cfg.parent}:ro", "-v", f"{certs}:{certs}:ro",
            IMAGE, "haproxy", "-c", "-f", str(cfg)]


@pytest.mark.parametrize("name", TOPOLOGIES)
@pytest.mark.parametrize("verify", ["required", "none"])
def test_haproxy_accepts_every_rendered_config(name, verify, tmp_path):
    topology = load_topology(name)
    topology = dataclasses.replace(topology, haproxy=dataclasses.replace(topology.haproxy, verify=verify))
    certs = tmp_path / "certs"
    ensure_certificates(topology, certs)
    for relative, content in config_files(topology).items():
        if not relative.endswith("haproxy.cfg"):
            continue
        assert f"ssl verify {verify}" in content
        cfg = tmp_path / relative.replace("/", "-")
        cfg.write_text(content.replace("/lab/certs", str(certs)))
        result = subprocess.run(_haproxy_check_command(cfg, certs), capture_output=True, text=True)
        assert result.returncode == 0, f"haproxy -c rejected {relative}:\n{result.stdout}{result.stderr}"
        assert "Configuration file is valid" in result.stdout + result.stderr


def test_haproxy_resolve_startup_has_one_server_and_no_resolvers():
    """haproxy.resolve: startup (haproxy-resolve-once): libc resolves the ALB's name once, through the
    VPC resolver the container is given; `runtime` (default) re-resolves through a resolvers section."""
    once = rendered("haproxy-resolve-once")
    cfg = once["haproxy-a/haproxy.cfg"]
    assert "resolvers" not in cfg.replace("No resolvers section", "") and "server-template" not in cfg
    assert "    server alb alb.lab.internal:443 init-addr last,libc,none check ssl verify required" in cfg
    assert yaml.safe_load(once["compose.yaml"])["services"]["haproxy-a"]["dns"] == ["10.20.0.2"]
    default = rendered("default")
    assert "resolvers vpcdns\n" in default["haproxy-a/haproxy.cfg"]
    assert "dns" not in yaml.safe_load(default["compose.yaml"])["services"]["haproxy-a"]


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "topologies").glob("*.yaml")))
def test_every_topology_renders_configs_its_simulators_load_as_modelled(name):
    """The loader checks everything itself (decisions #77); the rendered simulator configs are plain
    serialisations: both simulators load them, and the ALB reads back the very rules the model holds."""
    from lab.render.simulators import alb_config, nlb_config, validate_simulator_configs
    from services.alb_sim.config import load_config as load_alb

    topology = load_topology(name)
    validate_simulator_configs(topology)
    assert nlb_config(topology)["name"] == topology.nlb.name
    alb = load_alb(alb_config(topology))
    for modelled, loaded in zip(topology.alb.listeners, alb.listeners, strict=True):
        assert (loaded.rules, loaded.default_actions) == (modelled.rules, modelled.default_actions)
