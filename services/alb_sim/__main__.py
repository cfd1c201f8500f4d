"""`python3 -m services.alb_sim --config /lab/config/alb.json`"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any, Callable, Coroutine

from .app import AlbSimulator
from .config import ConfigError, load_config


def _announce(line: str) -> None:
    print(line, flush=True)


async def _main(sim: AlbSimulator) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await sim.run()
    except asyncio.CancelledError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m services.alb_sim",
                                     description="AWS Application Load Balancer simulator")
    parser.add_argument("--config", required=True, help="ALB config JSON (rendered by `lab render`)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"alb_sim: {exc}", file=sys.stderr)
        return 2
    sim = AlbSimulator(config, announce=_announce)
    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # the lab image has uvloop; this keeps a bare python usable
        runner = asyncio.run
    try:
        runner(_main(sim))
    except ConfigError as exc:
        print(f"alb_sim: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a listener address that is not on this host
        print(f"alb_sim: cannot bind: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
