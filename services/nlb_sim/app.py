"""The NLB simulator process: listeners per node, health checkers, admin API, one TaskGroup."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from typing import Callable

from . import netsetup
from .admin import AdminApi
from .checker import HealthRegistry, run_checker
from .config import NlbConfig
from .flowlog import FlowLog
from .listeners import ListenerRuntime
from .tlsconf import server_context, target_context

log = logging.getLogger("nlb")


class StartupError(Exception):
    """The simulator cannot start (certificate, routing setup, admin bind); one-line message."""


class NlbApp:
    def __init__(self, cfg: NlbConfig, *, rng: random.Random | None = None,
                 on_ready: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.rng = rng or random.Random()
        self.on_ready = on_ready or (lambda line: None)
        self.registry = HealthRegistry(cfg)
        self.listeners: list[ListenerRuntime] = []
        self.ready = asyncio.Event()

    def all_bound(self) -> bool:
        return bool(self.listeners) and all(rt.bound for rt in self.listeners)

    def _contexts(self) -> list[tuple[ssl.SSLContext | None, ssl.SSLContext | None]]:
        out = []
        for i, lst in enumerate(self.cfg.listeners):
            tg = self.cfg.target_group(lst.target_group)
            if lst.protocol != "TLS":
                out.append((None, None))
                continue
            assert lst.certificate is not None and lst.ssl_policy is not None
            try:
                front = server_context(lst.certificate.pem, lst.certificate.key, lst.ssl_policy,
                                       lst.alpn_policy)
            except (OSError, ssl.SSLError) as exc:
                raise StartupError(f"listeners[{i}].certificate.pem: cannot load"
                                   f" {lst.certificate.pem}: {getattr(exc, 'strerror', None) or exc}"
                                   ) from None
            back = target_context(lst.ssl_policy) if tg.protocol == "TLS" else None
            out.append((front, back))
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set. Raises StartupError / ListenerBindError before serving."""
        cfg = self.cfg
        contexts = self._contexts()
        if cfg.needs_transparent_routing:
            try:
                await asyncio.to_thread(netsetup.apply)
            except netsetup.NetSetupError as exc:
                raise StartupError(str(exc)) from None
        elif not cfg.transparent and any(tg.preserve_client_ip for tg in cfg.target_groups):
            log.warning("transparent is false: target groups with preserve_client_ip.enabled=true"
                        " connect from an ordinary local address; targets will not see client IPs")
        flowlog = FlowLog(cfg.log_dir)
        admin_server: asyncio.AbstractServer | None = None
        try:
            for node in cfg.nodes:
                for lst, (front, back) in zip(cfg.listeners, contexts):
                    rt = ListenerRuntime(cfg, node, lst, self.registry, flowlog, self.rng, front, back)
                    self.listeners.append(rt)
                    await rt.start()
            try:
                admin_server = await AdminApi(cfg, self.registry, self.all_bound).start()
            except OSError as exc:
                raise StartupError(f"admin: cannot listen on {cfg.admin.address}:{cfg.admin.port}:"
                                   f" {exc.strerror}") from None
            for rt in self.listeners:
                self.on_ready(f"nlb ready: {rt.node.name} {rt.label} on {rt.node.elastic_ip}")
            self.on_ready(f"nlb admin: http://{cfg.admin.address}:{cfg.admin.port}/health")
            async with asyncio.TaskGroup() as group:
                checkers = [group.create_task(run_checker(cfg, node, tg, t,
                                                          self.registry.get(node.name, tg.name, t.id)),
                                              name=f"hc {node.name} {tg.name} {t.id}")
                            for node in cfg.nodes for tg in cfg.target_groups for t in tg.targets]
                self.ready.set()
                await stop.wait()
                for task in checkers:
                    task.cancel()
        finally:
            for rt in self.listeners:
                rt.stop()
            if admin_server is not None:
                admin_server.close()
            await asyncio.sleep(0)  # let aborted transports deliver connection_lost
            flowlog.close()
