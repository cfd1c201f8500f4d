"""asyncio shell of the echo service: listeners and one bare ``Protocol`` per connection.

Per connection the bytes go through up to three layers, in wire order:

1. PROXY protocol header (``--proxy-protocol``), decoded by ``services.nlb_sim.proxy_v2``;
2. TLS, terminated here with ``ssl.MemoryBIO`` so that it can start *after* the PROXY header
   (that is how an NLB with ``proxy_protocol_v2.enabled`` talks to a TLS target);
3. HTTP/1.x, parsed by ``httptools``; every complete request becomes an
   ``echo.ReceivedRequest`` and is answered at once, so pipelined requests are answered in order.

Bad bytes from a peer get a 400 (431 for oversized heads), or a closed connection for a bad
PROXY header or TLS handshake, plus one log line; never a traceback.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httptools

from services import common
from services.common import ListenAddressError  # noqa: F401 (re-exported)

from services.web import echo

Log = Callable[[str], None]

MAX_HEAD_BYTES = 64 * 1024
"""Request line plus header fields; more is answered with 431 (h11's max_incomplete_event_size)."""

_SNI_ATTRIBUTE = "lab_sni"
_READ_CHUNK = 64 * 1024


class EchoConfigError(ValueError):
    """An ``EchoConfig`` that cannot be served (certificate files, missing PROXY codec)."""


class RequestHeadTooLarge(Exception):
    """The peer sent more than ``MAX_HEAD_BYTES`` of request line and headers."""

    status_hint = 431


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int
    tls: bool

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port if port is None else port}"


@dataclass(frozen=True, slots=True)
class EchoConfig:
    identity: echo.Identity
    listeners: tuple[Listener, ...]
    tls_cert: str | None = None
    tls_key: str | None = None
    proxy_protocol: bool = False


def parse_listen(text: str) -> tuple[str, int]:
    """``10.20.1.41:8443`` or ``[::1]:8443`` -> (host, port); raises ListenAddressError."""
    return common.parse_listen(text, example="10.20.1.41:8443")


def build_tls_context(cert_file: str, key_file: str | None = None) -> ssl.SSLContext:
    """Server context, TLS 1.2+, that records the SNI each client sends on its SSLObject.

    Raises OSError / ssl.SSLError when the files are missing or do not hold a matching pair.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["http/1.1"])

    def remember_sni(ssl_object: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        setattr(ssl_object, _SNI_ATTRIBUTE, server_name)

    ctx.sni_callback = remember_sni
    return ctx


class TlsSession:
    """Server side of one TLS connection over memory BIOs: ciphertext in, plaintext out.

    ``receive()`` and ``send()`` return the ciphertext to put on the wire; they raise
    ssl.SSLError when the peer breaks the protocol.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.established = False
        self.peer_closed = False

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """Feed ciphertext; returns (plaintext for the application, ciphertext to send)."""
        self._incoming.write(data)
        plaintext = bytearray()
        if not self.established:
            try:
                self._object.do_handshake()
            except ssl.SSLWantReadError:
                return b"", self._outgoing.read()
            self.established = True
        while not self.peer_closed:
            try:
                chunk = self._object.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.peer_closed = True
                break
            if not chunk:
                self.peer_closed = True
                break
            plaintext += chunk
        return bytes(plaintext), self._outgoing.read()

    def send(self, plaintext: bytes) -> bytes:
        self._object.write(plaintext)
        return self._outgoing.read()

    def close_notify(self) -> bytes:
        """The close_notify alert to send before closing the socket (b"" if impossible)."""
        try:
            self._object.unwrap()
        except ssl.SSLError:
            pass
        return self._outgoing.read()

    def info(self) -> echo.TlsInfo:
        cipher = self._object.cipher()
        return echo.TlsInfo(
            version=self._object.version() or "",
            cipher=cipher[0] if cipher else "",
            sni=getattr(self._object, _SNI_ATTRIBUTE, None),
        )


@dataclass(frozen=True, slots=True)
class ProxyCodec:
    """Where PROXY protocol headers are decoded: ``services.nlb_sim.proxy_v2``."""

    decoder: Callable[[], Any]
    need_data: Any
    error: type[Exception]

    @classmethod
    def load(cls) -> ProxyCodec:
        from services.nlb_sim import proxy_v2

        return cls(proxy_v2.ProxyDecoder, proxy_v2.NEED_DATA, proxy_v2.ProxyProtocolError)


def _endpoint(address: Any) -> echo.Endpoint:
    if isinstance(address, tuple) and len(address) >= 2:
        return echo.Endpoint(str(address[0]), int(address[1]))
    return echo.Endpoint(str(address or ""), 0)


class EchoProtocol(asyncio.Protocol):
    """One client connection: [PROXY header] [TLS] HTTP/1.x requests."""

    def __init__(
        self,
        identity: echo.Identity,
        log: Log,
        tls_context: ssl.SSLContext | None = None,
        proxy: ProxyCodec | None = None,
        connections: set[EchoProtocol] | None = None,
    ) -> None:
        self._identity = identity
        self._log = log
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._closing = False
        self._peer = echo.Endpoint("", 0)
        self._proxy_codec = proxy
        self._proxy_decoder: Any = proxy.decoder() if proxy is not None else None
        self._proxy: echo.ProxyInfo | None = None
        self._tls_session = TlsSession(tls_context) if tls_context is not None else None
        self._tls: echo.TlsInfo | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._reset_request()

    def _reset_request(self) -> None:
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._body_bytes = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if self._connections is not None:
            self._connections.add(self)
        self._peer = _endpoint(transport.get_extra_info("peername"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._transport = None
        if self._connections is not None:
            self._connections.discard(self)

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._proxy_decoder is not None:
            data = self._take_proxy_header(data)
        if data and self._tls_session is not None:
            data = self._take_tls(data)
        if data and not self._closing:
            self._feed_http(data)
        if self._tls_session is not None and self._tls_session.peer_closed:
            self.close()

    def close(self) -> None:
        """Close the connection (pending writes, then a TLS close_notify, are flushed first)."""
        if self._closing or self._transport is None:
            return
        self._closing = True
        if self._tls_session is not None and self._tls_session.established:
            self._transport.write(self._tls_session.close_notify())
        self._transport.close()

    # layers

    def _take_proxy_header(self, data: bytes) -> bytes:
        assert self._proxy_codec is not None
        decoder = self._proxy_decoder
        try:
            decoder.feed(data)
            event = decoder.next_event()
        except self._proxy_codec.error as exc:
            self._log(f"{self._identity.node} bad PROXY header from {self._peer_text()}: {exc}")
            self.close()
            return b""
        if event is self._proxy_codec.need_data:
            return b""
        self._proxy = echo.ProxyInfo(
            command=str(event.command),
            source=_endpoint(event.source) if event.source else None,
            destination=_endpoint(event.destination) if event.destination else None,
        )
        self._proxy_decoder = None
        return bytes(decoder.trailing_data)

    def _take_tls(self, data: bytes) -> bytes:
        session = self._tls_session
        assert session is not None and self._transport is not None
        try:
            plaintext, to_send = session.receive(data)
        except ssl.SSLError as exc:
            self._log(f"{self._identity.node} TLS error with {self._peer_text()}: {exc}")
            self._closing = True
            self._transport.abort()
            return b""
        if to_send:
            self._transport.write(to_send)
        if self._tls is None and session.established:
            self._tls = session.info()
        return plaintext

    def _feed_http(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.close()  # the request was answered; what follows is not HTTP/1.1
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, RequestHeadTooLarge):
                self._reject(431, f"request head larger than {MAX_HEAD_BYTES} bytes")
            else:
                self._reject(400, str(exc) or type(exc).__name__)

    def _send(self, data: bytes) -> None:
        if self._transport is None or self._closing:
            return
        if self._tls_session is not None:
            data = self._tls_session.send(data)
        self._transport.write(data)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._reset_request()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        self._headers.append((name.decode("latin-1"), value.rstrip(b" \t").decode("latin-1")))

    def on_headers_complete(self) -> None:
        for name, value in self._headers:
            if name.lower() == "expect" and value.lower() == "100-continue":
                self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)

    def on_message_complete(self) -> None:
        if self._closing:
            return
        method = self._parser.get_method().decode("ascii", "replace")
        request = echo.ReceivedRequest(
            method=method,
            target=self._url.decode("latin-1"),
            raw_headers=tuple(self._headers),
            body_bytes=self._body_bytes,
            peer=self._peer,
            tls=self._tls,
            proxy=self._proxy,
        )
        keep_alive = self._parser.should_keep_alive() and not self._parser.should_upgrade()
        body = echo.encode_json(echo.describe(self._identity, request))
        self._send(echo.encode_response(200, body, keep_alive=keep_alive, head=method == "HEAD",
                                        cookie=echo.cookie_to_set(request.target)))
        if not keep_alive:
            self.close()

    # helpers

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise RequestHeadTooLarge(self._head_bytes)

    def _peer_text(self) -> str:
        host = f"[{self._peer.ip}]" if ":" in self._peer.ip else self._peer.ip
        return f"{host}:{self._peer.port}"

    def _reject(self, status: int, detail: str) -> None:
        self._log(f"{self._identity.node} {status} to {self._peer_text()}: {detail}")
        self._send(echo.error_response(status, detail))
        self.close()


class EchoServer:
    """All listeners of one echo node. ``start()`` binds, ``urls`` then reports real ports."""

    def __init__(self, config: EchoConfig, log: Log) -> None:
        self._config = config
        self._log = log
        self._servers: list[tuple[Listener, asyncio.Server]] = []
        self._connections: set[EchoProtocol] = set()

    @property
    def urls(self) -> list[str]:
        return [
            listener.url(server.sockets[0].getsockname()[1])
            for listener, server in self._servers
            if server.sockets
        ]

    async def start(self) -> None:
        """Bind every listener. Raises EchoConfigError (certificate, PROXY codec) or OSError."""
        config = self._config
        tls_context = self._tls_context() if any(x.tls for x in config.listeners) else None
        proxy: ProxyCodec | None = None
        if config.proxy_protocol:
            try:
                proxy = ProxyCodec.load()
            except ImportError as exc:
                raise EchoConfigError(
                    f"proxy_protocol needs services.nlb_sim.proxy_v2, which cannot be imported: {exc}"
                ) from exc
        loop = asyncio.get_running_loop()
        try:
            for listener in config.listeners:
                context = tls_context if listener.tls else None

                def factory(context: ssl.SSLContext | None = context) -> EchoProtocol:
                    return EchoProtocol(
                        config.identity, self._log, context, proxy, self._connections
                    )

                server = await loop.create_server(
                    factory, listener.host, listener.port, reuse_address=True
                )
                self._servers.append((listener, server))
        except BaseException:
            await self.close()
            raise

    def _tls_context(self) -> ssl.SSLContext:
        config = self._config
        if config.tls_cert is None:
            raise EchoConfigError("a TLS listener needs a certificate file (tls_cert)")
        try:
            return build_tls_context(config.tls_cert, config.tls_key)
        except OSError as exc:  # ssl.SSLError is an OSError
            key = config.tls_key or "key from the same file"
            reason = exc.strerror or str(exc)
            raise EchoConfigError(
                f"cannot load TLS certificate {config.tls_cert} ({key}): {reason}"
            ) from exc

    async def serve_forever(self) -> None:
        async with asyncio.TaskGroup() as group:
            for _listener, server in self._servers:
                group.create_task(server.serve_forever())

    async def close(self) -> None:
        for _listener, server in self._servers:
            server.close()
        for connection in list(self._connections):
            connection.close()
        for _listener, server in self._servers:
            await server.wait_closed()
        self._servers.clear()
