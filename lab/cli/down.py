"""`lab down`: stop and remove the running lab (containers and networks)."""

from __future__ import annotations

from lab.cli._common import clear_state, compose_file_in_use
from lab.runtime import Compose, compose_command, engine_running


def register(verbs) -> None:
    parser = verbs.add_parser("down", help="stop and remove the lab's containers and networks")
    parser.set_defaults(run=run)


def run(args) -> int:
    if not engine_running() or compose_command() is None:
        print("lab: no Docker engine running: nothing to stop")
        clear_state()
        return 0
    print("lab: stopping the lab's containers ...", flush=True)
    Compose(compose_file_in_use()).run("down", "--remove-orphans", "--timeout", "5", capture=True)
    clear_state()
    print("lab: the lab is down")
    return 0
