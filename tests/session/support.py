"""Building sessions for the session tests: the server's own defaults (``Settings``), overridden by name."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from stream_server.config import Settings
from stream_server.decode.types import DecodeJob, DecodeResult
from stream_server.session.events import DecodeRequested, Final
from stream_server.session.machine import StreamingSession
from stream_server.session.params import StreamParams
from stream_server.session.policy import SessionPolicy
from stream_server.session.segmenter import TAIL_MS

RATE = 16000
TAIL_S = TAIL_MS / 1000  # the silence a final keeps after its last voiced frame
_PARAM_FIELDS = {f.name for f in dataclasses.fields(StreamParams)}


def policy(**overrides: Any) -> SessionPolicy:
    return dataclasses.replace(Settings().session_policy(), **overrides)


def params(**overrides: Any) -> StreamParams:
    return dataclasses.replace(Settings().stream_params(), **overrides)


def make(**fields: Any) -> StreamingSession:
    """A session with a loudness VAD; ``fields`` name ``StreamParams`` or ``SessionPolicy`` fields. Acoustic
    context is off unless asked for, so that a test of the prompt sees every final in the prompt."""
    wire = {k: v for k, v in fields.items() if k in _PARAM_FIELDS}
    rest = {"final_context_s": 0.0} | {k: v for k, v in fields.items() if k not in _PARAM_FIELDS}
    return StreamingSession("s1", params(**wire), policy(**rest), classifier=loud)


def loud(frame: np.ndarray) -> bool:
    """Stand-in for webrtcvad: a frame is speech when it is loud."""
    return float(np.abs(frame).mean()) > 0.05


def tone(seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def pcm(audio: np.ndarray) -> bytes:
    return (audio * 32767).astype("<i2").tobytes()


def result_for(job: DecodeJob, text: str, **overrides: Any) -> DecodeResult:
    fields: dict[str, Any] = dict(
        job_id=job.job_id,
        text=text,
        tokens=(1, 2),
        language="en",
        avg_logprob=-0.2,
        compression_ratio=1.2,
        no_speech_prob=0.01,
        temperature=0.0,
    )
    fields.update(overrides)
    return DecodeResult(**fields)


def requests(events, final: bool | None = None) -> list[DecodeRequested]:
    """Decode requests; ``final=True``: final decodes, speculative ones included (audio fed in one piece ends
    its utterances before any pause is long enough to speculate on)."""
    return [
        e
        for e in events
        if isinstance(e, DecodeRequested) and (final is None or (e.is_final or e.speculative) == final)
    ]


def resolve_in_turn(session: StreamingSession, events) -> tuple[list[DecodeRequested], list[Final]]:
    """Answer final decodes as the session asks for them (one at a time per channel: the next is asked for once
    the one before it is in); returns the requests and the finals, in order."""
    asked, finals = [], [e for e in events if isinstance(e, Final)]
    pending = requests(events, final=True)
    while pending:
        req = pending.pop(0)
        asked.append(req)
        out = session.receive_decode_result(req, result_for(req.job, f"text {req.utterance_id}"))
        pending += requests(out, final=True)
        finals += [e for e in out if isinstance(e, Final)]
    return asked, finals


def feed(session: StreamingSession, audio: np.ndarray, chunk_s: float = 0.05) -> list:
    """Stream ``audio`` in real-time-sized chunks, as a live client does."""
    step = int(chunk_s * RATE)
    return [e for i in range(0, len(audio), step) for e in session.receive_audio(pcm(audio[i : i + step]))]
