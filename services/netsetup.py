"""Container-side network setup, run before a service's own command (then exec'd into it).

    python3 -m services.netsetup [--addr IP]... [--addr-range FIRST-LAST]... [--route "NET via GW"]... -- CMD...

--addr adds a secondary address (a second LB node, a moved ALB node) to the interface whose
network contains it, with that network's prefix. --route adds a route (instance targets send
replies for the internet range back through the NLB). Needs CAP_NET_ADMIN. Idempotent.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys


class NetSetupError(Exception):
    pass


def interfaces() -> list[tuple[str, ipaddress.IPv4Interface]]:
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], check=True, capture_output=True, text=True).stdout
    found = []
    for link in json.loads(out):
        for info in link.get("addr_info", []):
            found.append((link["ifname"], ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")))
    return found


def interface_for(address: ipaddress.IPv4Address, known: list[tuple[str, ipaddress.IPv4Interface]]) -> tuple[str, int]:
    for name, iface in known:
        if name != "lo" and address in iface.network:
            return name, iface.network.prefixlen
    nets = ", ".join(f"{n} {i.network}" for n, i in known if n != "lo")
    raise NetSetupError(f"no interface is on a network containing {address} (have: {nets})")


def address_commands(addresses: list[ipaddress.IPv4Address]) -> list[str]:
    known = interfaces()
    have = {iface.ip for _, iface in known}
    lines = []
    for address in addresses:
        if address in have:
            continue
        name, prefix = interface_for(address, known)
        # noprefixroute: the primary address already owns the connected route.
        lines.append(f"addr add {address}/{prefix} dev {name} noprefixroute")
    return lines


def parse_range(text: str) -> list[ipaddress.IPv4Address]:
    first_text, _, last_text = text.partition("-")
    first, last = ipaddress.IPv4Address(first_text), ipaddress.IPv4Address(last_text or first_text)
    if last < first:
        raise NetSetupError(f"address range {text} is empty")
    return [first + i for i in range(int(last) - int(first) + 1)]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("netsetup: usage: python3 -m services.netsetup [options] -- COMMAND...", file=sys.stderr)
        sys.exit(2)
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="netsetup")
    parser.add_argument("--addr", action="append", default=[], type=ipaddress.IPv4Address)
    parser.add_argument("--addr-range", action="append", default=[])
    parser.add_argument("--route", action="append", default=[])
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    try:
        addresses = list(args.addr)
        for text in args.addr_range:
            addresses += parse_range(text)
        batch = address_commands(addresses)
        batch += [f"route replace {route}" for route in args.route]
        if batch:
            subprocess.run(["ip", "-batch", "-"], input="\n".join(batch) + "\n", check=True, text=True,
                           capture_output=True)
            print(f"netsetup: {len(batch)} change(s): " + "; ".join(batch[:4]) + (" ..." if len(batch) > 4 else ""),
                  flush=True)
    except (NetSetupError, ValueError) as exc:
        print(f"netsetup: {exc}", file=sys.stderr)
        sys.exit(1)
    except subprocess.CalledProcessError as exc:
        print(f"netsetup: ip failed: {exc.stderr.strip()} (is CAP_NET_ADMIN granted?)", file=sys.stderr)
        sys.exit(1)
    if command:
        os.execvp(command[0], command)


if __name__ == "__main__":
    main()
