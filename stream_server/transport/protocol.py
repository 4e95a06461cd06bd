"""Protocol v1 wire format: query parameters -> ``StreamParams`` and session events -> JSON messages."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidParameter
from ..session.events import DecodeError, Final, Partial, SessionEvent, SpeechStarted
from ..session.params import StreamParams, validate_params
from .formats import LANGUAGE_NAMES

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
KNOWN_PARAMS = {
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
    "access_token",
}


def _int(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be an integer, got {raw!r}", param=name) from None


def _bool(params: Mapping[str, str], name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise InvalidParameter(f"{name} must be true or false, got {raw!r}", param=name)


def parse_stream_config(params: Mapping[str, str], base: StreamParams, multilingual: bool) -> StreamParams:
    """Build and validate a session's parameters from its query string; raises ``InvalidParameter``."""
    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown:
        raise InvalidParameter(f"unknown query parameter(s): {', '.join(unknown)}", param=unknown[0])
    encoding = params.get("encoding", base.encoding)
    if encoding not in ("pcm_s16le", "pcm_f32le"):
        raise InvalidParameter("encoding must be pcm_s16le or pcm_f32le", param="encoding")
    language = params.get("language") or None
    if language in ("auto",):
        language = None
    task = params.get("task", "transcribe")
    config = dataclasses.replace(
        base,
        sample_rate=_int(params, "sample_rate", base.sample_rate),
        encoding=encoding,  # type: ignore[arg-type]
        channels=_int(params, "channels", 1),
        language=language,
        languages=tuple(dict.fromkeys(c.strip() for c in params.get("languages", "").split(",") if c.strip())),
        task=task,  # type: ignore[arg-type]
        prompt=params.get("prompt", ""),
        interim_results=_bool(params, "interim_results", True),
        word_timestamps=_bool(params, "word_timestamps", False),
        endpointing_ms=_int(params, "endpointing_ms", base.endpointing_ms),
    )
    if len(config.prompt) > 2000:
        raise InvalidParameter("prompt is longer than 2000 characters", param="prompt")
    return _known_languages(validate_params(config, multilingual))


def _known_languages(params: StreamParams) -> StreamParams:
    """``params`` whose language codes are all Whisper's (an unknown one would fail its decodes)."""
    for name, codes in (("language", (params.language,) if params.language else ()), ("languages", params.languages)):
        unknown = [code for code in codes if code not in LANGUAGE_NAMES]
        if unknown:
            raise InvalidParameter(
                f"{name}: unknown language {unknown[0]!r}; use ISO-639-1 codes such as 'en'", param=name
            )
    return params


def _r(t: float) -> float:
    return round(t, 3)


def event_message(event: SessionEvent, default_language: str) -> dict[str, Any] | None:
    """The JSON message for an outbound event (``None`` for events the transport handles itself)."""
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
        message: dict[str, Any] = {
            "type": "final",
            "utterance_id": event.utterance_id,
            "channel": event.channel,
            "start": _r(event.start),
            "end": _r(event.end),
            "text": event.text,
            "language": event.language or default_language,
            "language_probability": round(event.probability, 4),
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


def error_message(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}
