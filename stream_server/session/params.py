"""What a client asks of one stream, whatever dialect it speaks: the wire-level parameters of a session.

Every dialect's handshake (``transport/dialects``) turns its own query string or first message into a
``StreamParams``; the session never sees a query string. No field has a default here: the server's defaults
come from ``Settings.stream_params()`` and a dialect overrides what its client sent (``dataclasses.replace``),
then calls ``validate_params``, the one check every dialect and the HTTP API share.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..codecs import ENCODINGS
from ..decode.types import Task
from ..errors import InvalidParameter


@dataclass(frozen=True)
class StreamParams:
    sample_rate: int  # Hz of the audio the client sends (containers: what the stream declares)
    encoding: str  # a codec name of ``codecs.ENCODINGS``: pcm_s16le, pcm_f32le, mulaw, alaw, webm, ogg, auto
    channels: int  # interleaved channels, each transcribed on its own (see ``mixdown``)
    mixdown: bool  # True: average the channels into one stream (Deepgram without multichannel)
    language: str | None  # ISO-639-1 lock; None: the model's only language, or detected per utterance
    languages: tuple[str, ...]  # detection limited to these codes (empty: any)
    task: Task
    prompt: str  # the user's context: names, jargon
    interim_results: bool  # partials wanted
    word_timestamps: bool
    endpointing_ms: int | None  # trailing silence that ends an utterance; None: only finalize ends one
    timing: bool = False  # a diagnostic, not a server default: each final says where its latency went


def normalize_language(code: str, multilingual: bool, param: str = "language") -> str:
    """``code`` as an ISO-639-1/3 code in lower case; an English-only model accepts only ``en``.
    Raises ``InvalidParameter`` naming ``param``."""
    if not (2 <= len(code) <= 3 and code.isascii() and code.isalpha()):
        raise InvalidParameter(f"{param} must be an ISO-639-1 code such as 'en', got {code!r}", param=param)
    code = code.lower()
    if not multilingual and code != "en":
        raise InvalidParameter(
            f"the served model is English-only; language {code!r} needs a multilingual model", param=param
        )
    return code


def validate_params(params: StreamParams, multilingual: bool) -> StreamParams:
    """``params`` checked and normalised (language codes in lower case); raises ``InvalidParameter``."""
    if not 8000 <= params.sample_rate <= 48000:
        raise InvalidParameter("sample_rate must be between 8000 and 48000", param="sample_rate")
    if params.encoding not in ENCODINGS:
        raise InvalidParameter(f"encoding must be one of {', '.join(ENCODINGS)}", param="encoding")
    if not 1 <= params.channels <= 8:
        raise InvalidParameter("channels must be between 1 and 8", param="channels")
    if params.task not in ("transcribe", "translate"):
        raise InvalidParameter("task must be 'transcribe' or 'translate'", param="task")
    if params.task == "translate" and not multilingual:
        raise InvalidParameter("task=translate needs a multilingual model", param="task")
    if params.endpointing_ms is not None and not 100 <= params.endpointing_ms <= 10000:
        raise InvalidParameter("endpointing_ms must be between 100 and 10000", param="endpointing_ms")
    language = None if params.language is None else normalize_language(params.language, multilingual)
    languages = tuple(normalize_language(code, multilingual, "languages") for code in params.languages)
    return replace(params, language=language, languages=languages)
