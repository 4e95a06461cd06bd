"""The session as the transport sees it: a small protocol, and the factory that opens one from a dialect's
``StreamParams``.

``StreamConnection`` talks only to ``StreamSession``; ``session_factory`` is the one place that knows how a
session is built (today: ``session.machine.StreamingSession`` from a ``StreamConfig`` that joins the client's
params to the server's streaming policy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from ..config import Settings
from ..decode.types import SAMPLE_RATE, DecodeResult
from ..errors import InvalidParameter, ProtocolError
from ..session.events import DecodeRequested, SessionEvent
from ..session.machine import StreamConfig, StreamingSession
from ..session.params import StreamParams


class StreamSession(Protocol):
    """One stream's sans-I/O logic: bytes and decode outcomes in, ``SessionEvent``s out. One owner (the
    connection, on the event loop)."""

    @property
    def session_id(self) -> str: ...

    @property
    def audio_seconds(self) -> float:
        """Stream seconds received (per channel)."""
        ...

    @property
    def backlog_seconds(self) -> float:
        """Audio of ended utterances still waiting for their finals (what backpressure bounds)."""
        ...

    @property
    def done(self) -> bool:
        """Closing and every final delivered."""
        ...

    def receive_audio(self, data: bytes) -> list[SessionEvent]: ...

    def receive_channel_audio(self, channel: int, data: bytes) -> list[SessionEvent]: ...

    def finalize(self, channel: int | None = None) -> list[SessionEvent]: ...

    def clear(self) -> list[SessionEvent]: ...

    def close(self) -> list[SessionEvent]: ...

    def mark_closed(self) -> None: ...

    def receive_decode_result(self, request: DecodeRequested, result: DecodeResult) -> list[SessionEvent]: ...

    def receive_decode_failure(self, request: DecodeRequested, message: str) -> list[SessionEvent]: ...

    def abandon(self, request: DecodeRequested) -> list[SessionEvent]: ...


SessionFactory = Callable[[str, StreamParams], StreamSession]


def stream_defaults(settings: Settings) -> StreamParams:
    """The params a client gets for what it does not ask for."""
    return StreamParams(
        sample_rate=SAMPLE_RATE,
        encoding="pcm_s16le",
        channels=1,
        mixdown=False,
        language=None,
        languages=(),
        task="transcribe",
        prompt="",
        interim_results=True,
        word_timestamps=False,
        endpointing_ms=settings.endpointing_ms,
    )


def session_policy(settings: Settings) -> StreamConfig:
    """The server's streaming policy (everything of a session that no client chooses)."""
    return StreamConfig(
        endpointing_ms=settings.endpointing_ms,
        partial_interval_ms=settings.partial_interval_ms,
        max_utterance_s=settings.max_utterance_s,
        soft_max_utterance_s=settings.soft_max_utterance_s,
        vad_aggressiveness=settings.vad_aggressiveness,
        prompt_max_tokens=settings.prompt_max_tokens,
        prompt_reset_silence_s=settings.prompt_reset_silence_s,
        final_beam_size=settings.final_beam_size,
        partial_beam_size=settings.partial_beam_size,
        final_context_s=settings.final_context_s,
        idle_final_beam_size=settings.idle_final_beam_size,
    )


class _MachineSession:
    """``StreamingSession`` behind the ``StreamSession`` protocol (it takes jobs, not requests, back)."""

    def __init__(self, session: StreamingSession) -> None:
        self._session = session

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def audio_seconds(self) -> float:
        return self._session.audio_seconds

    @property
    def backlog_seconds(self) -> float:
        return self._session.backlog_seconds

    @property
    def done(self) -> bool:
        return self._session.done

    def receive_audio(self, data: bytes) -> list[SessionEvent]:
        return self._session.receive_audio(data)

    def receive_channel_audio(self, channel: int, data: bytes) -> list[SessionEvent]:
        raise ProtocolError("per-channel audio is not supported by this session")

    def finalize(self, channel: int | None = None) -> list[SessionEvent]:
        return self._session.finalize()

    def clear(self) -> list[SessionEvent]:
        raise ProtocolError("clearing the audio buffer is not supported by this session")

    def close(self) -> list[SessionEvent]:
        return self._session.close()

    def mark_closed(self) -> None:
        self._session.mark_closed()

    def receive_decode_result(self, request: DecodeRequested, result: DecodeResult) -> list[SessionEvent]:
        return self._session.receive_decode_result(request.job, result)

    def receive_decode_failure(self, request: DecodeRequested, message: str) -> list[SessionEvent]:
        return self._session.receive_decode_failure(request.job, message)

    def abandon(self, request: DecodeRequested) -> list[SessionEvent]:
        return self._session.abandon(request.job)


def session_factory(policy: StreamConfig) -> SessionFactory:
    """Opens sessions with ``policy``; raises ``InvalidParameter`` for params this session cannot serve."""

    def open_session(session_id: str, params: StreamParams) -> StreamSession:
        if params.encoding not in ("pcm_s16le", "pcm_f32le"):
            raise InvalidParameter(f"encoding {params.encoding!r} is not supported yet", param="encoding")
        if params.mixdown or params.languages:
            raise InvalidParameter("mixdown and language lists are not supported yet", param="channels")
        config = dataclasses.replace(
            policy,
            sample_rate=params.sample_rate,
            encoding=params.encoding,  # type: ignore[arg-type]
            channels=params.channels,
            language=params.language,
            task=params.task,
            prompt=params.prompt,
            interim_results=params.interim_results,
            word_timestamps=params.word_timestamps,
            endpointing_ms=params.endpointing_ms if params.endpointing_ms is not None else 10000,
        )
        return _MachineSession(StreamingSession(session_id, config))

    return open_session
