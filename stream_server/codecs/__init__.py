"""Audio codecs for streams: bytes in a client's encoding -> float32 frames ``(n, channels)``.

``make_decoder(encoding, channels, sample_rate)`` returns an ``AudioDecoder``. PCM and G.711 know their rate
from the handshake; containers (WebM/Ogg Opus, ``auto``) learn it from the stream, so ``sample_rate`` may change
from ``None`` to a value after the first bytes. Any chunking is accepted: a decoder keeps partial samples, frames
or pages until the next call.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class AudioDecoder(Protocol):
    @property
    def sample_rate(self) -> int | None:
        """Hz of the frames ``decode`` returns; None until a container stream has declared it."""
        ...

    def decode(self, data: bytes) -> np.ndarray:
        """float32 frames ``(n, channels)`` in [-1, 1]; raises ``AudioFormatError`` for bytes that are not
        this encoding."""
        ...

    def flush(self) -> np.ndarray:
        """Frames still held at the end of the stream."""
        ...

    def close(self) -> None:
        """Release what the decoder holds (a container's thread) without waiting; idempotent."""
        ...


class _Pcm:
    """Interleaved little-endian PCM at a rate fixed by the handshake."""

    def __init__(self, encoding: str, channels: int, sample_rate: int) -> None:
        from ..audio import PcmDecoder

        self._decoder = PcmDecoder(encoding, channels)  # type: ignore[arg-type]
        self._rate = sample_rate

    @property
    def sample_rate(self) -> int | None:
        return self._rate

    def decode(self, data: bytes) -> np.ndarray:
        return self._decoder.decode(data)

    def flush(self) -> np.ndarray:
        return np.zeros((0, self._decoder.channels), np.float32)

    def close(self) -> None:
        pass


ENCODINGS = ("pcm_s16le", "pcm_f32le", "mulaw", "alaw", "webm", "ogg", "auto")


def make_decoder(encoding: str, channels: int, sample_rate: int) -> AudioDecoder:
    """A decoder for ``encoding`` (one of ``ENCODINGS``); raises ``AudioFormatError`` for an unknown one."""
    from ..errors import AudioFormatError

    if encoding in ("pcm_s16le", "pcm_f32le"):
        return _Pcm(encoding, channels, sample_rate)
    if encoding in ("mulaw", "alaw"):
        from .g711 import G711Decoder

        return G711Decoder("mulaw" if encoding == "mulaw" else "alaw", channels, sample_rate)
    if encoding in ("webm", "ogg", "auto"):
        from .container import ContainerDecoder

        return ContainerDecoder(encoding, channels)
    raise AudioFormatError(f"unsupported encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
