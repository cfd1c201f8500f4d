"""``python3 -m services.dns``: the lab's VPC resolver / Route 53 stand-in.

    python3 -m services.dns --zone-file /lab/config/dns/zone.json \\
        --listen 10.20.0.2:53 --listen 198.51.100.53:53 [--admin 10.20.0.2:8053]

UDP and TCP on every --listen address; the admin HTTP API on --admin. Prints
``dns ready on 10.20.0.2:53 198.51.100.53:53 (udp+tcp), admin http://10.20.0.2:8053``.
Exit status: 2 for bad arguments or an invalid zone file, 1 when an address cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import NoReturn

import uvloop

from services.dns.server import DnsConfig, DnsServer, ListenAddressError, format_address, parse_listen
from services.dns.zone import ZoneError

_PROG = "python3 -m services.dns"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _listen_arg(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ListenAddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_args(argv: list[str] | None) -> DnsConfig:
    parser = _Parser(prog=_PROG, description="Lab DNS (authoritative only, never forwards)")
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
    await server.start()
    ready = f"dns ready on {' '.join(format_address(a) for a in server.addresses)} (udp+tcp)"
    if server.admin_address is not None:
        ready += f", admin http://{format_address(server.admin_address)}"
    _log(ready)
    serving = asyncio.ensure_future(server.serve_forever())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, serving.cancel)
    try:
        await serving
    except asyncio.CancelledError:
        pass
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> int:
    config = _parse_args(argv)
    try:
        uvloop.run(_run(config))
    except ZoneError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{_PROG}: error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
