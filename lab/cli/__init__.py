"""`lab`: the lab's command line. One module per verb; only this package prints and exits."""

from __future__ import annotations

import argparse
import os
import sys

from lab.errors import LabError, one_line

VERBS = ("up", "down", "status", "render", "curl", "trace", "demo", "logs", "build", "compile", "engine", "nlb", "alb")


def build_parser() -> argparse.ArgumentParser:
    from lab.cli import alb, build, curl, demo, down, engine, logs, native, nlb, render, status, trace, up

    parser = argparse.ArgumentParser(
        prog="lab", description="static-ingress-lab: the AWS NLB -> HAProxy -> ALB chain, offline.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module in (up, down, status, render, curl, trace, demo, logs, build, native, engine, nlb, alb):
        module.register(verbs)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except LabError as exc:
        print(f"lab {args.verb}: error: {one_line(str(exc))}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print(f"lab {args.verb}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `lab ... | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    sys.exit(code or 0)
