"""`lab build`: the lab image (base image built locally when no registry is reachable)."""

from __future__ import annotations

from lab.runtime import build_image


def register(verbs) -> None:
    parser = verbs.add_parser("build", help="build the lab image")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.set_defaults(run=lambda args: build_image(force=args.force) and 0)
