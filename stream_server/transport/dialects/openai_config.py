"""OpenAI Realtime transcription configuration: ``session.update`` (GA) and ``transcription_session.update``
(beta) applied onto a ``RealtimeConfig``, and the ``session`` object the server reports back.

Only what a transcription session means is kept (format, model, language, prompt, turn detection); other fields
(``noise_reduction``, ``include``, ``threshold`` ...) are accepted and ignored, and the reported session shows
what is in effect. A bad value raises ``ProtocolError``: the client gets ``error`` and the session goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ...errors import InvalidParameter, ProtocolError
from ...session.params import StreamParams
from ._query import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, base_language

DEFAULT_SILENCE_MS = 500  # OpenAI's server_vad default
MIN_SILENCE_MS = 100
MAX_SILENCE_MS = 10000

# GA format type -> (codec, beta name)
_FORMATS = {
    "audio/pcm": ("pcm_s16le", "pcm16"),
    "audio/pcmu": ("mulaw", "g711_ulaw"),
    "audio/pcma": ("alaw", "g711_alaw"),
}
_BETA_FORMATS = {beta: ga for ga, (_, beta) in _FORMATS.items()}


@dataclass(frozen=True)
class RealtimeConfig:
    params: StreamParams
    model: str  # reported back as the client named it; the served model answers whatever the name
    format_type: str  # audio/pcm, audio/pcmu or audio/pcma

    @property
    def silence_ms(self) -> int | None:
        """server_vad's silence; None: commit-only (no turn detection)."""
        return self.params.endpointing_ms


def initial_config(defaults: StreamParams, model: str | None) -> RealtimeConfig:
    """OpenAI's defaults: PCM16 at 24 kHz, server VAD with 500 ms of silence; partials on (they feed deltas)."""
    params = replace(
        defaults,
        sample_rate=24000,
        encoding="pcm_s16le",
        channels=1,
        mixdown=False,
        interim_results=True,
        word_timestamps=False,
        endpointing_ms=DEFAULT_SILENCE_MS,
    )
    return RealtimeConfig(params, model or "whisper-1", "audio/pcm")


def apply_update(config: RealtimeConfig, session: dict[str, Any], *, beta: bool) -> RealtimeConfig:
    """The config after one update event's ``session`` object; fields absent keep their value."""
    if beta:
        audio_format: Any = session.get("input_audio_format")
        if audio_format is not None:
            if audio_format not in _BETA_FORMATS:
                raise ProtocolError(f"input_audio_format must be one of {', '.join(_BETA_FORMATS)}", param="format")
            audio_format = {"type": _BETA_FORMATS[audio_format]}
        transcription = session.get("input_audio_transcription")
        turn_holder = session
    else:
        if session.get("type", "transcription") != "transcription":
            raise ProtocolError("only session.type 'transcription' is served here", param="session.type")
        audio = session.get("audio") or {}
        audio_input = audio.get("input") or {} if isinstance(audio, dict) else None
        if not isinstance(audio_input, dict):
            raise ProtocolError("session.audio.input must be an object", param="session.audio.input")
        audio_format = audio_input.get("format")
        transcription = audio_input.get("transcription")
        turn_holder = audio_input
    if audio_format is not None:
        config = _apply_format(config, audio_format)
    if transcription is not None:
        config = _apply_transcription(config, transcription)
    if "turn_detection" in turn_holder:
        config = replace(config, params=replace(config.params, endpointing_ms=_silence(turn_holder["turn_detection"])))
    return config


def _apply_format(config: RealtimeConfig, audio_format: Any) -> RealtimeConfig:
    if not isinstance(audio_format, dict) or audio_format.get("type") not in _FORMATS:
        raise ProtocolError(f"audio.input.format.type must be one of {', '.join(_FORMATS)}", param="format")
    format_type = audio_format["type"]
    codec = _FORMATS[format_type][0]
    rate = audio_format.get("rate", 24000) if codec == "pcm_s16le" else 8000
    if not isinstance(rate, int) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(f"audio/pcm rate must be {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}", param="rate")
    return replace(config, format_type=format_type, params=replace(config.params, encoding=codec, sample_rate=rate))


def _apply_transcription(config: RealtimeConfig, transcription: Any) -> RealtimeConfig:
    if not isinstance(transcription, dict):
        raise ProtocolError("transcription must be an object", param="transcription")
    params = config.params
    model = transcription.get("model")
    if "language" in transcription:
        language = transcription["language"]
        if language is not None and not isinstance(language, str):
            raise ProtocolError("transcription.language must be a string", param="language")
        try:
            params = replace(params, language=base_language(language) or config.params.language)
        except InvalidParameter as exc:
            raise ProtocolError(exc.message, param="language") from None
    prompt = transcription.get("prompt")
    if isinstance(prompt, str):
        params = replace(params, prompt=prompt)
    return replace(config, params=params, model=model if isinstance(model, str) and model else config.model)


def _silence(turn: Any) -> int | None:
    if turn is None:
        return None
    if not isinstance(turn, dict) or turn.get("type") not in ("server_vad", "semantic_vad"):
        raise ProtocolError("turn_detection must be null, server_vad or semantic_vad", param="turn_detection")
    silence = turn.get("silence_duration_ms", DEFAULT_SILENCE_MS)
    if not isinstance(silence, int):
        raise ProtocolError("silence_duration_ms must be an integer", param="silence_duration_ms")
    return max(MIN_SILENCE_MS, min(silence, MAX_SILENCE_MS))


def describe(config: RealtimeConfig, session_id: str, *, beta: bool) -> dict[str, Any]:
    """The ``session`` object of ``session.created``/``updated`` (beta: ``transcription_session.*``)."""
    params = config.params
    transcription = {"model": config.model, "language": params.language, "prompt": params.prompt}
    turn = None
    if config.silence_ms is not None:
        turn = {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": config.silence_ms,
        }
    common = {"id": session_id, "object": "realtime.transcription_session", "include": []}
    if beta:
        return {
            **common,
            "input_audio_format": _FORMATS[config.format_type][1],
            "input_audio_transcription": transcription,
            "turn_detection": turn,
            "input_audio_noise_reduction": None,
        }
    audio_format: dict[str, Any] = {"type": config.format_type}
    if config.format_type == "audio/pcm":
        audio_format["rate"] = params.sample_rate
    audio_input = {
        "format": audio_format,
        "transcription": transcription,
        "noise_reduction": None,
        "turn_detection": turn,
    }
    return {"type": "transcription", **common, "audio": {"input": audio_input}}
