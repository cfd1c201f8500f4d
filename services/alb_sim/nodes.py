"""The ALB's nodes at run time, and how their addresses change (docs/decisions.md #40).

AWS replaces ALB nodes (scaling, maintenance) with nodes on new addresses, updates the load
balancer's DNS name (TTL 60 s) and keeps the old nodes serving for a while so clients that cached
the old addresses are not cut off. Here a rotation:

1. plans one new node per AZ on the next free address of that AZ's pool (`plan_rotation`, pure);
2. adds the addresses to the container's interface (`ip addr add`) and binds every listener;
3. PUTs the new address set to the lab DNS (the name HAProxy re-resolves every second);
4. marks the old nodes draining: they still accept connections, but answer every request with
   `Connection: close`, so keep-alive clients move to the new addresses as soon as they re-resolve;
5. after `drain_seconds` closes the old listeners, closes their idle connections (busy ones close
   after their response) and removes the addresses (`ip addr del`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Callable, Mapping, Protocol, Sequence

from .config import Node, Rotation
from .runtime import AlbRuntime, NodeState, log_event
from .h2front import H2ClientConnection
from .server import ClientConnection

RETIRE_GRACE_SECONDS = 10.0  # busy connections on a retiring node get this long to finish


class RotationError(Exception):
    """A rotation could not happen; the message says why and what to change."""


def plan_rotation(nodes: Sequence[Node], pools: Mapping[str, Sequence[str]], busy: set[str],
                  generation: int) -> list[Node]:
    """One new node per AZ of `nodes`, on the first address after the node's own in its AZ's pool
    (wrapping around) that is not `busy` (active or draining). Names: `alb-a` -> `alb-a-<generation>`."""
    planned: list[Node] = []
    taken = set(busy)
    for node in nodes:
        pool = list(pools.get(node.az, ()))
        start = pool.index(node.address) + 1 if node.address in pool else 0
        ordered = pool[start:] + pool[:start]
        free = [a for a in ordered if a not in taken]
        if not free:
            raise RotationError(f"AZ {node.az}: every address of its pool ({', '.join(pool) or 'none'}) is in use "
                                "by an active or draining node; add addresses to alb.rotation.address_pools "
                                "or wait until the draining nodes are gone")
        base = node.name.rsplit("-", 1)[0] if node.name.rsplit("-", 1)[-1].isdigit() else node.name
        planned.append(Node(name=f"{base}-{generation}", az=node.az, address=free[0]))
        taken.add(free[0])
    return planned


class AddressBackend(Protocol):
    async def add(self, address: str) -> None: ...
    async def remove(self, address: str) -> None: ...


class IpAddresses:
    """`ip addr add/del` on the interface whose network holds the address (needs CAP_NET_ADMIN).
    Loopback addresses (unit tests, benchmarks) are local already and are left alone."""

    async def add(self, address: str) -> None:
        if ipaddress.ip_address(address).is_loopback:
            return
        from services.netsetup import NetSetupError, address_commands
        try:
            commands = await asyncio.to_thread(address_commands, [ipaddress.IPv4Address(address)])
        except NetSetupError as exc:
            raise RotationError(str(exc)) from None
        for command in commands:
            await self._ip(command)

    async def remove(self, address: str) -> None:
        if ipaddress.ip_address(address).is_loopback:
            return
        from services.netsetup import interfaces
        for name, iface in await asyncio.to_thread(interfaces):
            if str(iface.ip) == address:
                await self._ip(f"addr del {iface.with_prefixlen} dev {name}")

    @staticmethod
    async def _ip(command: str) -> None:
        proc = await asyncio.create_subprocess_exec("ip", *command.split(), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RotationError(f"ip {command} failed: {err.decode(errors='replace').strip()} "
                                "(is CAP_NET_ADMIN granted?)")


async def put_dns_record(admin: str, name: str, values: list[str], ttl: int, timeout: float = 5.0) -> None:
    """PUT /records/<name> on the lab DNS admin API."""
    host, _, port = admin.rpartition(":")
    body = json.dumps({"type": "A", "ttl": ttl, "values": values}).encode()
    head = (f"PUT /records/{name} HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(head + body)
            status_line = await reader.readline()
            writer.close()
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a status line over 64 KiB
        raise RotationError(f"lab DNS admin API {admin} did not answer: {exc!r}") from None
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].startswith(b"2"):
        raise RotationError(f"lab DNS admin API {admin} refused PUT /records/{name}: {status_line!r}")


class NodeManager:
    """Binds nodes, rotates them, retires drained ones. All under the simulator's TaskGroup."""

    def __init__(self, alb: AlbRuntime, rotation: Rotation, *, addresses: AddressBackend | None = None,
                 announce: Callable[[str], None] = lambda line: None) -> None:
        self.alb = alb
        self.rotation = rotation
        self.addresses: AddressBackend = addresses or IpAddresses()
        self.announce = announce
        self.nodes: list[NodeState] = []
        self.generation = 1
        self.lock = asyncio.Lock()
        self.spawn: Callable[..., asyncio.Task[None]] | None = None

    @property
    def active(self) -> list[NodeState]:
        return [n for n in self.nodes if not n.draining]

    async def bind(self, node: Node) -> NodeState:
        state = self.alb.node_state(node)
        loop = self.alb.loop
        try:
            for lr in self.alb.listener_runtimes(state):
                state.servers.append(await loop.create_server(
                    lambda lr=lr: ClientConnection(lr, h2=H2ClientConnection), node.address, lr.listener.port,
                    ssl=lr.ssl_context, backlog=1024, reuse_address=True,
                    ssl_handshake_timeout=10.0 if lr.ssl_context else None))
        except OSError:
            for server in state.servers:
                server.close()
            self.alb.forget_node(state)
            raise
        self.nodes.append(state)
        listeners = " ".join(f"{l.protocol}:{node.address}:{l.port}" for l in self.alb.listeners.values())
        self.announce(f"alb ready: {node.name} {listeners}")
        return state

    def check_source(self) -> str | None:
        """The address health checks connect from: an active node's (never a draining one's, whose
        address is about to disappear)."""
        active = self.active
        return active[0].node.address if active else None

    def describe(self) -> dict[str, object]:
        return {"DNSName": self.alb.config.dns_name, "Nodes": [n.describe() for n in self.nodes],
                "DrainSeconds": self.rotation.drain_seconds}

    async def rotate(self, drain_seconds: float | None = None) -> dict[str, object]:
        drain = self.rotation.drain_seconds if drain_seconds is None else drain_seconds
        async with self.lock:
            old = self.active
            busy = {n.node.address for n in self.nodes}
            planned = plan_rotation([n.node for n in old], self.rotation.pools, busy, self.generation + 1)
            added: list[NodeState] = []
            try:
                for node in planned:
                    await self.addresses.add(node.address)
                    added.append(await self.bind(node))
                if self.rotation.dns_admin:
                    await put_dns_record(self.rotation.dns_admin, self.alb.config.dns_name,
                                         [n.address for n in planned], self.rotation.dns_ttl)
            except (RotationError, OSError) as exc:
                for state in added:
                    await self._close(state)
                for node in planned:
                    await self.addresses.remove(node.address)
                if isinstance(exc, RotationError):
                    raise
                raise RotationError(f"cannot bind the new node addresses: {exc.strerror or exc}") from None
            self.generation += 1
            now = self.alb.loop.time()
            for state in old:
                state.draining = True
                state.retire_at = self.alb.clock() + drain
                self._spawn(self._retire_later(state, drain, now), f"retire:{state.node.name}")
            log_event("rotation", new=[f"{n.name} {n.address}" for n in planned],
                      draining=[f"{s.node.name} {s.node.address}" for s in old], drain_seconds=drain)
            return {"New": [n.describe() for n in added], "Draining": [n.describe() for n in old],
                    "DrainSeconds": drain}

    async def run_periodic(self) -> None:
        interval = self.rotation.interval_seconds
        while interval > 0:
            await asyncio.sleep(interval)
            try:
                await self.rotate()
            except RotationError as exc:
                log_event("error", where="periodic rotation", error=str(exc))

    def _spawn(self, coro, name: str) -> None:
        if self.spawn is not None:
            self.spawn(coro, name=name)
        else:
            asyncio.ensure_future(coro)

    async def _retire_later(self, state: NodeState, drain: float, started: float) -> None:
        await asyncio.sleep(max(0.0, started + drain - self.alb.loop.time()))
        async with self.lock:
            await self._close(state)
            await self.addresses.remove(state.node.address)
        log_event("node_retired", node=state.node.name, address=state.node.address)

    async def _close(self, state: NodeState) -> None:
        for server in state.servers:
            server.close()
        deadline = self.alb.loop.time() + RETIRE_GRACE_SECONDS
        while True:
            for conn in list(state.connections):
                if conn.close_if_idle():
                    state.connections.discard(conn)
            if not state.connections or self.alb.loop.time() >= deadline:
                break
            await asyncio.sleep(0.1)
        for conn in list(state.connections):
            if conn.transport is not None:
                conn.transport.abort()
        state.connections.clear()
        # Connections to targets from this address would hang once it is gone.
        while state.pool.retire() and self.alb.loop.time() < deadline:
            await asyncio.sleep(0.1)
        if state in self.nodes:
            self.nodes.remove(state)
        self.alb.forget_node(state)

    def close(self) -> None:
        for state in self.nodes:
            for server in state.servers:
                server.close()
