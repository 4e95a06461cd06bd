"""The uvicorn server: its ``Config`` built from ``Settings``, connection guards, and the graceful drain.

Why subclass uvicorn's protocols: what bounds a connection's cost lives below the ASGI app, where the app
cannot see it. The guards here are:

- **Request header timeout** (``header_timeout_s``): a connection that has not sent a complete request head
  within it gets ``408`` (or nothing, when it sent nothing) and is closed: slowloris sockets do not pile up.
- **Request body timeout** (``body_timeout_s``, see ``request_body.BodyClock``): a body that pauses that long,
  or trickles in slower than 500 bytes/s, gets ``408`` and the connection is closed; the app sees a disconnect.
- **Connection cap** (``max_connections``, HTTP and websocket together): past it, the oldest connection
  still sending its request head is dropped to make room, so ``/healthz`` and real clients get through a flood
  of idle sockets; when there is none, the new connection gets ``503`` in OpenAI's error shape and is closed.
- **Bounded writes**: pongs are not written while a websocket's write buffer is over the transport's
  high-water mark (the app's own sends already wait for it), so a client that floods pings and never reads
  cannot make the server buffer replies without bound.
- **Closing never waits forever**: a connection that was closed but whose client has read none of the last
  bytes for ``drain_timeout_s`` is aborted (asyncio's ``close()`` otherwise waits for a flush that never
  comes), and so is a websocket whose close frame waits that long behind a buffer the client does not read.
- **Keepalive that allows for the server's own slowness**: a missing pong closes a websocket (1011) only if
  nothing arrived since the ping while the server was reading it (a slowly read client's pong waits in line).
- **Handshake lines over websockets' limit** (8192 bytes per request or header line, see
  ``HANDSHAKE_LINE_LIMIT_BYTES``) are answered at once (``414``/``431``) instead of holding the socket.

Everything runs on the event loop; each protocol instance is one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import MAX_LINE_LENGTH

from .allocator import bound_allocator
from .config import Settings
from .request_body import BodyClock
from .transport.services import services
from .uploads_guard import UploadGuard, process_upload_guard

log = logging.getLogger("stream_server")

# The longest request line or header line of a websocket handshake (python-websockets' limit), in bytes as
# sent: a prompt in the query string counts percent-encoded (an "é" is 6 bytes, a CJK character 9).
HANDSHAKE_LINE_LIMIT_BYTES = MAX_LINE_LENGTH
# File descriptors kept free for the listening socket, the model, logs and worker threads.
RESERVED_FDS = 64


@dataclass(frozen=True)
class ConnectionLimits:
    """What the protocol guards enforce (seconds, counts)."""

    max_connections: int = 1000
    header_timeout_s: float = 10.0
    drain_timeout_s: float = 5.0
    body_timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings, fd_limit: int) -> ConnectionLimits:
        """``fd_limit``: the process's open-file limit; the cap stays below it so ``accept()`` never fails."""
        cap = min(settings.max_connections, max(16, fd_limit - RESERVED_FDS))
        return cls(cap, settings.header_timeout_s, settings.drain_timeout_s, settings.body_timeout_s)


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard limit (a container's default soft limit is often 1024);
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class _DrainBoundedTransport(asyncio.Transport):
    """A transport whose ``close()`` turns into ``abort()`` once the peer has taken none of the remaining
    bytes for ``drain_timeout_s``: a client that stopped reading cannot hold the socket and its buffer."""

    def __init__(self, inner: asyncio.Transport, drain_timeout_s: float, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.inner = inner
        self._drain_timeout_s = drain_timeout_s
        self._loop = loop
        self._abort_timer: asyncio.TimerHandle | None = None
        self._lost = False

    def close(self) -> None:
        self.inner.close()
        if self._abort_timer is None and not self._lost:
            self._schedule_abort(self.inner.get_write_buffer_size())

    def _schedule_abort(self, buffered: int) -> None:
        self._abort_timer = self._loop.call_later(self._drain_timeout_s, self._abort_unless_draining, buffered)

    def _abort_unless_draining(self, buffered_before: int) -> None:
        """Abort, unless the peer took some of the remaining bytes since the last look (then look again)."""
        if self._lost:
            return
        buffered = self.inner.get_write_buffer_size()
        if 0 < buffered < buffered_before:
            self._schedule_abort(buffered)
            return
        self.inner.abort()

    def connection_lost(self) -> None:
        """The protocol saw the connection end: no abort is due any more."""
        self._lost = True
        if self._abort_timer is not None:
            self._abort_timer.cancel()

    def abort(self) -> None:
        self.inner.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.inner.write(data)

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def pause_reading(self) -> None:
        self.inner.pause_reading()

    def resume_reading(self) -> None:
        self.inner.resume_reading()

    def is_reading(self) -> bool:
        return self.inner.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.inner.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self.inner.get_write_buffer_size()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.inner.get_protocol()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.inner.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.inner.get_write_buffer_limits()

    def can_write_eof(self) -> bool:
        return self.inner.can_write_eof()

    def write_eof(self) -> None:
        self.inner.write_eof()


def _bounded(
    transport: asyncio.Transport, limits: ConnectionLimits, loop: asyncio.AbstractEventLoop
) -> asyncio.Transport:
    if isinstance(transport, _DrainBoundedTransport):
        return transport
    return _DrainBoundedTransport(transport, limits.drain_timeout_s, loop)


def _refusal(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": code}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "retry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the request header timeout and the connection cap."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    # connections still sending their first request head, oldest first (shared by all of this class's instances)
    awaiting_head: ClassVar[dict[GuardedH11Protocol, None]] = {}

    _head_timer: asyncio.TimerHandle | None = None
    _bytes_seen = False
    _body: BodyClock | None = None  # while a request body streams in

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_bounded(transport, self.limits, self.loop))
        if len(self.connections) > self.limits.max_connections and not self._evict_one_waiting():
            log.warning("connection cap (%d) reached: new connection refused", self.limits.max_connections)
            self.transport.write(
                _refusal(503, "Service Unavailable", "overloaded", "The server has too many open connections.")
            )
            self.transport.close()
            return
        self.awaiting_head[self] = None
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _evict_one_waiting(self) -> bool:
        for oldest in self.awaiting_head:
            oldest._stop_waiting()
            oldest.transport.abort()
            return True
        return False

    def _stop_waiting(self) -> None:
        self.awaiting_head.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        self._bytes_seen = self._bytes_seen or bool(data)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a request head is complete (or the connection is done)
            self._stop_waiting()
        # an upgraded connection belongs to the websocket protocol now (h11 still waits for the upgrade's body)
        if self.conn.their_state is not h11.SEND_BODY or self.transport.get_protocol() is not self:
            self._body = None
        elif self._body is not None:
            self._body.received(self.loop.time(), len(data))
        else:
            self._body = BodyClock(self.limits.body_timeout_s, self.loop.time())
            self.loop.call_later(min(1.0, self.limits.body_timeout_s / 2), self._check_body, self._body)

    def _check_body(self, body: BodyClock) -> None:
        if body is not self._body or self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return  # that body is complete (or the connection is over, or upgraded)
        if self.transport.get_protocol() is not self:
            return
        why = body.expired(self.loop.time(), self.flow.read_paused)
        if why is None:
            self.loop.call_later(min(1.0, self.limits.body_timeout_s / 2), self._check_body, body)
            return
        log.info("request body timed out: %s", why)
        cycle, self._body = self.cycle, None
        if cycle is None or not cycle.response_started:
            self.transport.write(_refusal(408, "Request Timeout", "request_timeout", f"The request timed out: {why}."))
        self.transport.close()
        if cycle is not None:  # the app stops waiting for the rest of the body now (uvicorn's own disconnect)
            cycle.disconnected = True
            cycle.message_event.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if isinstance(self.transport, _DrainBoundedTransport):
            self.transport.connection_lost()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self.awaiting_head.pop(self, None)
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._bytes_seen:
            self.transport.write(_refusal(408, "Request Timeout", "request_timeout", "The request head took too long."))
        self.transport.close()


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with bounded writes, a bounded close, and handshake errors
    answered at once."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    _data_at = 0.0  # loop time data last arrived from the peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(_bounded(transport, self.limits, self.loop))

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(self.transport, _DrainBoundedTransport):
            self.transport.connection_lost()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._data_at = self.loop.time()
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            # python-websockets refused the handshake (a line over its limit) and queued its 414/431 answer;
            # uvicorn would wait for a request event that never comes.
            self.logger.info("websocket handshake refused: %s", self.conn.handshake_exc)
            self.handshake_initiated = self.handshake_complete = self.close_sent = True
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    def handle_ping(self) -> None:
        pong = b"".join(self.conn.data_to_send())
        if self.transport.get_write_buffer_size() > self.transport.get_write_buffer_limits()[1]:
            return  # the client is not reading: answer only pings that come while it does (RFC 6455 5.5.3)
        self.transport.write(pong)

    def keepalive_timeout(self) -> None:
        if not self.read_paused and self._data_at <= self.ping_sent_at:  # nothing came while reading: dead
            return super().keepalive_timeout()
        # the pong may wait behind data the server has not read yet: the peer is alive, ping again later
        self.pong_timer, self.pending_ping_payload = None, None
        self.schedule_ping()

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.close":
            await self._writable_or_abort()
        await super().send(message)

    async def _writable_or_abort(self) -> None:
        """Wait for the write buffer to drain while the client keeps reading; abort the connection once it
        has taken nothing for ``drain_timeout_s``."""
        buffered = self.transport.get_write_buffer_size()
        while not self.writable.is_set():
            try:
                await asyncio.wait_for(self.writable.wait(), self.limits.drain_timeout_s)
            except asyncio.TimeoutError:
                now_buffered = self.transport.get_write_buffer_size()
                if now_buffered >= buffered:
                    self.transport.abort()
                    raise ClientDisconnected() from None
                buffered = now_buffered


def _protocol_classes(limits: ConnectionLimits) -> tuple[type[GuardedH11Protocol], type[GuardedWebSocketProtocol]]:
    """Subclasses bound to ``limits`` (uvicorn instantiates protocol classes itself, with its own arguments)."""
    http_class = type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits, "awaiting_head": {}})
    ws_class = type("GuardedWebSocketProtocol", (GuardedWebSocketProtocol,), {"limits": limits})
    return http_class, ws_class


def build_config(app: FastAPI, settings: Settings, log_config: dict[str, Any] | None, fd_limit: int) -> uvicorn.Config:
    """uvicorn's ``Config`` for ``settings``, with the guarded protocol classes."""
    http_class, ws_class = _protocol_classes(ConnectionLimits.from_settings(settings, fd_limit))
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=http_class,
        ws=ws_class,
        # up to twice the limit reaches the session, which answers message_too_large; beyond, the websocket
        # layer closes with 1009 before buffering more
        ws_max_size=max(settings.max_message_bytes * 2, 1 << 16),
        ws_ping_interval=settings.ping_interval_s,
        ws_ping_timeout=settings.ping_timeout_s,
        log_config=log_config,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
    )


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: stop accepting connections, refuse upload decodes under way (``503``), finalize
    every open session (its finals and ``session.closed`` with ``server_shutdown`` delivered), then let uvicorn
    close what is left; the whole shutdown stays within ``shutdown_grace_s`` (plus the decode batch running
    at its end)."""

    def __init__(
        self, config: uvicorn.Config, app: FastAPI, grace_s: float, uploads: UploadGuard | None = None
    ) -> None:
        super().__init__(config)
        self.app = app
        self.grace_s = grace_s
        self.uploads = uploads or process_upload_guard()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        started = time.monotonic()
        for server in self.servers:
            server.close()  # no new connections while the open sessions finish
        self.uploads.close()
        registry = services(self.app).registry
        log.info("draining %d open session(s), grace %g s", len(registry.sessions), self.grace_s)
        unfinished = await registry.drain(self.grace_s)
        if unfinished:
            log.warning("%d session(s) still open after the grace period; closing them", unfinished)
        # what is left of the grace goes to uvicorn's own wait for connections and tasks
        self.config.timeout_graceful_shutdown = max(0.5, self.grace_s - (time.monotonic() - started))  # type: ignore[assignment]
        await super().shutdown(sockets=sockets)


def serve(settings: Settings, app_factory: Callable[[Settings], FastAPI], log_config: dict[str, Any] | None) -> None:
    """Run the server for ``settings`` until SIGTERM/SIGINT."""
    fd_limit = raise_fd_limit()
    if bound_allocator():
        log.info("allocator: at most 2 malloc arenas, freed memory trimmed (set MALLOC_* variables to override)")
    process_upload_guard().configure(
        max_decodes=settings.max_upload_decodes or max(4, os.cpu_count() or 4),
        max_audio_s=max(settings.max_upload_audio_held_s, settings.max_upload_duration_s),
    )
    app = app_factory(settings)
    config = build_config(app, settings, log_config, fd_limit)
    cap, head_s = min(settings.max_connections, max(16, fd_limit - RESERVED_FDS)), settings.header_timeout_s
    log.info("connections: at most %d (open files %d), request head timeout %g s", cap, fd_limit, head_s)
    DrainingServer(config, app, settings.shutdown_grace_s).run()
