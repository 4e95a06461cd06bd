"""What a client asks of one stream, whatever dialect it speaks: the wire-level parameters of a session.

Every dialect's handshake (``transport/dialects``) turns its own query string or first message into a
``StreamParams``; the session never sees a query string. No field has a default here: the server's defaults
come from ``Settings.stream_params()`` and a dialect overrides what its client sent (``dataclasses.replace``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..decode.types import Task


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
