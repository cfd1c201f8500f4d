"""`lab render`: write compose file and every service config from the topology model."""

from __future__ import annotations

from lab.cli._common import add_topology_option
from lab.load import load_topology
from lab.render import ROOT, render_all


def register(verbs) -> None:
    parser = verbs.add_parser("render", help="render compose.yaml and the service configs from a topology")
    add_topology_option(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    topology = load_topology(args.topology or "default")
    for path in render_all(topology):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0
