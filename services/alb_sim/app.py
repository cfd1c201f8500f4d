"""The simulator's lifecycle: bind every listener on every node, the admin API and the health
checkers under one asyncio.TaskGroup; runs until cancelled."""

from __future__ import annotations

import asyncio
import gc
import random
import time
from typing import Callable

from services import native

from .admin import AdminApi
from .config import AlbConfig
from .healthcheck import start_health_checks
from .nodes import AddressBackend, NodeManager
from .runtime import AlbRuntime, log_event
from .server import ssl_error_is_noise


class AlbSimulator:
    def __init__(self, config: AlbConfig, *, announce: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 addresses: AddressBackend | None = None) -> None:
        self.config = config
        self.announce = announce or (lambda line: None)
        self.clock = clock
        self.rng = rng
        self.alb: AlbRuntime | None = None
        self.nodes: NodeManager | None = None
        self.addresses = addresses
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
        nodes = self.nodes = NodeManager(alb, self.config.rotation, addresses=self.addresses, announce=self.announce)
        servers: list[asyncio.base_events.Server] = []
        try:
            for node in self.config.nodes:
                await nodes.bind(node)
            if self.config.admin is not None:
                api = AdminApi(alb, nodes, lambda: self.bound)
                servers.append(await api.start(self.config.admin.address, self.config.admin.port))
            self.bound = True
            log_event("startup", name=self.config.name, nodes=[n.name for n in self.config.nodes],
                      listeners=[f"{l.protocol}:{l.port}" for l in self.config.listeners], build=native.state())
            async with asyncio.TaskGroup() as tg:
                nodes.spawn = tg.create_task
                gc.freeze()  # start-up objects live forever: keep them out of every later collection
                start_health_checks(tg, alb.groups, nodes.check_source)
                if self.config.rotation.interval_seconds > 0:
                    tg.create_task(nodes.run_periodic(), name="periodic rotation")
                self.ready.set()
                tg.create_task(asyncio.Event().wait(), name="forever")
        finally:
            self.bound = False
            for server in servers:
                server.close()
            nodes.close()
            alb.close()
