"""``python3 -m services.dns``: the lab's VPC resolver / Route 53 stand-in.

    python3 -m services.dns --zone-file /lab/config/dns/zone.json \\
        --listen 10.20.0.2:53 --listen 198.51.100.53:53 [--admin 10.20.0.2:8053]

UDP and TCP on every --listen address; the admin HTTP API on --admin. Prints
``dns ready on 10.20.0.2:53 198.51.100.53:53 (udp+tcp), admin http://10.20.0.2:8053``.
Exit status: 2 for bad arguments or an invalid zone file, 1 when an address cannot be bound.
"""

from __future__ import annotations

import sys
from pathlib import Path


from services.common import ServiceArgumentParser, listen_argument, run_service, serve_until_signalled
from services.dns.server import DnsConfig, DnsServer, format_address
from services.dns.zone import ZoneError

_PROG = "python3 -m services.dns"


_listen_arg = listen_argument("10.20.0.2:53")


def _parse_args(argv: list[str] | None) -> DnsConfig:
    parser = ServiceArgumentParser(prog=_PROG, description="Lab DNS (authoritative only, never forwards)")
    parser.add_argument("--zone-file", required=True, type=Path, metavar="FILE", help="zone JSON")
    parser.add_argument("--listen", type=_listen_arg, action="append", required=True,
                        metavar="ADDR:PORT", help="UDP+TCP listener (repeatable)")
    parser.add_argument("--admin", type=_listen_arg, metavar="ADDR:PORT", help="admin HTTP API")
    args = parser.parse_args(argv)
    return DnsConfig(zone_file=args.zone_file, listen=tuple(args.listen), admin=args.admin)


def _log(line: str) -> None:
    print(line, flush=True)


async def _run(config: DnsConfig) -> None:
    server = DnsServer(config, _log)

    def ready() -> str:
        line = f"dns ready on {' '.join(format_address(a) for a in server.addresses)} (udp+tcp)"
        if server.admin_address is not None:
            line += f", admin http://{format_address(server.admin_address)}"
        return line

    await serve_until_signalled(server, ready, _log)


def main(argv: list[str] | None = None) -> int:
    return run_service(_PROG, _run(_parse_args(argv)), (ZoneError,))


if __name__ == "__main__":
    sys.exit(main())
