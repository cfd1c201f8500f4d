"""`lab logs [SERVICE...]`: the services' output, prefixed with their topology names."""

from __future__ import annotations

import argparse

from lab.cli._common import compose_file_in_use, current_topology
from lab.errors import LabError
from lab.runtime import Compose, docker_client


def register(verbs) -> None:
    parser = verbs.add_parser("logs", help="show the services' logs")
    parser.add_argument("services", nargs="*", metavar="SERVICE")
    parser.add_argument("--follow", "-f", action="store_true")
    parser.add_argument("--tail", default="200", type=tail_lines, metavar="N|all",
                        help="lines per service from the end of its log (default 200)")
    parser.set_defaults(run=run)


def tail_lines(text: str) -> str:
    if text == "all" or text.isdigit():
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a number of lines (0 or more) or 'all'")


def run(args) -> int:
    services = current_topology(None).services()
    unknown = [name for name in args.services if name not in services]
    if unknown:
        raise LabError(f"no service {', '.join(map(repr, unknown))} in this topology (services: {', '.join(services)})")
    docker_client()  # no engine: say so, rather than Compose's traceback
    extra = ["--follow"] if args.follow else []
    Compose(compose_file_in_use()).run("logs", "--no-color", "--tail", args.tail, *extra, *args.services)
    return 0
