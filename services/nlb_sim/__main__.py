"""``python3 -m services.nlb_sim --config /lab/config/nlb.json``

Exit status: 0 after SIGTERM/SIGINT, 2 for a bad config, 1 when it cannot start
(certificate, address binding, routing setup). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .app import NlbApp, StartupError
from .config import ConfigError, load_config
from .listeners import ListenerBindError


def _print_ready(line: str) -> None:
    print(line, flush=True)


async def _serve(app: NlbApp) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.run(stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m services.nlb_sim",
                                     description="AWS Network Load Balancer simulator")
    parser.add_argument("--config", required=True, help="NLB config JSON (rendered by `lab render`)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s nlb %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"nlb: {exc}", file=sys.stderr, flush=True)
        return 2
    app = NlbApp(cfg, on_ready=_print_ready)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the image always has it
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(_serve(app))
    except (StartupError, ListenerBindError) as exc:
        print(f"nlb: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
