"""The vendor dialects' routes, mounted by ``create_app`` beside protocol v1's ``/v1/listen``.

``/deepgram/v1/listen`` (Deepgram live), ``/v1/realtime`` (OpenAI Realtime, ``intent=transcription``),
``/v1/twilio/media`` (Twilio Media Streams) and ``/v1/calls/{callSid}/events`` (that call's transcripts, protocol
v1 events). Each websocket dialect goes through the generic ``dialect_route``, so keys, limits, metrics and drain
are the same as protocol v1's. The returned ``CallEvents`` must be closed (``aclose``) when the app stops.
"""

from __future__ import annotations

from fastapi import FastAPI

from ..auth import ApiKeyAuth
from ..config import Settings
from .calls import CallEvents, call_events_endpoint
from .dialects.base import Dialect
from .dialects.deepgram import DeepgramDialect
from .dialects.openai_realtime import OpenAIRealtimeDialect
from .dialects.twilio import TwilioDialect
from .route import dialect_route


def mount_dialect_routes(app: FastAPI, settings: Settings, auth: ApiKeyAuth) -> CallEvents:
    prefixes = tuple(p.strip() for p in settings.twilio_webhook_prefixes.split(",") if p.strip())
    hub = CallEvents(webhook_prefixes=prefixes, max_queue=settings.max_queued_events)
    token = settings.twilio_auth_token or None

    def twilio() -> Dialect:
        return TwilioDialect(hub, token)

    aligned_words = settings.deepgram_word_times == "aligned"

    def deepgram() -> Dialect:
        return DeepgramDialect(aligned_words=aligned_words)

    app.add_api_websocket_route("/deepgram/v1/listen", dialect_route(deepgram))
    app.add_api_websocket_route("/v1/realtime", dialect_route(OpenAIRealtimeDialect))
    app.add_api_websocket_route("/v1/twilio/media", dialect_route(twilio))
    app.add_api_websocket_route("/v1/calls/{callSid}/events", call_events_endpoint(hub, auth))
    return hub
