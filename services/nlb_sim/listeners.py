"""One ``ListenerRuntime`` per (node, listener): the listening socket and what its flows need."""

from __future__ import annotations

import _socket
import asyncio
import datetime
import errno
import time
import random
import socket
import ssl
from typing import Any, Callable

from .config import Listener, NlbConfig, Node, Target
from .flowhash import candidates, choose, flow_hash
from .flowlog import FlowLog
from .checker import HealthRegistry
from .accesslog import AccessLog, TlsConnection, listener_id
from .metrics import Metrics
from .relay import TLS_KEEPALIVE_SECONDS, ClientSide, Flow
from .tlsconf import target_context
from .splice import HAVE_SPLICE, PipePool, SpliceFlow, SplicePoller

LISTEN_BACKLOG = 4096
ACCEPT_BATCH = 64
CLIENT_TLS_HANDSHAKE_TIMEOUT = 10.0


class ListenerBindError(Exception):
    """A listener could not bind its node's address; the message names node, listener, address."""


class ListenerRuntime:
    """Implements ``relay.FlowContext`` for the flows accepted on one node's listener."""

    def __init__(self, cfg: NlbConfig, node: Node, listener: Listener, registry: HealthRegistry,
                 flowlog: FlowLog, rng: random.Random, server_ssl: ssl.SSLContext | None,
                 target_ssl: ssl.SSLContext | None, metrics: Metrics | None = None) -> None:
        self.listener_port = listener.port
        self.node = node
        self.server_ssl = server_ssl
        self.target_ssl = target_ssl
        self._target_ssl_alpn: dict[str, ssl.SSLContext] = {}  # front ALPN protocol -> target context
        self.registry = registry
        self.flowlog = flowlog
        self.rng = rng
        self.flows: set[Flow] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.AbstractServer | None = None
        self.listen_sock: socket.socket | None = None
        self.listen_family = int(socket.AF_INET)
        self.loop: asyncio.AbstractEventLoop = asyncio.get_event_loop()
        self.use_splice = HAVE_SPLICE and cfg.splice
        self.pipes = PipePool()
        self.poller: SplicePoller | None = None  # created when the splice accept loop starts
        self.metrics = metrics or Metrics()
        self.access_log: AccessLog | None = None
        self.hello: dict[int, tuple[str | None, float, str]] = {}
        self.listener_id = listener_id(cfg.arn, listener.port)
        self.listen_addr = (node.elastic_ip, listener.port)
        self.refresh(cfg)

    def refresh(self, cfg: NlbConfig) -> None:
        """Take the current config (run-time API changes): applies to NEW flows only, as in AWS."""
        listener = self.listener = next(x for x in cfg.listeners if x.port == self.listener_port)
        self.label = listener.label
        self.tg = cfg.target_group(listener.target_group)
        self.cross_zone = cfg.cross_zone_for(self.tg)
        self.proxy_protocol_v2 = self.tg.proxy_protocol_v2
        self.connect_on_payload = (self.proxy_protocol_v2
                                   and self.tg.header_placement == "on_first_ack_with_payload")
        self.preserve_client_ip = self.tg.preserve_client_ip
        self.transparent = cfg.transparent
        self.vpce_id = cfg.vpc_endpoint_id
        self.sticky = self.tg.stickiness
        # The targets a new flow may get (flowhash.candidates), kept until the registry's version moves.
        self._pool: tuple[Target, ...] = ()
        self._pool_failing_open = False
        self._pool_version = -1
        self.idle_timeout = float(listener.idle_timeout_seconds)
        self.keepalive_seconds = TLS_KEEPALIVE_SECONDS if listener.protocol == "TLS" else None
        # Plain bytes both ways, nothing injected: the flow may be handed to the splice pump.
        self.splice_eligible = (self.server_ssl is None and self.target_ssl is None
                                and not self.proxy_protocol_v2 and HAVE_SPLICE and cfg.splice)

    # --- FlowContext ---
    def target_ssl_for(self, alpn: str | None) -> ssl.SSLContext | None:
        """The context for a TLS target connection of a flow whose client negotiated ``alpn``."""
        if alpn is None or self.target_ssl is None:
            return self.target_ssl
        ctx = self._target_ssl_alpn.get(alpn)
        if ctx is None:
            assert self.listener.ssl_policy is not None
            ctx = self._target_ssl_alpn[alpn] = target_context(self.listener.ssl_policy, alpn)
        return ctx

    def is_healthy(self, target: Target) -> bool:
        return self.registry.healthy(self.node.name, self.tg.name, target.id)

    def pick(self, client: tuple[str, int], local: tuple[str, int]) -> Target | None:
        if self._pool_version != self.registry.version:  # health or targets changed since
            self._pool = candidates(self.tg.targets, self.node.az, self.cross_zone, self.is_healthy)
            self._pool_failing_open = bool(self._pool) and not self.is_healthy(self._pool[0])
            self._pool_version = self.registry.version
        pool = self._pool
        if self.sticky:  # stickiness.type source_ip: the client's address alone picks the target
            target = choose(pool, flow_hash(self.listener.protocol, client[0], 0, local[0], 0, 0))
        else:
            seq = self.rng.getrandbits(32)  # stands in for the TCP initial sequence number
            target = choose(pool, flow_hash(self.listener.protocol, client[0], client[1],
                                            local[0], local[1], seq))
        if self._pool_failing_open:  # the pool is all healthy targets, or (failing open) all
            self.metrics.inc("UnhealthyRoutingFlowCount")
        return target

    def reset_flows_to(self, tg_name: str, target_id: str) -> int:
        """RST both sides of every open flow to a target (deregistration termination, unhealthy)."""
        if self.tg.name != tg_name:
            return 0
        hit = [f for f in self.flows if f.target is not None and f.target.id == target_id]
        for flow in hit:
            flow.reset_both("target " + target_id)
        self.metrics.inc("TCP_ELB_Reset_Count", 2 * len(hit))
        return len(hit)

    async def sweep_idle(self) -> None:
        """Every second: a flow that moved no byte and got no TCP keep-alive for ``idle_timeout``
        seconds expires; from then on whichever side speaks next gets a TCP RST (NLB-LB23, NLB-TS23)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            for flow in list(self.flows):
                if flow.idle_check(now, self.idle_timeout):
                    self.metrics.inc("IdleTimeoutFlowCount")

    def bind_source(self, client: tuple[str, int]) -> tuple[tuple[str, int] | None, bool]:
        """(address to bind the target socket to, use IP_TRANSPARENT)."""
        if not self.preserve_client_ip:
            return (self.node.private_ip, 0), False
        if self.transparent:
            return client, True
        return None, False  # transparent: false (tests): preserved in name only, warned at start

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def flow_started(self, flow: Flow) -> None:
        self.flows.add(flow)
        self.metrics.inc("NewFlowCount")

    def flow_ended(self, flow: Flow) -> None:
        self.flows.discard(flow)

    def tls_started(self, transport: Any) -> tuple[str | None, float | None, str | None]:
        """(SNI, handshake seconds, chosen certificate ARN) of a just-completed client TLS handshake."""
        obj = transport.get_extra_info("ssl_object")
        name, hello_at, arn = self.hello.pop(id(obj), (None, None, None))
        return name, (time.monotonic() - hello_at) if hello_at is not None else None, arn

    def tls_ended(self, flow: Flow, duration: float, received: int, sent: int) -> None:
        if self.access_log is None or flow.tls is None:
            return
        sni, handshake, cert_arn, cipher, version, alpn = flow.tls
        self.access_log.write(self.listener_id, TlsConnection(
            end_time=datetime.datetime.now(datetime.timezone.utc),
            client=f"{flow.client_addr[0]}:{flow.client_addr[1]}",
            destination=f"{flow.local_addr[0]}:{flow.local_addr[1]}",
            connection_ms=round(duration * 1000), handshake_ms=None if handshake is None else round(handshake * 1000),
            received_bytes=received, sent_bytes=sent,
            cert_arn=cert_arn or (self.listener.certificate.arn if self.listener.certificate else ""),
            cipher=cipher, protocol=version, sni=sni, alpn=alpn, alpn_be=flow.alpn_be))

    # --- lifecycle ---
    async def start(self) -> None:
        sock = bind_listener(self.node, self.listener)
        factory: Callable[[], ClientSide] = lambda: ClientSide(self)  # noqa: E731
        if self.server_ssl is None and self.use_splice:
            # Plain TCP: our own accept loop, so a flow can be spliced from the raw sockets.
            self.listen_sock = sock
            self.listen_family = int(sock.family)
            self.loop = asyncio.get_running_loop()
            self.poller = SplicePoller(self.loop)
            self.loop.add_reader(sock.fileno(), self._accept_ready)
            return
        try:
            self.server = await asyncio.get_running_loop().create_server(
                factory, sock=sock, backlog=LISTEN_BACKLOG, ssl=self.server_ssl,
                ssl_handshake_timeout=CLIENT_TLS_HANDSHAKE_TIMEOUT if self.server_ssl else None)
        except BaseException:
            sock.close()
            raise

    def _accept_ready(self) -> None:
        sock = self.listen_sock
        assert sock is not None
        family = self.listen_family
        for _ in range(ACCEPT_BATCH):
            try:
                # socket.accept() without its Python-level wrapper (family/type enum lookups,
                # socket.socket.__init__): this is the new-connection path.
                fd, addr = sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ECONNABORTED, EMFILE...: the listener keeps serving
                return
            if self.splice_eligible:
                conn = _socket.socket(family, socket.SOCK_STREAM, 0, fd)
                conn.setblocking(False)  # TCP_NODELAY comes from the listening socket
                SpliceFlow(self, self.loop, conn, (addr[0], addr[1])).connect()
            else:  # PROXY v2 switched on at run time: the Protocol relay takes the socket
                adopted = socket.socket(family, socket.SOCK_STREAM, 0, fd)
                adopted.setblocking(False)
                self.spawn(self._adopt(adopted))

    async def _adopt(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: ClientSide(self), conn)
        except OSError:
            conn.close()

    @property
    def bound(self) -> bool:
        if self.listen_sock is not None:
            return self.listen_sock.fileno() >= 0
        return self.server is not None and self.server.is_serving()

    def stop(self) -> None:
        """Stop accepting, reset open flows, cancel pending target connects."""
        if self.listen_sock is not None and self.listen_sock.fileno() >= 0:
            self.loop.remove_reader(self.listen_sock.fileno())
            self.listen_sock.close()
        if self.server is not None:
            self.server.close()
        for flow in list(self.flows):
            flow.abort()
        if self.poller is not None:
            self.poller.close()
            self.poller = None
        for task in list(self.tasks):
            task.cancel()


def bind_listener(node: Node, listener: Listener) -> socket.socket:
    """Listening socket on ``elastic_ip:port``. Raises ListenerBindError with a one-line reason."""
    addr = (node.elastic_ip, listener.port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
        sock.bind(addr)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = f"{node.name} {listener.label}: cannot listen on {addr[0]}:{addr[1]}"
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ListenerBindError(f"{where}: address not available on this host (the container"
                                    f" entrypoint must add {addr[0]}/32 to an interface)") from None
        if exc.errno == errno.EADDRINUSE:
            raise ListenerBindError(f"{where}: address already in use") from None
        raise ListenerBindError(f"{where}: {exc.strerror}") from None
    return sock
