"""``dialect_route(dialect_factory)``: the websocket endpoint every dialect is served through.

The handshake: the dialect parses it (``Dialect.accept``), the key is checked, the session is opened and
admitted by the registry; any ``StreamServerError`` refuses the connection. A dialect with
``refuse_with_http`` is refused with an HTTP status before the upgrade (ASGI ``websocket.http.response``, which
uvicorn's websocket implementations support); otherwise the upgrade completes only to send the dialect's error
and close with the error's close code. Every log line while serving carries the session id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..auth import websocket_credentials
from ..errors import StreamServerError
from ..logs import session_id_var
from .connection import StreamConnection
from .dialects.base import Accepted, Dialect, Handshake, PresentsKey
from .errors import error_response
from .services import Services, services

log = logging.getLogger("stream_server.session")

DialectFactory = Callable[[], Dialect]
WebSocketEndpoint = Callable[[WebSocket], Awaitable[None]]
DENIAL_EXTENSION = "websocket.http.response"


def dialect_route(dialect_factory: DialectFactory) -> WebSocketEndpoint:
    """A websocket endpoint serving one connection per call with a new ``dialect_factory()``."""

    async def endpoint(websocket: WebSocket) -> None:
        session_id = uuid.uuid4().hex[:16]
        token = session_id_var.set(session_id)
        try:
            await _serve(websocket, dialect_factory(), session_id)
        finally:
            session_id_var.reset(token)

    return endpoint


def handshake_of(websocket: WebSocket, svc: Services) -> Handshake:
    query: defaultdict[str, list[str]] = defaultdict(list)
    for key, value in websocket.query_params.multi_items():
        query[key].append(value)
    return Handshake(
        path=websocket.url.path,
        path_params=dict(websocket.path_params),
        query=dict(query),
        headers={k.lower(): v for k, v in websocket.headers.items()},
        subprotocols=list(websocket.scope.get("subprotocols", [])),
        defaults=svc.stream_defaults,
        multilingual=svc.decoder.is_multilingual,
        model_id=svc.decoder.model_id,
    )


async def _serve(websocket: WebSocket, dialect: Dialect, session_id: str) -> None:
    svc = services(websocket)
    handshake = handshake_of(websocket, svc)
    accepted: Accepted | None = None
    try:
        svc.origins.check(handshake.headers)
        if isinstance(dialect, PresentsKey):
            svc.auth.check(dialect.presented_key(handshake))
        accepted = dialect.accept(handshake)
        authenticated = accepted.api_key is not None or accepted.ready
        if authenticated:  # a dialect whose key comes in a later message (Twilio) is checked then
            svc.auth.check(accepted.api_key)
        connection = StreamConnection(
            websocket,
            dialect,
            svc.session_factory,
            svc,
            session_id=session_id,
            params=accepted.params if accepted.ready else None,
            authenticated=authenticated,
        )
        svc.registry.admit(connection)
    except StreamServerError as exc:
        subprotocol = accepted.subprotocol if accepted is not None else _offered(handshake)
        await _refuse(websocket, dialect, subprotocol, exc, svc)
        return
    counted = False
    try:
        await websocket.accept(subprotocol=accepted.subprotocol)
        connection.log.info("%s session started %s", dialect.name, connection.params)
        svc.metrics.on_session(+1)
        counted = True
        await connection.run()
    except WebSocketDisconnect:
        connection.log.info("client went away during the handshake")
    finally:
        connection.closed.set()
        svc.registry.remove(connection)
        if counted:
            svc.metrics.on_session(-1)
        connection.log.info("session ended (%s, %.1f s of audio)", connection.close_reason, connection.audio_seconds)


def _offered(handshake: Handshake) -> str | None:
    """The subprotocol to echo when refusing before the dialect chose one: a browser fails a handshake that
    offered subprotocols and got none back, and would never see the error."""
    _, subprotocol = websocket_credentials(handshake.headers, handshake.subprotocols)
    return subprotocol or (handshake.subprotocols[0] if handshake.subprotocols else None)


async def _refuse(
    websocket: WebSocket, dialect: Dialect, subprotocol: str | None, exc: StreamServerError, svc: Services
) -> None:
    log.info("%s session refused: %s", dialect.name, exc.code)
    svc.metrics.on_error(dialect.name, exc.code)
    messages = dialect.error(exc)
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        if dialect.refuse_with_http and DENIAL_EXTENSION in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(error_response(exc, messages[0] if messages else None))
            return
        await websocket.accept(subprotocol=subprotocol)
        for message in messages:
            await websocket.send_text(json.dumps(message))
        await websocket.close(exc.close_code)
