"""Small pieces the lab's services share: listen-address parsing and the serve-until-signalled loop."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import signal
import sys
from typing import Any, Callable, Coroutine, Final, NoReturn, Protocol

Address = tuple[str, int]


class PerSecond:
    """`format(second)` for whole epoch seconds, formatted again only when the second changes:
    access-log times, trace ids and Date headers format the same second many times over."""

    def __init__(self, format: Callable[[int], str]) -> None:
        self.format = format
        self.second = -1
        self.text = ""

    def of(self, second: int) -> str:
        if second != self.second:
            self.text = self.format(second)
            self.second = second
        return self.text


def _utc_prefix(second: int) -> str:
    return datetime.datetime.fromtimestamp(second, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")


_prefix: Final = PerSecond(_utc_prefix)  # iso_time's date-and-time part
DIGITS3: Final[tuple[str, ...]] = tuple("%03d" % i for i in range(1000))  # "000".."999": no per-call formatting


def iso_time(epoch: float) -> str:
    """`2018-07-02T22:23:00.186641Z`: UTC, microseconds (the date part is formatted once a second)."""
    second = int(epoch // 1)
    micros = int(round((epoch - second) * 1_000_000))
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    return f"{_prefix.of(second)}{DIGITS3[micros // 1000]}{DIGITS3[micros % 1000]}Z"


class ListenAddressError(ValueError):
    """A ``HOST:PORT`` string that cannot be listened on."""


def parse_listen(text: str, example: str = "10.20.0.2:53") -> Address:
    """``10.20.0.2:53`` or ``[::1]:53`` -> (host, port); raises ListenAddressError."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        ipv6_example = "[::1]:" + example.rpartition(":")[2]
        raise ListenAddressError(f"{text!r} is not HOST:PORT (e.g. {example} or {ipv6_example})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ListenAddressError(f"{text!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ListenAddressError(f"{text!r}: {port_text!r} is not a valid port (0-65535)")
    return host, int(port_text)


def format_address(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server(Protocol):
    async def start(self) -> None: ...
    async def serve_forever(self) -> None: ...
    async def close(self) -> None: ...


async def serve_until_signalled(server: Server, ready_line: Callable[[], str], log: Callable[[str], None]) -> None:
    """Start, print the ready line, serve until SIGTERM/SIGINT, close."""
    await server.start()
    log(ready_line())
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


class ServiceArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def listen_argument(example: str) -> Callable[[str], Address]:
    """An argparse `type=` for HOST:PORT options."""

    def parse(text: str) -> Address:
        try:
            return parse_listen(text, example)
        except ListenAddressError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def run_service(prog: str, main: Coroutine[Any, Any, None], config_errors: tuple[type[Exception], ...]) -> int:
    """Run a service's main coroutine on uvloop; config errors exit 2, listen failures 1, one line each."""
    import uvloop

    try:
        uvloop.run(main)
    except config_errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{prog}: error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
