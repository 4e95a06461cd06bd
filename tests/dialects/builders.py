"""Builders for the dialects' millisecond tests: server defaults and handshakes, no server, no model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stream_server.decode.types import Word
from stream_server.session.events import Final
from stream_server.session.params import StreamParams
from stream_server.transport.dialects.base import Handshake

DEFAULTS = StreamParams(
    sample_rate=16000,
    encoding="pcm_s16le",
    channels=1,
    mixdown=False,
    language="en",
    languages=(),
    task="transcribe",
    prompt="",
    interim_results=True,
    word_timestamps=False,
    endpointing_ms=500,
)


def handshake(
    query: Mapping[str, Sequence[str] | str] | None = None,
    headers: Mapping[str, str] | None = None,
    subprotocols: Sequence[str] = (),
    *,
    path: str = "/",
    path_params: Mapping[str, str] | None = None,
    multilingual: bool = False,
) -> Handshake:
    q = {k: [v] if isinstance(v, str) else list(v) for k, v in (query or {}).items()}
    return Handshake(
        path=path,
        path_params=dict(path_params or {}),
        query=q,
        headers={k.lower(): v for k, v in (headers or {}).items()},
        subprotocols=list(subprotocols),
        defaults=DEFAULTS,
        multilingual=multilingual,
    )


def final(
    text: str,
    *,
    channel: int = 0,
    utterance_id: int = 0,
    start: float = 0.5,
    end: float = 1.5,
    reason: str = "endpoint",
    words: tuple[Word, ...] | None = None,
) -> Final:
    return Final(channel, utterance_id, start, end, text, "en", words, reason)  # type: ignore[arg-type]
