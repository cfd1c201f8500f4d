"""`lab curl`: a request from the client container, from any of its source addresses."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from ipaddress import IPv4Address

from lab import model as m
from lab.cli._common import current_topology, require_running
from lab.errors import LabError
from lab.render.simulators import CERT_DIR
from lab.runtime import docker_client, exec_in


def register(verbs) -> None:
    parser = verbs.add_parser("curl", help="send a request from the client container")
    parser.add_argument("--from", dest="source", default=None, metavar="IP",
                        help="source address (any in the client's source range; default: its own address)")
    parser.add_argument("-i", "--include", action="store_true", help="print the status line and headers first")
    parser.add_argument("-X", "--request", dest="method", default=None, metavar="METHOD")
    parser.add_argument("-H", "--header", dest="headers", action="append", default=[], metavar="'Name: value'")
    parser.add_argument("url")
    parser.set_defaults(run=run)


def source_address(topology: m.Topology, text: str | None) -> IPv4Address:
    if text is None:
        return topology.client.address
    try:
        address = IPv4Address(text)
    except ValueError:
        raise LabError(f"--from {text!r} is not an IPv4 address") from None
    if not topology.client.may_send_from(address):
        raise LabError(f"--from {address} is outside the client's source range "
                       f"{topology.client.source_first}-{topology.client.source_last}")
    return address


def curl_args(source: IPv4Address | str, url: str, *, include: bool = False, method: str | None = None,
              headers: Sequence[str] = (), extra: Sequence[str] = ()) -> list[str]:
    if not url.startswith(("http://", "https://")):
        raise LabError(f"URL {url!r} must start with http:// or https://")
    for header in headers:
        if ":" not in header:
            raise LabError(f"-H {header!r} is not of the form 'Name: value'")
    args = ["curl", "-sS", "--max-time", "30", "--cacert", f"{CERT_DIR}/public-ca.pem", "--interface", str(source)]
    if include:
        args.append("-i")
    if method:
        args += ["-X", method]
    for header in headers:
        args += ["-H", header]
    return [*args, *extra, url]


def run(args) -> int:
    topology = current_topology(None)
    source = source_address(topology, args.source)
    argv = curl_args(source, args.url, include=args.include, method=args.method, headers=args.headers)
    client = docker_client()
    require_running(client)
    code, out, err = exec_in(client, m.CLIENT_SERVICE, argv)
    sys.stdout.buffer.write(out)
    if out and not out.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    if err:
        sys.stderr.buffer.write(err)
    return code
