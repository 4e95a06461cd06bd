"""Twilio Media Streams at ``/v1/twilio/media``: a call's audio in, its transcripts out to subscribers.

Twilio's cloud is the client: it sends ``connected``, ``start`` (call and stream ids, tracks,
``customParameters``), ``media`` (20 ms of base64 mu-law 8 kHz per message, one track each) and ``stop``, and it
reads nothing back. So the socket stays silent; every event goes to ``CallEvents`` (``transport/calls.py``):
the subscribers of ``GET /v1/calls/{callSid}/events`` get protocol v1 events with ``call_sid`` and ``track``,
and finals go to the call's webhook when one is allowed. Tracks: ``inbound`` (the caller) is channel 0,
``outbound`` (the agent) channel 1, fed independently; a gap in a track's ``media.timestamp`` is filled with
silence so stream times stay call times.

Auth: when a Twilio auth token is configured, ``X-Twilio-Signature`` must sign the stream URL (HMAC over
``wss://host/path``, checked with the ``twilio`` package's ``RequestValidator``); an API key, when the server has
keys, travels in ``customParameters.api_key`` (Twilio forbids a query string on the ``<Stream>`` URL).
Options in ``customParameters``: ``language``, ``prompt``, ``endpointing_ms``, ``interim_results``,
``word_timestamps``, ``callback_url``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace
from typing import Any, ClassVar, Protocol

from ...errors import InvalidParameter, ProtocolError, StreamServerError, Unauthorized
from ...session.events import Final, SessionEvent
from ...session.params import StreamParams
from ._query import base_language, json_object, parse_bool, parse_int
from .base import (
    Accepted,
    AudioIn,
    ClientCommand,
    CloseIn,
    Handshake,
    Message,
    SessionInfo,
    StartIn,
)
from .native import event_message

TRACKS = {"inbound": 0, "outbound": 1}
SAMPLE_RATE = 8000
MULAW_SILENCE = b"\xff"
MAX_GAP_FILL_MS = 10_000  # a longer gap is not filled: bounded memory whatever the timestamps say
_GAP_TOLERANCE_MS = 10  # rounding, not a lost message


class CallSink(Protocol):
    """Where a call's events go (``transport/calls.py``); ``publish`` never blocks (the loop's thread)."""

    def publish(self, call_sid: str, message: Message, webhook_url: str | None = None) -> None: ...


def check_signature(auth_token: str, handshake: Handshake) -> None:
    """Raise ``Unauthorized`` unless ``X-Twilio-Signature`` signs this stream's URL (ws or wss, with or
    without the port: the URL Twilio was given sits behind a TLS proxy)."""
    from twilio.request_validator import RequestValidator

    signature = handshake.headers.get("x-twilio-signature", "")
    host = handshake.headers.get("x-forwarded-host") or handshake.headers.get("host", "")
    if not signature or not host:
        raise Unauthorized("missing X-Twilio-Signature: this server checks that streams come from Twilio")
    validator = RequestValidator(auth_token)
    for scheme in ("wss", "ws", "https"):
        if validator.validate(f"{scheme}://{host}{handshake.path}", {}, signature):
            return
    raise Unauthorized("X-Twilio-Signature does not match this server's Twilio auth token")


class TwilioDialect:
    """One Twilio stream: waits for ``start``, then maps ``media`` to per-track audio and publishes every event
    of the session to ``sink`` under the call's id. ``auth_token`` None: signatures are not checked."""

    name: ClassVar[str] = "twilio"
    refuse_with_http: ClassVar[bool] = True  # Twilio reads no message; a refused upgrade shows in its debugger

    def __init__(self, sink: CallSink, auth_token: str | None = None) -> None:
        self._sink = sink
        self._auth_token = auth_token
        self._defaults: StreamParams | None = None
        self._multilingual = False
        self._call_sid: str | None = None
        self._stream_sid = ""
        self._webhook: str | None = None
        self._tracks: dict[str, int] = {}
        self._received_ms: dict[str, float] = {}  # per track: audio fed so far

    def accept(self, handshake: Handshake) -> Accepted:
        if self._auth_token:
            check_signature(self._auth_token, handshake)
        self._defaults = handshake.defaults
        self._multilingual = handshake.multilingual
        params = replace(handshake.defaults, encoding="mulaw", sample_rate=SAMPLE_RATE, channels=2, mixdown=False)
        return Accepted(params=params, api_key=None, ready=False)

    def on_binary(self, data: bytes) -> list[ClientCommand]:
        raise ProtocolError("Twilio Media Streams send JSON text frames only")

    def on_text(self, text: str) -> list[ClientCommand]:
        message = json_object(text, "event")
        event = message.get("event")
        if event == "media":
            return self._media(message.get("media"))
        if event == "start":
            return self._start(message)
        if event == "stop":
            return [CloseIn()]
        if event in ("connected", "mark", "dtmf"):
            return []
        raise ProtocolError(f"unknown Twilio event {event!r}")

    def _start(self, message: dict[str, Any]) -> list[ClientCommand]:
        if self._call_sid is not None:
            raise ProtocolError("a second 'start' on one stream")
        start = message.get("start")
        if not isinstance(start, dict) or not isinstance(start.get("callSid"), str) or not start["callSid"]:
            raise ProtocolError("'start' needs start.callSid")
        media_format = start.get("mediaFormat") or {}
        if (
            media_format.get("encoding", "audio/x-mulaw") != "audio/x-mulaw"
            or media_format.get("sampleRate", 8000) != 8000
        ):
            raise ProtocolError("only audio/x-mulaw at 8000 Hz is supported (Twilio's mediaFormat)")
        tracks = start.get("tracks") or ["inbound"]
        if not isinstance(tracks, list) or not set(tracks) <= set(TRACKS):
            raise ProtocolError(f"tracks must be a list of {', '.join(TRACKS)}")
        custom = start.get("customParameters") or {}
        if not isinstance(custom, dict):
            raise ProtocolError("customParameters must be an object")
        params = self._params({str(k): str(v) for k, v in custom.items()}, channels=2 if "outbound" in tracks else 1)
        self._call_sid = start["callSid"]
        self._stream_sid = str(start.get("streamSid") or message.get("streamSid") or "")
        self._tracks = {track: TRACKS[track] for track in tracks}
        self._received_ms = dict.fromkeys(tracks, 0.0)
        callback = custom.get("callback_url")
        self._webhook = str(callback) if callback else None
        api_key = custom.get("api_key") or custom.get("apiKey")
        return [StartIn(params, api_key=str(api_key) if api_key else None)]

    def _params(self, custom: dict[str, str], channels: int) -> StreamParams:
        assert self._defaults is not None, "accept() comes first"
        try:
            language = base_language(custom.get("language")) if "language" in custom else self._defaults.language
            if language not in (None, "en") and not self._multilingual:
                raise InvalidParameter(f"language {language!r} needs a multilingual model", param="language")
            endpointing = custom.get("endpointing_ms")
            return replace(
                self._defaults,
                encoding="mulaw",
                sample_rate=SAMPLE_RATE,
                channels=channels,
                mixdown=False,
                language=language,
                prompt=custom.get("prompt", self._defaults.prompt)[:2000],
                interim_results=parse_bool(custom.get("interim_results"), "interim_results", True),
                word_timestamps=parse_bool(custom.get("word_timestamps"), "word_timestamps", False),
                endpointing_ms=self._defaults.endpointing_ms
                if endpointing is None
                else parse_int(endpointing, "endpointing_ms", 100, 10000),
            )
        except InvalidParameter as exc:
            raise ProtocolError(f"customParameters: {exc.message}", param=exc.param) from None

    def _media(self, media: Any) -> list[ClientCommand]:
        if self._call_sid is None:
            raise ProtocolError("'media' before 'start'")
        if not isinstance(media, dict):
            raise ProtocolError("'media' needs a media object")
        track = media.get("track", "inbound")
        if track not in self._tracks:
            raise ProtocolError(f"media for track {track!r}, which 'start' did not announce")
        try:
            payload = base64.b64decode(media.get("payload") or "", validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("media.payload is not valid base64") from None
        commands: list[ClientCommand] = []
        gap_ms = _timestamp_ms(media.get("timestamp")) - self._received_ms[track]
        if _GAP_TOLERANCE_MS < gap_ms <= MAX_GAP_FILL_MS:
            silence = MULAW_SILENCE * int(gap_ms * SAMPLE_RATE / 1000)
            commands.append(AudioIn(silence, channel=self._tracks[track]))
            self._received_ms[track] += len(silence) * 1000 / SAMPLE_RATE
        self._received_ms[track] += len(payload) * 1000 / SAMPLE_RATE
        commands.append(AudioIn(payload, channel=self._tracks[track]))
        return commands

    # --- session events: published, never sent on Twilio's socket

    def started(self, info: SessionInfo) -> list[Message]:
        self._publish(
            {
                "type": "call.started",
                "session_id": info.session_id,
                "model": info.model_id,
                "stream_sid": self._stream_sid,
                "tracks": list(self._tracks),
                "sample_rate": info.params.sample_rate,
                "language": info.params.language,
            }
        )
        return []

    def render(self, event: SessionEvent) -> list[Message]:
        language = self._defaults.language if self._defaults and self._defaults.language else "en"
        message = event_message(event, language)
        if message is not None:
            channel = message.get("channel")
            if isinstance(channel, int):
                message["track"] = "outbound" if channel == 1 else "inbound"
            self._publish(message, webhook=isinstance(event, Final) and bool(event.text))
        return []

    def error(self, exc: StreamServerError) -> list[Message]:
        self._publish({"type": "error", "code": exc.code, "message": exc.message})
        return []

    def closed(self, reason: str, audio_seconds: float) -> list[Message]:
        self._publish({"type": "call.ended", "reason": reason, "audio_seconds": round(audio_seconds, 3)})
        return []

    def _publish(self, message: Message, *, webhook: bool = False) -> None:
        if self._call_sid is None:
            return  # nothing to key it on before ``start``
        message = {**message, "call_sid": self._call_sid}
        self._sink.publish(self._call_sid, message, self._webhook if webhook else None)


def _timestamp_ms(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0  # absent or odd: no gap is inferred
