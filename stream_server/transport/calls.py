"""Where a Twilio call's transcripts go: subscribers of ``GET /v1/calls/{callSid}/events`` and a webhook per final.

``CallEvents.publish`` is called by the Twilio dialect on the event loop's thread and never blocks: each
subscriber has a bounded queue (a subscriber that stops reading is cut off, not waited for, so a slow dashboard
cannot stall a call), and webhooks are POSTed by background tasks with at most ``max_webhooks_in_flight`` at
once (over that, a webhook is dropped and logged). Webhook URLs are only used when they start with one of
``webhook_prefixes`` (empty: webhooks off): the URL comes from the caller's ``customParameters``, and an open
relay would let anyone make this server POST anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..auth import ApiKeyAuth, websocket_credentials
from ..errors import StreamServerError

log = logging.getLogger(__name__)
Message = dict[str, Any]


@dataclass(eq=False)
class Subscription:
    """One subscriber's queue; ``overflowed`` once it fell ``max_queue`` messages behind (then cut off)."""

    call_sid: str
    queue: asyncio.Queue[Message | None]
    overflowed: bool = False


@dataclass
class CallEvents:
    max_queue: int = 1000
    webhook_prefixes: Sequence[str] = ()
    max_webhooks_in_flight: int = 16
    webhook_timeout_s: float = 5.0
    _subscribers: dict[str, set[Subscription]] = field(default_factory=dict)
    _webhooks: set[asyncio.Task[None]] = field(default_factory=set)
    _client: httpx.AsyncClient | None = None
    dropped_webhooks: int = 0

    def subscribe(self, call_sid: str) -> Subscription:
        subscription = Subscription(call_sid, asyncio.Queue(self.max_queue))
        self._subscribers.setdefault(call_sid, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.call_sid)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.call_sid]

    def publish(self, call_sid: str, message: Message, webhook_url: str | None = None) -> None:
        for subscription in list(self._subscribers.get(call_sid, ())):
            if subscription.overflowed:
                continue
            try:
                subscription.queue.put_nowait(message)
            except asyncio.QueueFull:
                subscription.overflowed = True  # its reader sees the flag and closes
        if webhook_url is not None:
            self._post(webhook_url, message)

    def webhook_allowed(self, url: str) -> bool:
        return url.startswith(("http://", "https://")) and any(url.startswith(p) for p in self.webhook_prefixes)

    def _post(self, url: str, message: Message) -> None:
        if not self.webhook_allowed(url):
            log.warning("call %s: webhook %r is not under an allowed prefix; not sent", message.get("call_sid"), url)
            return
        if len(self._webhooks) >= self.max_webhooks_in_flight:
            self.dropped_webhooks += 1
            log.warning(
                "call %s: %d webhooks in flight; this final's webhook is dropped",
                message.get("call_sid"),
                len(self._webhooks),
            )
            return
        task = asyncio.get_running_loop().create_task(self._send(url, message))
        self._webhooks.add(task)
        task.add_done_callback(self._webhooks.discard)

    async def _send(self, url: str, message: Message) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.webhook_timeout_s, follow_redirects=False)
        try:
            response = await self._client.post(url, json=message)
            if response.status_code >= 400:
                log.warning("call %s: webhook answered %d", message.get("call_sid"), response.status_code)
        except httpx.HTTPError as exc:
            log.warning("call %s: webhook failed: %s", message.get("call_sid"), type(exc).__name__)

    async def aclose(self) -> None:
        """Let in-flight webhooks finish (each is bounded by its timeout), then close the HTTP client."""
        if self._webhooks:
            await asyncio.gather(*self._webhooks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def call_events_endpoint(hub: CallEvents, auth: ApiKeyAuth) -> Callable[[WebSocket], Awaitable[None]]:
    """``GET /v1/calls/{callSid}/events``: protocol v1 events of that call until it ends (``call.ended``), keyed
    like every route (``Authorization: Bearer`` or the ``bearer.KEY`` subprotocol). A subscriber may connect
    before the call starts; it gets what is published from then on."""

    async def endpoint(websocket: WebSocket) -> None:
        token, subprotocol = websocket_credentials(websocket.headers, websocket.scope.get("subprotocols", []))
        try:
            auth.check(token)
        except StreamServerError as exc:
            await websocket.close(code=exc.close_code, reason=exc.message[:120])
            return
        subscription = hub.subscribe(websocket.path_params["callSid"])  # before accept: nothing is missed
        try:
            await websocket.accept(subprotocol=subprotocol)
            await _forward(websocket, subscription)
        finally:
            hub.unsubscribe(subscription)

    return endpoint


async def _forward(websocket: WebSocket, subscription: Subscription) -> None:
    receiver = asyncio.create_task(_drain_client(websocket))
    try:
        while not receiver.done():
            getter = asyncio.create_task(subscription.queue.get())
            await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                return
            message = getter.result()
            if message is None or subscription.overflowed:
                await _close(websocket, 1008, "slow_consumer: the subscriber fell too far behind")
                return
            await websocket.send_json(message)
            if message.get("type") == "call.ended":
                await _close(websocket, 1000, "call ended")
                return
    except (WebSocketDisconnect, RuntimeError):
        pass  # the subscriber went away
    finally:
        receiver.cancel()


async def _drain_client(websocket: WebSocket) -> None:
    """Read (and ignore) what the subscriber sends, so its disconnect is noticed."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
    except (WebSocketDisconnect, RuntimeError):
        return


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError):  # already closed by the other side
        await websocket.close(code=code, reason=reason)
