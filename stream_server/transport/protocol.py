"""Protocol v1 wire format: query parameters -> ``StreamConfig`` and session events -> JSON messages."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidParameter
from ..session.events import DecodeError, Final, Partial, SessionEvent, SpeechStarted
from ..session.machine import StreamConfig
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


def _language(code: str | None, param: str = "language") -> str | None:
    """A Whisper language code, ``None`` for none or ``auto``; anything else is refused."""
    if code in (None, "", "auto"):
        return None
    if code not in LANGUAGE_NAMES:
        raise InvalidParameter(f"unknown language {code!r}: use ISO-639-1 codes such as 'en' or 'es'", param=param)
    return code


def parse_stream_config(params: Mapping[str, str], base: StreamConfig, multilingual: bool) -> StreamConfig:
    """Build and validate a session's config from its query string; raises ``InvalidParameter``."""
    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown:
        raise InvalidParameter(f"unknown query parameter(s): {', '.join(unknown)}", param=unknown[0])
    encoding = params.get("encoding", base.encoding)
    if encoding not in ("pcm_s16le", "pcm_f32le"):
        raise InvalidParameter("encoding must be pcm_s16le or pcm_f32le", param="encoding")
    language = _language(params.get("language", "").strip().lower() or None)
    languages = tuple(
        dict.fromkeys(
            filter(None, (_language(c.strip().lower(), "languages") for c in params.get("languages", "").split(",")))
        )
    )
    task = params.get("task", "transcribe")
    if not multilingual:
        if language not in (None, "en"):
            raise InvalidParameter(
                f"the served model is English-only; language {language!r} needs a multilingual model",
                param="language",
            )
        if set(languages) - {"en"}:
            raise InvalidParameter(
                "the served model is English-only; languages needs a multilingual model", param="languages"
            )
        if task == "translate":
            raise InvalidParameter("task=translate needs a multilingual model", param="task")
    config = dataclasses.replace(
        base,
        sample_rate=_int(params, "sample_rate", base.sample_rate),
        encoding=encoding,  # type: ignore[arg-type]
        channels=_int(params, "channels", 1),
        language=language,
        languages=languages,
        task=task,  # type: ignore[arg-type]
        prompt=params.get("prompt", ""),
        interim_results=_bool(params, "interim_results", True),
        word_timestamps=_bool(params, "word_timestamps", False),
        endpointing_ms=_int(params, "endpointing_ms", base.endpointing_ms),
    )
    if len(config.prompt) > 2000:
        raise InvalidParameter("prompt is longer than 2000 characters", param="prompt")
    return config.validate()


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
