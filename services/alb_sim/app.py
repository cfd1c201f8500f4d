"""The simulator's lifecycle: bind every listener on every node, the admin API and the health
checkers under one asyncio.TaskGroup; runs until cancelled."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Callable

from .admin import AdminApi
from .config import AlbConfig
from .healthcheck import start_health_checks
from .runtime import AlbRuntime, log_event
from .server import ClientConnection, ssl_error_is_noise


class AlbSimulator:
    def __init__(self, config: AlbConfig, *, announce: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.config = config
        self.announce = announce or (lambda line: None)
        self.clock = clock
        self.rng = rng
        self.alb: AlbRuntime | None = None
        self.bound = False
        self.ready = asyncio.Event()

    def _exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if ssl_error_is_noise(context):
            return
        log_event("error", where="event loop", message=context.get("message"),
                  error=repr(context.get("exception")))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._exception_handler)
        alb = self.alb = AlbRuntime(self.config, loop, clock=self.clock, rng=self.rng)
        servers: list[asyncio.base_events.Server] = []
        try:
            by_node: dict[str, list[str]] = {}
            for lr in alb.listener_runtimes():
                server = await loop.create_server(
                    lambda lr=lr: ClientConnection(lr), lr.node.address, lr.listener.port,
                    ssl=lr.ssl_context, backlog=1024, reuse_address=True,
                    ssl_handshake_timeout=10.0 if lr.ssl_context else None)
                servers.append(server)
                by_node.setdefault(lr.node.name, []).append(
                    f"{lr.listener.protocol}:{lr.node.address}:{lr.listener.port}")
            if self.config.admin is not None:
                api = AdminApi(alb, lambda: self.bound)
                servers.append(await asyncio.start_server(api.serve_client, self.config.admin.address,
                                                          self.config.admin.port, reuse_address=True))
            self.bound = True
            for node, listeners in by_node.items():
                self.announce(f"alb ready: {node} {' '.join(listeners)}")
            log_event("startup", name=self.config.name, nodes=[n.name for n in self.config.nodes],
                      listeners=[f"{l.protocol}:{l.port}" for l in self.config.listeners])
            self.ready.set()
            async with asyncio.TaskGroup() as tg:
                start_health_checks(tg, alb.groups)
                tg.create_task(asyncio.Event().wait(), name="forever")
        finally:
            self.bound = False
            for server in servers:
                server.close()
            alb.close()
