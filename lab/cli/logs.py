"""`lab logs [SERVICE...]`: the services' output, prefixed with their topology names."""

from __future__ import annotations

from lab.cli._common import compose_file_in_use, current_topology
from lab.errors import LabError
from lab.runtime import Compose


def register(verbs) -> None:
    parser = verbs.add_parser("logs", help="show the services' logs")
    parser.add_argument("services", nargs="*", metavar="SERVICE")
    parser.add_argument("--follow", "-f", action="store_true")
    parser.add_argument("--tail", default="200")
    parser.set_defaults(run=run)


def run(args) -> int:
    services = current_topology(None).services()
    unknown = [name for name in args.services if name not in services]
    if unknown:
        raise LabError(f"no service {', '.join(map(repr, unknown))} in this topology (services: {', '.join(services)})")
    extra = ["--follow"] if args.follow else []
    Compose(compose_file_in_use()).run("logs", "--no-color", "--tail", args.tail, *extra, *args.services)
    return 0
