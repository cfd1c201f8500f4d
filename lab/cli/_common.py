"""Shared bits of the verbs: which topology is running, admin-API reads inside the containers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab import model as m
from lab.errors import LabError, LabNotRunning
from lab.load import load_topology
from lab.render import ROOT, STATE_DIR, compose_path
from lab.runtime import exec_in

STATE_FILE = STATE_DIR / "state.json"
FETCH = "import sys,urllib.request;sys.stdout.write(urllib.request.urlopen(sys.argv[1],timeout=5).read().decode())"


def add_topology_option(parser) -> None:
    parser.add_argument("--topology", "-t", default=None, metavar="NAME|FILE",
                        help="a name under topologies/ (default: the running one, else `default`) or a YAML file")


def save_state(topology: m.Topology, spec: str) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(json.dumps({"topology": spec, "compose_file": str(compose_path(topology))}) + "\n")


def running_state() -> dict[str, str] | None:
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return None


def clear_state() -> None:
    STATE_FILE.unlink(missing_ok=True)


def current_topology(spec: str | None) -> m.Topology:
    """The topology named, else the one `lab up` started, else `default`."""
    if spec is None:
        state = running_state()
        spec = state["topology"] if state else "default"
    return load_topology(spec)


def compose_file_in_use() -> Path:
    state = running_state()
    return Path(state["compose_file"]) if state else ROOT / "compose.yaml"


def admin_get(client, service: str, url: str) -> Any:
    code, out, err = exec_in(client, service, ["python3", "-c", FETCH, url])
    if code != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        raise LabError(f"{service} admin API {url} did not answer: {detail[-1] if detail else code}")
    try:
        return json.loads(out)
    except ValueError:
        raise LabError(f"{service} admin API {url} returned non-JSON: {out[:80]!r}") from None


# POST a JSON body; print "<status>\n<body>" whatever the status (the API's errors are AWS-shaped JSON).
REQUEST = ("import sys,urllib.request,urllib.error\n"
           "req=urllib.request.Request(sys.argv[1],data=sys.argv[2].encode() if len(sys.argv)>2 else None,"
           "method='POST' if len(sys.argv)>2 else 'GET',headers={'Content-Type':'application/json'})\n"
           "try:\n r=urllib.request.urlopen(req,timeout=10); code=r.status; body=r.read()\n"
           "except urllib.error.HTTPError as e:\n code=e.code; body=e.read()\n"
           "sys.stdout.write(str(code)+'\\n'+body.decode())\n")


def admin_request(client, service: str, url: str, body: Any = None) -> tuple[int, str]:
    """(HTTP status, body text) from a simulator's admin API, reached from inside its container."""
    argv = ["python3", "-c", REQUEST, url] + ([json.dumps(body)] if body is not None else [])
    code, out, err = exec_in(client, service, argv)
    if code != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        raise LabError(f"{service} admin API {url} did not answer: {detail[-1] if detail else code}")
    status, _, text = out.decode(errors="replace").partition("\n")
    return int(status), text


def alb_admin_url() -> str:
    """The ALB admin API listens on the alb container's loopback (its node addresses rotate)."""
    return f"http://127.0.0.1:{m.ALB_ADMIN_PORT}"


def target_health(client, topology: m.Topology) -> dict[tuple[str, str], list[dict]]:
    """(load balancer, target group) -> AWS-shaped TargetHealthDescriptions."""
    result = {}
    nlb_admin = f"http://{topology.nlb.nodes[0].private_ip}:{m.NLB_ADMIN_PORT}"
    for tg in topology.nlb.target_groups:
        doc = admin_get(client, m.NLB_SERVICE, f"{nlb_admin}/target-health?target_group={tg.name}")
        result[("nlb", tg.name)] = doc.get("TargetHealthDescriptions", [])
    alb_admin = alb_admin_url()
    for tg in topology.alb.target_groups:
        doc = admin_get(client, m.ALB_SERVICE, f"{alb_admin}/target-health?target_group={tg.name}")
        result[("alb", tg.name)] = doc.get("TargetHealthDescriptions", [])
    return result


def require_running(client) -> None:
    from lab.runtime import project_containers

    if not any(c.status == "running" for c in project_containers(client)):
        raise LabNotRunning("the lab is not running; start it with `make up` (or `lab up`)")
