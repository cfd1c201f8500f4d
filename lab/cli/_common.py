"""Shared bits of the verbs: which topology is running, admin-API reads inside the containers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from lab import model as m
from lab.errors import LabError, LabNotRunning
from lab.load import load_topology
from lab.render import ROOT, STATE_DIR, compose_path
from lab.runtime import exec_in

STATE_FILE = STATE_DIR / "state.json"


def seconds_arg(low: float, high: float, *, low_allowed: bool) -> Callable[[str], float]:
    """An argparse type: a number of seconds from `low` (itself allowed or not) to `high`; refuses
    words, NaN and infinity with a one-line error that names the range."""
    bounds = f"{'at least' if low_allowed else 'more than'} {low:g}, at most {high:g}"

    def parse(text: str) -> float:
        try:
            seconds = float(text)
        except ValueError:
            seconds = float("nan")
        if not ((low <= seconds if low_allowed else low < seconds) and seconds <= high):  # false for nan
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds ({bounds})")
        return seconds
    return parse


def target_group_name(text: str) -> str:
    """An argparse type for a target group name: an empty one used to mean "not given" (every group,
    or the load balancer's attributes)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a target group name cannot be empty")
    return text


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


# Runs in a simulator's container: METHOD URL [BODY]; prints "<status>\n<body>" whatever the status
# (the admin APIs' errors are AWS-shaped JSON).
REQUEST = """
import sys, urllib.request, urllib.error
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=60) as resp:
        status, body = resp.status, resp.read()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read()
sys.stdout.write(f"{status}\\n{body.decode()}")
"""


def admin_request(client, service: str, url: str, body: Any = None, method: str | None = None) -> tuple[int, str]:
    """(HTTP status, body text) from a simulator's admin API, reached from inside its container."""
    method = method or ("POST" if body is not None else "GET")
    argv = ["python3", "-c", REQUEST, method, url] + ([json.dumps(body)] if body is not None else [])
    code, out, err = exec_in(client, service, argv)
    if code != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        raise LabError(f"{service} admin API {url} did not answer: {detail[-1] if detail else code}")
    status, _, text = out.decode(errors="replace").partition("\n")
    return int(status), text


def simulator_call(client, service: str, url: str, body: Any = None, method: str | None = None, *,
                   text: bool = False) -> Any:
    """The one client of both simulators' admin APIs (`lab nlb`, `lab alb`, `lab demo`): the JSON
    answer (the text with ``text``), or a LabError: AWS's error shape, which both simulators answer
    with (services.elbv2.errors.error_reply), as `Code: Message`, anything else with its status."""
    method = method or ("POST" if body is not None else "GET")
    status, answer = admin_request(client, service, url, body, method)
    if text and status == 200:
        return answer
    try:
        doc = json.loads(answer)
    except ValueError:
        raise LabError(f"{service} admin API {method} {url}: HTTP {status}, not JSON: {answer[:80]!r}") from None
    if status != 200:
        error = doc.get("Error") if isinstance(doc, dict) else None
        if isinstance(error, dict) and "Code" in error:
            raise LabError(f"{error['Code']}: {error.get('Message', '')}")
        raise LabError(f"{service} admin API {method} {url}: HTTP {status}: {answer.strip()[:200]}")
    return doc


def admin_get(client, service: str, url: str) -> Any:
    """GET a simulator admin API document; anything but 200 with JSON is a LabError."""
    status, text = admin_request(client, service, url)
    if status != 200:
        raise LabError(f"{service} admin API {url}: HTTP {status}: {text[:120]}")
    try:
        return json.loads(text)
    except ValueError:
        raise LabError(f"{service} admin API {url} returned non-JSON: {text[:80]!r}") from None


def parse_key_values(items: list[str], example: str) -> list[dict[str, str]]:
    """`KEY=VALUE` arguments -> AWS `[{"Key": ..., "Value": ...}]`."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LabError(f"attribute {item!r} is not KEY=VALUE, e.g. {example}")
        out.append({"Key": key, "Value": value})
    return out


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
    for alb_tg in topology.alb.target_groups:
        doc = admin_get(client, m.ALB_SERVICE, f"{alb_admin}/target-health?target_group={alb_tg.name}")
        result[("alb", alb_tg.name)] = doc.get("TargetHealthDescriptions", [])
    return result


def require_running(client) -> None:
    from lab.runtime import project_containers

    if not any(c.status == "running" for c in project_containers(client)):
        raise LabNotRunning("the lab is not running; start it with `make up` (or `lab up`)")
