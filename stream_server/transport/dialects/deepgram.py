"""Deepgram live v1 subset at ``/deepgram/v1/listen``: deepgram-sdk, LiveKit's and Pipecat's Deepgram plugins.

Handshake: ``Authorization: Token KEY`` or ``Bearer KEY``, or the browser subprotocol pair ``token, KEY``
(echoed ``token``). Query: ``encoding`` (linear16, linear32, mulaw, alaw, opus; absent or ogg-opus/flac:
containerized, ``auto``), ``sample_rate``, ``channels``, ``multichannel`` (false with several channels: mixed
down, reported as channel ``[0, 1]``), ``interim_results`` (default false, as Deepgram), ``endpointing`` (ms,
clamped to ``ENDPOINTING_FLOOR_MS``..10000; ``false``: only ``Finalize`` or the length rule ends an utterance),
``utterance_end_ms``, ``vad_events``, ``language`` (BCP-47), ``keyterm``/``keywords`` (repeated; a prompt hint);
every other parameter (``model``, ``punctuate``, ``smart_format``, ``diarize`` ...) is accepted and ignored.

Words: Deepgram always returns them. By default their times come from Whisper's cross-attention alignment, one
extra model call per final; with ``aligned_words=False`` (``--deepgram-word-times estimated``) a final's words
share its span in proportion to their length, at no model cost (``estimated_words``; see
docs/dialects.md#word-times).

Messages in: binary audio, ``KeepAlive``, ``Finalize`` (optional ``channel``), ``CloseStream``, ``Configure``
(answered ``ConfigureFailure``: key terms are fixed at the handshake). Out: ``Results`` (every field the SDK and
LiveKit index), ``SpeechStarted``, ``UtteranceEnd``, ``Metadata`` at close, ``Error``. Every ``Finalize`` is
answered by a ``from_finalize`` result, an empty one when nothing was open. Field names: research/clients.md §1.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, ClassVar

from ...decode.types import Word
from ...errors import InvalidParameter, ProtocolError, StreamServerError
from ...session.events import DecodeError, Final, Partial, SessionEvent, SpeechEnded, SpeechStarted
from ...session.params import StreamParams
from ._query import (
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    base_language,
    glossary_prompt,
    json_object,
    last,
    parse_bool,
    parse_int,
)
from .base import (
    Accepted,
    AudioIn,
    ClientCommand,
    CloseIn,
    FinalizeIn,
    Handshake,
    KeepAliveIn,
    Message,
    ReplyOut,
    SessionInfo,
)

# Deepgram's own default is 10 ms and LiveKit sends 25: far below what a VAD with hangover can honour, so short
# values are raised to this floor (agents send ``Finalize`` at the end of their own VAD anyway).
ENDPOINTING_FLOOR_MS = 300
ENDPOINTING_MAX_MS = 10000

_ENCODINGS = {
    "linear16": "pcm_s16le",
    "linear32": "pcm_f32le",
    "mulaw": "mulaw",
    "alaw": "alaw",
    "opus": "ogg",  # Deepgram's opus is Ogg Opus
    "ogg-opus": "auto",
    "flac": "auto",
}


def parse_auth(handshake: Handshake) -> tuple[str | None, str | None]:
    """(key, subprotocol to echo): ``Authorization: Token|Bearer KEY``, else the subprotocol pair
    ``token, KEY`` / ``bearer, KEY`` (browsers cannot set headers on a websocket)."""
    scheme, _, token = handshake.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() in ("token", "bearer") and token.strip():
        return token.strip(), None
    protocols = list(handshake.subprotocols)
    for i, proto in enumerate(protocols[:-1]):
        if proto.lower() in ("token", "bearer"):
            return protocols[i + 1], proto
    return None, None


class DeepgramDialect:
    """One Deepgram connection: its parameters, the utterances open per channel, the bytes hashed for
    ``Metadata``. ``clock`` gives the ``created`` stamp only (wall time, seconds since the epoch)."""

    name: ClassVar[str] = "deepgram"
    refuse_with_http: ClassVar[bool] = True

    def __init__(self, clock: Callable[[], float] = time.time, aligned_words: bool = True) -> None:
        self._clock = clock
        self._aligned_words = aligned_words
        self._created = ""
        self._params: StreamParams | None = None
        self._reported_channels = 1  # the n of ``channel_index: [i, n]``
        self._vad_events = False
        self._utterance_end = False
        self._request_id = str(uuid.uuid4())
        self._model = ""
        self._open: set[tuple[int, int]] = set()  # (channel, utterance_id) started and not yet ended
        self._finalizing: set[tuple[int, int]] = set()  # open when a Finalize came: their finals answer it
        self._sha256 = hashlib.sha256()

    # --- handshake

    def presented_key(self, handshake: Handshake) -> str | None:
        """The key alone, so a bad key is refused (401) before a bad parameter (400) says anything."""
        return parse_auth(handshake)[0]

    def accept(self, handshake: Handshake) -> Accepted:
        self._created = datetime.fromtimestamp(self._clock(), timezone.utc).isoformat(timespec="milliseconds")
        query = handshake.query
        defaults = handshake.defaults
        encoding_name = last(query, "encoding")
        if encoding_name is None:
            encoding = "auto"
        elif encoding_name.lower() in _ENCODINGS:
            encoding = _ENCODINGS[encoding_name.lower()]
        else:
            supported = ", ".join(_ENCODINGS)
            raise InvalidParameter(f"encoding {encoding_name!r} is not supported; use {supported}", param="encoding")
        rate_value = last(query, "sample_rate")
        sample_rate = defaults.sample_rate
        if rate_value is not None:
            sample_rate = parse_int(rate_value, "sample_rate", MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)
        elif encoding in ("mulaw", "alaw"):
            sample_rate = 8000
        channels_value = last(query, "channels")
        channels = 1 if channels_value is None else parse_int(channels_value, "channels", 1, MAX_CHANNELS)
        multichannel = parse_bool(last(query, "multichannel"), "multichannel", False)
        mixdown = channels > 1 and not multichannel
        self._reported_channels = channels if multichannel else 1
        language = base_language(last(query, "language"))
        if language is not None and not handshake.multilingual and language != "en":
            raise InvalidParameter(f"language {language!r} is not served by this English-only model", param="language")
        terms = list(query.get("keyterm", ())) + [k.rsplit(":", 1)[0] for k in query.get("keywords", ())]
        self._vad_events = parse_bool(last(query, "vad_events"), "vad_events", False)
        utterance_end = last(query, "utterance_end_ms")
        if utterance_end is not None:
            parse_int(utterance_end, "utterance_end_ms", 0, 60000)
            self._utterance_end = True
        self._params = replace(
            defaults,
            sample_rate=sample_rate,
            encoding=encoding,
            channels=channels,
            mixdown=mixdown,
            language=language if language is not None else defaults.language,
            prompt=glossary_prompt(defaults.prompt, terms),
            interim_results=parse_bool(last(query, "interim_results"), "interim_results", False),
            word_timestamps=self._aligned_words,  # Deepgram always returns words; LiveKit takes start/end from them
            endpointing_ms=self._endpointing(last(query, "endpointing")),
        )
        api_key, subprotocol = parse_auth(handshake)
        return Accepted(params=self._params, api_key=api_key, subprotocol=subprotocol)

    @staticmethod
    def _endpointing(value: str | None) -> int | None:
        if value is None:
            return ENDPOINTING_FLOOR_MS  # Deepgram's default (10 ms), clamped
        if value.strip().lower() == "false":
            return None
        if value.strip().lower() == "true":
            return ENDPOINTING_FLOOR_MS
        ms = parse_int(value, "endpointing", 0, 10**6)
        return max(ENDPOINTING_FLOOR_MS, min(ms, ENDPOINTING_MAX_MS))

    # --- client frames

    def on_binary(self, data: bytes) -> list[ClientCommand]:
        self._sha256.update(data)
        return [AudioIn(data)]

    def on_text(self, text: str) -> list[ClientCommand]:
        message = json_object(text, "type")
        kind = message.get("type")
        if kind == "KeepAlive":
            return [KeepAliveIn()]
        if kind == "CloseStream":
            return [CloseIn()]
        if kind == "Finalize":
            return self._finalize(message.get("channel"))
        if kind == "Configure":
            failure = {
                "type": "ConfigureFailure",
                "request_id": self._request_id,
                "code": "CONFIGURE_NOT_SUPPORTED",
                "description": "key terms and features are set by the query string at connection time",
            }
            return [ReplyOut((failure,))]
        raise ProtocolError(f"unknown message type {kind!r}; expected KeepAlive, Finalize, CloseStream or Configure")

    def _finalize(self, channel: Any) -> list[ClientCommand]:
        if channel is not None and (not isinstance(channel, int) or not 0 <= channel < self._channel_count()):
            raise ProtocolError(f"Finalize channel must be an integer below {self._channel_count()}")
        answering = {key for key in self._open if channel is None or key[0] == channel}
        if answering:
            self._finalizing |= answering
            return [FinalizeIn(channel)]
        empty = self._results(channel or 0, 0.0, 0.0, "", (), is_final=True, speech_final=False, from_finalize=True)
        return [FinalizeIn(channel), ReplyOut((empty,))]

    def _channel_count(self) -> int:
        return 1 if self._params is None or self._params.mixdown else self._params.channels

    # --- session events

    def started(self, info: SessionInfo) -> list[Message]:
        self._model = info.model_id
        self._request_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"stream-server:{info.session_id}"))
        return []  # Deepgram says nothing on open

    def render(self, event: SessionEvent) -> list[Message]:
        if isinstance(event, SpeechStarted):
            self._open.add((event.channel, event.utterance_id))
            if not self._vad_events:
                return []
            return [{"type": "SpeechStarted", "channel": self._index(event.channel), "timestamp": _r(event.start)}]
        if isinstance(event, SpeechEnded):
            self._open.discard((event.channel, event.utterance_id))
            return []
        if isinstance(event, Partial):
            if self._params is not None and not self._params.interim_results:
                return []
            return [self._results(event.channel, event.start, event.end, event.text, (), is_final=False)]
        if isinstance(event, Final):
            return self._final(event)
        if isinstance(event, DecodeError):
            return [_error("DecodeFailed", f"utterance {event.utterance_id}: {event.message}")]
        return []

    def _final(self, event: Final) -> list[Message]:
        key = (event.channel, event.utterance_id)
        self._open.discard(key)
        answers_finalize = key in self._finalizing
        self._finalizing.discard(key)
        # an endpoint that ended the utterance before the Finalize reached the session: the final is said as
        # endpointed, and the Finalize still gets its (empty) answer
        from_finalize = event.reason == "finalize" or (answers_finalize and event.reason != "endpoint")
        timed = event.words if event.words is not None else estimated_words(event.text, event.start, event.end)
        words = [
            {
                "word": _plain(w.word),
                "start": _r(w.start),
                "end": _r(w.end),
                "confidence": _r(w.probability),
                "punctuated_word": w.word.strip(),
            }
            for w in timed
            if w.word.strip()
        ]
        result = self._results(
            event.channel,
            event.start,
            event.end,
            event.text,
            words,
            is_final=True,
            speech_final=event.reason in ("endpoint", "close") and not from_finalize,
            from_finalize=from_finalize,
            language=event.language,
        )
        messages = [result]
        if answers_finalize and not from_finalize:
            messages.append(
                self._results(event.channel, event.end, event.end, "", (), is_final=True, from_finalize=True)
            )
        if self._utterance_end and event.reason != "max_length" and event.text:
            last_word_end = words[-1]["end"] if words else _r(event.end)
            messages.append(
                {"type": "UtteranceEnd", "channel": self._index(event.channel), "last_word_end": last_word_end}
            )
        return messages

    def _results(
        self,
        channel: int,
        start: float,
        end: float,
        text: str,
        words: list[dict[str, Any]] | tuple[()],
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
        language: str | None = None,
    ) -> Message:
        confidence = sum(w["confidence"] for w in words) / len(words) if words else (1.0 if text else 0.0)
        alternative: dict[str, Any] = {"transcript": text.strip(), "confidence": _r(confidence), "words": list(words)}
        if language:
            alternative["languages"] = [language]
        return {
            "type": "Results",
            "channel_index": self._index(channel),
            "duration": _r(max(0.0, end - start)),
            "start": _r(start),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [alternative]},
            "metadata": {
                "request_id": self._request_id,
                "model_info": {"name": self._model, "version": "1", "arch": "whisper"},
                "model_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"stream-server-model:{self._model}")),
            },
        }

    def _index(self, channel: int) -> list[int]:
        return [channel, self._reported_channels]

    def error(self, exc: StreamServerError) -> list[Message]:
        return [_error(_variant(exc.code), exc.message)]

    def closed(self, reason: str, audio_seconds: float) -> list[Message]:
        model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"stream-server-model:{self._model}"))
        return [
            {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": self._request_id,
                "sha256": self._sha256.hexdigest(),
                "created": self._created.replace("+00:00", "Z"),
                "duration": _r(audio_seconds),
                "channels": self._reported_channels,
                "models": [model_uuid],
                "model_info": {model_uuid: {"name": self._model, "version": "1", "arch": "whisper"}},
            }
        ]


def _error(variant: str, description: str) -> Message:
    return {"type": "Error", "variant": variant, "description": description, "message": ""}


def _variant(code: str) -> str:
    """``invalid_audio`` -> ``InvalidAudio``: Deepgram's variants are CamelCase names."""
    return "".join(part.capitalize() for part in code.split("_"))


def estimated_words(text: str, start: float, end: float) -> tuple[Word, ...]:
    """``text``'s words spread over ``start``..``end`` (stream seconds) in proportion to their length in characters,
    for finals decoded without alignment: the span is exact, the times inside it an estimate. Confidence 1.0: none
    is computed."""
    pieces = text.split()
    total = sum(len(p) for p in pieces)
    if not pieces or total == 0:
        return ()
    words, at, scale = [], start, max(0.0, end - start) / total
    for piece in pieces:
        words.append(Word(piece, at, at + len(piece) * scale, 1.0))
        at += len(piece) * scale
    return tuple(words)


def _plain(word: str) -> str:
    """Deepgram's ``word``: lower case, punctuation stripped (``punctuated_word`` keeps Whisper's form)."""
    return "".join(ch for ch in word.strip().lower() if ch.isalnum() or ch in "'-")


def _r(value: float) -> float:
    return round(float(value), 3)
