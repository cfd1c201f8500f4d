"""The NLB simulator process: listeners per node, health checkers, admin API, one TaskGroup."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl
import time
from typing import Callable

from services.certselect import read_facts, select_by_sni

from . import control, netsetup
from .accesslog import AccessLog, elb_field
from .admin import AdminApi
from .albtrack import run_alb_tracker
from .checker import HealthRegistry, run_checker
from .config import Listener, NlbConfig, Node, Target, TargetGroup
from .dnspublish import run_publisher
from .flowlog import FlowLog
from .vpcflow import VpcFlowLog, account_of
from .health import State, Transition
from .listeners import ListenerRuntime
from .metrics import Metrics, render
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
        self.initial_targets = [t for tg in cfg.target_groups for t in tg.targets]
        self.listeners: list[ListenerRuntime] = []
        self.ready = asyncio.Event()
        self.metrics = {n.name: Metrics() for n in cfg.nodes}
        self.hello: dict[int, tuple[str | None, float, str]] = {}  # id(SSLObject) -> (SNI, ClientHello time, cert ARN)
        self._group: asyncio.TaskGroup | None = None
        self._checkers: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._wake: dict[tuple[str, str, str], asyncio.Event] = {}  # health check settings changed
        self._drains: dict[tuple[str, str], asyncio.Task[None]] = {}

    # --- run-time control (admin API) ---
    def set_config(self, cfg: NlbConfig) -> None:
        """Swap in a new config: new flows use it at once; open flows keep what they had."""
        self.cfg = cfg
        self.registry.cfg = cfg
        for rt in self.listeners:
            rt.refresh(cfg)

    def register_targets(self, body: dict) -> dict:
        cfg = self.cfg
        tg = control.lookup_target_group(cfg, body.get("TargetGroupName"))
        known = {t.id: t for g in cfg.target_groups for t in g.targets}
        known.update({t.id: t for t in self.registry.draining.values()})
        known.update({t.id: t for t in self.initial_targets})
        new_tg, added = control.register_targets(tg, body.get("Targets"), known.values(),
                                                 [n.az for n in cfg.nodes])
        self.set_config(control.replace_target_group(cfg, new_tg))
        for t in added:
            drain = self._drains.pop((tg.name, t.id), None)
            if drain is not None:
                drain.cancel()
                self.registry.draining.pop((tg.name, t.id), None)
            self.registry.add(new_tg, t)
            self._start_checkers(new_tg, t)
        return {}

    def deregister_targets(self, body: dict) -> dict:
        cfg = self.cfg
        tg = control.lookup_target_group(cfg, body.get("TargetGroupName"))
        new_tg, removed = control.deregister_targets(tg, body.get("Targets"))
        self.set_config(control.replace_target_group(cfg, new_tg))
        for t in removed:
            self.registry.draining[(tg.name, t.id)] = t
            self._drains[(tg.name, t.id)] = asyncio.get_running_loop().create_task(
                self._drain(new_tg.name, t))
        return {}

    async def _drain(self, tg_name: str, target: Target) -> None:
        """``draining`` for deregistration_delay.timeout_seconds; then, with
        connection_termination enabled, RST its open flows; then forgotten (``unused``)."""
        tg = self.cfg.target_group(tg_name)
        await asyncio.sleep(tg.deregistration_delay_seconds)
        tg = self.cfg.target_group(tg_name)
        if tg.connection_termination:
            n = sum(rt.reset_flows_to(tg_name, target.id) for rt in self.listeners)
            log.info("%s %s: deregistration delay over, reset %d open flows", tg_name, target.id, n)
        self._drains.pop((tg_name, target.id), None)
        for node in self.cfg.nodes:
            task = self._checkers.pop((node.name, tg_name, target.id), None)
            self._wake.pop((node.name, tg_name, target.id), None)
            if task is not None:
                task.cancel()
        self.registry.remove(tg_name, target.id)
        log.info("%s %s: draining -> unused (deregistered)", tg_name, target.id)

    def _alb_moved(self, tg: TargetGroup) -> None:
        """The ALB's nodes moved (albtrack): new flows and health checks use the new addresses."""
        self.set_config(control.replace_target_group(self.cfg, tg))

    def modify_target_group_attributes(self, body: dict) -> dict:
        tg = control.lookup_target_group(self.cfg, body.get("TargetGroupName"))
        new_tg = control.modify_target_group_attributes(self.cfg, tg, body.get("Attributes"))
        self.set_config(control.replace_target_group(self.cfg, new_tg))
        return control.attributes_answer(control.target_group_attributes(new_tg))

    def modify_target_group(self, body: dict) -> dict:
        """ModifyTargetGroup (health check): the next check of every target uses the new settings,
        and its interval counts from the previous check (a shorter one may mean at once)."""
        tg = control.lookup_target_group(self.cfg, body.get("TargetGroupName"))
        new_tg = control.modify_target_group(tg, body, self.cfg.relaxed_limits)
        self.set_config(control.replace_target_group(self.cfg, new_tg))
        self.registry.set_thresholds(new_tg)
        for (_, tg_name, _), event in self._wake.items():
            if tg_name == new_tg.name:
                event.set()
        log.info("%s: health check now %s", new_tg.name, new_tg.health_check)
        return {"TargetGroups": [control.health_check_settings(new_tg)]}

    def modify_load_balancer_attributes(self, body: dict) -> dict:
        self.set_config(control.modify_load_balancer_attributes(self.cfg, body.get("Attributes")))
        return control.attributes_answer(control.load_balancer_attributes(self.cfg))

    def modify_listener_attributes(self, body: dict) -> dict:
        listener = control.lookup_listener(self.cfg, body.get("Port"))
        new = control.modify_listener_attributes(listener, body.get("Attributes"), self.cfg.relaxed_limits)
        self.set_config(control.replace_listener(self.cfg, new))
        return control.attributes_answer(control.listener_attributes(new))

    def metrics_text(self) -> str:
        per_node = [({"LoadBalancer": self.cfg.name, "AvailabilityZone": n.az}, self.metrics[n.name])
                    for n in self.cfg.nodes]
        gauges: list[tuple[str, dict[str, str], float]] = []
        for n in self.cfg.nodes:
            active = sum(len(rt.flows) for rt in self.listeners if rt.node.name == n.name)
            gauges.append(("ActiveFlowCount", {"LoadBalancer": self.cfg.name, "AvailabilityZone": n.az},
                           active))
        for kind in ("HealthyHostCount", "UnHealthyHostCount"):
            for tg in self.cfg.target_groups:
                for n in self.cfg.nodes:
                    ok = sum(self.registry.healthy(n.name, tg.name, t.id) for t in tg.targets
                             if t.az == n.az)
                    own = sum(1 for t in tg.targets if t.az == n.az)
                    gauges.append((kind, {"LoadBalancer": self.cfg.name, "TargetGroup": tg.name,
                                          "AvailabilityZone": n.az},
                                   ok if kind == "HealthyHostCount" else own - ok))
        return render(per_node, gauges)

    # --- health-check lifecycle ---
    def _target_group_now(self, name: str) -> TargetGroup:
        """The group as the current configuration has it (attributes and health checks change live)."""
        return self.cfg.target_group(name)

    def _start_checkers(self, tg: TargetGroup, target: Target) -> None:
        assert self._group is not None
        for node in self.cfg.nodes:
            key = (node.name, tg.name, target.id)
            if key in self._checkers and not self._checkers[key].done():
                continue
            wake = self._wake.setdefault(key, asyncio.Event())
            self._checkers[key] = self._group.create_task(
                run_checker(self.cfg, node, tg, target, self.registry.get(*key), self._on_health,
                            functools.partial(self._target_group_now, tg.name), wake),
                name=f"hc {node.name} {tg.name} {target.id}")

    def _on_health(self, node: Node, tg: TargetGroup, target: Target, change: Transition) -> None:
        """A target the node now sees as unhealthy: RST its flows through that node (AWS default
        target_health_state.unhealthy.connection_termination.enabled=true), unless failing open."""
        if change.new is not State.UNHEALTHY:
            return
        tg = self.cfg.target_group(tg.name)
        if not tg.unhealthy_connection_termination:
            return
        for rt in self.listeners:
            if rt.node.name == node.name and rt.tg.name == tg.name:
                pool = [t for t in tg.targets if rt.cross_zone or t.az == node.az]
                if not any(rt.is_healthy(t) for t in pool):
                    continue  # fail open: flows keep going to unhealthy targets
                n = rt.reset_flows_to(tg.name, target.id)
                if n:
                    log.info("%s %s %s unhealthy: reset %d flows", node.name, tg.name, target.id, n)

    def _dns_healthy(self, node: str, tg: str, target_id: str) -> bool:
        try:
            state = self.registry.get(node, tg, target_id).state
        except KeyError:
            return False
        return state in (State.HEALTHY, State.INITIAL)

    def all_bound(self) -> bool:
        return bool(self.listeners) and all(rt.bound for rt in self.listeners)

    def _contexts(self) -> list[tuple[ssl.SSLContext | None, ssl.SSLContext | None]]:
        out: list[tuple[ssl.SSLContext | None, ssl.SSLContext | None]] = []
        for i, lst in enumerate(self.cfg.listeners):
            tg = self.cfg.target_group(lst.target_group)
            if lst.protocol != "TLS":
                out.append((None, None))
                continue
            assert lst.certificate is not None and lst.ssl_policy is not None
            back = target_context(lst.ssl_policy) if tg.protocol == "TLS" else None
            out.append((self._front_context(i, lst), back))
        return out

    def _front_context(self, index: int, lst: Listener) -> ssl.SSLContext:
        """The default certificate's context; SNI switches to a listed certificate's (certselect),
        and the ClientHello's name, time and chosen certificate are kept for the access log."""
        contexts, facts = [], []
        for where, cert in [("certificate", lst.certificate),
                            *((f"certificates[{j}]", c) for j, c in enumerate(lst.certificates))]:
            assert cert is not None and lst.ssl_policy is not None
            try:
                contexts.append(server_context(cert.pem, cert.key, lst.ssl_policy, lst.alpn_policy))
                facts.append(read_facts(cert.pem, cert.key_algorithm))
            except (OSError, ssl.SSLError) as exc:
                raise StartupError(f"listeners[{index}].{where}.pem: cannot load {cert.pem}:"
                                   f" {getattr(exc, 'strerror', None) or exc}") from None
        arns = [lst.certificate.arn, *(c.arn for c in lst.certificates)]  # type: ignore[union-attr]
        hello = self.hello

        def presented(obj: ssl.SSLObject, name: str | None, index: int) -> None:
            if len(hello) > 10000:  # handshakes that never completed
                hello.clear()
            hello[id(obj)] = (name, time.monotonic(), arns[index])
        select_by_sni(contexts, facts[1:], presented)
        return contexts[0]

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
        flowlog = FlowLog(cfg.log_dir, VpcFlowLog(cfg.log_dir), account_of(cfg.arn), cfg.arn)
        access = AccessLog(cfg.log_dir, elb_field(cfg.arn))
        admin_server: asyncio.AbstractServer | None = None
        try:
            for node in cfg.nodes:
                for lst, (front, back) in zip(cfg.listeners, contexts):
                    rt = ListenerRuntime(cfg, node, lst, self.registry, flowlog, self.rng, front, back,
                                         self.metrics[node.name])
                    rt.access_log, rt.hello = access, self.hello
                    self.listeners.append(rt)
                    await rt.start()
            try:
                admin_server = await AdminApi(self).start()
            except OSError as exc:
                raise StartupError(f"admin: cannot listen on {cfg.admin.address}:{cfg.admin.port}:"
                                   f" {exc.strerror}") from None
            for rt in self.listeners:
                self.on_ready(f"nlb ready: {rt.node.name} {rt.label} on {rt.node.elastic_ip}")
            self.on_ready(f"nlb admin: http://{cfg.admin.address}:{cfg.admin.port}/health")
            async with asyncio.TaskGroup() as group:
                self._group = group
                for tg in cfg.target_groups:
                    for t in tg.targets:
                        self._start_checkers(tg, t)
                helpers = [group.create_task(rt.sweep_idle(), name=f"idle {rt.node.name} {rt.label}")
                           for rt in self.listeners]
                helpers.append(group.create_task(run_publisher(lambda: self.cfg, self._dns_healthy),
                                                 name="dns publisher"))
                if any(tg.alb is not None for tg in cfg.target_groups):
                    helpers.append(group.create_task(run_alb_tracker(lambda: self.cfg, self._alb_moved),
                                                     name="alb tracker"))
                self.ready.set()
                await stop.wait()
                for task in [*self._checkers.values(), *self._drains.values(), *helpers]:
                    task.cancel()
        finally:
            for rt in self.listeners:
                rt.stop()
            if admin_server is not None:
                admin_server.close()
            await asyncio.sleep(0)  # let aborted transports deliver connection_lost
            flowlog.close()
            access.close()
