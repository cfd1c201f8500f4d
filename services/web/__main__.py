"""``python3 -m services.web``: run one echo node.

    python3 -m services.web --service api --node web-api-a --az a \\
        --listen 10.20.1.41:8443 --tls-cert /lab/certs/web-api-a.pem [--tls-key FILE] \\
        [--listen-http 10.20.1.41:8080] [--proxy-protocol]

Prints ``web-api-a ready on https://10.20.1.41:8443`` once every listener is bound.
Exit status: 2 for bad arguments or certificate files, 1 when a listener cannot be bound.
"""

from __future__ import annotations

import sys


from services.common import ServiceArgumentParser, listen_argument, run_service, serve_until_signalled
from services.web import echo
from services.web.server import EchoConfig, EchoConfigError, EchoServer
from services.web.server import Listener


_PROG = "python3 -m services.web"


_listen_arg = listen_argument("10.20.1.41:8443")


def _parse_args(argv: list[str] | None) -> EchoConfig:
    parser = ServiceArgumentParser(prog=_PROG, description="Lab echo service")
    parser.add_argument("--service", required=True, help="topology service name, e.g. api")
    parser.add_argument("--node", required=True, help="node name, e.g. web-api-a")
    parser.add_argument("--az", required=True, help="availability zone suffix, e.g. a")
    parser.add_argument("--listen", type=_listen_arg, action="append", default=[],
                        metavar="ADDR:PORT", help="HTTPS listener (repeatable)")
    parser.add_argument("--listen-http", type=_listen_arg, action="append", default=[],
                        metavar="ADDR:PORT", help="plain HTTP listener (repeatable)")
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM certificate (may hold the key)")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM key (default: from --tls-cert)")
    parser.add_argument("--proxy-protocol", action="store_true",
                        help="expect a PROXY protocol header on every connection")
    args = parser.parse_args(argv)
    if not args.listen and not args.listen_http:
        parser.error("at least one --listen or --listen-http is required")
    if args.listen and not args.tls_cert:
        parser.error("--listen (HTTPS) requires --tls-cert")
    listeners = [Listener(host, port, tls=True) for host, port in args.listen]
    listeners += [Listener(host, port, tls=False) for host, port in args.listen_http]
    return EchoConfig(
        identity=echo.Identity(service=args.service, node=args.node, az=args.az),
        listeners=tuple(listeners),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        proxy_protocol=args.proxy_protocol,
    )


def _log(line: str) -> None:
    print(line, flush=True)


async def _run(config: EchoConfig) -> None:
    server = EchoServer(config, _log)
    await serve_until_signalled(server, lambda: f"{config.identity.node} ready on {' '.join(server.urls)}", _log)


def main(argv: list[str] | None = None) -> int:
    return run_service(_PROG, _run(_parse_args(argv)), (EchoConfigError,))


if __name__ == "__main__":
    sys.exit(main())
