"""`lab engine`: make sure a Docker engine and Compose are there (installing them as root on Debian)."""

from __future__ import annotations

from lab.runtime import compose_command, ensure_engine, ensure_test_tools


def register(verbs) -> None:
    parser = verbs.add_parser("engine", help="ensure a running Docker engine and Compose")
    parser.add_argument("--test-tools", action="store_true",
                        help="also the host tools the tests use (haproxy, nftables, iproute2)")
    parser.set_defaults(run=run)


def run(args) -> int:
    ensure_engine()
    if args.test_tools:
        ensure_test_tools()
    print(f"lab: Docker engine running; compose: {' '.join(compose_command() or ['?'])}")
    return 0
