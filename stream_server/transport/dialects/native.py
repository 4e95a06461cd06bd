"""Protocol v1, the server's own dialect (``/v1/listen``; reference: docs, "Streaming protocol v1").

Handshake: query parameters over the server's defaults (unknown ones refused), the key in ``Authorization:
Bearer KEY`` or the browser subprotocol ``bearer.KEY``. Client messages: binary audio, ``{"type":
"finalize"|"close_stream"|"keepalive"}``, and once before any audio ``{"type": "configure", "prompt": ...}``
(a prompt too long for the request line; it reopens the empty session with it). Server messages:
``session.started``, ``speech.started``, ``partial``, ``final``, ``error``, ``session.closed``. A refused
handshake is accepted, told ``error`` and closed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ...auth import websocket_credentials
from ...codecs import ENCODINGS
from ...errors import InvalidParameter, ProtocolError, StreamServerError
from ...session.events import DecodeError, Final, Partial, SessionEvent, SpeechStarted
from ...session.params import StreamParams, validate_params
from ..languages import language_code
from ..models import is_served_model, served_models
from .base import (
    Accepted,
    AudioIn,
    ClientCommand,
    CloseIn,
    FinalizeIn,
    Handshake,
    KeepAliveIn,
    Message,
    SessionInfo,
    StartIn,
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
KNOWN_PARAMS = frozenset(
    {
        "sample_rate",
        "encoding",
        "channels",
        "language",
        "languages",
        "task",
        "prompt",
        "interim_results",
        "word_timestamps",
        "endpointing_ms",
        "model",
        "timing",
    }
)
MAX_PROMPT_CHARS = 2000  # so at most 8,000 bytes of UTF-8; in the query the request line's 8 KiB binds first


class InvalidMessageParameter(InvalidParameter):
    """A bad value in a ``configure`` message: refused, and the session goes on as it was."""

    fatal = False


def check_prompt(prompt: object, error: type[InvalidParameter] = InvalidParameter) -> str:
    """``prompt`` if it is text (valid Unicode) within ``MAX_PROMPT_CHARS`` characters."""
    if not isinstance(prompt, str):
        raise error("prompt must be a string", param="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise error(f"prompt is longer than {MAX_PROMPT_CHARS} characters", param="prompt")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800" in JSON)
        raise error("prompt is not valid Unicode text", param="prompt") from None
    return prompt


def _int(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    # ASCII digits only: Python's int() also takes "16_000" and other scripts' digits
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):
        raise InvalidParameter(f"{name} must be an integer, got {raw!r}", param=name)
    return int(raw)


def _bool(params: Mapping[str, str], name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise InvalidParameter(f"{name} must be true or false, got {raw!r}", param=name)


def parse_params(
    query: Mapping[str, Sequence[str]], defaults: StreamParams, multilingual: bool, model_id: str = ""
) -> StreamParams:
    """Protocol v1 query parameters (the last value of a repeated one wins) over ``defaults``; raises
    ``InvalidParameter``."""
    params = {name: values[-1] for name, values in query.items() if values}
    if "access_token" in query:  # decoded already: access%5Ftoken arrives here too
        raise InvalidParameter(
            "API keys are never accepted in the URL (URLs end up in logs): send 'Authorization: Bearer KEY', "
            "or from a browser the subprotocol bearer.KEY",
            param="access_token",
        )
    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown:
        raise InvalidParameter(f"unknown query parameter(s): {', '.join(unknown)}", param=unknown[0])
    model = params.get("model")
    if model is not None and model_id and not is_served_model(model, model_id):
        raise InvalidParameter(
            f"model {model!r} is not served here; use {', '.join(served_models(model_id))} or leave it out",
            param="model",
        )
    encoding = params.get("encoding", defaults.encoding)
    if encoding not in ENCODINGS:
        raise InvalidParameter(f"encoding must be {' or '.join(ENCODINGS)}", param="encoding")
    raw_language = params.get("language")
    try:
        language = language_code(raw_language)
        known_language = True
    except ValueError:  # reported below, after the checks that come first
        language, known_language = raw_language, False
    task = params.get("task", "transcribe")
    if not multilingual:
        if language not in (None, "en"):
            raise InvalidParameter(
                f"the served model is English-only; language {language!r} needs a multilingual model",
                param="language",
            )
        if task == "translate":
            raise InvalidParameter("task=translate needs a multilingual model", param="task")
    sample_rate = _int(params, "sample_rate", defaults.sample_rate)
    channels = _int(params, "channels", defaults.channels)
    prompt = params.get("prompt", defaults.prompt)
    interim_results = _bool(params, "interim_results", defaults.interim_results)
    word_timestamps = _bool(params, "word_timestamps", defaults.word_timestamps)
    timing = _bool(params, "timing", False)
    endpointing_ms = _int(params, "endpointing_ms", 0) if "endpointing_ms" in params else defaults.endpointing_ms
    check_prompt(prompt)
    if not known_language:
        raise InvalidParameter(
            f"language: unknown language {raw_language!r}; use ISO-639-1 codes such as 'en'", param="language"
        )
    languages = _languages(params.get("languages", ""))
    parsed = dataclasses.replace(
        defaults,
        sample_rate=sample_rate,
        encoding=encoding,
        channels=channels,
        mixdown=False,
        language=language,
        languages=languages,
        task=task,  # type: ignore[arg-type]
        prompt=prompt,
        interim_results=interim_results,
        word_timestamps=word_timestamps,
        endpointing_ms=endpointing_ms,
        timing=timing,
    )
    return validate_params(parsed, multilingual)


def _languages(raw: str) -> tuple[str, ...]:
    """``languages=es,en``: the codes detection may choose among, each by the one language rule."""
    codes: list[str] = []
    for value in (part.strip() for part in raw.split(",")):
        if not value:
            continue
        try:
            code = language_code(value)
        except ValueError:
            code = None
        if code is None:
            raise InvalidParameter(
                f"languages: unknown language {value!r}; use ISO-639-1 codes such as 'en'", param="languages"
            )
        codes.append(code)
    return tuple(dict.fromkeys(codes))


def _r(t: float) -> float:
    return round(t, 3)


def error_message(code: str, message: str) -> Message:
    return {"type": "error", "code": code, "message": message}


def event_message(event: SessionEvent, default_language: str) -> Message | None:
    """The protocol v1 message for a session event (None for events protocol v1 does not show)."""
    if isinstance(event, SpeechStarted):
        return {
            "type": "speech.started",
            "utterance_id": event.utterance_id,
            "channel": event.channel,
            "start": _r(event.start),
        }
    if isinstance(event, Partial):
        return {
            "type": "partial",
            "utterance_id": event.utterance_id,
            "channel": event.channel,
            "start": _r(event.start),
            "end": _r(event.end),
            "text": event.text,
            "stable_text": event.stable_text,
            "language": event.language or default_language,
            "language_probability": round(event.language_probability, 4),
        }
    if isinstance(event, Final):
        message: Message = {
            "type": "final",
            "utterance_id": event.utterance_id,
            "channel": event.channel,
            "start": _r(event.start),
            "end": _r(event.end),
            "text": event.text,
            "language": event.language or default_language,
            "language_probability": round(event.probability, 4),
            "reason": event.reason,
        }
        if event.words is not None:
            message["words"] = [
                {"word": w.word.strip(), "start": w.start, "end": w.end, "probability": w.probability}
                for w in event.words
            ]
        return message
    if isinstance(event, DecodeError):
        return error_message(
            "decode_failed", f"utterance {event.utterance_id} on channel {event.channel}: {event.message}"
        )
    return None


class NativeDialect:
    name: ClassVar[str] = "native"
    refuse_with_http: ClassVar[bool] = False

    def __init__(self) -> None:
        self._multilingual = False
        self._language = "en"
        self._params: StreamParams | None = None
        self._audio_started = False
        self._configured = False

    def presented_key(self, handshake: Handshake) -> str | None:
        return websocket_credentials(handshake.headers, handshake.subprotocols)[0]

    def accept(self, handshake: Handshake) -> Accepted:
        key, subprotocol = websocket_credentials(handshake.headers, handshake.subprotocols)
        self._multilingual = handshake.multilingual
        params = parse_params(handshake.query, handshake.defaults, handshake.multilingual, handshake.model_id)
        self._language = params.language or "en"
        self._params = params
        return Accepted(params=params, api_key=key, subprotocol=subprotocol)

    def on_text(self, text: str) -> list[ClientCommand]:
        try:
            message: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"malformed JSON: {exc.msg}") from None
        except (ValueError, RecursionError):  # nesting too deep, or an integer of thousands of digits
            raise ProtocolError("malformed JSON: too deeply nested or a number too long") from None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "keepalive":
            return [KeepAliveIn()]
        if kind == "finalize":
            return [FinalizeIn()]
        if kind == "close_stream":
            return [CloseIn()]
        if kind == "configure":
            return self._configure(message)
        shown = repr(kind) if len(repr(kind)) <= 60 else repr(kind)[:57] + "..."
        raise ProtocolError(f"unknown message type {shown}; expected finalize, close_stream, keepalive or configure")

    def _configure(self, message: dict[str, Any]) -> list[ClientCommand]:
        """``configure`` before any audio reopens the still empty session with the new prompt (once: each
        reopening keeps the old session until the connection ends)."""
        if self._audio_started:
            raise ProtocolError("configure must come before the first audio; the session goes on as it was")
        if self._configured:
            raise ProtocolError("configure was already sent; the session goes on as configured")
        unknown = sorted(set(message) - {"type", "prompt"})
        if unknown:
            raise InvalidMessageParameter(f"configure takes only prompt, not {', '.join(unknown)}", param=unknown[0])
        prompt = check_prompt(message.get("prompt", ""), InvalidMessageParameter)
        if self._params is None:
            raise ProtocolError("configure before the handshake was accepted")
        self._configured = True
        self._params = dataclasses.replace(self._params, prompt=prompt)
        return [StartIn(self._params)]

    def on_binary(self, data: bytes) -> list[ClientCommand]:
        self._audio_started = self._audio_started or bool(data)
        return [AudioIn(data)]

    def started(self, info: SessionInfo) -> list[Message]:
        if self._configured:  # the session reopened by configure: the client already had session.started
            return []
        params = info.params
        return [
            {
                "type": "session.started",
                "session_id": info.session_id,
                "model": info.model_id,
                "sample_rate": params.sample_rate,
                "channels": params.channels,
                "language": params.language or ("auto" if self._multilingual else "en"),
            }
        ]

    def render(self, event: SessionEvent) -> list[Message]:
        message = event_message(event, self._language)
        return [] if message is None else [message]

    def error(self, exc: StreamServerError) -> list[Message]:
        return [error_message(exc.code, exc.message)]

    def closed(self, reason: str, audio_seconds: float) -> list[Message]:
        return [{"type": "session.closed", "reason": reason, "audio_seconds": round(audio_seconds, 3)}]
