"""Policy routing and packet marking for client IP preservation (platform.md, verified recipe).

Replies from targets are addressed to the client's IP, which is not local to the NLB container;
marking packets that belong to a transparent socket and routing marked packets to ``lo`` lets
the kernel deliver them to that socket:

    ip rule add fwmark 1 lookup 100
    ip route add local 0.0.0.0/0 dev lo table 100
    nft: table ip nlb { chain pre { type filter hook prerouting priority mangle; policy accept;
                                    meta l4proto tcp socket transparent 1 meta mark set 0x1; } }

Idempotent: "File exists" from ``ip`` is ignored, and the nft script replaces only the
simulator's own ``ip nlb`` table in one transaction (never ``flush ruleset``: Docker keeps its
DNS NAT rules in the container's ruleset).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

FWMARK = 1
ROUTE_TABLE = 100

NFT_SCRIPT = f"""\
table ip nlb
delete table ip nlb
table ip nlb {{
  chain pre {{
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set {FWMARK:#x}
  }}
}}
"""


class NetSetupError(Exception):
    """A routing/marking command is missing or failed; the message names the command."""


@dataclass(frozen=True, slots=True)
class Command:
    argv: tuple[str, ...]
    stdin: str | None = None
    package: str = "iproute2"
    # Skip when the output of ``unless_argv`` contains ``unless_text`` (``ip rule add`` happily
    # adds duplicates instead of failing with "File exists").
    unless_argv: tuple[str, ...] | None = None
    unless_text: str = ""


def commands() -> tuple[Command, ...]:
    return (
        Command(("ip", "rule", "add", "fwmark", str(FWMARK), "lookup", str(ROUTE_TABLE)),
                unless_argv=("ip", "rule", "show"),
                unless_text=f"fwmark {FWMARK:#x} lookup {ROUTE_TABLE}"),
        Command(("ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", str(ROUTE_TABLE))),
        Command(("nft", "-f", "-"), NFT_SCRIPT, "nftables"),
    )


def apply(cmds: tuple[Command, ...] | None = None) -> None:
    """Run the commands (blocking; call via ``asyncio.to_thread``). Raises NetSetupError."""
    for cmd in cmds if cmds is not None else commands():
        if cmd.unless_argv is not None:
            probe = _run(cmd.unless_argv, None, cmd.package)
            if probe.returncode == 0 and cmd.unless_text in probe.stdout:
                continue
        res = _run(cmd.argv, cmd.stdin, cmd.package)
        if res.returncode != 0 and "File exists" not in res.stderr:
            shown = " ".join(cmd.argv)
            detail = " ".join(res.stderr.split()) or f"exit status {res.returncode}"
            hint = " (the container needs cap_add: NET_ADMIN)" if (
                "Operation not permitted" in detail or "EPERM" in detail) else ""
            raise NetSetupError(f"`{shown}` failed: {detail}{hint}")


def _run(argv: tuple[str, ...], stdin: str | None, package: str) -> subprocess.CompletedProcess[str]:
    shown = " ".join(argv)
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=10,
                              check=False)
    except FileNotFoundError:
        raise NetSetupError(f"client IP preservation needs `{argv[0]}` (Debian package"
                            f" {package}), not found; cannot run: {shown}") from None
    except subprocess.TimeoutExpired:
        raise NetSetupError(f"`{shown}` did not finish within 10 s") from None
