"""`lab render`: write compose file and every service config from the topology model."""

from __future__ import annotations

from lab import model as m
from lab.cli._common import add_topology_option, running_state
from lab.errors import LabError
from lab.load import load_topology
from lab.render import ROOT, compose_path, render_all


def register(verbs) -> None:
    parser = verbs.add_parser("render", help="render compose.yaml and the service configs from a topology")
    add_topology_option(parser)
    parser.set_defaults(run=run)


def refuse_over_running_lab(topology: m.Topology, spec: str, state: dict[str, str] | None) -> None:
    """Every topology renders its service configs into the same .lab/config/ that the running lab's
    containers read, so rendering another topology under a running lab would change it underneath."""
    if state and state["compose_file"] != str(compose_path(topology)):
        raise LabError(f"the running lab is topology {state['topology']!r}; rendering {spec!r} would rewrite the "
                       f"configs its containers read: `lab down` first, or `lab up --topology {spec}` (which "
                       f"stops the running one)")


def run(args) -> int:
    spec = args.topology or "default"
    topology = load_topology(spec)
    refuse_over_running_lab(topology, spec, running_state())
    for path in render_all(topology):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0
